//! gse-control with real parts: a throwaway PostgreSQL, real replicas, real agents running the
//! fake game server, and Tencent's official Python SDK as the studio backend.

use serde_json::{Value, json};

use crate::helper::control::Control;
use crate::helper::postgres::Postgres;
use crate::helper::{Agent, entry, wait_for};

/// Agent settings with fast timings for a host of `fleet` relaying to `endpoints`.
fn host(fleet: &str, instance: &str, endpoints: &[&Control], processes: u32) -> String {
    host_at(fleet, instance, None, endpoints, processes)
}

/// [`host`] with players sent to `public_ip`.
fn host_at(
    fleet: &str,
    instance: &str,
    public_ip: Option<&str>,
    endpoints: &[&Control],
    processes: u32,
) -> String {
    let address = public_ip
        .map(|ip| format!("public-ip: {ip}\n"))
        .unwrap_or_default();
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
{address}data-dir: data
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
    // An alias routes creates to its fleet.
    let alias = sdk.ok(
        "CreateAlias",
        json!({"Name": "live", "RoutingStrategy": {"Type": "SIMPLE", "FleetId": "fleet-a"}}),
    )["Alias"]["AliasId"]
        .clone();
    let by_alias = sdk.ok(
        "CreateGameServerSession",
        json!({"AliasId": alias, "MaximumPlayerSessionCount": 2}),
    );
    assert_eq!(by_alias["GameServerSession"]["FleetId"], "fleet-a");
    // The fleet and instance views in the SDK's models (a field the SDK does not know fails).
    let attributes = sdk.ok("DescribeFleetAttributes", json!({"FleetIds": ["fleet-a"]}));
    assert_eq!(attributes["FleetAttributes"][0]["FleetId"], "fleet-a");
    let extend = wait_for("the instance's counters", || {
        let e = sdk.ok("DescribeInstancesExtend", json!({"FleetId": "fleet-a"}));
        (e["Instances"][0]["GameSessionCnt"] == 2).then_some(e)
    });
    assert_eq!(extend["Instances"][0]["Instance"]["InstanceId"], "ins-a1");
    let utilization = sdk.ok("DescribeFleetUtilization", json!({"FleetIds": ["fleet-a"]}));
    assert_eq!(
        utilization["FleetUtilization"][0]["ActiveGameServerSessionCount"],
        2
    );
    let events = sdk.ok(
        "DescribeFleetEvents",
        json!({"FleetId": "fleet-a", "Limit": 5}),
    );
    assert_eq!(events["Events"].as_array().unwrap().len(), 5);
    sdk.ok(
        "SetServerWeight",
        json!({"FleetId": "fleet-a", "InstanceId": "ins-a1", "Weight": 5}),
    );
    sdk.ok(
        "SetServerReserved",
        json!({"FleetId": "fleet-a", "InstanceId": "ins-a1", "ReserveValue": 1}),
    );
    // Reserved: the host takes no new session, though it has no free process anyway now.
    let (code, _) = sdk.err(
        "CreateGameServerSession",
        json!({"FleetId": "fleet-a", "MaximumPlayerSessionCount": 2}),
    );
    assert_eq!(code, "LimitExceeded");
    let reserved = sdk.ok("DescribeInstances", json!({"FleetId": "fleet-a"}));
    assert_eq!(reserved["Instances"][0]["ReserveValue"], 1);
    assert_eq!(reserved["Instances"][0]["Weight"], 5);
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
    // The replica vacuums the tables every create rewrites itself (autovacuum is too slow for
    // them): it has the rights to, and does.
    wait_for("the replica's vacuum of the hot tables", || {
        (pg.scalar(
            "SELECT count(*) FROM pg_stat_user_tables
             WHERE relname IN ('instances', 'placements', 'idempotency') AND last_vacuum IS NOT NULL",
        ) == "3")
            .then_some(())
    });
}

/// The highest event sequence the agent holds.
fn highest_sequence(agent: &Agent) -> u64 {
    agent
        .events()
        .iter()
        .filter_map(|e| e["Sequence"].as_u64())
        .max()
        .unwrap_or(0)
}

/// Waits until the database holds events 1..=n of `instance`'s current epoch, none missing,
/// with n at least `highest`, and the agent reports none unacknowledged (acks follow storage).
fn wait_events_stored(pg: &Postgres, instance: &str, highest: u64) -> u64 {
    wait_for(&format!("every event of {instance} stored"), || {
        let row = pg.query(&format!(
            "SELECT count(*), coalesce(max(sequence), 0),
                    (SELECT status ->> 'UnackedEvents' FROM instances WHERE instance_id = '{instance}')
             FROM events e JOIN instances i USING (instance_id)
             WHERE instance_id = '{instance}' AND e.epoch = i.epoch"
        ));
        let count: u64 = row[0][0].parse().unwrap();
        let max: u64 = row[0][1].parse().unwrap();
        (count == max && max >= highest && row[0][2] == "0").then_some(max)
    })
}

/// The instance the database says hosts `gss`.
fn host_of(pg: &Postgres, gss: &str) -> String {
    pg.scalar(&format!(
        "SELECT instance_id FROM sessions WHERE gss_id = '{gss}'"
    ))
}

