//! Compiles the GSE SDK protos with a vendored `protoc`, so a build needs nothing but cargo.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded; nothing else reads the environment concurrently.
    unsafe { std::env::set_var("PROTOC", protoc) };
    tonic_prost_build::configure().compile_protos(
        &[
            "proto/GseGrpcSdkService.proto",
            "proto/GameServerGrpcSdkService.proto",
            "proto/upstream.proto",
        ],
        &["proto"],
    )?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
