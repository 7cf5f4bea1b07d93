//! One watched process, own child or adopted: exit detection, signals, reaping.
//!
//! With a pidfd (the normal case) exit is noticed when the pidfd turns readable, and every
//! signal goes through it, so a signal can never reach a process that merely reuses the pid.
//! Group signals use `PIDFD_SIGNAL_PROCESS_GROUP` (Linux ≥ 6.9); on older kernels they fall
//! back to `killpg`, but only while the group id provably still belongs to our process: for
//! an own child while it is unreaped (its zombie pins the pid), for an adopted one while its
//! leader is alive. Without pidfds (ENOSYS) the exit is polled: `waitid(WNOWAIT|WNOHANG)` for
//! own children, the start time in `/proc/<pid>/stat` for adopted ones.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::process::ExitStatus;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use tokio::io::unix::AsyncFd;

use super::children;
use super::identity::read_stat;
use super::sys::{self, PIDFD_SIGNAL_PROCESS_GROUP, Waitee};

/// How own children are polled without pidfds.
const POLL_CHILD: Duration = Duration::from_millis(50);
/// How adopted processes are polled without pidfds.
const POLL_PROC: Duration = Duration::from_millis(100);

/// Set by [`super::detach_all`]: dropped supervising tasks leave their games running.
pub(crate) static DETACH_ALL: AtomicBool = AtomicBool::new(false);

/// How the exit of a process is detected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Watch {
    /// A pidfd, if the kernel has them (else falls back to polling).
    Pidfd,
    /// Polling, even if pidfds exist (tests of the fallback).
    #[cfg_attr(not(test), allow(dead_code))]
    Poll,
}

/// Whose process it is.
#[derive(Debug)]
enum Kind {
    /// The agent's child: registered in [`children`], reaped by us.
    Own,
    /// Found running after an agent restart: someone else (init) reaps it.
    Adopted,
}

/// One process, watched.
#[derive(Debug)]
pub(crate) struct Proc {
    pid: u32,
    pidfd: Option<AsyncFd<OwnedFd>>,
    kind: Kind,
    start_ticks: u64,
    /// Exited and (own) reaped: its pid may now be anyone's, so nothing is signalled any more.
    done: bool,
    /// When set (or [`DETACH_ALL`]), dropping this leaves the process running.
    detach: Option<Arc<AtomicBool>>,
}

impl Proc {
    /// An own child, registered in [`children`] and unreaped. `pidfd` was opened right after
    /// spawn (while the child cannot have been reaped).
    pub fn own(pid: u32, pidfd: Option<OwnedFd>, start_ticks: u64) -> Self {
        Self {
            pid,
            pidfd: pidfd.and_then(register),
            kind: Kind::Own,
            start_ticks,
            done: false,
            detach: None,
        }
    }

    /// An adopted process; `pidfd` was opened before its identity was verified.
    pub fn adopted(pid: u32, pidfd: Option<OwnedFd>, start_ticks: u64) -> Self {
        Self {
            pid,
            pidfd: pidfd.and_then(register),
            kind: Kind::Adopted,
            start_ticks,
            done: false,
            detach: None,
        }
    }

    /// Points this handle at `pid` (what pid reuse does behind its back): for tests of
    /// "never signal after the reap".
    #[cfg(test)]
    pub fn pretend_pid(&mut self, pid: u32) {
        self.pid = pid;
    }

    /// Dropping this kills the group unless `flag` (or [`DETACH_ALL`]) is set by then.
    pub fn detachable(mut self, flag: Arc<AtomicBool>) -> Self {
        self.detach = Some(flag);
        self
    }

    /// The pid.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The start time of the process.
    pub fn start_ticks(&self) -> u64 {
        self.start_ticks
    }

    /// Whether the agent is the parent (and the exit status is known).
    pub fn is_own(&self) -> bool {
        matches!(self.kind, Kind::Own)
    }

    fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.pidfd.as_ref().map(|a| a.get_ref().as_fd())
    }

    /// Resolves once the process has exited (it may still be an unreaped zombie).
    pub async fn exited(&self) {
        if self.done {
            return;
        }
        if let Some(afd) = &self.pidfd {
            match afd.readable().await {
                // Readiness is left set: the pidfd stays readable from now on.
                Ok(_) => return,
                Err(e) => {
                    tracing::warn!(process.pid = self.pid, error = %e, "cannot watch the pidfd; polling instead");
                }
            }
        }
        match self.kind {
            Kind::Own => loop {
                match sys::waitid(Waitee::Pid(self.pid), libc::WNOWAIT | libc::WNOHANG) {
                    Ok(Some(_)) => return,
                    Ok(None) => {}
                    Err(e) => {
                        // ECHILD: not ours to wait for any more; treat as ended.
                        tracing::warn!(process.pid = self.pid, error = %e, "cannot poll the child");
                        return;
                    }
                }
                tokio::time::sleep(POLL_CHILD).await;
            },
            Kind::Adopted => loop {
                match read_stat(self.pid) {
                    Ok(Some(s)) if s.start_ticks == self.start_ticks && !s.is_dead() => {}
                    Ok(_) => return,
                    Err(e) => {
                        tracing::warn!(process.pid = self.pid, error = %e, "cannot poll the process");
                        return;
                    }
                }
                tokio::time::sleep(POLL_PROC).await;
            },
        }
    }

    /// Whether the leader may still be signalled by number: an unreaped own child, or an
    /// adopted process that is verifiably alive.
    fn number_is_ours(&self) -> bool {
        if self.done {
            return false;
        }
        match (&self.kind, self.fd()) {
            (Kind::Own, _) => true,
            (Kind::Adopted, Some(fd)) => sys::pidfd_send_signal(fd, None, 0).is_ok(),
            (Kind::Adopted, None) => matches!(
                read_stat(self.pid),
                Ok(Some(s)) if s.start_ticks == self.start_ticks && !s.is_dead()
            ),
        }
    }

    /// Sends `signal` to the process group the process leads. A gone group is success.
    pub fn signal_group(&self, signal: Signal) {
        self.send(signal, true);
    }

    /// Sends `signal` to the process alone (not the rest of its group), as the kernel sends a
    /// crash signal. A gone process is success.
    pub fn signal_leader(&self, signal: Signal) {
        self.send(signal, false);
    }

    fn send(&self, signal: Signal, group: bool) {
        if self.done {
            return;
        }
        let what = if group { "process group" } else { "process" };
        if let Some(fd) = self.fd() {
            let flags = if group { PIDFD_SIGNAL_PROCESS_GROUP } else { 0 };
            match sys::pidfd_send_signal(fd, Some(signal), flags) {
                Ok(()) => return,
                Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return,
                Err(e) if group && e.raw_os_error() == Some(libc::EINVAL) => {} // kernel < 6.9
                Err(e) => {
                    tracing::warn!(process.pid = self.pid, signal = signal.as_str(), error = %e, "cannot signal {what}");
                    return;
                }
            }
        }
        if !self.number_is_ours() {
            return;
        }
        let Ok(raw) = i32::try_from(self.pid) else {
            return;
        };
        if raw <= 1 {
            return;
        }
        let sent = if group {
            killpg(Pid::from_raw(raw), signal)
        } else {
            kill(Pid::from_raw(raw), signal)
        };
        match sent {
            Ok(()) | Err(Errno::ESRCH) => {}
            Err(e) => {
                tracing::warn!(process.pid = self.pid, signal = signal.as_str(), error = %e, "cannot signal {what}");
            }
        }
    }

    /// After [`Proc::exited`]: kills what is left of the group (while the leader's zombie still
    /// pins the group id), then reaps an own child. Returns its status (`None` when adopted or
    /// when the wait failed). Nothing is signalled through this handle afterwards.
    pub fn finish(&mut self) -> Option<std::io::Result<ExitStatus>> {
        if self.done {
            return None;
        }
        self.signal_group(Signal::SIGKILL);
        let status = match self.kind {
            Kind::Own => {
                let mut map = children::lock();
                // It has exited, so this returns at once.
                let status = reap(self.fd(), self.pid)
                    .and_then(|s| s.ok_or_else(|| std::io::Error::from_raw_os_error(libc::ECHILD)));
                children::unregister_locked(&mut map, self.pid);
                Some(status)
            }
            Kind::Adopted => None,
        };
        self.done = true;
        status
    }
}

/// Reaps the own child `pid` (blocking until it exited), through its pidfd when there is one
/// (by pid on kernels without `P_PIDFD`, which is safe: the unreaped child pins its pid).
fn reap(fd: Option<BorrowedFd<'_>>, pid: u32) -> std::io::Result<Option<ExitStatus>> {
    if let Some(fd) = fd {
        match sys::waitid(Waitee::Pidfd(fd), 0) {
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
            other => return other,
        }
    }
    sys::waitid(Waitee::Pid(pid), 0)
}

/// Registers a pidfd with the reactor; `None` (polling) if that fails.
fn register(fd: OwnedFd) -> Option<AsyncFd<OwnedFd>> {
    match sys::watch_pidfd(fd) {
        Ok(a) => Some(a),
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch a pidfd; polling instead");
            None
        }
    }
}

impl Drop for Proc {
    /// The owner went away before the process ended (the runtime is shutting down): take the
    /// whole group down rather than orphan it — unless it was detached (an agent upgrade
    /// leaves games running on purpose).
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let detached = self
            .detach
            .as_ref()
            .is_some_and(|d| d.load(Ordering::SeqCst))
            || (self.detach.is_some() && DETACH_ALL.load(Ordering::SeqCst));
        if detached {
            tracing::info!(process.pid = self.pid, "left running (detached)");
            if self.is_own() {
                children::unregister(self.pid);
            }
            return;
        }
        self.signal_group(Signal::SIGKILL);
        if self.is_own() {
            // Reap it off-thread (SIGKILL is not instantaneous), keeping the registration until
            // then so no one else takes the status.
            let pid = self.pid;
            let fd = self.pidfd.take().map(AsyncFd::into_inner);
            let reap_later = move || {
                let _ = reap(fd.as_ref().map(AsFd::as_fd), pid);
                children::unregister(pid);
            };
            if std::thread::Builder::new()
                .name("gse-reap".into())
                .spawn(reap_later)
                .is_err()
            {
                children::unregister(pid);
            }
        }
        self.done = true;
    }
}
