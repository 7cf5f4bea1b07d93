//! A game process comes under supervision: launched (spawned as its own group's leader, output
//! to files, identified, watched through a pidfd), or adopted from the agent before.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use super::escape::Tag;
use super::identity::{Identity, IdentityError};
use super::output::{LogFiles, open_for_child};
use super::proc::{Proc, Watch};
use super::{
    AdoptError, AdoptSpec, ExitInfo, LaunchSpec, ProcessHandle, SpawnError, check_executable,
    children, escape, identity, local_game, log_path, supervise, sys,
};

/// Starts a process and its supervising task; `on_exit` runs once, after the process (and its
/// group) is gone and reaped. Must be called inside the tokio runtime.
///
/// The returned [`Identity`] has the start time read right after spawn and the executable
/// read from `/proc/<pid>/exe` then: `std::process::Command::spawn` returns only after the
/// exec succeeded, so that is the game's executable, not the agent's (for a `#!` script it is
/// the interpreter). A game that later execs another binary no longer matches it.
pub fn launch(
    spec: &LaunchSpec,
    on_exit: impl FnOnce(u32, ExitInfo) + Send + 'static,
) -> Result<ProcessHandle, SpawnError> {
    launch_with(spec, Watch::Pidfd, on_exit)
}

pub(super) fn launch_with(
    spec: &LaunchSpec,
    watch: Watch,
    on_exit: impl FnOnce(u32, ExitInfo) + Send + 'static,
) -> Result<ProcessHandle, SpawnError> {
    // A confined game finds its launch path in its namespace, where links into /local/game
    // lead into its build.
    match spec.local_game.as_deref() {
        Some(root) if local_game::will_confine(Some(root)) => {
            check_executable(&local_game::seen_at(&spec.program, root))?
        }
        _ => check_executable(&spec.program)?,
    }
    let paths = ["stdout", "stderr"].map(|s| log_path(&spec.log_dir, &spec.process_id, s));
    let open = |path: &PathBuf| {
        open_for_child(path).map_err(|source| SpawnError::OpenLog {
            path: path.clone(),
            source,
        })
    };
    let (stdout, stderr) = (open(&paths[0])?, open(&paths[1])?);
    let mut cmd = std::process::Command::new(&spec.program);
    cmd.args(&spec.args)
        .current_dir(&spec.cwd)
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr);
    // Marks this launch's descendants apart from any other game's (see `escape`).
    let launch_id = uuid::Uuid::new_v4().to_string();
    cmd.env(escape::LAUNCH_ID_VAR, &launch_id);
    let confined =
        local_game::confine(&mut cmd, spec.local_game.as_deref(), spec.user).map_err(|source| {
            SpawnError::LocalGame {
                path: spec.program.clone(),
                source,
            }
        })?;
    // A game gains no privilege from anything it runs (a setuid helper, file capabilities).
    sys::no_new_privs_at_exec(&mut cmd);
    let spawned = spawn_own(&mut cmd, watch).map_err(|e| match &spec.local_game {
        Some(root) if confined => local_game::spawn_context(e, root),
        _ => e,
    });
    let (pid, pidfd) = spawned.map_err(|source| match source.kind() {
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
    let identity = match identify_child(pid, &spec.program) {
        Ok(id) => id,
        Err(source) => {
            // Kill-on-drop of the Proc takes it down and reaps it.
            drop(Proc::own(pid, pidfd, 0));
            return Err(SpawnError::Identify { pid, source });
        }
    };
    let detached = Arc::new(AtomicBool::new(false));
    let proc = Proc::own(pid, pidfd, identity.start_ticks).detachable(detached.clone());
    let tag = Tag::from_env(spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .map(|t| t.with_launch(launch_id));
    let logs = LogFiles::new(paths, spec.max_log_bytes, spec.keep_logs);
    let orders = supervise(proc, logs, spec.tail_lines, tag, &spec.process_id, on_exit);
    Ok(ProcessHandle {
        identity,
        orders,
        detached,
    })
}

/// Spawns `cmd` as the leader of a new session and process group, registered so the orphan
/// reaper leaves it alone, with a pidfd (by `watch`; `None` without pidfds). The child is ours
/// until reaped: dropping std's `Child` neither kills nor waits.
///
/// A session of its own: `setpgid` joins only a group of the caller's own session, so no
/// process outside the game's session (a neighbour game, another user's process in the
/// agent's session) can move into the game's group and speak for it through the SDK's group
/// rule.
pub(crate) fn spawn_own(
    cmd: &mut std::process::Command,
    watch: Watch,
) -> std::io::Result<(u32, Option<std::os::fd::OwnedFd>)> {
    sys::new_session_at_exec(cmd);
    let pid = children::spawn(cmd)?.id();
    let pidfd = match watch {
        Watch::Pidfd => open_pidfd_of_child(pid),
        Watch::Poll => None,
    };
    Ok((pid, pidfd))
}

/// A pidfd for an own, unreaped child (its pid cannot be reused yet); `None` without pidfds.
fn open_pidfd_of_child(pid: u32) -> Option<std::os::fd::OwnedFd> {
    match sys::pidfd_open(pid) {
        Ok(fd) => Some(fd),
        Err(e) => {
            if e.raw_os_error() != Some(libc::ENOSYS) {
                tracing::warn!(process.pid = pid, error = %e, "cannot open a pidfd; polling instead");
            }
            None
        }
    }
}

/// The identity of a just-spawned own child (exec has completed).
fn identify_child(pid: u32, program: &Path) -> std::io::Result<Identity> {
    let stat =
        identity::read_stat(pid)?.ok_or_else(|| std::io::Error::from_raw_os_error(libc::ESRCH))?;
    // A child that already exited has no exe link any more: its program stands in.
    let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
        .or_else(|_| std::fs::canonicalize(program))
        .unwrap_or_else(|_| program.to_path_buf());
    Ok(Identity::in_this_boot(pid, stat.start_ticks, exe))
}

/// Takes over the supervision of a game the previous agent started, recorded as `identity`.
///
/// A pidfd is opened first and the identity checked after: if `/proc/<pid>` still shows the
/// recorded start time and executable once the pidfd exists, the pidfd provably names the
/// recorded process (a pidfd never changes process). A mismatch is a [`AdoptError::Stranger`],
/// which is never signalled. The adopted process is not the agent's child, so its exit status
/// is unknown (see [`ExitInfo::status_known`]). Must be called inside the tokio runtime.
pub fn adopt(
    spec: &AdoptSpec,
    identity: &Identity,
    on_exit: impl FnOnce(u32, ExitInfo) + Send + 'static,
) -> Result<ProcessHandle, AdoptError> {
    adopt_with(spec, identity, Watch::Pidfd, on_exit)
}

pub(super) fn adopt_with(
    spec: &AdoptSpec,
    identity: &Identity,
    watch: Watch,
    on_exit: impl FnOnce(u32, ExitInfo) + Send + 'static,
) -> Result<ProcessHandle, AdoptError> {
    let pid = identity.pid;
    let pidfd = match watch {
        Watch::Pidfd => match sys::pidfd_open(pid) {
            Ok(fd) => Some(fd),
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {
                return Err(AdoptError::Gone { pid });
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => None,
            Err(source) => return Err(AdoptError::Pidfd { pid, source }),
        },
        Watch::Poll => None,
    };
    let current = match Identity::read(pid) {
        Ok(c) => c,
        Err(IdentityError::Gone { .. }) => return Err(AdoptError::Gone { pid }),
        Err(source) => return Err(AdoptError::Inspect { pid, source }),
    };
    if !identity.matches(&current) {
        return Err(AdoptError::Stranger {
            pid,
            recorded: format!(
                "{} started at tick {}",
                identity.exe.display(),
                identity.start_ticks
            ),
            found: format!(
                "{} started at tick {}",
                current.exe.display(),
                current.start_ticks
            ),
        });
    }
    // The tag of its descendants is in its own environment (unreadable: no escape sweep).
    let tag = std::fs::read(format!("/proc/{pid}/environ"))
        .ok()
        .and_then(|e| Tag::from_environ(&e));
    if let Some(t) = &tag
        && t.process_id() != spec.process_id
    {
        return Err(AdoptError::Stranger {
            pid,
            recorded: format!("process {}", spec.process_id),
            found: format!("process {}", t.process_id()),
        });
    }
    let detached = Arc::new(AtomicBool::new(false));
    let proc = Proc::adopted(pid, pidfd, identity.start_ticks).detachable(detached.clone());
    let paths = ["stdout", "stderr"].map(|s| log_path(&spec.log_dir, &spec.process_id, s));
    let logs = LogFiles::new(paths, spec.max_log_bytes, spec.keep_logs);
    let orders = supervise(proc, logs, spec.tail_lines, tag, &spec.process_id, on_exit);
    tracing::info!(process.pid = pid, process.id = %spec.process_id, "adopted a running process");
    Ok(ProcessHandle {
        identity: identity.clone(),
        orders,
        detached,
    })
}
