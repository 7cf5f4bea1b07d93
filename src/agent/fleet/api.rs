//! The fleet's inputs and outputs: the typed calls and commands it accepts, the effects it
//! asks the actor to perform, and its views and errors.

use crate::api::ErrorCode;
use std::time::Duration;

use crate::agent::event::{Change, Event};
use crate::agent::session::{GameSession, GssStatus, PlayerSession, PlayerStatus};
use crate::api::sessions::{NewPlayer, NewSession, SessionUpdate};
use crate::proto;

mod fault;
mod views;

pub use fault::*;
pub use views::*;

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
        code: ErrorCode,
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
    pub fn tencent_code(&self) -> ErrorCode {
        match self {
            Self::NotFound { .. } => ErrorCode::ResourceNotFound,
            Self::Invalid { .. } => ErrorCode::InvalidParameterValue,
            Self::Denied(_) => ErrorCode::OperationDenied,
            Self::Limit(_) => ErrorCode::LimitExceeded,
            Self::Rule { code, .. } => *code,
            Self::UnknownPid(_) => ErrorCode::InternalError,
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
