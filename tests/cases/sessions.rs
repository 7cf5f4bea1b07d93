use serde_json::json;

use crate::helper::{Agent, config, connect_player, entry, wait_for};

const FAST: &str = "
health-check: { interval: 200ms, timeout: 200ms, failure-threshold: 3 }
timeouts: { process-ready: 5s, process-exit: 1s, player-reservation: 2s, stop-grace: 200ms, shutdown: 1s }
protection: { policy: NoProtection, no-protection-grace: 1s }";

fn runtime(max_activations: u32, timeout_s: u32) -> String {
    format!(
        "  MaxConcurrentGameServerSessionActivations: {max_activations}\n  GameServerSessionActivationTimeoutSeconds: {timeout_s}\n"
    )
}

#[test]
fn session_is_started_activated_and_carries_every_field() {
    let agent = Agent::start(&config(&entry("--accept-players", 1), FAST));
    let ready = agent.wait_ready(1);
    let s = agent.ok(json!({
        "Action": "CreateGameServerSession",
        "FleetId": "fleet-test",
        "MaximumPlayerSessionCount": 8,
        "Name": "arena",
        "CreatorId": "alice",
        "GameProperties": [{"Key": "mode", "Value": "ctf"}, {"Key": "map", "Value": "dust"}],
        "GameServerSessionData": "{\"seed\": 7}",
    }))["GameServerSession"]
        .clone();
    assert_eq!(s["Status"], "ACTIVATING");
    assert_eq!(s["Port"], ready[0]["ClientPort"]);
    let id = s["GameServerSessionId"].as_str().unwrap();
    assert!(
        id.starts_with("qcs::gse:local::gameserversession/fleet-test/gssess-"),
        "{id}"
    );
    let active = agent.wait_session_status(id, "ACTIVE");
    assert_eq!(active["Name"], "arena");
    assert_eq!(active["GameProperties"][1]["Value"], "dust");
    // The game printed what OnStartGameServerSession carried.
    let log = agent.path("data/logs/proc-0-0-1.stdout.log");
    let text = wait_for("session line", || {
        std::fs::read_to_string(&log)
            .ok()
            .filter(|t| t.contains("session qcs"))
    });
    assert!(text.contains("maxPlayers 8 properties 2"), "{text}");
    assert!(
        text.contains(&format!("port {}", ready[0]["ClientPort"])),
        "{text}"
    );
    let events = agent.events();
    let codes: Vec<&str> = events
        .iter()
        .map(|e| e["EventCode"].as_str().unwrap())
        .collect();
    assert!(codes.contains(&"GAME_SESSION_CREATED") && codes.contains(&"GAME_SESSION_ACTIVATED"));
}

#[test]
fn activation_timeout_errors_the_session_and_replaces_the_process() {
    let yaml = config(
        &format!("{}{}", entry("--skip-activation", 1), runtime(2, 1)),
        FAST,
    );
    let agent = Agent::start(&yaml);
    agent.wait_ready(1);
    let s = agent.create_session(2);
    let id = s["GameServerSessionId"].as_str().unwrap();
    let e = agent.wait_event("GAME_SESSION_ACTIVATION_TIMEOUT");
    assert_eq!(e["GameServerSessionId"], id);
    assert_eq!(agent.session(id)["Status"], "ERROR");
    agent.wait_event("SERVER_PROCESS_FORCE_TERMINATED");
    agent.wait_events("SERVER_PROCESS_STARTED", 2);
}

#[test]
fn concurrent_activations_are_limited() {
    let yaml = config(
        &format!("{}{}", entry("--skip-activation", 2), runtime(1, 600)),
        FAST,
    );
    let agent = Agent::start(&yaml);
    agent.wait_ready(2);
    agent.create_session(1);
    let msg = agent.err(
        json!({"Action": "CreateGameServerSession", "FleetId": "fleet-test", "MaximumPlayerSessionCount": 1}),
        "LimitExceeded",
    );
    assert!(
        msg.contains("MaxConcurrentGameServerSessionActivations is 1"),
        "{msg}"
    );
}

