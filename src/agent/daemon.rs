//! The running agent: `Config → build → run`. [`Agent::build`] creates directories and binds
//! every listener before any process starts; [`Agent::run`] supervises until shutdown.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::agent::capi::{self, Capi};
use crate::agent::config::Config;
use crate::agent::event::EventBus;
use crate::agent::fleet::actor::{Persistence, Stops};
use crate::agent::fleet::state::{Recorded, RestoreError};
use crate::agent::fleet::{self, Fleet, FleetHandle};
use crate::agent::metrics;
use crate::agent::package::{self, Accounts, PackageError, RunAs};
use crate::agent::sdk;
use crate::agent::store::{
    EVENT_SEQUENCE_KEY, Records, SDK_ADDRESS_KEY, StateStore, StoreError, read_value, value_record,
};
use crate::agent::upstream;
use crate::agent::upstream::ledger::{Ledger, LedgerError};
use crate::agent::upstream::outbox::{Outbox, OutboxError};
use crate::api::time::now_ms;
use crate::common::listen::Bounds;

/// Events kept in memory for DescribeFleetEvents.
const EVENT_HISTORY: usize = 10_000;
/// How long the relay may take to deliver the last events at shutdown.
const RELAY_FLUSH: std::time::Duration = std::time::Duration::from_secs(3);
/// How long the log archives still queued at shutdown may take (the games' shutdown has had
/// its own bound; this keeps the whole stop inside the unit's TimeoutStopSec).
const ARCHIVE_DRAIN: std::time::Duration = std::time::Duration::from_secs(15);

