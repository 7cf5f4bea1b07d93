//! The control API's HTTP side: `POST /` as the Tencent Cloud API serves it (action in
//! `X-TC-Action`) and `POST /capi` as GSE Local does (action in the body), on one listener,
//! within the connection bounds, with every request checked by [`Guard`] and, when a keys file
//! is configured, by its TC3 signature. Every answer, refusals included, is a Tencent envelope.

use crate::api::ErrorCode;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, Method, Uri};
use axum::routing::post;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::CapiError;
use crate::api::envelope;
use crate::api::guard::Guard;
use crate::api::tc3;
use crate::common::listen::{Acceptor, Bounds};

/// What answers a request once it passed the door: the agent's fleet or gse-control. It gets the action (from `X-TC-Action`, or `None` for GSE Local's `POST
/// /capi`, where the body names it) and the body, and returns the whole response envelope.
pub trait Handler: Clone + Send + Sync + 'static {
    /// Answers one request.
    fn answer(
        &self,
        action: Option<&str>,
        body: &[u8],
    ) -> impl std::future::Future<Output = Value> + Send;

    /// Answers one request sent to `host` (its `Host` header, else the listener's address):
    /// for handlers whose answers link back to this listener.
    fn answer_at(
        &self,
        action: Option<&str>,
        body: &[u8],
        host: &str,
    ) -> impl std::future::Future<Output = Value> + Send {
        let _ = host;
        self.answer(action, body)
    }

    /// Keeps the record of a call that changed something (the door has logged it already).
    fn audit(
        &self,
        record: crate::api::audit::Record,
    ) -> impl std::future::Future<Output = ()> + Send {
        let _ = record;
        async {}
    }
}

/// How one API listener is run.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Names the listener in logs (`capi`, `control-api`).
    pub name: &'static str,
    /// A TC3 keys file: when set, every request must be signed with one of its keys.
    pub keys_file: Option<std::path::PathBuf>,
    /// Extra `Host` values accepted (behind a proxy).
    pub allowed_hosts: Vec<String>,
    /// Connection bounds and timeouts.
    pub limits: ConnectionBounds,
}

/// Bounds on one API listener's connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionBounds {
    /// Live connections at most (lowered to fit the open-files limit).
    pub max_connections: usize,
    /// A request's head must arrive within this (also how long a new connection may stay
    /// silent).
    pub header_timeout: std::time::Duration,
    /// A connection that sends nothing for this long is closed.
    pub idle_timeout: std::time::Duration,
}

impl Default for ConnectionBounds {
    fn default() -> Self {
        Self {
            max_connections: 256,
            header_timeout: std::time::Duration::from_secs(10),
            idle_timeout: std::time::Duration::from_secs(60),
        }
    }
}

