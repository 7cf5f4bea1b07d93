//! The durable outbox: every lifecycle event is written to `data-dir/outbox.redb` before it
//! is relayed. One writer thread commits in groups (everything queued at the time goes into
//! one transaction), so durability costs one flush per batch, not per event. Acknowledged
//! events are pruned. The sequence is per outbox epoch and survives restarts.
//!
//! The file also holds the command ledger's `command_*` tables ([`super::ledger`]), which
//! takes its database from the outbox's [`SharedDb`]. The agent's restart state has a file of
//! its own ([`crate::agent::store`]).
//!
//! **Disk faults.** A commit that fails (a full disk, EIO) closes the file; the writer opens
//! it again and retries every [`FAULT_RETRY`]. Meanwhile the events wait in memory, up to
//! [`HOLD_MAX_BYTES`]; past that, new events are dropped and counted, and once the disk takes
//! writes again one UPSTREAM_EVENTS_LOST event says how many. Nobody who emits an event ever
//! waits for the disk: the queue from the bus is unbounded and the writer drains it into its
//! bounded hold while the disk refuses. A relay read or a ledger step that meets a fault says
//! so, and the writer reopens the file within a second.
//!
//! **Corruption.** At start, and at every reopen, the file is checked whole
//! ([`crate::agent::dbfile::open`]) and read under `catch_unwind`: every event must decode under its
//! own sequence, the acknowledged sequence must read, and an outbox that holds events or
//! acknowledgements must have its epoch record. A file that fails is renamed aside to
//! `outbox.redb.corrupt-<unix-ms>`, a fresh one with a new epoch takes its place, and one
//! UPSTREAM_OUTBOX_CORRUPT event (the first of the new epoch) names the kept file and what
//! was wrong. The events the old file held that the control plane had not acknowledged stay
//! in the kept file: they are never resent under the new epoch, where the control plane could
//! not tell them from new ones.

use crate::api::time::unix_ms;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prost::Message;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::{mpsc, watch};

use crate::agent::dbfile::{self, DbFileError, SharedDb};

mod hold;
mod writer;

use crate::agent::event::{Event, EventBus, EventCode};
use crate::upstream_proto as up;
use hold::Hold;
#[cfg(test)]
use hold::held_size;

const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const ACKED: &str = "acked";
const EPOCH: &str = "epoch";

/// redb's page cache for the file (its default would let the agent's memory grow with the
/// backlog): the outbox reads in order.
const CACHE_BYTES: usize = 8 << 20;
/// Events held in memory while the disk refuses writes: at most this many bytes (counted as
/// the events' size in memory). A fixed bound, not `outbox-max-bytes` (an alarm threshold for
/// the disk, often far larger than memory should hold).
pub const HOLD_MAX_BYTES: u64 = 32 << 20;
/// How often a refused write is retried (the file opened again first).
pub const FAULT_RETRY: Duration = Duration::from_secs(1);
/// At most this many events per transaction.
const BATCH: usize = 4096;
/// How often an idle writer looks for a fault a reader reported.
const IDLE_WAKE: Duration = Duration::from_secs(1);

/// Why the outbox failed.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    /// The file could not be opened or created (corruption is not this: it is moved aside).
    #[error("cannot open the outbox: {0}")]
    Open(#[source] DbFileError),
    /// The outbox's tables could not be created or read.
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
    /// The file is closed after a disk fault, until the writer opens it again.
    #[error("the outbox file is closed after a disk fault; it is being reopened")]
    Unavailable,
}

struct State {
    epoch: u64,
    next_seq: u64,
    acked: u64,
    bytes: u64,
    max_bytes: u64,
    alarm_raised: bool,
}

/// What a sound file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Counters {
    epoch: u64,
    next_seq: u64,
    acked: u64,
    bytes: u64,
}

/// What opening and reading the file found.
enum Checked {
    Sound(Counters),
    Corrupt(String),
}

/// A corrupt file moved aside.
struct Replaced {
    kept: PathBuf,
    reason: String,
}