#[test]
fn two_replicas_and_three_hosts_place_sessions_and_survive_what_dies() {
    let pg = Postgres::start();
    let mut a = Control::start(&pg.url, "instance-lost-after: 2s\n");
    let b = Control::start(&pg.url, "instance-lost-after: 2s\n");
    let both = [&a, &b];
    let h1 = Agent::start(&host_at("fleet-a", "ins-a1", Some("127.0.0.2"), &both, 2));
    let h2 = Agent::start(&host_at("fleet-a", "ins-a2", Some("127.0.0.3"), &both, 1));
    let mut h3 = Agent::start(&host_at("fleet-b", "ins-b1", Some("127.0.0.4"), &both, 2));
    wait_idle(&pg, "ins-a1", 2);
    wait_idle(&pg, "ins-a2", 1);
    wait_idle(&pg, "ins-b1", 2);
    let (sa, sb) = (a.sdk(), b.sdk());

    // GSE's step 3, replicas alternating: create on A, join on B, connect to IP:port.
    let create = |sdk: &crate::helper::tencent::Client, token: &str| {
        sdk.ok(
            "CreateGameServerSession",
            json!({"FleetId": "fleet-a", "MaximumPlayerSessionCount": 2, "IdempotencyToken": token}),
        )["GameServerSession"]
            .clone()
    };
    let s1 = create(&sa, "match-1");
    let s1_id = s1["GameServerSessionId"].as_str().unwrap().to_string();
    // Packed: the host with the fewest free processes first.
    assert_eq!(host_of(&pg, &s1_id), "ins-a2");
    assert_eq!(s1["IpAddress"], "127.0.0.3");
    // The token holds across replicas.
    assert_eq!(create(&sb, "match-1")["GameServerSessionId"], json!(s1_id));
    wait_for("s1 ACTIVE through B", || {
        let d = sb.ok(
            "DescribeGameServerSessions",
            json!({"GameServerSessionId": s1_id}),
        );
        (d["GameServerSessions"][0]["Status"] == "ACTIVE").then_some(())
    });
    let p1 = sb.ok(
        "JoinGameServerSession",
        json!({"GameServerSessionId": s1_id, "PlayerId": "alice"}),
    )["PlayerSession"]
        .clone();
    let connect = |p: &Value| {
        let addr = (
            p["IpAddress"].as_str().unwrap().to_string(),
            p["Port"].as_u64().unwrap() as u16,
        );
        let mut s = std::net::TcpStream::connect(addr).expect("connect to the game");
        s.set_read_timeout(Some(crate::helper::DEADLINE)).unwrap();
        use std::io::{BufRead, Write};
        writeln!(s, "{}", p["PlayerSessionId"].as_str().unwrap()).unwrap();
        let mut answer = String::new();
        std::io::BufReader::new(s.try_clone().unwrap())
            .read_line(&mut answer)
            .unwrap();
        assert_eq!(answer.trim(), "OK");
        s
    };
    let _alice = connect(&p1);

    // Search (on A) and join (on B).
    let found = sa.ok(
        "SearchGameServerSessions",
        json!({"FleetId": "fleet-a", "FilterExpression": "hasAvailablePlayerSessions = true"}),
    );
    assert_eq!(
        found["GameServerSessions"][0]["GameServerSessionId"],
        json!(s1_id)
    );
    let p2 = sb.ok(
        "JoinGameServerSessionBatch",
        json!({"GameServerSessionId": s1_id, "PlayerIds": ["bob"]}),
    )["PlayerSessions"][0]
        .clone();
    let _bob = connect(&p2);

    // Fill fleet-a, then a placement on a queue whose first fleet is full spills to the second.
    let s2 = create(&sb, "match-2");
    let s3 = create(&sa, "match-3");
    for s in [&s2, &s3] {
        assert_eq!(
            host_of(&pg, s["GameServerSessionId"].as_str().unwrap()),
            "ins-a1"
        );
    }
    let (code, _) = sa.err(
        "CreateGameServerSession",
        json!({"FleetId": "fleet-a", "MaximumPlayerSessionCount": 2}),
    );
    assert_eq!(code, "LimitExceeded");
    sa.ok(
        "CreateGameServerSessionQueue",
        json!({"Name": "matches", "TimeoutInSeconds": 60, "Destinations": [
            {"DestinationArn": "qcs::gse:local:uin/0:fleet/fleet-a"},
            {"DestinationArn": "qcs::gse:local:uin/0:fleet/fleet-b"},
        ]}),
    );
    sb.ok(
        "StartGameServerSessionPlacement",
        json!({"PlacementId": "place-1", "GameServerSessionQueueName": "matches",
               "MaximumPlayerSessionCount": 2, "DesiredPlayerSessions": [{"PlayerId": "carol"}]}),
    );
    let placed = wait_for("the placement FULFILLED", || {
        let p = sa.ok(
            "DescribeGameServerSessionPlacement",
            json!({"PlacementId": "place-1"}),
        );
        let p = p["GameServerSessionPlacement"].clone();
        (p["Status"] == "FULFILLED").then_some(p)
    });
    assert_eq!(placed["IpAddress"], "127.0.0.4");
    let placed_gss = placed["GameServerSessionId"].as_str().unwrap().to_string();
    assert_eq!(host_of(&pg, &placed_gss), "ins-b1");
    assert_eq!(placed["PlacedPlayerSessions"][0]["PlayerId"], "carol");
    let stats = sa.common(
        "DescribeGameServerSessionQueueStatistics",
        json!({"Names": ["matches"]}),
    )["QueueStatistics"][0]
        .clone();
    assert_eq!(stats["PlacementsStarted"], 1, "{stats}");
    assert_eq!(stats["PlacementsFulfilled"], 1, "{stats}");
    assert_eq!(stats["FirstChoiceNotViable"], 1, "{stats}");
    assert_eq!(stats["Depth"], 0, "{stats}");

    // Replica A dies: the agents move to B, and no event is lost.
    a.kill9();
    wait_for("every host on replica B", || {
        (pg.scalar(&format!(
            "SELECT count(*) FROM instances i JOIN replicas r ON r.replica = i.replica
             WHERE i.connected AND r.relay_addr = '{}'",
            b.relay
        )) == "3")
            .then_some(())
    });
    wait_events_stored(&pg, "ins-a1", highest_sequence(&h1));
    wait_events_stored(&pg, "ins-a2", highest_sequence(&h2));
    let stored_b1 = wait_events_stored(&pg, "ins-b1", highest_sequence(&h3));
    // Nothing double-booked: no process hosts two live sessions.
    let doubled = pg.scalar(
        "SELECT count(*) FROM (SELECT instance_id, body ->> 'Port' FROM sessions
         WHERE status IN ('ACTIVATING', 'ACTIVE') GROUP BY 1, 2 HAVING count(*) > 1) d",
    );
    assert_eq!(doubled, "0");
    for agent in [&h1, &h2, &h3] {
        let live = agent.ok(json!({"Action": "DescribeServerProcesses"}))["ServerProcesses"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| {
                p["GameServerSessionId"]
                    .as_str()
                    .is_some_and(|s| !s.is_empty())
            })
            .count();
        assert!(live <= 2);
    }

    // A host dies: it turns Lost and gets no sessions, its session is shown as last known.
    h3.kill9();
    wait_for("ins-b1 Lost", || {
        let d = sb.ok("DescribeInstances", json!({"FleetId": "fleet-b"}));
        (d["Instances"][0]["Status"] == "Lost").then_some(())
    });
    let (code, _) = sb.err(
        "CreateGameServerSession",
        json!({"FleetId": "fleet-b", "MaximumPlayerSessionCount": 2}),
    );
    assert_eq!(code, "LimitExceeded");
    let last_known = sb.ok(
        "DescribeGameServerSessions",
        json!({"GameServerSessionId": placed_gss}),
    );
    assert_eq!(last_known["GameServerSessions"][0]["Status"], "ACTIVE");

    // It comes back: its live session is reconciled, and it takes sessions again.
    h3.spawn();
    wait_for("ins-b1 back", || {
        let d = sb.ok("DescribeInstances", json!({"FleetId": "fleet-b"}));
        (d["Instances"][0]["Status"] == "Active").then_some(())
    });
    wait_idle(&pg, "ins-b1", 1);
    let reconciled = sb.ok(
        "DescribeGameServerSessions",
        json!({"GameServerSessionId": placed_gss}),
    );
    assert_eq!(reconciled["GameServerSessions"][0]["Status"], "ACTIVE");
    let s4 = sb.ok(
        "CreateGameServerSession",
        json!({"FleetId": "fleet-b", "MaximumPlayerSessionCount": 2}),
    );
    assert_eq!(s4["GameServerSession"]["IpAddress"], "127.0.0.4");
    // The restarted agent numbers on from its outbox: nothing stored before is missing after.
    assert!(wait_events_stored(&pg, "ins-b1", stored_b1 + 1) > stored_b1);
}

