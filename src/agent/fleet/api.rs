//! The fleet's inputs and outputs: the typed calls and commands it accepts, the effects it
//! asks the actor to perform, and its views and errors.

use std::time::Duration;

use crate::agent::event::{Change, Event};
use crate::agent::session::{GameSession, GssStatus, PlayerSession, PlayerStatus};
use crate::api::sessions::{NewPlayer, NewSession, SessionUpdate};
use crate::proto;

mod fault;
pub use fault::*;

/// Something the actor must do.
#[derive(Debug, Clone)]
pub enum Effect {
    /// Start a process for `slot`; answer with [`crate::agent::fleet::Fleet::spawned`] or [`crate::agent::fleet::Fleet::spawn_failed`].
    Launch {
        /// Slot index.
        slot: usize,
        /// The launch's serial: the key of the process in every later effect and report.
        serial: u64,
        /// The new process's agent id.
        process_id: String,
        /// An old process of the same slot whose log files are now removed (the last
        /// [`crate::agent::fleet::state::LOG_GENERATIONS_KEPT`] launches of a slot keep theirs).
        retire_logs_of: Option<String>,
    },
    /// SIGTERM the process group, SIGKILL it after `grace`.
    Stop {
        /// The process's launch serial.
        serial: u64,
        /// Time between SIGTERM and SIGKILL.
        grace: Duration,
    },
    /// Call OnHealthCheck; answer with [`crate::agent::fleet::Fleet::health_result`].
    HealthCheck {
        /// The process's launch serial.
        serial: u64,
        /// Its callback port.
        grpc_port: u16,
    },
    /// Call OnStartGameServerSession; answer with [`crate::agent::fleet::Fleet::start_session_result`].
    StartSession {
        /// The process's launch serial.
        serial: u64,
        /// Its callback port.
        grpc_port: u16,
        /// The session.
        session: proto::GameServerSession,
        /// A fault crash rehearsal armed for this call ([`Fault::SessionStart`]).
        fault: Option<StartFault>,
    },
    /// Call OnProcessTerminate.
    Terminate {
        /// The process's launch serial.
        serial: u64,
        /// Its callback port.
        grpc_port: u16,
        /// Unix seconds; 0 = no deadline.
        termination_time: i64,
    },
    /// Send a signal to the process alone (`group` false) or to its whole group (crash
    /// rehearsal).
    Signal {
        /// The process's launch serial.
        serial: u64,
        /// The signal.
        signal: nix::sys::signal::Signal,
        /// To the whole process group.
        group: bool,
    },
    /// Forget the callback client of an exited process.
    Forget {
        /// The process's launch serial.
        serial: u64,
    },
    /// Archive what an ended process named in logPathsToUpload, with its output (off the
    /// actor: [`crate::agent::logarchive`]).
    ArchiveLogs {
        /// The process's launch serial (the actor adds the build it ran in).
        serial: u64,
        /// What to archive.
        job: Box<crate::agent::logarchive::Job>,
    },
    /// Publish on the event bus.
    Emit(Box<Event>),
    /// Tell the readers that mirror the state of a change no event reports.
    Changed(Change),
}

/// Why the agent stopped a process; decides the exit's event code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum StopReason {
    /// No ProcessReady in time.
    ReadyTimeout,
    /// No exit in time after ProcessEnding.
    ExitTimeout,
    /// Failed health checks; deadline after OnProcessTerminate passed.
    Unhealthy,
    /// Killed on request, at a protection deadline, or after an activation timeout.
    Forced,
    /// The agent is shutting down.
    Shutdown,
}

/// A read-only view of one process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessView {
    /// Agent id.
    pub process_id: String,
    /// OS pid.
    pub pid: u32,
    /// LaunchPath as configured.
    pub launch_path: String,
    /// LAUNCHING, ACTIVE, TERMINATING or ENDING.
    pub status: &'static str,
    /// Passing health checks.
    pub healthy: bool,
    /// Health checks answered healthy so far.
    pub health_checks_passed: u64,
    /// clientPort from ProcessReady (0 before).
    pub client_port: u16,
    /// grpcPort from ProcessReady (0 before).
    pub grpc_port: u16,
    /// The session it hosts.
    pub game_server_session_id: Option<String>,
    /// Times its slot was launched before this process.
    pub restarts: u64,
    /// logPathsToUpload from ProcessReady.
    pub log_paths: Vec<String>,
    /// The number of its ServerProcesses entry ([`EntryView::number`]).
    pub entry: usize,
    /// When it was started (wall clock).
    pub started_at: std::time::SystemTime,
    /// Players of the session it hosts (RESERVED or ACTIVE; 0 without a session).
    pub current_players: i32,
    /// How the previous process of its slot ended (`None`: this is the slot's first, or the
    /// agent restarted since).
    pub last_exit: Option<LastExit>,
}

