//! Nothing on the host knocks the agent over: closed output, planted links.

use std::process::{Command, Stdio};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};

use crate::helper::{AGENT, FAKE_SERVER, KillOnDrop, config, entry, group_running, wait_for};

/// A directory with agent.yaml for one fake game, for tests that start the agent their own way.
fn agent_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("game")).unwrap();
    std::os::unix::fs::symlink(FAKE_SERVER, dir.path().join("game/server")).unwrap();
    std::fs::write(dir.path().join("agent.yaml"), config(&entry("", 1), "")).unwrap();
    dir
}

/// A reader of the agent's stdout and stderr that went away (a pager that quit, `| head`)
/// costs log lines, never the agent: it keeps supervising and honours SIGTERM.
#[test]
fn a_closed_stdout_and_stderr_do_not_kill_the_agent() {
    let dir = agent_dir();
    let mut agent = KillOnDrop(
        Command::new(AGENT)
            .args(["run", "--config"])
            .arg(dir.path().join("agent.yaml"))
            .env("RUST_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    // Both readers go away at once.
    drop(agent.0.stdout.take());
    drop(agent.0.stderr.take());
    let endpoints = dir.path().join("data/endpoints.json");
    let v: Value = wait_for("endpoints.json", || {
        assert!(agent.0.try_wait().unwrap().is_none(), "the agent died");
        serde_json::from_str(&std::fs::read_to_string(&endpoints).ok()?).ok()
    });
    let capi = v["CapiAddress"].as_str().unwrap().parse().unwrap();
    let processes = || -> Vec<Value> {
        crate::helper::capi_at(capi, &json!({"Action": "DescribeServerProcesses"}))
            ["ServerProcesses"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    let game = wait_for("a ready game, logged all along", || {
        processes()
            .into_iter()
            .find(|p| p["Status"] == "ACTIVE")
            .and_then(|p| p["Pid"].as_u64())
    });
    kill(Pid::from_raw(agent.0.id() as i32), Signal::SIGTERM).unwrap();
    let status = wait_for("the agent's exit", || agent.0.try_wait().unwrap());
    assert!(status.success(), "{status}");
    assert!(!group_running(game as u32), "the game was stopped");
}

/// The soft limit on open files is raised to the hard one at start: clients holding
/// connections cannot take the descriptors a game launch needs as early as 1024 would.
#[test]
fn the_open_files_limit_is_raised_to_the_hard_limit() {
    let dir = agent_dir();
    let mut agent = KillOnDrop(
        Command::new("sh")
            .arg("-c")
            .arg(format!(
                "ulimit -Sn 256 && exec {AGENT} run --config {}",
                dir.path().join("agent.yaml").display()
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let endpoints = dir.path().join("data/endpoints.json");
    wait_for("endpoints.json", || {
        assert!(agent.0.try_wait().unwrap().is_none(), "the agent died");
        std::fs::metadata(&endpoints).ok()
    });
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", agent.0.id())).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let fields: Vec<&str> = line.split_whitespace().collect();
    let (soft, hard) = (fields[3], fields[4]);
    assert_ne!(soft, "256", "{line}");
    assert_eq!(soft, hard, "{line}");
    kill(Pid::from_raw(agent.0.id() as i32), Signal::SIGTERM).unwrap();
    wait_for("the agent's exit", || agent.0.try_wait().unwrap());
}
