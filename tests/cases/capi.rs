//! Control API validation: every refusal carries Tencent's code and names the parameter.

use serde_json::json;

use crate::helper::{Agent, config, entry, raw_request};

const QUICK_STOP: &str = "timeouts: { stop-grace: 200ms, shutdown: 1s }";

#[test]
fn malformed_requests_get_tencent_error_codes() {
    let agent = Agent::start(&config(&entry("", 1), QUICK_STOP));
    let cases = [
        ("{not json", "InvalidParameter", "not valid JSON"),
        ("[1,2]", "InvalidParameter", "JSON object"),
        ("{}", "MissingParameter", "`Action`"),
        (
            r#"{"Action": 5}"#,
            "InvalidParameter",
            "`Action` must be a string",
        ),
        (
            r#"{"Action": "DeleteFleets"}"#,
            "InvalidAction",
            "`DeleteFleets` does not exist",
        ),
        (
            r#"{"Action": "DeleteFleet"}"#,
            "UnsupportedOperation",
            "stop the service to remove it",
        ),
    ];
    for (body, code, needle) in cases {
        let r = agent.capi_raw(body);
        assert_eq!(r["Error"]["Code"], code, "{body}: {r}");
        assert!(
            r["Error"]["Message"].as_str().unwrap().contains(needle),
            "{body}: {r}"
        );
        assert!(r["RequestId"].is_string());
    }
}

#[test]
fn parameters_are_checked_and_named() {
    let agent = Agent::start(&config(&entry("", 1), QUICK_STOP));
    let create = |extra: serde_json::Value| {
        let mut body = json!({"Action": "CreateGameServerSession", "FleetId": "fleet-test", "MaximumPlayerSessionCount": 2});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    };
    let cases = [
        (
            json!({"Action": "CreateGameServerSession", "FleetId": "fleet-test"}),
            "MissingParameter",
            "MaximumPlayerSessionCount",
        ),
        (
            json!({"Action": "CreateGameServerSession", "MaximumPlayerSessionCount": 1}),
            "MissingParameter",
            "FleetId",
        ),
        (
            create(json!({"MaximumPlayerSessionCount": -1})),
            "InvalidParameterValue",
            "MaximumPlayerSessionCount` -1 is out of range",
        ),
        (
            create(json!({"MaximumPlayerSessionCount": "two"})),
            "InvalidParameter",
            "must be an integer",
        ),
        (
            create(json!({"FleetId": "fleet-other"})),
            "ResourceNotFound",
            "fleet fleet-other",
        ),
        (
            create(json!({"FleetId": "nofleet"})),
            "InvalidParameterValue",
            "^fleet-",
        ),
        (
            create(json!({"Name": "x".repeat(1025)})),
            "InvalidParameterValue",
            "invalid Name: is 1025 characters",
        ),
        (
            create(json!({"GameProperties": [{"Key": "k"}]})),
            "MissingParameter",
            "GameProperties.Value",
        ),
        (
            create(json!({"GameProperties": vec![json!({"Key": "k", "Value": "v"}); 17]})),
            "InvalidParameterValue",
            "at most 16",
        ),
        (
            create(json!({"GameServerSessionId": "a/b"})),
            "InvalidParameterValue",
            "GameServerSessionId",
        ),
        (create(json!({"Bogus": 1})), "UnknownParameter", "`Bogus`"),
        (
            json!({"Action": "JoinGameServerSession", "GameServerSessionId": "x"}),
            "MissingParameter",
            "PlayerId",
        ),
        (
            json!({"Action": "JoinGameServerSession", "GameServerSessionId": "x", "PlayerId": "p"}),
            "ResourceNotFound",
            "game server session x does not exist",
        ),
        (
            json!({"Action": "JoinGameServerSessionBatch", "GameServerSessionId": "x", "PlayerIds": []}),
            "InvalidParameterValue",
            "1 to 25",
        ),
        (
            json!({"Action": "JoinGameServerSessionBatch", "GameServerSessionId": "x", "PlayerIds": vec!["p"; 26]}),
            "InvalidParameterValue",
            "has 26 players",
        ),
        (
            json!({"Action": "JoinGameServerSessionBatch", "GameServerSessionId": "x", "PlayerIds": ["p", "p"]}),
            "InvalidParameterValue",
            "listed twice",
        ),
        (
            json!({"Action": "DescribePlayerSessions"}),
            "MissingParameter",
            "PlayerSessionId",
        ),
        (
            json!({"Action": "DescribePlayerSessions", "PlayerId": "p", "Limit": 0}),
            "InvalidParameterValue",
            "Limit",
        ),
        (
            json!({"Action": "DescribePlayerSessions", "PlayerId": "p", "PlayerSessionStatusFilter": "GONE"}),
            "InvalidParameterValue",
            "PlayerSessionStatusFilter",
        ),
        (
            json!({"Action": "DescribePlayerSessions", "PlayerId": "p", "NextToken": "zz"}),
            "InvalidParameterValue",
            "NextToken",
        ),
        (
            json!({"Action": "DescribeGameServerSessions"}),
            "MissingParameter",
            "FleetId",
        ),
        (
            json!({"Action": "DescribeGameServerSessions", "FleetId": "fleet-test", "StatusFilter": "DONE"}),
            "InvalidParameterValue",
            "StatusFilter",
        ),
        (
            json!({"Action": "DescribeGameServerSessions", "FleetId": "fleet-test", "Limit": 101}),
            "InvalidParameterValue",
            "Limit",
        ),
        (
            json!({"Action": "DescribeGameServerSessions", "GameServerSessionId": "nope"}),
            "ResourceNotFound",
            "nope",
        ),
        (
            json!({"Action": "EndGameServerSessionAndProcess", "GameServerSessionId": "nope"}),
            "ResourceNotFound",
            "nope",
        ),
    ];
    for (body, code, needle) in cases {
        let msg = agent.err(body.clone(), code);
        assert!(msg.contains(needle), "{body}: {needle:?} not in {msg:?}");
    }
}

