//! Durable state for restarts: what a new agent needs to adopt the games of one that died or
//! was upgraded (processes, sessions, players, id counters; see
//! [`crate::agent::fleet::Fleet::snapshot`]). It lives in `data-dir/state.redb`, a file of its own
//! (the outbox has another: see [`crate::agent::dbfile`] for why), in one table: key → JSON record.
//!
//! Writes never wait on the fleet's hot path. The fleet actor offers a snapshot only when the
//! writer is idle; one writer thread commits it (only the records that changed) in one
//! transaction and says when it is done, so every change made meanwhile goes into the next
//! commit together: one flush per batch, whatever the SDK's call rate.
//!
//! **Faults.** A commit that fails (a full disk, EIO) closes the file. The actor offers the
//! snapshot again a second later; that attempt first opens the file again and reads what it
//! really holds, so the commit writes everything the file lacks: nothing is lost while the
//! agent runs, however long the disk refuses.
//!
//! **Corruption.** A `state.redb` that does not verify ([`crate::agent::dbfile::open`]) is renamed
//! aside to `state.redb.corrupt-<unix-ms>` and a fresh one is used. At start that means no
//! saved state: the games still running from the last agent cannot be adopted (nothing says
//! which slot, session and players they held) and are stopped as strays. While the agent runs
//! it costs nothing: the next commit writes every record afresh.
//!
//! **Migration.** Agents before the split kept this table in `outbox.redb`.
//! [`StateStore::migrate_from`] moves it here on the first start of a newer agent (an upgrade
//! in place adopts the games the older one left running).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::mpsc;

use crate::agent::dbfile::{self, DbFileError, SharedDb};

/// Key → JSON record.
pub type Records = BTreeMap<String, Vec<u8>>;

const STATE: TableDefinition<&str, &[u8]> = TableDefinition::new("state");

/// The stored key of the SDK address the running games were given.
pub const SDK_ADDRESS_KEY: &str = "agent/sdk-address";
/// The stored key of the next event sequence a restarted agent may use.
pub const EVENT_SEQUENCE_KEY: &str = "agent/event-sequence";

/// The value of one of the agent's own plain-text records (`None` if absent or unreadable).
pub fn read_value<T: std::str::FromStr>(records: &Records, key: &str) -> Option<T> {
    std::str::from_utf8(records.get(key)?).ok()?.parse().ok()
}

/// One of the agent's own plain-text records.
pub fn value_record(value: impl std::fmt::Display) -> Vec<u8> {
    value.to_string().into_bytes()
}

/// redb's page cache for the file (its default is 1 GiB): the state is small.
const CACHE_BYTES: usize = 4 << 20;

/// Why the state store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The file could not be opened or created (corruption is not this: it is moved aside).
    #[error("cannot open the state store: {0}")]
    Open(#[source] DbFileError),
    /// Reading the stored state failed.
    #[error("cannot read the stored state: {0}")]
    Read(String),
    /// A commit failed.
    #[error("cannot write the state: {0}")]
    Write(String),
}

/// What opening and reading the file found.
enum Opened {
    /// Sound; what it holds.
    Read(Records),
    /// Unsound, and why.
    Corrupt(String),
}

/// The agent's state file. Cheap to clone.
#[derive(Clone)]
pub struct StateStore {
    file: Arc<SharedDb>,
}

/// Every record in `db`; `None` if the table does not exist.
fn read_table(db: &Database) -> Result<Option<Records>, redb::Error> {
    let txn = db.begin_read()?;
    let table = match txn.open_table(STATE) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let mut out = Records::new();
    for item in table.iter()? {
        let (k, v) = item?;
        out.insert(k.value().to_string(), v.value().to_vec());
    }
    Ok(Some(out))
}

/// Every record in `db` (none if the table was never written).
fn read_all(db: &Database) -> Result<Records, redb::Error> {
    Ok(read_table(db)?.unwrap_or_default())
}

