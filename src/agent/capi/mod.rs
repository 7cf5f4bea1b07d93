//! The local control API: GSE Local's `POST /capi`, with Tencent Cloud API v3 envelopes.
//!
//! Each action reads and checks its parameters, sends one typed [`Control`] command to the
//! fleet, and renders the reply. Errors are `{"Response": {"Error": {Code, Message}}}` with
//! Tencent's codes; the HTTP status is 200 as in Tencent Cloud API v3.

pub(crate) mod aliases;
pub mod chaos;
mod host;
mod logs;
pub(crate) mod placements;
pub(crate) mod queues;
pub(crate) mod search;
mod serve;
mod unsupported;
pub mod view;

pub use crate::api::CapiError;
pub use serve::serve;

use crate::api::ErrorCode;
use std::sync::Arc;

use serde_json::{Map, Value, json};

use crate::agent::config::Config;
use crate::agent::event::EventBus;
use crate::agent::fleet::actor::HandleError;
use crate::agent::fleet::{
    Control, ControlReply, FleetHandle, FleetStatus, PlayerQuery, SessionQuery,
};
use crate::agent::session::{GssStatus, PlayerStatus};
use crate::api::params::Params;
use crate::api::requests::{
    CREATE_SESSION_PARAMS, DESCRIBE_SESSIONS_PARAMS, join_request, new_session, session_update,
};
use crate::api::{envelope, request};

/// Shared by the handlers: the fleet door and what the views need.
#[derive(Clone)]
pub struct Capi {
    fleet: FleetHandle,
    bus: EventBus,
    cfg: Arc<Config>,
    logs: crate::agent::logarchive::LogLinks,
    /// The upstream link's switch for crash rehearsal (`None`: no upstream).
    link_cut: Option<crate::agent::upstream::cut::LinkCut>,
}

impl Capi {
    /// A control API over `fleet`, handing out links to the game log archives of `logs`.
    pub fn new(
        fleet: FleetHandle,
        bus: EventBus,
        cfg: Arc<Config>,
        logs: crate::agent::logarchive::LogLinks,
    ) -> Self {
        Self {
            fleet,
            bus,
            cfg,
            logs,
            link_cut: None,
        }
    }

    /// With the switch crash rehearsal cuts the upstream link with (`None`: no upstream).
    pub fn with_link_cut(self, link_cut: Option<crate::agent::upstream::cut::LinkCut>) -> Self {
        Self { link_cut, ..self }
    }

    /// Handles one GSE Local request (`POST /capi`: the action in the body's `Action`) and
    /// returns the response body.
    pub async fn handle(&self, body: &[u8]) -> Value {
        envelope(self.dispatch(None, body, &self.own_host()).await)
    }

    /// Handles one Tencent Cloud API request (`POST /`: the action in `X-TC-Action`, the
    /// parameters in the body) and returns the response body.
    pub async fn handle_action(&self, action: &str, body: &[u8]) -> Value {
        envelope(self.dispatch(Some(action), body, &self.own_host()).await)
    }

    /// The host links name when the request did not say which it was sent to: the
    /// configured listen address.
    pub(crate) fn own_host(&self) -> String {
        self.cfg
            .capi_listen
            .map(|a| a.to_string())
            .unwrap_or_else(|| "localhost".into())
    }

