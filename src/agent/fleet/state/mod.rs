//! The fleet's state and its pure transitions. See the module docs of [`crate::agent::fleet`].

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::api::{Effect, InstanceCounters, LastExit, StopReason};
use super::clock::{Clock, Ids};
use super::restart::Breaker;
use super::timers::{Timer, Timers};
use crate::agent::config::{Config, ProcessSpec};
use crate::agent::event::{Change, Event, EventCode};
use crate::agent::process::Identity;
use crate::agent::session::{GameSession, GssInput, GssStatus, PlayerInput, PlayerSession};
pub use persist::{Recorded, RestoreError};

/// Launches of one slot whose log files are kept.
pub const LOG_GENERATIONS_KEPT: u64 = 5;

/// Why a process was sent OnProcessTerminate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
enum TerminateReason {
    Unhealthy,
    Requested,
    Shutdown,
    /// Its runtime configuration was replaced.
    Retired,
}

impl TerminateReason {
    fn stop_reason(self) -> StopReason {
        match self {
            Self::Unhealthy => StopReason::Unhealthy,
            Self::Requested => StopReason::Forced,
            Self::Shutdown => StopReason::Shutdown,
            Self::Retired => StopReason::Forced,
        }
    }
}

/// A process's place in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
enum Phase {
    /// Started, no ProcessReady yet.
    Launching,
    /// Ready; may host a session while healthy.
    Active,
    /// Sent OnProcessTerminate; waiting for it to end.
    Terminating(TerminateReason),
    /// Called ProcessEnding; must exit within process-exit.
    Ending,
}

impl Phase {
    fn as_str(self) -> &'static str {
        match self {
            Phase::Launching => "LAUNCHING",
            Phase::Active => "ACTIVE",
            Phase::Terminating(_) => "TERMINATING",
            Phase::Ending => "ENDING",
        }
    }
}

#[derive(Debug)]
struct Proc {
    id: String,
    /// Its pid, start time and boot: what a restarted agent checks before adopting it.
    identity: Identity,
    /// When its current phase runs out (ProcessReady, protection or exit deadline).
    deadline: Option<Instant>,
    /// Unique per launch: timers name it so that a reused pid is never mistaken for it.
    serial: u64,
    slot: usize,
    started: Instant,
    ready_at: Option<Instant>,
    phase: Phase,
    client_port: u16,
    grpc_port: u16,
    healthy: bool,
    health_failures: u32,
    health_checks_passed: u64,
    health_in_flight: bool,
    session: Option<String>,
    log_paths: Vec<String>,
    custom: (i32, i32),
    /// Why it was sent OnProcessTerminate, kept when it then calls ProcessEnding.
    told_to_terminate: Option<TerminateReason>,
    stop: Option<StopReason>,
    /// Faults crash rehearsal injected into it.
    faults: chaos::ProcFaults,
}

#[derive(Debug)]
struct Slot {
    entry: usize,
    replica: u32,
    generation: u64,
    /// The launch serial of its live process.
    serial: Option<u64>,
    launch: LaunchState,
    failures: u32,
    /// From an older runtime configuration: never relaunched; its process is retired as soon
    /// as it hosts no session.
    retiring: bool,
    /// How its last process ended or its last launch failed (not saved: an agent restart
    /// starts without it).
    last_exit: Option<LastExit>,
}

/// Where a slot's next process is; exactly one launch is ever under way per slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LaunchState {
    /// Its process runs (or the fleet is stopping).
    Idle,
    /// A Launch timer will start it.
    Scheduled,
    /// A Launch effect is out; the actor answers with spawned/spawn_failed.
    InFlight,
}

