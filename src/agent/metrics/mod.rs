//! Prometheus metrics, `/healthz` and `/readyz` on `metrics-listen`.
//!
//! Nothing in the agent counts for the metrics on the side. They come from three places:
//!
//! - the event bus ([`record_events`]): restarts, exits by code, crash loops, the upstream
//!   link, and a count of every event by code;
//! - the fleet's own state, read in one query at each scrape ([`Metrics::observe_fleet`]):
//!   processes by phase and entry, sessions and player sessions by status, placements, paused
//!   entries, failed health checks; and the outbox's depth and oldest unacknowledged event;
//! - a sampler on a fixed period ([`SAMPLE_PERIOD`]) reading each game's CPU time, resident
//!   memory and open descriptors with `sysinfo` ([`sample`]).
//!
//! The SDK server times its own calls ([`Metrics::sdk_call`]): a call is not a lifecycle
//! change, so it is not an event.

pub mod sample;
mod server;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::agent::event::{Event, EventCode};
use crate::agent::fleet::FleetGauges;

pub use sample::{Sampler, Usage};
pub use server::{MetricsServerError, Sources, serve};

/// How often each game's CPU, memory and descriptors are read.
pub const SAMPLE_PERIOD: Duration = Duration::from_secs(5);

pub use crate::common::metrics_door::CONTENT_TYPE;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EntryLabels {
    entry: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EntryInfoLabels {
    entry: String,
    launch_path: String,
    parameters: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    entry: String,
    phase: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabels {
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ExitLabels {
    entry: String,
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProcessLabels {
    process_id: String,
    entry: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RpcLabels {
    rpc: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    rpc: &'static str,
    result: &'static str,
}

/// How an SDK call ended, as its metric says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SdkResult {
    /// Answered with success.
    Ok,
    /// The fleet refused it (a non-OK gRPC status with the reason).
    Refused,
    /// The `pid` metadata was missing or malformed.
    BadCaller,
    /// The connection does not belong to the process it names.
    NotVerified,
    /// The agent could not verify the caller (its host lacks `sock_diag` or `/proc`): the
    /// agent's own fault, refused all the same.
    Unverifiable,
}

impl SdkResult {
    fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Refused => "refused",
            Self::BadCaller => "bad_caller",
            Self::NotVerified => "not_verified",
            Self::Unverifiable => "unverifiable",
        }
    }
}

type FloatGauge = Gauge<f64, AtomicU64>;
type FloatCounter = Counter<f64, AtomicU64>;
type Histograms = Family<RpcLabels, Histogram, fn() -> Histogram>;

/// SDK call latency buckets: 100 µs to about 1.6 s, ×4 apart.
fn sdk_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 4.0, 8))
}

/// Every metric the agent serves, and what `/readyz` needs to know. Shared (`Arc`) by the
/// event reader, the sampler, the SDK server and the HTTP server.
pub struct Metrics {
    registry: Registry,
    // From the fleet's state, replaced at each scrape.
    processes: Family<PhaseLabels, Gauge>,
    entry_info: Family<EntryInfoLabels, Gauge>,
    entry_paused: Family<EntryLabels, FloatGauge>,
    launch_failures: Family<EntryLabels, Counter>,
    sessions: Family<StatusLabels, Gauge>,
    players: Family<StatusLabels, Gauge>,
    placements_pending: Gauge,
    placements: Family<OutcomeLabels, Counter>,
    health_check_failures: Counter,
    // From the event bus.
    events: Family<CodeLabels, Counter>,
    restarts: Family<EntryLabels, Counter>,
    exits: Family<ExitLabels, Counter>,
    crash_loops: Counter,
    events_missed: Counter,
    upstream_connected: Gauge,
    // From the outbox, at each scrape.
    outbox_depth: Gauge,
    outbox_oldest: FloatGauge,
    // From the SDK server.
    sdk_calls: Family<CallLabels, Counter>,
    sdk_duration: Histograms,
    // From the sampler.
    cpu: Family<ProcessLabels, FloatCounter>,
    rss: Family<ProcessLabels, Gauge>,
    fds: Family<ProcessLabels, Gauge>,
    sample_duration: FloatGauge,
    /// The SDK server accepts calls.
    sdk_serving: AtomicBool,
    /// Scrapes and samples replace whole families: one at a time.
    pub(crate) update: tokio::sync::Mutex<()>,
}

