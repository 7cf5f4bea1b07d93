//! The durable outbox: every lifecycle event is written to `data-dir/outbox.redb` before it
//! is relayed. One writer thread commits in groups (everything queued at the time goes into
//! one transaction), so durability costs one flush per batch, not per event. Acknowledged
//! events are pruned. The sequence is per outbox epoch and survives restarts.
//!
//! The file also holds the command ledger's `command_*` tables ([`super::ledger`]), which
//! takes its database from the outbox's [`SharedDb`]. The agent's restart state has a file of
//! its own ([`crate::store`]).
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
//! ([`crate::dbfile::open`]) and read under `catch_unwind`: every event must decode under its
//! own sequence, the acknowledged sequence must read, and an outbox that holds events or
//! acknowledgements must have its epoch record. A file that fails is renamed aside to
//! `outbox.redb.corrupt-<unix-ms>`, a fresh one with a new epoch takes its place, and one
//! UPSTREAM_OUTBOX_CORRUPT event (the first of the new epoch) names the kept file and what
//! was wrong. The events the old file held that the control plane had not acknowledged stay
//! in the kept file: they are never resent under the new epoch, where the control plane could
//! not tell them from new ones.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prost::Message;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::{mpsc, watch};

use crate::dbfile::{self, DbFileError, SharedDb};
use crate::event::{Event, EventBus, EventCode};
use crate::upstream_proto as up;

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
        std::thread::Builder::new()
            .name("outbox-writer".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_time()
                    .build()
                    .expect("a runtime for one thread can be built at start-up");
                let notices =
                    std::mem::take(&mut *self.notices.lock().unwrap_or_else(|p| p.into_inner()));
                let mut writer = Writer {
                    outbox: self,
                    rx,
                    bus,
                    rt,
                    hold: Hold::new(hold_max_bytes),
                    fault: None,
                    closed: false,
                };
                for n in notices {
                    writer.notice(n);
                }
                writer.run();
            })
            .expect("a thread can be spawned at start-up")
    }
}

/// The size an event takes in memory, roughly.
fn held_size(e: &Event) -> u64 {
    let ids = [
        &e.process_id,
        &e.game_server_session_id,
        &e.player_session_id,
    ]
    .iter()
    .map(|s| s.as_ref().map_or(0, String::len))
    .sum::<usize>();
    let exit = e.exit.as_ref().map_or(0, |x| {
        x.output_tail.iter().map(|l| l.len() + 24).sum::<usize>()
            + x.signal.as_ref().map_or(0, String::len)
    });
    (std::mem::size_of::<Event>() + e.message.len() + ids + exit) as u64
}

/// Events taken from the queue and not yet committed, oldest first, bounded while the disk
/// refuses writes.
struct Hold {
    events: VecDeque<Event>,
    bytes: u64,
    max_bytes: u64,
    /// Dropped past the bound since the last UPSTREAM_EVENTS_LOST.
    dropped: u64,
    dropped_bytes: u64,
}

impl Hold {
    fn new(max_bytes: u64) -> Self {
        Self {
            events: VecDeque::new(),
            bytes: 0,
            max_bytes,
            dropped: 0,
            dropped_bytes: 0,
        }
    }

    fn len(&self) -> usize {
        self.events.len()
    }

    fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Keeps `e`; when `bounded` and the hold is full, drops and counts it instead.
    fn push(&mut self, e: Event, bounded: bool) {
        let size = held_size(&e);
        if bounded && self.bytes + size > self.max_bytes {
            self.dropped += 1;
            self.dropped_bytes += size;
            return;
        }
        self.bytes += size;
        self.events.push_back(e);
    }

    /// Puts `e` first, whatever the bound (the agent's own notices).
    fn push_front(&mut self, e: Event) {
        self.bytes += held_size(&e);
        self.events.push_front(e);
    }

    /// The first `n` events, in order.
    fn front(&mut self, n: usize) -> &[Event] {
        let n = n.min(self.events.len());
        &self.events.make_contiguous()[..n]
    }

    fn pop_front(&mut self, n: usize) {
        for _ in 0..n.min(self.events.len()) {
            if let Some(e) = self.events.pop_front() {
                self.bytes = self.bytes.saturating_sub(held_size(&e));
            }
        }
    }
}

