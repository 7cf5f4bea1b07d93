//! The agent may die or be upgraded at any moment without costing a match: its games keep
//! running and the next agent adopts them.

use std::collections::BTreeSet;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};

use crate::helper::{
    AGENT, Agent, KillOnDrop, config, connect_player, entry, group_running, wait_for,
};

/// Long protection and a slow crash-loop breaker; checks every 100 ms.
const FAST: &str = "
health-check: { interval: 100ms, timeout: 500ms, failure-threshold: 3 }
timeouts: { process-ready: 5s, process-exit: 1s, player-reservation: 30s, stop-grace: 200ms, shutdown: 1s }
restart: { initial-backoff: 50ms, max-backoff: 200ms, reset-after: 1m, crash-loop-max: 20, crash-loop-window: 1m, crash-loop-cool-down: 1h }";

fn pids(processes: &[Value]) -> BTreeSet<u64> {
    processes
        .iter()
        .map(|p| p["Pid"].as_u64().unwrap())
        .collect()
}

fn player(agent: &Agent, id: &str) -> Value {
    agent.ok(json!({"Action": "DescribePlayerSessions", "PlayerSessionId": id}))["PlayerSessions"]
        [0]
    .clone()
}

fn event_number(e: &Value) -> u64 {
    e["EventId"]
        .as_str()
        .and_then(|s| s.strip_prefix("event-"))
        .and_then(|n| n.parse().ok())
        .expect("event-<n>")
}

/// A match in progress: two games, a session ACTIVE on one, a player connected through it.
struct Match {
    pids: BTreeSet<u64>,
    gss_id: String,
    ip: Value,
    port: Value,
    player_id: String,
    connection: std::net::TcpStream,
}

fn start_match(agent: &Agent) -> Match {
    let ready = agent.wait_ready_answered(2);
    let s = agent.create_session(4);
    let gss_id = s["GameServerSessionId"].as_str().unwrap().to_string();
    let active = agent.wait_session_status(&gss_id, "ACTIVE");
    // The activation is answered once saved.
    let host = ready
        .iter()
        .find(|p| p["ClientPort"] == active["Port"])
        .unwrap();
    wait_for("ActivateGameServerSession answered", || {
        agent
            .game_said(host, &format!("activated {gss_id}"))
            .then_some(())
    });
    let joined = agent.ok(json!({
        "Action": "JoinGameServerSession",
        "GameServerSessionId": gss_id,
        "PlayerId": "alice",
    }));
    let player_id = joined["PlayerSession"]["PlayerSessionId"]
        .as_str()
        .unwrap()
        .to_string();
    let port = active["Port"].as_u64().unwrap() as u16;
    let (connection, answer) = connect_player(port, &player_id);
    assert_eq!(answer, "OK");
    wait_for("player ACTIVE", || {
        (player(agent, &player_id)["Status"] == "ACTIVE").then_some(())
    });
    Match {
        pids: pids(&ready),
        gss_id,
        ip: active["IpAddress"].clone(),
        port: active["Port"].clone(),
        player_id,
        connection,
    }
}

/// The restarted agent supervises the same games, the session and player are as they were,
/// and health checks run again.
fn assert_adopted(agent: &Agent, m: &Match, last_event: u64) {
    let ready = agent.wait_ready(2);
    assert_eq!(pids(&ready), m.pids, "the same processes remain the fleet");
    let events = agent.events();
    let codes: Vec<&str> = events
        .iter()
        .map(|e| e["EventCode"].as_str().unwrap())
        .collect();
    assert!(!codes.contains(&"SERVER_PROCESS_STARTED"), "{codes:?}");
    assert_eq!(
        codes
            .iter()
            .filter(|c| **c == "SERVER_PROCESS_ADOPTED")
            .count(),
        2,
        "{codes:?}"
    );
    assert!(
        events.iter().all(|e| event_number(e) > last_event),
        "event ids continue above {last_event}"
    );
    let s = agent.session(&m.gss_id);
    assert_eq!(s["Status"], "ACTIVE");
    assert_eq!(s["IpAddress"], m.ip);
    assert_eq!(s["Port"], m.port);
    assert_eq!(s["CurrentPlayerSessionCount"], 1);
    assert_eq!(player(agent, &m.player_id)["Status"], "ACTIVE");
    let passed = |agent: &Agent| -> u64 {
        agent
            .processes()
            .iter()
            .map(|p| p["HealthChecksPassed"].as_u64().unwrap())
            .sum()
    };
    let before = passed(agent);
    wait_for("health checks after adoption", || {
        (passed(agent) >= before + 4).then_some(())
    });
}