/// How a slot's last process ended, or why its last launch failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastExit {
    /// The process that ended (or could not start).
    pub process_id: String,
    /// The exit's GSE event code (e.g. `SERVER_PROCESS_CRASHED`).
    pub event_code: &'static str,
    /// What happened: the exit (code or signal) and the last line of output, or the launch
    /// error.
    pub reason: String,
    /// When (wall clock).
    pub at: std::time::SystemTime,
}

/// One ServerProcesses entry: what should run, what runs, and why not (agent extension).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryView {
    /// Its number in process ids (`proc-NUMBER-…`), never reused.
    pub number: usize,
    /// LaunchPath as written.
    pub launch_path: String,
    /// Parameters as written.
    pub parameters: String,
    /// Processes it should run now (its ConcurrentExecutions; 0 once retired, draining or
    /// shutting down).
    pub desired: u32,
    /// Its live processes (any phase).
    pub running: u32,
    /// Launches that failed (launch path missing or not executable, or the spawn failed)
    /// since the agent started.
    pub launch_failures: u64,
    /// The error of its last failed launch, until a launch succeeds.
    pub last_launch_error: Option<String>,
    /// While its launches are paused after a crash loop: when they resume (wall clock).
    pub paused_until: Option<std::time::SystemTime>,
    /// The latest exit (or failed launch) of any of its slots.
    pub last_exit: Option<LastExit>,
}

/// The counters of GSE's DescribeInstancesExtend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct InstanceCounters {
    /// Ready processes passing health checks.
    pub healthy_process_cnt: u32,
    /// Ready processes.
    pub active_process_cnt: u32,
    /// Sessions ACTIVATING or ACTIVE.
    pub game_session_cnt: u32,
    /// Processes configured (one session each).
    pub max_game_session_cnt: u32,
    /// RESERVED or ACTIVE player sessions.
    pub player_session_cnt: u32,
    /// Sum of the maxima of live sessions.
    pub max_player_session_cnt: u32,
    /// The host is being drained (scale-in).
    pub draining: bool,
    /// The host takes no new sessions.
    pub reserved: bool,
    /// SetServerWeight's weight (1–10; 0 until set): a control plane's placement preference.
    pub weight: u8,
    /// Live processes in any phase (launching and ending ones too).
    pub process_cnt: u32,
    /// Processes that should run now: the runtime configuration's, 0 while draining or
    /// shutting down.
    pub desired_process_cnt: u32,
    /// Launches that failed since the agent started.
    pub launch_failure_cnt: u64,
    /// Entries whose launches are paused after a crash loop.
    pub paused_entry_cnt: u32,
}

/// A call on `GseGrpcSdkService`, by the process with the metadata pid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SdkCall {
    /// ProcessReady.
    ProcessReady {
        /// clientPort.
        client_port: i32,
        /// grpcPort.
        grpc_port: i32,
        /// logPathsToUpload.
        log_paths: Vec<String>,
    },
    /// ActivateGameServerSession.
    Activate {
        /// Session.
        gss_id: String,
        /// maxPlayers (0 keeps the session's maximum).
        max_players: i32,
    },
    /// AcceptPlayerSession.
    AcceptPlayer {
        /// Session.
        gss_id: String,
        /// Player session.
        player_session_id: String,
    },
    /// RemovePlayerSession.
    RemovePlayer {
        /// Session.
        gss_id: String,
        /// Player session.
        player_session_id: String,
    },
    /// DescribePlayerSessions.
    DescribePlayers(PlayerQuery),
    /// UpdatePlayerSessionCreationPolicy.
    UpdatePolicy {
        /// Session.
        gss_id: String,
        /// ACCEPT_ALL or DENY_ALL.
        policy: String,
    },
    /// TerminateGameServerSession.
    TerminateSession {
        /// Session.
        gss_id: String,
    },
    /// ProcessEnding.
    ProcessEnding,
    /// ReportCustomData.
    ReportCustomData {
        /// currentCustomCount.
        current: i32,
        /// maxCustomCount.
        max: i32,
    },
}

