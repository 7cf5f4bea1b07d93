//! Plumbing both binaries use: bounded listeners (`listen`), logs (`telemetry`), the process's
//! own limits (`host`), reading config files (`config`), and man pages and completions
//! (`clidocs`).

pub mod clidocs;
pub mod config;
pub mod host;
pub mod listen;
pub mod telemetry;
