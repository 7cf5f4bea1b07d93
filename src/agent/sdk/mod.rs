//! The GSE SDK service (`GseGrpcSdkService`) that game processes call.
//!
//! Handlers hold no state: each identifies the caller by its `pid` metadata, sends one typed
//! [`SdkCall`] to the fleet and turns the answer into a `GseResponse`.
//!
//! A success is gRPC OK with `GseResponse{status: OK, responseData: "SUCCESS"}`. A refusal is a
//! non-OK gRPC status whose message names what was wrong (see [`refusal`]), never a panic: GSE
//! SDK copies whose `GseResponse` is an empty message read only the RPC's status, so a
//! refusal carried in the body with gRPC OK would read as a success to them.

mod caller;
pub mod peer;

use crate::api::limits::{DEFAULT_PAGE, MAX_PAGE};
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::{Extensions, Request, Response, Status};

use crate::agent::fleet::actor::HandleError;
use crate::agent::fleet::{FleetError, FleetHandle, PlayerQuery, SdkCall, SdkReply};
use crate::agent::metrics::{Metrics, SdkResult};
use crate::agent::session::PlayerStatus;
use crate::common::listen::{Acceptor, Bounds, ConnInfo};
use crate::common::telemetry::{LogLimit, clip};
use crate::proto::gse_grpc_sdk_service_server::{GseGrpcSdkService, GseGrpcSdkServiceServer};
use crate::proto::{self, GseResponse, gse_response};

pub use caller::{Caller, CallerError};

/// The longest refusal message sent (gRPC C-core reads at most 8 KiB of metadata by default).
pub const MAX_REFUSAL_BYTES: usize = 2048;

/// Why the SDK server stopped.
#[derive(Debug, thiserror::Error)]
pub enum SdkServerError {
    /// Serving failed.
    #[error("GSE SDK server failed: {0}")]
    Serve(#[source] tonic::transport::Error),
}

/// The service implementation.
#[derive(Clone)]
pub struct SdkService {
    fleet: FleetHandle,
    /// Whether a call must come from the process it names ([`peer`]).
    verify_callers: bool,
    /// Refusals are logged at most this often per claimed pid.
    refusals: Arc<LogLimit<u32>>,
    /// Whether the agent's own failure to verify callers has been logged (it is said once).
    unverifiable_said: Arc<std::sync::atomic::AtomicBool>,
    /// What [`peer::self_check`] found, once: `Some` when this host cannot verify callers.
    diag: Arc<tokio::sync::OnceCell<Option<Arc<peer::PeerError>>>>,
    /// Where each call is counted and timed, when metrics are on.
    metrics: Option<Arc<Metrics>>,
}

/// What the SDK server does beyond answering calls.
#[derive(Clone)]
pub struct SdkOptions {
    /// Verify that each call comes from the process its `pid` metadata names.
    pub verify_callers: bool,
    /// Bounds on connections.
    pub bounds: Bounds,
    /// Count and time each call here (metrics on), and say while the server serves.
    pub metrics: Option<Arc<Metrics>>,
}

/// Who is on the other end of an SDK connection, with the verdicts found for it.
pub type SdkConn = ConnInfo<peer::Verdicts>;

/// Refusals logged per claimed pid and window (the rest are counted).
const REFUSALS_LOGGED: u32 = 10;
/// The window of [`REFUSALS_LOGGED`].
const REFUSAL_WINDOW: std::time::Duration = std::time::Duration::from_secs(10);

impl SdkService {
    /// A service that forwards to `fleet`, verifying callers if `verify_callers`.
    pub fn new(fleet: FleetHandle, verify_callers: bool) -> Self {
        Self {
            fleet,
            verify_callers,
            refusals: Arc::new(LogLimit::new(REFUSALS_LOGGED, REFUSAL_WINDOW)),
            unverifiable_said: Arc::default(),
            diag: Arc::default(),
            metrics: None,
        }
    }

    /// Counts and times every call in `metrics`.
    pub fn with_metrics(mut self, metrics: Option<Arc<Metrics>>) -> Self {
        self.metrics = metrics;
        self
    }

    /// Counts one call that took since `start`.
    fn count(&self, rpc: &'static str, result: SdkResult, start: std::time::Instant) {
        if let Some(m) = &self.metrics {
            m.sdk_call(rpc, result, start.elapsed());
        }
    }

