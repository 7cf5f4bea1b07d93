//! The descriptors the agent inherited, kept from the games and install.sh.

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
        if fd > 2 && super::sys::set_cloexec(fd)? {
            marked += 1;
        }
    }
    Ok(marked)
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