/// Why the agent could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// Another agent holds the data-dir, or its lock cannot be taken.
    #[error(transparent)]
    DataDir(#[from] crate::agent::lock::LockError),
    /// The data-dir could not be created or closed.
    #[error(transparent)]
    Prepare(#[from] crate::agent::data_dir::DataDirError),
    /// A directory could not be created.
    #[error("cannot create directory {path}: {source}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The record that the game root was given to its run-as user could not be written.
    #[error("cannot record the game root's owner in {path}: {source}")]
    RecordOwner {
        /// The record.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A listener could not be bound.
    #[error("cannot listen on {addr} for the {what}: {source}")]
    Bind {
        /// Which server.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// `endpoints.json` could not be written.
    #[error("cannot write {path}: {source}")]
    WriteEndpoints {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The sample game server is not where the sample fleet needs it.
    #[error("the sample fleet needs {path}: {reason}; build it with `cargo build --release`")]
    SampleServer {
        /// Where it was looked for.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The fleet supervisor task failed (a bug); every game process was killed.
    #[error("the fleet supervisor failed: {0}")]
    Fleet(String),
    /// The build could not be installed.
    #[error(transparent)]
    Package(#[from] PackageError),
    /// The outbox could not be opened.
    #[error(transparent)]
    Outbox(#[from] OutboxError),
    /// The command ledger could not be opened.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// The state store could not be opened or read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The stored state could not be restored.
    #[error("{path}: {source}")]
    Restore {
        /// The store.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        source: RestoreError,
    },
    /// The SDK server failed.
    #[error(transparent)]
    Sdk(#[from] sdk::SdkServerError),
    /// The control API server failed.
    #[error(transparent)]
    Capi(#[from] crate::api::server::ServeError),
    /// The metrics server failed.
    #[error(transparent)]
    Metrics(#[from] metrics::MetricsServerError),
    /// The game log archive folder or its link key cannot be used.
    #[error(transparent)]
    LogArchive(#[from] crate::agent::logarchive::ArchiveError),
}

/// The bound addresses, also written to `<data-dir>/endpoints.json` for tools and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Endpoints {
    /// The GSE SDK server.
    pub sdk_address: SocketAddr,
    /// The control API, if on.
    pub capi_address: Option<SocketAddr>,
    /// `/metrics`, `/healthz` and `/readyz`, if on.
    pub metrics_address: Option<SocketAddr>,
}

/// The outbox, its writer thread and the command ledger, when a control plane is configured.
struct Upstream {
    outbox: Outbox,
    ledger: Ledger,
    writer: std::thread::JoinHandle<()>,
}

/// A built agent: directories exist, listeners are bound, nothing runs yet.
pub struct Agent {
    /// Held for the agent's life: one agent per data-dir.
    _lock: crate::agent::lock::DataDirLock,
    cfg: Arc<Config>,
    store: StateStore,
    restored: Option<(Fleet, Vec<Recorded>)>,
    stored: Records,
    bus: EventBus,
    upstream: Option<Upstream>,
    run_as: Option<RunAs>,
    sdk_listener: TcpListener,
    capi_listener: Option<TcpListener>,
    metrics_listener: Option<TcpListener>,
    endpoints: Endpoints,
    /// Game logs archived as processes end.
    log_archives: (
        crate::agent::logarchive::LogJobs,
        crate::agent::logarchive::LogLinks,
        crate::agent::logarchive::Archiver,
    ),
}

fn create_dir(path: &Path) -> Result<(), AgentError> {
    std::fs::create_dir_all(path).map_err(|source| AgentError::CreateDir {
        path: path.to_path_buf(),
        source,
    })
}

impl Agent {
    /// Creates the data directories and binds the listeners; game processes will run as
    /// `run_as` if given.
    pub async fn build(cfg: Config, run_as: Option<RunAs>) -> Result<Self, AgentError> {
        crate::agent::data_dir::prepare(&cfg.data_dir)?;
        let lock = crate::agent::lock::acquire(&cfg.data_dir)?;
        create_dir(&cfg.game_root)?;
        let log_archives =
            crate::agent::logarchive::open(&cfg, run_as.as_ref().map(|r| (r.uid, r.gid)))?;
        let bind = |what, addr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| AgentError::Bind { what, addr, source })
        };
        // Two files, so that a corrupt outbox never costs the games (see `dbfile`).
        let store_path = cfg.data_dir.join("state.redb");
        let outbox_path = cfg.data_dir.join("outbox.redb");
        let store = StateStore::open(&store_path)?;
        store.migrate_from(&outbox_path)?;
        let stored = store.load()?;
        // Games dial the address they were given at launch: a restart serves the same one.
        let recorded_sdk = read_value::<SocketAddr>(&stored, SDK_ADDRESS_KEY)
            .filter(|a| cfg.sdk_listen.port() == 0 && a.ip() == cfg.sdk_listen.ip());
        let sdk_listener = match recorded_sdk {
            Some(addr) => match TcpListener::bind(addr).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(sdk.addr = %addr, error = %e, "cannot listen on the SDK address the running games were given; they cannot reach this agent");
                    bind("GSE SDK server", cfg.sdk_listen).await?
                }
            },
            None => bind("GSE SDK server", cfg.sdk_listen).await?,
        };
        let capi_listener = match cfg.capi_listen {
            Some(addr) => Some(bind("control API", addr).await?),
            None => None,
        };
        let metrics_listener = match cfg.metrics_listen {
            Some(addr) => Some(bind("metrics", addr).await?),
            None => None,
        };
        let local = |l: &TcpListener, fallback| l.local_addr().unwrap_or(fallback);
        let endpoints = Endpoints {
            sdk_address: local(&sdk_listener, cfg.sdk_listen),
            capi_address: capi_listener
                .as_ref()
                .zip(cfg.capi_listen)
                .map(|(l, a)| local(l, a)),
            metrics_address: metrics_listener
                .as_ref()
                .zip(cfg.metrics_listen)
                .map(|(l, a)| local(l, a)),
        };
        write_endpoints(&cfg.data_dir, &endpoints)?;
        let continue_events = |bus: EventBus| {
            if let Some(next) = read_value::<u64>(&stored, EVENT_SEQUENCE_KEY) {
                bus.continue_from(next);
            }
            bus
        };
        let (bus, upstream) = match &cfg.upstream {
            None => (continue_events(EventBus::new(EVENT_HISTORY)), None),
            Some(u) => {
                let outbox = Outbox::open(&outbox_path, u.outbox_max_bytes.get())?;
                let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
                // Numbered on before the writer starts: it may emit at once (a corrupt outbox).
                let bus = continue_events(EventBus::with_sink(EVENT_HISTORY, tx));
                let writer = outbox.clone().spawn_writer(rx, bus.without_sink());
                let ledger = Ledger::open(outbox.file(), now_ms())?;
                (
                    bus,
                    Some(Upstream {
                        outbox,
                        ledger,
                        writer,
                    }),
                )
            }
        };
        let cfg = Arc::new(cfg);
        let restored = Fleet::restore(
            cfg.clone(),
            &stored,
            tokio::time::Instant::now(),
            std::time::SystemTime::now(),
        )
        .map_err(|source| AgentError::Restore {
            path: store_path,
            source,
        })?;
        stop_strays(
            &cfg,
            restored.as_ref().map(|(_, r)| r.as_slice()).unwrap_or(&[]),
        )
        .await;
        Ok(Self {
            _lock: lock,
            cfg,
            store,
            restored,
            stored,
            bus,
            upstream,
            run_as,
            sdk_listener,
            capi_listener,
            metrics_listener,
            endpoints,
            log_archives,
        })
    }

    /// Where the servers listen.
    pub fn endpoints(&self) -> Endpoints {
        self.endpoints
    }

    /// The event bus; subscribe before [`Agent::start`] to see every event.
    pub fn bus(&self) -> &EventBus {
        &self.bus
    }

    /// Supervises the fleet until `stops` says: graceful stop, kill now, or leave the games
    /// running for the next agent; returns once the fleet has ended and the servers have
    /// stopped.
    pub async fn run(self, stops: Stops) -> Result<(), AgentError> {
        let running = self.start(stops);
        running.wait().await
    }

    /// Starts supervising and serving; the returned handle gives the fleet's typed door and
    /// waits for the end.
    pub fn start(self, stops: Stops) -> Running {
        let bus = self.bus.clone();
        let mut extra = Records::new();
        extra.insert(
            SDK_ADDRESS_KEY.into(),
            value_record(self.endpoints.sdk_address),
        );
        let persistence = Persistence {
            restored: self.restored,
            writer: self.store.spawn_writer(self.stored),
            extra,
        };
        // The servers outlive the fleet: ending processes still call the SDK.
        let servers_stop = CancellationToken::new();
        // Subscribed before the fleet starts: the metrics count every event.
        let metrics = self.metrics_listener.as_ref().map(|_| {
            let m = Arc::new(metrics::Metrics::new(self.upstream.is_some()));
            tokio::spawn(
                metrics::record_events(m.clone(), bus.subscribe(), servers_stop.clone())
                    .instrument(tracing::info_span!("metrics")),
            );
            m
        });
        let (log_jobs, log_links, archiver) = self.log_archives;
        // Ends once the fleet (its only feeder) has ended and what it queued is written.
        let archiver = tokio::spawn(
            archiver
                .run()
                .instrument(tracing::info_span!("log_archives")),
        );
        let (fleet, fleet_task) = fleet::spawn_fleet(
            self.cfg.clone(),
            self.run_as.clone(),
            self.endpoints.sdk_address,
            bus.clone(),
            persistence,
            log_jobs,
            stops,
        );
        let sdk_task = tokio::spawn(
            sdk::serve(
                self.sdk_listener,
                fleet.clone(),
                sdk::SdkOptions {
                    verify_callers: self.cfg.sdk_verify_callers,
                    bounds: Bounds {
                        max_connections: self.cfg.connections.sdk_max,
                        first_bytes_within: self.cfg.connections.header_timeout.get(),
                        // The whole HTTP/2 client preface.
                        first_bytes: 24,
                        // Live games stay connected; keepalive pings find dead peers.
                        idle_after: None,
                    }
                    .within_open_files(crate::common::host::open_files_limit(), 2),
                    metrics: metrics.clone(),
                },
                servers_stop.clone(),
            )
            .instrument(tracing::info_span!("sdk")),
        );
        // Crash rehearsal's switch on the upstream link: the control API cuts, the relay obeys.
        let link_cut = upstream::cut::LinkCut::default();
        let capi_task = self.capi_listener.map(|l| {
            tokio::spawn(
                capi::serve(
                    l,
                    Capi::new(fleet.clone(), bus.clone(), self.cfg.clone(), log_links)
                        .with_link_cut(self.upstream.as_ref().map(|_| link_cut.clone())),
                    servers_stop.clone(),
                )
                .instrument(tracing::info_span!("capi")),
            )
        });
        let metrics_task = self.metrics_listener.zip(metrics).map(|(l, m)| {
            tokio::spawn(
                metrics::serve(
                    l,
                    m,
                    metrics::Sources {
                        fleet: fleet.clone(),
                        outbox: self.upstream.as_ref().map(|u| u.outbox.clone()),
                    },
                    self.cfg.metrics_token_file.clone(),
                    self.cfg.connections.clone(),
                    servers_stop.clone(),
                )
                .instrument(tracing::info_span!("metrics")),
            )
        });
        let relay_stop = CancellationToken::new();
        let relay = match (&self.upstream, &self.cfg.upstream) {
            (Some(u), Some(ucfg)) => Some(tokio::spawn(
                upstream::relay::run(
                    ucfg.clone(),
                    self.cfg.clone(),
                    u.outbox.clone(),
                    u.ledger.clone(),
                    fleet.clone(),
                    bus.clone(),
                    link_cut,
                    relay_stop.clone(),
                )
                .instrument(tracing::info_span!("upstream")),
            )),
            _ => None,
        };
        let upstream = self.upstream;
        drop(bus);
        let own_bus = self.bus;
        // Held until everything below has ended: no second agent starts on this data-dir while
        // this one still writes to it.
        let lock = self._lock;
        let done = tokio::spawn(async move {
            let _lock = lock;
            let fleet_result = fleet_task.await;
            let mut archiver = archiver;
            if tokio::time::timeout(ARCHIVE_DRAIN, &mut archiver)
                .await
                .is_err()
            {
                tracing::warn!(
                    "log archives still queued after {}: not written (those games' output stays in logs/)",
                    humantime::format_duration(ARCHIVE_DRAIN)
                );
                archiver.abort();
            }
            servers_stop.cancel();
            if let (Some(relay), Some(u)) = (relay, &upstream) {
                // Give the relay a moment to deliver the last events (they stay in the outbox
                // and are resent on the next start if it cannot).
                let flushed = tokio::time::timeout(RELAY_FLUSH, async {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    while u.outbox.unacked() > 0 {
                        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    }
                })
                .await;
                if flushed.is_err() {
                    tracing::warn!(
                        upstream.unacked = u.outbox.unacked(),
                        "events not yet acknowledged stay in the outbox"
                    );
                }
                relay_stop.cancel();
                let _ = relay.await;
            }
            drop(own_bus);
            if let Err(e) = fleet_result {
                // A bug in the agent must not cost a match: the games are left running, as
                // after a SIGKILL, for the next agent to adopt from the saved state.
                crate::agent::process::detach_all();
                return Err(AgentError::Fleet(e.to_string()));
            }
            if let Ok(r) = sdk_task.await {
                r?;
            }
            if let Some(t) = capi_task
                && let Ok(r) = t.await
            {
                r?;
            }
            if let Some(t) = metrics_task
                && let Ok(r) = t.await
            {
                r?;
            }
            // Every sender of the outbox queue is gone now: the writer drains it and ends.
            if let Some(u) = upstream {
                let _ = tokio::task::spawn_blocking(move || u.writer.join()).await;
            }
            Ok(())
        });
        Running { fleet, done }
    }
}

/// A started agent.
pub struct Running {
    /// The fleet's typed door (the same one the control API uses).
    pub fleet: FleetHandle,
    done: tokio::task::JoinHandle<Result<(), AgentError>>,
}

impl Running {
    /// Waits until every game process is gone and the servers have stopped.
    pub async fn wait(self) -> Result<(), AgentError> {
        drop(self.fleet);
        match self.done.await {
            Ok(r) => r,
            Err(e) => Err(AgentError::Fleet(e.to_string())),
        }
    }
}

/// Stops this agent's game processes that the saved state does not name (launched just
/// before the last agent died, before the launch was saved), so nothing runs unsupervised.
async fn stop_strays(cfg: &Config, recorded: &[Recorded]) {
    let known: std::collections::HashSet<String> =
        recorded.iter().map(|r| r.process_id.clone()).collect();
    let owner = cfg.owner_tag();
    let swept = tokio::task::spawn_blocking(move || {
        let owner: Vec<(&str, &str)> = owner.iter().map(|(k, v)| (*k, v.as_str())).collect();
        crate::agent::process::kill_strays(&owner, &known)
    })
    .await
    .unwrap_or(0);
    if swept > 0 {
        tracing::warn!(
            processes = swept,
            "stopped game processes no saved record named"
        );
    }
}

fn write_endpoints(data_dir: &Path, endpoints: &Endpoints) -> Result<(), AgentError> {
    let path = data_dir.join("endpoints.json");
    let tmp = data_dir.join("endpoints.json.tmp");
    let text = serde_json::to_string_pretty(endpoints).expect("endpoints serialize");
    crate::agent::data_dir::write_private(&tmp, text.as_bytes())
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(|source| AgentError::WriteEndpoints { path, source })
}

/// Installs the sample build of the embedded config: a link to `gse-fake-server` (which ships
/// beside `gse-agent`) in the game root, as GSE's docs link non-package binaries.
pub fn install_sample_build(cfg: &Config) -> Result<(), AgentError> {
    create_dir(&cfg.game_root)?;
    let exe = std::env::current_exe().map_err(|e| AgentError::SampleServer {
        path: PathBuf::from("gse-agent"),
        reason: format!("cannot locate the running executable: {e}"),
    })?;
    let server = exe.with_file_name("gse-fake-server");
    if !server.is_file() {
        return Err(AgentError::SampleServer {
            path: server,
            reason: "it does not exist".into(),
        });
    }
    for spec in &cfg.runtime.server_processes {
        let link = &spec.program;
        if std::fs::symlink_metadata(link).is_ok() {
            let _ = std::fs::remove_file(link);
        }
        std::os::unix::fs::symlink(&server, link).map_err(|e| AgentError::SampleServer {
            path: link.clone(),
            reason: format!("cannot link it to {}: {e}", server.display()),
        })?;
    }
    Ok(())
}

/// Installs the configured build (if any) and sets up the run-as user; returns who the games
/// run as.
pub async fn install_build(
    cfg: &Config,
    accounts: &(dyn Accounts + Sync),
) -> Result<Option<RunAs>, AgentError> {
    // First, before anything is written into it (Agent::build closes it again for the paths,
    // such as validate, that start there).
    crate::agent::data_dir::prepare(&cfg.data_dir)?;
    match &cfg.build {
        Some(build) => {
            let plan = package::Plan::for_config(cfg, build.clone());
            let announce = |b: &package::Unpacked| announce_local_game(cfg, &b.dir);
            Ok(package::install_with(&plan, accounts, announce)
                .await?
                .run_as)
        }
        None => {
            announce_local_game(cfg, &cfg.game_root);
            set_up_run_as(cfg, accounts)
        }
    }
}

/// Says once, at start, what install.sh and the games see at `/local/game` (probing it, see
/// [`crate::agent::process::local_game`]) and which lines of `build` (the build about to be installed,
/// or the game root) name it: a warning with the ways out when some of them will not reach
/// the build on this host.
pub fn announce_local_game(cfg: &Config, build: &Path) {
    use crate::agent::package::local_refs::{self, Outlook};
    let found = local_refs::scan(build, &cfg.runtime.server_processes, &cfg.game_root);
    let outlook = Outlook::new(
        found,
        crate::agent::process::local_game::support(),
        &cfg.game_root,
    );
    let places = outlook.found.places();
    match outlook.verdict() {
        Some(verdict) if outlook.broken > 0 => tracing::warn!(
            local_game.references = %places,
            "{}; /local/game is named at {places}: {verdict}",
            outlook.headline()
        ),
        Some(verdict) => tracing::info!(
            local_game.references = %places,
            "{}; /local/game is named at {places}: {verdict}",
            outlook.headline()
        ),
        None => tracing::info!(
            "{}; no install.sh line or launch path names /local/game",
            outlook.headline()
        ),
    }
}

/// Without a build: the run-as user of the configuration (or the default one), given the game root once (recorded
/// in `data-dir/game-root.owner`: a later start, whose adopted games own the tree, changes
/// nothing; a new user or game root is given it anew).
fn set_up_run_as(
    cfg: &Config,
    accounts: &(dyn Accounts + Sync),
) -> Result<Option<RunAs>, AgentError> {
    let Some(user) = package::account::choose(accounts, cfg.run_as.as_deref(), None)
        .map_err(PackageError::from)?
    else {
        return Ok(None);
    };
    create_dir(&cfg.game_root)?;
    let record = cfg.data_dir.join("game-root.owner");
    let given = format!("{}:{} {}\n", user.uid, user.gid, cfg.game_root.display());
    if std::fs::read_to_string(&record).ok().as_deref() != Some(given.as_str()) {
        package::account::give(accounts, &user, &cfg.game_root, None)
            .map_err(PackageError::from)?;
        let tmp = record.with_extension("owner.tmp");
        std::fs::write(&tmp, &given)
            .and_then(|()| std::fs::rename(&tmp, &record))
            .map_err(|source| AgentError::RecordOwner {
                path: record.clone(),
                source,
            })?;
    }
    Ok(Some(user))
}
