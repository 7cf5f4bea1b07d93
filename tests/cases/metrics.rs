//! `/metrics`, `/healthz` and `/readyz` on `metrics-listen`, scraped from a running agent: the
//! values move with real sessions, SDK calls and a killed game.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

use crate::helper::{AGENT, Agent, DEADLINE, config, entry, wait_for};

const FAST: &str = "
metrics-listen: 127.0.0.1:0
health-check: { interval: 100ms, timeout: 500ms, failure-threshold: 3 }
timeouts: { process-ready: 5s, process-exit: 1s, player-reservation: 30s, stop-grace: 200ms, shutdown: 1s }
restart: { initial-backoff: 50ms, max-backoff: 200ms, reset-after: 1m, crash-loop-max: 20, crash-loop-window: 1m, crash-loop-cool-down: 1h }";

/// The metrics address the agent wrote to endpoints.json.
fn metrics_addr(agent: &Agent) -> SocketAddr {
    let v: Value =
        serde_json::from_str(&std::fs::read_to_string(agent.path("data/endpoints.json")).unwrap())
            .unwrap();
    v["MetricsAddress"]
        .as_str()
        .unwrap_or_else(|| panic!("no MetricsAddress in {v}"))
        .parse()
        .unwrap()
}

/// `GET path` with extra header lines; the status code and body.
pub(crate) fn get(addr: SocketAddr, path: &str, headers: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect to metrics-listen");
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{headers}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("an HTTP answer");
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, body.to_string())
}

pub(crate) fn scrape(addr: SocketAddr) -> String {
    let (status, body) = get(addr, "/metrics", "");
    assert_eq!(status, 200, "{body}");
    body
}

/// The value of `series` (name and labels as written), if served.
pub(crate) fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.parse().unwrap())
}

/// Scrapes until `series` has a value that `ok` accepts; returns it.
pub(crate) fn wait_value(addr: SocketAddr, series: &str, ok: impl Fn(f64) -> bool) -> f64 {
    wait_for(series, || value(&scrape(addr), series).filter(|v| ok(*v)))
}

