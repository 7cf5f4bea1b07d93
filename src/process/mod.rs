//! One game process: spawn it as the leader of its own process group, capture its output,
//! stop it (SIGTERM to the group, grace, SIGKILL to the group), reap it, and say how it ended.
//!
//! Each process gets one task ([`launch`]) that owns the child handle and both output pipes.

mod exit;
mod identity;
mod output;
mod signal;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::process::Command;
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until};
use tracing::Instrument;

pub use exit::ExitInfo;
pub use identity::{AdoptError, AdoptSpec, Identity, adopt};
pub use output::{RotatingLog, Tail};
pub use signal::signal_group;

/// How long output is still read after the process exited (grandchildren may hold the pipes).
const DRAIN_AFTER_EXIT: Duration = Duration::from_millis(200);

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
    /// The complete environment (nothing is inherited).
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
}

/// A running process.
#[derive(Debug)]
pub struct ProcessHandle {
    /// OS pid, which is also its process group id.
    pub pid: u32,
    /// The agent's id of the process.
    pub process_id: String,
    /// Which process it is.
    pub identity: Identity,
    stop: mpsc::UnboundedSender<Duration>,
}

impl ProcessHandle {
    /// SIGTERM to the group now, SIGKILL after `grace` (a later, shorter grace wins).
    pub fn stop(&self, grace: Duration) {
        // The task is gone only after the exit was reported; nothing to stop then.
        let _ = self.stop.send(grace);
    }
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

/// Starts a process and its supervising task; `on_exit` runs once, after the process (and its
/// group) is gone and reaped.
pub fn launch(
    spec: &LaunchSpec,
    on_exit: impl FnOnce(u32, ExitInfo) + Send + 'static,
) -> Result<ProcessHandle, SpawnError> {
    check_executable(&spec.program)?;
    let open = |stream| {
        let path = log_path(&spec.log_dir, &spec.process_id, stream);
        RotatingLog::open(path.clone(), spec.max_log_bytes, spec.keep_logs)
            .map_err(|source| SpawnError::OpenLog { path, source })
    };
    let logs = [open("stdout")?, open("stderr")?];
    let mut cmd = Command::new(&spec.program);
    cmd.args(&spec.args)
        .current_dir(&spec.cwd)
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some((uid, gid)) = spec.user {
        cmd.uid(uid).gid(gid);
    }
    let mut child = cmd.spawn().map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied => {
            SpawnError::InvalidPath {
                path: spec.program.clone(),
                reason: format!("cannot be executed: {source}"),
            }
        }
        _ => SpawnError::Spawn {
            path: spec.program.clone(),
            source,
        },
    })?;
    let pid = child.id().expect("a just-spawned child has a pid");
    let (stop_tx, stop_rx) = mpsc::unbounded_channel();
    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");
    let task = Supervised {
        child,
        pid,
        pipes: [Some(Box::new(stdout)), Some(Box::new(stderr))],
        logs,
        tail: Tail::new(spec.tail_lines),
        reaped: false,
    };
    let span = tracing::info_span!("process", process.id = %spec.process_id, process.pid = pid);
    tokio::spawn(
        async move {
            let info = task.run(stop_rx).await;
            on_exit(pid, info);
        }
        .instrument(span),
    );
    Ok(ProcessHandle {
        pid,
        identity: Identity::read(pid).unwrap_or(Identity {
            pid,
            start_ticks: 0,
            exe: spec.program.clone(),
        }),
        process_id: spec.process_id.clone(),
        stop: stop_tx,
    })
}

type Pipe = Box<dyn tokio::io::AsyncRead + Unpin + Send>;

struct Supervised {
    child: tokio::process::Child,
    pid: u32,
    pipes: [Option<Pipe>; 2],
    logs: [RotatingLog; 2],
    tail: Tail,
    /// Set once the child is reaped; until then dropping this kills the group.
    reaped: bool,
}

impl Drop for Supervised {
    /// The task was dropped before the process ended (the runtime is going away): take the
    /// whole group down rather than orphan it.
    fn drop(&mut self) {
        if !self.reaped {
            signal_group(self.pid, nix::sys::signal::Signal::SIGKILL);
        }
    }
}

impl Supervised {
    async fn run(mut self, mut stop_rx: mpsc::UnboundedReceiver<Duration>) -> ExitInfo {
        let mut bufs = [vec![0u8; 16 * 1024], vec![0u8; 16 * 1024]];
        let mut kill_at: Option<Instant> = None;
        let mut killed_by_agent = false;
        let status = loop {
            let [b0, b1] = &mut bufs;
            let [p0, p1] = &mut self.pipes;
            tokio::select! {
                r = read_opt(p0, b0) => self.record(0, r, &bufs),
                r = read_opt(p1, b1) => self.record(1, r, &bufs),
                status = self.child.wait() => {
                    self.reaped = true;
                    break status;
                }
                Some(grace) = stop_rx.recv() => {
                    signal_group(self.pid, nix::sys::signal::Signal::SIGTERM);
                    let at = Instant::now() + grace;
                    kill_at = Some(kill_at.map_or(at, |k| k.min(at)));
                }
                () = sleep_until(kill_at.unwrap_or_else(Instant::now)), if kill_at.is_some() => {
                    signal_group(self.pid, nix::sys::signal::Signal::SIGKILL);
                    killed_by_agent = true;
                    kill_at = None;
                }
            }
        };
        // No grandchild outlives the process: kill what is left of its group.
        signal_group(self.pid, nix::sys::signal::Signal::SIGKILL);
        let deadline = Instant::now() + DRAIN_AFTER_EXIT;
        while self.pipes.iter().any(Option::is_some) {
            let [b0, b1] = &mut bufs;
            let [p0, p1] = &mut self.pipes;
            tokio::select! {
                r = read_opt(p0, b0) => self.record(0, r, &bufs),
                r = read_opt(p1, b1) => self.record(1, r, &bufs),
                () = sleep_until(deadline) => break,
            }
        }
        for log in &mut self.logs {
            log.flush();
        }
        ExitInfo::from_status(status, killed_by_agent, self.tail.lines())
    }

    fn record(&mut self, stream: usize, read: std::io::Result<usize>, bufs: &[Vec<u8>; 2]) {
        match read {
            Ok(0) | Err(_) => self.pipes[stream] = None,
            Ok(n) => {
                let chunk = &bufs[stream][..n];
                self.logs[stream].write(chunk);
                self.tail.push(stream, chunk);
            }
        }
    }
}

async fn read_opt(pipe: &mut Option<Pipe>, buf: &mut [u8]) -> std::io::Result<usize> {
    match pipe {
        Some(p) => p.read(buf).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests;
