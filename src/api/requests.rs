//! The session and player requests both halves read alike: CreateGameServerSession's session,
//! JoinGameServerSession(Batch)'s players, UpdateGameServerSession's changes.

use serde_json::{Map, Value};

use super::CapiError;
use crate::api::params::{Params, key_value};
use crate::api::sessions::{NewPlayer, NewSession, SessionUpdate};

/// The parameters DescribeGameServerSessions (and its Details) names.
pub const DESCRIBE_SESSIONS_PARAMS: &[&str] = &[
    "FleetId",
    "AliasId",
    "GameServerSessionId",
    "Limit",
    "NextToken",
    "StatusFilter",
];

/// The parameters CreateGameServerSession names, as MaximumPlayerSessionCount … Name.
pub const CREATE_SESSION_PARAMS: &[&str] = &[
    "MaximumPlayerSessionCount",
    "FleetId",
    "AliasId",
    "CreatorId",
    "GameProperties",
    "GameServerSessionData",
    "GameServerSessionId",
    "IdempotencyToken",
    "Name",
];

/// CreateGameServerSession's session parameters (everything but where it goes).
pub fn new_session(p: &Params) -> Result<NewSession, CapiError> {
    // JSON shapes are checked here; Tencent's limits where the command is handled
    // (NewSession::check), for this door and the upstream one alike.
    let max_players = p.int("MaximumPlayerSessionCount", 0, i64::from(i32::MAX))? as i32;
    let mut game_properties = Vec::new();
    for v in p
        .opt_array("GameProperties", usize::MAX)?
        .into_iter()
        .flatten()
    {
        game_properties.push(key_value("GameProperties", v, usize::MAX, usize::MAX)?);
    }
    let text = |name| p.opt_str(name, usize::MAX);
    Ok(NewSession {
        max_players,
        name: text("Name")?.unwrap_or_default(),
        creator_id: text("CreatorId")?.unwrap_or_default(),
        game_properties,
        data: text("GameServerSessionData")?.unwrap_or_default(),
        custom_id: text("GameServerSessionId")?,
        idempotency_token: text("IdempotencyToken")?,
    })
}

/// JoinGameServerSession(Batch)'s session and players.
pub fn join_request(
    map: Map<String, Value>,
    batch: bool,
) -> Result<(String, Vec<NewPlayer>), CapiError> {
    Ok(if batch {
        let p = Params::new(map, &["GameServerSessionId", "PlayerIds", "PlayerDataMap"])?;
        let gss_id = p.str("GameServerSessionId", 256)?;
        let ids = p
            .opt_array("PlayerIds", usize::MAX)?
            .ok_or_else(|| CapiError::missing("PlayerIds"))?;
        let data = player_data_map(p.raw("PlayerDataMap"))?;
        let mut players = Vec::new();
        for (i, v) in ids.iter().enumerate() {
            let Value::String(id) = v else {
                return Err(CapiError::type_of(&format!("PlayerIds.{i}"), "a string", v));
            };
            players.push(NewPlayer {
                player_id: id.clone(),
                player_data: data
                    .iter()
                    .find(|(k, _)| k == id)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default(),
            });
        }
        (gss_id, players)
    } else {
        let p = Params::new(map, &["GameServerSessionId", "PlayerId", "PlayerData"])?;
        let gss_id = p.str("GameServerSessionId", 256)?;
        let player = NewPlayer {
            player_id: p.str("PlayerId", usize::MAX)?,
            player_data: p.opt_str("PlayerData", usize::MAX)?.unwrap_or_default(),
        };
        (gss_id, vec![player])
    })
}

/// UpdateGameServerSession's changes.
pub fn session_update(map: Map<String, Value>) -> Result<SessionUpdate, CapiError> {
    let p = Params::new(
        map,
        &[
            "GameServerSessionId",
            "MaximumPlayerSessionCount",
            "Name",
            "PlayerSessionCreationPolicy",
            "ProtectionPolicy",
        ],
    )?;
    Ok(SessionUpdate {
        gss_id: p.str("GameServerSessionId", usize::MAX)?,
        max_players: p
            .opt_int("MaximumPlayerSessionCount", 0, i64::from(i32::MAX))?
            .map(|n| n as i32),
        name: p.opt_str("Name", usize::MAX)?,
        creation_policy: p.opt_str("PlayerSessionCreationPolicy", usize::MAX)?,
        protection: p.opt_str("ProtectionPolicy", usize::MAX)?,
    })
}

/// `PlayerDataMap`: Tencent's SDK models it as `{Key, Value}`; accept one such object, a list
/// of them, or a plain `{"player": "data"}` map.
fn player_data_map(v: Option<&Value>) -> Result<Vec<(String, String)>, CapiError> {
    match v {
        None => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| key_value("PlayerDataMap", i, usize::MAX, usize::MAX))
            .collect(),
        Some(obj @ Value::Object(o)) if o.contains_key("Key") => Ok(vec![key_value(
            "PlayerDataMap",
            obj,
            usize::MAX,
            usize::MAX,
        )?]),
        Some(Value::Object(o)) => o
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), s.clone())),
                other => Err(CapiError::type_of(
                    &format!("PlayerDataMap.{k}"),
                    "a string",
                    other,
                )),
            })
            .collect(),
        Some(other) => Err(CapiError::type_of("PlayerDataMap", "an object", other)),
    }
}