/// A disk fault under way.
struct Fault {
    since: Instant,
    /// Reopens tried.
    attempts: u32,
    /// When the file is opened again next.
    next_try: Instant,
    /// The file is open again; the next commit ends the fault.
    reopened: bool,
}

/// The writer thread's state.
struct Writer {
    outbox: Outbox,
    rx: mpsc::UnboundedReceiver<Event>,
    bus: EventBus,
    /// Only for waiting on `rx` with a deadline.
    rt: tokio::runtime::Runtime,
    hold: Hold,
    fault: Option<Fault>,
    /// Every sender is gone: the agent is stopping.
    closed: bool,
}

impl Writer {
    fn run(mut self) {
        loop {
            if self.fault.is_none() && self.outbox.file.take_fault() {
                self.begin_fault("a reader met a disk fault");
            }
            if self.hold.is_empty() && self.fault.is_none() {
                if self.closed {
                    return;
                }
                if !self.wait(IDLE_WAKE, false) {
                    continue;
                }
            }
            self.take_queued();
            if let Some(f) = &self.fault
                && !f.reopened
            {
                let wait = f.next_try.saturating_duration_since(Instant::now());
                if !wait.is_zero() {
                    self.wait(wait, true);
                    continue;
                }
                // Stopping: a broken disk must not hang the exit.
                if self.closed && f.attempts >= 3 {
                    tracing::error!(
                        lost = self.hold.len() as u64 + self.hold.dropped,
                        "cannot write events to the outbox; giving up at exit"
                    );
                    return;
                }
                if !self.reopen() {
                    continue;
                }
            }
            if self.hold.is_empty() {
                self.end_fault();
                continue;
            }
            let n = self.hold.len().min(BATCH);
            match self.outbox.append(self.hold.front(n)) {
                Ok(_) => {
                    self.hold.pop_front(n);
                    self.end_fault();
                    self.check_full();
                }
                Err(e) => self.begin_fault(&e.to_string()),
            }
        }
    }

    /// Waits up to `limit` for the next event and holds it (`bounded`: see [`Hold::push`]);
    /// false if none came (the queue may have closed).
    fn wait(&mut self, limit: Duration, bounded: bool) -> bool {
        if self.closed {
            std::thread::sleep(limit);
            return false;
        }
        let rx = &mut self.rx;
        match self
            .rt
            .block_on(async { tokio::time::timeout(limit, rx.recv()).await })
        {
            Ok(Some(e)) => {
                self.hold.push(e, bounded);
                true
            }
            Ok(None) => {
                self.closed = true;
                false
            }
            Err(_) => false,
        }
    }

