//! gse-agent: a per-host supervisor for dedicated game servers that speak the Tencent Cloud GSE
//! gRPC SDK. See README.md for the architecture.

// `deny`, not `forbid`: `process::sys` allows it for raw pidfd/waitid syscalls, and
// `host::return_freed_memory` for one allocator setting.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod agent;
pub mod alias;
pub mod capi;
pub mod chaos;
pub mod clidocs;
pub mod config;
pub mod control;
pub mod data_dir;
pub mod dbfile;
pub mod event;
pub mod fleet;
pub mod host;
pub mod listen;
pub mod lock;
pub mod logarchive;
pub mod metrics;
pub mod package;
pub mod placement;
pub mod process;
pub mod queue;
pub mod sdk;
pub mod search;
pub mod session;
pub mod status;
pub mod store;
pub mod systemd;
pub mod tc3;
pub mod telemetry;
pub mod upstream;
pub mod validate;

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
