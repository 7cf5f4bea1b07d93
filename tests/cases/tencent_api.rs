//! The Tencent Cloud API, for real: Tencent's official Python SDK against the agent, unchanged
//! but for the endpoint, with TC3 signatures required.

use serde_json::json;

use crate::helper::tencent::Client;
use crate::helper::{Agent, config, entry, raw_request};

pub(crate) const ID: &str = "AKIDstudiobackend";
pub(crate) const KEY: &str = "studio-secret-key";

const FAST: &str = "capi-keys-file: keys
health-check: { interval: 1h, timeout: 1s, failure-threshold: 3 }
timeouts: { process-exit: 1s, stop-grace: 200ms, shutdown: 1s }";

pub(crate) fn signed_agent(processes: u32) -> Agent {
    // Players get a port of their own per game.
    let mut agent = Agent::start_with(
        &config(&entry("--accept-players", processes), FAST),
        |game| {
            use std::os::unix::fs::PermissionsExt;
            let keys = game.parent().unwrap().join("keys");
            std::fs::write(&keys, format!("# the backend's key\n{ID} {KEY}\n")).unwrap();
            std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o600)).unwrap();
        },
    );
    agent.signing = Some((ID.into(), KEY.into()));
    agent
}

pub(crate) fn client(agent: &Agent, secret_id: &str, secret_key: &str) -> Client {
    Client {
        endpoint: agent.capi.to_string(),
        secret_id: secret_id.into(),
        secret_key: secret_key.into(),
    }
}

/// Step 3 of GSE's onboarding, the first way: CreateGameServerSession, then
/// JoinGameServerSession, each response read through the SDK's own models (an unknown field
/// would fail the call).
#[test]
fn the_official_sdk_creates_a_session_and_joins_a_player() {
    let agent = signed_agent(1);
    agent.wait_ready(1);
    let sdk = client(&agent, ID, KEY);
    let created = sdk.ok(
        "CreateGameServerSession",
        json!({"FleetId": "fleet-test", "MaximumPlayerSessionCount": 4, "Name": "match-1"}),
    );
    let session = &created["GameServerSession"];
    let id = session["GameServerSessionId"].as_str().unwrap().to_string();
    assert_eq!(session["Name"], "match-1", "{created}");
    agent.wait_session_status(&id, "ACTIVE");
    let joined = sdk.ok(
        "JoinGameServerSession",
        json!({"GameServerSessionId": id, "PlayerId": "player-1"}),
    );
    assert_eq!(joined["PlayerSession"]["PlayerId"], "player-1", "{joined}");
    let answers = sdk.run(&[
        (
            "DescribeGameServerSessions",
            json!({"FleetId": "fleet-test"}),
        ),
        ("DescribePlayerSessions", json!({"GameServerSessionId": id})),
    ]);
    for a in &answers {
        assert!(a.get("ok").is_some(), "{a}");
    }
    assert_eq!(
        answers[1]["ok"]["PlayerSessions"][0]["PlayerId"],
        "player-1"
    );
}

/// Every way a request can be refused for its signature, with Tencent's codes.
#[test]
fn unsigned_wrongly_signed_and_stale_requests_are_refused_with_tencents_codes() {
    let agent = signed_agent(1);
    let call = (
        "DescribeGameServerSessions",
        json!({"FleetId": "fleet-test"}),
    );
    let (code, message) = client(&agent, ID, "not-the-key").err(call.0, call.1.clone());
    assert_eq!(code, "AuthFailure.SignatureFailure", "{message}");
    let (code, _) = client(&agent, "AKIDstranger", KEY).err(call.0, call.1.clone());
    assert_eq!(code, "AuthFailure.SecretIdNotFound");
    // Unsigned, on both paths.
    let body = r#"{"FleetId":"fleet-test"}"#;
    for (line, extra) in [
        (
            "POST / HTTP/1.1",
            "X-TC-Action: DescribeGameServerSessions\r\n",
        ),
        ("POST /capi HTTP/1.1", ""),
    ] {
        let r = raw_request(
            agent.capi,
            line,
            &format!(
                "Host: {}\r\nContent-Type: application/json\r\n{extra}",
                agent.capi
            ),
            body,
        );
        assert_eq!(
            r["Error"]["Code"], "AuthFailure.InvalidAuthorization",
            "{r}"
        );
    }
    // Signed ten minutes ago; the same request signed now passes: the refusal was the
    // clock, nothing else.
    let now = gse_agent::api::tc3::now_unix();
    let send = |at| {
        crate::helper::signed_request(agent.capi, ID, KEY, "DescribeGameServerSessions", body, at)
    };
    let r = send(now - 600);
    assert_eq!(r["Error"]["Code"], "AuthFailure.SignatureExpire", "{r}");
    let r = send(now);
    assert!(r.get("Error").is_none(), "{r}");
}