    /// Answers one request; `host` is where it was sent (links in the answer point there).
    pub(crate) async fn dispatch(
        &self,
        header_action: Option<&str>,
        body: &[u8],
        host: &str,
    ) -> Result<Value, CapiError> {
        let (action, map) = request(header_action, body)?;
        match action.as_str() {
            "CreateGameServerSession" => self.create_session(map).await,
            "DescribeGameServerSessions" => self.describe_sessions(map).await,
            "JoinGameServerSession" => self.join(map, false).await,
            "JoinGameServerSessionBatch" => self.join(map, true).await,
            "DescribePlayerSessions" => self.describe_players(map).await,
            "EndGameServerSessionAndProcess" => self.end_session_and_process(map).await,
            "UpdateGameServerSession" => self.update_session(map).await,
            "UpdateRuntimeConfiguration" => self.update_runtime(map).await,
            "DescribeGameServerSessionDetails" => self.describe_session_details(map).await,
            "SearchGameServerSessions" => self.search_sessions(map).await,
            "CreateAlias" => self.create_alias(map).await,
            "DescribeAlias" => self.describe_alias(map).await,
            "ListAliases" => self.list_aliases(map).await,
            "UpdateAlias" => self.update_alias(map).await,
            "DeleteAlias" => self.delete_alias(map).await,
            "ResolveAlias" => self.resolve_alias(map).await,
            "CreateGameServerSessionQueue" => self.create_queue(map).await,
            "DescribeGameServerSessionQueues" => self.describe_queues(map).await,
            "UpdateGameServerSessionQueue" => self.update_queue(map).await,
            "DeleteGameServerSessionQueue" => self.delete_queue(map).await,
            "StartGameServerSessionPlacement" => self.start_placement(map).await,
            "DescribeGameServerSessionPlacement" => self.describe_placement(map).await,
            "StopGameServerSessionPlacement" => self.stop_placement(map).await,
            "DescribeRuntimeConfiguration" => self.describe_runtime(map).await,
            "DescribeInstances" => self.describe_instances(map).await,
            "SetServerReserved" => self.set_server_reserved(map).await,
            "SetServerWeight" => self.set_server_weight(map).await,
            "DescribeFleetUtilization" => self.describe_utilization(map).await,
            "ListFleets" => self.list_fleets(map),
            "DescribeFleetAttributes" => self.describe_fleet_attributes(map),
            "DescribeFleetEvents" => self.describe_events(map, false, host).await,
            "DescribeAgentEvents" => self.describe_events(map, true, host).await,
            "GetGameServerSessionLogUrl" => self.session_log_url(map, host).await,
            "GetGameServerInstanceLogUrl" => self.instance_log_url(map, host).await,
            // The Tencent form answers in exactly the SDK's model; GSE Local's form adds the
            // agent's counts.
            "DescribeInstancesExtend" => self.describe_instance(map, header_action.is_none()).await,
            "DescribeServerProcesses" => self.describe_processes(map).await,
            "DescribeAgentStatus" => self.describe_agent_status(map, host).await,
            "InjectFault" => self.inject_fault(map).await,
            other if unsupported::instead(other).is_some() => Err(CapiError::new(
                ErrorCode::UnsupportedOperation,
                format!(
                    "{other} is a GSE cloud action with no meaning on a self-hosted host: {}",
                    unsupported::instead(other).unwrap_or_default()
                ),
            )),
            other => Err(CapiError::new(
                ErrorCode::InvalidAction,
                format!(
                    "the action `{other}` does not exist; supported: {}",
                    ACTIONS.join(", ")
                ),
            )),
        }
    }

    /// `FleetId` or `AliasId` (resolved), when given, must name this host's fleet.
    async fn check_fleet(&self, p: &Params, required: bool) -> Result<(), CapiError> {
        let fleet = match (p.opt_str("FleetId", 128)?, p.opt_str("AliasId", 128)?) {
            (Some(f), _) => {
                if !f.starts_with("fleet-") || f.len() == 6 || f.contains(char::is_whitespace) {
                    return Err(CapiError::value(
                        "FleetId",
                        format!("{f:?} does not match ^fleet-\\S+"),
                    ));
                }
                f
            }
            (None, Some(alias)) => self.resolve(&alias).await?,
            (None, None) if required => return Err(CapiError::missing("FleetId")),
            (None, None) => return Ok(()),
        };
        self.check_this_fleet(&fleet)
    }

    /// `fleet` must be the fleet this host runs.
    fn check_this_fleet(&self, fleet: &str) -> Result<(), CapiError> {
        if fleet == self.cfg.fleet_id {
            return Ok(());
        }
        Err(CapiError::new(
            ErrorCode::ResourceNotFound,
            format!(
                "fleet {fleet} does not exist on this host (it runs {})",
                self.cfg.fleet_id
            ),
        ))
    }

    async fn create_session(&self, map: Map<String, Value>) -> Result<Value, CapiError> {
        let p = Params::new(map, CREATE_SESSION_PARAMS)?;
        self.check_fleet(&p, true).await?;
        let req = new_session(&p)?;
        match self.fleet.control(Control::CreateSession(req)).await? {
            ControlReply::Session(s) => Ok(json!({ "GameServerSession": view::session(&s) })),
            other => Err(unexpected(&other)),
        }
    }

