//! The example games of `examples/` (one per language GSE taught), each built by its own
//! `build.sh DEST [PROTO_DIR]` once into a cache under `target/tmp`, keyed by the hash of its
//! sources and protos, so a changed example or proto builds afresh and an unchanged one is
//! reused by every test and run.

use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

/// The repository's `examples/`.
pub const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples");

/// Which copy of the GSE protos an example is compiled against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protos {
    /// The documented copy (`proto/`): `GseResponse` has status, responseData, errorMessage.
    Documented,
    /// The SDK's `proto.zip` copy (`examples/proto-empty-response/`): `GseResponse` is empty.
    EmptyResponse,
}

impl Protos {
    fn dir(self) -> PathBuf {
        match self {
            Self::Documented => Path::new(env!("CARGO_MANIFEST_DIR")).join("proto"),
            Self::EmptyResponse => Path::new(EXAMPLES).join("proto-empty-response"),
        }
    }
}

/// Feeds every file under `dir` (sorted, by relative path and content) into `hash`.
fn hash_tree(hash: &mut Sha256, dir: &Path) {
    let mut files: Vec<PathBuf> = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let path = entry.unwrap().path();
            if path.is_dir() {
                todo.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files.sort();
    for f in files {
        hash.update(f.strip_prefix(dir).unwrap().to_string_lossy().as_bytes());
        hash.update(std::fs::read(&f).unwrap());
    }
}

/// Debian's python3 (`.ci/run` installs it with pip).
const SYSTEM_PYTHON: &str = "/usr/bin/python3";

/// The built example `name` (`cpp`, `java`, `go`, `python`, `node`) against `protos`: a GSE
/// build folder, made once by `examples/NAME/build.sh` (which needs the toolchain its README
/// names; `.ci/run` installs them).
pub fn build(name: &str, protos: Protos) -> PathBuf {
    let source = Path::new(EXAMPLES).join(name);
    let mut hash = Sha256::new();
    hash_tree(&mut hash, &source);
    hash_tree(&mut hash, &protos.dir());
    // The Python game runs on the system's interpreter, as on a game host: it runs as the
    // unprivileged game user, who cannot reach one under root's home (pyenv's, say).
    let python = (name == "python").then_some(SYSTEM_PYTHON);
    hash.update(python.unwrap_or_default());
    let key: String = hash
        .finalize()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect();
    let cache = super::cached_dir(&format!("example-{name}-{key}"), |cache| {
        let dest = cache.join("build");
        std::fs::create_dir_all(&dest).unwrap();
        let mut build = Command::new("bash");
        if let Some(python) = python {
            build.env("PYTHON", python);
        }
        let out = build
            .arg(source.join("build.sh"))
            .arg(&dest)
            .arg(protos.dir())
            .env(
                "GOCACHE",
                super::cached_dir("go-build-cache", |d| std::fs::create_dir_all(d).unwrap()),
            )
            .output()
            .unwrap_or_else(|e| panic!("examples/{name}/build.sh: {e}"));
        assert!(
            out.status.success(),
            "examples/{name}/build.sh failed (its README names what it needs; .ci/run installs it):\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    });
    cache.join("build")
}

/// Copies the built example `name` into the empty directory `dest` (a test's own build).
pub fn copy_build(name: &str, protos: Protos, dest: &Path) {
    let built = build(name, protos);
    std::fs::create_dir_all(dest).unwrap();
    let status = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", built.display()))
        .arg(dest)
        .status()
        .expect("run cp");
    assert!(status.success(), "cp -a {}", built.display());
}
