//! The writer thread: takes events from the bus's queue, commits them in groups, and rides
//! out disk faults (see the module doc of [`super`]).

use super::*;

/// Starts the writer thread for `outbox`.
pub(super) fn spawn(
    outbox: Outbox,
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
                std::mem::take(&mut *outbox.notices.lock().unwrap_or_else(|p| p.into_inner()));
            let mut writer = Writer {
                outbox,
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
        while faulted || (self.hold.len() < BATCH && self.hold.has_room()) {
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
