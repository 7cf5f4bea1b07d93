//! Descendants that leave the game's process group (setsid) do not outlive the game: the agent
//! is their subreaper, finds them by the game's environment tag, kills and reaps them.

use nix::sys::signal::Signal;

use crate::helper::{Agent, config, entry, wait_for};

/// The timings of `supervision.rs`.
const FAST: &str = "
health-check: { interval: 100ms, timeout: 200ms, failure-threshold: 2 }
timeouts: { process-ready: 2s, process-exit: 300ms, player-reservation: 500ms, stop-grace: 200ms, shutdown: 1s }
protection: { policy: NoProtection, no-protection-grace: 300ms }
restart: { initial-backoff: 50ms, max-backoff: 200ms, reset-after: 1m, crash-loop-max: 20, crash-loop-window: 1m, crash-loop-cool-down: 1h }";

/// `(state, session id, start ticks)` of a process, from `/proc/<pid>/stat`.
fn stat(pid: u32) -> Option<(char, u32, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = text[text.rfind(')')? + 1..].split_whitespace().collect();
    Some((
        fields[0].chars().next()?,
        fields[3].parse().ok()?,
        fields[19].parse().ok()?,
    ))
}

/// One escaped grandchild: its pid and start time.
struct Escapee {
    pid: u32,
    start: u64,
}

impl Escapee {
    /// Gone for good: no process with its pid and start time, not even a zombie.
    fn gone(&self) -> bool {
        stat(self.pid).is_none_or(|(_, _, start)| start != self.start)
    }

    /// Not running any more (a zombie left to init counts as not running).
    fn dead(&self) -> bool {
        stat(self.pid).is_none_or(|(state, _, start)| start != self.start || state == 'Z')
    }
}

/// The ready game's pid and its two setsid grandchildren, checked to run in their own session.
fn game_and_escapees(agent: &Agent) -> (u32, Vec<Escapee>) {
    let pid = agent.wait_ready_answered(1)[0]["Pid"].as_u64().unwrap() as u32;
    let log = agent.path("data/logs/proc-0-0-1.stdout.log");
    let pids: Vec<u32> = wait_for("two setsid-child lines", || {
        let text = std::fs::read_to_string(&log).ok()?;
        let pids: Vec<u32> = text
            .lines()
            .filter_map(|l| l.strip_prefix("setsid-child: ")?.parse().ok())
            .collect();
        (pids.len() == 2).then_some(pids)
    });
    let escapees: Vec<Escapee> = pids
        .into_iter()
        .map(|p| {
            // Running, and out of the game's session (so out of its group) once setsid ran.
            let start = wait_for("grandchild in its own session", || {
                let (state, sid, start) = stat(p)?;
                (state != 'Z' && sid == p).then_some(start)
            });
            Escapee { pid: p, start }
        })
        .collect();
    (pid, escapees)
}

#[test]
fn escaped_grandchildren_die_with_a_crashed_game() {
    let agent = Agent::start(&config(&entry("--fork-setsid 2", 1), FAST));
    let (pid, escapees) = game_and_escapees(&agent);
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), Signal::SIGKILL).unwrap();
    let crash = agent.wait_event("SERVER_PROCESS_CRASHED");
    assert_eq!(crash["Pid"], pid);
    for e in &escapees {
        wait_for("escaped grandchild killed and reaped", || {
            e.gone().then_some(())
        });
    }
    // The replacement's own grandchildren are not touched.
    agent.wait_events("SERVER_PROCESS_STARTED", 2);
}

#[test]
fn escaped_grandchildren_die_with_a_game_that_ends_its_match() {
    let agent = Agent::start(&config(
        &entry("--fork-setsid 2 --match-duration 10ms", 1),
        FAST,
    ));
    let (_, escapees) = game_and_escapees(&agent);
    assert!(escapees.iter().all(|e| !e.dead()));
    agent.create_session(2);
    let ended = agent.wait_event("SERVER_PROCESS_ENDED");
    assert_eq!(ended["Exit"]["ExitCode"], 0);
    for e in &escapees {
        wait_for("escaped grandchild killed and reaped", || {
            e.gone().then_some(())
        });
    }
}

#[test]
fn escaped_grandchildren_die_when_the_agent_stops() {
    let mut agent = Agent::start(&config(&entry("--fork-setsid 2", 1), FAST));
    let (_, escapees) = game_and_escapees(&agent);
    agent.signal(Signal::SIGTERM);
    assert_eq!(agent.wait_exit().code(), Some(0));
    for e in &escapees {
        // Their zombies may be left to init once the agent is gone.
        wait_for("escaped grandchild killed", || e.dead().then_some(()));
    }
}

#[test]
fn a_game_outlives_a_killed_agent_and_keeps_writing_its_log() {
    let mut agent = Agent::start(&config(&entry("--fork-setsid 1 --ignore-sigterm", 1), FAST));
    // Killed only once the game got its ProcessReady answer (it exits if that call fails).
    let pid = agent.wait_ready_answered(1)[0]["Pid"].as_u64().unwrap() as u32;
    let (_, start) = wait_for("game stat", || stat(pid).map(|(_, _, s)| ((), s)));
    agent.kill9();
    let game = Escapee { pid, start };
    assert!(!game.dead(), "the game died with its agent");
    // It writes after the agent is gone: into its file, not a pipe that would SIGPIPE it.
    let raw = nix::unistd::Pid::from_raw(pid as i32);
    nix::sys::signal::kill(raw, Signal::SIGTERM).unwrap();
    let log = agent.path("data/logs/proc-0-0-1.stdout.log");
    wait_for("output written after the agent died", || {
        std::fs::read_to_string(&log)
            .ok()?
            .contains("SIGTERM ignored")
            .then_some(())
    });
    assert!(!game.dead(), "the game died writing its output");
    // Clean up what the dead agent left behind.
    let _ = nix::sys::signal::killpg(raw, Signal::SIGKILL);
    if let Ok(text) = std::fs::read_to_string(&log) {
        for p in text
            .lines()
            .filter_map(|l| l.strip_prefix("setsid-child: ")?.parse::<i32>().ok())
        {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), Signal::SIGKILL);
        }
    }
}

#[test]
fn escaped_grandchildren_of_a_game_that_died_while_no_agent_ran_are_stopped_at_the_next_start() {
    let mut agent = Agent::start(&config(&entry("--fork-setsid 2", 1), FAST));
    let (pid, escapees) = game_and_escapees(&agent);
    agent.kill9();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), Signal::SIGKILL).unwrap();
    wait_for("the game gone", || {
        stat(pid)
            .is_none_or(|(state, _, _)| state == 'Z')
            .then_some(())
    });
    for e in &escapees {
        assert!(!e.dead(), "the grandchildren outlive both");
    }
    agent.spawn();
    agent.wait_event("SERVER_PROCESS_CRASHED");
    for e in &escapees {
        wait_for("escaped grandchild of a lost game stopped", || {
            e.dead().then_some(())
        });
    }
}