#[test]
fn check_config_lists_every_problem_and_exits_64() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("control.yaml");
    std::fs::write(
        &bad,
        "database: mysql://nope\napi-listen: 0.0.0.0:9080\ninstance-lost-after: 0s\n",
    )
    .unwrap();
    let out = std::process::Command::new(crate::helper::control::CONTROL)
        .arg("check-config")
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let said = String::from_utf8_lossy(&out.stderr);
    for line in [
        "control.yaml:1: database",
        "control.yaml:2: api-listen",
        "control.yaml:3: instance-lost-after",
    ] {
        assert!(said.contains(line), "{line} in {said}");
    }
    let good = dir.path().join("good.yaml");
    std::fs::write(&good, "database: postgres://gse@127.0.0.1:5432/gse\n").unwrap();
    let out = std::process::Command::new(crate::helper::control::CONTROL)
        .arg("check-config")
        .arg(&good)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // `run` refuses the same way, before touching any database.
    let out = std::process::Command::new(crate::helper::control::CONTROL)
        .args(["run", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
}

/// A tokens file: one line per host, mode 600.
fn write_tokens(path: &std::path::Path, lines: &str) {
    use std::os::unix::fs::PermissionsExt;
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, lines).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// A session of 2 players on `fleet`, created through the official SDK: its id.
fn create(sdk: &crate::helper::tencent::Client, fleet: &str) -> String {
    sdk.ok(
        "CreateGameServerSession",
        json!({"FleetId": fleet, "MaximumPlayerSessionCount": 2}),
    )["GameServerSession"]["GameServerSessionId"]
        .as_str()
        .unwrap()
        .to_string()
}

/// `player` joined to `gss` through the official SDK: the player session id.
fn join(sdk: &crate::helper::tencent::Client, gss: &str, player: &str) -> String {
    sdk.ok(
        "JoinGameServerSession",
        json!({"GameServerSessionId": gss, "PlayerId": player}),
    )["PlayerSession"]["PlayerSessionId"]
        .as_str()
        .unwrap()
        .to_string()
}

/// An `agent-tokens-file` in a folder of its own.
struct Tokens {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
}

impl Tokens {
    fn new(lines: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        write_tokens(&path, lines);
        Self { _dir: dir, path }
    }
}

/// A replica that takes only the agents `tokens` lists.
fn control_with(pg: &Postgres, tokens: &Tokens) -> Control {
    Control::start(
        &pg.url,
        &format!("agent-tokens-file: {}\n", tokens.path.display()),
    )
}

/// An agent of `fleet`/`instance` presenting `token`.
fn host_with_token(control: &Control, fleet: &str, instance: &str, token: &str) -> Agent {
    let yaml = host(fleet, instance, &[control], 1).replace(
        "reconnect-max: 300ms }",
        "reconnect-max: 300ms, token-file: token }",
    );
    let token = token.to_string();
    Agent::start_with(&yaml, move |game| {
        crate::helper::write_secret(&game.parent().unwrap().join("token"), &token);
    })
}

fn connected(pg: &Postgres, instance: &str) -> bool {
    pg.scalar(&format!(
        "SELECT count(*) FROM instances WHERE instance_id = '{instance}' AND connected"
    )) == "1"
}

#[test]
fn agents_must_present_a_listed_token() {
    let pg = Postgres::start();
    let tokens = Tokens::new("# hosts\nright-token-0123456789 ins-right\n");
    let control = control_with(&pg, &tokens);
    let wrong = host_with_token(&control, "fleet-t", "ins-wrong", "wrong-token-0123456789");
    let _right = host_with_token(&control, "fleet-t", "ins-right", "right-token-0123456789");
    wait_for("the listed agent connected", || {
        connected(&pg, "ins-right").then_some(())
    });
    wait_for("the unlisted agent refused", || {
        wrong
            .stderr()
            .contains("not in agent-tokens-file")
            .then_some(())
    });
    assert_eq!(
        pg.scalar("SELECT count(*) FROM instances WHERE instance_id = 'ins-wrong'"),
        "0"
    );
}

/// Issue 26, item 1: a credential speaks for one instance. A host holding its own token that
/// claims another host is refused and changes nothing of it; a Hello cannot move a host to
/// another fleet; a revoked host is cut off within seconds while the others keep relaying.
#[test]
fn a_credential_speaks_for_its_own_instance_only() {
    let pg = Postgres::start();
    let tokens = Tokens::new(
        "token-of-ins-a-0123456789 ins-a\ntoken-of-ins-b-0123456789 ins-b\ntoken-of-ins-x-0123456789 ins-x\n",
    );
    let control = control_with(&pg, &tokens);
    let _a = host_with_token(&control, "fleet-f1", "ins-a", "token-of-ins-a-0123456789");
    let b = host_with_token(&control, "fleet-f2", "ins-b", "token-of-ins-b-0123456789");
    wait_idle(&pg, "ins-a", 1);
    wait_idle(&pg, "ins-b", 1);
    let sdk = control.sdk();
    let gss = create(&sdk, "fleet-f1");
    wait_for("the session ACTIVE", || {
        (pg.scalar(&format!(
            "SELECT status FROM sessions WHERE gss_id = '{gss}'"
        )) == "ACTIVE")
            .then_some(())
    });
    let alice = join(&sdk, &gss, "alice");

    // ins-x's credential, claiming ins-a; ins-b's, claiming to be in fleet-f1.
    let impostor = host_with_token(&control, "fleet-f1", "ins-a", "token-of-ins-x-0123456789");
    wait_for("the impostor refused", || {
        impostor
            .stderr()
            .contains("speaks for instance ins-x, not ins-a")
            .then_some(())
    });
    let mover = host_with_token(&control, "fleet-f1", "ins-b", "token-of-ins-b-0123456789");
    wait_for("the move refused", || {
        mover
            .stderr()
            .contains("instance ins-b is in fleet-f2; a Hello cannot move it to fleet-f1")
            .then_some(())
    });
    drop(mover);
    let log = control.stderr();
    assert!(
        log.contains("credential=agent-tokens-file:3"),
        "named by its line"
    );
    assert!(!log.contains("token-of-ins-x"), "never its secret");
    // Each refusal is counted by the rule it broke, on the replica's /metrics.
    use crate::cases::metrics::{scrape, value, wait_value};
    let refused = |rule: &str| format!("gse_control_relay_refused_total{{rule=\"{rule}\"}}");
    wait_value(control.metrics, &refused("credential_instance"), |v| {
        v >= 1.0
    });
    wait_value(control.metrics, &refused("fleet"), |v| v >= 1.0);
    let text = scrape(control.metrics);
    assert_eq!(
        value(&text, &refused("certificate_instance")),
        Some(0.0),
        "{text}"
    );
    assert_eq!(value(&text, &refused("unknown_token")), Some(0.0), "{text}");
    // ins-a is untouched: its session ACTIVE with alice, its stream its own, creates go to it.
    assert_eq!(
        pg.scalar(&format!(
            "SELECT status FROM sessions WHERE gss_id = '{gss}'"
        )),
        "ACTIVE"
    );
    assert_eq!(
        pg.scalar(&format!(
            "SELECT status FROM players WHERE player_session_id = '{alice}'"
        )),
        "RESERVED"
    );
    assert_eq!(
        pg.scalar("SELECT fleet_id FROM instances WHERE instance_id = 'ins-b'"),
        "fleet-f2"
    );
    assert!(connected(&pg, "ins-a"));
    sdk.ok(
        "EndGameServerSessionAndProcess",
        json!({"GameServerSessionId": gss}),
    );
    wait_idle(&pg, "ins-a", 1);
    let again = create(&sdk, "fleet-f1");
    assert_eq!(host_of(&pg, &again), "ins-a");

    // ins-b's line goes: its stream ends within seconds, ins-a keeps relaying.
    write_tokens(&tokens.path, "token-of-ins-a-0123456789 ins-a\n");
    wait_for("the revoked host cut off", || {
        b.stderr()
            .contains("not in agent-tokens-file")
            .then_some(())
    });
    wait_for("its row not connected", || {
        (!connected(&pg, "ins-b")).then_some(())
    });
    assert!(connected(&pg, "ins-a"));
    wait_value(control.metrics, &refused("unknown_token"), |v| v >= 1.0);
    drop(impostor);
}

/// A replica says on `metrics-listen` whether it is alive and whether it is ready (its
/// database answers), and counts its relay streams.
#[test]
fn the_replica_says_whether_it_is_alive_and_ready() {
    use crate::cases::metrics::{get, wait_value};
    let pg = Postgres::start();
    let control = Control::start(&pg.url, "");
    let _host = Agent::start(&host("fleet-m", "ins-m", &[&control], 1));
    wait_idle(&pg, "ins-m", 1);
    wait_value(control.metrics, "gse_control_relay_streams", |v| v == 1.0);
    let (status, body) = get(control.metrics, "/readyz", "");
    assert_eq!(
        (status, body.as_str()),
        (200, "ready: the database answers\n")
    );
    pg.stop();
    let (status, body) = get(control.metrics, "/readyz", "");
    assert_eq!(status, 503, "{body}");
    assert!(body.starts_with("not ready: the database"), "{body}");
    assert!(!body.contains("db error"), "no database text: {body}");
    let (status, body) = get(control.metrics, "/healthz", "");
    assert_eq!((status, body.as_str()), (200, "ok: gse-control answers\n"));
    let (status, body) = get(control.metrics, "/nope", "");
    assert_eq!(status, 404, "{body}");
}

#[test]
fn a_runtime_configuration_reaches_every_host_and_one_that_joins_later() {
    let pg = Postgres::start();
    let control = Control::start(&pg.url, "");
    let first = Agent::start(&host("fleet-r", "ins-r1", &[&control], 1));
    wait_idle(&pg, "ins-r1", 1);
    let sdk = control.sdk();
    let rc = json!({
        "ServerProcesses": [{"LaunchPath": "/local/game/server", "Parameters": "--accept-players", "ConcurrentExecutions": 2}],
        "MaxConcurrentGameServerSessionActivations": 2,
        "GameServerSessionActivationTimeoutSeconds": 60,
    });
    sdk.ok(
        "UpdateRuntimeConfiguration",
        json!({"FleetId": "fleet-r", "RuntimeConfiguration": rc}),
    );
    let runs_two = |agent: &Agent| {
        let r = agent.ok(json!({"Action": "DescribeRuntimeConfiguration", "FleetId": "fleet-r"}));
        r["RuntimeConfiguration"]["ServerProcesses"][0]["ConcurrentExecutions"] == 2
    };
    assert!(runs_two(&first));
    let stored = sdk.ok(
        "DescribeRuntimeConfiguration",
        json!({"FleetId": "fleet-r"}),
    );
    assert_eq!(stored["RuntimeConfiguration"], rc);
    let later = Agent::start(&host("fleet-r", "ins-r2", &[&control], 1));
    wait_for("the later host runs the fleet's configuration", || {
        runs_two(&later).then_some(())
    });
    wait_idle(&pg, "ins-r2", 2);
    // A configuration the agent's rules refuse is refused here, naming why.
    let (code, message) = sdk.err(
        "UpdateRuntimeConfiguration",
        json!({"FleetId": "fleet-r", "RuntimeConfiguration": {"ServerProcesses": []}}),
    );
    assert_eq!(code, "InvalidParameterValue");
    assert!(message.contains("ServerProcesses"), "{message}");
}

#[test]
fn a_build_rolls_out_to_every_host_and_stops_at_a_failure() {
    let pg = Postgres::start();
    let control = Control::start(&pg.url, "rollout-batch: 1\n");
    let builds = tempfile::tempdir().unwrap();
    let v1 = crate::cases::upstream::make_build(builds.path(), "v1.zip", "v1");
    let v2 = crate::cases::upstream::make_build(builds.path(), "v2.zip", "v2");
    let on_v1 = |instance: &str| {
        let yaml = host("fleet-d", instance, &[&control], 1)
            .replace("/local/game/server", "/local/game/srv")
            .replace(
                "data-dir: data",
                &format!("build: {}\ndata-dir: data", v1.display()),
            );
        Agent::start_with(&yaml, |game| std::fs::remove_dir_all(game).unwrap())
    };
    let hosts = [on_v1("ins-d1"), on_v1("ins-d2")];
    wait_idle(&pg, "ins-d1", 1);
    wait_idle(&pg, "ins-d2", 1);
    let sdk = control.sdk();
    // Extension actions and parameters go through the SDK's common client.
    let rollout = || sdk.common("DescribeFleetRollout", json!({"FleetId": "fleet-d"}));
    let sha = gse_agent::agent::package::content_hash(&v2).unwrap();
    sdk.common(
        "UpdateFleetAttributes",
        json!({"FleetId": "fleet-d", "BuildLocation": v2.display().to_string(), "BuildSha256": sha}),
    );
    let done = wait_for("the roll-out DONE", || {
        let r = rollout();
        (r["State"] == "DONE").then_some(r)
    });
    assert_eq!(done["InstancesDone"], 2, "{done}");
    for h in &hosts {
        wait_for("the host on v2", || {
            std::fs::read_to_string(h.path("game/srv"))
                .is_ok_and(|t| t.contains("# v2"))
                .then_some(())
        });
    }
    // A build whose hash does not match fails on the first host, and the roll-out stops there.
    sdk.common(
        "UpdateFleetAttributes",
        json!({"FleetId": "fleet-d", "BuildLocation": v1.display().to_string(), "BuildSha256": "00".repeat(32)}),
    );
    let failed = wait_for("the roll-out FAILED", || {
        let r = rollout();
        (r["State"] == "FAILED").then_some(r)
    });
    assert_eq!(failed["InstancesDone"], 0, "{failed}");
    assert!(
        failed["Message"].as_str().unwrap().contains("ins-d1"),
        "{failed}"
    );
}

#[test]
fn a_host_whose_stream_delivers_nothing_is_not_active_and_gets_no_sessions() {
    use nix::sys::signal::{Signal, kill};
    let pg = Postgres::start();
    let control = Control::start(&pg.url, "instance-lost-after: 1s\n");
    let agent = Agent::start(&host("fleet-u", "ins-u1", &[&control], 1));
    wait_idle(&pg, "ins-u1", 1);
    let sdk = control.sdk();
    let status = || {
        sdk.ok("DescribeInstances", json!({"FleetId": "fleet-u"}))["Instances"][0]["Status"].clone()
    };
    assert_eq!(status(), "Active");
    // A hung agent: its stream stays open, nothing more comes down it.
    let pid = nix::unistd::Pid::from_raw(agent.child.as_ref().unwrap().id() as i32);
    kill(pid, Signal::SIGSTOP).unwrap();
    wait_for("ins-u1 Unresponsive", || {
        (status() == "Unresponsive").then_some(())
    });
    assert_eq!(
        pg.scalar("SELECT connected FROM instances WHERE instance_id = 'ins-u1'"),
        "t",
        "the stream is still open"
    );
    let (code, message) = sdk.err(
        "CreateGameServerSession",
        json!({"FleetId": "fleet-u", "MaximumPlayerSessionCount": 2}),
    );
    assert_eq!(code, "LimitExceeded", "{message}");
    assert!(
        control.stderr().contains("instance unresponsive"),
        "{}",
        control.stderr()
    );
    kill(pid, Signal::SIGCONT).unwrap();
    wait_for("ins-u1 Active again", || {
        (status() == "Active").then_some(())
    });
    sdk.ok(
        "CreateGameServerSession",
        json!({"FleetId": "fleet-u", "MaximumPlayerSessionCount": 2}),
    );
}

#[test]
fn a_lost_host_can_be_removed_and_its_sessions_end() {
    let pg = Postgres::start();
    let control = Control::start(&pg.url, "instance-lost-after: 1s\n");
    let mut agent = Agent::start(&host("fleet-x", "ins-x1", &[&control], 1));
    wait_idle(&pg, "ins-x1", 1);
    let sdk = control.sdk();
    let gss = sdk.ok(
        "CreateGameServerSession",
        json!({"FleetId": "fleet-x", "MaximumPlayerSessionCount": 2}),
    )["GameServerSession"]["GameServerSessionId"]
        .clone();
    agent.kill9();
    wait_for("ins-x1 Lost", || {
        let d = sdk.ok("DescribeInstances", json!({"FleetId": "fleet-x"}));
        (d["Instances"][0]["Status"] == "Lost").then_some(())
    });
    sdk.common(
        "RemoveInstance",
        json!({"FleetId": "fleet-x", "InstanceId": "ins-x1"}),
    );
    let d = sdk.ok("DescribeInstances", json!({"FleetId": "fleet-x"}));
    assert_eq!(d["TotalCount"], 0);
    let s = sdk.ok(
        "DescribeGameServerSessions",
        json!({"GameServerSessionId": gss}),
    );
    assert_eq!(s["GameServerSessions"][0]["Status"], "TERMINATED");
    assert_eq!(
        s["GameServerSessions"][0]["StatusReason"],
        "the host was removed"
    );
}

#[test]
fn the_relay_over_tls_takes_only_agents_with_a_certificate_of_its_ca() {
    let pg = Postgres::start();
    let pki = crate::cases::upstream::Pki::with_clients(&["ins-s1"]);
    let control = Control::start(
        &pg.url,
        &format!(
            "relay-tls: {{ cert-file: {}, key-file: {}, client-ca-file: {} }}\n",
            pki.path("server.pem"),
            pki.path("server.key"),
            pki.path("ca.pem")
        ),
    );
    let endpoint = format!("https://localhost:{}", control.relay.port());
    let agent_with = |instance: &str, client: &str| {
        let yaml = host("fleet-s", instance, &[&control], 1).replace(
            &format!("\"{}\"", control.relay_url()),
            &format!("\"{endpoint}\", ca-file: {}{client}", pki.path("ca.pem")),
        );
        Agent::start(&yaml)
    };
    let cert_of = |name: &str| {
        format!(
            ", client-cert: {}, client-key: {}",
            pki.path(&format!("{name}.pem")),
            pki.path(&format!("{name}.key"))
        )
    };
    let _with_cert = agent_with("ins-s1", &cert_of("client-ins-s1"));
    let without = agent_with("ins-s2", "");
    // A certificate for one instance cannot claim another.
    let other = agent_with("ins-s3", &cert_of("client-ins-s1"));
    wait_idle(&pg, "ins-s1", 1);
    wait_for("the certificate of another instance refused", || {
        other
            .stderr()
            .contains(
                "ins-s1 (its DNS subject alternative names and common name), not instance ins-s3",
            )
            .then_some(())
    });
    assert_eq!(
        pg.scalar("SELECT count(*) FROM instances WHERE instance_id = 'ins-s3'"),
        "0"
    );
    wait_for("the agent without a certificate refused", || {
        without
            .stderr()
            .contains("upstream connection lost")
            .then_some(())
    });
    assert_eq!(
        pg.scalar("SELECT count(*) FROM instances WHERE instance_id = 'ins-s2'"),
        "0"
    );
}

/// The group writer against a real PostgreSQL: a write the database refuses (jsonb cannot hold
/// a NUL) fails alone, whatever group it was taken in; the writes beside it are stored, and
/// the writer goes on with a clean connection.
#[test]
fn a_write_the_database_refuses_fails_alone() {
    use gse_agent::control::{db, writer};
    let pg = Postgres::start();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let pool = db::pool(&pg.url, 4).unwrap();
        db::migrate(&pool).await.unwrap();
        let w = writer::Writer::start(pool, std::sync::Arc::default());
        let player = |id: &str, data: &str| {
            json!({"PlayerSessionId": id, "GameServerSessionId": "gss-1", "PlayerId": "p",
                   "Status": "RESERVED", "PlayerData": data})
        };
        // Queued together, so the writer most likely takes them in one group.
        let (good, bad, also_good) = tokio::join!(
            w.write(writer::Write::Players(vec![player("ps-1", "fine")])),
            w.write(writer::Write::Players(vec![player(
                "ps-2",
                "nul \u{0} here"
            )])),
            w.write(writer::Write::Players(vec![player("ps-3", "fine too")])),
        );
        good.unwrap();
        also_good.unwrap();
        let e = bad.expect_err("jsonb refuses a NUL").to_string();
        assert!(
            e.contains("storing the player sessions joins reserved"),
            "{e}"
        );
        w.write(writer::Write::Players(vec![player("ps-4", "after")]))
            .await
            .unwrap();
    });
    assert_eq!(
        pg.scalar(
            "SELECT string_agg(player_session_id, ',' ORDER BY player_session_id) FROM players"
        ),
        "ps-1,ps-3,ps-4"
    );
}