#[test]
fn no_idle_process_means_limit_exceeded() {
    let agent = Agent::start(&config(&entry("", 1), FAST));
    agent.wait_ready(1);
    agent.create_session(1);
    let msg = agent.err(
        json!({"Action": "CreateGameServerSession", "FleetId": "fleet-test", "MaximumPlayerSessionCount": 1}),
        "LimitExceeded",
    );
    assert!(
        msg.contains("no idle, healthy, ready server process"),
        "{msg}"
    );
}

#[test]
fn refused_session_goes_to_error() {
    let agent = Agent::start(&config(&entry("--refuse-sessions", 1), FAST));
    agent.wait_ready(1);
    let id = agent.create_session(1)["GameServerSessionId"]
        .as_str()
        .unwrap()
        .to_string();
    let s = agent.wait_session_status(&id, "ERROR");
    assert!(
        s["StatusReason"]
            .as_str()
            .unwrap()
            .contains("refused by --refuse-sessions"),
        "{s}"
    );
}

#[test]
fn players_reserve_accept_complete_and_time_out() {
    let agent = Agent::start(&config(&entry("--accept-players", 1), FAST));
    agent.wait_ready(1);
    let s = agent.create_session(2);
    let id = s["GameServerSessionId"].as_str().unwrap();
    agent.wait_session_status(id, "ACTIVE");
    let port = s["Port"].as_u64().unwrap() as u16;
    let batch = agent.ok(json!({
        "Action": "JoinGameServerSessionBatch",
        "GameServerSessionId": id,
        "PlayerIds": ["p1", "p2"],
        "PlayerDataMap": {"p1": "level=3"},
    }))["PlayerSessions"]
        .clone();
    assert_eq!(batch[0]["Status"], "RESERVED");
    assert_eq!(batch[0]["PlayerData"], "level=3");
    assert_eq!(batch[0]["Port"], port);
    let msg = agent.err(
        json!({"Action": "JoinGameServerSession", "GameServerSessionId": id, "PlayerId": "p3"}),
        "LimitExceeded",
    );
    assert!(msg.contains("2 of 2 player slots"), "{msg}");
    let p1 = batch[0]["PlayerSessionId"].as_str().unwrap();
    let (conn, answer) = connect_player(port, p1);
    assert_eq!(answer, "OK");
    let describe = |ps: &str| {
        agent.ok(json!({"Action": "DescribePlayerSessions", "PlayerSessionId": ps}))["PlayerSessions"][0].clone()
    };
    assert_eq!(describe(p1)["Status"], "ACTIVE");
    assert_eq!(agent.session(id)["CurrentPlayerSessionCount"], 2);
    // p2 never connects.
    let p2 = batch[1]["PlayerSessionId"].as_str().unwrap();
    wait_for("p2 TIMEDOUT", || {
        (describe(p2)["Status"] == "TIMEDOUT").then_some(())
    });
    assert_eq!(agent.session(id)["CurrentPlayerSessionCount"], 1);
    // A timed-out reservation cannot be accepted.
    let (_c, answer) = connect_player(port, p2);
    assert!(answer.contains("is TIMEDOUT, not RESERVED"), "{answer}");
    drop(conn);
    wait_for("p1 COMPLETED", || {
        (describe(p1)["Status"] == "COMPLETED").then_some(())
    });
    assert!(describe(p1)["TerminationTime"].is_string());
    assert_eq!(agent.session(id)["CurrentPlayerSessionCount"], 0);
    // Unknown player sessions are refused by the agent.
    let (_c, answer) = connect_player(port, "psess-nope");
    assert!(
        answer.contains("player session psess-nope does not exist"),
        "{answer}"
    );
}

