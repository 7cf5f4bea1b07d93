//! Crash rehearsal on a live fleet: `gse-agent chaos` and the `InjectFault` action reach real
//! processes (signals, a stopped group), the agent's own health checks and session starts, and
//! the upstream link; each fault is one event with its own code, and what follows is handled
//! as the real fault would be.

use std::ffi::OsStr;
use std::process::Output;

use serde_json::{Value, json};

use crate::cases::upstream::upstream_yaml;
use crate::helper::control_plane::ControlPlaneFake;
use crate::helper::{Agent, agent_command, config, entry, succeeded, text, wait_for};

const TIMINGS: &str = "
health-check: { interval: 100ms, timeout: 500ms, failure-threshold: 3 }
timeouts: { process-ready: 5s, process-exit: 1s, stop-grace: 200ms, shutdown: 1s }
restart: { initial-backoff: 50ms, max-backoff: 200ms }";

fn rehearsal_yaml(count: u32) -> String {
    config(&entry("", count), &format!("chaos: enabled\n{TIMINGS}"))
}

/// `gse-agent chaos --config <agent's yaml> ARGS`.
fn chaos(agent: &Agent, args: &[&str]) -> Output {
    let config = agent.path("agent.yaml");
    let mut all = vec![OsStr::new("--config"), config.as_os_str()];
    all.extend(args.iter().map(OsStr::new));
    agent_command("chaos", &all)
}

/// Runs `gse-agent chaos`, which must succeed; returns its line.
fn chaos_ok(agent: &Agent, args: &[&str]) -> String {
    succeeded(&chaos(agent, args))
}

/// The state letter of /proc/<pid>/stat (`T` while stopped).
fn proc_state(pid: u64) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command may hold spaces and parentheses: the state follows the last ')'.
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

fn id_and_pid(p: &Value) -> (String, u64) {
    (
        p["ProcessId"].as_str().unwrap().to_string(),
        p["Pid"].as_u64().unwrap(),
    )
}

#[test]
fn crash_rehearsal_is_refused_unless_the_config_enables_it() {
    let agent = Agent::start(&config(&entry("", 1), TIMINGS));
    let (id, _) = id_and_pid(&agent.wait_ready(1)[0]);
    let out = chaos(&agent, &["kill", "--process", &id]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("OperationDenied") && stderr.contains("chaos: enabled"),
        "{stderr}"
    );
    let message = agent.err(
        json!({"Action": "InjectFault", "Fault": "KillProcess", "ServerProcessId": id}),
        "OperationDenied",
    );
    assert!(message.contains("chaos: enabled"), "{message}");
    // Bad usage is exit 64, before any request.
    let out = chaos(&agent, &["kill"]);
    assert_eq!(out.status.code(), Some(64), "{}", text(&out.stderr));
    assert_eq!(agent.processes().len(), 1);
    assert!(
        !agent
            .events()
            .iter()
            .any(|e| e["EventCode"].as_str().unwrap().starts_with("CHAOS_"))
    );
}

#[test]
fn a_killed_process_crashes_as_rehearsed_and_is_replaced() {
    let agent = Agent::start(&rehearsal_yaml(1));
    let (id, pid) = id_and_pid(&agent.wait_ready(1)[0]);
    // SIGABRT: a Rust game's std takes its first SIGSEGV from outside (its stack-overflow
    // handler) and lives on; an abort ends any game.
    let line = chaos_ok(&agent, &["kill", "--process", &id, "--signal", "abrt"]);
    assert_eq!(
        line.trim(),
        format!("injected KillProcess into {id} (pid {pid}); event CHAOS_PROCESS_KILLED")
    );
    let injected = agent.wait_event("CHAOS_PROCESS_KILLED");
    assert_eq!(injected["ProcessId"], id.as_str(), "{injected}");
    let crash = agent.wait_event("SERVER_PROCESS_CRASHED");
    assert_eq!(crash["ProcessId"], id.as_str(), "{crash}");
    assert_eq!(crash["Exit"]["Signal"], "SIGABRT", "{crash}");
    assert!(
        crash["Message"]
            .as_str()
            .unwrap()
            .contains("sent by crash rehearsal"),
        "{crash}"
    );
    // Handled as any crash: a new process takes the slot.
    wait_for("a replacement", || {
        agent
            .wait_ready(1)
            .into_iter()
            .find(|p| p["ProcessId"] != id.as_str())
    });
}

#[test]
fn a_hung_process_is_stopped_and_continued_and_other_faults_reach_the_agents_own_calls() {
    // A high threshold: the health checks a hang leaves unanswered never end the process,
    // however loaded the machine.
    let agent =
        Agent::start(&rehearsal_yaml(2).replace("failure-threshold: 3", "failure-threshold: 20"));
    let ready = agent.wait_ready(2);
    let (hung, hung_pid) = id_and_pid(&ready[0]);
    let (other, _) = id_and_pid(&ready[1]);

    // Hang: the group is stopped (state T), then continued; it stays the same process.
    chaos_ok(&agent, &["hang", "--process", &hung, "--for", "1s"]);
    wait_for("the process stopped", || {
        (proc_state(hung_pid) == Some('T')).then_some(())
    });
    wait_for("the process continued", || {
        matches!(proc_state(hung_pid), Some(c) if c != 'T').then_some(())
    });
    let event = agent.wait_event("CHAOS_PROCESS_HUNG");
    assert_eq!(event["Pid"], hung_pid, "{event}");

    // A failed session start: the game is not called; the session ends in ERROR.
    chaos_ok(&agent, &["fail-session-start"]);
    let s = agent.create_session(4);
    let id = s["GameServerSessionId"].as_str().unwrap();
    let failed = agent.wait_session_status(id, "ERROR");
    assert_eq!(failed["Status"], "ERROR");
    let error = agent.wait_event("GAME_SESSION_ERROR");
    assert!(
        error["Message"]
            .as_str()
            .unwrap()
            .contains("crash rehearsal"),
        "{error}"
    );
    // Used up: the next session activates.
    let s = agent.create_session(4);
    agent.wait_session_status(s["GameServerSessionId"].as_str().unwrap(), "ACTIVE");

    // Failed health checks, by default as many as the threshold: ended as unhealthy, and said
    // why.
    chaos_ok(&agent, &["fail-health-checks", "--process", &other]);
    let unhealthy = agent.wait_event("SERVER_PROCESS_UNHEALTHY");
    assert_eq!(unhealthy["ProcessId"], other.as_str(), "{unhealthy}");
    assert!(
        unhealthy["Message"]
            .as_str()
            .unwrap()
            .contains("crash rehearsal"),
        "{unhealthy}"
    );
    agent.wait_event("SERVER_PROCESS_TERMINATED_UNHEALTHY");
    for code in [
        "CHAOS_PROCESS_HUNG",
        "CHAOS_SESSION_START_FAILING",
        "CHAOS_HEALTH_CHECKS_FAILING",
    ] {
        assert_eq!(agent.count(code), 1, "{code}");
    }
}