#[derive(Debug, Default)]
struct Entry {
    /// Its number in process ids (`proc-NUMBER-REPLICA-GENERATION`): never reused, unlike its
    /// index, which changes when old entries are compacted away.
    number: usize,
    spec: ProcessSpec,
    breaker: Breaker,
    /// An invalid launch path was reported and has not launched since: do not repeat it.
    invalid_path_reported: bool,
    /// Launches that failed since the agent started (counted, not saved).
    launch_failures: u64,
    /// The error of its last failed launch, until one succeeds.
    last_launch_error: Option<String>,
}

/// The fleet. See the module docs.
pub struct Fleet {
    cfg: Arc<Config>,
    slots: Vec<Slot>,
    entries: Vec<Entry>,
    /// Live processes by launch serial.
    procs: HashMap<u64, Proc>,
    /// Launch serials of live processes by OS pid (SDK calls name the pid).
    by_pid: HashMap<u32, u64>,
    sessions: HashMap<String, (u64, GameSession)>,
    session_order: BTreeMap<u64, String>,
    finished_sessions: VecDeque<String>,
    idempotency: HashMap<String, String>,
    players: BTreeMap<u64, PlayerSession>,
    player_index: HashMap<String, u64>,
    session_players: HashMap<String, Vec<u64>>,
    next_seq: u64,
    timers: Timers,
    effects: Vec<Effect>,
    shutting_down: bool,
    draining: bool,
    reserved: bool,
    /// SetServerWeight's weight (0 until set).
    weight: u8,
    max_activations: u32,
    activation_timeout: Duration,
    /// Restored from records written under another runtime configuration in the config
    /// file: `start` applies the file's as a runtime update.
    file_runtime_changed: bool,
    /// The clocks as of the current input (set by the actor).
    clock: Clock,
    /// Session and player session ids.
    ids: Ids,
    /// Processes of retiring slots whose session just ended: told to terminate at the end of
    /// the current input.
    retire_later: Vec<u64>,
    /// The number the next entry gets ([`Entry::number`]).
    next_entry_number: usize,
    /// Aliases by id.
    aliases: BTreeMap<String, crate::api::alias::Alias>,
    /// Game server session queues by name.
    queues: BTreeMap<String, crate::api::queue::Queue>,
    /// Placements by PlacementId...
    placements: HashMap<String, crate::api::placement::Placement>,
    /// ...in the order they started (served and forgotten in this order)...
    placement_order: VecDeque<String>,
    /// ...and those that may still be pending, in the same order (pruned as they finish):
    /// what every input looks at, so finished placements cost the SDK nothing.
    pending_placements: VecDeque<String>,
    /// Placements finished since the agent started, by outcome (for the metrics).
    placement_outcomes: BTreeMap<&'static str, u64>,
    /// Health checks failed since the agent started (for the metrics).
    health_check_failures: u64,
    /// OnStartGameServerSession faults crash rehearsal armed, oldest first.
    start_faults: Vec<chaos::ArmedStartFault>,
}

impl Fleet {
    /// A fleet for `cfg` as of `clock`, with nothing launched yet; call [`Fleet::start`].
    pub fn new(cfg: Arc<Config>, clock: Clock) -> Self {
        let runtime = cfg.runtime.clone();
        let mut fleet = Self {
            max_activations: runtime.max_concurrent_activations,
            activation_timeout: runtime.activation_timeout,
            cfg,
            slots: Vec::new(),
            entries: Vec::new(),
            procs: HashMap::new(),
            by_pid: HashMap::new(),
            sessions: HashMap::new(),
            session_order: BTreeMap::new(),
            finished_sessions: VecDeque::new(),
            idempotency: HashMap::new(),
            players: BTreeMap::new(),
            player_index: HashMap::new(),
            session_players: HashMap::new(),
            next_seq: 0,
            timers: Timers::default(),
            effects: Vec::new(),
            shutting_down: false,
            draining: false,
            reserved: false,
            weight: 0,
            retire_later: Vec::new(),
            next_entry_number: 0,
            aliases: BTreeMap::new(),
            queues: BTreeMap::new(),
            placements: HashMap::new(),
            placement_order: VecDeque::new(),
            pending_placements: VecDeque::new(),
            placement_outcomes: BTreeMap::new(),
            health_check_failures: 0,
            start_faults: Vec::new(),
            file_runtime_changed: false,
            clock,
            ids: Ids::default(),
        };
        fleet.add_entries(&runtime);
        fleet
    }

