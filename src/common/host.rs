//! The process's own limits: open files, raised at start so a flood of client connections
//! cannot take the descriptors a game launch needs, and the allocator's threshold for handing
//! large freed buffers back to the system.

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

/// Buffers at least this large are mapped apart from the heap and unmapped when freed.
const MMAP_THRESHOLD: i32 = 128 << 10;

/// Makes memory that a flood of large requests grew come back to the system when it is
/// freed. glibc raises its mmap threshold each time a large buffer is freed, so after a
/// burst of big requests later ones land on the heap, where freed memory stays with the
/// process; a fixed threshold keeps large buffers mapped (and unmapped when freed), and a
/// trim threshold of the same size returns the heap's free top. No-op on other C libraries.
pub fn return_freed_memory() {
    #[cfg(target_env = "gnu")]
    #[allow(unsafe_code)]
    // SAFETY: mallopt sets two allocator parameters under the allocator's own lock; it reads
    // or writes no memory of ours.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, MMAP_THRESHOLD);
    }
}
