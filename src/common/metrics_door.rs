//! What both halves' metrics listeners answer alike: plain-text bodies, the bearer-token
//! check of `/metrics`, the refusal over the connection cap and the 404.

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// `Content-Type` of `/metrics`: prometheus-client writes the OpenMetrics text format, which
/// Prometheus reads.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Sent to a connection over the listener's cap before it is closed.
pub const OVER_CAPACITY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: 39\r\n\r\ntoo many open connections to /metrics\r\n";

/// A plain-text answer.
pub fn text(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

/// The `401` for a scrape without `token` as its bearer token, if it lacks it (`None`: no
/// token is set, or it was given).
pub fn unauthorized(headers: &HeaderMap, token: Option<&str>) -> Option<Response> {
    let token = token?;
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    (!crate::common::token::authorizes(given, token)).then(|| {
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "/metrics needs `Authorization: Bearer <the token of metrics-token-file>`\n",
        )
            .into_response()
    })
}

/// Any path but the three served.
pub async fn not_found() -> Response {
    text(
        StatusCode::NOT_FOUND,
        "not served: GET /metrics, /healthz or /readyz\n".into(),
    )
}