    /// Whether the connection the call came on belongs to `pid`: asked of the kernel once per
    /// connection and pid, and a refusal logged that once. When the agent itself cannot look,
    /// the call is refused too (fail closed), and that is said once, as the agent's fault.
    async fn verify(&self, ext: &Extensions, pid: u32) -> Result<(), peer::Refusal> {
        if !self.verify_callers {
            return Ok(());
        }
        let Some(conn) = ext.get::<SdkConn>() else {
            return Err(peer::Refusal::Unverifiable(Arc::new(
                peer::PeerError::Answer("the connection's addresses are unknown"),
            )));
        };
        if let Some(verdict) = conn.memo.get(pid) {
            return verdict;
        }
        let (client, server) = (conn.peer, conn.local);
        let broken = self
            .diag
            .get_or_init(|| async {
                match tokio::task::spawn_blocking(peer::self_check).await {
                    Ok(r) => r.err().map(Arc::new),
                    Err(_) => Some(Arc::new(peer::PeerError::Answer("the self-check panicked"))),
                }
            })
            .await
            .clone();
        // /proc reads: off the async workers.
        let verdict = match broken {
            Some(e) => Err(peer::Refusal::Unverifiable(e)),
            None => tokio::task::spawn_blocking(move || peer::verify(client, server, pid))
                .await
                .unwrap_or_else(|e| {
                    Err(peer::Refusal::Unverifiable(Arc::new(
                        peer::PeerError::Answer(if e.is_panic() {
                            "the check panicked"
                        } else {
                            "the check was cancelled"
                        }),
                    )))
                }),
        };
        match &verdict {
            Ok(()) => conn.memo.put(pid, verdict.clone()),
            // A failure to ask is asked again; said once, loudly, as the agent's own.
            Err(e @ peer::Refusal::Unverifiable(_)) => {
                if !self
                    .unverifiable_said
                    .swap(true, std::sync::atomic::Ordering::Relaxed)
                {
                    tracing::error!(client.addr = %client, process.pid = pid, error = %e, "cannot verify SDK callers: every SDK call is refused until this host is fixed");
                }
            }
            Err(e) => {
                conn.memo.put(pid, verdict.clone());
                if let Some(suppressed) = self.refusals.admit(pid, std::time::Instant::now()) {
                    tracing::warn!(client.addr = %client, process.pid = pid, error = %e, refusals.suppressed = suppressed, "sdk connection refused: the caller is not the process it names");
                }
            }
        }
        verdict
    }

    /// Checks who calls: the `pid` metadata, then (when on) that the connection is that
    /// process's. Counted as refused when not.
    async fn caller(
        &self,
        (meta, ext): (&tonic::metadata::MetadataMap, &Extensions),
        method: &'static str,
        start: std::time::Instant,
    ) -> Result<Caller, Status> {
        let caller = Caller::from_metadata(meta).map_err(|e| {
            self.count(method, SdkResult::BadCaller, start);
            Status::invalid_argument(e.to_string())
        })?;
        if let Err(refusal) = self.verify(ext, caller.pid).await {
            let (result, status) = match refusal {
                peer::Refusal::Unverifiable(_) => (
                    SdkResult::Unverifiable,
                    Status::internal(refusal.to_string()),
                ),
                _ => (
                    SdkResult::NotVerified,
                    Status::permission_denied(refusal.to_string()),
                ),
            };
            self.count(method, result, start);
            return Err(status);
        }
        Ok(caller)
    }

    async fn call(&self, caller: &Caller, call: SdkCall) -> Result<SdkReply, HandleError> {
        let first = self.fleet.sdk(caller.pid, call.clone()).await;
        match first {
            // A helper process the game forked calls with its own pid: it is still in the
            // game's process group, which the game leads, and has the game's uid (a process
            // of another user in the group speaks for nobody).
            Err(HandleError::Fleet(FleetError::UnknownPid(_))) => {
                match crate::agent::process::process_group(caller.pid)
                    .filter(|g| *g != caller.pid && peer::same_owner(caller.pid, *g))
                {
                    Some(group) => match self.fleet.sdk(group, call).await {
                        Err(HandleError::Fleet(FleetError::UnknownPid(_))) => first,
                        other => other,
                    },
                    None => first,
                }
            }
            other => other,
        }
    }

