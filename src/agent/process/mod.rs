//! One game process: spawn it as the leader of its own process group with its output going
//! straight to files, watch it through a pidfd, stop it (SIGTERM to the group, grace, SIGKILL
//! to the group), kill what is left of its group, reap it, and say how it ended. After an
//! agent restart, [`adopt`] takes over a game the previous agent started.
//!
//! Each process gets one supervising task ([`launch`], [`adopt`]) that owns its pidfd and the
//! rotation of its log files (`output.rs`).
//!
//! The game must outlive the agent when the agent dies or is upgraded:
//! - its output goes to files it holds itself (no pipes: no SIGPIPE when the agent is gone);
//! - [`ProcessHandle::detach`] / [`detach_all`] keep the kill-on-drop of the supervising task
//!   from killing it when the agent exits on purpose;
//! - a new agent identifies it by [`Identity`] (pid plus start time plus executable), never by
//!   the pid alone.
//!
//! Pid reuse is real (pid_max may be 32768): every signal goes through a pidfd, or by number
//! only while the number provably is ours (see `proc.rs`). At exit the group is SIGKILLed
//! *before* the leader is reaped (the zombie leader pins the group id), then the leader is
//! reaped, and nothing is signalled through the handle again. Descendants that left the group
//! are found by their environment tag afterwards (`escape.rs`).

mod children;
mod escape;
mod exit;
mod group;
mod identity;
mod inherited;
pub mod local_game;
mod output;
mod proc;
pub mod reaper;
mod start;
mod sys;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep_until};
use tracing::Instrument;

pub use children::output as command_output;
pub use escape::{kill_remains, kill_strays};
pub use exit::ExitInfo;
pub use group::{ChildGroup, spawn_child_group};
pub use identity::{Identity, IdentityError, process_group};
pub use inherited::keep_inherited_fds_from_children;
pub use output::open_for_child;
pub(crate) use start::spawn_own;
pub use start::{adopt, launch};
#[cfg(test)]
use start::{adopt_with, launch_with};

use escape::Tag;
use output::LogFiles;
use proc::Proc;