/// A relay stream of our own, as an attacker would write it: it says Hello as `instance` of
/// `fleet`, sends `snapshot`, then a SERVER_PROCESS_READY event, and returns once the event is
/// acknowledged (so everything before it is stored).
fn relay_as(
    control: &Control,
    token: &str,
    fleet: &str,
    instance: &str,
    snapshot: gse_agent::upstream_proto::Snapshot,
) {
    relay_event_as(
        control,
        token,
        fleet,
        instance,
        snapshot,
        gse_agent::upstream_proto::Event {
            sequence: 1,
            time_unix_ms: 1,
            code: "SERVER_PROCESS_READY".into(),
            ..Default::default()
        },
    )
}

/// [`relay_as`] with `event` (its sequence 1) after the snapshot.
fn relay_event_as(
    control: &Control,
    token: &str,
    fleet: &str,
    instance: &str,
    snapshot: gse_agent::upstream_proto::Snapshot,
    event: gse_agent::upstream_proto::Event,
) {
    use gse_agent::upstream_proto::{
        self as up, agent_message::Body, control_plane_client::ControlPlaneClient,
    };
    use tokio_stream::StreamExt;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut client = ControlPlaneClient::connect(control.relay_url())
            .await
            .unwrap();
        let messages = vec![
            Body::Hello(up::Hello {
                fleet_id: fleet.into(),
                instance_id: instance.into(),
                agent_version: "attacker".into(),
                epoch: 1,
                ..Default::default()
            }),
            Body::Snapshot(snapshot),
            Body::Event(event),
        ];
        let outbound = tokio_stream::iter(
            messages
                .into_iter()
                .map(|b| up::AgentMessage { body: Some(b) }),
        )
        .chain(tokio_stream::pending());
        let mut request = tonic::Request::new(outbound);
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        let mut inbound = client.relay(request).await.unwrap().into_inner();
        loop {
            let m = tokio::time::timeout(crate::helper::DEADLINE, inbound.message())
                .await
                .expect("an answer in time")
                .unwrap()
                .expect("the stream stays open");
            if matches!(m.body, Some(up::control_message::Body::Ack(a)) if a.sequence >= 1) {
                return;
            }
        }
    });
}

