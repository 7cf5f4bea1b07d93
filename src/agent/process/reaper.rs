//! The agent as child subreaper, and the reaper of orphans it inherits.
//!
//! [`start`] marks the agent a child subreaper (`PR_SET_CHILD_SUBREAPER`): a descendant of a
//! game whose parent dies is re-parented to the agent instead of init, so the agent can still
//! find and kill it (see `escape.rs`). Such orphans become the agent's zombies when they
//! exit; the reaper task reaps them, woken by SIGCHLD and by a slow timer. It reaps only pids
//! that are not in the registry of children someone waits for (`children.rs`), under
//! the registry lock, so it never steals an exit status. Hence: every child the agent waits
//! for must be spawned through that registry (`process::launch`, `package::script`,
//! `package::account`); `tokio::process` must not be used in a process that started the reaper.
//! The reaper is started explicitly (by the agent's run path); tests and tools that use
//! `tokio::process` simply do not start it.

use std::time::Duration;

use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use tokio::signal::unix::{SignalKind, signal};
use tracing::Instrument;

use super::children;
use super::identity::read_stat;

/// The reaper also sweeps this often (a SIGCHLD can coalesce with another).
const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// Why the reaper could not start.
#[derive(Debug, thiserror::Error)]
pub enum ReaperError {
    /// `prctl(PR_SET_CHILD_SUBREAPER)` failed.
    #[error("cannot become a child subreaper: {0}")]
    Subreaper(#[source] nix::Error),
    /// SIGCHLD could not be watched.
    #[error("cannot watch SIGCHLD: {0}")]
    WatchSigchld(#[source] std::io::Error),
}

/// Makes orphaned descendants of the agent its children (instead of init's).
fn become_subreaper() -> Result<(), ReaperError> {
    nix::sys::prctl::set_child_subreaper(true).map_err(ReaperError::Subreaper)
}

/// Becomes a child subreaper and starts the orphan reaper task. Call once, inside the tokio
/// runtime, before any game is launched.
pub fn start() -> Result<(), ReaperError> {
    become_subreaper()?;
    let mut sigchld = signal(SignalKind::child()).map_err(ReaperError::WatchSigchld)?;
    tokio::spawn(
        async move {
            let mut slow = tokio::time::interval(SWEEP_EVERY);
            loop {
                tokio::select! {
                    _ = sigchld.recv() => {}
                    _ = slow.tick() => {}
                }
                if let Err(e) = tokio::task::spawn_blocking(reap_orphans).await {
                    tracing::warn!(error = %e, "orphan sweep failed");
                }
            }
        }
        .instrument(tracing::info_span!("reaper")),
    );
    Ok(())
}

/// Reaps every exited child of the agent that nobody registered; returns how many. Blocking.
fn reap_orphans() -> usize {
    let mut reaped = 0;
    for pid in own_children() {
        let map = children::lock();
        if children::is_registered(&map, pid) {
            continue;
        }
        let Ok(raw) = i32::try_from(pid) else {
            continue;
        };
        match waitpid(Pid::from_raw(raw), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(_) => {}
            Ok(status) => {
                drop(map);
                tracing::debug!(process.pid = pid, status = ?status, "reaped an orphan");
                reaped += 1;
            }
        }
    }
    reaped
}

/// The agent's children: from `/proc/self/task/*/children` where the kernel has it, else by
/// scanning every `/proc/<pid>/stat` for our pid as parent.
fn own_children() -> Vec<u32> {
    let mut out = Vec::new();
    let mut have_children_files = false;
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for task in tasks.filter_map(Result::ok) {
            if let Ok(text) = std::fs::read_to_string(task.path().join("children")) {
                have_children_files = true;
                out.extend(
                    text.split_whitespace()
                        .filter_map(|p| p.parse::<u32>().ok()),
                );
            }
        }
    }
    if have_children_files {
        return out;
    }
    let me = std::process::id();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| matches!(read_stat(*pid), Ok(Some(s)) if s.ppid == me && s.is_dead()))
        .collect()
}
