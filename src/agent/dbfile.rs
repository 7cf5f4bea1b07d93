//! The agent's redb files, opened defensively and held so that they can be reopened.
//!
//! The agent keeps two redb files in `data-dir`: `state.redb`, what a restarted agent needs to
//! adopt its games ([`crate::agent::store`]), and `outbox.redb`, the events on their way to the
//! control plane and the command ledger ([`crate::agent::upstream`]). Two files, so that a corrupted
//! outbox never costs the running games, and a corrupted state never costs the events.
//!
//! **Opening.** Every open checks the whole file: redb verifies the checksum of every page the
//! last commit reaches and rebuilds its allocator state. Without the check a corrupted page is
//! trusted: its garbage is read back as data, or redb panics on it (its debug builds assert; a
//! bad page number indexes out of bounds). The open also runs under `catch_unwind`, and a
//! panic counts as corruption. Every write transaction commits in two phases
//! ([`write_txn`]), so a primary commit whose pages do not verify is never a torn commit that
//! redb may quietly roll back to the one before (which would reuse outbox sequences): it is
//! reported as corruption, always. The price is a second fsync per commit.
//!
//! **Faults.** After an I/O error (a full disk, EIO) redb refuses every later transaction
//! ("Previous I/O error occurred") until the file is closed and opened again. [`SharedDb`] is
//! the one handle every user of a file takes its [`Database`] from, one transaction at a time.
//! The file's owner closes it after a fault and opens it again; the others get the new one on
//! their next call, and say so with [`SharedDb::report_fault`] when they meet a fault first.
//!
//! **Corruption.** A file that does not verify is renamed aside to
//! `<name>.corrupt-<unix-ms>` (kept for forensics, never read again) and a fresh one is
//! created in its place ([`SharedDb::replace`]); what that costs is the owner's to say.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use redb::{Database, DatabaseError, StorageError, WriteTransaction};

/// How long a reopen waits for the users of the closed handle to finish their transaction.
const RELEASE_WAIT: Duration = Duration::from_secs(2);

/// Why a redb file could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum DbFileError {
    /// The file is not a sound redb database (it does not verify, or redb panicked reading
    /// it).
    #[error("{path} is corrupt: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Another process holds the file: a second agent on the same data-dir.
    #[error("{path} is in use by another process: is another agent running on this data-dir?")]
    InUse {
        /// The file.
        path: PathBuf,
    },
    /// Opening failed for another reason (permissions, a full or failing disk).
    #[error("cannot open {path}: {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// What redb said.
        #[source]
        source: DatabaseError,
    },
    /// A user of the closed handle did not let go of it in time; the reopen is tried later.
    #[error("cannot reopen {path}: the previous handle is still in use")]
    Busy {
        /// The file.
        path: PathBuf,
    },
    /// A corrupt file could not be renamed aside.
    #[error("cannot move the corrupt {path} aside: {source}")]
    MoveAside {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// Runs `f`, turning a panic into an error that carries the panic's message.
pub fn guarded<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|payload| {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "no message".to_string());
        format!("redb panicked reading it: {message}")
    })
}

/// Whether `e` says the file's content is unsound (as opposed to the disk or the process
/// failing).
pub fn is_corruption(e: &redb::Error) -> bool {
    match e {
        redb::Error::Corrupted(_)
        | redb::Error::UpgradeRequired(_)
        | redb::Error::TableTypeMismatch { .. }
        | redb::Error::TableIsMultimap(_)
        | redb::Error::TableIsNotMultimap(_)
        | redb::Error::TypeDefinitionChanged { .. } => true,
        redb::Error::Io(io) => io.kind() == std::io::ErrorKind::InvalidData,
        _ => false,
    }
}

/// Whether `e` is a fault of the file or the disk, after which the file must be closed and
/// opened again (as opposed to a table that is not there yet).
pub fn is_fault(e: &redb::Error) -> bool {
    matches!(
        e,
        redb::Error::Io(_)
            | redb::Error::PreviousIo
            | redb::Error::DatabaseClosed
            | redb::Error::Corrupted(_)
            | redb::Error::Backend(_)
            | redb::Error::LockPoisoned(_)
            | redb::Error::TransactionPoisoned
    )
}

