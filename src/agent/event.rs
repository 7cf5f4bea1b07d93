//! The one event bus: every lifecycle change becomes one [`Event`].
//!
//! The bus logs each event with structured fields, keeps the most recent ones for the local
//! control API (`DescribeFleetEvents`), and broadcasts them to any other reader (the upstream
//! relay, metrics). Nothing emits lifecycle news through another channel.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde::Serialize;
use tokio::sync::broadcast;

/// What happened. GSE's own codes (gse-protocol.md §3.8) keep their names; the agent adds codes
/// for the transitions GSE did not publish, so that every change is one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventCode {
    /// GSE: the LaunchPath does not exist or is not executable.
    ServerProcessInvalidPath,
    /// GSE: the process could not be started for another reason.
    ServerProcessPullFailed,
    /// GSE: no ProcessReady within `timeouts.process-ready`.
    ServerProcessProcessReadyTimeout,
    /// GSE: the process exited without being asked to.
    ServerProcessCrashed,
    /// GSE: the process failed its health checks and was ended.
    ServerProcessTerminatedUnhealthy,
    /// GSE: the agent killed the process (protection deadline, command, activation timeout).
    ServerProcessForceTerminated,
    /// GSE: no exit within `timeouts.process-exit` after ProcessEnding.
    ServerProcessProcessExitTimeout,
    /// GSE: a game server session was not activated in time.
    GameSessionActivationTimeout,
    /// Agent: a process was started.
    ServerProcessStarted,
    /// Agent: a process that outlived an agent restart is supervised again.
    ServerProcessAdopted,
    /// Agent: a process called ProcessReady.
    ServerProcessReady,
    /// Agent: a process reached the health-check failure threshold.
    ServerProcessUnhealthy,
    /// Agent: a process was sent OnProcessTerminate.
    ServerProcessTerminating,
    /// Agent: a process called ProcessEnding.
    ServerProcessEnding,
    /// Agent: a process ended normally (after ProcessEnding or OnProcessTerminate).
    ServerProcessEnded,
    /// Agent: one ServerProcesses entry crashed too often and is paused (one event per trip).
    ServerProcessCrashLoop,
    /// Agent: a paused entry resumes launching.
    ServerProcessCrashLoopEnded,
    /// Agent: a game server session was created (ACTIVATING).
    GameSessionCreated,
    /// Agent: a game server session became ACTIVE.
    GameSessionActivated,
    /// Agent: the process of a game server session is ending (TERMINATING).
    GameSessionTerminating,
    /// Agent: a game server session ended (TERMINATED).
    GameSessionTerminated,
    /// Agent: a game server session failed (ERROR).
    GameSessionError,
    /// Agent: a player session was reserved.
    PlayerSessionReserved,
    /// Agent: a player session was accepted (ACTIVE).
    PlayerSessionActive,
    /// Agent: a player session ended (COMPLETED).
    PlayerSessionCompleted,
    /// Agent: a reserved player session was not accepted in time (TIMEDOUT).
    PlayerSessionTimedOut,
    /// Agent: the agent started supervising.
    AgentStarted,
    /// Agent: the agent is shutting down.
    AgentStopping,
    /// Agent: the runtime configuration was replaced.
    RuntimeConfigurationUpdated,
    /// Agent: the host was reserved (no new sessions).
    InstanceReserved,
    /// Agent: the host takes new sessions again.
    InstanceUnreserved,
    /// Agent: the host was told to drain.
    InstanceDraining,
    /// Agent: the host takes sessions again.
    InstanceUndrained,
    /// Agent: the upstream outbox passed its bound (the control plane is away too long).
    UpstreamOutboxFull,
    /// Agent: the outbox file was corrupt; it was kept aside and a new one (a new epoch)
    /// started.
    UpstreamOutboxCorrupt,
    /// Agent: events were dropped while the disk refused writes (the memory bound was passed).
    UpstreamEventsLost,
    /// Agent: the connection to the control plane was established.
    UpstreamConnected,
    /// Agent: the connection to the control plane was lost or refused.
    UpstreamDisconnected,
    /// Crash rehearsal: a signal was sent to a process.
    ChaosProcessKilled,
    /// Crash rehearsal: a process group was stopped (SIGSTOP) for a while.
    ChaosProcessHung,
    /// Crash rehearsal: a process's next health checks fail.
    ChaosHealthChecksFailing,
    /// Crash rehearsal: the next OnStartGameServerSession calls are delayed.
    ChaosSessionStartDelayed,
    /// Crash rehearsal: the next OnStartGameServerSession calls fail.
    ChaosSessionStartFailing,
    /// Crash rehearsal: the link to the control plane was cut for a while.
    ChaosUpstreamCut,
}

