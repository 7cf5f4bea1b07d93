//! The agent's own process: its limits, raised at start so a flood of client connections
//! cannot take the descriptors a game launch needs, and the descriptors it inherited, kept
//! from its children.

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

/// Marks every descriptor the agent inherited beyond stdin, stdout and stderr close-on-exec,
/// so that no game or install.sh inherits it: a lock, a pipe or a socket of whoever started
/// the agent would otherwise stay open as long as the longest-lived game (and keep, say, a
/// `flock` held or a pipe's reader waiting). The agent's own descriptors are close-on-exec
/// already. Call before any child is started; returns how many were marked.
pub fn keep_inherited_fds_from_children() -> std::io::Result<usize> {
    let mut marked = 0;
    for entry in std::fs::read_dir("/proc/self/fd")? {
        let Some(fd) = entry?
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        // The listing's own descriptor may be closed by now: it counts as nothing to mark.
        if fd > 2 && crate::agent::process::mark_close_on_exec(fd)? {
            marked += 1;
        }
    }
    Ok(marked)
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

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;

    use nix::fcntl::{FcntlArg, FdFlag, fcntl};

    #[test]
    fn inherited_descriptors_are_kept_from_children() {
        let file = std::fs::File::open("/proc/self/stat").unwrap();
        // dup gives a descriptor without close-on-exec, as one inherited from a parent is.
        let fd = nix::unistd::dup(&file).unwrap();
        let flags = |fd: std::os::fd::BorrowedFd<'_>| {
            FdFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFD).unwrap())
        };
        assert!(!flags(fd.as_fd()).contains(FdFlag::FD_CLOEXEC));
        assert!(super::keep_inherited_fds_from_children().unwrap() >= 1);
        assert!(flags(fd.as_fd()).contains(FdFlag::FD_CLOEXEC));
        // What the process opened itself was close-on-exec already.
        assert!(flags(file.as_fd()).contains(FdFlag::FD_CLOEXEC));
    }
}
