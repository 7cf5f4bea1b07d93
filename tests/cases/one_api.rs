//! Both halves serve one Tencent Cloud API: the same calls, through the official SDK, get the
//! same answers from an agent and from gse-control, for the rules of aliases and queues that
//! once disagreed (a queue name that is taken, the limits of 100 queues and 100 aliases).

use serde_json::{Value, json};

use crate::helper::control::Control;
use crate::helper::postgres::Postgres;
use crate::helper::tencent::Client;

/// The code of each answer, or "ok".
fn codes(answers: &[Value]) -> Vec<String> {
    answers
        .iter()
        .map(|a| match a.get("error") {
            Some(e) => e["code"].as_str().unwrap_or_default().to_string(),
            None => "ok".into(),
        })
        .collect()
}

/// The calls, and the codes each half must answer them with.
fn check(sdk: &Client, half: &str) {
    let fleet = "qcs::gse:ap-shanghai:uin/100001:fleet/fleet-test";
    let queue = |name: &str| json!({"Name": name, "Destinations": [{"DestinationArn": fleet}]});
    let alias = |name: &str| json!({"Name": name, "RoutingStrategy": {"Type": "SIMPLE", "FleetId": "fleet-test"}});
    let mut calls: Vec<(&str, Value)> = vec![
        ("CreateGameServerSessionQueue", queue("q-0")),
        ("CreateGameServerSessionQueue", queue("q-0")),
        (
            "UpdateGameServerSessionQueue",
            json!({"Name": "q-none", "TimeoutInSeconds": 5}),
        ),
        (
            "CreateAlias",
            json!({"RoutingStrategy": {"Type": "SIMPLE", "FleetId": "fleet-test"}}),
        ),
    ];
    let names: Vec<String> = (1..=100).map(|i| format!("q-{i}")).collect();
    let aliases: Vec<String> = (0..=100).map(|i| format!("a-{i}")).collect();
    calls.extend(
        names
            .iter()
            .map(|n| ("CreateGameServerSessionQueue", queue(n))),
    );
    calls.extend(aliases.iter().map(|n| ("CreateAlias", alias(n))));
    let got = codes(&sdk.run(&calls));
    let mut want: Vec<&str> = vec![
        "ok",
        "ResourceInUse",
        "ResourceNotFound",
        "MissingParameter",
    ];
    // q-0 and q-1 … q-99 make 100; q-100 is one too many. a-0 … a-99 make 100.
    want.extend(std::iter::repeat_n("ok", 99));
    want.push("LimitExceeded");
    want.extend(std::iter::repeat_n("ok", 100));
    want.push("LimitExceeded");
    assert_eq!(got, want, "{half}");
}

#[test]
fn the_agent_and_gse_control_answer_alias_and_queue_rules_alike() {
    let agent = crate::cases::tencent_api::signed_agent(1);
    check(
        &crate::cases::tencent_api::client(
            &agent,
            crate::cases::tencent_api::ID,
            crate::cases::tencent_api::KEY,
        ),
        "the agent",
    );
    let pg = Postgres::start();
    let control = Control::start(&pg.url, "");
    check(&control.sdk(), "gse-control");
}