/// The one list of wire names: `as_str` (a match, so a missing code does not compile) and
/// serialization both come from it.
macro_rules! names {
    ($($v:ident => $s:literal),* $(,)?) => {
        impl EventCode {
            /// The wire name, e.g. `SERVER_PROCESS_CRASHED`.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$v => $s,)*
                }
            }
        }

        #[cfg(test)]
        const NAMES: &[(EventCode, &str)] = &[$((EventCode::$v, $s)),*];
    };
}

impl Serialize for EventCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

names! {
    ServerProcessInvalidPath => "SERVER_PROCESS_INVALID_PATH",
    ServerProcessPullFailed => "SERVER_PROCESS_PULL_FAILED",
    ServerProcessProcessReadyTimeout => "SERVER_PROCESS_PROCESS_READY_TIMEOUT",
    ServerProcessCrashed => "SERVER_PROCESS_CRASHED",
    ServerProcessTerminatedUnhealthy => "SERVER_PROCESS_TERMINATED_UNHEALTHY",
    ServerProcessForceTerminated => "SERVER_PROCESS_FORCE_TERMINATED",
    ServerProcessProcessExitTimeout => "SERVER_PROCESS_PROCESS_EXIT_TIMEOUT",
    GameSessionActivationTimeout => "GAME_SESSION_ACTIVATION_TIMEOUT",
    ServerProcessStarted => "SERVER_PROCESS_STARTED",
    ServerProcessAdopted => "SERVER_PROCESS_ADOPTED",
    ServerProcessReady => "SERVER_PROCESS_READY",
    ServerProcessUnhealthy => "SERVER_PROCESS_UNHEALTHY",
    ServerProcessTerminating => "SERVER_PROCESS_TERMINATING",
    ServerProcessEnding => "SERVER_PROCESS_ENDING",
    ServerProcessEnded => "SERVER_PROCESS_ENDED",
    ServerProcessCrashLoop => "SERVER_PROCESS_CRASH_LOOP",
    ServerProcessCrashLoopEnded => "SERVER_PROCESS_CRASH_LOOP_ENDED",
    GameSessionCreated => "GAME_SESSION_CREATED",
    GameSessionActivated => "GAME_SESSION_ACTIVATED",
    GameSessionTerminating => "GAME_SESSION_TERMINATING",
    GameSessionTerminated => "GAME_SESSION_TERMINATED",
    GameSessionError => "GAME_SESSION_ERROR",
    PlayerSessionReserved => "PLAYER_SESSION_RESERVED",
    PlayerSessionActive => "PLAYER_SESSION_ACTIVE",
    PlayerSessionCompleted => "PLAYER_SESSION_COMPLETED",
    PlayerSessionTimedOut => "PLAYER_SESSION_TIMED_OUT",
    AgentStarted => "AGENT_STARTED",
    AgentStopping => "AGENT_STOPPING",
    RuntimeConfigurationUpdated => "RUNTIME_CONFIGURATION_UPDATED",
    InstanceReserved => "INSTANCE_RESERVED",
    InstanceUnreserved => "INSTANCE_UNRESERVED",
    InstanceDraining => "INSTANCE_DRAINING",
    InstanceUndrained => "INSTANCE_UNDRAINED",
    UpstreamOutboxFull => "UPSTREAM_OUTBOX_FULL",
    UpstreamOutboxCorrupt => "UPSTREAM_OUTBOX_CORRUPT",
    UpstreamEventsLost => "UPSTREAM_EVENTS_LOST",
    UpstreamConnected => "UPSTREAM_CONNECTED",
    UpstreamDisconnected => "UPSTREAM_DISCONNECTED",
    ChaosProcessKilled => "CHAOS_PROCESS_KILLED",
    ChaosProcessHung => "CHAOS_PROCESS_HUNG",
    ChaosHealthChecksFailing => "CHAOS_HEALTH_CHECKS_FAILING",
    ChaosSessionStartDelayed => "CHAOS_SESSION_START_DELAYED",
    ChaosSessionStartFailing => "CHAOS_SESSION_START_FAILING",
    ChaosUpstreamCut => "CHAOS_UPSTREAM_CUT",
}

