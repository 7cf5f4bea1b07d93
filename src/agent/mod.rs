//! `gse-agent`, the half on every game host: the build it installs, the processes it
//! supervises, the GSE SDK it serves, the fleet state at its centre, the local control API, and
//! the relay of its events upstream. Nothing outside this folder but the binary imports it.

pub mod capi;
pub mod chaos;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod data_dir;
pub mod dbfile;
pub mod event;
pub mod fleet;
pub mod lock;
pub mod logarchive;
pub mod metrics;
pub mod package;
pub mod process;
pub mod sdk;
pub mod session;
pub mod status;
pub mod store;
pub mod systemd;
pub mod upstream;
pub mod validate;
