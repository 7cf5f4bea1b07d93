//! The agent's own process limits: raised at start so a flood of client connections cannot
//! take the descriptors a game launch needs.

use nix::sys::resource::{Resource, getrlimit, setrlimit};

/// Raises the soft limit on open files to the hard limit; returns the limit now in force.
/// (systemd's unit sets both with `LimitNOFILE`; by hand the soft limit is often 1024.)
pub fn raise_open_files_limit() -> Result<u64, nix::Error> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    }
    Ok(hard.max(soft))
}

/// The open-files limit in force (the soft limit; 1024 if it cannot be read).
pub fn open_files_limit() -> u64 {
    getrlimit(Resource::RLIMIT_NOFILE)
        .map(|(soft, _)| soft)
        .unwrap_or(1024)
}
