//! gse-control: GSE's cloud half for many hosts. Agents relay their events to it and take
//! commands from it; studio backends call the Tencent Cloud GSE API on it. Every fact is in
//! PostgreSQL, so replicas are stateless and any of them answers any call.
//!
//! - [`relay`]: the agents' streams; what they send is stored ([`store`]) before it is
//!   acknowledged; commands reach the replica holding a stream through [`hub`].
//! - [`api`]: the Tencent Cloud API, through the shared door ([`crate::api::server::serve_with`]).
//! - [`choice`]: where a placement may go (pure); [`placement`]: the worker that places them; [`rollout`]: build roll-outs; [`sync`]: a returning
//!   host brought up to its fleet; [`liveness`]: heartbeats and Lost instances.
//! - [`metrics`]: the replica's own counters and probes on `metrics-listen`.

pub mod api;
pub mod choice;
pub mod config;
pub mod credentials;
pub mod db;
pub mod hub;
pub mod liveness;
pub mod metrics;
pub mod placement;
pub mod relay;
pub mod rollout;
pub mod store;
pub mod sync;
pub mod writer;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};

use crate::api::server::{ConnectionBounds, ServeOptions};
use crate::common::listen::{Acceptor, Bounds};
use crate::upstream_proto::control_plane_server::ControlPlaneServer;
use config::ControlConfig;

/// The largest message an agent may send: a complete snapshot of a busy host (1,000 kept
/// sessions with their players) passes gRPC's default 4 MiB.
pub const MAX_AGENT_MESSAGE: usize = 64 << 20;

/// How long open relay streams are given at shutdown before they are cut.
const RELAY_DRAIN: std::time::Duration = std::time::Duration::from_secs(1);