fn last_event(agent: &Agent) -> u64 {
    agent.events().iter().map(event_number).max().unwrap_or(0)
}

#[test]
fn a_killed_agent_is_restarted_and_adopts_its_games_sessions_and_players() {
    let mut agent = Agent::start(&config(&entry("--accept-players", 2), FAST));
    let m = start_match(&agent);
    for _ in 0..3 {
        let last = last_event(&agent);
        agent.kill9();
        for pid in &m.pids {
            assert!(group_running(*pid as u32), "game {pid} outlives its agent");
        }
        agent.spawn();
        assert_adopted(&agent, &m, last);
    }

    // The game's own SDK calls reach the new agent: the player leaves.
    drop(m.connection);
    wait_for("player COMPLETED", || {
        (player(&agent, &m.player_id)["Status"] == "COMPLETED").then_some(())
    });

    // A game that dies while adopted is noticed, reported once and replaced.
    let victim = *m.pids.iter().next().unwrap();
    kill(Pid::from_raw(victim as i32), Signal::SIGKILL).unwrap();
    let crash = agent.wait_event("SERVER_PROCESS_CRASHED");
    assert_eq!(crash["Pid"], victim, "{crash}");
    assert!(
        crash["Message"].as_str().unwrap().contains("unknown"),
        "the exit status of an adopted process is not known: {crash}"
    );
    let ready = wait_for("a replacement", || {
        let ready = agent.wait_ready(2);
        (!pids(&ready).contains(&victim)).then_some(ready)
    });
    assert_eq!(agent.count("SERVER_PROCESS_CRASHED"), 1);
    assert_eq!(agent.count("SERVER_PROCESS_STARTED"), 1);

    // A graceful stop ends everything, adopted or not.
    agent.signal(Signal::SIGTERM);
    assert!(agent.wait_exit().success());
    for pid in m.pids.iter().chain(pids(&ready).iter()) {
        wait_for("every game gone", || {
            (!group_running(*pid as u32)).then_some(())
        });
    }
}

/// Installs `AGENT` at `to` the way a package manager does: a new file renamed over the old.
fn install_binary(to: &Path) {
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    let tmp = to.with_extension("new");
    std::fs::copy(AGENT, &tmp).unwrap();
    std::fs::rename(&tmp, to).unwrap();
}

#[test]
fn an_upgrade_replaces_the_binary_and_the_new_one_adopts_the_games() {
    let mut agent = Agent::start(&config(&entry("--accept-players", 2), FAST));
    let m = start_match(&agent);
    // The documented upgrade: install the new binary, then SIGQUIT (systemd restarts it).
    let installed = agent.path("bin/gse-agent");
    for _ in 0..2 {
        let last = last_event(&agent);
        install_binary(&installed);
        agent.signal(Signal::SIGQUIT);
        assert!(agent.wait_exit().success(), "{}", agent.stderr());
        for pid in &m.pids {
            assert!(
                group_running(*pid as u32),
                "game {pid} outlives the upgrade"
            );
        }
        agent.spawn_exe(&installed);
        assert_adopted(&agent, &m, last);
    }
    drop(m.connection);
    agent.signal(Signal::SIGTERM);
    assert!(agent.wait_exit().success());
    for pid in &m.pids {
        wait_for("every game gone", || {
            (!group_running(*pid as u32)).then_some(())
        });
    }
}