/// Why a process could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// The LaunchPath is missing, not a file, or not executable.
    #[error("launch path {path} {reason}")]
    InvalidPath {
        /// The program.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Opening a log file failed.
    #[error("cannot open log file {path}: {source}")]
    OpenLog {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// fork/exec failed.
    #[error("cannot start {path}: {source}")]
    Spawn {
        /// The program.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Its private `/local/game` could not be prepared.
    #[error("cannot give {path} its /local/game: {source}")]
    LocalGame {
        /// The program.
        path: PathBuf,
        /// Why.
        #[source]
        source: local_game::LocalGameError,
    },
    /// The just-started process could not be identified (`/proc/<pid>/stat`).
    #[error("cannot identify the started process {pid}: {source}")]
    Identify {
        /// Its pid.
        pid: u32,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// Why a running process could not be adopted.
#[derive(Debug, thiserror::Error)]
pub enum AdoptError {
    /// No such process, or it has already exited.
    #[error("process {pid} is gone")]
    Gone {
        /// The recorded pid.
        pid: u32,
    },
    /// The pid now belongs to another process (pid reuse); it is never signalled.
    #[error("pid {pid} now belongs to another process ({found}); recorded {recorded}")]
    Stranger {
        /// The recorded pid.
        pid: u32,
        /// What was recorded.
        recorded: String,
        /// What runs under the pid now.
        found: String,
    },
    /// Opening a pidfd failed for another reason than a missing process.
    #[error("cannot open a pidfd for process {pid}: {source}")]
    Pidfd {
        /// The pid.
        pid: u32,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The process could not be inspected (its `/proc/<pid>/stat` was unreadable).
    #[error("cannot inspect process {pid}: {source}")]
    Inspect {
        /// The pid.
        pid: u32,
        /// The error.
        #[source]
        source: IdentityError,
    },
}

/// Everything needed to start one process.
#[derive(Debug, Clone)]
pub struct LaunchSpec {
    /// The agent's id of the process; names its log files.
    pub process_id: String,
    /// The executable.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// The complete environment (nothing is inherited). `GSE_PROCESS_ID`, `GSE_FLEET_ID` and
    /// `GSE_INSTANCE_ID` in it tag the game's descendants (see `escape.rs`).
    pub env: Vec<(String, String)>,
    /// Working directory.
    pub cwd: PathBuf,
    /// Directory of the log files.
    pub log_dir: PathBuf,
    /// Rotate a log file at this size.
    pub max_log_bytes: u64,
    /// Rotated files kept.
    pub keep_logs: u32,
    /// Output lines kept for the exit report.
    pub tail_lines: usize,
    /// Run as this uid and gid instead of the agent's.
    pub user: Option<(u32, u32)>,
    /// The build it sees at `/local/game`, in a private mount namespace, when the agent can
    /// (see [`local_game`]); `None`: the host's file system as it is.
    pub local_game: Option<PathBuf>,
}

/// What a new agent needs to supervise a game a previous agent started.
#[derive(Debug, Clone)]
pub struct AdoptSpec {
    /// The agent's id of the process; names its log files.
    pub process_id: String,
    /// Directory of the log files (reopened by path for rotation; the game keeps its fds).
    pub log_dir: PathBuf,
    /// Rotate a log file at this size.
    pub max_log_bytes: u64,
    /// Rotated files kept.
    pub keep_logs: u32,
    /// Output lines kept for the exit report.
    pub tail_lines: usize,
}

/// A running process and the door to its supervising task.
#[derive(Debug)]
pub struct ProcessHandle {
    /// Who the process is (its pid is also its process group id), to be recorded for
    /// adoption after an agent restart.
    pub identity: Identity,
    orders: mpsc::UnboundedSender<Order>,
    detached: Arc<AtomicBool>,
}

/// What the supervising task is asked to do: the one place that signals the process.
#[derive(Debug, Clone, Copy)]
enum Order {
    /// SIGTERM (and SIGCONT, so a stopped game can act on it) to the group now, SIGKILL after
    /// the grace.
    Stop(Duration),
    /// One signal, to the process alone or to its whole group.
    Signal { signal: Signal, group: bool },
}

impl ProcessHandle {
    /// SIGTERM to the group now, SIGKILL after `grace` (a later, shorter grace wins). A no-op
    /// once the exit was reported: the task, the only thing that signals, is gone then.
    pub fn stop(&self, grace: Duration) {
        let _ = self.orders.send(Order::Stop(grace));
    }

    /// Sends `signal` to the process alone (`group` false, as the kernel sends a crash signal)
    /// or to its whole group. A no-op once the exit was reported, like [`Self::stop`].
    pub fn signal(&self, signal: Signal, group: bool) {
        let _ = self.orders.send(Order::Signal { signal, group });
    }

    /// Sends `signal` to the process group at once, from the caller rather than through the
    /// supervising task, which may not run again (an agent about to leave its games to the
    /// next one). The process is not reaped while its handle lives, so its pid is still its.
    pub fn signal_group_now(&self, signal: Signal) {
        if let Ok(pid) = i32::try_from(self.identity.pid)
            && pid > 1
        {
            let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), signal);
        }
    }

    /// From now on, dropping the supervising task (runtime shutdown) leaves the process
    /// running instead of killing its group. For an agent that exits on purpose, leaving the
    /// game to its successor. Stops already requested still happen while the task runs.
    pub fn detach(&self) {
        self.detached.store(true, Ordering::SeqCst);
    }
}

/// Waits until the sweeps for escaped descendants of ended games have finished (call once, at
/// the end: sweeps started later are not waited for). They run
/// after each exit is reported, on the blocking pool; an agent that exits right after its last
/// game ended calls this first, or the runtime's shutdown may cancel a sweep not yet started.
pub async fn settle() {
    escape::settled().await;
}

/// Detaches every supervised process, current and future (see [`ProcessHandle::detach`]):
/// for an agent upgrade that exits leaving all its games running.
pub fn detach_all() {
    proc::DETACH_ALL.store(true, Ordering::SeqCst);
}

/// Checks that `program` exists, is a regular file and is executable.
pub fn check_executable(program: &Path) -> Result<(), SpawnError> {
    let invalid = |reason: String| SpawnError::InvalidPath {
        path: program.to_path_buf(),
        reason,
    };
    let meta = std::fs::metadata(program).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => invalid("does not exist".into()),
        _ => invalid(format!("cannot be read: {e}")),
    })?;
    if !meta.is_file() {
        return Err(invalid("is not a regular file".into()));
    }
    let mode = meta.permissions().mode();
    if mode & 0o111 == 0 {
        return Err(invalid(format!(
            "is not executable (mode {:o})",
            mode & 0o7777
        )));
    }
    Ok(())
}

/// The log file of one stream of one process.
pub fn log_path(log_dir: &Path, process_id: &str, stream: &str) -> PathBuf {
    log_dir.join(format!("{process_id}.{stream}.log"))
}

/// Every output file one process may have: per stream (stdout, then stderr), its rotated
/// copies oldest first (`.keep` … `.1`), then the live file.
pub fn output_files(log_dir: &Path, process_id: &str, keep: u32) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for stream in ["stdout", "stderr"] {
        let live = log_path(log_dir, process_id, stream);
        files.extend(
            (1..=u64::from(keep))
                .rev()
                .map(|n| output::numbered(&live, n)),
        );
        files.push(live);
    }
    files
}

