//! Game server sessions and player sessions across every host: created on a host chosen here
//! (packing hosts before spreading, honouring reserve and weight), changed on the host that
//! has them, described and searched from the database.

mod create;

use crate::api::ErrorCode;
use std::collections::HashMap;

use serde_json::{Map, Value, json};

use super::{ControlApi, db_error, offset_of};
use crate::api::CapiError;
use crate::api::models;
use crate::api::params::Params;
use crate::api::requests::{DESCRIBE_SESSIONS_PARAMS, join_request, session_update};
use crate::api::search::Subject;
use crate::api::search::request::{SEARCH_PARAMS, SearchRequest};
use crate::control::writer::Write;
use crate::upstream_proto as up;
use up::command::Kind;

/// The session a search sees.
fn subject(s: &models::GameServerSession) -> Subject<'_> {
    let (max, players) = (
        s.maximum_player_session_count,
        s.current_player_session_count,
    );
    Subject {
        name: &s.name,
        id: &s.game_server_session_id,
        maximum_sessions: max,
        creation_time_millis: crate::api::time::parse_millis(&s.creation_time).unwrap_or(0),
        player_session_count: players,
        has_available_player_sessions: s.status == "ACTIVE"
            && s.player_session_creation_policy == "ACCEPT_ALL"
            && players < max,
        properties: s
            .game_properties
            .iter()
            .map(|p| (p.key.as_str(), p.value.as_str()))
            .collect::<HashMap<_, _>>(),
    }
}

impl ControlApi {
    /// A stored session's JSON.
    pub(crate) async fn session_json(&self, gss: &str) -> Result<Value, CapiError> {
        let db = self.db().await?;
        let row = db
            .query_opt("SELECT body FROM sessions WHERE gss_id = $1", &[&gss])
            .await
            .map_err(db_error("reading a session"))?;
        row.map(|r| r.get(0)).ok_or_else(|| {
            CapiError::new(
                ErrorCode::ResourceNotFound,
                format!("game server session {gss} does not exist"),
            )
        })
    }

    /// The instance that has session `gss`.
    async fn host_of(&self, gss: &str) -> Result<String, CapiError> {
        let db = self.db().await?;
        let row = db
            .query_opt(
                "SELECT instance_id FROM sessions WHERE gss_id = $1",
                &[&gss],
            )
            .await
            .map_err(db_error("finding a session's host"))?;
        row.map(|r| r.get(0)).ok_or_else(|| {
            CapiError::new(
                ErrorCode::ResourceNotFound,
                format!("game server session {gss} does not exist"),
            )
        })
    }

    pub(super) async fn describe_sessions(
        &self,
        map: Map<String, Value>,
        details: bool,
    ) -> Result<Value, CapiError> {
        let p = Params::new(map, DESCRIBE_SESSIONS_PARAMS)?;
        let gss = p.opt_str("GameServerSessionId", 256)?;
        let fleet = self.fleet(&p, gss.is_none()).await?;
        let status = p.opt_str("StatusFilter", 32)?;
        if let Some(s) = &status
            && !["ACTIVE", "ACTIVATING", "TERMINATED", "TERMINATING", "ERROR"].contains(&s.as_str())
        {
            return Err(CapiError::value(
                "StatusFilter",
                format!("{s:?} is not ACTIVE, ACTIVATING, TERMINATED, TERMINATING or ERROR"),
            ));
        }
        let limit = p.opt_int("Limit", 1, 100)?.unwrap_or(100);
        let offset = offset_of(p.opt_str("NextToken", 64)?)?;
        let db = self.db().await?;
        let rows = db
            .query(
                "SELECT body FROM sessions
                 WHERE ($1::text IS NULL OR gss_id = $1) AND ($2::text IS NULL OR fleet_id = $2)
                   AND ($3::text IS NULL OR status = $3)
                 ORDER BY created_ms, gss_id OFFSET $4 LIMIT $5",
                &[&gss, &fleet, &status, &offset, &(limit + 1)],
            )
            .await
            .map_err(db_error("reading sessions"))?;
        let more = rows.len() as i64 > limit;
        let list: Vec<Value> = rows.iter().take(limit as usize).map(|r| r.get(0)).collect();
        let next = more.then(|| (offset + limit).to_string());
        if details {
            Ok(json!({
                "GameServerSessionDetails": list.into_iter().map(|s| json!({
                    "GameServerSession": s,
                    "ProtectionPolicy": s.get("ProtectionPolicy").cloned().unwrap_or(json!("NoProtection")),
                })).collect::<Vec<_>>(),
                "NextToken": next,
            }))
        } else {
            Ok(json!({"GameServerSessions": list, "NextToken": next}))
        }
    }