/// The outbox; cheap to clone.
#[derive(Clone)]
pub struct Outbox {
    file: Arc<SharedDb>,
    state: Arc<Mutex<State>>,
    committed: watch::Sender<u64>,
    /// Events the writer must store first (the corruption found at open).
    notices: Arc<Mutex<Vec<Event>>>,
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

/// Reads `db` whole: the counters, or why it is corrupt (`Ok(Err(reason))`).
fn scan(db: &Database) -> Result<Result<(Option<u64>, Counters), String>, redb::Error> {
    let txn = db.begin_read()?;
    let (acked, epoch) = match txn.open_table(META) {
        Ok(meta) => (
            meta.get(ACKED)?.map(|v| v.value()),
            meta.get(EPOCH)?.map(|v| v.value()),
        ),
        Err(redb::TableError::TableDoesNotExist(_)) => (None, None),
        Err(e) => return Err(e.into()),
    };
    let acked = acked.unwrap_or(0);
    let (mut count, mut last, mut bytes) = (0u64, acked, 0u64);
    match txn.open_table(EVENTS) {
        Ok(events) => {
            for item in events.iter()? {
                let (k, v) = item?;
                let (seq, v) = (k.value(), v.value());
                match up::Event::decode(v) {
                    Ok(e) if e.sequence == seq && seq > acked => {}
                    Ok(e) if seq <= acked => {
                        return Ok(Err(format!(
                            "event {seq} ({}) is at or below the acknowledged sequence {acked}",
                            e.code
                        )));
                    }
                    Ok(e) => {
                        return Ok(Err(format!(
                            "the event stored as {seq} says it is {}",
                            e.sequence
                        )));
                    }
                    Err(e) => return Ok(Err(format!("event {seq} does not decode: {e}"))),
                }
                count += 1;
                last = last.max(seq);
                bytes += v.len() as u64;
            }
        }
        Err(redb::TableError::TableDoesNotExist(_)) => {}
        Err(e) => return Err(e.into()),
    }
    match epoch {
        Some(0) => return Ok(Err("the epoch record is 0".into())),
        None if count > 0 || acked > 0 => {
            return Ok(Err(format!(
                "the epoch record is missing, yet the outbox holds {count} events and \
                 acknowledgements up to {acked}"
            )));
        }
        _ => {}
    }
    Ok(Ok((
        epoch,
        Counters {
            epoch: epoch.unwrap_or(0),
            next_seq: last + 1,
            acked,
            bytes,
        },
    )))
}

/// Opens the file again and reads it whole (under `catch_unwind`); a new file gets its epoch.
fn check(file: &SharedDb) -> Result<Checked, OutboxError> {
    match file.reopen() {
        Ok(()) => {}
        Err(DbFileError::Corrupt { reason, .. }) => return Ok(Checked::Corrupt(reason)),
        Err(e) => return Err(OutboxError::Open(e)),
    }
    let db = file.get().ok_or(OutboxError::Unavailable)?;
    let prepare = |e: &dyn std::fmt::Display| OutboxError::Prepare {
        message: e.to_string(),
    };
    let (stored, mut counters) = match dbfile::guarded(|| scan(&db)) {
        Ok(Ok(Ok(found))) => found,
        Ok(Ok(Err(reason))) => return Ok(Checked::Corrupt(reason)),
        Ok(Err(e)) if dbfile::is_corruption(&e) => return Ok(Checked::Corrupt(e.to_string())),
        Ok(Err(e)) => return Err(prepare(&e)),
        Err(panic) => return Ok(Checked::Corrupt(panic)),
    };
    if stored.is_none() {
        // A new outbox: a random epoch starts its sequence space, and the tables exist from
        // now on.
        let fresh = (uuid::Uuid::new_v4().as_u128() as u64).max(1);
        (|| -> Result<(), redb::Error> {
            let txn = dbfile::write_txn(&db)?;
            txn.open_table(EVENTS)?;
            txn.open_table(META)?.insert(EPOCH, fresh)?;
            txn.commit()?;
            Ok(())
        })()
        .map_err(|e| prepare(&e))?;
        counters.epoch = fresh;
    }
    Ok(Checked::Sound(counters))
}

/// Opens `file` sound: a corrupt one is moved aside and replaced by a new one.
fn open_sound(file: &SharedDb) -> Result<(Counters, Option<Replaced>), OutboxError> {
    let reason = match check(file)? {
        Checked::Sound(c) => return Ok((c, None)),
        Checked::Corrupt(reason) => reason,
    };
    let kept = file
        .replace(unix_ms(std::time::SystemTime::now()))
        .map_err(OutboxError::Open)?;
    tracing::error!(
        outbox.path = %file.path().display(),
        outbox.kept = %kept.display(),
        reason = %reason,
        "the outbox is corrupt: it was moved aside and a new one starts"
    );
    match check(file)? {
        Checked::Sound(c) => Ok((c, Some(Replaced { kept, reason }))),
        Checked::Corrupt(again) => Err(OutboxError::Prepare {
            message: format!("a new outbox does not verify: {again}"),
        }),
    }
}

/// The UPSTREAM_OUTBOX_CORRUPT event for a file moved aside.
fn corrupt_notice(r: &Replaced, epoch: u64) -> Event {
    Event::new(
        EventCode::UpstreamOutboxCorrupt,
        format!(
            "the outbox was corrupt ({}); it is kept as {} and a new one starts (epoch {epoch}): \
             the events it held that were not acknowledged are in the kept file only",
            r.reason,
            r.kept.display()
        ),
    )
}

impl Outbox {
    /// Opens (or creates) the outbox at `path`; `max_bytes` bounds the unacknowledged events
    /// on disk (an alarm, not a limit). A corrupt file is moved aside and replaced (the
    /// writer reports it: see the module doc); only a file that cannot be opened at all is an
    /// error.
    pub fn open(path: &Path, max_bytes: u64) -> Result<Self, OutboxError> {
        let file = SharedDb::closed(path, CACHE_BYTES);
        let (c, replaced) = open_sound(&file)?;
        let (committed, _) = watch::channel(c.next_seq - 1);
        let notices = replaced
            .map(|r| corrupt_notice(&r, c.epoch))
            .into_iter()
            .collect();
        Ok(Self {
            file,
            state: Arc::new(Mutex::new(State {
                epoch: c.epoch,
                next_seq: c.next_seq,
                acked: c.acked,
                bytes: c.bytes,
                max_bytes,
                alarm_raised: false,
            })),
            committed,
            notices: Arc::new(Mutex::new(notices)),
        })
    }