    async fn describe_sessions(&self, map: Map<String, Value>) -> Result<Value, CapiError> {
        let (list, next) = self.session_page(map).await?;
        Ok(json!({
            "GameServerSessions": list.iter().map(view::session).collect::<Vec<_>>(),
            "NextToken": next,
        }))
    }

    async fn describe_session_details(&self, map: Map<String, Value>) -> Result<Value, CapiError> {
        let (list, next) = self.session_page(map).await?;
        let fleet_policy = self.cfg.protection.policy;
        Ok(json!({
            "GameServerSessionDetails": list.iter().map(|s| json!({
                "GameServerSession": view::session(s),
                "ProtectionPolicy": host::policy_name(s.protection.unwrap_or(fleet_policy)),
            })).collect::<Vec<_>>(),
            "NextToken": next,
        }))
    }

    /// One page of sessions as DescribeGameServerSessions(Details) ask for it.
    async fn session_page(
        &self,
        map: Map<String, Value>,
    ) -> Result<(Vec<crate::agent::session::GameSession>, Option<String>), CapiError> {
        let p = Params::new(map, DESCRIBE_SESSIONS_PARAMS)?;
        let gss_id = p.opt_str("GameServerSessionId", 256)?;
        self.check_fleet(&p, gss_id.is_none()).await?;
        let status = match p.opt_str("StatusFilter", 32)? {
            None => None,
            Some(s) => Some(GssStatus::parse(&s).ok_or_else(|| {
                CapiError::value(
                    "StatusFilter",
                    format!("{s:?} is not ACTIVE, ACTIVATING, TERMINATED, TERMINATING or ERROR"),
                )
            })?),
        };
        let q = SessionQuery {
            gss_id,
            status,
            next_token: p.opt_str("NextToken", 1024)?,
            limit: p.opt_int("Limit", 1, 100)?.unwrap_or(100) as usize,
        };
        match self.fleet.control(Control::DescribeSessions(q)).await? {
            ControlReply::Sessions(list, next) => Ok((list, next)),
            other => Err(unexpected(&other)),
        }
    }

    async fn join(&self, map: Map<String, Value>, batch: bool) -> Result<Value, CapiError> {
        let (gss_id, players) = join_request(map, batch)?;
        match self
            .fleet
            .control(Control::Join { gss_id, players })
            .await?
        {
            ControlReply::Players(list, _) if batch => Ok(json!({
                "PlayerSessions": list.iter().map(view::player).collect::<Vec<_>>(),
            })),
            ControlReply::Players(list, _) => Ok(json!({
                "PlayerSession": list.first().map(view::player),
            })),
            other => Err(unexpected(&other)),
        }
    }

    async fn describe_players(&self, map: Map<String, Value>) -> Result<Value, CapiError> {
        let p = Params::new(
            map,
            &[
                "GameServerSessionId",
                "PlayerId",
                "PlayerSessionId",
                "PlayerSessionStatusFilter",
                "Limit",
                "NextToken",
            ],
        )?;
        let q = PlayerQuery {
            gss_id: p.opt_str("GameServerSessionId", 256)?,
            player_id: p.opt_str("PlayerId", 1024)?,
            player_session_id: p.opt_str("PlayerSessionId", 1024)?,
            status: match p.opt_str("PlayerSessionStatusFilter", 32)? {
                None => None,
                Some(s) => Some(PlayerStatus::parse(&s).ok_or_else(|| {
                    CapiError::value(
                        "PlayerSessionStatusFilter",
                        format!("{s:?} is not RESERVED, ACTIVE, COMPLETED or TIMEDOUT"),
                    )
                })?),
            },
            next_token: p.opt_str("NextToken", 1024)?,
            limit: p
                .opt_int("Limit", 1, crate::api::limits::MAX_PAGE as i64)?
                .unwrap_or(crate::api::limits::DEFAULT_PAGE as i64) as usize,
        };
        if q.gss_id.is_none() && q.player_id.is_none() && q.player_session_id.is_none() {
            return Err(CapiError::missing(
                "GameServerSessionId` or `PlayerId` or `PlayerSessionId",
            ));
        }
        match self.fleet.control(Control::DescribePlayers(q)).await? {
            ControlReply::Players(list, next) => Ok(json!({
                "PlayerSessions": list.iter().map(view::player).collect::<Vec<_>>(),
                "NextToken": next,
            })),
            other => Err(unexpected(&other)),
        }
    }

