//! One agent per data-dir: `data-dir/agent.lock`, held (flock) for the agent's life and naming
//! its pid. Two agents on one data-dir would each think they own the same games and state.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

/// The lock file's name in the data-dir.
pub const LOCK_FILE: &str = "agent.lock";

/// Why the data-dir could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another agent holds it.
    #[error(
        "data-dir {path} is in use by another gse-agent ({holder}): each agent needs its own data-dir (and game-root, sdk-listen, capi-listen); see \"Two fleets on one host\" in the README"
    )]
    InUse {
        /// The data-dir.
        path: PathBuf,
        /// What the holder wrote (its pid), or that it is unknown.
        holder: String,
    },
    /// The lock file could not be opened or locked.
    #[error("cannot lock {path}: {source}")]
    Io {
        /// The lock file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// The held lock; released when dropped (or when the process ends, however it ends).
#[derive(Debug)]
pub struct DataDirLock(#[allow(dead_code)] Flock<File>);

fn holder_of(file: &mut File) -> String {
    let mut text = String::new();
    let _ = file.read_to_string(&mut text);
    match text.trim() {
        "" => "pid unknown".to_string(),
        pid => format!("pid {pid}"),
    }
}

/// Takes the lock of `data_dir` (which must exist) and writes this process's pid into it.
pub fn acquire(data_dir: &Path) -> Result<DataDirLock, LockError> {
    let path = data_dir.join(LOCK_FILE);
    let io = |source| LockError::Io {
        path: path.clone(),
        source,
    };
    let file = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(io)?
    };
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(mut held) => {
            held.set_len(0).map_err(io)?;
            held.rewind().map_err(io)?;
            write!(held, "{}", std::process::id()).map_err(io)?;
            Ok(DataDirLock(held))
        }
        Err((mut file, Errno::EWOULDBLOCK)) => Err(LockError::InUse {
            path: data_dir.to_path_buf(),
            holder: holder_of(&mut file),
        }),
        Err((_, e)) => Err(io(std::io::Error::from(e))),
    }
}

/// Whether a running agent holds `data_dir` (for check-config): what it wrote, if so.
pub fn holder(data_dir: &Path) -> Option<String> {
    let mut file = File::open(data_dir.join(LOCK_FILE)).ok()?;
    let text = holder_of(&mut file);
    match Flock::lock(file, FlockArg::LockSharedNonblock) {
        Ok(_) => None,
        Err((_, Errno::EWOULDBLOCK)) => Some(text),
        Err(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_with_the_first_ones_pid() {
        let dir = tempfile::tempdir().unwrap();
        let held = acquire(dir.path()).unwrap();
        let pid = std::process::id().to_string();
        match acquire(dir.path()) {
            Err(LockError::InUse { holder, .. }) => assert!(holder.contains(&pid), "{holder}"),
            other => panic!("expected InUse, got {other:?}"),
        }
        assert!(holder(dir.path()).unwrap().contains(&pid));
        drop(held);
        assert_eq!(holder(dir.path()), None);
        acquire(dir.path()).unwrap();
    }
}
