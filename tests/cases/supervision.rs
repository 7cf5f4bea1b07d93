use nix::sys::signal::Signal;
use serde_json::json;

use crate::helper::{Agent, config, entry, group_running, wait_for};

const FAST: &str = "
health-check: { interval: 100ms, timeout: 200ms, failure-threshold: 2 }
timeouts: { process-ready: 2s, process-exit: 300ms, player-reservation: 500ms, stop-grace: 200ms, shutdown: 1s }
protection: { policy: NoProtection, no-protection-grace: 300ms }
restart: { initial-backoff: 50ms, max-backoff: 200ms, reset-after: 1m, crash-loop-max: 20, crash-loop-window: 1m, crash-loop-cool-down: 1h }";

#[test]
fn launches_concurrent_executions_of_every_entry_and_counts_them() {
    let second = "    - LaunchPath: /local/game/server\n      Parameters: \"--client-port 7001\"\n      ConcurrentExecutions: 1\n";
    let agent = Agent::start(&config(&format!("{}{second}", entry("", 2)), FAST));
    let ready = agent.wait_ready(3);
    assert_eq!(ready.len(), 3);
    let launch_ids: Vec<&str> = ready
        .iter()
        .map(|p| p["ProcessId"].as_str().unwrap())
        .collect();
    for want in ["proc-0-0-1", "proc-0-1-1", "proc-1-0-1"] {
        assert!(launch_ids.contains(&want), "{launch_ids:?}");
    }
    let instance = &agent.ok(json!({"Action": "DescribeInstancesExtend"}))["Instances"][0];
    assert_eq!(instance["HealthyProcessCnt"], 3);
    assert_eq!(instance["ActiveProcessCnt"], 3);
    assert_eq!(instance["MaxGameSessionCnt"], 3);
    assert_eq!(agent.count("SERVER_PROCESS_READY"), 3);
    // Output goes to per-process log files.
    let log = agent.path("data/logs/proc-0-0-1.stdout.log");
    let text = wait_for("stdout log", || {
        std::fs::read_to_string(&log)
            .ok()
            .filter(|t| t.contains("ready:"))
    });
    assert!(text.contains("clientPort"));
}

#[test]
fn crash_with_exit_code_is_reported_with_output_and_replaced() {
    let agent = Agent::start(&config(
        &entry(
            "--say last-words --crash-at after-ready --crash-with exit:3",
            1,
        ),
        FAST,
    ));
    let crash = agent.wait_event("SERVER_PROCESS_CRASHED");
    assert_eq!(crash["Exit"]["ExitCode"], 3);
    let tail = crash["Exit"]["OutputTail"].as_array().unwrap();
    assert!(tail.iter().any(|l| l == "last-words"), "{tail:?}");
    assert!(
        crash["Exit"]["ReadyMillis"].is_u64(),
        "crash after ready: {crash}"
    );
    assert!(crash["Message"].as_str().unwrap().contains("exit code 3"));
    // Replaced.
    agent.wait_events("SERVER_PROCESS_STARTED", 2);
}

#[test]
fn crash_by_signal_is_reported_with_the_signal() {
    let agent = Agent::start(&config(
        &entry("--crash-at after-ready --crash-with signal:SIGSEGV", 1),
        FAST,
    ));
    let crash = agent.wait_event("SERVER_PROCESS_CRASHED");
    assert_eq!(crash["Exit"]["Signal"], "SIGSEGV", "{crash}");
    assert!(crash["Exit"].get("ExitCode").is_none());
}

#[test]
fn crash_loop_backs_off_and_trips_the_breaker_once() {
    let fast_loop = FAST.replace("crash-loop-max: 20", "crash-loop-max: 4");
    let agent = Agent::start(&config(&entry("--crash-at before-ready", 1), &fast_loop));
    let trip = agent.wait_event("SERVER_PROCESS_CRASH_LOOP");
    assert!(
        trip["Message"].as_str().unwrap().contains("4 failures"),
        "{trip}"
    );
    let events = agent.events();
    let crashes: Vec<_> = events
        .iter()
        .filter(|e| e["EventCode"] == "SERVER_PROCESS_CRASHED")
        .collect();
    assert_eq!(crashes.len(), 4);
    // Backoff: launches after the second crash are spaced by at least the growing delay.
    let starts: Vec<_> = events
        .iter()
        .filter(|e| e["EventCode"] == "SERVER_PROCESS_STARTED")
        .map(|e| humantime::parse_rfc3339(e["EventTime"].as_str().unwrap()).unwrap())
        .collect();
    assert_eq!(starts.len(), 4, "paused after the fourth crash");
    let gap = |i: usize| starts[i].duration_since(starts[i - 1]).unwrap();
    assert!(gap(2).as_millis() >= 50, "{:?}", gap(2));
    assert!(gap(3).as_millis() >= 100, "{:?}", gap(3));
    assert!(agent.processes().is_empty());
}