#[test]
fn an_instance_that_only_said_hello_expires_and_a_real_host_stays() {
    let pg = Postgres::start();
    let tokens = Tokens::new(
        "token-hello-only-0123456789 ins-h1 fleet-h\ntoken-real-host-0123456789 ins-r1 fleet-r\n",
    );
    let control = control_with(&pg, &tokens);
    relay_as(
        &control,
        "token-hello-only-0123456789",
        "fleet-h",
        "ins-h1",
        Default::default(),
    );
    let mut real = host_with_token(&control, "fleet-r", "ins-r1", "token-real-host-0123456789");
    wait_idle(&pg, "ins-r1", 1);
    real.kill9();
    wait_for("both streams gone", || {
        (!connected(&pg, "ins-h1") && !connected(&pg, "ins-r1")).then_some(())
    });
    // Two days pass.
    pg.query(
        "UPDATE instances SET last_seen = now() - interval '2 days';
         UPDATE fleets SET created_at = now() - interval '2 days'",
    );
    wait_for("the Hello-only instance and its fleet expired", || {
        (pg.scalar("SELECT count(*) FROM instances WHERE instance_id = 'ins-h1'") == "0"
            && pg.scalar("SELECT count(*) FROM fleets WHERE fleet_id = 'fleet-h'") == "0")
            .then_some(())
    });
    assert_eq!(
        pg.scalar("SELECT count(*) FROM instances WHERE instance_id = 'ins-r1'"),
        "1",
        "a host that ran is kept (it is Lost, for RemoveInstance)"
    );
    assert_eq!(
        pg.scalar("SELECT count(*) FROM fleets WHERE fleet_id = 'fleet-r'"),
        "1"
    );
}