/// Why an API listener stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Serving failed.
    #[error("control API server failed: {0}")]
    Serve(#[source] std::io::Error),
    /// The keys file cannot be used.
    #[error(transparent)]
    Keys(#[from] super::tc3::keys::KeysError),
}

/// Sent to a connection over the cap before it is closed.
const OVER_CAPACITY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: 126\r\n\r\n{\"Response\":{\"Error\":{\"Code\":\"RequestLimitExceeded\",\"Message\":\"too many open connections to the control API\"},\"RequestId\":\"\"}}";

/// The largest request body read (GSE's largest parameter, GameServerSessionData, is 4 KB).
pub const MAX_BODY_BYTES: usize = 1 << 20;
/// The largest request head (request line and headers) read; a larger one gets 431.
const MAX_HEAD_BYTES: usize = 64 << 10;
/// How long open requests get to finish once the server is asked to stop.
const DRAIN: std::time::Duration = std::time::Duration::from_secs(5);

/// What every request goes through.
struct Door<H> {
    handler: H,
    guard: Guard,
    keys: Option<tc3::keys::KeyFile>,
    /// The listener's address, the host of requests without `Host`.
    bound: std::net::SocketAddr,
}

/// Which form a request takes.
#[derive(Clone, Copy)]
enum Form {
    /// `POST /`, the action in `X-TC-Action`.
    Tencent,
    /// `POST /capi`, the action in the body.
    Local,
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?;
    // A repeated header is ambiguous: what was signed may not be what is read.
    if values.next().is_some() {
        return None;
    }
    first.to_str().ok()
}

impl<H: Handler> Door<H> {
    /// Answers, then records the call if it changed something.
    async fn answer_audited(
        &self,
        form: Form,
        method: &Method,
        headers: &HeaderMap,
        uri: &Uri,
        body: Result<Bytes, BytesRejection>,
        peer: Option<std::net::SocketAddr>,
    ) -> Value {
        let raw = body.as_ref().ok().cloned();
        let mut secret_id = None;
        let answer = self
            .answer(form, method, headers, uri, body, &mut secret_id)
            .await;
        let body = raw.unwrap_or_default();
        let action = match form {
            Form::Tencent => header(headers, "x-tc-action").map(str::to_string),
            Form::Local => None,
        };
        let params: serde_json::Map<String, Value> = if action
            .as_deref()
            .is_some_and(|a| !crate::api::audit::changes(a))
        {
            serde_json::Map::new()
        } else {
            serde_json::from_slice(&body).unwrap_or_default()
        };
        let action = action.or_else(|| {
            params
                .get("Action")
                .and_then(Value::as_str)
                .map(str::to_string)
        });
        // A call a keyed API could not authenticate is no one's: not recorded (its refusal is
        // the answer), so unsigned floods cannot fill the trail.
        let anonymous = self.keys.is_some() && secret_id.is_none();
        if let Some(action) = action.filter(|a| crate::api::audit::changes(a) && !anonymous) {
            let source = peer
                .map(|p| p.to_string())
                .unwrap_or_else(|| "unknown".into());
            let record = crate::api::audit::Record::of(
                secret_id.as_deref(),
                &action,
                &params,
                &source,
                answer.get("Response").unwrap_or(&answer),
                crate::api::time::now_ms() as i64,
            );
            record.log();
            self.handler.audit(record).await;
        }
        answer
    }

    async fn answer(
        &self,
        form: Form,
        method: &Method,
        headers: &HeaderMap,
        uri: &Uri,
        body: Result<Bytes, BytesRejection>,
        signed_by: &mut Option<String>,
    ) -> Value {
        let body = match body {
            Ok(body) => body,
            Err(e) => {
                return envelope(Err(CapiError::new(
                    ErrorCode::InvalidParameter,
                    format!(
                        "the request body cannot be read: {e} (at most {MAX_BODY_BYTES} bytes)"
                    ),
                )));
            }
        };
        if let Err(e) = self.guard.check(headers, uri) {
            return envelope(Err(e));
        }
        if let Some(keys) = &self.keys {
            let received = tc3::Received {
                method: method.as_str(),
                uri: uri.path(),
                query: uri.query().unwrap_or_default(),
                header: |name: &str| header(headers, name),
                body: &body,
            };
            let (keys, policies) = keys.current();
            let secret_id = match tc3::verify(&keys, &received, tc3::now_unix()) {
                Ok(id) => id,
                Err(e) => return envelope(Err(CapiError::new(e.code(), e.to_string()))),
            };
            *signed_by = Some(secret_id.clone());
            // The action the handler will answer: the header's in Tencent's form (a body's
            // Action must equal it), the body's in GSE Local's.
            let action = match form {
                Form::Tencent => header(headers, "x-tc-action"),
                Form::Local => None,
            };
            if let Some(policy) = policies.get(&secret_id)
                && let Err(e) = permitted(policy, action, &body)
            {
                return envelope(Err(e));
            }
        }
        let bound = self.bound.to_string();
        let host = header(headers, "host").unwrap_or(&bound);
        match form {
            Form::Local => self.handler.answer_at(None, &body, host).await,
            Form::Tencent => {
                let Some(action) = header(headers, "x-tc-action") else {
                    return envelope(Err(CapiError::missing("X-TC-Action")));
                };
                if let Some(version) = header(headers, "x-tc-version")
                    && version != tc3::API_VERSION
                {
                    return envelope(Err(CapiError::value(
                        "X-TC-Version",
                        format!("{version:?} is not GSE's API version {}", tc3::API_VERSION),
                    )));
                }
                self.handler.answer_at(Some(action), &body, host).await
            }
        }
    }
}

/// Whether a key's `policy` allows the request: its action (`header_action`, else the body's) on
/// the resources its parameters name; refused as Tencent's `UnauthorizedOperation`. A body the
/// API would refuse anyway is left to it (its error says more).
fn permitted(
    policy: &tc3::policy::Policy,
    header_action: Option<&str>,
    body: &[u8],
) -> Result<(), CapiError> {
    let params: serde_json::Map<String, Value> = serde_json::from_slice(body).unwrap_or_default();
    let action = header_action
        .or_else(|| params.get("Action").and_then(Value::as_str))
        .unwrap_or_default();
    policy
        .decide(action, &tc3::policy::resources_of(action, &params))
        .map_err(|d| CapiError::new(ErrorCode::UnauthorizedOperation, d.to_string()))
}

/// `POST /` and `POST /capi`: the path says the form.
async fn api<H: Handler>(
    State(door): State<Arc<Door<H>>>,
    method: Method,
    headers: HeaderMap,
    uri: Uri,
    peer: Option<axum::Extension<crate::common::listen::Peer>>,
    body: Result<Bytes, BytesRejection>,
) -> axum::Json<Value> {
    let form = if uri.path() == "/capi" {
        Form::Local
    } else {
        Form::Tencent
    };
    let peer = peer.map(|axum::Extension(p)| p.0);
    axum::Json(
        door.answer_audited(form, &method, &headers, &uri, body, peer)
            .await,
    )
}

/// Any other method or path: a Tencent envelope saying what is served.
async fn not_served(method: Method, uri: Uri) -> axum::Json<Value> {
    axum::Json(envelope(Err(CapiError::new(
        ErrorCode::InvalidParameter,
        format!(
            "{method} {} is not served: use POST / (Tencent Cloud API 3.0, X-TC-Action) or POST /capi (GSE Local)",
            uri.path()
        ),
    ))))
}

/// Serves a Tencent Cloud API on an already-bound listener until `shutdown`: HTTP/1.1, within
/// `options.limits` (a request's head must arrive within the header timeout, which also closes
/// idle keep-alive connections), every request checked by the guard and, with a keys file, by
/// its TC3 signature, before `handler` sees it.
pub async fn serve_with<H: Handler>(
    listener: TcpListener,
    handler: H,
    options: ServeOptions,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    serve_routes(listener, handler, options, Router::new(), shutdown).await
}

/// [`serve_with`], with `extra` routes served beside the API on the same listener, without
/// its door (they check their own requests).
pub async fn serve_routes<H: Handler>(
    listener: TcpListener,
    handler: H,
    options: ServeOptions,
    extra: Router,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    let bound = listener.local_addr().map_err(ServeError::Serve)?;
    let limits = options.limits.clone();
    let bounds = Bounds {
        max_connections: limits.max_connections,
        first_bytes_within: limits.header_timeout,
        // hyper's header timeout covers the rest of the head.
        first_bytes: 1,
        idle_after: Some(limits.idle_timeout),
    }
    .within_open_files(crate::common::host::open_files_limit(), 4);
    let keys = match &options.keys_file {
        Some(path) => Some(tc3::keys::KeyFile::open(path).map_err(ServeError::Keys)?),
        None => None,
    };
    tracing::info!(api = options.name, api.addr = %bound, api.signed = keys.is_some(), connections.max = bounds.max_connections, "API listening");
    let guard = Guard::new(bound, &options.allowed_hosts);
    let door = Arc::new(Door {
        handler,
        guard: if keys.is_some() {
            guard.signed()
        } else {
            guard
        },
        keys,
        bound,
    });
    let app = Router::new()
        .route("/", post(api::<H>).fallback(not_served))
        .route("/capi", post(api::<H>).fallback(not_served))
        .with_state(door)
        .merge(extra)
        .fallback(not_served)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES));
    let acceptor = Acceptor::<()>::new(listener, options.name, bounds).with_refusal(OVER_CAPACITY);
    let open = crate::common::listen::serve_http1(
        acceptor,
        app,
        limits.header_timeout,
        MAX_HEAD_BYTES,
        shutdown,
        DRAIN,
    )
    .await;
    if open > 0 {
        tracing::warn!(
            api = options.name,
            connections = open,
            "API connections still open at stop"
        );
    }
    Ok(())
}