/// How a process ended, as far as the OS says.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ExitDetails {
    /// Exit code, when it exited.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Signal name (`SIGSEGV`), when a signal ended it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
    /// The kernel wrote a core dump.
    pub core_dumped: bool,
    /// SIGKILL not sent by the agent: most likely the kernel's OOM killer.
    pub likely_oom_kill: bool,
    /// Milliseconds the process ran.
    pub run_millis: u64,
    /// Milliseconds since ProcessReady, if it was ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ready_millis: Option<u64>,
    /// The last lines of stdout and stderr.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub output_tail: Vec<String>,
    /// The game's output file to open for more: the one the last line came from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_file: Option<String>,
}

/// One lifecycle change.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Event {
    /// Monotonic: from 1 on a fresh data-dir, and continuing above the last saved reservation
    /// after a restart (see `fleet::actor::EVENT_SEQUENCE_RESERVE`).
    pub sequence: u64,
    /// Wall-clock time of the change.
    #[serde(serialize_with = "serialize_time")]
    pub event_time: SystemTime,
    /// What happened.
    pub event_code: EventCode,
    /// Human-readable summary.
    pub message: String,
    /// The agent's id of the game process, e.g. `proc-0-1-3`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process_id: Option<String>,
    /// Its OS pid.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// The game server session concerned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub game_server_session_id: Option<String>,
    /// The player session concerned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub player_session_id: Option<String>,
    /// How the process ended, for exit events.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit: Option<ExitDetails>,
}

impl Event {
    /// A new event with only a code and message; add ids with the builder methods.
    pub fn new(code: EventCode, message: impl Into<String>) -> Self {
        Self {
            sequence: 0,
            event_time: SystemTime::now(),
            event_code: code,
            message: message.into(),
            process_id: None,
            pid: None,
            game_server_session_id: None,
            player_session_id: None,
            exit: None,
        }
    }

    /// Names the process.
    pub fn process(mut self, process_id: &str, pid: Option<u32>) -> Self {
        self.process_id = Some(process_id.to_string());
        self.pid = pid;
        self
    }

    /// Names the game server session.
    pub fn session(mut self, id: &str) -> Self {
        self.game_server_session_id = Some(id.to_string());
        self
    }

    /// Names the player session.
    pub fn player(mut self, id: &str) -> Self {
        self.player_session_id = Some(id.to_string());
        self
    }

    /// Attaches exit details.
    pub fn exit(mut self, exit: ExitDetails) -> Self {
        self.exit = Some(exit);
        self
    }
}

/// A change to the host's state that no event reports: UpdateGameServerSession, a creation
/// policy or custom counts set by the game, a process that passes its health checks again.
/// Not recorded, not stored, not relayed as an event: only broadcast to readers that mirror
/// the state (the relay's snapshots), so that they learn of every change, evented or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A game server session (or one of its player sessions) changed.
    Session(String),
    /// The process list changed.
    Processes,
}

fn serialize_time<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&crate::api::time::format_time_millis(*t))
}

struct Recent {
    next_sequence: u64,
    events: VecDeque<Event>,
}

/// The bus. Cheap to clone; all clones share one sequence and one history.
#[derive(Clone)]
pub struct EventBus {
    recent: Arc<Mutex<Recent>>,
    capacity: usize,
    tx: broadcast::Sender<Event>,
    /// Changes no event reports ([`Change`]).
    changes: broadcast::Sender<Change>,
    /// The durable outbox's queue: unlike broadcast readers, it never lags or drops.
    sink: Option<tokio::sync::mpsc::UnboundedSender<Event>>,
}

