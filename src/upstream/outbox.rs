//! The durable outbox: every lifecycle event is written to a redb database in `data-dir` before
//! it is relayed. One writer thread commits in groups (everything queued at the time goes into
//! one transaction), so durability costs one flush per batch, not per event. Acknowledged events
//! are pruned. The sequence is per instance and survives restarts.
//!
//! The database may be shared: [`Outbox::open_in`] takes one somebody else opened (the agent
//! keeps other state in the same file), and the outbox only touches its own tables: `events`,
//! `meta`, and the command ledger's `command_*` tables ([`super::ledger`]).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use prost::Message;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::{mpsc, watch};

use crate::event::{Event, EventBus, EventCode};
use crate::upstream_proto as up;

const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const ACKED: &str = "acked";
const EPOCH: &str = "epoch";

/// Why the outbox failed.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    /// The database could not be opened or created.
    #[error("cannot open the outbox {path}: {message}")]
    Open {
        /// The file.
        path: PathBuf,
        /// What redb said.
        message: String,
    },
    /// The outbox's tables could not be created or read at start.
    #[error("cannot prepare the outbox's tables: {message}")]
    Prepare {
        /// What redb said.
        message: String,
    },
    /// A read or write failed.
    #[error("outbox {step} failed: {message}")]
    Io {
        /// What was being done.
        step: &'static str,
        /// What redb said.
        message: String,
    },
}

fn io(step: &'static str) -> impl Fn(&dyn std::fmt::Display) -> OutboxError {
    move |e| OutboxError::Io {
        step,
        message: e.to_string(),
    }
}

struct State {
    epoch: u64,
    next_seq: u64,
    acked: u64,
    bytes: u64,
    max_bytes: u64,
    alarm_raised: bool,
}

/// The outbox; cheap to clone.
#[derive(Clone)]
pub struct Outbox {
    db: Arc<Database>,
    state: Arc<Mutex<State>>,
    committed: watch::Sender<u64>,
}