/// Issue 26, item 3: a snapshot may create or change only its own host's sessions and their
/// player sessions; one naming another host's session (with the attacker's address) changes
/// nothing of it.
#[test]
fn a_snapshot_speaks_only_for_its_own_host() {
    let pg = Postgres::start();
    let tokens =
        Tokens::new("token-of-ins-a-0123456789 ins-a\ntoken-of-evil-0123456789 ins-evil\n");
    let control = control_with(&pg, &tokens);
    let _a = host_with_token(&control, "fleet-f1", "ins-a", "token-of-ins-a-0123456789");
    wait_idle(&pg, "ins-a", 1);
    let sdk = control.sdk();
    let gss = create(&sdk, "fleet-f1");
    let alice = join(&sdk, &gss, "alice");
    let session_json = json!({
        "GameServerSessionId": gss, "FleetId": "fleet-f1", "IpAddress": "6.6.6.6",
        "Port": 6666, "Status": "TERMINATED", "MaximumPlayerSessionCount": 2,
    });
    let player_json = json!({
        "PlayerSessionId": alice, "GameServerSessionId": gss, "PlayerId": "alice",
        "IpAddress": "6.6.6.6", "Port": 6666, "Status": "COMPLETED",
    });
    relay_as(
        &control,
        "token-of-evil-0123456789",
        "fleet-f1",
        "ins-evil",
        gse_agent::upstream_proto::Snapshot {
            complete: false,
            processes: vec![],
            game_server_sessions_json: vec![session_json.to_string()],
            player_sessions_json: vec![player_json.to_string()],
        },
    );
    assert_eq!(host_of(&pg, &gss), "ins-a");
    let session = &sdk.ok(
        "DescribeGameServerSessions",
        json!({"GameServerSessionId": gss}),
    )["GameServerSessions"][0];
    assert_ne!(session["IpAddress"], "6.6.6.6", "{session}");
    assert_ne!(session["Status"], "TERMINATED", "{session}");
    let player =
        &sdk.ok("DescribePlayerSessions", json!({"PlayerSessionId": alice}))["PlayerSessions"][0];
    assert_ne!(player["IpAddress"], "6.6.6.6", "{player}");
    assert_eq!(player["Status"], "RESERVED", "{player}");
}