impl StateStore {
    /// Opens (or creates) the state file at `path`. A corrupt one is moved aside and replaced
    /// by an empty one (logged as an error); only a file that cannot be opened at all (another
    /// agent holds it, the disk fails) is an error.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let store = Self {
            file: SharedDb::closed(path, CACHE_BYTES),
        };
        if let Opened::Corrupt(reason) = store.open_and_read()? {
            let kept = store.replace()?;
            tracing::error!(
                store.path = %path.display(),
                store.kept = %kept.display(),
                reason = %reason,
                "the saved state is corrupt and was moved aside: this agent starts without it; \
                 games still running from the last agent cannot be adopted and are stopped"
            );
        }
        Ok(store)
    }

    /// Opens the file again and reads all of it, under `catch_unwind`.
    fn open_and_read(&self) -> Result<Opened, StoreError> {
        match self.file.reopen() {
            Ok(()) => {}
            Err(DbFileError::Corrupt { reason, .. }) => return Ok(Opened::Corrupt(reason)),
            Err(e) => return Err(StoreError::Open(e)),
        }
        let db = self.file.get().ok_or_else(|| {
            StoreError::Read("the state file was closed while it was read".into())
        })?;
        match dbfile::guarded(|| read_all(&db)) {
            Ok(Ok(records)) => Ok(Opened::Read(records)),
            Ok(Err(e)) if dbfile::is_corruption(&e) => Ok(Opened::Corrupt(e.to_string())),
            Ok(Err(e)) => Err(StoreError::Read(e.to_string())),
            Err(panic) => Ok(Opened::Corrupt(panic)),
        }
    }

    /// Moves the corrupt file aside and opens a fresh one; returns where the old one went.
    fn replace(&self) -> Result<PathBuf, StoreError> {
        self.file
            .replace(crate::api::time::now_ms())
            .map_err(StoreError::Open)
    }

    /// Every stored record (empty on a first start).
    pub fn load(&self) -> Result<Records, StoreError> {
        let db = self
            .file
            .get()
            .ok_or_else(|| StoreError::Read("the state file is closed after a fault".into()))?;
        match dbfile::guarded(|| read_all(&db)) {
            Ok(r) => r.map_err(|e| StoreError::Read(e.to_string())),
            Err(panic) => Err(StoreError::Read(panic)),
        }
    }

    /// Moves the state an older agent kept in its `outbox.redb` (`old`) into this store when
    /// this store has none, then drops the old table; a state this store already has wins (a
    /// copy made before a crash that left the old table behind). A missing, unreadable or
    /// corrupt `old` is left alone (the outbox deals with it); only failing to write this
    /// store is an error.
    pub fn migrate_from(&self, old: &Path) -> Result<(), StoreError> {
        if !old.exists() {
            return Ok(());
        }
        let db = match dbfile::open(old, CACHE_BYTES) {
            Ok(db) => db,
            Err(e) => {
                tracing::warn!(store.old = %old.display(), error = %e, "cannot look for state an older agent kept in the outbox file");
                return Ok(());
            }
        };
        let found = match dbfile::guarded(|| read_table(&db)) {
            Ok(Ok(Some(records))) => records,
            Ok(Ok(None)) => return Ok(()),
            Ok(Err(e)) => {
                tracing::warn!(store.old = %old.display(), error = %e, "cannot read the state an older agent kept in the outbox file");
                return Ok(());
            }
            Err(panic) => {
                tracing::warn!(store.old = %old.display(), error = %panic, "cannot read the state an older agent kept in the outbox file");
                return Ok(());
            }
        };
        if self.load()?.is_empty() && !found.is_empty() {
            self.commit(&mut Records::new(), found.clone())?;
            tracing::info!(
                store.old = %old.display(),
                store.records = found.len(),
                "moved the state an older agent kept in the outbox file to the state file"
            );
        }
        let dropped = (|| -> Result<(), redb::Error> {
            let txn = dbfile::write_txn(&db)?;
            txn.delete_table(STATE)?;
            txn.commit()?;
            Ok(())
        })();
        if let Err(e) = dropped {
            // Harmless: this store has the state, and the next start tries again.
            tracing::warn!(store.old = %old.display(), error = %e, "cannot drop the old state table from the outbox file");
        }
        Ok(())
    }

    /// Writes the records that differ from `last` and removes those gone; on success `last`
    /// becomes `next`. After a failed commit the file is closed, and this opens it again
    /// first, setting `last` to what the file really holds.
    fn commit(&self, last: &mut Records, next: Records) -> Result<(), StoreError> {
        if self.file.get().is_none() {
            self.recover(last)?;
        }
        let db = self
            .file
            .get()
            .ok_or_else(|| StoreError::Write("the state file is closed".into()))?;
        let written = dbfile::guarded(|| -> Result<(), redb::Error> {
            let txn = dbfile::write_txn(&db)?;
            {
                let mut table = txn.open_table(STATE)?;
                for (k, v) in &next {
                    if last.get(k) != Some(v) {
                        table.insert(k.as_str(), v.as_slice())?;
                    }
                }
                for k in last.keys().filter(|k| !next.contains_key(*k)) {
                    table.remove(k.as_str())?;
                }
            }
            txn.commit()?;
            Ok(())
        });
        let failure = match written {
            Ok(Ok(())) => {
                *last = next;
                return Ok(());
            }
            Ok(Err(e)) => e.to_string(),
            Err(panic) => panic,
        };
        drop(db);
        self.file.close();
        Err(StoreError::Write(failure))
    }

    /// Opens the file again after a failed commit: `last` becomes what it holds (nothing, if
    /// it was corrupt and replaced).
    fn recover(&self, last: &mut Records) -> Result<(), StoreError> {
        match self.open_and_read()? {
            Opened::Read(records) => {
                tracing::info!(store.path = %self.file.path().display(), "the state file is open again after a fault");
                *last = records;
            }
            Opened::Corrupt(reason) => {
                let kept = self.replace()?;
                tracing::error!(
                    store.path = %self.file.path().display(),
                    store.kept = %kept.display(),
                    reason = %reason,
                    "the state file is corrupt and was moved aside; every record is written afresh"
                );
                last.clear();
            }
        }
        Ok(())
    }

    /// Starts the writer thread; `stored` is what [`StateStore::load`] returned.
    pub fn spawn_writer(&self, stored: Records) -> StateWriter {
        let (tx, rx) = std::sync::mpsc::channel::<Records>();
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let store = self.clone();
        let thread = std::thread::Builder::new()
            .name("gse-state".into())
            .spawn(move || {
                let mut last = stored;
                while let Ok(mut next) = rx.recv() {
                    while let Ok(newer) = rx.try_recv() {
                        next = newer;
                    }
                    let result = store.commit(&mut last, next);
                    if let Err(e) = &result {
                        tracing::warn!(error = %e, "state not saved; retrying");
                    }
                    if done_tx.send(result.is_ok()).is_err() {
                        // The actor is gone; what it sent last is written; nothing follows.
                    }
                }
            })
            .expect("spawning a thread succeeds unless the process is out of resources");
        StateWriter {
            tx: Some(tx),
            done: done_rx,
            busy: false,
            thread: Some(thread),
        }
    }
}