    /// EndGameServerSessionAndProcess by `GameServerSessionId`, or by the `IpAddress` and
    /// `Port` players connect to (the live session there).
    async fn end_session_and_process(&self, map: Map<String, Value>) -> Result<Value, CapiError> {
        let p = Params::new(map, &["GameServerSessionId", "IpAddress", "Port"])?;
        let gss_id = match p.opt_str("GameServerSessionId", 256)? {
            Some(id) => id,
            None => {
                let (Some(ip), Some(port)) =
                    (p.opt_str("IpAddress", 64)?, p.opt_int("Port", 1, 65535)?)
                else {
                    return Err(CapiError::missing(
                        "GameServerSessionId (or IpAddress and Port)",
                    ));
                };
                let mut at = Vec::new();
                for status in [GssStatus::Activating, GssStatus::Active] {
                    at.extend(
                        self.sessions_in(status)
                            .await?
                            .into_iter()
                            .filter(|s| s.ip_address == ip && i64::from(s.port) == port),
                    );
                }
                match (at.pop(), at.is_empty()) {
                    (Some(s), true) => s.id,
                    (Some(_), false) => {
                        return Err(CapiError::value(
                            "Port",
                            format!(
                                "several live sessions are at {ip}:{port} (their games report the same client port): end one by GameServerSessionId"
                            ),
                        ));
                    }
                    (None, _) => {
                        return Err(CapiError::new(
                            ErrorCode::ResourceNotFound,
                            format!("no live game server session at {ip}:{port} on this host"),
                        ));
                    }
                }
            }
        };
        self.fleet
            .control(Control::EndSessionAndProcess { gss_id })
            .await?;
        Ok(json!({}))
    }

    async fn update_session(&self, map: Map<String, Value>) -> Result<Value, CapiError> {
        let u = session_update(map)?;
        match self.fleet.control(Control::UpdateSession(u)).await? {
            ControlReply::Session(s) => Ok(json!({ "GameServerSession": view::session(&s) })),
            other => Err(unexpected(&other)),
        }
    }

    async fn update_runtime(&self, map: Map<String, Value>) -> Result<Value, CapiError> {
        let p = Params::new(map, &["FleetId", "RuntimeConfiguration"])?;
        self.check_fleet(&p, true).await?;
        let rc = p.object("RuntimeConfiguration")?.to_string();
        let cmd = Control::update_runtime(&rc, &self.cfg.game_root)
            .map_err(|e| CapiError::new(e.tencent_code(), e.to_string()))?;
        self.fleet.control(cmd).await?;
        Ok(json!({}))
    }

    /// DescribeFleetEvents (`agent`: false, the SDK's model) or DescribeAgentEvents (true,
    /// with the agent's details: ids, pid, exit, sequence).
    async fn describe_events(
        &self,
        map: Map<String, Value>,
        agent: bool,
        host: &str,
    ) -> Result<Value, CapiError> {
        let p = Params::new(map, &["FleetId", "Limit", "Offset"])?;
        self.check_fleet(&p, false).await?;
        let limit = p.opt_int("Limit", 1, 1000)?.unwrap_or(100) as usize;
        let offset = p.opt_int("Offset", 0, i64::MAX)?.unwrap_or(0) as usize;
        let (events, total) = self.bus.recent(offset, limit);
        let view = if agent {
            view::event
        } else {
            view::fleet_event
        };
        let log_url = self.event_log_urls(host);
        Ok(json!({
            "Events": events
                .iter()
                .map(|e| view(e, &self.cfg.fleet_id, &log_url(e)))
                .collect::<Vec<_>>(),
            "TotalCount": total,
        }))
    }

    async fn describe_instance(
        &self,
        map: Map<String, Value>,
        extra: bool,
    ) -> Result<Value, CapiError> {
        let p = Params::new(map, &["FleetId", "Offset", "Limit", "IpAddress"])?;
        self.check_fleet(&p, false).await?;
        match self.fleet.control(Control::DescribeInstance).await? {
            ControlReply::Instance(c) => Ok(json!({
                "Instances": [view::instance(&c, &self.cfg, extra)],
                "TotalCount": 1,
            })),
            other => Err(unexpected(&other)),
        }
    }

