//! Raw Linux calls that nix 0.30 does not wrap: `pidfd_open`, `pidfd_send_signal` (with the
//! process-group flag), `waitid` on a pidfd or a pid, and `setsid` and `no_new_privs` between fork and exec. The
//! only module of the crate that uses `unsafe`.

#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;

use nix::sys::signal::Signal;
use tokio::io::unix::AsyncFd;

/// `pidfd_send_signal` flag (Linux ≥ 6.9): signal the process group whose id is the pidfd's
/// struct pid. The pidfd pins that struct pid, so the group cannot be confused with a later
/// group that reuses the number.
pub(crate) const PIDFD_SIGNAL_PROCESS_GROUP: libc::c_uint = 1 << 2;

/// Makes the child of `cmd` the leader of a new session (and so of a new process group)
/// between fork and exec.
pub(crate) fn new_session_at_exec(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the hook runs in the forked child before exec; setsid is async-signal-safe,
    // allocates nothing and touches no memory shared with the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Sets `no_new_privs` in the child of `cmd` before exec: neither it nor anything it runs can
/// gain privileges through a setuid or file-capability program.
pub(crate) fn no_new_privs_at_exec(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the hook runs in the forked child before exec; prctl is async-signal-safe and
    // takes only integers.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// A pidfd for `pid` (which must be a thread-group leader).
pub(crate) fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    let pid = libc::pid_t::try_from(pid).map_err(|_| io::Error::from_raw_os_error(libc::ESRCH))?;
    if pid <= 0 {
        return Err(io::Error::from_raw_os_error(libc::ESRCH));
    }
    // SAFETY: pidfd_open takes two integers and returns a new file descriptor or -1; no memory
    // is passed to the kernel.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0 as libc::c_uint) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = i32::try_from(fd).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
    // SAFETY: the kernel just returned this descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Sets close-on-exec on `fd`; `false` when it was set already or `fd` is not open.
pub(crate) fn set_cloexec(fd: std::os::fd::RawFd) -> io::Result<bool> {
    // SAFETY: F_GETFD and F_SETFD read and write the descriptor's flags only; an fd that is
    // not open fails with EBADF and changes nothing.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if flags < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::EBADF) => Ok(false),
            _ => Err(e),
        };
    }
    if flags & libc::FD_CLOEXEC != 0 {
        return Ok(false);
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(true)
}

/// `pidfd_send_signal(fd, sig, NULL, flags)`; `None` sends no signal (an existence check).
pub(crate) fn pidfd_send_signal(
    fd: BorrowedFd<'_>,
    signal: Option<Signal>,
    flags: libc::c_uint,
) -> io::Result<()> {
    let signo = signal.map_or(0, |s| s as libc::c_int);
    // SAFETY: `fd` is a valid open descriptor for the duration of the call (borrowed); a NULL
    // siginfo is allowed and makes the kernel fill in an SI_USER siginfo itself.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            signo,
            std::ptr::null::<libc::siginfo_t>(),
            flags,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Whom `waitid` waits for.
#[derive(Clone, Copy)]
pub(crate) enum Waitee<'a> {
    /// The process of a pidfd.
    Pidfd(BorrowedFd<'a>),
    /// A pid (only safe for an own child that nobody else reaps).
    Pid(u32),
}

/// `waitid(…, WEXITED | extra)`; `Ok(None)` when WNOHANG found nothing to report.
pub(crate) fn waitid(who: Waitee<'_>, extra: libc::c_int) -> io::Result<Option<ExitStatus>> {
    let (idtype, id) = match who {
        Waitee::Pidfd(fd) => (libc::P_PIDFD, fd.as_raw_fd() as libc::id_t),
        Waitee::Pid(pid) => (libc::P_PID, pid as libc::id_t),
    };
    loop {
        // SAFETY: an all-zero siginfo_t is a valid value (it is plain old data).
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: `info` is a valid, writable siginfo_t that outlives the call.
        let r = unsafe { libc::waitid(idtype, id, &mut info, libc::WEXITED | extra) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(e);
        }
        // SAFETY: waitid succeeded, so `info` holds either zeros (WNOHANG, nothing to report)
        // or a SIGCHLD siginfo, for which si_pid and si_status are the valid union members.
        let (pid, status) = unsafe { (info.si_pid(), info.si_status()) };
        if pid == 0 {
            return Ok(None);
        }
        let raw = match info.si_code {
            libc::CLD_EXITED => (status & 0xff) << 8,
            libc::CLD_KILLED => status & 0x7f,
            libc::CLD_DUMPED => (status & 0x7f) | 0x80,
            // Stopped/continued are not requested (no WSTOPPED/WCONTINUED).
            _ => (status & 0xff) << 8,
        };
        return Ok(Some(ExitStatus::from_raw(raw)));
    }
}

/// Registers a pidfd with the tokio reactor (readable once the process exited). Must be called
/// inside the tokio runtime.
pub(crate) fn watch_pidfd(fd: OwnedFd) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: the AsyncFd takes ownership of the OwnedFd, so the descriptor stays open and
    // names the same pidfd until the AsyncFd is dropped or `into_inner` gives it back.
    unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
        .map_err(|e| e.into_parts().1)
}
