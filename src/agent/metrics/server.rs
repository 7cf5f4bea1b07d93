//! The HTTP side: `GET /metrics`, `/healthz` and `/readyz` on `metrics-listen`, within the
//! connection bounds; and the sampler's loop.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::{Metrics, SAMPLE_PERIOD, Sampler};
use crate::agent::config::ConnectionLimits;
use crate::agent::fleet::{Control, ControlReply, FleetGauges, FleetHandle};
use crate::agent::upstream::outbox::Outbox;
use crate::common::listen::{Acceptor, Bounds};
use crate::common::metrics_door::{OVER_CAPACITY, not_found, text, unauthorized};

/// Why the metrics server stopped.
#[derive(Debug, thiserror::Error)]
pub enum MetricsServerError {
    /// The bound address could not be read.
    #[error("metrics server: cannot read its address: {0}")]
    LocalAddr(#[source] std::io::Error),
    /// The token file could not be read at start.
    #[error("metrics server: {0}")]
    Token(#[from] crate::common::token::TokenError),
}

/// What a scrape reads besides the counters.
#[derive(Clone)]
pub struct Sources {
    /// The fleet, asked for its counts ([`Control::DescribeGauges`]).
    pub fleet: FleetHandle,
    /// The upstream outbox, when a control plane is configured.
    pub outbox: Option<Outbox>,
}

/// How long a scrape waits for the fleet's answer before serving without its counts.
const FLEET_ANSWER: Duration = Duration::from_secs(2);
/// How long open requests get to finish once the server is asked to stop.
const DRAIN: Duration = Duration::from_secs(2);

struct Door {
    metrics: Arc<Metrics>,
    sources: Sources,
    token: Option<String>,
}

/// The fleet's counts, or why there are none.
async fn fleet_gauges(fleet: &FleetHandle) -> Result<FleetGauges, String> {
    match tokio::time::timeout(FLEET_ANSWER, fleet.control(Control::DescribeGauges)).await {
        Ok(Ok(ControlReply::Gauges(g))) => Ok(*g),
        Ok(Ok(other)) => Err(format!("unexpected answer {other:?}")),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!(
            "the fleet supervisor did not answer within {FLEET_ANSWER:?}"
        )),
    }
}

async fn scrape(State(door): State<Arc<Door>>, headers: HeaderMap) -> Response {
    if let Some(refusal) = unauthorized(&headers, door.token.as_deref()) {
        return refusal;
    }
    let _one_at_a_time = door.metrics.update.lock().await;
    let gauges = fleet_gauges(&door.sources.fleet).await;
    if let Err(e) = &gauges {
        tracing::warn!(error = %e, "metrics scrape without the fleet's counts");
    }
    door.metrics.observe_fleet(gauges.as_ref().ok());
    if let Some(outbox) = door.sources.outbox.clone() {
        let depth = outbox.unacked();
        // One read of the outbox file: off the async workers.
        let oldest = tokio::task::spawn_blocking(move || oldest_unacked(&outbox))
            .await
            .ok()
            .flatten();
        door.metrics.observe_outbox(depth, oldest);
    }
    (
        [(header::CONTENT_TYPE, super::CONTENT_TYPE)],
        door.metrics.encode(),
    )
        .into_response()
}

/// The age of the oldest event the control plane has not acknowledged.
fn oldest_unacked(outbox: &Outbox) -> Option<Duration> {
    match outbox.read_after(outbox.acked(), 1) {
        Ok(events) => {
            let e = events.first()?;
            let at = SystemTime::UNIX_EPOCH + Duration::from_millis(e.time_unix_ms.max(0) as u64);
            Some(SystemTime::now().duration_since(at).unwrap_or_default())
        }
        Err(e) => {
            tracing::warn!(error = %e, "metrics cannot read the outbox's oldest event");
            None
        }
    }
}

/// Alive: the server answers and the fleet supervisor answers a query.
async fn healthz(State(door): State<Arc<Door>>) -> Response {
    match fleet_gauges(&door.sources.fleet).await {
        Ok(_) => text(StatusCode::OK, "ok: the fleet supervisor answers\n".into()),
        Err(e) => text(StatusCode::SERVICE_UNAVAILABLE, format!("not alive: {e}\n")),
    }
}

/// Ready: the SDK server accepts calls, and every process the runtime configuration asks for
/// is running (not draining, not stopping); the body says what is missing.
async fn readyz(State(door): State<Arc<Door>>) -> Response {
    let gauges = fleet_gauges(&door.sources.fleet).await;
    let (ready, body) = readiness(
        door.metrics.sdk_serving(),
        gauges.as_ref().map_err(String::as_str),
    );
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    text(status, body)
}

/// Whether the agent is ready, with a one-line reason per fact checked.
pub(super) fn readiness(sdk_serving: bool, fleet: Result<&FleetGauges, &str>) -> (bool, String) {
    let mut missing = Vec::new();
    let mut facts = Vec::new();
    if sdk_serving {
        facts.push("the SDK server accepts calls".to_string());
    } else {
        missing.push("the SDK server is not serving".to_string());
    }
    match fleet {
        Err(e) => missing.push(e.to_string()),
        Ok(g) if g.stopping => missing.push("the fleet is draining or stopping".into()),
        Ok(g) if g.slots_running < g.slots => {
            missing.push(format!(
                "{} of {} processes the runtime configuration asks for are running",
                g.slots_running, g.slots
            ));
            for e in &g.entries {
                if let Some(d) = e.paused_for {
                    missing.push(format!(
                        "entry {} ({}) is paused for {} after a crash loop",
                        e.number,
                        e.launch_path,
                        humantime::format_duration(Duration::from_secs(d.as_secs()))
                    ));
                }
            }
        }
        Ok(g) => {
            let active = g.processes.iter().filter(|p| p.phase == "ACTIVE").count();
            facts.push(format!(
                "the fleet runs every process it should ({} of {}, {active} ACTIVE)",
                g.slots_running, g.slots
            ));
        }
    }
    if missing.is_empty() {
        (true, format!("ready: {}\n", facts.join("; ")))
    } else {
        (false, format!("not ready: {}\n", missing.join("; ")))
    }
}

/// Serves `/metrics`, `/healthz` and `/readyz` on an already-bound listener until `shutdown`,
/// and samples the game processes every [`SAMPLE_PERIOD`] meanwhile. With `token_file`,
/// `/metrics` needs its bearer token (the probes do not: they say nothing but ready or not).
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    sources: Sources,
    token_file: Option<std::path::PathBuf>,
    limits: ConnectionLimits,
    shutdown: CancellationToken,
) -> Result<(), MetricsServerError> {
    let bound = listener
        .local_addr()
        .map_err(MetricsServerError::LocalAddr)?;
    let token = token_file
        .as_deref()
        .map(crate::common::token::read)
        .transpose()?;
    let bounds = Bounds {
        max_connections: limits.capi_max,
        first_bytes_within: limits.header_timeout.get(),
        first_bytes: 1,
        idle_after: Some(limits.idle_timeout.get()),
    }
    .within_open_files(crate::common::host::open_files_limit(), 8);
    tracing::info!(metrics.addr = %bound, metrics.token = token.is_some(), connections.max = bounds.max_connections, "metrics listening");
    let sampler = tokio::spawn(run_sampler(
        metrics.clone(),
        sources.fleet.clone(),
        shutdown.clone(),
    ));
    let door = Arc::new(Door {
        metrics,
        sources,
        token,
    });
    let app = Router::new()
        .route("/metrics", get(scrape))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .fallback(not_found)
        .with_state(door);
    let acceptor = Acceptor::<()>::new(listener, "metrics", bounds).with_refusal(OVER_CAPACITY);
    crate::common::listen::serve_http1(
        acceptor,
        app,
        limits.header_timeout.get(),
        16 << 10,
        shutdown.clone(),
        DRAIN,
    )
    .await;
    let _ = sampler.await;
    Ok(())
}