#[test]
fn many_games_killed_at_once_all_relaunch_without_a_crash_loop() {
    // One event (an OOM killer, an operator's kill -9) ends every game of the entry once:
    // more failures than crash-loop-max (10, the default) within the window, yet no slot
    // failed twice, so every slot relaunches and the entry is not paused.
    let fast = FAST.replace("crash-loop-max: 20", "crash-loop-max: 10");
    let agent = Agent::start(&config(&entry("", 20), &fast));
    let old: Vec<u32> = agent
        .wait_ready(20)
        .iter()
        .map(|p| p["Pid"].as_u64().unwrap() as u32)
        .collect();
    assert_eq!(old.len(), 20);
    for pid in &old {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(*pid as i32), Signal::SIGKILL).unwrap();
    }
    agent.wait_events("SERVER_PROCESS_CRASHED", 20);
    let new = wait_for("20 ready relaunched processes", || {
        let ready: Vec<u32> = agent
            .processes()
            .into_iter()
            .filter(|p| p["Status"] == "ACTIVE" && p["Healthy"] == true)
            .map(|p| p["Pid"].as_u64().unwrap() as u32)
            .filter(|pid| !old.contains(pid))
            .collect();
        (ready.len() >= 20).then_some(ready)
    });
    assert_eq!(new.len(), 20);
    assert_eq!(
        agent.count("SERVER_PROCESS_CRASH_LOOP"),
        0,
        "{:?}",
        agent.events()
    );
}

#[test]
fn missing_launch_path_is_reported_not_retried_hot() {
    let yaml = config(
        "    - LaunchPath: /local/game/missing\n      ConcurrentExecutions: 2\n",
        FAST,
    );
    let agent = Agent::start(&yaml);
    let e = agent.wait_event("SERVER_PROCESS_INVALID_PATH");
    assert!(
        e["Message"].as_str().unwrap().contains("does not exist"),
        "{e}"
    );
    assert_eq!(
        agent.count("SERVER_PROCESS_INVALID_PATH"),
        1,
        "one report for both slots"
    );
}

#[test]
fn non_executable_launch_path_is_reported() {
    let yaml = config(
        "    - LaunchPath: /local/game/plain\n      ConcurrentExecutions: 1\n",
        FAST,
    );
    let agent = Agent::start_with(&yaml, |game| {
        std::fs::write(game.join("plain"), "#!/bin/sh\n").unwrap();
    });
    let e = agent.wait_event("SERVER_PROCESS_INVALID_PATH");
    let msg = e["Message"].as_str().unwrap();
    assert!(msg.contains("is not executable"), "{msg}");
}

#[test]
fn unhealthy_process_is_terminated_and_replaced() {
    let agent = Agent::start(&config(&entry("--health unhealthy", 1), FAST));
    agent.wait_event("SERVER_PROCESS_UNHEALTHY");
    let terminating = agent.wait_event("SERVER_PROCESS_TERMINATING");
    assert!(
        terminating["Message"]
            .as_str()
            .unwrap()
            .contains("unhealthy")
    );
    // The fake server answers OnProcessTerminate with ProcessEnding and exits.
    agent.wait_event("SERVER_PROCESS_TERMINATED_UNHEALTHY");
    agent.wait_events("SERVER_PROCESS_STARTED", 2);
}

#[test]
fn hanging_health_checks_count_as_failures_and_the_deadline_kills() {
    let agent = Agent::start(&config(&entry("--health hang --ignore-terminate", 1), FAST));
    agent.wait_event("SERVER_PROCESS_UNHEALTHY");
    let ended = agent.wait_event("SERVER_PROCESS_TERMINATED_UNHEALTHY");
    // It ignored OnProcessTerminate, so the agent stopped it at the deadline with SIGTERM.
    assert_eq!(
        ended["Exit"]["ExitCode"], 0,
        "the fake exits 0 on SIGTERM: {ended}"
    );
}

#[test]
fn missing_process_ready_times_out() {
    let yaml = config(
        &entry("--no-ready", 1),
        &FAST.replace("process-ready: 2s", "process-ready: 300ms"),
    );
    let agent = Agent::start(&yaml);
    let e = agent.wait_event("SERVER_PROCESS_PROCESS_READY_TIMEOUT");
    assert!(
        e["Message"]
            .as_str()
            .unwrap()
            .contains("no ProcessReady within 300ms"),
        "{e}"
    );
}

#[test]
fn process_ending_without_exit_times_out_and_is_killed() {
    let agent = Agent::start(&config(
        &entry(
            "--match-duration 10ms --hang-after-ending --ignore-sigterm",
            1,
        ),
        FAST,
    ));
    agent.wait_ready(1);
    let s = agent.create_session(2);
    agent.wait_event("SERVER_PROCESS_ENDING");
    let e = agent.wait_event("SERVER_PROCESS_PROCESS_EXIT_TIMEOUT");
    assert_eq!(e["Exit"]["Signal"], "SIGKILL", "SIGTERM is ignored: {e}");
    let id = s["GameServerSessionId"].as_str().unwrap();
    assert_eq!(agent.session(id)["Status"], "TERMINATED");
}

