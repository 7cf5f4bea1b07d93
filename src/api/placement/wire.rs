//! Placements on the wire: the SDK's `GameServerSessionPlacement` model of a placement, and the
//! placement StartGameServerSessionPlacement asks for.

use serde_json::{Map, Value, json};

use crate::api::CapiError;
use crate::api::params::{Params, key_value};
use crate::api::placement::{Latency, Placement, PlacementRequest, Status};
use crate::api::time::format_time;

/// A placement in the SDK's `GameServerSessionPlacement` model.
pub fn view(p: &Placement) -> Value {
    let r = &p.request;
    let fulfilled = p.status == Status::Fulfilled;
    json!({
        "PlacementId": r.id,
        "GameServerSessionQueueName": r.queue,
        "PlayerLatencies": r.latencies.iter().map(|l| json!({
            "PlayerId": l.player_id,
            "RegionIdentifier": l.region,
            "LatencyInMilliseconds": l.millis,
        })).collect::<Vec<_>>(),
        "Status": p.status.as_str(),
        "DnsName": "",
        "GameServerSessionId": if fulfilled { p.gss_id.clone().unwrap_or_default() } else { String::new() },
        "GameServerSessionName": r.name,
        "GameServerSessionRegion": if fulfilled { "local" } else { "" },
        "GameProperties": r.game_properties.iter().map(|(k, v)| json!({"Key": k, "Value": v})).collect::<Vec<_>>(),
        "MaximumPlayerSessionCount": r.max_players,
        "GameServerSessionData": r.data,
        "IpAddress": p.ip_address,
        "Port": p.port,
        "MatchmakerData": "",
        "PlacedPlayerSessions": p.placed.iter().map(|(player, session)| json!({
            "PlayerId": player,
            "PlayerSessionId": session,
        })).collect::<Vec<_>>(),
        "StartTime": format_time(p.start),
        "EndTime": p.end.map(format_time).unwrap_or_default(),
    })
}

/// StartGameServerSessionPlacement's request, its shapes checked (its limits are
/// [`PlacementRequest::check`]).
pub fn placement_request(map: Map<String, Value>) -> Result<PlacementRequest, CapiError> {
    let p = Params::new(
        map,
        &[
            "PlacementId",
            "GameServerSessionQueueName",
            "MaximumPlayerSessionCount",
            "DesiredPlayerSessions",
            "GameProperties",
            "GameServerSessionData",
            "GameServerSessionName",
            "PlayerLatencies",
        ],
    )?;
    let mut game_properties = Vec::new();
    for g in p.opt_array("GameProperties", 16)?.into_iter().flatten() {
        game_properties.push(key_value("GameProperties", g, 32, 96)?);
    }
    let mut players = Vec::new();
    for d in p
        .opt_array("DesiredPlayerSessions", 25)?
        .into_iter()
        .flatten()
    {
        let Value::Object(o) = d else {
            return Err(CapiError::type_of("DesiredPlayerSessions", "objects", d));
        };
        let id = match o.get("PlayerId") {
            Some(Value::String(s)) if !s.is_empty() && s.chars().count() <= 1024 => s.clone(),
            _ => return Err(CapiError::missing("DesiredPlayerSessions.PlayerId")),
        };
        let data = match o.get("PlayerData") {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) if s.chars().count() <= 2048 => s.clone(),
            Some(other) => {
                return Err(CapiError::type_of(
                    "DesiredPlayerSessions.PlayerData",
                    "a string of at most 2048 characters",
                    other,
                ));
            }
        };
        players.push((id, data));
    }
    let mut latencies = Vec::new();
    for l in p.opt_array("PlayerLatencies", 100)?.into_iter().flatten() {
        let Value::Object(o) = l else {
            return Err(CapiError::type_of("PlayerLatencies", "objects", l));
        };
        let text = |name: &str| {
            o.get(name)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let millis = o
            .get("LatencyInMilliseconds")
            .and_then(Value::as_u64)
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| CapiError::missing("PlayerLatencies.LatencyInMilliseconds"))?;
        latencies.push(Latency {
            player_id: text("PlayerId"),
            region: text("RegionIdentifier"),
            millis,
        });
    }
    Ok(PlacementRequest {
        id: p.str("PlacementId", 48)?,
        queue: p.str("GameServerSessionQueueName", 128)?,
        max_players: p.int("MaximumPlayerSessionCount", 0, i64::from(i32::MAX))? as i32,
        name: p
            .opt_str("GameServerSessionName", 4096)?
            .unwrap_or_default(),
        game_properties,
        data: p
            .opt_str("GameServerSessionData", 4096)?
            .unwrap_or_default(),
        players,
        latencies,
    })
}
