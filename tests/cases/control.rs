//! gse-control with real parts: a throwaway PostgreSQL, real replicas, real agents running the
//! fake game server, and Tencent's official Python SDK as the studio backend.

use serde_json::{Value, json};

use crate::helper::control::Control;
use crate::helper::postgres::Postgres;
use crate::helper::{Agent, entry, wait_for};

/// Agent settings with fast timings for a host of `fleet` relaying to `endpoints`.
fn host(fleet: &str, instance: &str, endpoints: &[&Control], processes: u32) -> String {
    let list = endpoints
        .iter()
        .map(|c| c.relay_url())
        .collect::<Vec<_>>()
        .join(", ");
    let endpoint = if endpoints.len() == 1 {
        format!("\"{list}\"")
    } else {
        format!("[{list}]")
    };
    format!(
        "fleet-id: {fleet}
instance-id: {instance}
data-dir: data
game-root: game
sdk-listen: 127.0.0.1:0
capi-listen: 127.0.0.1:0
health-check: {{ interval: 200ms, timeout: 200ms, failure-threshold: 3 }}
upstream: {{ endpoint: {endpoint}, status-interval: 100ms, reconnect-initial: 50ms, reconnect-max: 300ms }}
runtime-configuration:
  ServerProcesses:
{}",
        entry("--accept-players", processes)
    )
}

/// Waits until the control plane has `n` idle processes on `instance`.
fn wait_idle(pg: &Postgres, instance: &str, n: u32) {
    wait_for(&format!("{n} idle processes on {instance}"), || {
        (pg.scalar(&format!(
            "SELECT idle FROM instances WHERE instance_id = '{instance}' AND connected"
        )) == n.to_string())
        .then_some(())
    });
}

#[test]
fn one_replica_creates_joins_and_searches_through_the_official_sdk() {
    let pg = Postgres::start();
    let control = Control::start(&pg.url, "instance-lost-after: 2s\n");
    let agent = Agent::start(&host("fleet-a", "ins-a1", &[&control], 2));
    wait_for("the instance in the database", || {
        (pg.scalar("SELECT count(*) FROM instances WHERE connected") == "1").then_some(())
    });
    let sdk = control.sdk();
    let fleets = sdk.ok("ListFleets", json!({}));
    assert_eq!(fleets["FleetIds"], json!(["fleet-a"]));
    wait_idle(&pg, "ins-a1", 2);
    let created = sdk.ok(
        "CreateGameServerSession",
        json!({"FleetId": "fleet-a", "MaximumPlayerSessionCount": 4, "Name": "match-1",
               "GameProperties": [{"Key": "mode", "Value": "duel"}], "IdempotencyToken": "tok-1"}),
    );
    let gss = created["GameServerSession"].clone();
    let id = gss["GameServerSessionId"].as_str().unwrap().to_string();
    // The same token gets the same session.
    let again = sdk.ok(
        "CreateGameServerSession",
        json!({"FleetId": "fleet-a", "MaximumPlayerSessionCount": 4, "IdempotencyToken": "tok-1"}),
    );
    assert_eq!(again["GameServerSession"]["GameServerSessionId"], json!(id));
    // The agent says so too: one session on the host.
    let on_host = agent.ok(json!({"Action": "DescribeGameServerSessions", "FleetId": "fleet-a"}));
    assert_eq!(on_host["GameServerSessions"].as_array().unwrap().len(), 1);
    let described = wait_for("the session ACTIVE in the control plane", || {
        let d = sdk.ok(
            "DescribeGameServerSessions",
            json!({"GameServerSessionId": id}),
        );
        (d["GameServerSessions"][0]["Status"] == "ACTIVE").then_some(d)
    });
    assert_eq!(described["GameServerSessions"][0]["Name"], "match-1");
    let joined = sdk.ok(
        "JoinGameServerSession",
        json!({"GameServerSessionId": id, "PlayerId": "player-1"}),
    );
    let player = &joined["PlayerSession"];
    assert_eq!(player["GameServerSessionId"], json!(id));
    let port = player["Port"].as_u64().unwrap() as u16;
    let (_conn, answer) =
        crate::helper::connect_player(port, player["PlayerSessionId"].as_str().unwrap());
    assert_eq!(answer, "OK");
    let found = sdk.ok(
        "SearchGameServerSessions",
        json!({"FleetId": "fleet-a", "FilterExpression": "gameServerSessionProperties.mode = 'duel'"}),
    );
    assert_eq!(
        found["GameServerSessions"][0]["GameServerSessionId"],
        json!(id)
    );
    let players = wait_for("the player ACTIVE", || {
        let p = sdk.ok("DescribePlayerSessions", json!({"GameServerSessionId": id}));
        (p["PlayerSessions"][0]["Status"] == "ACTIVE").then_some(p)
    });
    assert_eq!(players["PlayerSessions"][0]["PlayerId"], "player-1");
    // Every event the agent wrote reached the database, contiguous.
    let events: Vec<Value> = agent.events();
    let highest = events
        .iter()
        .filter_map(|e| e["Sequence"].as_u64())
        .max()
        .unwrap();
    wait_for("every event stored", || {
        let stored = pg.scalar(
            "SELECT count(*) || ' ' || max(sequence) FROM events WHERE instance_id = 'ins-a1'",
        );
        let mut parts = stored.split(' ').map(|s| s.parse::<u64>().unwrap_or(0));
        let (count, max) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
        (count == max && max >= highest).then_some(())
    });
}