#[test]
fn end_session_and_process_force_terminates_a_game_that_ignores_it() {
    let agent = Agent::start(&config(&entry("--ignore-terminate", 1), FAST));
    agent.wait_ready(1);
    let s = agent.create_session(2);
    let id = s["GameServerSessionId"].as_str().unwrap();
    agent.wait_session_status(id, "ACTIVE");
    agent.ok(json!({"Action": "EndGameServerSessionAndProcess", "GameServerSessionId": id}));
    agent.wait_event("SERVER_PROCESS_FORCE_TERMINATED");
    let s = agent.session(id);
    assert_eq!(s["Status"], "ERROR", "killed with its session: {s}");
}

#[test]
fn a_clean_match_end_is_a_normal_end_and_is_replaced_without_backoff() {
    let agent = Agent::start(&config(&entry("--match-duration 10ms", 1), FAST));
    agent.wait_ready(1);
    let s = agent.create_session(2);
    let id = s["GameServerSessionId"].as_str().unwrap();
    let ended = agent.wait_event("SERVER_PROCESS_ENDED");
    assert_eq!(ended["Exit"]["ExitCode"], 0);
    assert_eq!(
        agent.wait_session_status(id, "TERMINATED")["StatusReason"],
        "terminated by the game"
    );
    agent.wait_ready(1);
    assert_eq!(agent.count("SERVER_PROCESS_CRASHED"), 0);
}

#[test]
fn graceful_stop_terminates_every_process_and_exits_0() {
    let mut agent = Agent::start(&config(&entry("--fork 2", 2), FAST));
    let pids: Vec<u32> = agent
        .wait_ready(2)
        .iter()
        .map(|p| p["Pid"].as_u64().unwrap() as u32)
        .collect();
    agent.signal(Signal::SIGTERM);
    let status = agent.wait_exit();
    assert_eq!(status.code(), Some(0));
    let err = agent.stderr();
    assert!(
        err.contains("OnProcessTerminate sent (agent shutdown)"),
        "{err}"
    );
    for pid in pids {
        wait_for("group gone", || (!group_running(pid)).then_some(()));
    }
}

#[test]
fn stop_kills_games_and_grandchildren_that_ignore_everything() {
    let mut agent = Agent::start(&config(
        &entry("--fork 2 --ignore-sigterm --ignore-terminate", 1),
        FAST,
    ));
    let pid = agent.wait_ready(1)[0]["Pid"].as_u64().unwrap() as u32;
    assert!(group_running(pid));
    agent.signal(Signal::SIGTERM);
    assert_eq!(agent.wait_exit().code(), Some(0));
    wait_for("group gone", || (!group_running(pid)).then_some(()));
}

#[test]
fn a_crash_takes_its_grandchildren_along() {
    let agent = Agent::start(&config(
        &entry(
            "--fork 2 --ignore-sigterm --crash-at after:500ms --crash-with exit:9",
            1,
        ),
        FAST,
    ));
    let pid = agent.wait_ready(1)[0]["Pid"].as_u64().unwrap() as u32;
    let crash = agent.wait_event("SERVER_PROCESS_CRASHED");
    assert_eq!(crash["Pid"], pid);
    wait_for("grandchildren gone", || (!group_running(pid)).then_some(()));
}

#[test]
fn second_signal_kills_at_once() {
    let slow = FAST
        .replace("shutdown: 1s", "shutdown: 1h")
        .replace("stop-grace: 200ms", "stop-grace: 1h");
    let mut agent = Agent::start(&config(
        &entry("--ignore-terminate --ignore-sigterm", 1),
        &slow,
    ));
    let pid = agent.wait_ready(1)[0]["Pid"].as_u64().unwrap() as u32;
    agent.signal(Signal::SIGTERM);
    wait_for("OnProcessTerminate", || {
        agent
            .stderr()
            .contains("OnProcessTerminate sent")
            .then_some(())
    });
    agent.signal(Signal::SIGINT);
    assert_eq!(agent.wait_exit().code(), Some(0));
    wait_for("group gone", || (!group_running(pid)).then_some(()));
}

#[test]
fn lots_of_output_is_captured_and_rotated() {
    let yaml = config(
        &entry("--spew-bytes 300000", 1),
        &format!("{FAST}\nlogs: {{ max-file-bytes: 65536, keep-files: 2, tail-lines: 5 }}"),
    );
    let agent = Agent::start(&yaml);
    agent.wait_ready(1);
    let log = agent.path("data/logs/proc-0-0-1.stdout.log");
    wait_for("rotated logs", || {
        agent
            .path("data/logs/proc-0-0-1.stdout.log.2")
            .exists()
            .then_some(())
    });
    assert!(!agent.path("data/logs/proc-0-0-1.stdout.log.3").exists());
    // Output written while a rotation ran is rotated at the next check (once a second).
    wait_for("the live log under the limit", || {
        (std::fs::metadata(&log).unwrap().len() <= 65536).then_some(())
    });
}