impl SdkCall {
    /// Only reads the fleet (nothing to save afterwards).
    pub fn is_query(&self) -> bool {
        matches!(self, Self::DescribePlayers(_))
    }

    /// A lifecycle change a restarted agent must know about (ProcessReady, an activation, a
    /// player accepted or removed, a session ended, ProcessEnding, a creation policy): it is
    /// answered only once saved. Custom counts and listings are answered at once.
    pub fn answered_when_saved(&self) -> bool {
        !self.is_query() && !matches!(self, Self::ReportCustomData { .. })
    }
}

/// A successful SDK answer.
#[derive(Debug, Clone)]
pub enum SdkReply {
    /// Plain success.
    Done,
    /// DescribePlayerSessions' page.
    Players(Vec<PlayerSession>, Option<String>),
}

/// Filters and paging of a player-session listing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlayerQuery {
    /// Only this session's players.
    pub gss_id: Option<String>,
    /// Only this player.
    pub player_id: Option<String>,
    /// Only this player session.
    pub player_session_id: Option<String>,
    /// Only this status.
    pub status: Option<PlayerStatus>,
    /// Start at this token (from a previous page).
    pub next_token: Option<String>,
    /// Page size.
    pub limit: usize,
}

/// Filters and paging of a game-server-session listing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionQuery {
    /// Only this session.
    pub gss_id: Option<String>,
    /// Only this status.
    pub status: Option<GssStatus>,
    /// Start at this token.
    pub next_token: Option<String>,
    /// Page size.
    pub limit: usize,
}

/// Which sessions [`Control::DescribeHostState`] includes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostStateScope {
    /// Every session the fleet holds, in every status, oldest first.
    All,
    /// These sessions, in this order (those the fleet no longer holds are left out).
    Sessions(Vec<String>),
}

/// One game server session with every player session it holds.
#[derive(Debug, Clone)]
pub struct SessionState {
    /// The session.
    pub session: GameSession,
    /// Its player sessions, oldest first.
    pub players: Vec<PlayerSession>,
}

/// What a control plane mirrors of this host, read in one step: every process, and the
/// sessions asked for with their players.
#[derive(Debug, Clone)]
pub struct HostState {
    /// Every process the fleet supervises, by process id.
    pub processes: Vec<ProcessView>,
    /// The sessions of the [`HostStateScope`].
    pub sessions: Vec<SessionState>,
}

/// What [`Control::DescribeStatus`] reads in one step.
#[derive(Debug, Clone)]
pub struct FleetStatus {
    /// Every live process, by process id.
    pub processes: Vec<ProcessView>,
    /// Every entry in force or retiring, by number.
    pub entries: Vec<EntryView>,
    /// DescribeInstancesExtend's counters.
    pub counters: InstanceCounters,
}

/// What the metrics read of the fleet in one step ([`Control::DescribeGauges`]): counts and
/// ids, not copies of sessions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FleetGauges {
    /// Every ServerProcesses entry the fleet holds (in force or retiring), by number.
    pub entries: Vec<EntryGauge>,
    /// Every live process, by process id.
    pub processes: Vec<ProcessGauge>,
    /// Game server sessions held, by status (GSE's name); finished ones are held for a while.
    pub sessions: std::collections::BTreeMap<&'static str, u64>,
    /// Player sessions held, by status (GSE's name).
    pub players: std::collections::BTreeMap<&'static str, u64>,
    /// Placements finished since the agent started, by outcome (GSE's name).
    pub placement_outcomes: std::collections::BTreeMap<&'static str, u64>,
    /// Placements pending now.
    pub placements_pending: u64,
    /// Health checks that failed (unhealthy answer, error or timeout) since the agent started.
    pub health_check_failures: u64,
    /// Processes the runtime configuration in force asks for (its slots).
    pub slots: u64,
    /// Of those slots, the ones with a live process.
    pub slots_running: u64,
    /// The fleet is draining or shutting down: it launches nothing new.
    pub stopping: bool,
}

/// One ServerProcesses entry, for the metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryGauge {
    /// Its number in process ids (`proc-NUMBER-…`), never reused.
    pub number: usize,
    /// LaunchPath as written.
    pub launch_path: String,
    /// Parameters as written.
    pub parameters: String,
    /// How long its launches stay paused after a crash loop (`None`: not paused).
    pub paused_for: Option<std::time::Duration>,
    /// Launches that failed since the agent started.
    pub launch_failures: u64,
}

