//! gse-control's own metrics and probes on `metrics-listen`: `GET /metrics` (Prometheus),
//! `/healthz` (the replica answers) and `/readyz` (and its database does).
//!
//! What a replica counts is what only it sees: relay streams open here, the streams it
//! refused by the rule they broke ([`Refusal`]), and what it could not store as an agent sent
//! it. The fleet's own facts (sessions, instances) are in PostgreSQL, for every replica alike.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use deadpool_postgres::Pool;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::relay::Refusal;
use crate::common::listen::{Acceptor, Bounds};
use crate::common::metrics_door::{CONTENT_TYPE, OVER_CAPACITY, not_found, text, unauthorized};

/// How long `/readyz` waits for the database.
const DATABASE_ANSWER: Duration = Duration::from_secs(2);
/// What the listener allows: a scraper or two and the probes, each quick.
const BOUNDS: Bounds = Bounds {
    max_connections: 64,
    first_bytes_within: Duration::from_secs(10),
    first_bytes: 1,
    idle_after: Some(Duration::from_secs(60)),
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RuleLabels {
    rule: &'static str,
}

/// Every metric a replica serves; shared (`Arc`) by the relay and the HTTP server.
pub struct ControlMetrics {
    registry: Registry,
    refused: Family<RuleLabels, Counter>,
    streams: Gauge,
    accepted: Counter,
    values_replaced: Counter,
    batches_passed_over: Counter,
    write_retries: Counter,
}

impl Default for ControlMetrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("gse_control");
        let m = ControlMetrics {
            refused: Family::default(),
            streams: Gauge::default(),
            accepted: Counter::default(),
            values_replaced: Counter::default(),
            batches_passed_over: Counter::default(),
            write_retries: Counter::default(),
            registry: Registry::default(),
        };
        registry.register(
            "relay_refused",
            "Relay streams refused or ended for breaking a rule, by the rule",
            m.refused.clone(),
        );
        for rule in Refusal::ALL {
            let _ = m.refused.get_or_create(&RuleLabels { rule: rule.label() });
        }
        registry.register(
            "relay_streams",
            "Agents' relay streams open on this replica",
            m.streams.clone(),
        );
        registry.register(
            "relay_streams_accepted",
            "Agents' relay streams accepted by this replica",
            m.accepted.clone(),
        );
        registry.register(
            "relay_values_replaced",
            "Batches an agent sent with values PostgreSQL cannot store (NUL characters), stored with them replaced by U+FFFD",
            m.values_replaced.clone(),
        );
        registry.register(
            "relay_batches_passed_over",
            "Batches that could not be stored even with NUL characters replaced, acknowledged and passed over",
            m.batches_passed_over.clone(),
        );
        registry.register(
            "relay_write_retries",
            "Writes of an agent's batch that failed and were tried again",
            m.write_retries.clone(),
        );
        ControlMetrics { registry, ..m }
    }
}

/// An open relay stream, counted in `gse_control_relay_streams` until dropped.
pub struct OpenStream(Arc<ControlMetrics>);

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.streams.dec();
    }
}

impl ControlMetrics {
    /// A stream refused for breaking `rule`.
    pub fn refused(&self, rule: Refusal) {
        self.refused
            .get_or_create(&RuleLabels { rule: rule.label() })
            .inc();
    }

    /// A stream accepted; it counts as open while the guard lives.
    pub fn accepted(self: &Arc<Self>) -> OpenStream {
        self.accepted.inc();
        self.streams.inc();
        OpenStream(self.clone())
    }

    /// A batch stored with its NUL characters replaced.
    pub fn value_replaced(&self) {
        self.values_replaced.inc();
    }

    /// A batch passed over because it could not be stored at all.
    pub fn batch_passed_over(&self) {
        self.batches_passed_over.inc();
    }

    /// A failed write that is tried again.
    pub fn write_retried(&self) {
        self.write_retries.inc();
    }

    /// The metrics in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

struct Door {
    metrics: Arc<ControlMetrics>,
    pool: Pool,
    token: Option<String>,
}

async fn scrape(State(door): State<Arc<Door>>, headers: HeaderMap) -> Response {
    if let Some(refusal) = unauthorized(&headers, door.token.as_deref()) {
        return refusal;
    }
    (
        [(header::CONTENT_TYPE, CONTENT_TYPE)],
        door.metrics.encode(),
    )
        .into_response()
}

/// Alive: the replica's runtime answers.
async fn healthz() -> Response {
    text(StatusCode::OK, "ok: gse-control answers\n".into())
}

/// Ready: the database answers a query within [`DATABASE_ANSWER`]. Its error is logged, not
/// served: a probe's body is read by whoever can reach the port.
async fn readyz(State(door): State<Arc<Door>>) -> Response {
    let check = async {
        let client = door.pool.get().await.map_err(|e| e.to_string())?;
        client
            .simple_query("SELECT 1")
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    };
    match tokio::time::timeout(DATABASE_ANSWER, check).await {
        Ok(Ok(())) => text(StatusCode::OK, "ready: the database answers\n".into()),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "/readyz: the database does not answer");
            text(
                StatusCode::SERVICE_UNAVAILABLE,
                "not ready: the database does not answer (the replica's log says why)\n".into(),
            )
        }
        Err(_) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: the database did not answer within {DATABASE_ANSWER:?}\n"),
        ),
    }
}

/// Serves `/metrics`, `/healthz` and `/readyz` on an already-bound listener until `shutdown`.
/// With `token`, `/metrics` needs it as a bearer token (the probes do not: they say nothing
/// but ready or not).
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<ControlMetrics>,
    pool: Pool,
    token: Option<String>,
    shutdown: CancellationToken,
) {
    let bounds = BOUNDS.within_open_files(crate::common::host::open_files_limit(), 8);
    let door = Arc::new(Door {
        metrics,
        pool,
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
        BOUNDS.first_bytes_within,
        16 << 10,
        shutdown,
        Duration::from_secs(2),
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rule_shows_from_zero_and_counts_its_own() {
        let m = Arc::new(ControlMetrics::default());
        m.refused(Refusal::CredentialInstance);
        m.refused(Refusal::CredentialInstance);
        let open = m.accepted();
        let text = m.encode();
        for rule in Refusal::ALL {
            let want = if rule == Refusal::CredentialInstance {
                2
            } else {
                0
            };
            let line = format!(
                "gse_control_relay_refused_total{{rule=\"{}\"}} {want}",
                rule.label()
            );
            assert!(text.contains(&line), "{line} in\n{text}");
        }
        assert!(text.contains("gse_control_relay_streams 1\n"), "{text}");
        drop(open);
        assert!(m.encode().contains("gse_control_relay_streams 0\n"));
        assert!(
            m.encode()
                .contains("gse_control_relay_streams_accepted_total 1\n")
        );
    }
}
