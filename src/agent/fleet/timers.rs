//! A deadline queue: the fleet actor sleeps until the earliest entry.

use std::collections::BTreeMap;

use tokio::time::Instant;

/// Something that is due at a time. Timers are never cancelled; when one fires, the fleet checks
/// that what it refers to is still in the state the timer was set for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Timer {
    /// Relaunch a slot.
    Launch {
        /// Slot index.
        slot: usize,
    },
    /// ProcessReady deadline.
    ReadyTimeout {
        /// The process's launch serial.
        serial: u64,
    },
    /// Next OnHealthCheck.
    HealthCheck {
        /// The process's launch serial.
        serial: u64,
    },
    /// Termination deadline after OnProcessTerminate.
    TerminateDeadline {
        /// The process's launch serial.
        serial: u64,
    },
    /// Exit deadline after ProcessEnding.
    ExitTimeout {
        /// The process's launch serial.
        serial: u64,
    },
    /// Activation deadline of a game server session.
    ActivationTimeout {
        /// Session id.
        gss_id: String,
    },
    /// Reservation deadline of a player session.
    Reservation {
        /// Player session id.
        player_session_id: String,
    },
    /// End of a crash-loop pause.
    BreakerEnd {
        /// Entry index.
        entry: usize,
    },
    /// A placement's queue timeout.
    PlacementTimeout {
        /// PlacementId.
        id: String,
    },
    /// The end of a hang crash rehearsal injected: continue the process.
    FaultHangEnd {
        /// The process's launch serial.
        serial: u64,
    },
}

/// Timers ordered by deadline, ties by insertion.
#[derive(Debug, Default)]
pub struct Timers {
    queue: BTreeMap<(Instant, u64), Timer>,
    seq: u64,
}

impl Timers {
    /// Schedules `timer` at `at`.
    pub fn add(&mut self, at: Instant, timer: Timer) {
        self.seq += 1;
        self.queue.insert((at, self.seq), timer);
    }

    /// The earliest deadline.
    pub fn next(&self) -> Option<Instant> {
        self.queue.keys().next().map(|(at, _)| *at)
    }

    /// Replaces every timer by what `f` makes of it, dropping those it maps to `None`.
    pub fn remap(&mut self, mut f: impl FnMut(Timer) -> Option<Timer>) {
        self.queue = std::mem::take(&mut self.queue)
            .into_iter()
            .filter_map(|(k, t)| f(t).map(|t| (k, t)))
            .collect();
    }

    /// Removes and returns the earliest timer if it is due at `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<Timer> {
        let first = self.queue.first_entry()?;
        if first.key().0 <= now {
            Some(first.remove())
        } else {
            None
        }
    }
}