/// A path or method the API does not serve gets a Tencent envelope, not a bare status.
#[test]
fn other_paths_and_methods_get_an_envelope() {
    let agent = signed_agent(1);
    for line in ["GET / HTTP/1.1", "POST /v2 HTTP/1.1", "PUT /capi HTTP/1.1"] {
        let r = raw_request(
            agent.capi,
            line,
            "Host: localhost\r\nContent-Type: application/json\r\n",
            "{}",
        );
        assert_eq!(r["Error"]["Code"], "InvalidParameter", "{line}: {r}");
        assert!(
            r["Error"]["Message"].as_str().unwrap().contains("POST /"),
            "{r}"
        );
    }
}

/// Every standard action the agent serves answers in exactly the SDK's model: no field the
/// model does not know (the SDK warns, the script fails the call).
#[test]
fn every_standard_response_is_the_sdks_model() {
    let agent = signed_agent(2);
    agent.wait_ready(2);
    let sdk = client(&agent, ID, KEY);
    let created = sdk.ok(
        "CreateGameServerSession",
        json!({"FleetId": "fleet-test", "MaximumPlayerSessionCount": 4}),
    );
    let id = created["GameServerSession"]["GameServerSessionId"]
        .as_str()
        .unwrap()
        .to_string();
    agent.wait_session_status(&id, "ACTIVE");
    let answers = sdk.run(&[
        (
            "JoinGameServerSessionBatch",
            json!({"GameServerSessionId": id, "PlayerIds": ["p1", "p2"], "PlayerDataMap": {"Key": "p1", "Value": "red"}}),
        ),
        (
            "UpdateGameServerSession",
            json!({"GameServerSessionId": id, "Name": "renamed", "MaximumPlayerSessionCount": 6}),
        ),
        ("DescribeInstancesExtend", json!({"FleetId": "fleet-test"})),
        ("DescribeFleetEvents", json!({"FleetId": "fleet-test", "Limit": 5})),
        (
            "UpdateRuntimeConfiguration",
            json!({"FleetId": "fleet-test", "RuntimeConfiguration": {
                "ServerProcesses": [{"LaunchPath": "/local/game/server", "ConcurrentExecutions": 2}]}}),
        ),
        (
            "DescribeGameServerSessionDetails",
            json!({"FleetId": "fleet-test"}),
        ),
        ("DescribeRuntimeConfiguration", json!({"FleetId": "fleet-test"})),
        ("DescribeInstances", json!({"FleetId": "fleet-test"})),
        (
            "SetServerReserved",
            json!({"FleetId": "fleet-test", "InstanceId": "ins-test", "ReserveValue": 0}),
        ),
        (
            "SetServerWeight",
            json!({"FleetId": "fleet-test", "InstanceId": "ins-test", "Weight": 7}),
        ),
        ("DescribeFleetUtilization", json!({"FleetIds": ["fleet-test"]})),
        ("ListFleets", json!({})),
        ("DescribeFleetAttributes", json!({"FleetIds": ["fleet-test"]})),
        ("EndGameServerSessionAndProcess", json!({"GameServerSessionId": id})),
    ]);
    let failed: Vec<_> = answers.iter().filter(|a| a.get("ok").is_none()).collect();
    assert!(failed.is_empty(), "{failed:#?}");
    let details = &answers[5]["ok"]["GameServerSessionDetails"][0];
    assert_eq!(
        details["ProtectionPolicy"], "TimeLimitProtection",
        "{details}"
    );
    assert_eq!(
        answers[6]["ok"]["RuntimeConfiguration"]["ServerProcesses"][0]["ConcurrentExecutions"],
        2
    );
    assert_eq!(answers[7]["ok"]["Instances"][0]["InstanceId"], "ins-test");
    let weighed = sdk.ok("DescribeInstances", json!({"FleetId": "fleet-test"}));
    assert_eq!(weighed["Instances"][0]["Weight"], 7, "{weighed}");
    // A cloud-only action says what to do instead.
    let (code, message) = sdk.err("CreateFleet", json!({}));
    assert_eq!(code, "UnsupportedOperation", "{message}");
    assert!(message.contains("fleet-id"), "{message}");
}