#[test]
fn idempotency_token_returns_the_same_session() {
    let agent = Agent::start(&config(&entry("", 2), QUICK_STOP));
    agent.wait_ready(2);
    let body = json!({
        "Action": "CreateGameServerSession",
        "FleetId": "fleet-test",
        "MaximumPlayerSessionCount": 2,
        "IdempotencyToken": "once",
    });
    let a = agent.ok(body.clone())["GameServerSession"]["GameServerSessionId"].clone();
    let b = agent.ok(body)["GameServerSession"]["GameServerSessionId"].clone();
    assert_eq!(a, b);
    let custom = agent.ok(json!({
        "Action": "CreateGameServerSession",
        "FleetId": "fleet-test",
        "MaximumPlayerSessionCount": 2,
        "GameServerSessionId": "my-match-1",
    }))["GameServerSession"]["GameServerSessionId"]
        .clone();
    assert_eq!(
        custom,
        "qcs::gse:local::gameserversession/fleet-test/my-match-1"
    );
}

#[test]
fn update_game_server_session_through_the_control_api() {
    let agent = Agent::start(&config(&entry("", 1), QUICK_STOP));
    agent.wait_ready(1);
    let id = agent.create_session(2)["GameServerSessionId"]
        .as_str()
        .unwrap()
        .to_string();
    let updated = agent.ok(json!({
        "Action": "UpdateGameServerSession",
        "GameServerSessionId": id,
        "MaximumPlayerSessionCount": 5,
        "Name": "finals",
        "PlayerSessionCreationPolicy": "DENY_ALL",
        "ProtectionPolicy": "TimeLimitProtection",
    }))["GameServerSession"]
        .clone();
    assert_eq!(updated["MaximumPlayerSessionCount"], 5);
    assert_eq!(updated["Name"], "finals");
    assert_eq!(updated["PlayerSessionCreationPolicy"], "DENY_ALL");
    let msg = agent.err(
        json!({"Action": "UpdateGameServerSession", "GameServerSessionId": id, "ProtectionPolicy": "Forever"}),
        "InvalidParameterValue",
    );
    assert!(msg.contains("ProtectionPolicy"), "{msg}");
}