#[test]
fn a_recycled_pid_is_never_signalled() {
    let mut agent = Agent::start(&config(&entry("", 1), FAST));
    // Answered, so saved: the store has the game's record to rewrite.
    let ready = agent.wait_ready_answered(1);
    let game = ready[0]["Pid"].as_u64().unwrap() as u32;
    agent.kill9();
    // The game dies while no agent runs; a stranger now holds a pid the store records.
    kill(Pid::from_raw(game as i32), Signal::SIGKILL).unwrap();
    wait_for("the game gone", || (!group_running(game)).then_some(()));
    let stranger = KillOnDrop(
        Command::new("sleep")
            .arg("60")
            .process_group(0)
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let stranger_pid = stranger.0.id();
    rewrite_recorded_pid(&agent.path("data/state.redb"), game, stranger_pid);
    agent.spawn();
    let lost = agent.wait_event("SERVER_PROCESS_CRASHED");
    assert!(
        lost["Message"].as_str().unwrap().contains("unknown"),
        "{lost}"
    );
    let ready = agent.wait_ready(1);
    assert_ne!(ready[0]["Pid"].as_u64().unwrap() as u32, stranger_pid);
    agent.signal(Signal::SIGTERM);
    assert!(agent.wait_exit().success());
    assert!(
        group_running(stranger_pid),
        "the stranger that reused a recorded pid was never signalled"
    );
}

/// Points the stored process record of `from` at the pid `to` (what pid reuse looks like to
/// the next agent: same number, another process).
fn rewrite_recorded_pid(store: &Path, from: u32, to: u32) {
    let store = gse_agent::agent::store::StateStore::open(store).unwrap();
    let records = store.load().unwrap();
    let (key, value) = records
        .iter()
        .find(|(k, v)| {
            k.starts_with("proc/")
                && String::from_utf8_lossy(v).contains(&format!("\"pid\":{from},"))
        })
        .expect("the game's record");
    let text = String::from_utf8(value.clone())
        .unwrap()
        .replace(&format!("\"pid\":{from},"), &format!("\"pid\":{to},"));
    let mut changed = records.clone();
    changed.insert(key.clone(), text.into_bytes());
    store.spawn_writer(records.clone()).finish(changed);
}

#[test]
fn a_game_no_saved_record_names_is_stopped_at_the_next_start() {
    let mut agent = Agent::start(&config(&entry("", 1), FAST));
    agent.wait_ready_answered(1);
    agent.kill9();
    // What a launch looks like when the agent died before saving it: a game with this agent's
    // tag that no record names. Beside it, the same tag for another game root (another agent).
    let game_root = agent.path("game");
    let tagged = |root: &Path| {
        KillOnDrop(
            Command::new("sleep")
                .arg("60")
                .env_clear()
                .env("GSE_FLEET_ID", "fleet-test")
                .env("GSE_INSTANCE_ID", "ins-test")
                .env("GSE_GAME_ROOT", root)
                .env("GSE_PROCESS_ID", "proc-0-0-99")
                .process_group(0)
                .stdin(Stdio::null())
                .spawn()
                .unwrap(),
        )
    };
    let stray = tagged(&game_root);
    let other = tagged(Path::new("/srv/another-agent/game"));
    agent.spawn();
    agent.wait_ready(1);
    let stray_pid = stray.0.id();
    wait_for("the stray stopped", || {
        (!group_running(stray_pid)).then_some(())
    });
    assert!(
        group_running(other.0.id()),
        "another agent's game is not touched"
    );
    assert_eq!(
        agent.count("SERVER_PROCESS_STARTED"),
        0,
        "the recorded game was adopted"
    );
}

#[test]
fn a_game_behind_a_wrapper_script_that_execs_its_server_is_adopted() {
    let yaml = config(
        "    - LaunchPath: /local/game/run.sh\n      ConcurrentExecutions: 1\n",
        FAST,
    );
    let mut agent = Agent::start_with(&yaml, |game| {
        let script = game.join("run.sh");
        std::fs::write(
            &script,
            format!("#!/bin/sh\nexec {} \"$@\"\n", crate::helper::FAKE_SERVER),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    });
    let pid = agent.wait_ready_answered(1)[0]["Pid"].as_u64().unwrap();
    agent.kill9();
    agent.spawn();
    let ready = agent.wait_ready(1);
    assert_eq!(ready[0]["Pid"], pid, "the same game");
    assert_eq!(agent.count("SERVER_PROCESS_ADOPTED"), 1);
    assert_eq!(agent.count("SERVER_PROCESS_STARTED"), 0);
}
