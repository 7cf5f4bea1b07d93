//! Durable state for restarts: what a new agent needs to adopt the games of one that died or
//! was upgraded (processes, sessions, players, id counters; see
//! [`crate::fleet::Fleet::snapshot`]). It lives in the same redb file as the outbox,
//! `data-dir/outbox.redb`, in a table of its own: key → JSON record.
//!
//! Writes never wait on the fleet's hot path. The fleet actor offers a snapshot only when the
//! writer is idle; one writer thread commits it (only the records that changed) in one
//! transaction and says when it is done, so every change made meanwhile goes into the next
//! commit together: one flush per batch, whatever the SDK's call rate.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::mpsc;

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
/// redb's page cache for the one file (its default would let the agent's memory grow with
/// the outbox's backlog): the state is small, the outbox reads in order.
const CACHE_BYTES: usize = 8 << 20;

/// Why the state store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be opened or created.
    #[error("cannot open the state store {path}: {message}")]
    Open {
        /// The file.
        path: PathBuf,
        /// What redb said.
        message: String,
    },
    /// Reading the stored state failed.
    #[error("cannot read the stored state: {0}")]
    Read(String),
    /// A commit failed.
    #[error("cannot write the state: {0}")]
    Write(String),
}

/// The agent's database; the outbox shares it.
#[derive(Clone)]
pub struct StateStore {
    db: Arc<Database>,
}

impl StateStore {
    /// Opens (or creates) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(path)
            .map_err(|e| StoreError::Open {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
        Ok(Self { db: Arc::new(db) })
    }

    /// The database, for the outbox's tables.
    pub fn database(&self) -> Arc<Database> {
        self.db.clone()
    }

    /// Every stored record (empty on a first start).
    pub fn load(&self) -> Result<Records, StoreError> {
        let read = |e: &dyn std::fmt::Display| StoreError::Read(e.to_string());
        let txn = self.db.begin_read().map_err(|e| read(&e))?;
        let table = match txn.open_table(STATE) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Records::new()),
            Err(e) => return Err(read(&e)),
        };
        let mut out = Records::new();
        for item in table.iter().map_err(|e| read(&e))? {
            let (k, v) = item.map_err(|e| read(&e))?;
            out.insert(k.value().to_string(), v.value().to_vec());
        }
        Ok(out)
    }

    /// Writes the records that differ from `last` and removes those gone; on success `last`
    /// becomes `next`.
    fn commit(&self, last: &mut Records, next: Records) -> Result<(), StoreError> {
        let write = |e: &dyn std::fmt::Display| StoreError::Write(e.to_string());
        let txn = self.db.begin_write().map_err(|e| write(&e))?;
        {
            let mut table = txn.open_table(STATE).map_err(|e| write(&e))?;
            for (k, v) in &next {
                if last.get(k) != Some(v) {
                    table
                        .insert(k.as_str(), v.as_slice())
                        .map_err(|e| write(&e))?;
                }
            }
            for k in last.keys().filter(|k| !next.contains_key(*k)) {
                table.remove(k.as_str()).map_err(|e| write(&e))?;
            }
        }
        txn.commit().map_err(|e| write(&e))?;
        *last = next;
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
