//! What the fleet shows of itself: processes and entries, instance counters, host state for
//! the snapshots, status and gauges.

use crate::agent::session::{GameSession, PlayerSession};

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
    /// The sessions of the [`HostStateScope`](super::HostStateScope).
    pub sessions: Vec<SessionState>,
}

/// What [`Control::DescribeStatus`](super::Control::DescribeStatus) reads in one step.
#[derive(Debug, Clone)]
pub struct FleetStatus {
    /// Every live process, by process id.
    pub processes: Vec<ProcessView>,
    /// Every entry in force or retiring, by number.
    pub entries: Vec<EntryView>,
    /// DescribeInstancesExtend's counters.
    pub counters: InstanceCounters,
}

/// What the metrics read of the fleet in one step ([`Control::DescribeGauges`](super::Control::DescribeGauges)): counts and
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