/// Opens (or creates) the redb file at `path`, checking all of it; corruption, a panic
/// included, is [`DbFileError::Corrupt`].
pub fn open(path: &Path, cache_bytes: usize) -> Result<Database, DbFileError> {
    let corrupt = |reason: String| DbFileError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    let opened = guarded(|| {
        Database::builder()
            .set_cache_size(cache_bytes)
            .set_check_integrity_on_open(true)
            .create(path)
    })
    .map_err(corrupt)?;
    let db = opened.map_err(|e| match e {
        DatabaseError::DatabaseAlreadyOpen | DatabaseError::LockProtocolMismatch => {
            DbFileError::InUse {
                path: path.to_path_buf(),
            }
        }
        DatabaseError::UpgradeRequired(v) => corrupt(format!(
            "it has file format {v}, which this redb cannot read"
        )),
        DatabaseError::Storage(StorageError::Corrupted(m)) => corrupt(m),
        DatabaseError::Storage(StorageError::Io(io))
            if io.kind() == std::io::ErrorKind::InvalidData =>
        {
            corrupt(io.to_string())
        }
        source => DbFileError::Open {
            path: path.to_path_buf(),
            source,
        },
    })?;
    // Every session, player id and PlayerData is in it: for the agent's eyes only.
    use std::os::unix::fs::PermissionsExt;
    if let Err(e) = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)) {
        tracing::warn!(path = %path.display(), error = %e, "cannot make the state file private (mode 600)");
    }
    Ok(db)
}

/// A write transaction that commits in two phases (see the module doc).
pub fn write_txn(db: &Database) -> Result<WriteTransaction, redb::TransactionError> {
    let mut txn = db.begin_write()?;
    txn.set_two_phase_commit(true);
    Ok(txn)
}

/// Renames `path` to `<path>.corrupt-<unix-ms>` (a later name if that one is taken) and makes
/// the rename durable; returns the new name.
pub fn move_aside(path: &Path, now_ms: u64) -> std::io::Result<PathBuf> {
    let mut ms = now_ms;
    let kept = loop {
        let candidate = PathBuf::from(format!("{}.corrupt-{ms}", path.display()));
        if std::fs::symlink_metadata(&candidate).is_err() {
            break candidate;
        }
        ms += 1;
    };
    std::fs::rename(path, &kept)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(kept)
}

/// One redb file shared by several users, which its owner can close and open again after a
/// fault. Users take the current [`Database`] for one transaction at a time and never keep
/// it.
pub struct SharedDb {
    path: PathBuf,
    cache_bytes: usize,
    current: Mutex<Option<Arc<Database>>>,
    /// The handle closed last, until every user has let go of it (only then may the file be
    /// opened again: redb locks it per handle).
    closing: Mutex<Weak<Database>>,
    fault: AtomicBool,
}

impl std::fmt::Debug for SharedDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedDb")
            .field("path", &self.path)
            .field("open", &self.get().is_some())
            .finish()
    }
}

impl SharedDb {
    /// The file at `path`, not opened yet (see [`SharedDb::reopen`]).
    pub fn closed(path: &Path, cache_bytes: usize) -> Arc<Self> {
        Arc::new(Self {
            path: path.to_path_buf(),
            cache_bytes,
            current: Mutex::new(None),
            closing: Mutex::new(Weak::new()),
            fault: AtomicBool::new(false),
        })
    }