/// The fleet actor's end of the writer thread.
pub struct StateWriter {
    tx: Option<std::sync::mpsc::Sender<Records>>,
    done: mpsc::UnboundedReceiver<bool>,
    busy: bool,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl StateWriter {
    /// A commit is under way.
    pub fn busy(&self) -> bool {
        self.busy
    }

    /// Hands `records` to the writer thread; false if it is gone (it panicked): nothing is
    /// saved any more.
    pub fn send(&mut self, records: Records) -> bool {
        if let Some(tx) = &self.tx
            && tx.send(records).is_ok()
        {
            self.busy = true;
            return true;
        }
        false
    }

    /// The outcome of the commit under way (true: written).
    pub async fn committed(&mut self) -> Option<bool> {
        let r = self.done.recv().await;
        self.busy = false;
        r
    }

    /// Sends the last records and waits (blocking) until they are written; nothing is sent
    /// after this.
    pub fn finish(&mut self, records: Records) {
        self.send(records);
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::dbfile::tests::Tmpfs;

    fn records(pairs: &[(&str, &str)]) -> Records {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect()
    }

    /// An `outbox.redb` as agents before the split left it: the state table beside the
    /// outbox's own.
    fn old_layout(path: &Path, state: &Records) {
        let events: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
        let db = Database::create(path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut t = txn.open_table(STATE).unwrap();
            for (k, v) in state {
                t.insert(k.as_str(), v.as_slice()).unwrap();
            }
            txn.open_table(events)
                .unwrap()
                .insert(1, b"an event".as_slice())
                .unwrap();
        }
        txn.commit().unwrap();
    }

    fn has_state_table(path: &Path) -> bool {
        read_table(&dbfile::open(path, CACHE_BYTES).unwrap())
            .unwrap()
            .is_some()
    }

    #[test]
    fn an_upgrade_moves_the_state_out_of_the_outbox_file() {
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join("outbox.redb");
        let saved = records(&[("proc/1", "{\"pid\":7}"), (SDK_ADDRESS_KEY, "127.0.0.1:5")]);
        old_layout(&old, &saved);
        let store = StateStore::open(&dir.path().join("state.redb")).unwrap();
        store.migrate_from(&old).unwrap();
        assert_eq!(store.load().unwrap(), saved);
        assert!(!has_state_table(&old), "the old table is dropped");
        // The outbox's own tables stay.
        let db = dbfile::open(&old, CACHE_BYTES).unwrap();
        let events: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
        let txn = db.begin_read().unwrap();
        assert!(txn.open_table(events).unwrap().get(1).unwrap().is_some());
        drop((txn, db));
        // Once moved, a second start finds nothing to move.
        store.migrate_from(&old).unwrap();
        assert_eq!(store.load().unwrap(), saved);
        // No outbox file at all: nothing to do.
        store.migrate_from(&dir.path().join("none.redb")).unwrap();
    }

    #[test]
    fn a_state_already_moved_wins_over_an_old_table_left_behind() {
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join("outbox.redb");
        old_layout(&old, &records(&[("proc/1", "stale")]));
        let store = StateStore::open(&dir.path().join("state.redb")).unwrap();
        let current = records(&[("proc/2", "current")]);
        store.commit(&mut Records::new(), current.clone()).unwrap();
        store.migrate_from(&old).unwrap();
        assert_eq!(store.load().unwrap(), current);
        assert!(!has_state_table(&old));
    }

    #[test]
    fn a_corrupt_state_file_is_moved_aside_and_the_agent_goes_on_without_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        {
            let store = StateStore::open(&path).unwrap();
            let mut last = Records::new();
            for i in 0..200 {
                let mut next = last.clone();
                next.insert(format!("proc/{i}"), vec![b'x'; 300]);
                store.commit(&mut last, next).unwrap();
            }
        }
        let mut bytes = std::fs::read(&path).unwrap();
        let len = bytes.len();
        for page in (4096..len).step_by(4096) {
            bytes[page..page + 64].fill(0xA5);
        }
        std::fs::write(&path, &bytes).unwrap();
        let store = StateStore::open(&path).unwrap();
        assert!(store.load().unwrap().is_empty());
        let kept: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.starts_with("state.redb.corrupt-"))
            .collect();
        assert_eq!(kept.len(), 1, "{kept:?}");
        // The fresh file takes writes.
        let mut last = Records::new();
        store.commit(&mut last, records(&[("a", "b")])).unwrap();
        assert_eq!(store.load().unwrap(), records(&[("a", "b")]));
    }

    #[test]
    fn a_full_disk_loses_no_state() {
        let Some(fs) = Tmpfs::mount("2m") else { return };
        let store = StateStore::open(&fs.path().join("state.redb")).unwrap();
        let mut last = Records::new();
        store.commit(&mut last, records(&[("a", "1")])).unwrap();
        let filler = fs.fill();
        let mut want = last.clone();
        let mut failed = false;
        for i in 0..100 {
            want.insert(format!("big/{i}"), vec![b'y'; 64 * 1024]);
            if store.commit(&mut last, want.clone()).is_err() {
                failed = true;
                break;
            }
        }
        assert!(failed, "the disk filled up");
        // Refused while there is no room; the file stays closed meanwhile.
        assert!(store.commit(&mut last, want.clone()).is_err());
        std::fs::remove_file(filler).unwrap();
        store.commit(&mut last, want.clone()).unwrap();
        assert_eq!(store.load().unwrap(), want);
        assert_eq!(last, want);
    }
}