/// Unix milliseconds of `t` (0 before 1970).
pub fn unix_ms(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The wire form of an event with its sequence.
pub fn to_wire(e: &Event, sequence: u64) -> up::Event {
    let ms = unix_ms(e.event_time) as i64;
    up::Event {
        sequence,
        time_unix_ms: ms,
        code: e.event_code.as_str().to_string(),
        message: e.message.clone(),
        process_id: e.process_id.clone().unwrap_or_default(),
        pid: e.pid.unwrap_or(0),
        game_server_session_id: e.game_server_session_id.clone().unwrap_or_default(),
        player_session_id: e.player_session_id.clone().unwrap_or_default(),
        exit: e.exit.as_ref().map(|x| up::ExitDetails {
            has_exit_code: x.exit_code.is_some(),
            exit_code: x.exit_code.unwrap_or(0),
            signal: x.signal.clone().unwrap_or_default(),
            core_dumped: x.core_dumped,
            likely_oom_kill: x.likely_oom_kill,
            run_millis: x.run_millis,
            ready_millis: x.ready_millis.unwrap_or(0),
            output_tail: x.output_tail.clone(),
        }),
    }
}

impl Outbox {
    /// Opens (or creates) `path` (through the agent's [`crate::store::StateStore`], which
    /// owns the file); `max_bytes` bounds the unacknowledged events on disk.
    pub fn open(path: &Path, max_bytes: u64) -> Result<Self, OutboxError> {
        let store = crate::store::StateStore::open(path).map_err(|e| OutboxError::Open {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        Self::open_in(store.database(), max_bytes)
    }

    /// The outbox in a database somebody else opened (and may keep using for tables of its
    /// own): creates the outbox's tables (`events`, `meta`) if needed. `max_bytes` bounds the
    /// unacknowledged events on disk.
    pub fn open_in(db: Arc<Database>, max_bytes: u64) -> Result<Self, OutboxError> {
        let open = |e: &dyn std::fmt::Display| OutboxError::Prepare {
            message: e.to_string(),
        };
        let txn = db.begin_write().map_err(|e| open(&e))?;
        let (next_seq, acked, bytes, epoch) = {
            let events = txn.open_table(EVENTS).map_err(|e| open(&e))?;
            let mut meta = txn.open_table(META).map_err(|e| open(&e))?;
            let acked = meta
                .get(ACKED)
                .map_err(|e| open(&e))?
                .map(|v| v.value())
                .unwrap_or(0);
            let stored = meta.get(EPOCH).map_err(|e| open(&e))?.map(|v| v.value());
            let epoch = match stored {
                Some(v) => v,
                None => {
                    let fresh = (uuid::Uuid::new_v4().as_u128() as u64).max(1);
                    meta.insert(EPOCH, fresh).map_err(|e| open(&e))?;
                    fresh
                }
            };
            let last = events
                .last()
                .map_err(|e| open(&e))?
                .map(|(k, _)| k.value())
                .unwrap_or(acked);
            let mut bytes = 0u64;
            for item in events.iter().map_err(|e| open(&e))? {
                let (_, v) = item.map_err(|e| open(&e))?;
                bytes += v.value().len() as u64;
            }
            (last.max(acked) + 1, acked, bytes, epoch)
        };
        txn.commit().map_err(|e| open(&e))?;
        let (committed, _) = watch::channel(next_seq - 1);
        Ok(Self {
            db,
            state: Arc::new(Mutex::new(State {
                epoch,
                next_seq,
                acked,
                bytes,
                max_bytes,
                alarm_raised: false,
            })),
            committed,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The highest sequence the control plane acknowledged.
    pub fn acked(&self) -> u64 {
        self.lock().acked
    }

    /// Events written and not yet acknowledged.
    pub fn unacked(&self) -> u64 {
        let s = self.lock();
        (s.next_seq - 1).saturating_sub(s.acked)
    }

    /// Watches the highest committed sequence.
    pub fn committed(&self) -> watch::Receiver<u64> {
        self.committed.subscribe()
    }

    /// Writes a batch in one transaction; returns the last sequence.
    /// There is one writer (the writer thread); the state lock is not held across the commit,
    /// so readers of the counters never wait for a disk flush.
    pub fn append(&self, batch: &[Event]) -> Result<u64, OutboxError> {
        let first = self.lock().next_seq;
        let txn = self.db.begin_write().map_err(|e| io("write")(&e))?;
        let mut seq = first;
        let mut added = 0u64;
        {
            let mut table = txn.open_table(EVENTS).map_err(|e| io("write")(&e))?;
            for e in batch {
                let bytes = to_wire(e, seq).encode_to_vec();
                added += bytes.len() as u64;
                table
                    .insert(seq, bytes.as_slice())
                    .map_err(|e| io("write")(&e))?;
                seq += 1;
            }
        }
        txn.commit().map_err(|e| io("commit")(&e))?;
        {
            let mut state = self.lock();
            state.next_seq = seq;
            state.bytes += added;
        }
        let last = seq - 1;
        self.committed.send_replace(last);
        Ok(last)
    }

    /// Up to `limit` events after `after`, in order.
    pub fn read_after(&self, after: u64, limit: usize) -> Result<Vec<up::Event>, OutboxError> {
        let txn = self.db.begin_read().map_err(|e| io("read")(&e))?;
        let table = txn.open_table(EVENTS).map_err(|e| io("read")(&e))?;
        let mut out = Vec::new();
        for item in table.range((after + 1)..).map_err(|e| io("read")(&e))? {
            let (_, v) = item.map_err(|e| io("read")(&e))?;
            out.push(up::Event::decode(v.value()).map_err(|e| io("decode")(&e))?);
            if out.len() == limit {
                break;
            }
        }
        Ok(out)
    }

    /// Records a cumulative acknowledgement and prunes what it covers.
    pub fn ack(&self, sequence: u64) -> Result<(), OutboxError> {
        let sequence = {
            let state = self.lock();
            let sequence = sequence.min(state.next_seq - 1);
            if sequence <= state.acked {
                return Ok(());
            }
            sequence
        };
        let txn = self.db.begin_write().map_err(|e| io("prune")(&e))?;
        let mut freed = 0u64;
        {
            let mut table = txn.open_table(EVENTS).map_err(|e| io("prune")(&e))?;
            table
                .retain_in(..=sequence, |_, v| {
                    freed += v.len() as u64;
                    false
                })
                .map_err(|e| io("prune")(&e))?;
            let mut meta = txn.open_table(META).map_err(|e| io("prune")(&e))?;
            meta.insert(ACKED, sequence).map_err(|e| io("prune")(&e))?;
        }
        txn.commit().map_err(|e| io("prune")(&e))?;
        let mut state = self.lock();
        state.acked = state.acked.max(sequence);
        state.bytes = state.bytes.saturating_sub(freed);
        Ok(())
    }

    /// This outbox's random epoch: a new file starts a new sequence space, so a receiver that
    /// deduplicates by (instance, epoch, sequence) never mistakes it for old events.
    pub fn epoch(&self) -> u64 {
        self.lock().epoch
    }

    /// Appends a batch, retrying every second while the disk refuses (full, I/O error): the
    /// events are not dropped. Once the agent is stopping (the queue closed) it gives up after
    /// a few attempts, so a broken disk cannot hang the exit.
    fn append_retrying(&self, batch: &[Event], rx: &mpsc::UnboundedReceiver<Event>) {
        let mut attempts = 0u32;
        loop {
            match self.append(batch) {
                Ok(_) => return,
                Err(e) => {
                    attempts += 1;
                    if rx.is_closed() && attempts >= 3 {
                        tracing::error!(error = %e, lost = batch.len(), "cannot write events to the outbox; giving up at exit");
                        return;
                    }
                    if attempts == 1 || attempts.is_multiple_of(60) {
                        tracing::error!(error = %e, events = batch.len(), "cannot write events to the outbox; retrying every second");
                    }
                    std::thread::sleep(std::time::Duration::from_secs(1));
                }
            }
        }
    }

    /// Whether the unacknowledged events pass the bound (raises the alarm once per episode).
    fn check_full(&self) -> Option<u64> {
        let mut s = self.lock();
        if s.bytes > s.max_bytes && !s.alarm_raised {
            s.alarm_raised = true;
            return Some(s.bytes);
        }
        if s.bytes <= s.max_bytes / 2 {
            s.alarm_raised = false;
        }
        None
    }

    /// The writer: a dedicated thread that takes events from `rx` and commits them in groups;
    /// it ends when every sender is gone. `bus` must be the bus without its sink.
    /// When the outbox passes its bound it raises one UPSTREAM_OUTBOX_FULL event and keeps every
    /// lifecycle event (status reports are never stored: only the latest is sent).
    pub fn spawn_writer(
        self,
        mut rx: mpsc::UnboundedReceiver<Event>,
        bus: EventBus,
    ) -> std::thread::JoinHandle<()> {
        std::thread::Builder::new()
            .name("outbox-writer".into())
            .spawn(move || {
                let mut batch = Vec::with_capacity(1024);
                while let Some(first) = rx.blocking_recv() {
                    batch.push(first);
                    while batch.len() < 4096 {
                        match rx.try_recv() {
                            Ok(e) => batch.push(e),
                            Err(_) => break,
                        }
                    }
                    self.append_retrying(&batch, &rx);
                    batch.clear();
                    if let Some(bytes) = self.check_full() {
                        let alarm = Event::new(
                            EventCode::UpstreamOutboxFull,
                            format!(
                                "{bytes} bytes of events wait for the control plane; lifecycle events are kept, status reports coalesced"
                            ),
                        );
                        // Stored directly: `bus` has no sink, or this thread would feed itself.
                        if let Err(e) = self.append(std::slice::from_ref(&alarm)) {
                            tracing::error!(error = %e, "cannot write the outbox alarm");
                        }
                        bus.emit(alarm);
                    }
                }
            })
            .expect("a thread can be spawned at start-up")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(n: u64) -> Event {
        Event::new(EventCode::ServerProcessStarted, format!("event {n}"))
    }

    #[test]
    fn sequences_persist_and_acks_prune() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.redb");
        {
            let o = Outbox::open(&path, 1 << 20).unwrap();
            assert_eq!(o.append(&[ev(1), ev(2), ev(3)]).unwrap(), 3);
            o.ack(2).unwrap();
            assert_eq!(o.unacked(), 1);
        }
        let o = Outbox::open(&path, 1 << 20).unwrap();
        assert_eq!(o.acked(), 2);
        let rest = o.read_after(o.acked(), 10).unwrap();
        assert_eq!(rest.iter().map(|e| e.sequence).collect::<Vec<_>>(), [3]);
        assert_eq!(rest[0].message, "event 3");
        assert_eq!(
            o.append(&[ev(4)]).unwrap(),
            4,
            "the sequence continues after a restart"
        );
        o.ack(4).unwrap();
        assert!(o.read_after(0, 10).unwrap().is_empty());
        // A restart after everything was pruned still continues the sequence.
        drop(o);
        let o = Outbox::open(&path, 1 << 20).unwrap();
        assert_eq!(o.append(&[ev(5)]).unwrap(), 5);
    }

    #[test]
    fn the_outbox_shares_its_database_with_other_tables() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shared.redb");
        let other: TableDefinition<&str, &str> = TableDefinition::new("someone_else");
        let db = crate::store::StateStore::open(&path).unwrap().database();
        let txn = db.begin_write().unwrap();
        txn.open_table(other).unwrap().insert("k", "v").unwrap();
        txn.commit().unwrap();
        let o = Outbox::open_in(db.clone(), 1 << 20).unwrap();
        assert_eq!(o.append(&[ev(1)]).unwrap(), 1);
        let txn = db.begin_read().unwrap();
        assert_eq!(
            txn.open_table(other)
                .unwrap()
                .get("k")
                .unwrap()
                .unwrap()
                .value(),
            "v"
        );
        drop(txn);
        drop((o, db));
        // The wrapper opens the same file and finds both.
        let o = Outbox::open(&path, 1 << 20).unwrap();
        assert_eq!(o.read_after(0, 10).unwrap().len(), 1);
    }

    #[test]
    fn the_bound_raises_one_alarm_and_keeps_events() {
        let dir = tempfile::tempdir().unwrap();
        let o = Outbox::open(&dir.path().join("o.redb"), 200).unwrap();
        for i in 0..10 {
            o.append(&[ev(i)]).unwrap();
        }
        assert!(o.check_full().is_some());
        assert!(o.check_full().is_none(), "one alarm per episode");
        assert_eq!(o.read_after(0, 100).unwrap().len(), 10, "nothing dropped");
        o.ack(10).unwrap();
        assert!(o.check_full().is_none());
    }
}