    /// Opens (or creates) the file at `path`; corruption is an error.
    pub fn open(path: &Path, cache_bytes: usize) -> Result<Arc<Self>, DbFileError> {
        let shared = Self::closed(path, cache_bytes);
        shared.reopen()?;
        Ok(shared)
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The open database, for one transaction; `None` while the file is closed after a fault.
    pub fn get(&self) -> Option<Arc<Database>> {
        self.current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Says that a user met a fault (see [`is_fault`]): the owner reopens the file.
    pub fn report_fault(&self) {
        self.fault.store(true, Ordering::Relaxed);
    }

    /// Whether a fault was reported since the last call.
    pub fn take_fault(&self) -> bool {
        self.fault.swap(false, Ordering::Relaxed)
    }

    /// Closes the file: new users get `None` until it is opened again.
    pub fn close(&self) {
        let old = self
            .current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(old) = old {
            *self.closing.lock().unwrap_or_else(|p| p.into_inner()) = Arc::downgrade(&old);
        }
    }

    /// Waits until no user holds the handle closed last.
    fn released(&self) -> Result<(), DbFileError> {
        let closing = self.closing.lock().unwrap_or_else(|p| p.into_inner());
        let deadline = Instant::now() + RELEASE_WAIT;
        while closing.strong_count() > 0 {
            if Instant::now() >= deadline {
                return Err(DbFileError::Busy {
                    path: self.path.clone(),
                });
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }

    /// Closes the file (if open) and opens it again, checking all of it; on an error the file
    /// stays closed. Blocking.
    pub fn reopen(&self) -> Result<(), DbFileError> {
        self.close();
        self.released()?;
        let db = open(&self.path, self.cache_bytes)?;
        self.fault.store(false, Ordering::Relaxed);
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(db));
        Ok(())
    }

    /// Closes the file, renames it aside (see [`move_aside`]) and opens a fresh, empty one in
    /// its place; returns where the old one went. Blocking.
    pub fn replace(&self, now_ms: u64) -> Result<PathBuf, DbFileError> {
        self.close();
        self.released()?;
        let kept = if self.path.exists() {
            Some(
                move_aside(&self.path, now_ms).map_err(|source| DbFileError::MoveAside {
                    path: self.path.clone(),
                    source,
                })?,
            )
        } else {
            None
        };
        self.reopen()?;
        Ok(kept.unwrap_or_else(|| self.path.clone()))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use redb::{ReadableDatabase, TableDefinition};

    const T: TableDefinition<u64, &[u8]> = TableDefinition::new("t");

    /// A small tmpfs mounted on a new directory, unmounted on drop; `None` (with the reason
    /// printed) when the test does not run as root.
    pub(crate) struct Tmpfs {
        pub dir: tempfile::TempDir,
    }

    impl Tmpfs {
        pub(crate) fn mount(size: &str) -> Option<Self> {
            if !nix::unistd::geteuid().is_root() {
                eprintln!("skipped: mounting a tmpfs needs root");
                return None;
            }
            let dir = tempfile::tempdir().unwrap();
            let status = std::process::Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(status.success(), "mount -t tmpfs failed");
            Some(Self { dir })
        }

        pub(crate) fn path(&self) -> &Path {
            self.dir.path()
        }

        /// Writes a file that takes all the space left; returns its path.
        pub(crate) fn fill(&self) -> PathBuf {
            use std::io::Write;
            let path = self.path().join("filler");
            let mut f = std::fs::File::create(&path).unwrap();
            let chunk = vec![0u8; 64 * 1024];
            while f.write_all(&chunk).is_ok() {}
            // What is left is smaller than a chunk.
            while f.write_all(&chunk[..512]).is_ok() {}
            path
        }
    }

    impl Drop for Tmpfs {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(self.dir.path())
                .status();
        }
    }

    fn write(db: &Database, key: u64, value: &[u8]) -> Result<(), redb::Error> {
        let txn = write_txn(db)?;
        txn.open_table(T)?.insert(key, value)?;
        txn.commit()?;
        Ok(())
    }

    #[test]
    fn a_state_file_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        drop(open(&path, 1 << 20).unwrap());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn garbage_is_corruption_never_a_panic_nor_data() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.redb");
        {
            let db = open(&path, 1 << 20).unwrap();
            // Enough commits for a tree of several levels and freed pages.
            for c in 0..100u64 {
                let txn = write_txn(&db).unwrap();
                {
                    let mut t = txn.open_table(T).unwrap();
                    for i in 0..50 {
                        t.insert(c * 50 + i, [b'v'; 100].as_slice()).unwrap();
                    }
                }
                txn.commit().unwrap();
            }
        }
        let good = std::fs::read(&path).unwrap();
        let mut corrupt = 0;
        for offset in (0..good.len()).step_by(1024) {
            let mut bad = good.clone();
            let end = (offset + 64).min(bad.len());
            bad[offset..end].fill(0xA5);
            std::fs::write(&path, &bad).unwrap();
            match open(&path, 1 << 20) {
                Ok(db) => {
                    // Only pages the last commit does not reach: every value reads back whole.
                    let txn = db.begin_read().unwrap();
                    let t = txn.open_table(T).unwrap();
                    for i in 0..5000u64 {
                        assert_eq!(t.get(i).unwrap().unwrap().value(), [b'v'; 100], "{offset}");
                    }
                }
                Err(DbFileError::Corrupt { .. }) => corrupt += 1,
                Err(e) => panic!("offset {offset}: {e}"),
            }
        }
        assert!(corrupt > 0, "some garbage landed on live pages");
    }

    #[test]
    fn a_reopen_waits_for_users_and_replace_keeps_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.redb");
        let shared = SharedDb::open(&path, 1 << 20).unwrap();
        write(&shared.get().unwrap(), 1, b"one").unwrap();
        let user = shared.get().unwrap();
        assert!(matches!(shared.reopen(), Err(DbFileError::Busy { .. })));
        assert!(shared.get().is_none(), "closed until reopened");
        drop(user);
        shared.reopen().unwrap();
        let db = shared.get().unwrap();
        let read = |db: &Database| {
            let txn = db.begin_read().unwrap();
            match txn.open_table(T) {
                Ok(t) => t.get(1).unwrap().map(|v| v.value().to_vec()),
                Err(redb::TableError::TableDoesNotExist(_)) => None,
                Err(e) => panic!("{e}"),
            }
        };
        assert_eq!(read(&db).as_deref(), Some(&b"one"[..]));
        drop(db);
        let kept = shared.replace(1234).unwrap();
        assert_eq!(kept, dir.path().join("f.redb.corrupt-1234"));
        assert_eq!(read(&shared.get().unwrap()), None, "a fresh file");
        assert_eq!(
            read(&open(&kept, 1 << 20).unwrap()).as_deref(),
            Some(&b"one"[..])
        );
        // The same millisecond again takes the next free name.
        assert_eq!(
            shared.replace(1234).unwrap(),
            dir.path().join("f.redb.corrupt-1235")
        );
    }

    #[test]
    fn a_second_holder_is_in_use_not_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.redb");
        let _first = open(&path, 1 << 20).unwrap();
        assert!(matches!(
            open(&path, 1 << 20),
            Err(DbFileError::InUse { .. })
        ));
    }

    #[test]
    fn a_full_disk_is_survived_by_reopening() {
        let Some(fs) = Tmpfs::mount("2m") else { return };
        let shared = SharedDb::open(&fs.path().join("f.redb"), 1 << 20).unwrap();
        write(&shared.get().unwrap(), 0, b"before").unwrap();
        let filler = fs.fill();
        let big = vec![7u8; 256 * 1024];
        let err = (1..20)
            .find_map(|k| write(&shared.get().unwrap(), k, &big).err())
            .expect("the disk is full");
        assert!(is_fault(&err), "{err}");
        // redb refuses everything after the I/O error, also once there is room again.
        std::fs::remove_file(filler).unwrap();
        let again = write(&shared.get().unwrap(), 100, b"x").unwrap_err();
        assert!(is_fault(&again), "{again}");
        shared.reopen().unwrap();
        write(&shared.get().unwrap(), 100, b"after").unwrap();
        let db = shared.get().unwrap();
        let txn = db.begin_read().unwrap();
        let t = txn.open_table(T).unwrap();
        assert_eq!(t.get(0).unwrap().unwrap().value(), b"before");
        assert_eq!(t.get(100).unwrap().unwrap().value(), b"after");
    }
}