    pub(super) async fn search_sessions(
        &self,
        map: Map<String, Value>,
    ) -> Result<Value, CapiError> {
        let p = Params::new(map, SEARCH_PARAMS)?;
        let fleet = self.fleet(&p, true).await?.expect("required");
        let search = SearchRequest::read(&p)?;
        let db = self.db().await?;
        let rows = db
            .query(
                "SELECT body FROM sessions WHERE fleet_id = $1 AND status = 'ACTIVE'
                 ORDER BY created_ms, gss_id",
                &[&fleet],
            )
            .await
            .map_err(db_error("searching sessions"))?;
        // A stored session that is not the SDK's model is left out of the search, loudly.
        let sessions: Vec<models::GameServerSession> = rows
            .iter()
            .filter_map(|r| {
                serde_json::from_value(r.get(0))
                    .inspect_err(|e| {
                        tracing::error!(fleet.id = %fleet, error = %e, "a stored game server session is not the SDK's model; left out of the search");
                    })
                    .ok()
            })
            .collect();
        let (page, next) = search.page(&sessions, subject);
        Ok(json!({"GameServerSessions": page, "NextToken": next}))
    }

    pub(super) async fn join(
        &self,
        map: Map<String, Value>,
        batch: bool,
    ) -> Result<Value, CapiError> {
        let (gss, players) = join_request(map, batch)?;
        crate::api::sessions::check_players(&players)?;
        let list = self.join_on_host(gss, players).await?;
        if batch {
            Ok(json!({"PlayerSessions": list}))
        } else {
            Ok(json!({"PlayerSession": list.into_iter().next()}))
        }
    }

    /// Joins players on the host of `gss` and stores their player sessions.
    pub(super) async fn join_on_host(
        &self,
        gss: String,
        players: Vec<crate::api::sessions::NewPlayer>,
    ) -> Result<Vec<Value>, CapiError> {
        let instance = self.host_of(&gss).await?;
        let joined = self
            .command(
                &instance,
                Kind::JoinGameServerSession(up::JoinGameServerSession {
                    game_server_session_id: gss,
                    players: players
                        .into_iter()
                        .map(|p| up::PlayerToJoin {
                            player_id: p.player_id,
                            player_data: p.player_data,
                        })
                        .collect(),
                }),
            )
            .await?;
        let list = joined.as_array().cloned().unwrap_or_default();
        self.writer
            .write(Write::Players(list.clone()))
            .await
            .map_err(super::write_error(
                "storing the player sessions a join reserved",
            ))?;
        Ok(list)
    }