    /// The clocks as of the input about to be handled.
    pub fn set_clock(&mut self, clock: Clock) {
        self.clock = clock;
    }

    /// Draws session and player session ids from `seed` from now on.
    pub fn set_id_seed(&mut self, seed: u128) {
        self.ids = Ids::new(seed);
    }

    /// Effects queued since the last call.
    pub fn take_effects(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.effects)
    }

    /// The spec a slot launches.
    pub fn spec(&self, slot: usize) -> &ProcessSpec {
        &self.entries[self.slots[slot].entry].spec
    }

    /// The earliest timer.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.timers.next()
    }

    /// Shutting down and every process is gone.
    pub fn is_stopped(&self) -> bool {
        self.shutting_down
            && self.procs.is_empty()
            && !self.slots.iter().any(|s| s.launch == LaunchState::InFlight)
    }

    /// Pids of live processes.
    pub fn pids(&self) -> Vec<u32> {
        self.by_pid.keys().copied().collect()
    }

    /// The launch serial of the live process `pid`.
    pub fn serial_of(&self, pid: u32) -> Option<u64> {
        self.by_pid.get(&pid).copied()
    }

    fn emit(&mut self, mut event: Event) {
        // Stamped from the input's clock, not the machine's: the core takes time as data.
        event.event_time = self.clock.wall;
        self.effects.push(Effect::Emit(Box::new(event)));
    }

    /// Tells the readers that mirror the state of a change no event reports.
    fn changed(&mut self, change: Change) {
        self.effects.push(Effect::Changed(change));
    }

    fn seq(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq
    }

    /// Launches every slot that has no process (after a restart, the adopted ones have).
    pub fn start(&mut self) {
        self.emit(Event::new(
            EventCode::AgentStarted,
            format!(
                "supervising {} server process(es) of fleet {}",
                self.slots.len(),
                self.cfg.fleet_id
            ),
        ));
        if std::mem::take(&mut self.file_runtime_changed) {
            let now = self.clock.now;
            self.update_runtime(self.cfg.runtime.clone(), now);
        }
        if self.draining {
            return;
        }
        for slot in 0..self.slots.len() {
            let s = &self.slots[slot];
            if s.serial.is_none() && s.launch == LaunchState::Idle && !s.retiring {
                self.launch(slot);
            }
        }
    }

    /// Fires every due timer.
    pub fn tick(&mut self, now: Instant) {
        while let Some(timer) = self.timers.pop_due(now) {
            self.fire(timer, now);
        }
        self.after_input(now);
    }

    /// Stops the process `serial` if its deadline still applies: it is still in `phase`.
    fn stop_if(&mut self, serial: u64, phase: Phase, reason: StopReason) {
        if self.procs.get(&serial).is_some_and(|p| p.phase == phase) {
            self.stop(serial, reason);
        }
    }

    fn fire(&mut self, timer: Timer, now: Instant) {
        match timer {
            Timer::Launch { slot } => {
                if self.slots[slot].launch == LaunchState::Scheduled
                    && !self.shutting_down
                    && !self.slots[slot].retiring
                {
                    // A slot scheduled before its entry tripped waits out the cool-down.
                    self.schedule_launch(slot, now, Duration::ZERO);
                }
            }
            Timer::ReadyTimeout { serial } => {
                self.stop_if(serial, Phase::Launching, StopReason::ReadyTimeout)
            }
            Timer::HealthCheck { serial } => {
                if let Some(p) = self.procs.get_mut(&serial)
                    && p.phase == Phase::Active
                    && p.stop.is_none()
                    && !p.health_in_flight
                {
                    p.health_in_flight = true;
                    let grpc_port = p.grpc_port;
                    match self.injected_health_failure(serial) {
                        Some(detail) => self.health_result(serial, false, &detail, now),
                        None => self.effects.push(Effect::HealthCheck { serial, grpc_port }),
                    }
                }
            }
            Timer::FaultHangEnd { serial } => self.end_hang(serial, now),
            Timer::TerminateDeadline { serial } => {
                if let Some(Phase::Terminating(reason)) = self.procs.get(&serial).map(|p| p.phase) {
                    self.stop(serial, reason.stop_reason());
                }
            }
            Timer::ExitTimeout { serial } => {
                self.stop_if(serial, Phase::Ending, StopReason::ExitTimeout)
            }
            Timer::ActivationTimeout { gss_id } => {
                let Some((_, s)) = self.sessions.get(&gss_id) else {
                    return;
                };
                if s.status != GssStatus::Activating {
                    return;
                }
                let (pid, process_id) = (s.pid, s.process_id.clone());
                let timeout = self.activation_timeout;
                self.emit(
                    Event::new(
                        EventCode::GameSessionActivationTimeout,
                        format!(
                            "not activated within {}; the process is terminated",
                            humantime::format_duration(timeout)
                        ),
                    )
                    .session(&gss_id)
                    .process(&process_id, Some(pid)),
                );
                self.end_session_quietly(&gss_id, GssInput::Fail, "activation timed out");
                if let Some(serial) = self.serial_of(pid) {
                    self.stop(serial, StopReason::Forced);
                }
            }
            Timer::Reservation { player_session_id } => {
                self.player_transition(&player_session_id, PlayerInput::Timeout);
            }
            Timer::PlacementTimeout { id } => self.placement_timed_out(&id),
            Timer::BreakerEnd { entry } => {
                self.entries[entry].breaker.paused_until = None;
                let launch_path = self.entries[entry].spec.launch_path.clone();
                self.emit(Event::new(
                    EventCode::ServerProcessCrashLoopEnded,
                    format!("{launch_path}: cool-down over; launching again"),
                ));
            }
        }
    }

    /// Launch serials of the live processes.
    fn serials(&self) -> Vec<u64> {
        self.procs.keys().copied().collect()
    }

    /// DescribeInstancesExtend's counters.
    pub fn counters(&self) -> InstanceCounters {
        let max_game_session_cnt = self.slots.iter().filter(|s| !s.retiring).count() as u32;
        let stopping = self.draining || self.shutting_down;
        let mut c = InstanceCounters {
            max_game_session_cnt,
            draining: self.draining,
            reserved: self.reserved,
            weight: self.weight,
            process_cnt: self.procs.len() as u32,
            desired_process_cnt: if stopping { 0 } else { max_game_session_cnt },
            launch_failure_cnt: self.entries.iter().map(|e| e.launch_failures).sum(),
            paused_entry_cnt: self
                .entries
                .iter()
                .filter(|e| e.breaker.is_paused(self.clock.now))
                .count() as u32,
            ..Default::default()
        };
        for p in self.procs.values() {
            if p.ready_at.is_some() && p.phase != Phase::Ending {
                c.active_process_cnt += 1;
                if p.healthy {
                    c.healthy_process_cnt += 1;
                }
            }
        }
        for (_, s) in self.sessions.values() {
            if matches!(s.status, GssStatus::Activating | GssStatus::Active) {
                c.game_session_cnt += 1;
                c.player_session_cnt = c
                    .player_session_cnt
                    .saturating_add(s.current_players.max(0) as u32);
                c.max_player_session_cnt = c
                    .max_player_session_cnt
                    .saturating_add(s.max_players.max(0) as u32);
            }
        }
        c
    }
}

mod aliases;
mod chaos;
mod control;
mod persist;
mod placements;
mod procs;
mod queues;
mod sdk;
mod sessions;
mod slots;
#[cfg(test)]
mod tests;