/// One live process, for the metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessGauge {
    /// Agent id.
    pub process_id: String,
    /// OS pid.
    pub pid: u32,
    /// The number of its entry ([`EntryGauge::number`]).
    pub entry: usize,
    /// LAUNCHING, ACTIVE, TERMINATING or ENDING.
    pub phase: &'static str,
}

/// A command from the local control API (and, later, the upstream control plane).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// CreateGameServerSession.
    CreateSession(NewSession),
    /// DescribeGameServerSessions.
    DescribeSessions(SessionQuery),
    /// JoinGameServerSession(Batch): all or none.
    Join {
        /// Session.
        gss_id: String,
        /// Players.
        players: Vec<NewPlayer>,
    },
    /// DescribePlayerSessions.
    DescribePlayers(PlayerQuery),
    /// EndGameServerSessionAndProcess by session id.
    EndSessionAndProcess {
        /// Session.
        gss_id: String,
    },
    /// The processes (agent extension).
    DescribeProcesses,
    /// The processes, the entries and the counters, read at once (DescribeServerProcesses'
    /// entries and DescribeAgentStatus, agent extensions).
    DescribeStatus,
    /// DescribeInstancesExtend counters.
    DescribeInstance,
    /// DescribeRuntimeConfiguration: the runtime configuration in force.
    DescribeRuntime,
    /// CreateAlias (`id` unset) or UpdateAlias (`id` set).
    PutAlias(crate::api::alias::AliasInput),
    /// DeleteAlias.
    DeleteAlias(String),
    /// CreateGameServerSessionQueue (`create`) or UpdateGameServerSessionQueue.
    PutQueue {
        /// The queue's fields.
        input: crate::api::queue::QueueInput,
        /// Create it (else update it).
        create: bool,
    },
    /// DeleteGameServerSessionQueue.
    DeleteQueue(String),
    /// StartGameServerSessionPlacement.
    StartPlacement(Box<crate::api::placement::PlacementRequest>),
    /// StopGameServerSessionPlacement.
    StopPlacement(String),
    /// DescribeGameServerSessionPlacement.
    DescribePlacement(String),
    /// DescribeGameServerSessionQueues: these names, or all.
    DescribeQueues(Vec<String>),
    /// DescribeAlias or ResolveAlias.
    DescribeAlias(String),
    /// ListAliases: those whose name contains the text and whose routing is of the type.
    ListAliases {
        /// Part of the name.
        name: Option<String>,
        /// `SIMPLE` or `TERMINAL`.
        terminal: Option<bool>,
    },
    /// UpdateGameServerSession: each field that is set changes.
    UpdateSession(SessionUpdate),
    /// UpdateRuntimeConfiguration (already validated): new processes start under it; old ones
    /// retire as their sessions end.
    UpdateRuntime(Box<crate::agent::config::RuntimeConfiguration>),
    /// A new build went live: relaunch every entry under the current runtime configuration,
    /// old processes retiring as their sessions end.
    Redeploy,
    /// Drain (true): scale-in under the protection policy: no new sessions, every process told
    /// to terminate, nothing relaunched. Undrain (false): launch again.
    SetDraining(bool),
    /// Reserve (true): place no new game server sessions here; processes keep running (GSE's
    /// SetServerReserved). Unreserve (false).
    SetReserved(bool),
    /// SetServerWeight: the host's weight in placement across hosts (1–10).
    SetWeight(u8),
    /// The processes and the sessions of the scope with all their player sessions, read at
    /// once (the relay's snapshots for the control plane).
    DescribeHostState(HostStateScope),
    /// Counts of processes, sessions, players and placements, read at once (the metrics).
    DescribeGauges,
    /// Crash rehearsal: inject a fault into the live fleet (refused unless `chaos: enabled`).
    InjectFault(Fault),
}

impl Control {
    /// Only reads the fleet (nothing to save afterwards).
    pub fn is_query(&self) -> bool {
        matches!(
            self,
            Self::DescribeSessions(_)
                | Self::DescribePlayers(_)
                | Self::DescribeProcesses
                | Self::DescribeStatus
                | Self::DescribeInstance
                | Self::DescribeRuntime
                | Self::DescribeAlias(_)
                | Self::ListAliases { .. }
                | Self::DescribeQueues(_)
                | Self::DescribePlacement(_)
                | Self::DescribeHostState(_)
                | Self::DescribeGauges
        )
    }
}