/// Step 3, the second way: SearchGameServerSessions with a filter and a sort, then join what
/// it found; a malformed expression names the position.
#[test]
fn the_official_sdk_searches_sessions_and_joins_one() {
    let agent = signed_agent(2);
    agent.wait_ready(2);
    let sdk = client(&agent, ID, KEY);
    let mut ids = Vec::new();
    for (name, mode) in [("duel-1", "duel"), ("brawl-1", "brawl")] {
        let created = sdk.ok(
            "CreateGameServerSession",
            json!({"FleetId": "fleet-test", "MaximumPlayerSessionCount": 2, "Name": name,
                   "GameProperties": [{"Key": "mode", "Value": mode}]}),
        );
        let id = created["GameServerSession"]["GameServerSessionId"]
            .as_str()
            .unwrap()
            .to_string();
        agent.wait_session_status(&id, "ACTIVE");
        ids.push(id);
    }
    let found = sdk.ok(
        "SearchGameServerSessions",
        json!({"FleetId": "fleet-test",
               "FilterExpression": "gameServerSessionProperties.mode = 'duel' AND hasAvailablePlayerSessions = true",
               "SortExpression": "creationTimeMillis DESC"}),
    );
    let sessions = found["GameServerSessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 1, "{found}");
    assert_eq!(sessions[0]["GameServerSessionId"], ids[0].as_str());
    sdk.ok(
        "JoinGameServerSession",
        json!({"GameServerSessionId": ids[0], "PlayerId": "player-1"}),
    );
    // Sorted, both: newest first.
    let all = sdk.ok(
        "SearchGameServerSessions",
        json!({"FleetId": "fleet-test", "SortExpression": "creationTimeMillis DESC", "Limit": 1}),
    );
    assert_eq!(
        all["GameServerSessions"][0]["GameServerSessionId"],
        ids[1].as_str()
    );
    assert!(all["NextToken"].is_string(), "{all}");
    let (code, message) = sdk.err(
        "SearchGameServerSessions",
        json!({"FleetId": "fleet-test", "FilterExpression": "playerSessionCount >> 1"}),
    );
    assert_eq!(code, "InvalidParameterValue");
    assert!(message.contains("at position 20"), "{message}");
    // Ended by the address players use.
    let port = agent.session(&ids[1])["Port"].as_u64().unwrap();
    sdk.ok(
        "EndGameServerSessionAndProcess",
        json!({"IpAddress": "127.0.0.1", "Port": port}),
    );
    agent.wait_session_status(&ids[1], "TERMINATED");
    let (code, _) = sdk.err(
        "EndGameServerSessionAndProcess",
        json!({"IpAddress": "127.0.0.1", "Port": 1}),
    );
    assert_eq!(code, "ResourceNotFound");
}

/// Aliases through the SDK: created, resolved and used to create a session; listed, updated
/// to TERMINAL (then refused with its message), deleted; kept across a restart of the agent.
#[test]
fn the_official_sdk_manages_aliases_and_creates_sessions_through_them() {
    let mut agent = signed_agent(1);
    agent.wait_ready(1);
    let sdk = client(&agent, ID, KEY);
    let created = sdk.ok(
        "CreateAlias",
        json!({"Name": "prod", "Description": "live matches",
               "RoutingStrategy": {"Type": "SIMPLE", "FleetId": "fleet-test"},
               "Tags": [{"Key": "team", "Value": "core"}]}),
    );
    let alias = created["Alias"]["AliasId"].as_str().unwrap().to_string();
    assert!(alias.starts_with("alias-"), "{created}");
    assert_eq!(
        sdk.ok("ResolveAlias", json!({"AliasId": alias}))["FleetId"],
        "fleet-test"
    );
    let session = sdk.ok(
        "CreateGameServerSession",
        json!({"AliasId": alias, "MaximumPlayerSessionCount": 2}),
    );
    assert_eq!(session["GameServerSession"]["FleetId"], "fleet-test");
    // Kept across a restart of the agent.
    agent.kill9();
    agent.spawn();
    let sdk = client(&agent, ID, KEY);
    let listed = sdk.ok("ListAliases", json!({"RoutingStrategyType": "SIMPLE"}));
    assert_eq!(listed["TotalCount"], 1, "{listed}");
    assert_eq!(listed["Aliases"][0]["Tags"][0]["Value"], "core");
    sdk.ok(
        "UpdateAlias",
        json!({"AliasId": alias, "RoutingStrategy": {"Type": "TERMINAL", "Message": "season over"}}),
    );
    let (code, message) = sdk.err(
        "CreateGameServerSession",
        json!({"AliasId": alias, "MaximumPlayerSessionCount": 2}),
    );
    assert_eq!(code, "OperationDenied");
    assert!(message.contains("season over"), "{message}");
    sdk.ok("DeleteAlias", json!({"AliasId": alias}));
    let (code, _) = sdk.err("DescribeAlias", json!({"AliasId": alias}));
    assert_eq!(code, "ResourceNotFound");
    let (code, _) = sdk.err(
        "CreateAlias",
        json!({"Name": "x", "RoutingStrategy": {"Type": "SIDEWAYS"}}),
    );
    assert_eq!(code, "InvalidParameterValue");
}

/// Queues through the SDK: created with a fleet destination (shown ACTIVE, since this host
/// serves it) and an alias destination, described, updated, kept across a restart, deleted.
#[test]
fn the_official_sdk_manages_queues() {
    let mut agent = signed_agent(1);
    agent.wait_ready(1);
    let sdk = client(&agent, ID, KEY);
    let here = "qcs::gse:ap-shanghai:uin/100001:fleet/fleet-test";
    let elsewhere = "qcs::gse:ap-shanghai:uin/100001:fleet/fleet-other";
    let created = sdk.ok(
        "CreateGameServerSessionQueue",
        json!({"Name": "ranked", "TimeoutInSeconds": 60,
               "Destinations": [{"DestinationArn": here}, {"DestinationArn": elsewhere}],
               "PlayerLatencyPolicies": [{"MaximumIndividualPlayerLatencyMilliseconds": 100,
                                          "PolicyDurationSeconds": 10}]}),
    );
    let q = &created["GameServerSessionQueue"];
    assert_eq!(q["TimeoutInSeconds"], 60, "{created}");
    assert_eq!(q["Destinations"][0]["FleetStatus"], "ACTIVE");
    assert_eq!(q["Destinations"][1]["FleetStatus"], "");
    sdk.ok(
        "UpdateGameServerSessionQueue",
        json!({"Name": "ranked", "TimeoutInSeconds": 120}),
    );
    agent.kill9();
    agent.spawn();
    let sdk = client(&agent, ID, KEY);
    let described = sdk.ok(
        "DescribeGameServerSessionQueues",
        json!({"Names": ["ranked"]}),
    );
    assert_eq!(described["TotalCount"], 1, "{described}");
    assert_eq!(
        described["GameServerSessionQueues"][0]["TimeoutInSeconds"],
        120
    );
    let (code, message) = sdk.err(
        "CreateGameServerSessionQueue",
        json!({"Name": "bad", "Destinations": [{"DestinationArn": "fleet-test"}]}),
    );
    assert_eq!(code, "InvalidParameterValue", "{message}");
    sdk.ok("DeleteGameServerSessionQueue", json!({"Name": "ranked"}));
    let (code, _) = sdk.err("DeleteGameServerSessionQueue", json!({"Name": "ranked"}));
    assert_eq!(code, "ResourceNotFound");
}

/// Step 3, the third way: a placement on a queue, polled until FULFILLED with the address
/// and the placed players; one waiting for a busy host is PENDING, then CANCELLED by Stop or
/// TIMED_OUT by the queue; a queue this host cannot serve FAILS at once.
#[test]
fn the_official_sdk_places_sessions_through_a_queue() {
    let agent = signed_agent(1);
    agent.wait_ready(1);
    let sdk = client(&agent, ID, KEY);
    let here = "qcs::gse:ap-shanghai:uin/100001:fleet/fleet-test";
    for (name, timeout, dest) in [
        ("ranked", 600, here),
        ("quick", 1, here),
        (
            "abroad",
            600,
            "qcs::gse:ap-shanghai:uin/100001:fleet/fleet-other",
        ),
    ] {
        sdk.ok(
            "CreateGameServerSessionQueue",
            json!({"Name": name, "TimeoutInSeconds": timeout,
                   "Destinations": [{"DestinationArn": dest}]}),
        );
    }
    let started = sdk.ok(
        "StartGameServerSessionPlacement",
        json!({"PlacementId": "match-1", "GameServerSessionQueueName": "ranked",
               "MaximumPlayerSessionCount": 4,
               "DesiredPlayerSessions": [{"PlayerId": "p1", "PlayerData": "red"}, {"PlayerId": "p2"}],
               "PlayerLatencies": [{"PlayerId": "p1", "RegionIdentifier": "ap-shanghai", "LatencyInMilliseconds": 20}]}),
    );
    assert!(
        ["PENDING", "FULFILLED"].contains(
            &started["GameServerSessionPlacement"]["Status"]
                .as_str()
                .unwrap()
        ),
        "{started}"
    );
    let placed = crate::helper::wait_for("the placement fulfilled", || {
        let d = sdk.ok(
            "DescribeGameServerSessionPlacement",
            json!({"PlacementId": "match-1"}),
        );
        (d["GameServerSessionPlacement"]["Status"] == "FULFILLED").then_some(d)
    });
    let p = &placed["GameServerSessionPlacement"];
    assert!(
        p["GameServerSessionId"]
            .as_str()
            .unwrap()
            .ends_with("/match-1"),
        "{placed}"
    );
    assert_eq!(p["IpAddress"], "127.0.0.1");
    assert!(p["Port"].as_u64().unwrap() > 0);
    assert_eq!(p["PlacedPlayerSessions"].as_array().unwrap().len(), 2);
    assert_eq!(p["PlayerLatencies"][0]["LatencyInMilliseconds"], 20);
    // The only process is busy: the next placements wait.
    let waiting = sdk.ok(
        "StartGameServerSessionPlacement",
        json!({"PlacementId": "match-2", "GameServerSessionQueueName": "ranked", "MaximumPlayerSessionCount": 2}),
    );
    assert_eq!(waiting["GameServerSessionPlacement"]["Status"], "PENDING");
    let stopped = sdk.ok(
        "StopGameServerSessionPlacement",
        json!({"PlacementId": "match-2"}),
    );
    assert_eq!(stopped["GameServerSessionPlacement"]["Status"], "CANCELLED");
    sdk.ok(
        "StartGameServerSessionPlacement",
        json!({"PlacementId": "match-3", "GameServerSessionQueueName": "quick", "MaximumPlayerSessionCount": 2}),
    );
    crate::helper::wait_for("the placement timed out", || {
        let d = sdk.ok(
            "DescribeGameServerSessionPlacement",
            json!({"PlacementId": "match-3"}),
        );
        (d["GameServerSessionPlacement"]["Status"] == "TIMED_OUT").then_some(())
    });
    let failed = sdk.ok(
        "StartGameServerSessionPlacement",
        json!({"PlacementId": "match-4", "GameServerSessionQueueName": "abroad", "MaximumPlayerSessionCount": 2}),
    );
    assert_eq!(failed["GameServerSessionPlacement"]["Status"], "FAILED");
    let (code, _) = sdk.err(
        "StartGameServerSessionPlacement",
        json!({"PlacementId": "match-1", "GameServerSessionQueueName": "ranked", "MaximumPlayerSessionCount": 2}),
    );
    assert_eq!(code, "OperationDenied", "a PlacementId is used once");
}

/// Issue 26, item 5: each key may carry a policy in CAM's own syntax. A read-only key reads and
/// is refused a create; a key allowed everything on its fleet but denied the end of a session
/// creates and is refused the end (deny wins) and any other fleet; a key without a policy does
/// everything. The official SDK sees Tencent's `UnauthorizedOperation` naming the action.
#[test]
fn key_policies_allow_and_deny_as_cam_does() {
    let policy = r#"{"version":"2.0","statement":[{"effect":"allow","action":["gse:*"],"resource":["qcs::gse:ap-guangzhou:uin/100001:fleet/fleet-t*"]},{"effect":"deny","action":"gse:EndGameServerSession*","resource":"*"}]}"#;
    let mut agent = Agent::start_with(&config(&entry("--accept-players", 2), FAST), |game| {
        use std::os::unix::fs::PermissionsExt;
        let keys = game.parent().unwrap().join("keys");
        std::fs::write(
                &keys,
                format!(
                    "{ID} {KEY}\nAKIDreader reader-key QcloudGSEReadOnlyAccess\nAKIDmatcher matcher-key {policy}\n"
                ),
            )
            .unwrap();
        std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o600)).unwrap();
    });
    agent.signing = Some((ID.into(), KEY.into()));
    agent.wait_ready(2);
    let reader = client(&agent, "AKIDreader", "reader-key");
    reader.ok(
        "DescribeGameServerSessions",
        json!({"FleetId": "fleet-test"}),
    );
    let (code, message) = reader.err(
        "CreateGameServerSession",
        json!({"FleetId": "fleet-test", "MaximumPlayerSessionCount": 2}),
    );
    assert_eq!(code, "UnauthorizedOperation", "{message}");
    assert!(
        message.contains("gse:CreateGameServerSession") && message.contains("fleet/fleet-test"),
        "{message}"
    );
    let matcher = client(&agent, "AKIDmatcher", "matcher-key");
    let gss = matcher.ok(
        "CreateGameServerSession",
        json!({"FleetId": "fleet-test", "MaximumPlayerSessionCount": 2}),
    )["GameServerSession"]["GameServerSessionId"]
        .as_str()
        .unwrap()
        .to_string();
    let (code, _) = matcher.err(
        "EndGameServerSessionAndProcess",
        json!({"GameServerSessionId": gss}),
    );
    assert_eq!(code, "UnauthorizedOperation", "deny wins");
    let (code, _) = matcher.err(
        "DescribeGameServerSessions",
        json!({"FleetId": "fleet-other"}),
    );
    assert_eq!(code, "UnauthorizedOperation", "another fleet");
    // The GSE Local form answers the body's Action: a signed X-TC-Action naming an allowed
    // one does not smuggle another past the policy.
    let body = json!({"Action": "CreateGameServerSession", "FleetId": "fleet-test",
                      "MaximumPlayerSessionCount": 2})
    .to_string();
    let (host, now) = (agent.capi.to_string(), gse_agent::api::tc3::now_unix());
    let (ts, date) = (now.to_string(), gse_agent::api::tc3::sign::utc_date(now));
    let signed = gse_agent::api::tc3::sign::Signed {
        method: "POST",
        uri: "/capi",
        query: "",
        headers: &[("content-type", "application/json"), ("host", &host)],
        body: Some(body.as_bytes()),
        timestamp: &ts,
        date: &date,
        service: "gse",
    };
    let headers = format!(
        "Content-Type: application/json\r\nX-TC-Action: DescribeGameServerSessions\r\nX-TC-Timestamp: {ts}\r\nAuthorization: TC3-HMAC-SHA256 Credential=AKIDreader/{date}/gse/tc3_request, SignedHeaders=content-type;host, Signature={}\r\n",
        signed.signature("reader-key")
    );
    let answer = raw_request(
        agent.capi,
        "POST /capi HTTP/1.1",
        &format!("Host: {}\r\n{headers}", agent.capi),
        &body,
    );
    assert_eq!(answer["Error"]["Code"], "UnauthorizedOperation", "{answer}");
    // No policy: full access.
    client(&agent, ID, KEY).ok(
        "EndGameServerSessionAndProcess",
        json!({"GameServerSessionId": gss}),
    );
    // Each changing call, refused or not, is an audit line naming its key, never the secret.
    let log = agent.stderr();
    let audited: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("api call audited"))
        .collect();
    assert!(
        audited.iter().any(|l| l.contains("secret.id=AKIDmatcher")
            && l.contains("api.action=CreateGameServerSession")
            && l.contains("api.outcome=ok")),
        "{audited:?}"
    );
    assert!(
        audited
            .iter()
            .any(|l| l.contains("api.outcome=UnauthorizedOperation")),
        "{audited:?}"
    );
    assert!(
        !audited
            .iter()
            .any(|l| l.contains("DescribeGameServerSessions"))
    );
    assert!(!log.contains("matcher-key") && !log.contains("reader-key"));
}
