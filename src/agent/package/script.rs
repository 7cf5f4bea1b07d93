//! `install.sh`: run once per build, before anything launches, with a timeout and its output
//! in a log file, seeing its build at `/local/game` when the agent can.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use crate::agent::process::local_game::{self, LocalGameError};
use crate::agent::process::spawn_child_group;

/// Lines of install.sh output shown in an error.
const TAIL_LINES: usize = 20;

/// Why install.sh failed or could not run.
#[derive(Debug, thiserror::Error)]
pub enum ScriptError {
    /// Windows line endings make `sh` fail with confusing errors.
    #[error(
        "install.sh has Windows (CRLF) line endings, which /bin/sh cannot run; convert it (e.g. dos2unix install.sh) and rebuild the package"
    )]
    Crlf,
    /// The log file could not be created.
    #[error("cannot create the install log {path}: {source}")]
    Log {
        /// The log.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// It could not be started.
    #[error("cannot start install.sh: {0}")]
    Spawn(#[source] std::io::Error),
    /// Its private `/local/game` could not be prepared.
    #[error("cannot give install.sh its /local/game: {0}")]
    LocalGame(#[source] LocalGameError),
    /// It failed.
    #[error("install.sh failed ({status}); see {log}; last output:\n{tail}")]
    Failed {
        /// `exit code 3` or `killed by SIGSEGV`.
        status: String,
        /// The log file.
        log: PathBuf,
        /// Its last lines.
        tail: String,
    },
    /// It ran past the timeout and was killed.
    #[error(
        "install.sh did not finish within {timeout:?} and was killed; see {log}; last output:\n{tail}"
    )]
    Timeout {
        /// The timeout.
        timeout: Duration,
        /// The log file.
        log: PathBuf,
        /// Its last lines.
        tail: String,
    },
}

impl ScriptError {
    /// The last output lines, for reports.
    pub fn tail(&self) -> Option<&str> {
        match self {
            Self::Failed { tail, .. } | Self::Timeout { tail, .. } => Some(tail),
            _ => None,
        }
    }
}

/// What running the script did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptRun {
    /// The log file.
    pub log: PathBuf,
    /// Set when the script was not executable and ran through `/bin/sh`.
    pub note: Option<String>,
}

/// Runs `<root>/install.sh` if it exists, with `root` as working directory and `env` as its
/// whole environment; `Ok(None)` when there is none. When the agent can, it sees `root` at
/// `/local/game` as GSE ran it (see [`local_game`]).
pub async fn run_install_script(
    root: &Path,
    log: &Path,
    env: &[(String, String)],
    timeout: Duration,
) -> Result<Option<ScriptRun>, ScriptError> {
    let script = root.join("install.sh");
    let Ok(meta) = std::fs::symlink_metadata(&script) else {
        return Ok(None);
    };
    if !meta.is_file() {
        return Ok(None);
    }
    let text = std::fs::read(&script).map_err(ScriptError::Spawn)?;
    if text.windows(2).any(|w| w == b"\r\n") {
        return Err(ScriptError::Crlf);
    }
    use std::os::unix::fs::PermissionsExt;
    let executable = meta.permissions().mode() & 0o111 != 0;
    let mut cmd = if executable {
        std::process::Command::new(&script)
    } else {
        let mut c = std::process::Command::new("/bin/sh");
        c.arg(&script);
        c
    };
    let note = (!executable).then(|| {
        "install.sh is not executable (no x bit); it was run with /bin/sh. Set the bit in the package (chmod +x install.sh) to silence this.".to_string()
    });
    if let Some(n) = &note {
        tracing::warn!(package.root = %root.display(), "{n}");
    }
    let out = std::fs::File::create(log).map_err(|source| ScriptError::Log {
        path: log.to_path_buf(),
        source,
    })?;
    let err = out.try_clone().map_err(|source| ScriptError::Log {
        path: log.to_path_buf(),
        source,
    })?;
    cmd.current_dir(root)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    let confined =
        local_game::confine(&mut cmd, Some(root), None).map_err(ScriptError::LocalGame)?;
    tracing::info!(package.root = %root.display(), install.log = %log.display(), local_game.private = confined, "running install.sh");
    // Its own process group, watched through a pidfd. If this future is dropped (Ctrl-C, agent
    // stop), dropping the child kills the whole group: nothing the script started survives.
    let mut child = spawn_child_group(&mut cmd).map_err(|e| {
        ScriptError::Spawn(if confined {
            local_game::spawn_context(e, root)
        } else {
            e
        })
    })?;
    let status = match tokio::time::timeout(timeout, child.wait()).await {
        // `wait` killed what was left of the group before reaping the script.
        Ok(status) => status.map_err(ScriptError::Spawn)?,
        Err(_) => {
            // Killed while unreaped (the group id is still the script's), then reaped.
            child.kill();
            let _ = child.wait().await;
            return Err(ScriptError::Timeout {
                timeout,
                log: log.to_path_buf(),
                tail: tail(log),
            });
        }
    };
    if !status.success() {
        let info = crate::agent::process::ExitInfo::from_status(Ok(status), false, vec![]);
        return Err(ScriptError::Failed {
            status: info.describe(),
            log: log.to_path_buf(),
            tail: tail(log),
        });
    }
    Ok(Some(ScriptRun {
        log: log.to_path_buf(),
        note,
    }))
}

/// The last lines of a log file.
pub fn tail(log: &Path) -> String {
    use std::io::{Read, Seek, SeekFrom};
    // Only the end of the file: the log has no size cap.
    let mut text = Vec::new();
    if let Ok(mut f) = std::fs::File::open(log) {
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        let _ = f.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)));
        let _ = f.take(64 * 1024).read_to_end(&mut text);
    }
    let text = String::from_utf8_lossy(&text);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n")
}
