//! Plumbing both binaries use: bounded listeners (`listen`), logs (`telemetry`), the process's
//! own limits (`host`), reading config files (`config`), man pages and completions
//! (`clidocs`), an error said in one line (`describe`), bearer token files (`token`), and what both metrics listeners answer alike (`metrics_door`).

pub mod clidocs;
pub mod config;
pub mod describe;
pub mod host;
pub mod listen;
pub mod metrics_door;
pub mod telemetry;
pub mod token;
