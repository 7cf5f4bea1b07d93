//! The agent's data-dir and who may look into it. The agent's own files (its state, outbox,
//! lock, endpoints, logs, log archives, downloads) are for root alone; the games, which run as
//! another user, must still reach their builds (`builds/<hash>`) and the default game root
//! (`game/`), which are theirs. So the data-dir and `builds/` are `rwx--x--x` (enter by name,
//! never list), and every folder of the agent's own is `rwx------`. Set at every start, so a
//! data-dir made by an older version, or by hand, is closed too.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The data-dir and `builds/`: entered by the games by name, listed by no one but the owner.
pub const TRAVERSE_ONLY: u32 = 0o711;
/// The agent's own folders.
pub const OWNER_ONLY: u32 = 0o700;

/// The folders of the agent's own, created closed.
const PRIVATE: [&str; 3] = ["logs", crate::agent::logarchive::FOLDER, "downloads"];

/// Why the data-dir could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    /// A folder could not be created.
    #[error("cannot create directory {path}: {source}")]
    Create {
        /// The folder.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A folder's mode could not be set.
    #[error("cannot set the mode of {path} to {mode:o}: {source}")]
    Mode {
        /// The folder.
        path: PathBuf,
        /// The mode wanted.
        mode: u32,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// Creates `data_dir` and its folders with the modes above (and sets them on folders that
/// exist with others).
pub fn prepare(data_dir: &Path) -> Result<(), DataDirError> {
    folder(data_dir, TRAVERSE_ONLY)?;
    folder(&data_dir.join("builds"), TRAVERSE_ONLY)?;
    for name in PRIVATE {
        folder(&data_dir.join(name), OWNER_ONLY)?;
    }
    Ok(())
}

/// Writes `bytes` to `path` as a file only its owner can read (mode 600, also when the file was
/// there before with another).
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    file.write_all(bytes)
}

fn folder(path: &Path, mode: u32) -> Result<(), DataDirError> {
    std::fs::create_dir_all(path).map_err(|source| DataDirError::Create {
        path: path.to_path_buf(),
        source,
    })?;
    let now = std::fs::metadata(path)
        .map_err(|source| DataDirError::Create {
            path: path.to_path_buf(),
            source,
        })?
        .permissions()
        .mode()
        & 0o7777;
    if now != mode {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(
            |source| DataDirError::Mode {
                path: path.to_path_buf(),
                mode,
                source,
            },
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn a_new_and_an_old_data_dir_end_closed() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("a/data");
        prepare(&data).unwrap();
        assert_eq!(mode(&data), 0o711);
        assert_eq!(mode(&data.join("builds")), 0o711);
        for name in PRIVATE {
            assert_eq!(mode(&data.join(name)), 0o700, "{name}");
        }
        // An older version's folders, open to all.
        for p in [data.clone(), data.join("logs"), data.join("builds")] {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o777)).unwrap();
        }
        prepare(&data).unwrap();
        assert_eq!(mode(&data), 0o711);
        assert_eq!(mode(&data.join("logs")), 0o700);
        assert_eq!(mode(&data.join("builds")), 0o711);
    }

    #[test]
    fn private_files_are_private_even_when_they_were_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("endpoints.json");
        std::fs::write(&path, "old, longer text").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_private(&path, b"new").unwrap();
        assert_eq!(mode(&path), 0o600);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new");
    }

    #[test]
    fn a_data_dir_that_is_a_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::write(&data, "").unwrap();
        let e = prepare(&data).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("cannot create directory {}", data.display())),
            "{e}"
        );
    }
}