impl Metrics {
    /// Every metric registered, all zero; the `upstream_*` ones only if `upstream` (a control
    /// plane is configured).
    pub fn new(upstream: bool) -> Self {
        let mut registry = Registry::with_prefix("gse_agent");
        let m = Self {
            processes: Family::default(),
            entry_info: Family::default(),
            entry_paused: Family::default(),
            launch_failures: Family::default(),
            sessions: Family::default(),
            players: Family::default(),
            placements_pending: Gauge::default(),
            placements: Family::default(),
            health_check_failures: Counter::default(),
            events: Family::default(),
            restarts: Family::default(),
            exits: Family::default(),
            crash_loops: Counter::default(),
            events_missed: Counter::default(),
            upstream_connected: Gauge::default(),
            outbox_depth: Gauge::default(),
            outbox_oldest: FloatGauge::default(),
            sdk_calls: Family::default(),
            sdk_duration: Histograms::new_with_constructor(sdk_histogram),
            cpu: Family::default(),
            rss: Family::default(),
            fds: Family::default(),
            sample_duration: FloatGauge::default(),
            sdk_serving: AtomicBool::new(false),
            update: tokio::sync::Mutex::new(()),
            registry: Registry::default(),
        };
        m.register_fleet(&mut registry);
        m.register_events(&mut registry);
        m.register_sdk_and_samples(&mut registry);
        if upstream {
            m.register_upstream(&mut registry);
        }
        Self { registry, ..m }
    }

    /// The fleet's state: processes, entries, sessions, players, placements.
    fn register_fleet(&self, r: &mut Registry) {
        r.register(
            "processes",
            "Game processes by ServerProcesses entry and phase (LAUNCHING, ACTIVE, TERMINATING, ENDING)",
            self.processes.clone(),
        );
        r.register(
            "entry_info",
            "Each ServerProcesses entry by number (the N of proc-N-…), with its LaunchPath and Parameters",
            self.entry_info.clone(),
        );
        r.register(
            "entry_paused_seconds",
            "Seconds until a crash-looping entry launches again (0: not paused)",
            self.entry_paused.clone(),
        );
        r.register(
            "entry_launch_failures",
            "Launches of an entry that failed (launch path missing or not executable, spawn error), retried with the restart backoff",
            self.launch_failures.clone(),
        );
        r.register(
            "game_server_sessions",
            "Game server sessions held, by status",
            self.sessions.clone(),
        );
        r.register(
            "player_sessions",
            "Player sessions held, by status",
            self.players.clone(),
        );
        r.register(
            "placements_pending",
            "Game server session placements waiting for a process",
            self.placements_pending.clone(),
        );
        r.register(
            "placements",
            "Game server session placements finished, by outcome",
            self.placements.clone(),
        );
        r.register(
            "health_check_failures",
            "Health checks answered unhealthy, failed or timed out",
            self.health_check_failures.clone(),
        );
    }

    /// Counted from the event bus: events, restarts, exits, crash loops.
    fn register_events(&self, r: &mut Registry) {
        r.register(
            "events",
            "Events on the agent's event bus, by code",
            self.events.clone(),
        );
        r.register(
            "process_restarts",
            "Processes launched in a slot that had run a process before, by entry",
            self.restarts.clone(),
        );
        r.register(
            "process_exits",
            "Processes that ended, by entry and event code (SERVER_PROCESS_CRASHED, …)",
            self.exits.clone(),
        );
        r.register(
            "crash_loops",
            "Times an entry crashed too often and its launches were paused",
            self.crash_loops.clone(),
        );
        r.register(
            "metrics_events_missed",
            "Events the metrics reader fell too far behind to count",
            self.events_missed.clone(),
        );
    }

    /// SDK calls and their timing; the sampled game processes.
    fn register_sdk_and_samples(&self, r: &mut Registry) {
        r.register(
            "sdk_calls",
            "GSE SDK calls by rpc and result (ok, refused, bad_caller, not_verified)",
            self.sdk_calls.clone(),
        );
        r.register(
            "sdk_call_duration_seconds",
            "Time to answer a GSE SDK call, by rpc",
            self.sdk_duration.clone(),
        );
        r.register(
            "process_cpu_seconds",
            "CPU time (user and system) of each game process, sampled",
            self.cpu.clone(),
        );
        r.register(
            "process_resident_memory_bytes",
            "Resident memory of each game process, sampled",
            self.rss.clone(),
        );
        r.register(
            "process_open_fds",
            "Open file descriptors of each game process, sampled",
            self.fds.clone(),
        );
        r.register(
            "sample_duration_seconds",
            "Time the last sample of the game processes took",
            self.sample_duration.clone(),
        );
    }

