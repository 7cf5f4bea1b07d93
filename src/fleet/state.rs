//! The fleet's state and its pure transitions. See the module docs of [`crate::fleet`].

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::api::{
    Control, ControlReply, Effect, FleetError, InstanceCounters, ProcessView, SdkCall, SdkReply,
    StopReason,
};
use super::restart::{Breaker, backoff};
use super::timers::{Timer, Timers};
pub use persist::{Recorded, RestoreError};
use crate::config::{Config, ProcessSpec, RuntimeConfiguration};
use crate::event::{Event, EventCode, ExitDetails};
use crate::process::{ExitInfo, Identity};
use crate::session::{
    CreationPolicy, GameSession, GssInput, GssStatus, PlayerInput, PlayerSession, unix_seconds,
};

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
    pid: u32,
    /// pid, start time and executable: what a restarted agent checks before adopting it.
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
    spec: ProcessSpec,
    breaker: Breaker,
    /// An invalid launch path was reported and has not launched since: do not repeat it.
    invalid_path_reported: bool,
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
    max_activations: u32,
    activation_timeout: Duration,
    /// Processes of retiring slots whose session just ended: told to terminate at the end of
    /// the current input.
    retire_later: Vec<u64>,
}

impl Fleet {
    /// A fleet for `cfg`, with nothing launched yet; call [`Fleet::start`].
    pub fn new(cfg: Arc<Config>) -> Self {
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
            retire_later: Vec::new(),
        };
        fleet.add_entries(&runtime);
        fleet
    }

    /// Adds the entries of `runtime` and their slots (not launched).
    fn add_entries(&mut self, runtime: &RuntimeConfiguration) -> Vec<usize> {
        let mut added = Vec::new();
        for spec in &runtime.server_processes {
            let entry = self.entries.len();
            self.entries.push(Entry {
                spec: spec.clone(),
                ..Entry::default()
            });
            for replica in 0..spec.concurrent_executions {
                added.push(self.slots.len());
                self.slots.push(Slot {
                    entry,
                    replica,
                    generation: 0,
                    serial: None,
                    launch: LaunchState::Idle,
                    failures: 0,
                    retiring: false,
                });
            }
        }
        self.max_activations = runtime.max_concurrent_activations;
        self.activation_timeout = runtime.activation_timeout;
        added
    }

    /// The runtime configuration in force (the entries of non-retiring slots).
    fn current_runtime(&self) -> RuntimeConfiguration {
        let mut entries: Vec<usize> = self
            .slots
            .iter()
            .filter(|s| !s.retiring)
            .map(|s| s.entry)
            .collect();
        entries.dedup(); // slots of one entry are contiguous
        let server_processes = entries
            .into_iter()
            .map(|e| self.entries[e].spec.clone())
            .collect();
        RuntimeConfiguration {
            server_processes,
            max_concurrent_activations: self.max_activations,
            activation_timeout: self.activation_timeout,
        }
    }

    /// UpdateRuntimeConfiguration (GSE's rule): new processes start under the new
    /// configuration now; old ones without a game server session are told to terminate; old
    /// ones with a session keep running until it ends and are then retired. The total never
    /// exceeds the new one by more than the retiring processes.
    fn update_runtime(&mut self, runtime: RuntimeConfiguration, now: Instant) {
        let old: Vec<usize> = (0..self.slots.len())
            .filter(|s| !self.slots[*s].retiring)
            .collect();
        for slot in old {
            self.slots[slot].retiring = true;
            if let Some(serial) = self.slots[slot].serial
                && self.live_session_policy(serial).is_none()
            {
                self.terminate(serial, TerminateReason::Retired, now);
            }
        }
        let total = runtime
            .server_processes
            .iter()
            .map(|p| p.concurrent_executions)
            .sum::<u32>();
        self.emit(Event::new(
            EventCode::RuntimeConfigurationUpdated,
            format!("runtime configuration updated: {total} process(es); old processes retire as their sessions end"),
        ));
        for slot in self.add_entries(&runtime) {
            self.launch(slot);
        }
    }

    /// Retires the processes whose sessions ended while their slot was retiring.
    fn retire_pending(&mut self, now: Instant) {
        for serial in std::mem::take(&mut self.retire_later) {
            self.terminate(serial, TerminateReason::Retired, now);
        }
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
        self.shutting_down && self.procs.is_empty()
    }

    /// Pids of live processes.
    pub fn pids(&self) -> Vec<u32> {
        self.by_pid.keys().copied().collect()
    }

    /// The launch serial of the live process `pid`.
    pub fn serial_of(&self, pid: u32) -> Option<u64> {
        self.by_pid.get(&pid).copied()
    }

    fn emit(&mut self, event: Event) {
        self.effects.push(Effect::Emit(Box::new(event)));
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

    /// The recorded process `serial` is alive and supervised again (after a restart of the
    /// agent).
    pub fn adopted(&mut self, serial: u64) {
        let Some(p) = self.procs.get(&serial) else {
            return;
        };
        let (id, pid, phase, stop) = (p.id.clone(), p.pid, p.phase, p.stop);
        self.emit(
            Event::new(
                EventCode::ServerProcessAdopted,
                format!("adopted after an agent restart ({})", phase.as_str()),
            )
            .process(&id, Some(pid)),
        );
        if let Some(reason) = stop {
            // The stop asked for before the restart is asked for again.
            self.procs.get_mut(&serial).expect("checked above").stop = None;
            self.stop(serial, reason);
        }
    }

    /// The recorded process `serial` is no longer running (or its pid now names another
    /// process): it is accounted for as an exit whose status is unknown, and replaced.
    pub fn lost(&mut self, serial: u64, why: &str, now: Instant) {
        let info = ExitInfo {
            output_tail: vec![format!("exit status unknown: {why}")],
            ..ExitInfo::default()
        };
        self.exited(serial, info, now);
    }

    fn launch(&mut self, slot: usize) {
        let serial = self.seq();
        let s = &mut self.slots[slot];
        s.generation += 1;
        s.launch = LaunchState::InFlight;
        let id = |generation| format!("proc-{}-{}-{generation}", s.entry, s.replica);
        let process_id = id(s.generation);
        let retire_logs_of = s
            .generation
            .checked_sub(LOG_GENERATIONS_KEPT)
            .filter(|g| *g > 0)
            .map(id);
        self.effects.push(Effect::Launch {
            slot,
            serial,
            process_id,
            retire_logs_of,
        });
    }

    /// The launch `serial` of `slot` succeeded: `identity` names the new process.
    pub fn spawned(
        &mut self,
        slot: usize,
        serial: u64,
        process_id: String,
        identity: Identity,
        now: Instant,
    ) {
        let pid = identity.pid;
        let ready_by = now + self.cfg.timeouts.process_ready.get();
        let s = &mut self.slots[slot];
        s.launch = LaunchState::Idle;
        s.serial = Some(serial);
        let entry = s.entry;
        self.entries[entry].invalid_path_reported = false;
        self.timers.add(ready_by, Timer::ReadyTimeout { serial });
        let launch_path = self.entries[entry].spec.launch_path.clone();
        self.emit(
            Event::new(
                EventCode::ServerProcessStarted,
                format!("started {launch_path}"),
            )
            .process(&process_id, Some(pid)),
        );
        self.by_pid.insert(pid, serial);
        self.procs.insert(
            serial,
            Proc {
                id: process_id,
                pid,
                identity,
                deadline: Some(ready_by),
                serial,
                slot,
                started: now,
                ready_at: None,
                phase: Phase::Launching,
                client_port: 0,
                grpc_port: 0,
                healthy: false,
                health_failures: 0,
                health_checks_passed: 0,
                health_in_flight: false,
                session: None,
                log_paths: Vec::new(),
                custom: (0, 0),
                told_to_terminate: None,
                stop: None,
            },
        );
        if self.shutting_down {
            self.stop(serial, StopReason::Shutdown);
        } else if self.slots[slot].retiring {
            // Launched just before a runtime update: it would run the old configuration.
            self.stop(serial, StopReason::Forced);
        }
    }

    /// The launch of `slot` failed; `invalid_path` when the LaunchPath is missing or not
    /// executable (reported once, retried at the slowest pace).
    pub fn spawn_failed(
        &mut self,
        slot: usize,
        process_id: String,
        invalid_path: bool,
        message: String,
        now: Instant,
    ) {
        self.slots[slot].launch = LaunchState::Idle;
        let entry = self.slots[slot].entry;
        let code = if invalid_path {
            EventCode::ServerProcessInvalidPath
        } else {
            EventCode::ServerProcessPullFailed
        };
        if !(invalid_path && self.entries[entry].invalid_path_reported) {
            self.emit(Event::new(code, message).process(&process_id, None));
        }
        if invalid_path {
            self.entries[entry].invalid_path_reported = true;
            // A missing file does not appear by retrying hot: wait the longest backoff.
            self.slots[slot].failures = self.slots[slot].failures.max(u32::MAX / 2);
        }
        self.after_failure(slot, now, Duration::ZERO);
    }

    /// Counts a failure of `slot` and schedules its relaunch.
    fn after_failure(&mut self, slot: usize, now: Instant, ran: Duration) {
        let policy = &self.cfg.restart;
        let s = &mut self.slots[slot];
        if ran >= policy.reset_after.get() {
            s.failures = 0;
        }
        s.failures = s.failures.saturating_add(1);
        let delay = backoff(policy, s.failures);
        let entry = s.entry;
        if let Some(count) = self.entries[entry].breaker.record(policy, now) {
            let until = self.cfg.restart.crash_loop_cool_down.get();
            let launch_path = self.entries[entry].spec.launch_path.clone();
            self.emit(Event::new(
                EventCode::ServerProcessCrashLoop,
                format!(
                    "{launch_path}: {count} failures within {}; launches paused for {}",
                    humantime::format_duration(self.cfg.restart.crash_loop_window.get()),
                    humantime::format_duration(until)
                ),
            ));
            self.timers.add(now + until, Timer::BreakerEnd { entry });
        }
        self.schedule_launch(slot, now, delay);
    }

    fn schedule_launch(&mut self, slot: usize, now: Instant, delay: Duration) {
        if self.shutting_down || self.draining || self.slots[slot].retiring {
            self.slots[slot].launch = LaunchState::Idle;
            return;
        }
        let entry = self.slots[slot].entry;
        let mut at = now + delay;
        if let Some(until) = self.entries[entry].breaker.paused_until {
            at = at.max(until);
        }
        if at <= now {
            self.launch(slot);
        } else {
            self.slots[slot].launch = LaunchState::Scheduled;
            self.timers.add(at, Timer::Launch { slot });
        }
    }

    /// The process launched as `serial` exited (and was reaped).
    pub fn exited(&mut self, serial: u64, info: ExitInfo, now: Instant) {
        let Some(p) = self.procs.remove(&serial) else {
            return;
        };
        let pid = p.pid;
        if self.by_pid.get(&pid) == Some(&serial) {
            self.by_pid.remove(&pid);
        }
        self.effects.push(Effect::Forget { serial });
        let code = classify(&p);
        let ran = now.saturating_duration_since(p.started);
        let details = ExitDetails {
            exit_code: info.exit_code,
            signal: info.signal_name(),
            core_dumped: info.core_dumped,
            likely_oom_kill: info.signal == Some(nix::sys::signal::Signal::SIGKILL as i32)
                && !info.killed_by_agent,
            run_millis: ran.as_millis() as u64,
            ready_millis: p
                .ready_at
                .map(|t| now.saturating_duration_since(t).as_millis() as u64),
            output_tail: if code == EventCode::ServerProcessEnded {
                Vec::new()
            } else {
                info.output_tail.clone()
            },
        };
        let message = match code {
            EventCode::ServerProcessEnded => format!("process ended ({})", info.describe()),
            EventCode::ServerProcessCrashed => format!("process crashed ({})", info.describe()),
            EventCode::ServerProcessProcessReadyTimeout => format!(
                "no ProcessReady within {}; killed ({})",
                humantime::format_duration(self.cfg.timeouts.process_ready.get()),
                info.describe()
            ),
            EventCode::ServerProcessProcessExitTimeout => format!(
                "did not exit within {} of ProcessEnding; killed ({})",
                humantime::format_duration(self.cfg.timeouts.process_exit.get()),
                info.describe()
            ),
            EventCode::ServerProcessTerminatedUnhealthy => {
                format!("unhealthy process ended ({})", info.describe())
            }
            _ => format!("process terminated by the agent ({})", info.describe()),
        };
        self.emit(
            Event::new(code, message)
                .process(&p.id, Some(pid))
                .exit(details),
        );
        let clean = code == EventCode::ServerProcessEnded;
        if let Some(gss_id) = &p.session {
            let reason = if clean {
                "process ended".to_string()
            } else {
                format!("process {} ({})", code.as_str(), info.describe())
            };
            self.end_session(gss_id, GssInput::ProcessExited { clean }, &reason);
        }
        let slot = p.slot;
        self.slots[slot].serial = None;
        // A process that ended before it ever became ready is failing too, however it ended:
        // without this, one that calls ProcessEnding at start-up would relaunch hot forever.
        let failure = (p.ready_at.is_none() && p.stop.is_none())
            || matches!(
                code,
                EventCode::ServerProcessCrashed
                    | EventCode::ServerProcessProcessReadyTimeout
                    | EventCode::ServerProcessTerminatedUnhealthy
                    | EventCode::ServerProcessProcessExitTimeout
            );
        if failure {
            self.after_failure(slot, now, ran);
        } else {
            self.slots[slot].failures = 0;
            self.schedule_launch(slot, now, Duration::ZERO);
        }
    }

    /// A health check of the process launched as `serial` finished.
    pub fn health_result(&mut self, serial: u64, healthy: bool, detail: &str, now: Instant) {
        let threshold = self.cfg.health_check.failure_threshold;
        let interval = self.cfg.health_check.interval.get();
        let Some(p) = self.procs.get_mut(&serial) else {
            return;
        };
        let pid = p.pid;
        p.health_in_flight = false;
        if p.phase != Phase::Active {
            return;
        }
        if healthy {
            p.health_failures = 0;
            p.health_checks_passed += 1;
            p.healthy = true;
        } else {
            p.health_failures += 1;
            tracing::debug!(
                process.pid = pid,
                health.failures = p.health_failures,
                health.detail = detail,
                "health check failed"
            );
        }
        if p.health_failures >= threshold {
            p.healthy = false;
            let id = p.id.clone();
            self.emit(
                Event::new(
                    EventCode::ServerProcessUnhealthy,
                    format!("{threshold} consecutive health checks failed (last: {detail})"),
                )
                .process(&id, Some(pid)),
            );
            self.terminate(serial, TerminateReason::Unhealthy, now);
        } else {
            self.timers.add(now + interval, Timer::HealthCheck { serial });
        }
    }

    /// OnStartGameServerSession to the process launched as `serial` returned; `Err` carries
    /// why it failed.
    pub fn start_session_result(
        &mut self,
        serial: u64,
        gss_id: &str,
        result: Result<(), String>,
        now: Instant,
    ) {
        let Err(why) = result else { return };
        let activating = self
            .sessions
            .get(gss_id)
            .is_some_and(|(_, s)| s.status == GssStatus::Activating);
        if activating {
            self.end_session(
                gss_id,
                GssInput::Fail,
                &format!("OnStartGameServerSession failed: {why}"),
            );
            if let Some(p) = self.procs.get_mut(&serial) {
                p.session = None;
            }
        }
        self.retire_pending(now);
    }

    /// Fires every due timer.
    pub fn tick(&mut self, now: Instant) {
        while let Some(timer) = self.timers.pop_due(now) {
            self.fire(timer, now);
        }
        self.retire_pending(now);
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
                if self
                    .procs
                    .get(&serial)
                    .is_some_and(|p| p.phase == Phase::Launching)
                {
                    self.stop(serial, StopReason::ReadyTimeout);
                }
            }
            Timer::HealthCheck { serial } => {
                if let Some(p) = self.procs.get_mut(&serial)
                    && p.phase == Phase::Active
                    && p.stop.is_none()
                    && !p.health_in_flight
                {
                    p.health_in_flight = true;
                    let grpc_port = p.grpc_port;
                    self.effects
                        .push(Effect::HealthCheck { serial, grpc_port });
                }
            }
            Timer::TerminateDeadline { serial } => {
                if let Some(Phase::Terminating(reason)) = self.procs.get(&serial).map(|p| p.phase)
                {
                    self.stop(serial, reason.stop_reason());
                }
            }
            Timer::ExitTimeout { serial } => {
                if self
                    .procs
                    .get(&serial)
                    .is_some_and(|p| p.phase == Phase::Ending)
                {
                    self.stop(serial, StopReason::ExitTimeout);
                }
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

    /// Begins the agent's shutdown: nothing new launches; every ready process is sent
    /// OnProcessTerminate with the shutdown deadline; the rest are stopped.
    pub fn begin_shutdown(&mut self, now: Instant) {
        if self.shutting_down {
            return;
        }
        self.shutting_down = true;
        self.emit(Event::new(
            EventCode::AgentStopping,
            format!("stopping {} server process(es)", self.procs.len()),
        ));
        for serial in self.serials() {
            match self.procs[&serial].phase {
                Phase::Active | Phase::Terminating(_) => {
                    self.terminate(serial, TerminateReason::Shutdown, now)
                }
                Phase::Launching => self.stop(serial, StopReason::Shutdown),
                Phase::Ending => {}
            }
        }
    }

    /// Stops every process now (second signal, or the shutdown deadline passed).
    pub fn stop_all(&mut self) {
        self.shutting_down = true;
        for serial in self.serials() {
            self.stop(serial, StopReason::Shutdown);
        }
    }

    /// Launch serials of the live processes.
    fn serials(&self) -> Vec<u64> {
        self.procs.keys().copied().collect()
    }

    /// Sends OnProcessTerminate (or stops at once a process without callbacks) and arms the
    /// protection deadline.
    fn terminate(&mut self, serial: u64, reason: TerminateReason, now: Instant) {
        let shutdown_grace = self.cfg.timeouts.shutdown.get();
        // The session's own policy (UpdateGameServerSession) wins over the fleet's.
        let live_policy = self.live_session_policy(serial);
        let protection = crate::config::Protection {
            policy: live_policy.unwrap_or(self.cfg.protection.policy),
            ..self.cfg.protection.clone()
        };
        let hosts_session = live_policy.is_some();
        let grace = match reason {
            TerminateReason::Shutdown => Some(shutdown_grace),
            // A hung unhealthy process must not hold its slot forever: FullProtection falls
            // back to the time limit.
            TerminateReason::Unhealthy => protection
                .grace(hosts_session)
                .or(Some(protection.time_limit)),
            TerminateReason::Requested | TerminateReason::Retired => {
                protection.grace(hosts_session)
            }
        };
        let Some(p) = self.procs.get_mut(&serial) else {
            return;
        };
        if p.phase == Phase::Ending {
            return; // It is leaving already; process-exit bounds it.
        }
        if p.phase == Phase::Launching || p.grpc_port == 0 {
            self.stop(serial, reason.stop_reason());
            return;
        }
        if let Phase::Terminating(old) = p.phase {
            // Already told; a shutdown only shortens the deadline.
            if old == reason || reason != TerminateReason::Shutdown {
                return;
            }
        }
        p.phase = Phase::Terminating(reason);
        p.told_to_terminate.get_or_insert(reason);
        let (grpc_port, pid) = (p.grpc_port, p.pid);
        let id = p.id.clone();
        let termination_time = grace
            .map(|g| unix_seconds(Some(SystemTime::now() + g)))
            .unwrap_or(0);
        p.deadline = grace.map(|g| now + g);
        if let Some(g) = grace {
            self.timers
                .add(now + g, Timer::TerminateDeadline { serial });
        }
        self.effects.push(Effect::Terminate {
            serial,
            grpc_port,
            termination_time,
        });
        let why = match reason {
            TerminateReason::Unhealthy => "unhealthy",
            TerminateReason::Requested => "requested",
            TerminateReason::Shutdown => "agent shutdown",
            TerminateReason::Retired => "retired by a runtime configuration update",
        };
        let deadline = grace
            .map(|g| format!("must end within {}", humantime::format_duration(g)))
            .unwrap_or_else(|| "no deadline (FullProtection)".into());
        self.emit(
            Event::new(
                EventCode::ServerProcessTerminating,
                format!("OnProcessTerminate sent ({why}); {deadline}"),
            )
            .process(&id, Some(pid)),
        );
    }

    /// The protection policy of the live session the process `serial` hosts, if it hosts one.
    fn live_session_policy(&self, serial: u64) -> Option<crate::config::ProtectionPolicy> {
        self.procs
            .get(&serial)
            .and_then(|p| p.session.as_ref())
            .and_then(|id| self.sessions.get(id))
            .filter(|(_, s)| !s.status.is_final())
            .map(|(_, s)| s.protection.unwrap_or(self.cfg.protection.policy))
    }

    /// Asks the actor to stop a process; the first reason given wins.
    fn stop(&mut self, serial: u64, reason: StopReason) {
        let grace = self.cfg.timeouts.stop_grace.get();
        if let Some(p) = self.procs.get_mut(&serial) {
            if p.stop.is_some() {
                return;
            }
            p.stop = Some(reason);
            p.healthy = false;
            self.effects.push(Effect::Stop { serial, grace });
        }
    }

    // ---- inputs from outside ------------------------------------------------------------------

    /// Handles a GSE SDK call from the process `pid`.
    pub fn sdk(&mut self, pid: u32, call: SdkCall, now: Instant) -> Result<SdkReply, FleetError> {
        let r = self.sdk_call(pid, call, now);
        self.retire_pending(now);
        r
    }

    fn sdk_call(&mut self, pid: u32, call: SdkCall, now: Instant) -> Result<SdkReply, FleetError> {
        let Some(serial) = self.serial_of(pid) else {
            return Err(FleetError::UnknownPid(pid));
        };
        match call {
            SdkCall::ProcessReady {
                client_port,
                grpc_port,
                log_paths,
            } => {
                let port = |v: i32, name: &'static str| {
                    u16::try_from(v)
                        .ok()
                        .filter(|p| *p != 0)
                        .ok_or(FleetError::Invalid {
                            param: name,
                            message: format!("{v} is not a port (1-65535)"),
                        })
                };
                let client_port = port(client_port, "clientPort")?;
                let grpc_port = port(grpc_port, "grpcPort")?;
                let interval = self.cfg.health_check.interval.get();
                let p = self.procs.get_mut(&serial).expect("by_pid names live processes");
                if p.phase != Phase::Launching {
                    return Err(FleetError::Denied(format!(
                        "ProcessReady was already called; the process is {}",
                        p.phase.as_str()
                    )));
                }
                if p.stop.is_some() {
                    return Err(FleetError::Denied(
                        "the process is being stopped (ProcessReady came too late)".into(),
                    ));
                }
                p.phase = Phase::Active;
                p.deadline = None;
                p.ready_at = Some(now);
                p.client_port = client_port;
                p.grpc_port = grpc_port;
                p.healthy = true;
                p.log_paths = log_paths;
                let id = p.id.clone();
                self.timers.add(now + interval, Timer::HealthCheck { serial });
                self.emit(
                    Event::new(
                        EventCode::ServerProcessReady,
                        format!("ready: clientPort {client_port}, grpcPort {grpc_port}"),
                    )
                    .process(&id, Some(pid)),
                );
                Ok(SdkReply::Done)
            }
            SdkCall::Activate {
                gss_id,
                max_players,
            } => {
                let s = self.session_of(pid, &gss_id)?;
                let to = s
                    .status
                    .next(GssInput::Activate)
                    .map_err(|e| FleetError::Denied(format!("{gss_id}: {e}")))?;
                if max_players < 0 {
                    return Err(FleetError::Invalid {
                        param: "maxPlayers",
                        message: format!("{max_players} is negative"),
                    });
                }
                let (_, s) = self.sessions.get_mut(&gss_id).expect("checked above");
                s.status = to;
                if max_players > 0 {
                    s.max_players = max_players;
                }
                let process_id = s.process_id.clone();
                self.emit(
                    Event::new(
                        EventCode::GameSessionActivated,
                        "game server session ACTIVE",
                    )
                    .session(&gss_id)
                    .process(&process_id, Some(pid)),
                );
                Ok(SdkReply::Done)
            }
            SdkCall::AcceptPlayer {
                gss_id,
                player_session_id,
            }
            | SdkCall::RemovePlayer {
                gss_id,
                player_session_id,
            } if !self.player_index.contains_key(&player_session_id) => {
                self.session_of(pid, &gss_id)?;
                Err(FleetError::NotFound {
                    kind: "player session",
                    id: player_session_id,
                })
            }
            SdkCall::AcceptPlayer {
                gss_id,
                player_session_id,
            } => {
                let s = self.session_of(pid, &gss_id)?;
                if s.status != GssStatus::Active {
                    return Err(FleetError::Denied(format!(
                        "game server session {gss_id} is {}, not ACTIVE",
                        s.status
                    )));
                }
                self.player_in_session(&gss_id, &player_session_id)?;
                match self.player_transition(&player_session_id, PlayerInput::Accept) {
                    Some(Ok(())) => Ok(SdkReply::Done),
                    Some(Err(from)) => Err(FleetError::Denied(format!(
                        "player session {player_session_id} is {from}, not RESERVED"
                    ))),
                    None => unreachable!("player_in_session checked it exists"),
                }
            }
            SdkCall::RemovePlayer {
                gss_id,
                player_session_id,
            } => {
                self.session_of(pid, &gss_id)?;
                self.player_in_session(&gss_id, &player_session_id)?;
                match self.player_transition(&player_session_id, PlayerInput::Remove) {
                    Some(Ok(())) => Ok(SdkReply::Done),
                    Some(Err(from)) => Err(FleetError::Denied(format!(
                        "player session {player_session_id} is {from}, not RESERVED or ACTIVE"
                    ))),
                    None => unreachable!("player_in_session checked it exists"),
                }
            }
            SdkCall::DescribePlayers(q) => {
                let (page, next) = self.describe_players(&q)?;
                Ok(SdkReply::Players(page, next))
            }
            SdkCall::UpdatePolicy { gss_id, policy } => {
                let policy = CreationPolicy::parse(&policy).ok_or_else(|| FleetError::Invalid {
                    param: "newPlayerSessionCreationPolicy",
                    message: format!("{policy:?} is not ACCEPT_ALL or DENY_ALL"),
                })?;
                let s = self.session_of(pid, &gss_id)?;
                if s.status.is_final() {
                    return Err(FleetError::Denied(format!(
                        "game server session {gss_id} is {}",
                        s.status
                    )));
                }
                if let Some((_, s)) = self.sessions.get_mut(&gss_id) {
                    s.policy = policy;
                }
                Ok(SdkReply::Done)
            }
            SdkCall::TerminateSession { gss_id } => {
                let s = self.session_of(pid, &gss_id)?;
                s.status
                    .next(GssInput::Terminate)
                    .map_err(|e| FleetError::Denied(format!("{gss_id}: {e}")))?;
                self.end_session(&gss_id, GssInput::Terminate, "terminated by the game");
                // A FullProtection process told to terminate may now be ended.
                if let Some(p) = self.procs.get_mut(&serial)
                    && matches!(p.phase, Phase::Terminating(_))
                {
                    let grace = self.cfg.protection.grace(false).unwrap_or_default();
                    p.deadline = Some(now + grace);
                    self.timers
                        .add(now + grace, Timer::TerminateDeadline { serial });
                }
                Ok(SdkReply::Done)
            }
            SdkCall::ProcessEnding => {
                let exit = self.cfg.timeouts.process_exit.get();
                let p = self.procs.get_mut(&serial).expect("by_pid names live processes");
                if p.phase == Phase::Ending {
                    return Err(FleetError::Denied(
                        "ProcessEnding was already called".into(),
                    ));
                }
                p.phase = Phase::Ending;
                p.deadline = Some(now + exit);
                let (id, session) = (p.id.clone(), p.session.clone());
                self.timers.add(now + exit, Timer::ExitTimeout { serial });
                if let Some(gss_id) = session {
                    self.end_session(&gss_id, GssInput::ProcessEnding, "its process is ending");
                }
                self.emit(
                    Event::new(
                        EventCode::ServerProcessEnding,
                        format!(
                            "ProcessEnding; must exit within {}",
                            humantime::format_duration(exit)
                        ),
                    )
                    .process(&id, Some(pid)),
                );
                Ok(SdkReply::Done)
            }
            SdkCall::ReportCustomData { current, max } => {
                if current < 0 || max < 0 || current > max {
                    return Err(FleetError::Invalid {
                        param: "currentCustomCount",
                        message: format!(
                            "need 0 <= currentCustomCount <= maxCustomCount, got {current} and {max}"
                        ),
                    });
                }
                let p = self.procs.get_mut(&serial).expect("by_pid names live processes");
                p.custom = (current, max);
                if let Some(gss_id) = p.session.clone()
                    && let Some((_, s)) = self.sessions.get_mut(&gss_id)
                {
                    s.current_custom_count = current;
                    s.max_custom_count = max;
                }
                Ok(SdkReply::Done)
            }
        }
    }

    /// Handles a control command.
    pub fn control(&mut self, cmd: Control, now: Instant) -> Result<ControlReply, FleetError> {
        let r = self.control_command(cmd, now);
        self.retire_pending(now);
        r
    }

    fn control_command(&mut self, cmd: Control, now: Instant) -> Result<ControlReply, FleetError> {
        match cmd {
            Control::CreateSession(req) => {
                req.check()?;
                Ok(ControlReply::Session(Box::new(
                    self.create_session(req, now)?,
                )))
            }
            Control::DescribeSessions(q) => self.describe_sessions(&q),
            Control::Join { gss_id, players } => {
                super::api::check_players(&players)?;
                Ok(ControlReply::Players(
                    self.join(&gss_id, players, now)?,
                    None,
                ))
            }

            Control::DescribePlayers(q) => {
                let (page, next) = self.describe_players(&q)?;
                Ok(ControlReply::Players(page, next))
            }
            Control::EndSessionAndProcess { gss_id } => {
                let s = self.find_session(&gss_id)?;
                if s.status.is_final() {
                    return Err(FleetError::Denied(format!(
                        "game server session {gss_id} is already {}",
                        s.status
                    )));
                }
                if let Some(serial) = self.serial_of(s.pid) {
                    self.terminate(serial, TerminateReason::Requested, now);
                }
                Ok(ControlReply::Done)
            }
            Control::DescribeProcesses => {
                let mut v: Vec<ProcessView> = self
                    .procs
                    .values()
                    .map(|p| ProcessView {
                        process_id: p.id.clone(),
                        pid: p.pid,
                        launch_path: self.spec(p.slot).launch_path.clone(),
                        status: p.phase.as_str(),
                        healthy: p.healthy,
                        health_checks_passed: p.health_checks_passed,
                        client_port: p.client_port,
                        grpc_port: p.grpc_port,
                        game_server_session_id: p.session.clone(),
                        restarts: self.slots[p.slot].generation - 1,
                        log_paths: p.log_paths.clone(),
                    })
                    .collect();
                v.sort_by(|a, b| a.process_id.cmp(&b.process_id));
                Ok(ControlReply::Processes(v))
            }
            Control::DescribeInstance => Ok(ControlReply::Instance(self.counters())),
            Control::UpdateSession(u) => {
                Ok(ControlReply::Session(Box::new(self.update_session(u)?)))
            }
            Control::UpdateRuntime(runtime) => {
                if self.shutting_down {
                    return Err(FleetError::Denied("the agent is shutting down".into()));
                }
                self.update_runtime(*runtime, now);
                Ok(ControlReply::Done)
            }
            Control::Redeploy => {
                if self.shutting_down {
                    return Err(FleetError::Denied("the agent is shutting down".into()));
                }
                let current = self.current_runtime();
                self.update_runtime(current, now);
                Ok(ControlReply::Done)
            }
            Control::SetReserved(on) => {
                if self.reserved != on {
                    self.reserved = on;
                    self.emit(Event::new(
                        if on {
                            EventCode::InstanceReserved
                        } else {
                            EventCode::InstanceUnreserved
                        },
                        if on {
                            "reserved: no new game server sessions are placed here"
                        } else {
                            "no longer reserved"
                        },
                    ));
                }
                Ok(ControlReply::Done)
            }
            Control::SetDraining(on) => {
                if self.shutting_down {
                    return Err(FleetError::Denied("the agent is shutting down".into()));
                }
                if self.draining != on {
                    self.draining = on;
                    if on {
                        self.drain(now);
                    } else {
                        self.undrain();
                    }
                }
                Ok(ControlReply::Done)
            }
        }
    }

    /// Scale-in under the protection policy, as GSE did it: no new sessions, every process is
    /// told to terminate (those hosting a session get the protection deadline), nothing is
    /// relaunched.
    fn drain(&mut self, now: Instant) {
        self.emit(Event::new(
            EventCode::InstanceDraining,
            format!(
                "draining {} process(es) under {}",
                self.procs.len(),
                self.cfg.protection.policy.as_str()
            ),
        ));
        for serial in self.serials() {
            self.terminate(serial, TerminateReason::Requested, now);
        }
    }

    /// Ends a drain: every current slot without a process launches again.
    fn undrain(&mut self) {
        self.emit(Event::new(
            EventCode::InstanceUndrained,
            "no longer draining",
        ));
        for slot in 0..self.slots.len() {
            let s = &self.slots[slot];
            if !s.retiring && s.serial.is_none() && s.launch == LaunchState::Idle {
                self.launch(slot);
            }
        }
    }

    /// DescribeInstancesExtend's counters.
    pub fn counters(&self) -> InstanceCounters {
        let mut c = InstanceCounters {
            max_game_session_cnt: self.slots.iter().filter(|s| !s.retiring).count() as u32,
            draining: self.draining,
            reserved: self.reserved,
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

/// The GSE event code of an exit: the agent's reason for stopping it wins; an unhealthy
/// process stays TERMINATED_UNHEALTHY however it ends; then ProcessEnding or a requested
/// termination make a normal end; anything else is a crash.
fn classify(p: &Proc) -> EventCode {
    let unhealthy = p.told_to_terminate == Some(TerminateReason::Unhealthy);
    match (p.stop, p.phase) {
        (Some(StopReason::ReadyTimeout), _) => EventCode::ServerProcessProcessReadyTimeout,
        (Some(StopReason::ExitTimeout), _) => EventCode::ServerProcessProcessExitTimeout,
        (Some(StopReason::Unhealthy), _) => EventCode::ServerProcessTerminatedUnhealthy,
        _ if unhealthy => EventCode::ServerProcessTerminatedUnhealthy,
        (Some(StopReason::Forced), _) => EventCode::ServerProcessForceTerminated,
        (Some(StopReason::Shutdown), Phase::Ending) => EventCode::ServerProcessEnded,
        (Some(StopReason::Shutdown), _) => EventCode::ServerProcessForceTerminated,
        (None, Phase::Ending | Phase::Terminating(_)) => EventCode::ServerProcessEnded,
        (None, Phase::Launching | Phase::Active) => EventCode::ServerProcessCrashed,
    }
}

mod persist;
mod sessions;
#[cfg(test)]
mod tests;
