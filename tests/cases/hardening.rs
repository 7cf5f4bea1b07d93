//! Nothing on the host knocks the agent over: closed output, a low descriptor limit.

use std::process::{Command, Stdio};

use nix::sys::signal::Signal;

use crate::helper::{AGENT, Agent, config, entry, group_running, wait_for};

/// A reader of the agent's stdout and stderr that went away (a pager that quit, `| head`)
/// costs log lines, never the agent: it keeps supervising and honours SIGTERM.
#[test]
fn a_closed_stdout_and_stderr_do_not_kill_the_agent() {
    let mut agent = Agent::prepared(&config(&entry("", 1), ""), |_| {});
    let mut child = Command::new(AGENT)
        .args(["run", "--config"])
        .arg(agent.path("agent.yaml"))
        .env("RUST_LOG", "debug")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Both readers go away at once.
    drop(child.stdout.take());
    drop(child.stderr.take());
    agent.attach(child);
    let game = wait_for("a ready game, logged all along", || {
        agent
            .processes()
            .into_iter()
            .find(|p| p["Status"] == "ACTIVE")
            .and_then(|p| p["Pid"].as_u64())
    });
    agent.signal(Signal::SIGTERM);
    let status = agent.wait_exit();
    assert!(status.success(), "{status}");
    assert!(!group_running(game as u32), "the game was stopped");
}

/// The soft limit on open files is raised to the hard one at start: clients holding
/// connections cannot take the descriptors a game launch needs as early as 1024 would.
#[test]
fn the_open_files_limit_is_raised_to_the_hard_limit() {
    let mut agent = Agent::prepared(&config(&entry("", 1), ""), |_| {});
    let child = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -Sn 256 && exec {AGENT} run --config {}",
            agent.path("agent.yaml").display()
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    agent.attach(child);
    let pid = agent.child.as_ref().unwrap().id();
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let fields: Vec<&str> = line.split_whitespace().collect();
    let (soft, hard) = (fields[3], fields[4]);
    assert_ne!(soft, "256", "{line}");
    assert_eq!(soft, hard, "{line}");
}