    pub(super) async fn describe_players(
        &self,
        map: Map<String, Value>,
    ) -> Result<Value, CapiError> {
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
        let gss = p.opt_str("GameServerSessionId", 256)?;
        let player = p.opt_str("PlayerId", 1024)?;
        let psid = p.opt_str("PlayerSessionId", 1024)?;
        let status = p.opt_str("PlayerSessionStatusFilter", 32)?;
        if let Some(s) = &status
            && !["RESERVED", "ACTIVE", "COMPLETED", "TIMEDOUT"].contains(&s.as_str())
        {
            return Err(CapiError::value(
                "PlayerSessionStatusFilter",
                format!("{s:?} is not RESERVED, ACTIVE, COMPLETED or TIMEDOUT"),
            ));
        }
        if gss.is_none() && player.is_none() && psid.is_none() {
            return Err(CapiError::missing(
                "GameServerSessionId` or `PlayerId` or `PlayerSessionId",
            ));
        }
        let limit = p
            .opt_int("Limit", 1, crate::api::limits::MAX_PAGE as i64)?
            .unwrap_or(crate::api::limits::DEFAULT_PAGE as i64);
        let offset = offset_of(p.opt_str("NextToken", 64)?)?;
        let db = self.db().await?;
        let rows = db
            .query(
                "SELECT body FROM players
                 WHERE ($1::text IS NULL OR gss_id = $1) AND ($2::text IS NULL OR player_id = $2)
                   AND ($3::text IS NULL OR player_session_id = $3)
                   AND ($4::text IS NULL OR status = $4)
                 ORDER BY created_ms, player_session_id OFFSET $5 LIMIT $6",
                &[&gss, &player, &psid, &status, &offset, &(limit + 1)],
            )
            .await
            .map_err(db_error("reading player sessions"))?;
        let more = rows.len() as i64 > limit;
        let list: Vec<Value> = rows.iter().take(limit as usize).map(|r| r.get(0)).collect();
        Ok(json!({
            "PlayerSessions": list,
            "NextToken": more.then(|| (offset + limit).to_string()),
        }))
    }

    pub(super) async fn update_session(&self, map: Map<String, Value>) -> Result<Value, CapiError> {
        let u = session_update(map)?;
        let instance = self.host_of(&u.gss_id).await?;
        let session = self
            .command(
                &instance,
                Kind::UpdateGameServerSession(up::UpdateGameServerSession {
                    game_server_session_id: u.gss_id,
                    maximum_player_session_count: u.max_players,
                    name: u.name,
                    player_session_creation_policy: u.creation_policy,
                    protection_policy: u.protection,
                }),
            )
            .await?;
        Ok(json!({ "GameServerSession": session }))
    }

    pub(super) async fn end_session(&self, map: Map<String, Value>) -> Result<Value, CapiError> {
        let p = Params::new(map, &["GameServerSessionId", "IpAddress", "Port"])?;
        let gss = match p.opt_str("GameServerSessionId", 256)? {
            Some(id) => id,
            None => {
                let (Some(ip), Some(port)) =
                    (p.opt_str("IpAddress", 64)?, p.opt_int("Port", 1, 65535)?)
                else {
                    return Err(CapiError::missing(
                        "GameServerSessionId (or IpAddress and Port)",
                    ));
                };
                let db = self.db().await?;
                let rows = db
                    .query(
                        "SELECT gss_id FROM sessions WHERE status IN ('ACTIVATING', 'ACTIVE')
                           AND body ->> 'IpAddress' = $1 AND (body ->> 'Port')::bigint = $2",
                        &[&ip, &port],
                    )
                    .await
                    .map_err(db_error("finding a session by address"))?;
                match rows.as_slice() {
                    [one] => one.get(0),
                    [] => {
                        return Err(CapiError::new(
                            ErrorCode::ResourceNotFound,
                            format!("no live game server session at {ip}:{port}"),
                        ));
                    }
                    _ => {
                        return Err(CapiError::value(
                            "Port",
                            format!(
                                "several live sessions are at {ip}:{port}: end one by GameServerSessionId"
                            ),
                        ));
                    }
                }
            }
        };
        let instance = self.host_of(&gss).await?;
        self.command(
            &instance,
            Kind::EndGameServerSessionAndProcess(up::EndGameServerSessionAndProcess {
                game_server_session_id: gss,
            }),
        )
        .await?;
        Ok(json!({}))
    }
}
