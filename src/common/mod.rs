//! Plumbing both binaries use: bounded listeners (`listen`), logs (`telemetry`), the process's
//! own limits (`host`), reading config files (`config`), man pages and completions
//! (`clidocs`), and an error said in one line (`describe`).

pub mod clidocs;
pub mod config;
pub mod describe;
pub mod host;
pub mod listen;
pub mod telemetry;
