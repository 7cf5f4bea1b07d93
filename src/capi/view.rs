//! JSON of the control API's resources, in Tencent Cloud API field names.

use serde_json::{Value, json};

use crate::config::Config;
use crate::event::{Event, format_time};
use crate::fleet::{InstanceCounters, ProcessView};
use crate::session::{GameSession, PlayerSession};

/// A `GameServerSession`.
pub fn session(s: &GameSession) -> Value {
    json!({
        "GameServerSessionId": s.id,
        "FleetId": s.fleet_id,
        "Name": s.name,
        "CreatorId": s.creator_id,
        "Status": s.status.as_str(),
        "StatusReason": s.status_reason,
        "CreationTime": format_time(s.creation_time),
        "TerminationTime": s.termination_time.map(format_time),
        "CurrentPlayerSessionCount": s.current_players,
        "MaximumPlayerSessionCount": s.max_players,
        "PlayerSessionCreationPolicy": s.policy.as_str(),
        "GameProperties": s.game_properties.iter().map(|(k, v)| json!({"Key": k, "Value": v})).collect::<Vec<_>>(),
        "GameServerSessionData": s.data,
        "MatchmakerData": s.matchmaker_data,
        "IpAddress": s.ip_address,
        "DnsName": s.dns_name,
        "Port": s.port,
        "InstanceType": "localhost",
        "Weight": 0,
        "AvailabilityStatus": "Enable",
        "CurrentCustomCount": s.current_custom_count,
        "MaxCustomCount": s.max_custom_count,
    })
}

/// A `PlayerSession`.
pub fn player(p: &PlayerSession) -> Value {
    json!({
        "PlayerSessionId": p.id,
        "PlayerId": p.player_id,
        "GameServerSessionId": p.gss_id,
        "FleetId": p.fleet_id,
        "IpAddress": p.ip_address,
        "DnsName": p.dns_name,
        "Port": p.port,
        "PlayerData": p.player_data,
        "Status": p.status.as_str(),
        "CreationTime": format_time(p.creation_time),
        "TerminationTime": p.termination_time.map(format_time),
    })
}

/// DescribeFleetEvents' `Event`: the SDK model's fields only (the agent's details are in
/// [`event`], for DescribeAgentEvents).
pub fn fleet_event(e: &Event, fleet_id: &str) -> Value {
    let full = event(e, fleet_id);
    let mut out = serde_json::Map::new();
    for key in [
        "EventCode",
        "EventId",
        "EventTime",
        "Message",
        "PreSignedLogUrl",
        "ResourceId",
    ] {
        out.insert(key.into(), full.get(key).cloned().unwrap_or(Value::Null));
    }
    Value::Object(out)
}

/// An event with everything the agent knows (DescribeAgentEvents, an extension).
pub fn event(e: &Event, fleet_id: &str) -> Value {
    let mut v = serde_json::to_value(e).unwrap_or(Value::Null);
    if let Value::Object(o) = &mut v {
        o.insert("EventId".into(), json!(format!("event-{}", e.sequence)));
        o.insert("ResourceId".into(), json!(fleet_id));
        o.insert("PreSignedLogUrl".into(), json!(""));
    }
    v
}

/// An agent process (extension).
pub fn process(p: &ProcessView) -> Value {
    json!({
        "ProcessId": p.process_id,
        "Pid": p.pid,
        "LaunchPath": p.launch_path,
        "Status": p.status,
        "Healthy": p.healthy,
        "HealthChecksPassed": p.health_checks_passed,
        "ClientPort": p.client_port,
        "GrpcPort": p.grpc_port,
        "GameServerSessionId": p.game_server_session_id,
        "Restarts": p.restarts,
        "LogPathsToUpload": p.log_paths,
    })
}

/// DescribeInstancesExtend's `InstanceExtend`, its `Instance` nested as the SDK's model has it.
/// The agent knows one address of its host (`public-ip`, else 127.0.0.1): it is both
/// `IpAddress` and `PrivateIpAddress`.
pub fn instance(c: &InstanceCounters, cfg: &Config) -> Value {
    let ip = cfg.client_ip();
    json!({
        "Instance": {
            "FleetId": cfg.fleet_id,
            "InstanceId": cfg.instance_id,
            "IpAddress": ip,
            "DnsName": cfg.client_dns_name(),
            "OperatingSystem": std::env::consts::OS,
            "Status": "Active",
            "Type": "",
            "CreateTime": "",
            "Weight": c.weight,
            "ReserveValue": i32::from(c.reserved),
            "PrivateIpAddress": ip,
        },
        "State": "Active",
        "HealthyProcessCnt": c.healthy_process_cnt,
        "ActiveProcessCnt": c.active_process_cnt,
        "GameSessionCnt": c.game_session_cnt,
        "MaxGameSessionCnt": c.max_game_session_cnt,
        "PlayerSessionCnt": c.player_session_cnt,
        "MaxPlayerSessionCnt": c.max_player_session_cnt,
    })
}