/// Removes every output file of an old process ([`output_files`]); what is already gone is
/// no error.
pub fn remove_output_files(log_dir: &Path, process_id: &str, keep: u32) {
    for path in output_files(log_dir, process_id, keep) {
        let _ = std::fs::remove_file(path);
    }
}

/// Spawns the supervising task; returns the stop door.
fn supervise(
    proc: Proc,
    logs: LogFiles,
    tail_lines: usize,
    tag: Option<Tag>,
    process_id: &str,
    on_exit: impl FnOnce(u32, ExitInfo) + Send + 'static,
) -> mpsc::UnboundedSender<Order> {
    let (orders_tx, orders_rx) = mpsc::unbounded_channel();
    let pid = proc.pid();
    let span = tracing::info_span!("process", process.id = %process_id, process.pid = pid);
    let task = Supervised {
        proc,
        spare: logs.fresh(),
        logs: Some(logs),
        tail_lines,
    };
    tokio::spawn(
        async move {
            let start_ticks = task.proc.start_ticks();
            let info = task.run(orders_rx).await;
            tracing::debug!(exit = %info.describe(), "process ended");
            // Counted before the exit is reported, so whoever waits for every exit and then
            // for `settle` misses no sweep.
            let pending = tag.is_some().then(escape::sweep_pending);
            on_exit(pid, info);
            // Off the hot path: the replacement may already be launching.
            if let Some(tag) = tag {
                let swept = tokio::task::spawn_blocking(move || {
                    let _pending = pending;
                    escape::kill_escaped(&tag, start_ticks)
                })
                .await;
                if let Ok(n) = swept
                    && n > 0
                {
                    tracing::info!(escaped = n, "killed escaped descendants");
                }
            }
        }
        .instrument(span),
    );
    orders_tx
}

struct Supervised {
    proc: Proc,
    /// `None` while a rotation runs on the blocking pool.
    logs: Option<LogFiles>,
    /// The same files with no open handles: names them for the tail, and stands in if a
    /// rotation task is lost.
    spare: LogFiles,
    tail_lines: usize,
}

impl Supervised {
    async fn run(mut self, mut orders: mpsc::UnboundedReceiver<Order>) -> ExitInfo {
        let mut kill_at: Option<Instant> = None;
        let mut killed_by_agent = false;
        let mut check = tokio::time::interval(output::CHECK_EVERY);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut rotation: Option<JoinHandle<LogFiles>> = None;
        loop {
            tokio::select! {
                () = self.proc.exited() => break,
                Some(order) = orders.recv() => match order {
                    Order::Stop(grace) => {
                        self.proc.signal_group(Signal::SIGTERM);
                        // A stopped (hung) game acts on SIGTERM only once continued.
                        self.proc.signal_group(Signal::SIGCONT);
                        let at = Instant::now() + grace;
                        kill_at = Some(kill_at.map_or(at, |k| k.min(at)));
                    }
                    Order::Signal { signal, group: true } => self.proc.signal_group(signal),
                    Order::Signal { signal, group: false } => self.proc.signal_leader(signal),
                },
                () = sleep_until(kill_at.unwrap_or_else(Instant::now)), if kill_at.is_some() => {
                    self.proc.signal_group(Signal::SIGKILL);
                    killed_by_agent = true;
                    kill_at = None;
                }
                _ = check.tick(), if rotation.is_none() => {
                    if let Some(mut logs) = self.logs.take_if(|l| l.needs_check()) {
                        rotation = Some(tokio::task::spawn_blocking(move || {
                            logs.check();
                            logs
                        }));
                    }
                }
                done = join_opt(&mut rotation) => {
                    rotation = None;
                    self.logs = Some(done.unwrap_or_else(|_| self.spare.fresh()));
                }
            }
        }
        // Kill the rest of the group while the leader's zombie pins the group id, then reap.
        let status = self.proc.finish();
        // A rotation under way finishes before the tail is read.
        if let Some(r) = rotation.take() {
            let _ = r.await;
        }
        let (paths, tail_lines) = (self.spare.paths().clone(), self.tail_lines);
        let fallback = paths[0].clone();
        let tail = tokio::task::spawn_blocking(move || output::tail(&paths, tail_lines))
            .await
            .unwrap_or(output::Tail {
                lines: Vec::new(),
                file: fallback,
            });
        let info = match status {
            Some(status) => ExitInfo::from_status(status, killed_by_agent, tail.lines),
            None => ExitInfo::status_unknown(killed_by_agent, tail.lines),
        };
        ExitInfo {
            log_file: Some(tail.file),
            ..info
        }
    }
}

/// The result of a rotation task, or pending forever when none runs.
async fn join_opt<T>(h: &mut Option<JoinHandle<T>>) -> Result<T, tokio::task::JoinError> {
    match h {
        Some(h) => h.await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests;
