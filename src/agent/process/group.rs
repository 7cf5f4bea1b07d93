//! Short-lived helper children in their own process group (install.sh): registered with the
//! orphan reaper's registry, watched through a pidfd, killed with their group when dropped.

use std::process::{Command, ExitStatus};

use nix::sys::signal::Signal;

use super::proc::{Proc, Watch};

/// A child leading its own process group. Dropping it before [`ChildGroup::wait`] returned
/// SIGKILLs the group (and reaps the child off-thread).
#[derive(Debug)]
pub struct ChildGroup {
    proc: Proc,
}

/// Spawns `cmd` as the leader of a new process group, registered so the orphan reaper leaves
/// it alone. Must be called inside the tokio runtime.
pub fn spawn_child_group(cmd: &mut Command) -> std::io::Result<ChildGroup> {
    let (pid, pidfd) = super::spawn_own(cmd, Watch::Pidfd)?;
    // Its start time only serves the escape sweep after a game's exit, which a helper child
    // does not get.
    Ok(ChildGroup {
        proc: Proc::own(pid, pidfd, 0),
    })
}

impl ChildGroup {
    /// The child's pid (and group id).
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// Waits for the child to exit, SIGKILLs what is left of its group (nothing it started
    /// outlives it), and reaps it.
    pub async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        self.proc.exited().await;
        self.proc
            .finish()
            .unwrap_or_else(|| Err(std::io::Error::from_raw_os_error(libc::ECHILD)))
    }

    /// SIGKILLs the whole group now (a no-op once [`ChildGroup::wait`] returned).
    pub fn kill(&self) {
        self.proc.signal_group(Signal::SIGKILL);
    }
}