    async fn status(&self) -> Result<FleetStatus, CapiError> {
        match self.fleet.control(Control::DescribeStatus).await? {
            ControlReply::Status(s) => Ok(*s),
            other => Err(unexpected(&other)),
        }
    }

    /// DescribeServerProcesses (extension): every process, and every ServerProcesses entry
    /// with what it should run, what runs, its failed launches and its crash-loop pause (a
    /// paused entry has no process to show it on).
    async fn describe_processes(&self, map: Map<String, Value>) -> Result<Value, CapiError> {
        Params::new(map, &[])?;
        let s = self.status().await?;
        Ok(json!({
            "ServerProcesses": s.processes.iter().map(|p| view::process(p, None)).collect::<Vec<_>>(),
            "Entries": s.entries.iter().map(view::entry).collect::<Vec<_>>(),
        }))
    }

    /// DescribeAgentStatus (extension): what `gse-agent status` shows, read in one call: the
    /// instance's counts, every process with its CPU time and resident memory (read from
    /// `/proc` now, for these pids only), the entries, and the last `Limit` events (default
    /// 10, with the agent's details).
    async fn describe_agent_status(
        &self,
        map: Map<String, Value>,
        host: &str,
    ) -> Result<Value, CapiError> {
        let p = Params::new(map, &["Limit"])?;
        let limit = p.opt_int("Limit", 0, 1000)?.unwrap_or(10) as usize;
        let s = self.status().await?;
        let pids: Vec<u32> = s.processes.iter().map(|p| p.pid).collect();
        // Blocking /proc reads of a few files per process: off the async workers.
        let usage = tokio::task::spawn_blocking(move || {
            crate::agent::metrics::Sampler::new().sample(&pids)
        })
        .await
        .map_err(|e| {
            CapiError::new(
                ErrorCode::InternalError,
                format!("sampling the processes failed: {e}"),
            )
        })?;
        let (_, total) = self.bus.recent(0, 0);
        let (events, _) = self.bus.recent(total.saturating_sub(limit), limit);
        let log_url = self.event_log_urls(host);
        Ok(json!({
            "Instance": view::instance(&s.counters, &self.cfg, true),
            "ServerProcesses": s
                .processes
                .iter()
                .map(|p| view::process(p, Some(usage.iter().find(|u| u.pid == p.pid))))
                .collect::<Vec<_>>(),
            "Entries": s.entries.iter().map(view::entry).collect::<Vec<_>>(),
            "Events": events
                .iter()
                .map(|e| view::event(e, &self.cfg.fleet_id, &log_url(e)))
                .collect::<Vec<_>>(),
        }))
    }
}

/// The actions this API serves.
pub const ACTIONS: &[&str] = &[
    "CreateGameServerSession",
    "DescribeGameServerSessions",
    "JoinGameServerSession",
    "JoinGameServerSessionBatch",
    "DescribePlayerSessions",
    "EndGameServerSessionAndProcess",
    "UpdateGameServerSession",
    "UpdateRuntimeConfiguration",
    "DescribeFleetEvents",
    "DescribeInstancesExtend",
    "DescribeGameServerSessionDetails",
    "SearchGameServerSessions",
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
    "DescribeRuntimeConfiguration",
    "DescribeInstances",
    "SetServerReserved",
    "SetServerWeight",
    "DescribeFleetUtilization",
    "ListFleets",
    "DescribeFleetAttributes",
    "DescribeServerProcesses",
    "DescribeAgentEvents",
    "DescribeAgentStatus",
    "InjectFault",
    "GetGameServerSessionLogUrl",
    "GetGameServerInstanceLogUrl",
];

fn unexpected(reply: &ControlReply) -> CapiError {
    CapiError::new(
        ErrorCode::InternalError,
        format!("unexpected fleet reply {reply:?}"),
    )
}

impl From<HandleError> for CapiError {
    fn from(e: HandleError) -> Self {
        match e {
            HandleError::Stopped => {
                Self::new(ErrorCode::OperationDenied, "the agent is shutting down")
            }
            HandleError::Fleet(f) => Self::new(f.tencent_code(), f.to_string()),
        }
    }
}
