//! Launch failures are retried, counted and shown; `gse-agent status` reads the running agent
//! (table and JSON) and says clearly when there is none.

use std::ffi::OsStr;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, SystemTime};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};

use crate::helper::{
    AGENT, Agent, FAKE_SERVER, agent_command, config, entry, succeeded, text, wait_for,
};

/// Fast backoff; a crash loop needs 4 repeated failures and then pauses for an hour.
const FAST: &str = "
health-check: { interval: 100ms, timeout: 500ms, failure-threshold: 3 }
timeouts: { process-ready: 5s, process-exit: 1s, player-reservation: 30s, stop-grace: 200ms, shutdown: 1s }
restart: { initial-backoff: 50ms, max-backoff: 200ms, reset-after: 1m, crash-loop-max: 4, crash-loop-window: 1m, crash-loop-cool-down: 1h }";

/// `gse-agent status` with `args`.
fn status(args: &[&str]) -> Output {
    let args: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
    agent_command("status", &args)
}

/// `status --config` of this agent, which must succeed; returns stdout.
fn status_of(agent: &Agent, extra: &[&str]) -> String {
    let config = agent.path("agent.yaml");
    let mut args = vec!["--config", config.to_str().unwrap()];
    args.extend_from_slice(extra);
    succeeded(&status(&args))
}

fn instance(agent: &Agent) -> Value {
    agent.ok(json!({"Action": "DescribeInstancesExtend"}))["Instances"][0].clone()
}