impl EventBus {
    /// A bus that remembers the last `capacity` events.
    pub fn new(capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(1024);
        let (changes, _) = broadcast::channel(1024);
        Self {
            recent: Arc::new(Mutex::new(Recent {
                next_sequence: 1,
                events: VecDeque::with_capacity(capacity.min(1024)),
            })),
            capacity,
            tx,
            changes,
            sink: None,
        }
    }

    /// A bus that also hands every event, in order, to `sink` (the durable outbox).
    pub fn with_sink(capacity: usize, sink: tokio::sync::mpsc::UnboundedSender<Event>) -> Self {
        Self {
            sink: Some(sink),
            ..Self::new(capacity)
        }
    }

    /// The same bus (history, sequence, subscribers) without the durable sink: for the outbox
    /// writer itself, which stores what it emits directly.
    pub fn without_sink(&self) -> Self {
        Self {
            sink: None,
            ..self.clone()
        }
    }

    /// Stamps, logs, records and broadcasts one event.
    pub fn emit(&self, mut event: Event) {
        {
            let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
            event.sequence = recent.next_sequence;
            recent.next_sequence += 1;
            if recent.events.len() == self.capacity {
                recent.events.pop_front();
            }
            recent.events.push_back(event.clone());
            // Under the lock, so the sink sees sequence order.
            if let Some(sink) = &self.sink {
                let _ = sink.send(event.clone());
            }
        }
        log(&event);
        // No receiver is fine: nobody else is listening yet.
        let _ = self.tx.send(event);
    }

    /// The sequence the next event gets.
    pub fn next_sequence(&self) -> u64 {
        self.recent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .next_sequence
    }

    /// Continues numbering at `next` (after a restart; never goes back).
    pub fn continue_from(&self, next: u64) {
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        recent.next_sequence = recent.next_sequence.max(next);
    }

    /// Subscribes to events emitted from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }

    /// Broadcasts a change that no event reports (see [`Change`]).
    pub fn changed(&self, change: Change) {
        // No receiver is fine: nobody mirrors the state yet.
        let _ = self.changes.send(change);
    }

    /// Subscribes to the changes no event reports, from now on.
    pub fn subscribe_changes(&self) -> broadcast::Receiver<Change> {
        self.changes.subscribe()
    }

    /// Recent events, oldest first, skipping `offset` and returning at most `limit`, plus the
    /// total number held.
    pub fn recent(&self, offset: usize, limit: usize) -> (Vec<Event>, usize) {
        let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        let total = recent.events.len();
        let page = recent
            .events
            .iter()
            .skip(offset)
            .take(limit)
            .cloned()
            .collect();
        (page, total)
    }
}

/// The log line's message: the event's, and for a process that did not end cleanly the last
/// line of its output and the file to open, so the line alone says what to look at
/// (`journalctl` shows only the message unless asked for fields).
fn log_message(e: &Event) -> std::borrow::Cow<'_, str> {
    let Some(exit) = &e.exit else {
        return e.message.as_str().into();
    };
    if e.event_code == EventCode::ServerProcessEnded {
        return e.message.as_str().into();
    }
    let mut text = e.message.clone();
    match exit.output_tail.last() {
        Some(last) => text.push_str(&format!(
            "; last output: {:?}",
            crate::common::telemetry::clip(last)
        )),
        None => text.push_str("; no output"),
    }
    if let Some(file) = &exit.log_file {
        text.push_str(&format!("; log: {file}"));
    }
    text.into()
}