/// A successful control answer.
#[derive(Debug, Clone)]
pub enum ControlReply {
    /// One session.
    Session(Box<GameSession>),
    /// A page of sessions.
    Sessions(Vec<GameSession>, Option<String>),
    /// Player sessions, with a next token when paged.
    Players(Vec<PlayerSession>, Option<String>),
    /// Processes.
    Processes(Vec<ProcessView>),
    /// Counters.
    Instance(InstanceCounters),
    /// The runtime configuration in force.
    Runtime(Box<crate::agent::config::RuntimeConfiguration>),
    /// One alias.
    Alias(Box<crate::api::alias::Alias>),
    /// Aliases, oldest first.
    Aliases(Vec<crate::api::alias::Alias>),
    /// Queues, by name.
    Queues(Vec<crate::api::queue::Queue>),
    /// One placement.
    Placement(Box<crate::api::placement::Placement>),
    /// The processes, sessions and players of [`Control::DescribeHostState`].
    HostState(Box<HostState>),
    /// The counts of [`Control::DescribeGauges`].
    Gauges(Box<FleetGauges>),
    /// The view of [`Control::DescribeStatus`].
    Status(Box<FleetStatus>),
    /// A fault was injected ([`Control::InjectFault`]) into this process, if it names one.
    Injected {
        /// Its process id.
        process_id: Option<String>,
        /// Its OS pid.
        pid: Option<u32>,
        /// The event the fault made.
        event_code: crate::agent::event::EventCode,
    },
    /// Done.
    Done,
}

/// Why a call or command was refused. The SDK turns it into `ERROR_400`; the control API into a
/// Tencent Cloud error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FleetError {
    /// The pid is not a process this agent launched.
    #[error("pid {0} is not a server process launched by this agent")]
    UnknownPid(u32),
    /// An id names nothing (a caller's id is cut to a few hundred bytes when said).
    #[error("{kind} {} does not exist", crate::common::telemetry::clip(.id))]
    NotFound {
        /// What kind of resource.
        kind: &'static str,
        /// The id.
        id: String,
    },
    /// A parameter is malformed.
    #[error("invalid {param}: {message}")]
    Invalid {
        /// Parameter name.
        param: &'static str,
        /// Why.
        message: String,
    },
    /// A rule of the API refused it, with the code GSE gave (an alias or queue put).
    #[error("{message}")]
    Rule {
        /// The Tencent Cloud API error code.
        code: &'static str,
        /// Why.
        message: String,
    },
    /// The current state does not allow it.
    #[error("{0}")]
    Denied(String),
    /// A limit is reached.
    #[error("{0}")]
    Limit(String),
}

impl From<crate::api::alias::AliasError> for FleetError {
    fn from(e: crate::api::alias::AliasError) -> Self {
        Self::Rule {
            code: e.code(),
            message: e.to_string(),
        }
    }
}

impl From<crate::api::queue::PutError> for FleetError {
    fn from(e: crate::api::queue::PutError) -> Self {
        Self::Rule {
            code: e.code(),
            message: e.to_string(),
        }
    }
}

impl From<crate::api::sessions::Invalid> for FleetError {
    fn from(e: crate::api::sessions::Invalid) -> Self {
        Self::Invalid {
            param: e.param,
            message: e.message,
        }
    }
}

impl FleetError {
    /// The Tencent Cloud API error code of this refusal, for every door that reports one.
    pub fn tencent_code(&self) -> &'static str {
        match self {
            Self::NotFound { .. } => "ResourceNotFound",
            Self::Invalid { .. } => "InvalidParameterValue",
            Self::Denied(_) => "OperationDenied",
            Self::Limit(_) => "LimitExceeded",
            Self::Rule { code, .. } => code,
            Self::UnknownPid(_) => "InternalError",
        }
    }
}

impl Control {
    /// UpdateRuntimeConfiguration from Tencent's RuntimeConfiguration JSON: parsed and checked
    /// by the same rules as agent.yaml, for every door.
    pub fn update_runtime(json: &str, game_root: &std::path::Path) -> Result<Self, FleetError> {
        crate::agent::config::parse_runtime(json, game_root)
            .map(|r| Self::UpdateRuntime(Box::new(r)))
            .map_err(|e| FleetError::Invalid {
                param: "RuntimeConfiguration",
                message: e.to_string(),
            })
    }
}
