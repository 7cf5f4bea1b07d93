//! The running agent: `Config → build → run`. [`Agent::build`] creates directories and binds
//! every listener before any process starts; [`Agent::run`] supervises until shutdown.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::agent::config::Config;
use crate::agent::event::EventBus;
use crate::agent::fleet::Fleet;
use crate::agent::fleet::actor::Stops;
use crate::agent::fleet::state::{Recorded, RestoreError};
use crate::agent::metrics;
use crate::agent::package::{PackageError, RunAs};
use crate::agent::sdk;
use crate::agent::store::{
    EVENT_SEQUENCE_KEY, Records, SDK_ADDRESS_KEY, StateStore, StoreError, read_value,
};
use crate::agent::upstream::ledger::{Ledger, LedgerError};
use crate::agent::upstream::outbox::{Outbox, OutboxError};
use crate::api::time::now_ms;

mod install;
mod start;

pub use install::{announce_local_game, install_build, install_sample_build};
pub use start::Running;

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