    /// The upstream link and its outbox (only with `upstream`).
    fn register_upstream(&self, r: &mut Registry) {
        r.register(
            "upstream_connected",
            "1 while the connection to the control plane is up",
            self.upstream_connected.clone(),
        );
        r.register(
            "upstream_outbox_depth",
            "Events written to the outbox and not yet acknowledged by the control plane",
            self.outbox_depth.clone(),
        );
        r.register(
            "upstream_outbox_oldest_unacknowledged_seconds",
            "Age of the oldest event the control plane has not acknowledged (0: none)",
            self.outbox_oldest.clone(),
        );
    }

    /// Counts one event from the bus.
    pub fn record(&self, e: &Event) {
        self.events
            .get_or_create(&CodeLabels {
                code: e.event_code.as_str(),
            })
            .inc();
        let entry = e.process_id.as_deref().and_then(entry_and_generation);
        match e.event_code {
            EventCode::ServerProcessStarted => {
                if let Some((entry, generation)) = entry
                    && generation > 1
                {
                    self.restarts
                        .get_or_create(&EntryLabels {
                            entry: entry.to_string(),
                        })
                        .inc();
                }
            }
            EventCode::ServerProcessCrashLoop => {
                self.crash_loops.inc();
            }
            EventCode::UpstreamConnected => {
                self.upstream_connected.set(1);
            }
            EventCode::UpstreamDisconnected => {
                self.upstream_connected.set(0);
            }
            code if is_exit(code) => {
                if let Some((entry, _)) = entry {
                    self.exits
                        .get_or_create(&ExitLabels {
                            entry: entry.to_string(),
                            code: code.as_str(),
                        })
                        .inc();
                }
            }
            _ => {}
        }
    }

    /// Counts `n` events the reader missed (it lagged behind the bus).
    pub fn missed(&self, n: u64) {
        self.events_missed.inc_by(n);
    }

    /// Counts one SDK call and its time.
    pub fn sdk_call(&self, rpc: &'static str, result: SdkResult, took: Duration) {
        self.sdk_calls
            .get_or_create(&CallLabels {
                rpc,
                result: result.as_str(),
            })
            .inc();
        self.sdk_duration
            .get_or_create(&RpcLabels { rpc })
            .observe(took.as_secs_f64());
    }

    /// Says whether the SDK server accepts calls.
    pub fn set_sdk_serving(&self, serving: bool) {
        self.sdk_serving.store(serving, Ordering::Relaxed);
    }

    /// Whether the SDK server accepts calls.
    pub fn sdk_serving(&self) -> bool {
        self.sdk_serving.load(Ordering::Relaxed)
    }

    /// Replaces the gauges read from the fleet's state with `g`; `None` (the fleet did not
    /// answer) clears them, so that stale counts are not served as current.
    pub fn observe_fleet(&self, g: Option<&FleetGauges>) {
        self.processes.clear();
        self.entry_info.clear();
        self.entry_paused.clear();
        self.launch_failures.clear();
        self.sessions.clear();
        self.players.clear();
        let Some(g) = g else {
            return;
        };
        for e in &g.entries {
            let entry = e.number.to_string();
            self.entry_info
                .get_or_create(&EntryInfoLabels {
                    entry: entry.clone(),
                    launch_path: e.launch_path.clone(),
                    parameters: e.parameters.clone(),
                })
                .set(1);
            self.entry_paused
                .get_or_create(&EntryLabels {
                    entry: entry.clone(),
                })
                .set(e.paused_for.map(|d| d.as_secs_f64()).unwrap_or(0.0));
            // Cleared above: the family holds the fleet's count, whatever it held before.
            self.launch_failures
                .get_or_create(&EntryLabels { entry })
                .inc_by(e.launch_failures);
        }
        for ((entry, phase), n) in process_counts(g) {
            self.processes
                .get_or_create(&PhaseLabels { entry, phase })
                .set(n);
        }
        for (status, n) in &g.sessions {
            self.sessions
                .get_or_create(&StatusLabels { status })
                .set(*n as i64);
        }
        for (status, n) in &g.players {
            self.players
                .get_or_create(&StatusLabels { status })
                .set(*n as i64);
        }
        self.placements_pending.set(g.placements_pending as i64);
        for (outcome, n) in &g.placement_outcomes {
            let c = self.placements.get_or_create(&OutcomeLabels { outcome });
            c.inc_by(n.saturating_sub(c.get()));
        }
        let c = &self.health_check_failures;
        c.inc_by(g.health_check_failures.saturating_sub(c.get()));
    }