#[test]
fn requests_a_browser_could_send_are_refused() {
    // One process per request that must get through, so that each one can create a session.
    let agent = Agent::start(&config(&entry("", 3), QUICK_STOP));
    agent.wait_ready(3);
    let port = agent.capi.port();
    let create = r#"{"Action":"CreateGameServerSession","FleetId":"fleet-test","MaximumPlayerSessionCount":2}"#;
    let post = "POST /capi HTTP/1.1";
    let local = format!("Host: localhost:{port}\r\n");
    let json_type = "Content-Type: application/json\r\n";
    let cases = [
        // A cross-site HTML form can send text/plain without a preflight (CSRF).
        (
            format!("{local}Content-Type: text/plain\r\n"),
            "Content-Type must be application/json",
        ),
        (local.clone(), "Content-Type must be application/json"),
        (
            format!("{local}{json_type}Origin: http://evil.example\r\n"),
            "requests from browsers (Origin header) are refused",
        ),
        (
            format!("{local}{json_type}Sec-Fetch-Site: cross-site\r\n"),
            "Sec-Fetch-Site: cross-site",
        ),
        // DNS rebinding: the page's own name, resolved to 127.0.0.1.
        (
            format!("Host: evil.example:80\r\n{json_type}"),
            "Host \"evil.example:80\" is not this API's address",
        ),
        (
            format!("Host: evil.example:{port}\r\n{json_type}"),
            "is not this API's address",
        ),
    ];
    for (headers, needle) in &cases {
        let r = raw_request(agent.capi, post, headers, create);
        assert_eq!(r["Error"]["Code"], "OperationDenied", "{headers:?}: {r}");
        let msg = r["Error"]["Message"].as_str().unwrap();
        assert!(
            msg.contains(needle),
            "{headers:?}: {needle:?} not in {msg:?}"
        );
        assert!(r["RequestId"].is_string(), "{r}");
    }
    let sessions =
        agent.ok(json!({"Action": "DescribeGameServerSessions", "FleetId": "fleet-test"}));
    assert_eq!(
        sessions["GameServerSessions"],
        json!([]),
        "a refused request did nothing"
    );

    // What programs send still works: the bound address, a charset, no Host at all (HTTP/1.0).
    let ok = [
        (
            post,
            format!("Host: 127.0.0.1:{port}\r\nContent-Type: application/json; charset=utf-8\r\n"),
        ),
        (
            post,
            format!("Host: [::1]:{port}\r\nSec-Fetch-Site: none\r\n{json_type}"),
        ),
        ("POST /capi HTTP/1.0", json_type.to_string()),
    ];
    for (line, headers) in &ok {
        let r = raw_request(agent.capi, line, headers, create);
        assert!(r.get("Error").is_none(), "{line} {headers:?}: {r}");
    }
    let sessions =
        agent.ok(json!({"Action": "DescribeGameServerSessions", "FleetId": "fleet-test"}));
    assert_eq!(sessions["GameServerSessions"].as_array().unwrap().len(), 3);
}

#[test]
fn a_proxy_host_is_accepted_once_allowed() {
    let agent = Agent::start(&config(
        &entry("", 1),
        &format!("{QUICK_STOP}\ncapi-allowed-hosts: [gse.internal:8443]"),
    ));
    let describe = r#"{"Action":"DescribeServerProcesses"}"#;
    let json_type = "Content-Type: application/json\r\n";
    let r = raw_request(
        agent.capi,
        "POST /capi HTTP/1.1",
        &format!("Host: GSE.internal:8443\r\n{json_type}"),
        describe,
    );
    assert!(r.get("Error").is_none(), "{r}");
    let r = raw_request(
        agent.capi,
        "POST /capi HTTP/1.1",
        &format!("Host: gse.internal:80\r\n{json_type}"),
        describe,
    );
    assert_eq!(r["Error"]["Code"], "OperationDenied", "{r}");
}

/// Refused control API requests cost little log: values cut, lines rate-limited.
#[test]
fn a_flood_of_huge_refused_requests_costs_little_log() {
    let agent = Agent::start(&config(&entry("", 1), ""));
    let huge = "y".repeat(1 << 20);
    let before = agent.stderr().len();
    for _ in 0..40 {
        let r = agent.capi(json!({
            "Action": "DescribeGameServerSessions",
            "GameServerSessionId": huge,
        }));
        assert!(r.get("Error").is_some(), "{r}");
    }
    let log = agent.stderr();
    let grown = log.len() - before;
    assert!(
        grown < 64 * 1024,
        "{grown} bytes of log for 40 MB of refused values"
    );
    assert!(log.matches("control API request refused").count() <= 20);
}