    /// Counts a call's outcome and logs a refusal (values cut, lines rate-limited per claimed
    /// pid: the caller drives them).
    fn outcome<T>(
        &self,
        caller: &Caller,
        method: &'static str,
        start: std::time::Instant,
        result: Result<T, HandleError>,
    ) -> Result<T, Status> {
        self.count(
            method,
            if result.is_ok() {
                SdkResult::Ok
            } else {
                SdkResult::Refused
            },
            start,
        );
        result.map_err(|e| {
            let message = e.to_string();
            if let Some(suppressed) = self.refusals.admit(caller.pid, std::time::Instant::now()) {
                tracing::info!(process.pid = caller.pid, request.id = %clip(&caller.request_id), rpc = method, error = %clip(&message), refusals.suppressed = suppressed, "sdk call refused");
            }
            refusal(&e)
        })
    }

    async fn respond(
        &self,
        parts: (&tonic::metadata::MetadataMap, &Extensions),
        method: &'static str,
        call: SdkCall,
    ) -> Result<Response<GseResponse>, Status> {
        let start = std::time::Instant::now();
        let caller = self.caller(parts, method, start).await?;
        if let Some(field) = nul_in(&call) {
            self.count(method, SdkResult::Refused, start);
            return Err(Status::invalid_argument(format!(
                "{field} holds a NUL character (U+0000), which no GSE value may hold"
            )));
        }
        tracing::debug!(process.pid = caller.pid, request.id = %clip(&caller.request_id), rpc = method, "sdk call");
        let result = self.call(&caller, call).await;
        self.outcome(&caller, method, start, result)?;
        Ok(Response::new(GseResponse {
            status: gse_response::Status::Ok as i32,
            response_data: "SUCCESS".into(),
            error_message: String::new(),
        }))
    }
}

/// The first field of `call` holding a NUL character: refused at the door, as the control
/// API refuses one, since a control plane's database cannot store it.
fn nul_in(call: &SdkCall) -> Option<&'static str> {
    let nul = |s: &str| s.contains('\0');
    match call {
        SdkCall::ProcessReady { log_paths, .. } if log_paths.iter().any(|p| nul(p)) => {
            Some("logPathsToUpload")
        }
        SdkCall::Activate { gss_id, .. }
        | SdkCall::TerminateSession { gss_id }
        | SdkCall::UpdatePolicy { gss_id, .. }
            if nul(gss_id) =>
        {
            Some("gameServerSessionId")
        }
        SdkCall::AcceptPlayer {
            gss_id,
            player_session_id,
        }
        | SdkCall::RemovePlayer {
            gss_id,
            player_session_id,
        } if nul(gss_id) || nul(player_session_id) => Some(if nul(gss_id) {
            "gameServerSessionId"
        } else {
            "playerSessionId"
        }),
        SdkCall::UpdatePolicy { policy, .. } if nul(policy) => {
            Some("newPlayerSessionCreationPolicy")
        }
        _ => None,
    }
}

/// The gRPC status of a refused call, its message the reason: `NOT_FOUND` for an unknown
/// process or resource, `INVALID_ARGUMENT` for a malformed parameter, `FAILED_PRECONDITION`
/// for a call the current state does not allow, `RESOURCE_EXHAUSTED` for a limit reached, and
/// `UNAVAILABLE` while the agent stops. The message travels in a header, so it is bounded
/// ([`MAX_REFUSAL_BYTES`]): a caller's huge value cannot make the answer one no client reads.
pub fn refusal(e: &HandleError) -> Status {
    let message = crate::common::telemetry::clip_to(&e.to_string(), MAX_REFUSAL_BYTES).into_owned();
    match e {
        HandleError::Stopped => Status::unavailable(message),
        HandleError::Fleet(f) => match f {
            FleetError::UnknownPid(_) | FleetError::NotFound { .. } => Status::not_found(message),
            FleetError::Invalid { .. } => Status::invalid_argument(message),
            FleetError::Denied(_) | FleetError::Rule { .. } => Status::failed_precondition(message),
            FleetError::Limit(_) => Status::resource_exhausted(message),
        },
    }
}

