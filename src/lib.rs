//! gse-agent and gse-control: a self-hosted replacement for Tencent Cloud GSE.
//!
//! The map of modules (the manual's "Architecture" page, docs/src/architecture.md, says what
//! each owns):
//!
//! - [`api`]: the Tencent Cloud API both halves serve: the HTTP door ([`api::server`]), the
//!   envelope and its errors, request readers, the session requests and their limits, each
//!   resource's rules and wire form (aliases, queues, placements, search), TC3 and CAM
//!   policies, the audit record. It imports neither half.
//! - [`agent`]: `gse-agent`, on every game host: config, build installation, process
//!   supervision, the GSE SDK, the pure fleet state and its actor, the local control API's
//!   actions, the relay upstream, the durable state, game logs, metrics, validate, status,
//!   crash rehearsal.
//! - [`control`]: `gse-control`, for many hosts: the same API over PostgreSQL, the relay
//!   from the agents, placement, roll-outs, liveness.
//! - [`common`]: plumbing both binaries use: bounded listeners, logs, process limits, config
//!   reading, man pages.
//! - [`proto`], [`upstream_proto`]: the code generated from `proto/`.
//!
//! `tests/cases/layout.rs` keeps these boundaries and the module graph free of new cycles.

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
