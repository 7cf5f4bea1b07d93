//! The Tencent Cloud GSE API across every host: the same door, parameters, checks and JSON as
//! the agent's control API ([`crate::agent::capi`]), answered from PostgreSQL, with commands routed to
//! the host that has the session.

mod aliases;
pub mod audit;
mod fleets;
mod queues;
mod sessions;

use crate::api::ErrorCode;
use std::sync::Arc;

use deadpool_postgres::Pool;
use serde_json::Value;

use super::db::DbError;
use super::hub::{COMMAND_LIMIT, Hub, HubError};
use super::writer::Writer;
use crate::api::params::Params;
use crate::api::server::Handler;
use crate::api::{CapiError, envelope};
use crate::upstream_proto as up;

/// The region in the ARNs of what gse-control itself holds (fleets, aliases, queues); hosts
/// announce their own regions for placement.
pub const ARN_REGION: &str = "local";

/// The actions gse-control serves.
pub const ACTIONS: &[&str] = &[
    "CreateGameServerSession",
    "DescribeGameServerSessions",
    "DescribeGameServerSessionDetails",
    "SearchGameServerSessions",
    "JoinGameServerSession",
    "JoinGameServerSessionBatch",
    "DescribePlayerSessions",
    "UpdateGameServerSession",
    "EndGameServerSessionAndProcess",
    "ListFleets",
    "DescribeFleetAttributes",
    "UpdateFleetName",
    "UpdateFleetAttributes",
    "DescribeFleetUtilization",
    "DescribeFleetEvents",
    "DescribeInstances",
    "DescribeInstancesExtend",
    "SetServerReserved",
    "SetServerWeight",
    "UpdateRuntimeConfiguration",
    "DescribeRuntimeConfiguration",
    "CreateAlias",
    "DescribeAlias",
    "ListAliases",
    "UpdateAlias",
    "DeleteAlias",
    "ResolveAlias",
    "CreateGameServerSessionQueue",
    "DescribeGameServerSessionQueues",
    "UpdateGameServerSessionQueue",
    "DeleteGameServerSessionQueue",
    "StartGameServerSessionPlacement",
    "DescribeGameServerSessionPlacement",
    "StopGameServerSessionPlacement",
    "DescribeGameServerSessionQueueStatistics",
    "DescribeFleetRollout",
    "RemoveInstance",
    "DescribeAuditRecords",
];

/// One replica's API.
#[derive(Clone)]
pub struct ControlApi {
    pub(super) pool: Pool,
    pub(super) hub: Arc<Hub>,
    /// Records what creates and joins made.
    pub(super) writer: Writer,
    /// Wakes this replica's placement worker.
    pub(super) placements: Arc<tokio::sync::Notify>,
    /// Hosts a build roll-out deploys to at once.
    pub(super) rollout_batch: usize,
    /// Fleets known to exist (fleets are never deleted), so a call does not ask again.
    known_fleets: Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
}

impl ControlApi {
    /// An API over `pool`, sending commands through `hub` and recording what they made
    /// through `writer`; `placements` wakes the placement worker when a placement starts;
    /// build roll-outs deploy to `rollout_batch` hosts at once.
    pub fn new(
        pool: Pool,
        hub: Arc<Hub>,
        writer: Writer,
        placements: Arc<tokio::sync::Notify>,
        rollout_batch: usize,
    ) -> Self {
        Self {
            pool,
            hub,
            writer,
            placements,
            rollout_batch,
            known_fleets: Arc::default(),
        }
    }