#[tonic::async_trait]
impl GseGrpcSdkService for SdkService {
    async fn process_ready(
        &self,
        request: Request<proto::ProcessReadyRequest>,
    ) -> Result<Response<GseResponse>, Status> {
        let (meta, ext, r) = request.into_parts();
        self.respond(
            (&meta, &ext),
            "ProcessReady",
            SdkCall::ProcessReady {
                client_port: r.client_port,
                grpc_port: r.grpc_port,
                log_paths: r.log_paths_to_upload,
            },
        )
        .await
    }

    async fn activate_game_server_session(
        &self,
        request: Request<proto::ActivateGameServerSessionRequest>,
    ) -> Result<Response<GseResponse>, Status> {
        let (meta, ext, r) = request.into_parts();
        self.respond(
            (&meta, &ext),
            "ActivateGameServerSession",
            SdkCall::Activate {
                gss_id: r.game_server_session_id,
                max_players: r.max_players,
            },
        )
        .await
    }

    async fn accept_player_session(
        &self,
        request: Request<proto::AcceptPlayerSessionRequest>,
    ) -> Result<Response<GseResponse>, Status> {
        let (meta, ext, r) = request.into_parts();
        self.respond(
            (&meta, &ext),
            "AcceptPlayerSession",
            SdkCall::AcceptPlayer {
                gss_id: r.game_server_session_id,
                player_session_id: r.player_session_id,
            },
        )
        .await
    }

    async fn remove_player_session(
        &self,
        request: Request<proto::RemovePlayerSessionRequest>,
    ) -> Result<Response<GseResponse>, Status> {
        let (meta, ext, r) = request.into_parts();
        self.respond(
            (&meta, &ext),
            "RemovePlayerSession",
            SdkCall::RemovePlayer {
                gss_id: r.game_server_session_id,
                player_session_id: r.player_session_id,
            },
        )
        .await
    }

    async fn describe_player_sessions(
        &self,
        request: Request<proto::DescribePlayerSessionsRequest>,
    ) -> Result<Response<proto::DescribePlayerSessionsResponse>, Status> {
        const RPC: &str = "DescribePlayerSessions";
        let start = std::time::Instant::now();
        let (meta, ext, r) = request.into_parts();
        let caller = self.caller((&meta, &ext), RPC, start).await?;
        let query = player_query(r).map_err(|e| {
            self.count(RPC, SdkResult::Refused, start);
            Status::invalid_argument(e)
        })?;
        let answer = self.call(&caller, SdkCall::DescribePlayers(query)).await;
        match self.outcome(&caller, RPC, start, answer)? {
            SdkReply::Players(page, next) => {
                Ok(Response::new(proto::DescribePlayerSessionsResponse {
                    next_token: next.unwrap_or_default(),
                    player_sessions: page.iter().map(|p| p.to_proto()).collect(),
                }))
            }
            SdkReply::Done => Err(Status::internal(
                "unexpected reply to DescribePlayerSessions",
            )),
        }
    }

    async fn update_player_session_creation_policy(
        &self,
        request: Request<proto::UpdatePlayerSessionCreationPolicyRequest>,
    ) -> Result<Response<GseResponse>, Status> {
        let (meta, ext, r) = request.into_parts();
        self.respond(
            (&meta, &ext),
            "UpdatePlayerSessionCreationPolicy",
            SdkCall::UpdatePolicy {
                gss_id: r.game_server_session_id,
                policy: r.new_player_session_creation_policy,
            },
        )
        .await
    }

    async fn terminate_game_server_session(
        &self,
        request: Request<proto::TerminateGameServerSessionRequest>,
    ) -> Result<Response<GseResponse>, Status> {
        let (meta, ext, r) = request.into_parts();
        self.respond(
            (&meta, &ext),
            "TerminateGameServerSession",
            SdkCall::TerminateSession {
                gss_id: r.game_server_session_id,
            },
        )
        .await
    }

    async fn process_ending(
        &self,
        request: Request<proto::ProcessEndingRequest>,
    ) -> Result<Response<GseResponse>, Status> {
        let (meta, ext, _) = request.into_parts();
        self.respond((&meta, &ext), "ProcessEnding", SdkCall::ProcessEnding)
            .await
    }