#[test]
fn player_listing_filters_and_pages() {
    let agent = Agent::start(&config(&entry("", 1), FAST));
    agent.wait_ready(1);
    let s = agent.create_session(10);
    let id = s["GameServerSessionId"].as_str().unwrap();
    agent.wait_session_status(id, "ACTIVE");
    let ids: Vec<String> = agent.ok(json!({
        "Action": "JoinGameServerSessionBatch",
        "GameServerSessionId": id,
        "PlayerIds": ["a", "b", "c", "d", "e"],
    }))["PlayerSessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["PlayerSessionId"].as_str().unwrap().to_string())
        .collect();
    let mut seen = Vec::new();
    let mut token = serde_json::Value::Null;
    loop {
        let r = agent.ok(json!({
            "Action": "DescribePlayerSessions",
            "GameServerSessionId": id,
            "Limit": 2,
            "NextToken": token,
        }));
        let page = r["PlayerSessions"].as_array().unwrap();
        assert!(page.len() <= 2);
        seen.extend(
            page.iter()
                .map(|p| p["PlayerSessionId"].as_str().unwrap().to_string()),
        );
        token = r["NextToken"].clone();
        if token.is_null() {
            break;
        }
    }
    assert_eq!(seen, ids);
    let by_player = agent.ok(json!({"Action": "DescribePlayerSessions", "PlayerId": "c"}));
    assert_eq!(
        by_player["PlayerSessions"][0]["PlayerSessionId"],
        ids[2].as_str()
    );
    let reserved = agent.ok(json!({
        "Action": "DescribePlayerSessions",
        "GameServerSessionId": id,
        "PlayerSessionStatusFilter": "ACTIVE",
    }));
    assert_eq!(reserved["PlayerSessions"].as_array().unwrap().len(), 0);
}

#[test]
fn sessions_list_by_status_and_page() {
    let agent = Agent::start(&config(
        &entry("--match-duration 10ms --keep-running", 1),
        FAST,
    ));
    agent.wait_ready(1);
    let first = agent.create_session(1)["GameServerSessionId"]
        .as_str()
        .unwrap()
        .to_string();
    agent.wait_session_status(&first, "TERMINATED");
    let second = agent.create_session(1)["GameServerSessionId"]
        .as_str()
        .unwrap()
        .to_string();
    agent.wait_session_status(&second, "TERMINATED");
    let page = agent
        .ok(json!({"Action": "DescribeGameServerSessions", "FleetId": "fleet-test", "Limit": 1}));
    assert_eq!(
        page["GameServerSessions"][0]["GameServerSessionId"],
        first.as_str()
    );
    let next = agent.ok(json!({
        "Action": "DescribeGameServerSessions", "FleetId": "fleet-test", "Limit": 1, "NextToken": page["NextToken"],
    }));
    assert_eq!(
        next["GameServerSessions"][0]["GameServerSessionId"],
        second.as_str()
    );
    let active = agent.ok(json!({"Action": "DescribeGameServerSessions", "FleetId": "fleet-test", "StatusFilter": "ACTIVE"}));
    assert_eq!(active["GameServerSessions"].as_array().unwrap().len(), 0);
    // The process kept running and hosted both.
    assert_eq!(agent.count("SERVER_PROCESS_STARTED"), 1);
}

#[test]
fn custom_data_is_shown_on_the_session() {
    let agent = Agent::start(&config(&entry(crate::helper::COMMANDS, 1), FAST));
    let pid = agent.wait_ready(1)[0]["Pid"].as_u64().unwrap() as u32;
    let id = agent.create_session(1)["GameServerSessionId"]
        .as_str()
        .unwrap()
        .to_string();
    agent.wait_session_status(&id, "ACTIVE");
    assert_eq!(agent.game(pid).call("custom 3 10")["status"], 0);
    let s = agent.session(&id);
    assert_eq!(
        (
            s["CurrentCustomCount"].as_i64(),
            s["MaxCustomCount"].as_i64()
        ),
        (Some(3), Some(10))
    );
}
