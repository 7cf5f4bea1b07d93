//! The relay: one long-lived bidirectional stream to the control plane, dialled out (to each
//! configured endpoint in turn), resumed after every fault with jittered exponential backoff. On
//! each connection: a Hello with the last acknowledged sequence, a complete snapshot of the
//! host's state, then every outbox event after that sequence, in order, then new ones as they
//! are committed; partial snapshots as sessions change ([`super::snapshot`]); periodic instance
//! status (only the latest, never queued); one result per command. Acknowledgements prune the
//! outbox.
//!
//! Commands are applied once per id across connections and restarts; [`super::book`] says
//! how (claim before running, record before answering, interrupted ids answered, not re-run),
//! [`super::ledger`] where it is kept.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use super::book::CommandBook;
use super::cut::LinkCut;
use super::ledger::Ledger;
use super::outbox::Outbox;
use crate::api::time::now_ms;
use std::sync::Arc;

use crate::agent::config::{Config, UpstreamConfig};
use crate::agent::event::{Event, EventBus, EventCode};
use crate::agent::fleet::FleetHandle;

mod session;

use session::session;

/// Events read from the outbox per batch.
const BATCH: usize = 512;
/// How long the relay waits before reading again after the outbox refused a read (its file
/// is being reopened after a disk fault); the connection stays up meanwhile.
const READ_RETRY: Duration = Duration::from_secs(1);
/// Command results remembered for repeated ids: at most this many...
const RESULTS_KEPT: u64 = 10_000;
/// ...and none older than this.
const RESULTS_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
/// How often old command results are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Why one connection ended.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The endpoint or TLS settings are unusable.
    #[error("upstream endpoint {endpoint}: {message}")]
    Endpoint {
        /// The endpoint.
        endpoint: String,
        /// What is wrong.
        message: String,
    },
    /// A TLS or token file could not be read.
    #[error("cannot read {path}: {source}")]
    File {
        /// The file.
        path: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Connecting failed.
    #[error("cannot connect to {endpoint}: {source}")]
    Connect {
        /// The endpoint.
        endpoint: String,
        /// The error.
        #[source]
        source: tonic::transport::Error,
    },
    /// The control plane refused our credentials.
    #[error("the control plane refused the agent's credentials: {0}")]
    Auth(String),
    /// The stream failed.
    #[error("the stream to the control plane failed: {0}")]
    Stream(String),
    /// The control plane closed the stream.
    #[error("the control plane closed the stream")]
    Closed,
    /// A step took longer than its limit (a peer that accepts TCP and then says nothing).
    #[error("{step} did not finish within {}", humantime::format_duration(*limit))]
    Timeout {
        /// What was waited for.
        step: &'static str,
        /// Its limit.
        limit: Duration,
    },
    /// Crash rehearsal cut the link (`chaos: enabled`).
    #[error("crash rehearsal cut the link to the control plane for {}", humantime::format_duration(*remaining))]
    Cut {
        /// How long the cut lasts from when the connection was dropped.
        remaining: Duration,
    },
    /// The outbox file was corrupt and replaced: its new epoch needs a new Hello.
    #[error("the outbox was replaced (epoch {old} → {new}); reconnecting under the new epoch")]
    NewEpoch {
        /// The epoch this connection said Hello with.
        old: u64,
        /// The outbox's epoch now.
        new: u64,
    },
}

fn read(path: &std::path::Path) -> Result<Vec<u8>, RelayError> {
    std::fs::read(path).map_err(|source| RelayError::File {
        path: path.display().to_string(),
        source,
    })
}

async fn channel(cfg: &UpstreamConfig, url: &str) -> Result<Channel, RelayError> {
    let bad = |message: String| RelayError::Endpoint {
        endpoint: url.to_string(),
        message,
    };
    let mut endpoint = Endpoint::from_shared(url.to_string())
        .map_err(|e| bad(e.to_string()))?
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10));
    if url.starts_with("https://") {
        let mut tls = ClientTlsConfig::new();
        if let Some(ca) = &cfg.ca_file {
            tls = tls.ca_certificate(Certificate::from_pem(read(ca)?));
        } else {
            tls = tls.with_enabled_roots();
        }
        if let (Some(cert), Some(key)) = (&cfg.client_cert, &cfg.client_key) {
            tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
        }
        endpoint = endpoint.tls_config(tls).map_err(|e| bad(e.to_string()))?;
    }
    endpoint
        .connect()
        .await
        .map_err(|source| RelayError::Connect {
            endpoint: url.to_string(),
            source,
        })
}