/// Issue 26, item 2: a NUL character, which PostgreSQL cannot store, is refused at the door of
/// both halves, naming the parameter; and a host fed one by an older agent (a game's output,
/// a player's data relayed as it was) has it stored replaced, acknowledged, and keeps taking
/// creates.
#[test]
fn no_value_a_player_sends_wedges_a_host() {
    let pg = Postgres::start();
    let tokens = Tokens::new("token-of-ins-a-0123456789 ins-a\ntoken-of-old-0123456789 ins-old\n");
    let control = control_with(&pg, &tokens);
    let agent = host_with_token(&control, "fleet-f1", "ins-a", "token-of-ins-a-0123456789");
    wait_idle(&pg, "ins-a", 1);
    let sdk = control.sdk();
    let (code, message) = sdk.err(
        "CreateGameServerSession",
        json!({"FleetId": "fleet-f1", "MaximumPlayerSessionCount": 2, "Name": "hi\u{0}"}),
    );
    assert_eq!(code, "InvalidParameter", "{message}");
    assert!(
        message.contains("`Name`") && message.contains("NUL"),
        "{message}"
    );
    let gss = create(&sdk, "fleet-f1");
    let (code, message) = sdk.err(
        "JoinGameServerSession",
        json!({"GameServerSessionId": gss, "PlayerId": "alice", "PlayerData": "hi\u{0}"}),
    );
    assert_eq!(code, "InvalidParameter", "{message}");
    assert!(message.contains("`PlayerData`"), "{message}");
    // The agent's own door says the same.
    let said = agent.err(
        json!({"Action": "JoinGameServerSession", "GameServerSessionId": gss, "PlayerId": "bob",
               "PlayerData": "x\u{0}"}),
        "InvalidParameter",
    );
    assert!(said.contains("`PlayerData`"), "{said}");

    // An older agent relays a NUL in a session and its output: stored replaced, acknowledged.
    let old_session = json!({
        "GameServerSessionId": "qcs::gse:local::gameserversession/fleet-f1/gssess-old",
        "FleetId": "fleet-f1", "Name": "nul\u{0}here", "Status": "ACTIVE",
    });
    relay_as(
        &control,
        "token-of-old-0123456789",
        "fleet-f1",
        "ins-old",
        gse_agent::upstream_proto::Snapshot {
            complete: true,
            processes: vec![],
            game_server_sessions_json: vec![old_session.to_string()],
            player_sessions_json: vec![],
        },
    );
    assert_eq!(
        pg.scalar("SELECT body->>'Name' FROM sessions WHERE gss_id LIKE '%gssess-old'"),
        "nul\u{fffd}here"
    );
    assert!(
        control
            .stderr()
            .contains("stored with NUL characters replaced")
    );
    assert!(
        !control.stderr().contains("trying again"),
        "never retried as is"
    );
    // ins-a keeps taking creates.
    sdk.ok(
        "EndGameServerSessionAndProcess",
        json!({"GameServerSessionId": gss}),
    );
    wait_idle(&pg, "ins-a", 1);
    sdk.ok(
        "CreateGameServerSession",
        json!({"FleetId": "fleet-f1", "MaximumPlayerSessionCount": 2}),
    );
}

