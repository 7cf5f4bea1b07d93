//! gse-agent: a per-host supervisor for dedicated game servers that speak the Tencent Cloud GSE
//! gRPC SDK. See README.md for the architecture.

// `deny`, not `forbid`: `process::sys` allows it for raw pidfd/waitid syscalls, and
// `host::return_freed_memory` for one allocator setting.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod agent;
pub mod api;
pub mod common;
pub mod control;

/// Code generated from `proto/` (package `tencentcloud.gse.grpcsdk`).
#[allow(missing_docs, clippy::all)]
pub mod proto {
    tonic::include_proto!("tencentcloud.gse.grpcsdk");
}

/// Code generated from `proto/upstream.proto` (package `gseagent.upstream.v1`).
#[allow(missing_docs, clippy::all)]
pub mod upstream_proto {
    tonic::include_proto!("gseagent.upstream.v1");
}