fn log(e: &Event) {
    let code = e.event_code.as_str();
    let exit_code = e.exit.as_ref().and_then(|x| x.exit_code);
    let signal = e.exit.as_ref().and_then(|x| x.signal.as_deref());
    let log_file = e.exit.as_ref().and_then(|x| x.log_file.as_deref());
    let message = log_message(e);
    let level_warn = matches!(
        e.event_code,
        EventCode::ServerProcessCrashed
            | EventCode::ServerProcessInvalidPath
            | EventCode::ServerProcessPullFailed
            | EventCode::ServerProcessProcessReadyTimeout
            | EventCode::ServerProcessTerminatedUnhealthy
            | EventCode::ServerProcessForceTerminated
            | EventCode::ServerProcessProcessExitTimeout
            | EventCode::ServerProcessUnhealthy
            | EventCode::GameSessionActivationTimeout
            | EventCode::GameSessionError
            | EventCode::ServerProcessCrashLoop
            | EventCode::UpstreamOutboxFull
            | EventCode::UpstreamOutboxCorrupt
            | EventCode::UpstreamEventsLost
            | EventCode::UpstreamDisconnected
    );
    macro_rules! emit {
        ($lvl:ident) => {
            tracing::$lvl!(
                event.code = code,
                event.seq = e.sequence,
                process.id = e.process_id.as_deref(),
                process.pid = e.pid,
                gss.id = e.game_server_session_id.as_deref(),
                psess.id = e.player_session_id.as_deref(),
                exit.code = exit_code,
                exit.signal = signal,
                output.path = log_file,
                "{}",
                message
            )
        };
    }
    if level_warn {
        emit!(warn);
    } else {
        emit!(info);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exit_event(code: EventCode, tail: &[&str]) -> Event {
        Event::new(code, "process crashed (exit code 2)").exit(ExitDetails {
            exit_code: Some(2),
            signal: None,
            core_dumped: false,
            likely_oom_kill: false,
            run_millis: 5,
            ready_millis: None,
            output_tail: tail.iter().map(|l| l.to_string()).collect(),
            log_file: Some("/data/logs/proc-0-1-1.stderr.log".into()),
        })
    }

    #[test]
    fn a_crash_line_names_the_exit_the_last_output_line_and_the_log_file() {
        let e = exit_event(
            EventCode::ServerProcessCrashed,
            &["loading", "panic: \"boom\""],
        );
        assert_eq!(
            log_message(&e),
            r#"process crashed (exit code 2); last output: "panic: \"boom\""; log: /data/logs/proc-0-1-1.stderr.log"#
        );
        let silent = exit_event(EventCode::ServerProcessCrashed, &[]);
        assert_eq!(
            log_message(&silent),
            "process crashed (exit code 2); no output; log: /data/logs/proc-0-1-1.stderr.log"
        );
        let long = "x".repeat(10_000);
        let e = exit_event(EventCode::ServerProcessCrashed, &[&long]);
        assert!(log_message(&e).len() < 400, "a game's long line is cut");
    }

    #[test]
    fn clean_ends_and_other_events_keep_their_message() {
        let ended = exit_event(EventCode::ServerProcessEnded, &["bye"]);
        assert_eq!(log_message(&ended), "process crashed (exit code 2)");
        let started = Event::new(EventCode::AgentStarted, "supervising 2");
        assert_eq!(log_message(&started), "supervising 2");
    }

    #[test]
    fn names_are_screaming_snake_case_and_serialized_as_written() {
        for (code, name) in NAMES {
            assert_eq!(serde_json::to_value(code).unwrap(), *name);
            assert!(
                name.chars().all(|c| c.is_ascii_uppercase() || c == '_'),
                "{name}"
            );
            // The name is the variant's name in SCREAMING_SNAKE_CASE.
            let variant = format!("{code:?}");
            let mut snake = String::new();
            for (i, c) in variant.chars().enumerate() {
                if c.is_ascii_uppercase() && i > 0 {
                    snake.push('_');
                }
                snake.push(c.to_ascii_uppercase());
            }
            assert_eq!(snake, *name);
        }
    }

    #[test]
    fn bus_numbers_and_bounds_history() {
        let bus = EventBus::new(2);
        let mut rx = bus.subscribe();
        for _ in 0..3 {
            bus.emit(Event::new(EventCode::AgentStarted, "x"));
        }
        let (events, total) = bus.recent(0, 10);
        assert_eq!(total, 2);
        assert_eq!(
            events.iter().map(|e| e.sequence).collect::<Vec<_>>(),
            [2, 3]
        );
        assert_eq!(rx.try_recv().unwrap().sequence, 1);
    }
}