#[test]
fn a_delayed_session_start_reaches_the_game_after_the_delay() {
    let agent = Agent::start(&rehearsal_yaml(1));
    let (id, _) = id_and_pid(&agent.wait_ready(1)[0]);
    let r = agent.ok(json!({
        "Action": "InjectFault",
        "Fault": "DelayGameServerSessionStart",
        "ServerProcessId": id,
        "DurationSeconds": 1.5,
    }));
    assert_eq!(r["EventCode"], "CHAOS_SESSION_START_DELAYED", "{r}");
    let s = agent.create_session(4);
    let gss = s["GameServerSessionId"].as_str().unwrap();
    let active = agent.wait_session_status(gss, "ACTIVE");
    let created = agent.wait_event("GAME_SESSION_CREATED");
    let activated = agent.wait_event("GAME_SESSION_ACTIVATED");
    let at = |e: &Value| {
        humantime::parse_rfc3339(e["EventTime"].as_str().unwrap()).unwrap_or_else(|e| panic!("{e}"))
    };
    let waited = at(&activated).duration_since(at(&created)).unwrap();
    assert!(
        waited >= std::time::Duration::from_millis(1400),
        "activated {waited:?} after creation: {active}"
    );
}

#[test]
fn bad_faults_are_refused_with_what_was_wrong() {
    let agent = Agent::start(&rehearsal_yaml(1));
    let (id, _) = id_and_pid(&agent.wait_ready(1)[0]);
    let m = agent.err(
        json!({"Action": "InjectFault", "Fault": "Explode", "ServerProcessId": id}),
        "InvalidParameterValue",
    );
    assert!(m.contains("Explode") && m.contains("KillProcess"), "{m}");
    let m = agent.err(
        json!({"Action": "InjectFault", "Fault": "KillProcess", "ServerProcessId": id, "Signal": "SIGNOPE"}),
        "InvalidParameterValue",
    );
    assert!(m.contains("SIGNOPE"), "{m}");
    let m = agent.err(
        json!({"Action": "InjectFault", "Fault": "HangProcess", "ServerProcessId": id, "DurationSeconds": 0}),
        "InvalidParameterValue",
    );
    assert!(m.contains("DurationSeconds"), "{m}");
    let m = agent.err(
        json!({"Action": "InjectFault", "Fault": "KillProcess", "ServerProcessId": "proc-9-9-9"}),
        "ResourceNotFound",
    );
    assert!(m.contains("proc-9-9-9"), "{m}");
    let m = agent.err(
        json!({"Action": "InjectFault", "Fault": "CutUpstream", "DurationSeconds": 1}),
        "OperationDenied",
    );
    assert!(m.contains("upstream"), "{m}");
    assert_eq!(agent.processes().len(), 1);
}

#[test]
fn a_cut_upstream_link_drops_the_connection_and_delivers_everything_once_back() {
    let cp = ControlPlaneFake::start(None, true);
    let yaml = config(
        &entry("", 1),
        &format!("chaos: enabled\n{}", upstream_yaml(&cp, "")),
    );
    let agent = Agent::start(&yaml);
    agent.wait_ready(1);
    cp.wait_connections(1);
    chaos_ok(&agent, &["cut-upstream", "--for", "1s"]);
    agent.wait_event("UPSTREAM_DISCONNECTED");
    // Made while the link is down: it waits in the outbox.
    let s = agent.create_session(2);
    let gss = s["GameServerSessionId"].as_str().unwrap().to_string();
    cp.wait_connections(2);
    let first: Vec<String> = cp.rec.lock().unwrap().connections[0]
        .1
        .iter()
        .map(|e| e.game_server_session_id.clone())
        .collect();
    assert!(
        !first.contains(&gss),
        "the session made during the cut came on the first connection"
    );
    let cut = cp.wait_event("CHAOS_UPSTREAM_CUT");
    assert!(cut.message.contains("1s"), "{cut:?}");
    wait_for("the session's creation upstream", || {
        cp.events()
            .into_iter()
            .find(|e| e.code == "GAME_SESSION_CREATED" && e.game_server_session_id == gss)
    });
    let disconnected = agent.wait_event("UPSTREAM_DISCONNECTED");
    assert!(
        disconnected["Message"]
            .as_str()
            .unwrap()
            .contains("crash rehearsal"),
        "{disconnected}"
    );
    crate::cases::upstream::assert_contiguous(&cp.events());
}
