//! A built agent started: the fleet, its servers and the relay spawned, and the order in which
//! they end — fleet, log archives, servers, the relay's last delivery, the outbox writer.

use std::sync::Arc;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{ARCHIVE_DRAIN, Agent, AgentError, RELAY_FLUSH, Upstream};
use crate::agent::capi::{self, Capi};
use crate::agent::config::Config;
use crate::agent::event::EventBus;
use crate::agent::fleet::actor::{Persistence, Stops};
use crate::agent::fleet::{self, FleetHandle};
use crate::agent::lock::DataDirLock;
use crate::agent::metrics;
use crate::agent::sdk;
use crate::agent::store::{Records, SDK_ADDRESS_KEY, value_record};
use crate::agent::upstream;
use crate::common::listen::Bounds;

impl Agent {
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
                sdk_options(&self.cfg, metrics.clone()),
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
        drop(bus);
        let tasks = Tasks {
            lock: self._lock,
            fleet: fleet_task,
            archiver,
            servers_stop,
            sdk: sdk_task,
            capi: capi_task,
            metrics: metrics_task,
            relay,
            relay_stop,
            upstream: self.upstream,
            bus: self.bus,
        };
        Running {
            fleet,
            done: tokio::spawn(tasks.end()),
        }
    }
}

/// The SDK server's options from the config.
fn sdk_options(cfg: &Config, metrics: Option<Arc<metrics::Metrics>>) -> sdk::SdkOptions {
    sdk::SdkOptions {
        verify_callers: cfg.sdk_verify_callers,
        bounds: Bounds {
            max_connections: cfg.connections.sdk_max,
            first_bytes_within: cfg.connections.header_timeout.get(),
            // The whole HTTP/2 client preface.
            first_bytes: 24,
            // Live games stay connected; keepalive pings find dead peers.
            idle_after: None,
        }
        .within_open_files(crate::common::host::open_files_limit(), 2),
        metrics,
    }
}

/// What a started agent runs, ended in order by [`Tasks::end`].
struct Tasks {
    /// Held until everything has ended: no second agent starts on this data-dir while this one
    /// still writes to it.
    lock: DataDirLock,
    fleet: JoinHandle<()>,
    archiver: JoinHandle<()>,
    servers_stop: CancellationToken,
    sdk: JoinHandle<Result<(), sdk::SdkServerError>>,
    capi: Option<JoinHandle<Result<(), crate::api::server::ServeError>>>,
    metrics: Option<JoinHandle<Result<(), metrics::MetricsServerError>>>,
    relay: Option<JoinHandle<()>>,
    relay_stop: CancellationToken,
    upstream: Option<Upstream>,
    /// The agent's own handle on the bus, dropped once the relay has ended.
    bus: EventBus,
}

impl Tasks {
    /// Waits for the fleet, then ends the rest: the queued log archives (bounded), the
    /// servers, the relay once it has delivered what it can, and the outbox writer.
    async fn end(self) -> Result<(), AgentError> {
        let _lock = self.lock;
        let fleet_result = self.fleet.await;
        let mut archiver = self.archiver;
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
        self.servers_stop.cancel();
        if let (Some(relay), Some(u)) = (self.relay, &self.upstream) {
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
            self.relay_stop.cancel();
            let _ = relay.await;
        }
        drop(self.bus);
        if let Err(e) = fleet_result {
            // A bug in the agent must not cost a match: the games are left running, as
            // after a SIGKILL, for the next agent to adopt from the saved state.
            crate::agent::process::detach_all();
            return Err(AgentError::Fleet(e.to_string()));
        }
        if let Ok(r) = self.sdk.await {
            r?;
        }
        if let Some(t) = self.capi
            && let Ok(r) = t.await
        {
            r?;
        }
        if let Some(t) = self.metrics
            && let Ok(r) = t.await
        {
            r?;
        }
        // Every sender of the outbox queue is gone now: the writer drains it and ends.
        if let Some(u) = self.upstream {
            let _ = tokio::task::spawn_blocking(move || u.writer.join()).await;
        }
        Ok(())
    }
}

/// A started agent.
pub struct Running {
    /// The fleet's typed door (the same one the control API uses).
    pub fleet: FleetHandle,
    done: JoinHandle<Result<(), AgentError>>,
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
