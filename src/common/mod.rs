//! Plumbing both binaries use: bounded listeners (`listen`), logs (`telemetry`), the process's
//! own limits (`host`), reading config files (`config`), man pages and completions
//! (`clidocs`), an error said in one line (`describe`), and bearer token files (`token`).

pub mod clidocs;
pub mod config;
pub mod describe;
pub mod host;
pub mod listen;
pub mod telemetry;
pub mod token;