/// Every [`SAMPLE_PERIOD`] until `stop`: asks the fleet for its processes and reads their
/// usage on a blocking thread.
async fn run_sampler(metrics: Arc<Metrics>, fleet: FleetHandle, stop: CancellationToken) {
    let mut sampler = Some(Sampler::new());
    let mut tick = tokio::time::interval(SAMPLE_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        let procs: Vec<(String, usize, u32)> = match fleet_gauges(&fleet).await {
            Ok(g) => g
                .processes
                .into_iter()
                .map(|p| (p.process_id, p.entry, p.pid))
                .collect(),
            Err(e) => {
                tracing::debug!(error = %e, "no sample: the fleet did not answer");
                continue;
            }
        };
        let Some(mut s) = sampler.take() else {
            return;
        };
        let pids: Vec<u32> = procs.iter().map(|(_, _, pid)| *pid).collect();
        let sampled = tokio::task::spawn_blocking(move || {
            let start = Instant::now();
            let usage = s.sample(&pids);
            (s, usage, start.elapsed())
        })
        .await;
        let Ok((s, usage, took)) = sampled else {
            tracing::warn!(
                "the game process sampler failed; per-process usage is no longer sampled"
            );
            return;
        };
        sampler = Some(s);
        let _one_at_a_time = metrics.update.lock().await;
        metrics.observe_usage(&procs, &usage, took);
    }
}