/// Why a replica could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The database failed.
    #[error(transparent)]
    Db(#[from] db::DbError),
    /// A listener could not be bound.
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        /// Which listener.
        what: &'static str,
        /// Its address.
        addr: SocketAddr,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A file named by the config could not be read.
    #[error("cannot read {path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// agent-tokens-file cannot be used.
    #[error(transparent)]
    Credentials(#[from] credentials::CredentialsError),
    /// metrics-token-file cannot be used.
    #[error("metrics-token-file: {0}")]
    MetricsToken(#[from] crate::common::token::TokenError),
    /// The relay's TLS settings are unusable.
    #[error("relay-tls: {0}")]
    Tls(#[source] tonic::transport::Error),
    /// A server failed.
    #[error("{what} failed: {message}")]
    Serve {
        /// Which server.
        what: &'static str,
        /// What happened.
        message: String,
    },
}

/// What the relay listener allows: every agent the open-files limit leaves room for (less
/// the descriptors the replica keeps for itself); a connection must start TLS or HTTP/2
/// within 10 s; a live agent's stream stays however quiet it is (keepalive pings find dead
/// ones). Accepted sockets send without delay (Nagle's algorithm held a command back until
/// the agent acknowledged the last write: tens of milliseconds on every create).
const RELAY_BOUNDS: Bounds = Bounds {
    max_connections: usize::MAX,
    first_bytes_within: std::time::Duration::from_secs(10),
    first_bytes: 24,
    idle_after: None,
};

/// Relay connections that have not yet carried a stream whose Hello passed every rule: 256 at
/// most (each holds about 20 KiB of connection buffers, so silent connections cannot grow a
/// replica by more than about 5 MiB, however many), each closed 15 s after it was accepted (a Hello
/// is due within 10 s of its stream). An agent sends its Hello with its first request, so
/// only connections being set up count: a reconnecting fleet's hosts refused here retry.
const RELAY_PROOF: crate::common::listen::ProofBounds = crate::common::listen::ProofBounds {
    max_unproven: 256,
    within: std::time::Duration::from_secs(15),
};

/// Where a running replica listens (written to `--endpoints-file`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Endpoints {
    /// The Tencent Cloud API.
    pub api: SocketAddr,
    /// The agents' relay.
    pub relay: SocketAddr,
    /// This replica's id.
    pub replica: String,
    /// `/metrics`, `/healthz` and `/readyz`, when `metrics-listen` is set.
    #[serde(default)]
    pub metrics: Option<SocketAddr>,
}

/// Unix milliseconds now: the time placements and queues are stamped with.
pub(crate) fn now_ms() -> i64 {
    crate::api::time::now_ms() as i64
}

fn read(path: &std::path::Path) -> Result<Vec<u8>, ControlError> {
    std::fs::read(path).map_err(|source| ControlError::File {
        path: path.to_path_buf(),
        source,
    })
}

/// Runs one replica until `shutdown`; `started` gets its endpoints once it listens.
pub async fn run(
    cfg: ControlConfig,
    shutdown: CancellationToken,
    started: impl FnOnce(&Endpoints),
) -> Result<(), ControlError> {
    let pool = db::pool(&cfg.database, db::POOL_SIZE)?;
    // Heartbeats have connections of their own: a busy pool must not make this replica look
    // dead to the others.
    let beats = db::pool(&cfg.database, 2)?;
    let version = db::migrate(&pool).await?;
    let replica = format!("replica-{}", uuid::Uuid::new_v4());
    tracing::info!(db.version = version, replica = %replica, "database ready");
    let tokens = match &cfg.agent_tokens_file {
        Some(path) => Some(Arc::new(credentials::TokenFile::open(path)?)),
        None => None,
    };
    let (listeners, endpoints) = bind(&cfg, &replica).await?;
    liveness::register(
        &pool,
        &replica,
        &endpoints.api.to_string(),
        &endpoints.relay.to_string(),
    )
    .await?;
    let hub = hub::Hub::new(replica.clone(), pool.clone());
    let background = tokio_util::task::TaskTracker::new();
    let listener_task = tokio::spawn(hub.clone().listen(cfg.database.clone()));
    let wake = Arc::new(tokio::sync::Notify::new());
    let activated = Arc::new(tokio::sync::Notify::new());
    let writer = writer::Writer::start(pool.clone(), activated.clone());
    let api = api::ControlApi::new(
        pool.clone(),
        hub.clone(),
        writer.clone(),
        wake.clone(),
        cfg.rollout_batch,
    );
    let placement_task = tokio::spawn(placement::work(api.clone(), wake, activated));
    let vacuum_task = tokio::spawn(db::vacuum(pool.clone()));
    let liveness_task = tokio::spawn(liveness::watch(
        beats,
        pool.clone(),
        hub.clone(),
        cfg.instance_lost_after.get(),
        cfg.rollout_batch,
    ));

    let mut server = relay_server(&cfg)?;
    let replica_metrics = Arc::new(metrics::ControlMetrics::default());
    let metrics_task = serve_metrics(
        &cfg,
        listeners.metrics,
        &replica_metrics,
        &pool,
        &background,
        &shutdown,
    )?;
    let relay = relay::RelayService {
        pool: pool.clone(),
        hub: hub.clone(),
        writer,
        tokens,
        waiting: Arc::default(),
        certificates: cfg
            .relay_tls
            .as_ref()
            .is_some_and(|t| t.client_ca_file.is_some()),
        metrics: replica_metrics,
    };
    let relay_stop = shutdown.clone();
    let relay_task = background.spawn(
        server
            .add_service(
                ControlPlaneServer::new(relay).max_decoding_message_size(MAX_AGENT_MESSAGE),
            )
            .serve_with_incoming_shutdown(
                Acceptor::<()>::new(
                    listeners.relay,
                    "relay-listen",
                    RELAY_BOUNDS.within_open_files(crate::common::host::open_files_limit(), 1),
                )
                .with_proof(RELAY_PROOF)
                .into_stream(),
                async move { relay_stop.cancelled().await },
            ),
    );
    let api_task = background.spawn(crate::api::server::serve_with(
        listeners.api,
        api,
        ServeOptions {
            name: "control-api",
            keys_file: cfg.api_keys_file.clone(),
            allowed_hosts: cfg.api_allowed_hosts.clone(),
            limits: ConnectionBounds::default(),
        },
        shutdown.clone(),
    ));
    tracing::info!(api.addr = %endpoints.api, relay.addr = %endpoints.relay, metrics.addr = ?endpoints.metrics, replica = %replica, "gse-control serving");
    started(&endpoints);
    shutdown.cancelled().await;
    // Relay streams never end by themselves: the agents are given a moment to see the
    // listener close, then their streams are cut (they reconnect to another replica).
    let relay_result = match tokio::time::timeout(RELAY_DRAIN, relay_task).await {
        Ok(r) => r,
        Err(_) => Ok(Ok(())),
    };
    let api_result = api_task.await;
    if let Some(t) = metrics_task {
        let _ = t.await;
    }
    for t in [listener_task, placement_task, liveness_task, vacuum_task] {
        t.abort();
    }
    if let Err(e) = liveness::unregister(&pool, &replica).await {
        tracing::warn!(error = %e, "cannot unregister the replica; others take over after its heartbeat stops");
    }
    ended("the relay server", relay_result)?;
    ended("the API server", api_result)
}

/// Serves the replica's metrics and probes when `metrics-listen` is set.
fn serve_metrics(
    cfg: &ControlConfig,
    listener: Option<TcpListener>,
    replica_metrics: &Arc<metrics::ControlMetrics>,
    pool: &deadpool_postgres::Pool,
    background: &tokio_util::task::TaskTracker,
    shutdown: &CancellationToken,
) -> Result<Option<tokio::task::JoinHandle<()>>, ControlError> {
    let Some(listener) = listener else {
        return Ok(None);
    };
    let token = cfg
        .metrics_token_file
        .as_deref()
        .map(crate::common::token::read)
        .transpose()?;
    Ok(Some(background.spawn(metrics::serve(
        listener,
        replica_metrics.clone(),
        pool.clone(),
        token,
        shutdown.clone(),
    ))))
}

/// The replica's bound listeners.
struct Listeners {
    api: TcpListener,
    relay: TcpListener,
    metrics: Option<TcpListener>,
}

/// Binds every listener; their addresses, as bound, are the replica's endpoints.
async fn bind(cfg: &ControlConfig, replica: &str) -> Result<(Listeners, Endpoints), ControlError> {
    async fn bind(
        what: &'static str,
        addr: SocketAddr,
    ) -> Result<(TcpListener, SocketAddr), ControlError> {
        let failed = |source| ControlError::Bind { what, addr, source };
        let listener = TcpListener::bind(addr).await.map_err(failed)?;
        let bound = listener.local_addr().map_err(failed)?;
        Ok((listener, bound))
    }
    let (api, api_addr) = bind("api-listen", cfg.api_listen).await?;
    let (relay, relay_addr) = bind("relay-listen", cfg.relay_listen).await?;
    let (metrics, metrics_addr) = match cfg.metrics_listen {
        Some(addr) => {
            let (l, a) = bind("metrics-listen", addr).await?;
            (Some(l), Some(a))
        }
        None => (None, None),
    };
    let endpoints = Endpoints {
        api: api_addr,
        relay: relay_addr,
        replica: replica.to_string(),
        metrics: metrics_addr,
    };
    Ok((
        Listeners {
            api,
            relay,
            metrics,
        },
        endpoints,
    ))
}

/// The relay's gRPC server: keepalive to find dead agents, TLS (and client certificates) when
/// configured.
fn relay_server(cfg: &ControlConfig) -> Result<Server, ControlError> {
    let mut server = Server::builder()
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(std::time::Duration::from_secs(10)));
    if let Some(tls) = &cfg.relay_tls {
        let mut t = ServerTlsConfig::new().identity(Identity::from_pem(
            read(&tls.cert_file)?,
            read(&tls.key_file)?,
        ));
        if let Some(ca) = &tls.client_ca_file {
            t = t.client_ca_root(Certificate::from_pem(read(ca)?));
        }
        server = server.tls_config(t).map_err(ControlError::Tls)?;
    }
    Ok(server)
}

/// A server task's end as the replica's result.
fn ended<E: std::fmt::Display>(
    what: &'static str,
    result: Result<Result<(), E>, tokio::task::JoinError>,
) -> Result<(), ControlError> {
    let message = match result {
        Ok(Ok(())) => return Ok(()),
        Ok(Err(e)) => e.to_string(),
        Err(e) => e.to_string(),
    };
    Err(ControlError::Serve { what, message })
}