#[test]
fn metrics_move_with_sessions_sdk_calls_and_a_killed_game() {
    let agent = Agent::start(&config(&entry("", 2), FAST));
    let addr = metrics_addr(&agent);
    let ready = agent.wait_ready(2);
    let text = scrape(addr);
    assert_eq!(
        value(&text, r#"gse_agent_processes{entry="0",phase="ACTIVE"}"#),
        Some(2.0),
        "{text}"
    );
    // A call is counted once answered, and ProcessReady is answered only once saved: the
    // process shows ACTIVE a moment before its call is counted.
    wait_value(
        addr,
        r#"gse_agent_sdk_calls_total{rpc="ProcessReady",result="ok"}"#,
        |n| n >= 2.0,
    );
    wait_value(
        addr,
        r#"gse_agent_sdk_call_duration_seconds_count{rpc="ProcessReady"}"#,
        |n| n >= 2.0,
    );
    assert_eq!(
        value(&text, r#"gse_agent_game_server_sessions{status="ACTIVE"}"#),
        None
    );
    assert_eq!(
        value(&text, r#"gse_agent_process_restarts_total{entry="0"}"#),
        None
    );

    // A session created shows up, and its activation is an SDK call.
    let s = agent.create_session(4);
    let gss_id = s["GameServerSessionId"].as_str().unwrap();
    agent.wait_session_status(gss_id, "ACTIVE");
    wait_value(
        addr,
        r#"gse_agent_game_server_sessions{status="ACTIVE"}"#,
        |n| n == 1.0,
    );
    wait_value(
        addr,
        r#"gse_agent_sdk_calls_total{rpc="ActivateGameServerSession",result="ok"}"#,
        |n| n == 1.0,
    );

    // A killed game counts a crash and, once replaced, a restart.
    let victim = ready
        .iter()
        .find(|p| p["GameServerSessionId"].as_str() != Some(gss_id))
        .unwrap();
    let victim_id = victim["ProcessId"].as_str().unwrap();
    kill(
        Pid::from_raw(victim["Pid"].as_u64().unwrap() as i32),
        Signal::SIGKILL,
    )
    .unwrap();
    wait_value(
        addr,
        r#"gse_agent_process_exits_total{entry="0",code="SERVER_PROCESS_CRASHED"}"#,
        |n| n == 1.0,
    );
    wait_value(
        addr,
        r#"gse_agent_process_restarts_total{entry="0"}"#,
        |n| n == 1.0,
    );
    wait_value(
        addr,
        r#"gse_agent_events_total{code="SERVER_PROCESS_CRASHED"}"#,
        |n| n == 1.0,
    );

    // Each live game is sampled (every 5 s); the killed one is not listed any more.
    let survivor = ready
        .iter()
        .find(|p| p["ProcessId"].as_str() != Some(victim_id))
        .unwrap()["ProcessId"]
        .as_str()
        .unwrap()
        .to_string();
    // A sample taken before the kill still lists the victim: wait for one taken after it.
    let text = wait_for(
        "a sample of the surviving game without the killed one",
        || {
            let text = scrape(addr);
            value(
            &text,
            &format!(
                r#"gse_agent_process_resident_memory_bytes{{process_id="{survivor}",entry="0"}}"#
            ),
        )
        .filter(|rss| *rss > 0.0 && !text.contains(&format!("process_id=\"{victim_id}\"")))
        .map(|_| text)
        },
    );
    assert!(
        value(
            &text,
            &format!(r#"gse_agent_process_open_fds{{process_id="{survivor}",entry="0"}}"#)
        )
        .is_some_and(|n| n >= 3.0),
        "{text}"
    );
    assert!(
        value(
            &text,
            &format!(r#"gse_agent_process_cpu_seconds_total{{process_id="{survivor}",entry="0"}}"#)
        )
        .is_some(),
        "{text}"
    );
    assert!(
        !text.contains(&format!("process_id=\"{victim_id}\"")),
        "{text}"
    );
    assert!(text.ends_with("# EOF\n"), "{text}");
}

#[test]
fn healthz_and_readyz_answer_with_bodies() {
    let agent = Agent::start(&config(&entry("", 1), FAST));
    let addr = metrics_addr(&agent);
    let (status, body) = get(addr, "/healthz", "");
    assert_eq!(
        (status, body.as_str()),
        (200, "ok: the fleet supervisor answers\n")
    );
    let body = wait_for("/readyz 200", || {
        let (status, body) = get(addr, "/readyz", "");
        (status == 200).then_some(body)
    });
    assert!(
        body.starts_with(
            "ready: the SDK server accepts calls; the fleet runs every process it should (1 of 1"
        ),
        "{body}"
    );
    let (status, body) = get(addr, "/nothing", "");
    assert_eq!(status, 404);
    assert!(body.contains("GET /metrics, /healthz or /readyz"), "{body}");
}

#[test]
fn readyz_is_503_while_a_process_the_configuration_asks_for_does_not_run() {
    let missing = "    - LaunchPath: /local/game/missing\n      ConcurrentExecutions: 1\n";
    let agent = Agent::start(&config(&format!("{}{missing}", entry("", 1)), FAST));
    let addr = metrics_addr(&agent);
    agent.wait_ready(1);
    agent.wait_event("SERVER_PROCESS_INVALID_PATH");
    let (status, body) = get(addr, "/readyz", "");
    assert_eq!(status, 503, "{body}");
    assert!(
        body.starts_with(
            "not ready: 1 of 2 processes the runtime configuration asks for are running"
        ),
        "{body}"
    );
    // Alive all the same.
    assert_eq!(get(addr, "/healthz", "").0, 200);
    let text = scrape(addr);
    assert_eq!(
        value(
            &text,
            r#"gse_agent_process_exits_total{entry="1",code="SERVER_PROCESS_INVALID_PATH"}"#
        ),
        Some(1.0),
        "{text}"
    );
    assert!(
        text.contains(
            r#"gse_agent_entry_info{entry="1",launch_path="/local/game/missing",parameters=""} 1"#
        ),
        "{text}"
    );
    // Reported once, but every retry is counted.
    wait_for("a second failed launch counted", || {
        let text = scrape(addr);
        (value(&text, r#"gse_agent_entry_launch_failures_total{entry="1"}"#)? >= 2.0).then_some(())
    });
}

#[test]
fn a_metrics_token_guards_metrics_but_not_the_probes() {
    let token = "3f1c0a9e5b7d42c8a6e0f1b2c3d4e5f6";
    let agent = Agent::start_with(
        &config(
            &entry("", 1),
            &format!("{FAST}\nmetrics-token-file: metrics.token"),
        ),
        |game| crate::helper::write_secret(&game.join("../metrics.token"), &format!("{token}\n")),
    );
    let addr = metrics_addr(&agent);
    let (status, body) = get(addr, "/metrics", "");
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("Authorization: Bearer"), "{body}");
    let (status, _) = get(
        addr,
        "/metrics",
        "Authorization: Bearer not-the-token-at-all\r\n",
    );
    assert_eq!(status, 401);
    let (status, body) = get(
        addr,
        "/metrics",
        &format!("Authorization: Bearer {token}\r\n"),
    );
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("gse_agent_processes"), "{body}");
    assert_eq!(get(addr, "/healthz", "").0, 200);
}

#[test]
fn a_non_loopback_metrics_listen_without_a_token_is_refused_with_exit_64() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.yaml");
    let yaml = config(&entry("", 1), "metrics-listen: 0.0.0.0:0");
    std::fs::write(&path, &yaml).unwrap();
    let line = yaml
        .lines()
        .position(|l| l.starts_with("metrics-listen"))
        .unwrap()
        + 1;
    for args in [&["check-config"][..], &["run", "--config"][..]] {
        let out = Command::new(AGENT).args(args).arg(&path).output().unwrap();
        assert_eq!(out.status.code(), Some(64), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!(
                "agent.yaml:{line}: metrics-listen: 0.0.0.0:0 is not a loopback address"
            )),
            "{err}"
        );
        assert!(err.contains("metrics-token-file"), "{err}");
    }
}