    async fn dispatch(&self, header: Option<&str>, body: &[u8]) -> Result<Value, CapiError> {
        let (action, map) = crate::api::request(header, body)?;
        match action.as_str() {
            "CreateGameServerSession" => self.create_session(map).await,
            "DescribeGameServerSessions" => self.describe_sessions(map, false).await,
            "DescribeGameServerSessionDetails" => self.describe_sessions(map, true).await,
            "SearchGameServerSessions" => self.search_sessions(map).await,
            "JoinGameServerSession" => self.join(map, false).await,
            "JoinGameServerSessionBatch" => self.join(map, true).await,
            "DescribePlayerSessions" => self.describe_players(map).await,
            "UpdateGameServerSession" => self.update_session(map).await,
            "EndGameServerSessionAndProcess" => self.end_session(map).await,
            "ListFleets" => self.list_fleets(map).await,
            "DescribeFleetAttributes" => self.describe_fleet_attributes(map).await,
            "UpdateFleetName" => self.update_fleet_name(map).await,
            "UpdateFleetAttributes" => self.update_fleet_attributes(map).await,
            "DescribeFleetUtilization" => self.describe_utilization(map).await,
            "DescribeFleetEvents" => self.describe_events(map).await,
            "DescribeInstances" => self.describe_instances(map, false).await,
            "DescribeInstancesExtend" => self.describe_instances(map, true).await,
            "SetServerReserved" => self.set_reserved(map).await,
            "SetServerWeight" => self.set_weight(map).await,
            "UpdateRuntimeConfiguration" => self.update_runtime(map).await,
            "DescribeRuntimeConfiguration" => self.describe_runtime(map).await,
            "CreateAlias" => self.create_alias(map).await,
            "DescribeAlias" => self.describe_alias(map).await,
            "ListAliases" => self.list_aliases(map).await,
            "UpdateAlias" => self.update_alias(map).await,
            "DeleteAlias" => self.delete_alias(map).await,
            "ResolveAlias" => self.resolve_alias(map).await,
            "CreateGameServerSessionQueue" => self.put_queue(map, true).await,
            "UpdateGameServerSessionQueue" => self.put_queue(map, false).await,
            "DescribeGameServerSessionQueues" => self.describe_queues(map).await,
            "DeleteGameServerSessionQueue" => self.delete_queue(map).await,
            "StartGameServerSessionPlacement" => self.start_placement(map).await,
            "DescribeGameServerSessionPlacement" => self.describe_placement(map).await,
            "StopGameServerSessionPlacement" => self.stop_placement(map).await,
            "DescribeGameServerSessionQueueStatistics" => self.queue_statistics(map).await,
            "DescribeFleetRollout" => self.describe_rollout(map).await,
            "RemoveInstance" => self.remove_instance(map).await,
            "DescribeAuditRecords" => self.describe_audit(map).await,
            other => Err(CapiError::new(
                ErrorCode::InvalidAction,
                format!(
                    "the action `{other}` is not served by gse-control; supported: {}",
                    ACTIONS.join(", ")
                ),
            )),
        }
    }

    /// The fleet a request names by `FleetId` or `AliasId` (resolved); it must be one an
    /// agent announced.
    async fn fleet(&self, p: &Params, required: bool) -> Result<Option<String>, CapiError> {
        let fleet = match (p.opt_str("FleetId", 128)?, p.opt_str("AliasId", 128)?) {
            (Some(f), _) => f,
            (None, Some(alias)) => self.resolve(&alias).await?,
            (None, None) if required => return Err(CapiError::missing("FleetId")),
            (None, None) => return Ok(None),
        };
        if self
            .known_fleets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains(&fleet)
        {
            return Ok(Some(fleet));
        }
        let db = self.db().await?;
        let known = db
            .query_opt("SELECT 1 FROM fleets WHERE fleet_id = $1", &[&fleet])
            .await
            .map_err(db_error("reading a fleet"))?;
        if known.is_some() {
            self.known_fleets
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(fleet.clone());
        } else {
            return Err(CapiError::new(
                ErrorCode::ResourceNotFound,
                format!("fleet {fleet} does not exist: no agent of it ever connected"),
            ));
        }
        Ok(Some(fleet))
    }