fn entries(agent: &Agent) -> Vec<Value> {
    agent.ok(json!({"Action": "DescribeServerProcesses"}))["Entries"]
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn a_missing_launch_path_is_retried_counted_and_shown_until_the_file_appears() {
    let slow_loop = FAST.replace("crash-loop-max: 4", "crash-loop-max: 1000");
    let yaml = config(
        "    - LaunchPath: /local/game/later\n      ConcurrentExecutions: 1\n",
        &slow_loop,
    );
    let agent = Agent::start(&yaml);
    // Retried, not tried once: the count climbs past the first attempts.
    let i = wait_for("three failed launches", || {
        let i = instance(&agent);
        (i["LaunchFailureCnt"].as_u64().unwrap() >= 3).then_some(i)
    });
    assert_eq!(i["State"], "Active");
    assert_eq!(i["MaxGameSessionCnt"], 1);
    assert_eq!(i["DesiredProcessCnt"], 1, "{i}");
    assert_eq!(i["ProcessCnt"], 0, "{i}");
    assert_eq!(i["PausedEntryCnt"], 0, "{i}");
    let e = &entries(&agent)[0];
    assert_eq!(e["LaunchPath"], "/local/game/later");
    assert_eq!(
        (e["DesiredProcessCnt"].as_u64(), e["ProcessCnt"].as_u64()),
        (Some(1), Some(0))
    );
    assert!(e["LaunchFailureCnt"].as_u64().unwrap() >= 3, "{e}");
    let error = e["LastLaunchError"].as_str().unwrap();
    assert!(error.contains("does not exist"), "{e}");
    assert_eq!(
        e["LastExit"]["EventCode"], "SERVER_PROCESS_INVALID_PATH",
        "{e}"
    );
    let table = status_of(&agent, &[]);
    let row = table
        .lines()
        .find(|l| l.contains("/local/game/later"))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(
        row.contains("0/1") && row.contains("does not exist"),
        "{table}"
    );
    assert!(table.contains("\nno processes\n"), "{table}");

    // A deploy brings the file: the next retry starts it.
    std::os::unix::fs::symlink(FAKE_SERVER, agent.path("game/later")).unwrap();
    agent.wait_ready(1);
    let e = &entries(&agent)[0];
    assert_eq!(e["ProcessCnt"], 1, "{e}");
    assert!(e["LastLaunchError"].is_null(), "{e}");
    assert_eq!(
        agent.count("SERVER_PROCESS_INVALID_PATH"),
        1,
        "reported once, counted every time"
    );
    let i = instance(&agent);
    assert_eq!(
        (i["ProcessCnt"].as_u64(), i["DesiredProcessCnt"].as_u64()),
        (Some(1), Some(1))
    );
    let table = status_of(&agent, &[]);
    assert!(table.contains("proc-0-0-"), "{table}");
    // The official SDKs' form (`POST /`) gets exactly their model: the agent's fields are
    // only in GSE Local's.
    let tencent = crate::helper::raw_request(
        agent.capi,
        "POST / HTTP/1.1",
        &format!(
            "Host: {}\r\nContent-Type: application/json\r\nX-TC-Action: DescribeInstancesExtend\r\n",
            agent.capi
        ),
        "{}",
    );
    let model = &tencent["Instances"][0];
    assert_eq!(model["MaxGameSessionCnt"], 1, "{tencent}");
    assert!(model.get("ProcessCnt").is_none(), "{tencent}");
}

/// A fleet with a session on one game, a game that crashed and was replaced, and an entry paused
/// by a crash loop.
fn busy_agent() -> (Agent, u64, u64) {
    let looping = "    - LaunchPath: /local/game/server\n      Parameters: \"--say last-words --crash-at before-ready --crash-with exit:3\"\n      ConcurrentExecutions: 1\n";
    let agent = Agent::start(&config(
        &format!("{}{looping}", entry("--say ready-to-play", 2)),
        FAST,
    ));
    let ready = agent.wait_ready(2);
    let s = agent.create_session(4);
    let gss_id = s["GameServerSessionId"].as_str().unwrap().to_string();
    agent.wait_session_status(&gss_id, "ACTIVE");
    agent.ok(json!({"Action": "JoinGameServerSession", "GameServerSessionId": gss_id, "PlayerId": "alice"}));
    let host = agent
        .processes()
        .into_iter()
        .find(|p| p["GameServerSessionId"] == gss_id.as_str())
        .unwrap();
    let host_pid = host["Pid"].as_u64().unwrap();
    let other = ready
        .iter()
        .map(|p| p["Pid"].as_u64().unwrap())
        .find(|p| *p != host_pid)
        .unwrap();
    kill(Pid::from_raw(other as i32), Signal::SIGABRT).unwrap();
    let replaced = wait_for("the crashed game replaced and ready", || {
        agent.wait_ready(2).into_iter().find(|p| {
            let pid = p["Pid"].as_u64().unwrap();
            pid != host_pid && pid != other
        })
    });
    agent.wait_event("SERVER_PROCESS_CRASH_LOOP");
    (agent, host_pid, replaced["Pid"].as_u64().unwrap())
}

#[test]
fn status_shows_sessions_crashes_and_a_paused_entry_as_a_table_and_json() {
    let (agent, host_pid, replaced_pid) = busy_agent();

    let table = status_of(&agent, &["--events", "5"]);
    let row = |pid: u64| {
        table
            .lines()
            .find(|l| l.split_whitespace().nth(2) == Some(&pid.to_string()))
            .unwrap_or_else(|| panic!("no row for {pid}:\n{table}"))
    };
    let host = row(host_pid);
    assert!(
        host.contains("ACTIVE") && host.contains("gssess-"),
        "{table}"
    );
    let cells: Vec<&str> = host.split_whitespace().collect();
    assert_eq!(cells[7], "1", "one player: {host}");
    let crashed = row(replaced_pid);
    assert!(
        crashed.contains("SERVER_PROCESS_CRASHED: killed by SIGABRT"),
        "{table}"
    );
    let paused = table
        .lines()
        .find(|l| l.contains("/local/game/server") && l.contains("0/1"))
        .unwrap_or_else(|| panic!("no paused entry:\n{table}"));
    assert!(
        paused.contains("(in 59m") || paused.contains("(in 1h00m"),
        "{table}"
    );
    // The fake server's last line is its own note on crashing.
    assert!(
        paused.contains("SERVER_PROCESS_CRASHED: exit code 3; last output: gse-fake-server"),
        "{table}"
    );
    assert!(table.contains("LAST EVENTS"), "{table}");

    let json: Value =
        serde_json::from_str(&status_of(&agent, &["--json", "--events", "3"])).unwrap();
    assert_eq!(json["Events"].as_array().unwrap().len(), 3, "{json}");
    let processes = json["ServerProcesses"].as_array().unwrap();
    assert_eq!(processes.len(), 2, "{json}");
    for p in processes {
        assert!(p["CpuSeconds"].as_f64().is_some(), "{p}");
        assert!(p["RssBytes"].as_u64().unwrap() > 1 << 20, "{p}");
    }
    let host = processes.iter().find(|p| p["Pid"] == host_pid).unwrap();
    assert_eq!(host["CurrentPlayerSessionCount"], 1, "{host}");
    let crashed = processes.iter().find(|p| p["Pid"] == replaced_pid).unwrap();
    assert_eq!(crashed["LastExit"]["EventCode"], "SERVER_PROCESS_CRASHED");
    assert_eq!(crashed["Restarts"], 1);
    let paused = &json["Entries"][1];
    let until = humantime::parse_rfc3339(paused["PausedUntil"].as_str().unwrap()).unwrap();
    let left = until.duration_since(SystemTime::now()).unwrap();
    assert!(
        left > Duration::from_secs(3500) && left <= Duration::from_secs(3600),
        "{paused}"
    );
    assert_eq!(paused["ProcessCnt"], 0);
    assert_eq!(json["Instance"]["PausedEntryCnt"], 1, "{json}");
    // The same pause in DescribeServerProcesses.
    assert_eq!(entries(&agent)[1]["PausedUntil"], paused["PausedUntil"]);
}

#[test]
fn status_watch_redraws_until_interrupted() {
    let agent = Agent::start(&config(&entry("", 1), FAST));
    agent.wait_ready(1);
    let config = agent.path("agent.yaml");
    let mut child = Command::new(AGENT)
        .args(["status", "--watch", "100ms", "--json", "--config"])
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    for frame in 0..3 {
        let line = rx
            .recv_timeout(crate::helper::DEADLINE)
            .unwrap_or_else(|e| panic!("frame {frame}: {e}"));
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["ServerProcesses"].as_array().unwrap().len(), 1, "{v}");
    }
    kill(Pid::from_raw(child.id() as i32), Signal::SIGINT).unwrap();
    let status = wait_for("status --watch to end", || child.try_wait().unwrap());
    assert_eq!(status.code(), Some(0));
}