    async fn report_custom_data(
        &self,
        request: Request<proto::ReportCustomDataRequest>,
    ) -> Result<Response<GseResponse>, Status> {
        let (meta, ext, r) = request.into_parts();
        self.respond(
            (&meta, &ext),
            "ReportCustomData",
            SdkCall::ReportCustomData {
                current: r.current_custom_count,
                max: r.max_custom_count,
            },
        )
        .await
    }
}

/// Validates a DescribePlayerSessions request into a query.
fn player_query(r: proto::DescribePlayerSessionsRequest) -> Result<PlayerQuery, String> {
    let limit = match r.limit {
        0 => DEFAULT_PAGE,
        n if n < 0 || n as usize > MAX_PAGE => {
            return Err(format!("limit {n} is out of range 1..={MAX_PAGE}"));
        }
        n => n as usize,
    };
    let status = match r.player_session_status_filter.as_str() {
        "" => None,
        s => Some(PlayerStatus::parse(s).ok_or_else(|| {
            format!(
                "playerSessionStatusFilter {s:?} is not RESERVED, ACTIVE, COMPLETED or TIMEDOUT"
            )
        })?),
    };
    let opt = |s: String| (!s.is_empty()).then_some(s);
    Ok(PlayerQuery {
        gss_id: opt(r.game_server_session_id),
        player_id: opt(r.player_id),
        player_session_id: opt(r.player_session_id),
        status,
        next_token: opt(r.next_token),
        limit,
    })
}

/// A connection that has made calls is pinged this often; one that does not answer within
/// [`KEEPALIVE_TIMEOUT`] is closed (a silent client frees its place; a live game stays).
const KEEPALIVE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);
/// See [`KEEPALIVE_INTERVAL`].
const KEEPALIVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

/// The largest SDK request decoded (tonic's default is 4 MiB): GSE's requests are a few ids
/// and ports; a larger one is refused from its length prefix, before it is buffered.
pub const MAX_REQUEST_BYTES: usize = 64 << 10;

/// Serves the SDK on an already-bound listener until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    fleet: FleetHandle,
    options: SdkOptions,
    shutdown: CancellationToken,
) -> Result<(), SdkServerError> {
    let addr: Option<SocketAddr> = listener.local_addr().ok();
    tracing::info!(sdk.addr = ?addr, sdk.verify_callers = options.verify_callers, connections.max = options.bounds.max_connections, "GSE SDK server listening");
    let incoming = Acceptor::<peer::Verdicts>::new(listener, "sdk", options.bounds).into_stream();
    let metrics = options.metrics.clone();
    if let Some(m) = &metrics {
        m.set_sdk_serving(true);
    }
    let served = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .add_service(
            GseGrpcSdkServiceServer::new(
                SdkService::new(fleet, options.verify_callers).with_metrics(options.metrics),
            )
            .max_decoding_message_size(MAX_REQUEST_BYTES),
        )
        .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
        .await
        .map_err(SdkServerError::Serve);
    if let Some(m) = &metrics {
        m.set_sdk_serving(false);
    }
    served
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nul_in_any_string_is_named() {
        let ready = SdkCall::ProcessReady {
            client_port: 1,
            grpc_port: 2,
            log_paths: vec!["ok.log".into(), "bad\0.log".into()],
        };
        assert_eq!(nul_in(&ready), Some("logPathsToUpload"));
        let accept = SdkCall::AcceptPlayer {
            gss_id: "gssess-1".into(),
            player_session_id: "psess-\0".into(),
        };
        assert_eq!(nul_in(&accept), Some("playerSessionId"));
        let fine = SdkCall::TerminateSession {
            gss_id: "gssess-1".into(),
        };
        assert_eq!(nul_in(&fine), None);
    }

    #[test]
    fn describe_players_validation() {
        let ok = player_query(proto::DescribePlayerSessionsRequest {
            player_session_status_filter: "ACTIVE".into(),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(ok.limit, DEFAULT_PAGE);
        assert_eq!(ok.status, Some(PlayerStatus::Active));
        for bad in [
            proto::DescribePlayerSessionsRequest {
                limit: -1,
                ..Default::default()
            },
            proto::DescribePlayerSessionsRequest {
                limit: 5000,
                ..Default::default()
            },
            proto::DescribePlayerSessionsRequest {
                player_session_status_filter: "GONE".into(),
                ..Default::default()
            },
        ] {
            assert!(player_query(bad).is_err());
        }
    }
}
