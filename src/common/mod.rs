//! Plumbing both binaries use: bounded listeners (`listen`), logs (`telemetry`), the process's
//! own limits and descriptors (`host`), and man pages and completions (`clidocs`).

pub mod clidocs;
pub mod host;
pub mod listen;
pub mod telemetry;