/// Runs until `shutdown`, reconnecting as needed: the endpoints are dialled in order, and a
/// failed or lost connection moves on to the next (replicas of one control plane). A jittered
/// backoff separates every two attempts; it doubles after each full lap of failures (with one
/// endpoint: after each failure), up to `reconnect-max`, and starts again from
/// `reconnect-initial` once a connection has lived longer than that. While `cut` is in force
/// (crash rehearsal), the link stays down.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    cfg: UpstreamConfig,
    agent: Arc<Config>,
    outbox: Outbox,
    ledger: Ledger,
    fleet: FleetHandle,
    bus: EventBus,
    cut: LinkCut,
    shutdown: CancellationToken,
) {
    let mut rotation = Rotation::new(
        cfg.endpoints.len(),
        cfg.reconnect_initial.get(),
        cfg.reconnect_max.get(),
    );
    let mut connected_before = false;
    let book = CommandBook::new(ledger.clone());
    let _prune = AbortOnDrop(tokio::spawn(prune_ledger(ledger)));
    loop {
        // A link cut by crash rehearsal stays down until the cut is over.
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = cut.over() => {}
        }
        let index = rotation.current();
        // Validation guarantees at least one endpoint.
        let url = cfg.endpoints.get(index).map(String::as_str).unwrap_or("");
        tracing::debug!(upstream.endpoint = %url, upstream.index = index, "dialling the control plane");
        let started = tokio::time::Instant::now();
        let result = tokio::select! {
            () = shutdown.cancelled() => return,
            until = cut.started() => Err(RelayError::Cut {
                remaining: until.saturating_duration_since(tokio::time::Instant::now()),
            }),
            r = session(&cfg, url, &agent, &outbox, &fleet, &bus, &book, &shutdown, &mut connected_before) => r,
        };
        if shutdown.is_cancelled() {
            return;
        }
        match &result {
            Ok(()) => {}
            Err(RelayError::Auth(m)) => {
                tracing::error!(upstream.endpoint = %url, error = %m, "control plane refused the credentials; check upstream.token-file");
            }
            Err(e) => {
                tracing::warn!(upstream.endpoint = %url, error = %e, "upstream connection lost")
            }
        }
        if connected_before {
            connected_before = false;
            bus.emit(Event::new(
                EventCode::UpstreamDisconnected,
                match &result {
                    Ok(()) => "control plane connection ended".to_string(),
                    Err(e) => e.to_string(),
                },
            ));
        }
        if matches!(result, Err(RelayError::Cut { .. })) {
            // Not the endpoint's fault: dial the same one again once the cut is over.
            continue;
        }
        let delay = jitter(rotation.ended(started.elapsed()));
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
    }
}

/// Which endpoint is dialled next, and the backoff before it: every failed or lost connection
/// moves on to the next endpoint; the backoff doubles after each full lap of them (with one
/// endpoint, after each attempt, as it always did), up to the cap, and starts again from the
/// initial value after a connection that lived longer than the cap.
#[derive(Debug)]
struct Rotation {
    endpoints: usize,
    /// The endpoint dialled next.
    next: usize,
    /// Attempts made at the current backoff.
    lap: usize,
    backoff: Duration,
    initial: Duration,
    max: Duration,
}

impl Rotation {
    fn new(endpoints: usize, initial: Duration, max: Duration) -> Self {
        Self {
            endpoints: endpoints.max(1),
            next: 0,
            lap: 0,
            backoff: initial,
            initial,
            max,
        }
    }

    /// The index of the endpoint to dial now.
    fn current(&self) -> usize {
        self.next
    }

    /// The attempt on the current endpoint ended after `lived`: moves to the next endpoint and
    /// returns the backoff (before jitter) to wait first.
    fn ended(&mut self, lived: Duration) -> Duration {
        // A connection that lived a while resets the backoff.
        if lived > self.max {
            self.backoff = self.initial;
            self.lap = 0;
        }
        self.next = (self.next + 1) % self.endpoints;
        self.lap += 1;
        let delay = self.backoff;
        // Every endpoint was tried once at this backoff: wait longer on the next lap.
        if self.lap >= self.endpoints {
            self.lap = 0;
            self.backoff = (self.backoff * 2).min(self.max);
        }
        delay
    }
}

/// `step` given up after `limit` (a peer that accepts TCP and then says nothing).
async fn within<T>(
    step: &'static str,
    limit: Duration,
    f: impl std::future::Future<Output = T>,
) -> Result<T, RelayError> {
    tokio::time::timeout(limit, f)
        .await
        .map_err(|_| RelayError::Timeout { step, limit })
}

/// A delay in [d/2, d].
fn jitter(d: Duration) -> Duration {
    let r = (uuid::Uuid::new_v4().as_u128() % 1000) as u32;
    d / 2 + d / 2 * r / 1000
}

/// Prunes the command ledger now and every [`PRUNE_EVERY`], off the command path.
async fn prune_ledger(ledger: Ledger) {
    let mut tick = tokio::time::interval(PRUNE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let l = ledger.clone();
        let pruned = tokio::task::spawn_blocking(move || {
            l.prune(now_ms(), RESULTS_KEPT, RESULTS_MAX_AGE.as_millis() as u64)
        })
        .await;
        match pruned {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => tracing::debug!(ledger.pruned = n, "old command results pruned"),
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot prune the command ledger"),
            Err(e) => tracing::warn!(error = %e, "command ledger pruning failed"),
        }
    }
}

/// Aborts a helper task when the connection ends.
pub(super) struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests;
