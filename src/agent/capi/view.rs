//! JSON of the control API's resources, in Tencent Cloud API field names.

use serde_json::{Value, json};

use crate::agent::config::Config;
use crate::agent::event::Event;
use crate::agent::fleet::{EntryView, InstanceCounters, LastExit, ProcessView};
use crate::agent::metrics::Usage;
use crate::agent::session::{GameSession, PlayerSession};
use crate::api::models::{self, InstanceStatus};
use crate::api::time::format_time;

/// A `GameServerSession`.
pub fn session(s: &GameSession) -> Value {
    json!(session_model(s))
}

/// A `GameServerSession`, typed.
pub fn session_model(s: &GameSession) -> models::GameServerSession {
    models::GameServerSession {
        creation_time: format_time(s.creation_time),
        creator_id: s.creator_id.clone(),
        current_player_session_count: i64::from(s.current_players),
        dns_name: s.dns_name.clone(),
        fleet_id: s.fleet_id.clone(),
        game_properties: s
            .game_properties
            .iter()
            .map(|(key, value)| models::GameProperty {
                key: key.clone(),
                value: value.clone(),
            })
            .collect(),
        game_server_session_data: s.data.clone(),
        game_server_session_id: s.id.clone(),
        ip_address: s.ip_address.clone(),
        matchmaker_data: s.matchmaker_data.clone(),
        maximum_player_session_count: i64::from(s.max_players),
        name: s.name.clone(),
        player_session_creation_policy: s.policy.as_str().into(),
        port: i64::from(s.port),
        status: s.status.as_str().into(),
        status_reason: s.status_reason.clone(),
        termination_time: s.termination_time.map(format_time),
        instance_type: "localhost".into(),
        current_custom_count: i64::from(s.current_custom_count),
        max_custom_count: i64::from(s.max_custom_count),
        weight: 0,
        availability_status: "Enable".into(),
    }
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
/// [`event`], for DescribeAgentEvents). `log_url` is its `PreSignedLogUrl` (empty: none).
pub fn fleet_event(e: &Event, fleet_id: &str, log_url: &str) -> Value {
    json!(models::Event {
        event_code: e.event_code.as_str().to_string(),
        event_id: event_id(e),
        event_time: crate::api::time::format_time_millis(e.event_time),
        message: e.message.clone(),
        pre_signed_log_url: log_url.to_string(),
        resource_id: fleet_id.to_string(),
    })
}

/// The `EventId` of an agent's event.
fn event_id(e: &Event) -> String {
    format!("event-{}", e.sequence)
}

/// An event with everything the agent knows (DescribeAgentEvents, an extension); `log_url`
/// is its `PreSignedLogUrl` (empty: none).
pub fn event(e: &Event, fleet_id: &str, log_url: &str) -> Value {
    let mut v = serde_json::to_value(e).unwrap_or(Value::Null);
    if let Value::Object(o) = &mut v {
        o.insert("EventId".into(), json!(event_id(e)));
        o.insert("ResourceId".into(), json!(fleet_id));
        o.insert("PreSignedLogUrl".into(), json!(log_url));
    }
    v
}

/// An agent process (extension); with `usage` (DescribeAgentStatus), its sampled CPU time and
/// resident memory (null when it could not be read).
pub fn process(p: &ProcessView, usage: Option<Option<&Usage>>) -> Value {
    let mut v = json!({
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
        "EntryNumber": p.entry,
        "StartTime": format_time(p.started_at),
        "CurrentPlayerSessionCount": p.current_players,
        "LastExit": p.last_exit.as_ref().map(last_exit),
    });
    if let (Some(usage), Value::Object(o)) = (usage, &mut v) {
        o.insert("CpuSeconds".into(), json!(usage.map(|u| u.cpu_seconds)));
        o.insert("RssBytes".into(), json!(usage.map(|u| u.rss_bytes)));
    }
    v
}

/// How a slot's last process ended (extension).
pub fn last_exit(x: &LastExit) -> Value {
    json!({
        "ProcessId": x.process_id,
        "EventCode": x.event_code,
        "Reason": x.reason,
        "Time": format_time(x.at),
    })
}

/// One ServerProcesses entry: what should run, what runs, failed launches and the crash-loop
/// pause (extension).
pub fn entry(e: &EntryView) -> Value {
    json!({
        "EntryNumber": e.number,
        "LaunchPath": e.launch_path,
        "Parameters": e.parameters,
        "DesiredProcessCnt": e.desired,
        "ProcessCnt": e.running,
        "LaunchFailureCnt": e.launch_failures,
        "LastLaunchError": e.last_launch_error,
        "PausedUntil": e.paused_until.map(format_time),
        "LastExit": e.last_exit.as_ref().map(last_exit),
    })
}

/// DescribeInstancesExtend's `InstanceExtend`, its `Instance` nested as the SDK's model has it.
/// The agent knows one address of its host (`public-ip`, else 127.0.0.1): it is both
/// `IpAddress` and `PrivateIpAddress`. With `extra` (GSE Local's `POST /capi` form, which no
/// Tencent SDK model reads), the agent's own counts follow Tencent's fields: what runs
/// (`ProcessCnt`) against what should (`DesiredProcessCnt`), failed launches and paused
/// entries.
pub fn instance(c: &InstanceCounters, cfg: &Config, extra: bool) -> Value {
    let ip = cfg.client_ip();
    let mut v = json!({
        "Instance": models::Instance {
            fleet_id: cfg.fleet_id.clone(),
            instance_id: cfg.instance_id.clone(),
            ip_address: ip.to_string(),
            dns_name: cfg.client_dns_name().to_string(),
            operating_system: std::env::consts::OS.into(),
            status: InstanceStatus::Active.as_str().into(),
            kind: String::new(),
            create_time: String::new(),
            weight: i64::from(c.weight),
            reserve_value: i64::from(c.reserved),
            private_ip_address: ip.to_string(),
        },
        "State": "Active",
        "HealthyProcessCnt": c.healthy_process_cnt,
        "ActiveProcessCnt": c.active_process_cnt,
        "GameSessionCnt": c.game_session_cnt,
        "MaxGameSessionCnt": c.max_game_session_cnt,
        "PlayerSessionCnt": c.player_session_cnt,
        "MaxPlayerSessionCnt": c.max_player_session_cnt,
    });
    if let (true, Value::Object(o)) = (extra, &mut v) {
        o.insert("ProcessCnt".into(), json!(c.process_cnt));
        o.insert("DesiredProcessCnt".into(), json!(c.desired_process_cnt));
        o.insert("LaunchFailureCnt".into(), json!(c.launch_failure_cnt));
        o.insert("PausedEntryCnt".into(), json!(c.paused_entry_cnt));
    }
    v
}