    /// The file, for the command ledger's tables.
    pub fn file(&self) -> Arc<SharedDb> {
        self.file.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The database for one step, or why not; a fault met later is reported through
    /// [`Outbox::failed`].
    fn db(&self) -> Result<Arc<Database>, OutboxError> {
        self.file.get().ok_or(OutboxError::Unavailable)
    }

    /// Maps a redb error of `step`, reporting a fault so that the writer reopens the file.
    fn failed(&self, step: &'static str) -> impl Fn(redb::Error) -> OutboxError + '_ {
        move |e| {
            if dbfile::is_fault(&e) {
                self.file.report_fault();
            }
            OutboxError::Io {
                step,
                message: e.to_string(),
            }
        }
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
        let db = self.db()?;
        let mut added = 0u64;
        let written = dbfile::guarded(|| -> Result<u64, redb::Error> {
            let txn = dbfile::write_txn(&db)?;
            let mut seq = first;
            {
                let mut table = txn.open_table(EVENTS)?;
                for e in batch {
                    let bytes = to_wire(e, seq).encode_to_vec();
                    added += bytes.len() as u64;
                    table.insert(seq, bytes.as_slice())?;
                    seq += 1;
                }
            }
            txn.commit()?;
            Ok(seq)
        });
        let seq = match written {
            Ok(r) => r.map_err(self.failed("commit"))?,
            Err(panic) => {
                self.file.report_fault();
                return Err(OutboxError::Io {
                    step: "commit",
                    message: panic,
                });
            }
        };
        {
            let mut state = self.lock();
            state.next_seq = seq;
            state.bytes += added;
        }
        let last = seq - 1;
        self.committed.send_replace(last);
        Ok(last)
    }

    /// Up to `limit` committed events after `after`, in order.
    pub fn read_after(&self, after: u64, limit: usize) -> Result<Vec<up::Event>, OutboxError> {
        let upto = *self.committed.borrow();
        if after >= upto {
            return Ok(Vec::new());
        }
        let db = self.db()?;
        let read = dbfile::guarded(|| -> Result<Vec<up::Event>, redb::Error> {
            let txn = db.begin_read()?;
            let table = txn.open_table(EVENTS)?;
            let mut out = Vec::new();
            for item in table.range((after + 1)..=upto)? {
                let (_, v) = item?;
                out.push(up::Event::decode(v.value()).map_err(|e| {
                    redb::Error::Corrupted(format!("a stored event does not decode: {e}"))
                })?);
                if out.len() == limit {
                    break;
                }
            }
            Ok(out)
        });
        match read {
            Ok(r) => r.map_err(self.failed("read")),
            Err(panic) => {
                self.file.report_fault();
                Err(OutboxError::Io {
                    step: "read",
                    message: panic,
                })
            }
        }
    }

    /// Records a cumulative acknowledgement of `epoch` and prunes what it covers; one of
    /// another epoch (the outbox was replaced meanwhile) is ignored.
    pub fn ack(&self, epoch: u64, sequence: u64) -> Result<(), OutboxError> {
        let sequence = {
            let state = self.lock();
            let sequence = sequence.min(state.next_seq - 1);
            if state.epoch != epoch || sequence <= state.acked {
                return Ok(());
            }
            sequence
        };
        // Held until the counters are updated: a reopen waits for it, so its counters win.
        let db = self.db()?;
        let mut freed = 0u64;
        let pruned = dbfile::guarded(|| -> Result<(), redb::Error> {
            let txn = dbfile::write_txn(&db)?;
            {
                let mut table = txn.open_table(EVENTS)?;
                table.retain_in(..=sequence, |_, v| {
                    freed += v.len() as u64;
                    false
                })?;
                txn.open_table(META)?.insert(ACKED, sequence)?;
            }
            txn.commit()?;
            Ok(())
        });
        match pruned {
            Ok(r) => r.map_err(self.failed("prune"))?,
            Err(panic) => {
                self.file.report_fault();
                return Err(OutboxError::Io {
                    step: "prune",
                    message: panic,
                });
            }
        }
        let mut state = self.lock();
        if state.epoch == epoch {
            state.acked = state.acked.max(sequence);
            state.bytes = state.bytes.saturating_sub(freed);
        }
        drop(state);
        drop(db);
        Ok(())
    }

    /// This outbox's random epoch: a new file starts a new sequence space, so a receiver that
    /// deduplicates by (instance, epoch, sequence) never mistakes it for old events. It
    /// changes while the agent runs only when a corrupt file is replaced.
    pub fn epoch(&self) -> u64 {
        self.lock().epoch
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

    /// Takes the counters of the file just opened again. A commit reported as failed may have
    /// landed after all: the events it holds beyond what was known are the first ones `hold`
    /// still has, and leave it. A replaced file starts over.
    fn reconcile(&self, c: Counters, replaced: bool, hold: &mut Hold) {
        let mut s = self.lock();
        if !replaced && c.epoch == s.epoch {
            let landed = c.next_seq.saturating_sub(s.next_seq);
            hold.pop_front(usize::try_from(landed).unwrap_or(usize::MAX));
        }
        s.epoch = c.epoch;
        s.next_seq = c.next_seq;
        s.acked = c.acked;
        s.bytes = c.bytes;
        drop(s);
        self.committed.send_replace(c.next_seq - 1);
    }

    /// The writer: a dedicated thread that takes events from `rx` and commits them in groups;
    /// it ends when every sender is gone. `bus` must be the bus without its sink.
    /// When the outbox passes its bound it raises one UPSTREAM_OUTBOX_FULL event and keeps every
    /// lifecycle event (status reports are never stored: only the latest is sent). A disk that
    /// refuses writes is handled as the module doc says.
    pub fn spawn_writer(
        self,
        rx: mpsc::UnboundedReceiver<Event>,
        bus: EventBus,
    ) -> std::thread::JoinHandle<()> {
        self.spawn_writer_holding(rx, bus, HOLD_MAX_BYTES)
    }

    /// [`Outbox::spawn_writer`] holding at most `hold_max_bytes` in memory during a fault.
    fn spawn_writer_holding(
        self,
        rx: mpsc::UnboundedReceiver<Event>,
        bus: EventBus,
        hold_max_bytes: u64,
    ) -> std::thread::JoinHandle<()> {
        writer::spawn(self, rx, bus, hold_max_bytes)
    }
}

#[cfg(test)]
mod tests;