    pub(crate) async fn db(&self) -> Result<deadpool_postgres::Object, CapiError> {
        self.pool.get().await.map_err(|e| {
            tracing::error!(error = %e, "the database is unreachable");
            CapiError::new(
                ErrorCode::InternalError,
                "the control plane's database is unreachable (the replica's log says why)",
            )
        })
    }

    /// Sends a command to an instance and returns its result's JSON, or the agent's refusal.
    async fn command(&self, instance: &str, kind: up::command::Kind) -> Result<Value, CapiError> {
        let r = self
            .hub
            .command(instance, kind, COMMAND_LIMIT)
            .await
            .map_err(hub_error)?;
        refusal(&r)?;
        if r.response_json.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&r.response_json).map_err(|e| {
            CapiError::new(
                ErrorCode::InternalError,
                format!("instance {instance} answered with JSON that does not parse: {e}"),
            )
        })
    }
}

impl Handler for ControlApi {
    async fn answer(&self, action: Option<&str>, body: &[u8]) -> Value {
        envelope(self.dispatch(action, body).await)
    }

    async fn audit(&self, record: crate::api::audit::Record) {
        audit::store(self.pool.clone(), self.hub.replica().to_string(), record);
    }
}

/// An agent's refusal as the caller's error, with its Tencent code.
fn refusal(r: &up::CommandResult) -> Result<(), CapiError> {
    if r.ok {
        return Ok(());
    }
    Err(CapiError::new(
        tencent_code(&r.error_code),
        r.message.clone(),
    ))
}

/// One of Tencent's codes the agent uses (another string becomes `FailedOperation`).
fn tencent_code(code: &str) -> ErrorCode {
    ErrorCode::parse(code)
        .filter(|c| {
            !matches!(
                c,
                ErrorCode::AuthFailure
                    | ErrorCode::AuthFailureInvalidAuthorization
                    | ErrorCode::AuthFailureSecretIdNotFound
                    | ErrorCode::AuthFailureSignatureExpire
                    | ErrorCode::AuthFailureSignatureFailure
                    | ErrorCode::UnauthorizedOperation
            )
        })
        .unwrap_or(ErrorCode::FailedOperation)
}

fn hub_error(e: HubError) -> CapiError {
    match e {
        HubError::NotConnected(_) => CapiError::new(ErrorCode::ResourceUnavailable, e.to_string()),
        HubError::Timeout { .. } => CapiError::new(ErrorCode::FailedOperation, e.to_string()),
        // The command may have been queued for the host: its outcome is unknown.
        HubError::Db(d) => {
            tracing::error!(error = %d, "a command's database step failed");
            CapiError::new(
                ErrorCode::FailedOperation,
                "the command's outcome is unknown: the control plane's database failed (the replica's log says why)",
            )
        }
    }
}

/// A failed write of the replica's writer as the caller sees it (the log keeps the text).
pub(crate) fn write_error(step: &'static str) -> impl FnOnce(DbError) -> CapiError {
    move |e| {
        tracing::error!(error = %e, "a database write failed");
        CapiError::new(
            ErrorCode::InternalError,
            format!(
                "the control plane's database failed while {step} (the replica's log says why)"
            ),
        )
    }
}

/// A failed statement as the caller sees it: the step, never the database's own text (which
/// may quote a caller's value or the schema); the log keeps that.
pub(crate) fn db_error(step: &'static str) -> impl FnOnce(tokio_postgres::Error) -> CapiError {
    move |e| {
        let e = DbError::Query { step, source: e };
        tracing::error!(error = %e, "a database statement failed");
        CapiError::new(
            ErrorCode::InternalError,
            format!(
                "the control plane's database failed while {step} (the replica's log says why)"
            ),
        )
    }
}

/// `Offset`/`NextToken` paging: the offset a token names.
fn offset_of(token: Option<String>) -> Result<i64, CapiError> {
    match token {
        None => Ok(0),
        Some(t) => t.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
            CapiError::value("NextToken", format!("{t:?} is not a token this API gave"))
        }),
    }
}