#[test]
fn status_signs_its_request_when_the_agent_wants_keys() {
    let agent = Agent::start_with(
        &config(&entry("", 1), &format!("{FAST}\ncapi-keys-file: keys")),
        |game| {
            use std::os::unix::fs::PermissionsExt;
            let keys = game.parent().unwrap().join("keys");
            std::fs::write(&keys, "AKIDstatus s3cret\n").unwrap();
            std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o600)).unwrap();
        },
    );
    // The process table, not the events below it: the event of a start can be read before
    // the process is listed.
    wait_for("a running process in status", || {
        let t = status_of(&agent, &[]);
        t.contains("1 of 1 processes running").then_some(t)
    });
    // Unsigned, the agent refuses, and status says what to do.
    let out = status(&["--capi", &agent.capi.to_string()]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("AuthFailure") && err.contains("capi-keys-file"),
        "{err}"
    );
}

#[test]
fn status_without_an_agent_exits_1_naming_what_it_tried() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = config(&entry("", 1), "");
    std::fs::write(dir.path().join("agent.yaml"), yaml).unwrap();
    let out = status(&["--config", dir.path().join("agent.yaml").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains(&dir.path().join("data/endpoints.json").display().to_string())
            && err.contains("gse-agent run")
            && err.contains("--capi"),
        "{err}"
    );
    assert!(out.stdout.is_empty());

    // An address nothing listens on (bound, then released).
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let out = status(&["--capi", &addr.to_string()]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!(
            "cannot reach the agent's control API at {addr} (--capi)"
        )),
        "{err}"
    );

    // Bad usage and a bad config are 64.
    let out = status(&["--watch", "1ms", "--capi", &addr.to_string()]);
    assert_eq!(out.status.code(), Some(64), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("100ms"));
    let out = status(&[
        "--config",
        dir.path().join("missing.yaml").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(64), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("missing.yaml"));
}