/// Issue 26, item 6: every call that changes something is recorded with the SecretId, action,
/// resources, source address, outcome and RequestId, never a secret; reads are not. The
/// records are read back through DescribeAuditRecords and `gse-control audit`.
#[test]
fn every_changing_call_is_audited_without_its_secret() {
    let pg = Postgres::start();
    let control = Control::start(&pg.url, "");
    let _agent = Agent::start(&host("fleet-au", "ins-au1", &[&control], 1));
    wait_idle(&pg, "ins-au1", 1);
    let sdk = control.sdk();
    let created = sdk.ok(
        "CreateGameServerSession",
        json!({"FleetId": "fleet-au", "MaximumPlayerSessionCount": 2}),
    );
    let gss = created["GameServerSession"]["GameServerSessionId"]
        .as_str()
        .unwrap()
        .to_string();
    let (code, _) = sdk.err(
        "CreateGameServerSession",
        json!({"FleetId": "fleet-nowhere", "MaximumPlayerSessionCount": 2}),
    );
    sdk.ok("DescribeGameServerSessions", json!({"FleetId": "fleet-au"}));
    wait_for("two audit records", || {
        (pg.scalar("SELECT count(*) FROM audit") == "2").then_some(())
    });
    let records = sdk.common("DescribeAuditRecords", json!({}))["AuditRecords"].clone();
    let records = records.as_array().unwrap();
    assert_eq!(records.len(), 2, "reads are not audited: {records:?}");
    let refused = &records[0];
    assert_eq!(refused["Outcome"], code.as_str(), "{refused}");
    let ok = &records[1];
    assert_eq!(ok["Action"], "CreateGameServerSession");
    assert_eq!(ok["Outcome"], "ok");
    assert_eq!(ok["SecretId"], crate::helper::control::KEY.0);
    assert_eq!(ok["RequestId"], created["RequestId"], "{ok} {created}");
    assert!(
        ok["Source"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{ok}"
    );
    let resources = ok["Resources"].to_string();
    assert!(
        resources.contains("fleet/fleet-au") && resources.contains(&gss),
        "{resources}"
    );
    let table = pg.scalar("SELECT string_agg(row_to_json(audit)::text, ' ') FROM audit");
    assert!(
        !table.contains(crate::helper::control::KEY.1),
        "no SecretKey"
    );
    assert!(!table.contains("Signature"), "no signature");
    let out = std::process::Command::new(crate::helper::control::CONTROL)
        .args(["audit", "--config"])
        .arg(control.dir.path().join("control.yaml"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("CreateGameServerSession") && text.contains("2 of 2 records"),
        "{text}"
    );
}

/// An event speaks only for its own host too: GAME_SESSION_ACTIVATED from another host does not
/// make a session ACTIVE that its own host has not activated.
#[test]
fn an_event_from_another_host_activates_nothing() {
    let pg = Postgres::start();
    let tokens =
        Tokens::new("token-of-ins-a-0123456789 ins-a\ntoken-of-evil-0123456789 ins-evil\n");
    let control = control_with(&pg, &tokens);
    let yaml = host("fleet-f1", "ins-a", &[&control], 1)
        .replace("--accept-players", "--skip-activation")
        .replace(
            "reconnect-max: 300ms }",
            "reconnect-max: 300ms, token-file: token }",
        );
    let _a = Agent::start_with(&yaml, |game| {
        crate::helper::write_secret(
            &game.parent().unwrap().join("token"),
            "token-of-ins-a-0123456789",
        );
    });
    wait_idle(&pg, "ins-a", 1);
    let gss = control.sdk().ok(
        "CreateGameServerSession",
        json!({"FleetId": "fleet-f1", "MaximumPlayerSessionCount": 2}),
    )["GameServerSession"]["GameServerSessionId"]
        .as_str()
        .unwrap()
        .to_string();
    wait_for("the session ACTIVATING", || {
        (pg.scalar(&format!(
            "SELECT status FROM sessions WHERE gss_id = '{gss}'"
        )) == "ACTIVATING")
            .then_some(())
    });
    relay_event_as(
        &control,
        "token-of-evil-0123456789",
        "fleet-f1",
        "ins-evil",
        gse_agent::upstream_proto::Snapshot {
            complete: true,
            ..Default::default()
        },
        gse_agent::upstream_proto::Event {
            sequence: 1,
            time_unix_ms: 1,
            code: "GAME_SESSION_ACTIVATED".into(),
            game_server_session_id: gss.clone(),
            ..Default::default()
        },
    );
    assert_eq!(
        pg.scalar(&format!(
            "SELECT status FROM sessions WHERE gss_id = '{gss}'"
        )),
        "ACTIVATING"
    );
}
