//! The API's typed models hold the fields of the official SDK's models, no more and no fewer:
//! each is read from `tencentcloud-sdk-python-gse`'s own `models.py` (the pinned version) and
//! compared with what our struct serializes.

use std::process::Command;

use gse_agent::api::models;
use serde_json::Value;

use crate::helper::tencent;

/// The attributes the SDK's model `name` declares, in its order.
fn sdk_fields(name: &str) -> Vec<String> {
    let out = Command::new(tencent::python())
        .args([
            "-c",
            "import sys, json\n\
             from tencentcloud.gse.v20191112 import models\n\
             m = getattr(models, sys.argv[1])()\n\
             print(json.dumps([k[1:] for k in vars(m)]))",
            name,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The fields `value` serializes, in its order.
fn our_fields(value: impl serde::Serialize) -> Vec<String> {
    match serde_json::to_value(value).unwrap() {
        Value::Object(o) => o.keys().cloned().collect(),
        other => panic!("not an object: {other}"),
    }
}

fn same(name: &str, ours: Vec<String>) {
    let mut sdk = sdk_fields(name);
    let mut ours_sorted = ours;
    sdk.sort();
    ours_sorted.sort();
    assert_eq!(ours_sorted, sdk, "the fields of {name}");
}

#[test]
fn game_server_session_has_the_sdk_s_fields() {
    let s = models::GameServerSession {
        creation_time: "2026-12-07T00:00:00Z".into(),
        creator_id: String::new(),
        current_player_session_count: 0,
        dns_name: String::new(),
        fleet_id: "fleet-1".into(),
        game_properties: vec![models::GameProperty {
            key: "mode".into(),
            value: "duel".into(),
        }],
        game_server_session_data: String::new(),
        game_server_session_id: "qcs::gse:local::gameserversession/fleet-1/gssess-1".into(),
        ip_address: "10.0.0.1".into(),
        matchmaker_data: String::new(),
        maximum_player_session_count: 4,
        name: "match".into(),
        player_session_creation_policy: "ACCEPT_ALL".into(),
        port: 7777,
        status: "ACTIVE".into(),
        status_reason: String::new(),
        termination_time: None,
        instance_type: String::new(),
        current_custom_count: 0,
        max_custom_count: 0,
        weight: 0,
        availability_status: "Enable".into(),
    };
    same("GameServerSession", our_fields(&s));
    same("GameProperty", our_fields(&s.game_properties[0]));
}

#[test]
fn instance_and_event_have_the_sdk_s_fields() {
    same(
        "Instance",
        our_fields(models::Instance {
            fleet_id: "fleet-1".into(),
            instance_id: "ins-1".into(),
            ip_address: "10.0.0.1".into(),
            dns_name: String::new(),
            operating_system: "linux".into(),
            status: models::InstanceStatus::Active.as_str().into(),
            kind: String::new(),
            create_time: String::new(),
            weight: 10,
            reserve_value: 0,
            private_ip_address: "10.0.0.1".into(),
        }),
    );
    same(
        "Event",
        our_fields(models::Event {
            event_code: "SERVER_PROCESS_CRASHED".into(),
            event_id: "event-1".into(),
            event_time: "2026-12-07T00:00:00.000Z".into(),
            message: "crashed".into(),
            pre_signed_log_url: String::new(),
            resource_id: "fleet-1".into(),
        }),
    );
}