    /// Sets the outbox gauges: events not yet acknowledged, and the age of the oldest.
    pub fn observe_outbox(&self, depth: u64, oldest: Option<Duration>) {
        self.outbox_depth.set(depth as i64);
        self.outbox_oldest
            .set(oldest.map(|d| d.as_secs_f64()).unwrap_or(0.0));
    }

    /// Replaces the per-process samples; `procs` names each sampled pid's process and entry.
    pub fn observe_usage(&self, procs: &[(String, usize, u32)], usage: &[Usage], took: Duration) {
        self.cpu.clear();
        self.rss.clear();
        self.fds.clear();
        for u in usage {
            let Some((process_id, entry, _)) = procs.iter().find(|(_, _, pid)| *pid == u.pid)
            else {
                continue;
            };
            let labels = ProcessLabels {
                process_id: process_id.clone(),
                entry: entry.to_string(),
            };
            self.cpu.get_or_create(&labels).inc_by(u.cpu_seconds);
            self.rss.get_or_create(&labels).set(u.rss_bytes as i64);
            if let Some(n) = u.open_fds {
                self.fds.get_or_create(&labels).set(n as i64);
            }
        }
        self.sample_duration.set(took.as_secs_f64());
    }

    /// The registry in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

/// The exit codes: a process ended (or could not start) with this event.
fn is_exit(code: EventCode) -> bool {
    matches!(
        code,
        EventCode::ServerProcessInvalidPath
            | EventCode::ServerProcessPullFailed
            | EventCode::ServerProcessProcessReadyTimeout
            | EventCode::ServerProcessCrashed
            | EventCode::ServerProcessTerminatedUnhealthy
            | EventCode::ServerProcessForceTerminated
            | EventCode::ServerProcessProcessExitTimeout
            | EventCode::ServerProcessEnded
    )
}

/// The entry number and launch generation of a process id `proc-ENTRY-REPLICA-GENERATION`.
fn entry_and_generation(process_id: &str) -> Option<(&str, u64)> {
    let mut parts = process_id.strip_prefix("proc-")?.split('-');
    let entry = parts.next().filter(|e| e.parse::<usize>().is_ok())?;
    let _replica = parts.next()?;
    let generation = parts.next()?.parse().ok()?;
    parts.next().is_none().then_some((entry, generation))
}

/// Live processes counted by entry and phase; every phase of every entry is listed (0 when
/// none), so that a series does not vanish when its count drops to zero.
fn process_counts(g: &FleetGauges) -> BTreeMap<(String, &'static str), i64> {
    let mut counts = BTreeMap::new();
    for e in &g.entries {
        for phase in PHASES {
            counts.insert((e.number.to_string(), phase), 0);
        }
    }
    for p in &g.processes {
        *counts.entry((p.entry.to_string(), p.phase)).or_insert(0) += 1;
    }
    counts
}

/// Every phase a process can be in.
const PHASES: [&str; 4] = ["LAUNCHING", "ACTIVE", "TERMINATING", "ENDING"];

/// Reads the bus into `metrics` until `stop` (or the bus closes).
pub async fn record_events(
    metrics: Arc<Metrics>,
    mut events: tokio::sync::broadcast::Receiver<Event>,
    stop: tokio_util::sync::CancellationToken,
) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        let received = tokio::select! {
            r = events.recv() => r,
            _ = stop.cancelled() => return,
        };
        match received {
            Ok(e) => metrics.record(&e),
            Err(RecvError::Lagged(n)) => {
                tracing::warn!(
                    events.missed = n,
                    "metrics fell behind the event bus; counts miss these events"
                );
                metrics.missed(n);
            }
            Err(RecvError::Closed) => return,
        }
    }
}

#[cfg(test)]
mod tests;