    /// Takes what else is queued: one batch while the disk takes writes, everything (into
    /// the bounded hold) while it refuses.
    fn take_queued(&mut self) {
        let faulted = self.fault.is_some();
        while faulted || (self.hold.len() < BATCH && self.hold.bytes < self.hold.max_bytes) {
            match self.rx.try_recv() {
                Ok(e) => self.hold.push(e, faulted),
                Err(mpsc::error::TryRecvError::Empty) => return,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    self.closed = true;
                    return;
                }
            }
        }
    }

    /// A write (or a reader) failed: the file is closed and opened again in a while.
    fn begin_fault(&mut self, error: &str) {
        self.outbox.file.close();
        let now = Instant::now();
        match &mut self.fault {
            Some(f) => {
                f.reopened = false;
                f.next_try = now + FAULT_RETRY;
                if f.attempts.is_multiple_of(60) {
                    tracing::error!(
                        error,
                        held = self.hold.len(),
                        dropped = self.hold.dropped,
                        "the outbox still cannot be written; retrying every second"
                    );
                }
            }
            None => {
                tracing::error!(
                    error,
                    held = self.hold.len(),
                    "cannot write events to the outbox; they wait in memory and the outbox is opened again every second"
                );
                self.fault = Some(Fault {
                    since: now,
                    attempts: 0,
                    next_try: now + FAULT_RETRY,
                    reopened: false,
                });
            }
        }
    }

    /// Opens the file again (a corrupt one is replaced); true if it is open.
    fn reopen(&mut self) -> bool {
        let Some(f) = &mut self.fault else {
            return true;
        };
        f.attempts += 1;
        match open_sound(&self.outbox.file) {
            Ok((c, replaced)) => {
                f.reopened = true;
                self.outbox.reconcile(c, replaced.is_some(), &mut self.hold);
                if let Some(r) = replaced {
                    self.notice(corrupt_notice(&r, c.epoch));
                }
                true
            }
            Err(e) => {
                if f.attempts == 1 || f.attempts.is_multiple_of(60) {
                    tracing::warn!(error = %e, attempts = f.attempts, "cannot open the outbox again yet");
                }
                f.next_try = Instant::now() + FAULT_RETRY;
                self.outbox.file.close();
                false
            }
        }
    }

    /// A commit went through: the fault (if any) is over, and what was dropped meanwhile is
    /// said once.
    fn end_fault(&mut self) {
        let Some(f) = self.fault.take() else {
            return;
        };
        let outage = f.since.elapsed();
        tracing::warn!(
            outage_ms = outage.as_millis() as u64,
            dropped = self.hold.dropped,
            "the outbox takes writes again"
        );
        if self.hold.dropped > 0 {
            let lost = Event::new(
                EventCode::UpstreamEventsLost,
                format!(
                    "{} events ({} bytes) were lost: the disk refused writes for {}, and the \
                     events waiting in memory passed {} bytes",
                    self.hold.dropped,
                    self.hold.dropped_bytes,
                    humantime::format_duration(Duration::from_secs(outage.as_secs())),
                    self.hold.max_bytes
                ),
            );
            self.hold.dropped = 0;
            self.hold.dropped_bytes = 0;
            self.bus.emit(lost.clone());
            self.hold.push(lost, false);
        }
    }

    /// Emits one of the writer's own events and stores it first (`bus` has no sink, or this
    /// thread would feed itself).
    fn notice(&mut self, e: Event) {
        self.bus.emit(e.clone());
        self.hold.push_front(e);
    }

    /// Raises the UPSTREAM_OUTBOX_FULL alarm once per episode.
    fn check_full(&mut self) {
        if let Some(bytes) = self.outbox.check_full() {
            let alarm = Event::new(
                EventCode::UpstreamOutboxFull,
                format!(
                    "{bytes} bytes of events wait for the control plane; lifecycle events are kept, status reports coalesced"
                ),
            );
            self.bus.emit(alarm.clone());
            self.hold.push(alarm, false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dbfile::tests::Tmpfs;

    fn ev(n: u64) -> Event {
        Event::new(EventCode::ServerProcessStarted, format!("event {n}"))
    }

    fn messages(o: &Outbox) -> Vec<String> {
        o.read_after(0, 100_000)
            .unwrap()
            .into_iter()
            .map(|e| e.message)
            .collect()
    }

    /// Polls `f` until it holds (a loaded machine may be slow; nothing waits a fixed time).
    fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !f() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn sequences_persist_and_acks_prune() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.redb");
        let epoch = {
            let o = Outbox::open(&path, 1 << 20).unwrap();
            assert_eq!(o.append(&[ev(1), ev(2), ev(3)]).unwrap(), 3);
            o.ack(o.epoch(), 2).unwrap();
            assert_eq!(o.unacked(), 1);
            // An acknowledgement of another epoch is not this outbox's.
            o.ack(o.epoch() + 1, 3).unwrap();
            assert_eq!(o.unacked(), 1);
            o.epoch()
        };
        let o = Outbox::open(&path, 1 << 20).unwrap();
        assert_eq!(o.epoch(), epoch);
        assert_eq!(o.acked(), 2);
        let rest = o.read_after(o.acked(), 10).unwrap();
        assert_eq!(rest.iter().map(|e| e.sequence).collect::<Vec<_>>(), [3]);
        assert_eq!(rest[0].message, "event 3");
        assert_eq!(
            o.append(&[ev(4)]).unwrap(),
            4,
            "the sequence continues after a restart"
        );
        o.ack(epoch, 4).unwrap();
        assert!(o.read_after(0, 10).unwrap().is_empty());
        // A restart after everything was pruned still continues the sequence.
        drop(o);
        let o = Outbox::open(&path, 1 << 20).unwrap();
        assert_eq!(o.append(&[ev(5)]).unwrap(), 5);
        assert!(o.notices.lock().unwrap().is_empty(), "nothing was corrupt");
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
        o.ack(o.epoch(), 10).unwrap();
        assert!(o.check_full().is_none());
    }

    /// The files in `dir` whose name starts with `prefix`.
    fn named(dir: &Path, prefix: &str) -> Vec<PathBuf> {
        std::fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| Some(e.ok()?.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(prefix))
            })
            .collect()
    }

    /// The one corruption notice `o` has for its writer, checked against the kept file.
    fn the_notice(o: &Outbox, dir: &Path) -> String {
        let notices = o.notices.lock().unwrap();
        assert_eq!(notices.len(), 1, "{notices:?}");
        assert_eq!(notices[0].event_code, EventCode::UpstreamOutboxCorrupt);
        let kept = named(dir, "outbox.redb.corrupt-");
        assert_eq!(kept.len(), 1);
        assert!(
            notices[0].message.contains(&kept[0].display().to_string()),
            "{}",
            notices[0].message
        );
        notices[0].message.clone()
    }

    #[test]
    fn a_lost_epoch_record_starts_a_new_epoch_without_the_old_events() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.redb");
        let old = {
            let o = Outbox::open(&path, 1 << 20).unwrap();
            o.append(&[ev(1), ev(2), ev(3)]).unwrap();
            o.ack(o.epoch(), 1).unwrap();
            o.epoch()
        };
        // The epoch record goes; events and the acknowledgement stay.
        {
            let db = crate::dbfile::open(&path, 1 << 20).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(META).unwrap().remove(EPOCH).unwrap();
            txn.commit().unwrap();
        }
        let o = Outbox::open(&path, 1 << 20).unwrap();
        assert_ne!(o.epoch(), old);
        assert!(messages(&o).is_empty(), "no old event under the new epoch");
        assert_eq!((o.acked(), o.unacked()), (0, 0));
        assert_eq!(
            o.append(&[ev(9)]).unwrap(),
            1,
            "the new epoch counts from 1"
        );
        let notice = the_notice(&o, dir.path());
        assert!(notice.contains("epoch record is missing"), "{notice}");
    }

    #[test]
    fn garbage_anywhere_is_the_old_outbox_whole_or_a_new_epoch() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.redb");
        let (epoch, want) = {
            let o = Outbox::open(&path, 1 << 20).unwrap();
            let ledger = super::super::ledger::Ledger::open(o.file(), 0).unwrap();
            for i in 0..60 {
                o.append(&(0..20).map(|k| ev(i * 20 + k)).collect::<Vec<_>>())
                    .unwrap();
                if i % 3 == 0 {
                    o.ack(o.epoch(), i * 20).unwrap();
                }
                ledger.mark_running(&format!("c{i}"), i).unwrap();
            }
            (o.epoch(), messages(&o))
        };
        let good = std::fs::read(&path).unwrap();
        let (mut whole, mut replaced) = (0, 0);
        for offset in (0..good.len()).step_by(2048) {
            let _ = std::fs::remove_file(&path);
            for kept in named(dir.path(), "outbox.redb.corrupt-") {
                std::fs::remove_file(kept).unwrap();
            }
            let mut bad = good.clone();
            bad[offset..(offset + 64).min(good.len())].fill(0x5A);
            std::fs::write(&path, &bad).unwrap();
            let o = Outbox::open(&path, 1 << 20).unwrap();
            if o.epoch() == epoch {
                assert_eq!(messages(&o), want, "offset {offset}");
                assert!(o.notices.lock().unwrap().is_empty());
                whole += 1;
            } else {
                assert!(messages(&o).is_empty(), "offset {offset}");
                the_notice(&o, dir.path());
                replaced += 1;
            }
            // The ledger opens on whatever the outbox kept.
            super::super::ledger::Ledger::open(o.file(), 1).unwrap();
        }
        assert!(
            whole > 0 && replaced > 0,
            "{whole} whole, {replaced} replaced"
        );
    }

    #[test]
    fn the_hold_is_bounded_and_counts_what_it_drops() {
        let e = ev(0);
        let size = held_size(&e);
        let mut hold = Hold::new(size * 3);
        for _ in 0..5 {
            hold.push(ev(0), true);
        }
        assert_eq!(
            (hold.len(), hold.dropped, hold.dropped_bytes),
            (3, 2, size * 2)
        );
        // Unbounded while the disk takes writes.
        hold.push(ev(0), false);
        hold.push_front(ev(0));
        assert_eq!(hold.len(), 5);
        hold.pop_front(4);
        assert_eq!((hold.len(), hold.bytes), (1, size));
    }

    #[test]
    fn a_full_disk_holds_events_in_memory_and_loses_none_within_the_bound() {
        let Some(fs) = Tmpfs::mount("4m") else { return };
        let o = Outbox::open(&fs.path().join("outbox.redb"), u64::MAX).unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        let bus = EventBus::new(100_000);
        let writer = o.clone().spawn_writer(rx, bus.clone());
        let mut committed = o.committed();
        tx.send(ev(0)).unwrap();
        wait_until("the first event", || *committed.borrow_and_update() == 1);
        let filler = fs.fill();
        // Far more than redb's spare pages: commits need the file to grow.
        let long = |n: u64| {
            Event::new(
                EventCode::ServerProcessStarted,
                format!("event {n} {}", "x".repeat(1000)),
            )
        };
        for n in 1..=2000 {
            tx.send(long(n)).unwrap();
        }
        wait_until("the write refused", || o.file().get().is_none());
        std::fs::remove_file(filler).unwrap();
        wait_until("every event written", || {
            *committed.borrow_and_update() > 2000
        });
        let stored = o.read_after(0, 100_000).unwrap();
        let numbers: Vec<u64> = stored
            .iter()
            .map(|e| e.message.split(' ').nth(1).unwrap().parse().unwrap())
            .collect();
        assert_eq!(numbers, (0..=2000).collect::<Vec<_>>(), "all, in order");
        assert!(
            stored
                .iter()
                .enumerate()
                .all(|(i, e)| e.sequence == i as u64 + 1)
        );
        drop(tx);
        writer.join().unwrap();
        assert_eq!(bus.recent(0, 10).1, 0, "nothing lost, nothing to say");
    }

    #[test]
    fn past_the_bound_events_are_dropped_counted_and_said_once() {
        let Some(fs) = Tmpfs::mount("4m") else { return };
        let o = Outbox::open(&fs.path().join("outbox.redb"), u64::MAX).unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        let bus = EventBus::new(100_000);
        let long = |n: u64| {
            Event::new(
                EventCode::ServerProcessStarted,
                format!("event {n} {}", "x".repeat(1000)),
            )
        };
        let bound = held_size(&long(1)) * 100;
        let writer = o.clone().spawn_writer_holding(rx, bus.clone(), bound);
        let filler = fs.fill();
        for n in 1..=2000 {
            tx.send(long(n)).unwrap();
        }
        wait_until("the write refused", || o.file().get().is_none());
        std::fs::remove_file(filler).unwrap();
        let lost = || {
            bus.recent(0, 10)
                .0
                .into_iter()
                .find(|e| e.event_code == EventCode::UpstreamEventsLost)
        };
        wait_until("the loss said", || lost().is_some());
        let lost = lost().unwrap();
        drop(tx);
        writer.join().unwrap();
        let stored = o.read_after(0, 100_000).unwrap();
        let kept = stored
            .iter()
            .filter(|e| e.code == "SERVER_PROCESS_STARTED")
            .count() as u64;
        let dropped: u64 = lost.message.split(' ').next().unwrap().parse().unwrap();
        assert!(dropped > 0, "{}", lost.message);
        assert_eq!(kept + dropped, 2000, "{}", lost.message);
        assert_eq!(stored.last().unwrap().code, "UPSTREAM_EVENTS_LOST");
        assert_eq!(bus.recent(0, 10).1, 1, "said once");
    }
}
