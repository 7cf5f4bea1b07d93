//! Disk faults and corruption: a full disk loses no lifecycle event and the game's output says
//! what it dropped; a corrupt outbox or state file is moved aside, loudly, and supervision goes
//! on.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use gse_agent::upstream_proto as up;
use nix::sys::signal::Signal;
use serde_json::Value;

use super::upstream::{assert_contiguous, upstream_yaml};
use crate::helper::control_plane::ControlPlaneFake;
use crate::helper::{Agent, Tmpfs, config, entry, group_running, wait_for};

const RESTART: &str = "restart: { initial-backoff: 50ms, max-backoff: 200ms, reset-after: 1m, crash-loop-max: 100000, crash-loop-window: 1m, crash-loop-cool-down: 1h }";

/// (code, message, process id) of each event, counted.
fn tally<'a>(events: impl Iterator<Item = (&'a str, &'a str, &'a str)>) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for (code, message, process) in events {
        *out.entry(format!("{code} | {process} | {message}"))
            .or_default() += 1;
    }
    out
}

/// The agent's own record of its events, tallied.
fn agent_tally(events: &[Value]) -> BTreeMap<String, usize> {
    tally(events.iter().map(|e| {
        (
            e["EventCode"].as_str().unwrap(),
            e["Message"].as_str().unwrap(),
            e["ProcessId"].as_str().unwrap_or(""),
        )
    }))
}

/// Everything the control plane received, tallied.
fn upstream_tally(events: &[up::Event]) -> BTreeMap<String, usize> {
    tally(
        events
            .iter()
            .map(|e| (e.code.as_str(), e.message.as_str(), e.process_id.as_str())),
    )
}

/// The stdout logs of the processes of entry 0.
fn spewer_logs(agent: &Agent) -> Vec<PathBuf> {
    std::fs::read_dir(agent.path("data/logs"))
        .map(|d| {
            d.filter_map(|e| Some(e.ok()?.path()))
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("proc-0-") && n.ends_with(".stdout.log"))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The counted-drop line, if a spewer's output has one.
fn dropped_line(agent: &Agent) -> Option<String> {
    spewer_logs(agent).into_iter().find_map(|p| {
        let bytes = std::fs::read(p).ok()?;
        String::from_utf8_lossy(&bytes)
            .lines()
            .find(|l| l.starts_with("[gse-agent] ") && l.contains(" bytes of output dropped: "))
            .map(str::to_string)
    })
}

#[test]
fn a_full_disk_loses_no_lifecycle_event_and_the_output_says_what_was_dropped() {
    // No acks: the outbox only grows, so its commits need new pages of the full disk.
    let cp = ControlPlaneFake::start(None, false);
    // The spewer's log passes 8 MiB on a 16 MiB disk: its first rotation cannot copy 8 MiB
    // (the disk has less room than that), so the agent truncates and counts. The crashers keep
    // the lifecycle busy throughout.
    let servers = entry("--spew-rate 3000000", 1) + &entry("--crash-at after:200ms", 3);
    let yaml = config(
        &servers,
        &format!(
            "{}\n{RESTART}\nlogs: {{ max-file-bytes: 8388608, keep-files: 1 }}",
            upstream_yaml(&cp, "")
        ),
    );
    let mut agent = Agent::prepared(&yaml, |_| {});
    let Some(fs) = Tmpfs::mount(&agent.path("data"), "16m") else {
        return;
    };
    agent.spawn();
    agent.wait_event("SERVER_PROCESS_CRASHED");

    let line = wait_for("the spewer's output says what was dropped", || {
        dropped_line(&agent)
    });
    assert!(line.ends_with("No space left on device"), "{line}");
    // The truncation just made room; now the disk is full for good: the spewer's log is far
    // below its limit, so nothing frees space until the test does.
    let filler = fs.fill("filler");
    let fault = "cannot write events to the outbox";
    wait_for("an outbox write refused by the full disk", || {
        agent.stderr().contains(fault).then_some(())
    });
    // Lifecycle goes on while the disk refuses.
    let crashes = agent.count("SERVER_PROCESS_CRASHED");
    wait_for("more crashes while the disk is full", || {
        (agent.count("SERVER_PROCESS_CRASHED") >= crashes + 3).then_some(())
    });

    // Room again.
    std::fs::remove_file(filler).unwrap();
    fs.resize("64m");
    let emitted = agent.events();
    let want = agent_tally(&emitted);
    let got = wait_for("every event the agent emitted at the control plane", || {
        let events = cp.events();
        let have = upstream_tally(&events);
        want.iter()
            .all(|(k, n)| have.get(k).is_some_and(|h| h >= n))
            .then_some(events)
    });
    assert_contiguous(&got);
    let rec = cp.rec.lock().unwrap();
    let epoch = rec.connections[0].0.epoch;
    assert!(rec.connections.iter().all(|(h, _)| h.epoch == epoch));
    drop(rec);
    assert_eq!(
        agent.count("UPSTREAM_EVENTS_LOST"),
        0,
        "nothing was dropped"
    );
    assert!(
        !got.iter().any(|e| e.code == "UPSTREAM_EVENTS_LOST"),
        "nothing was dropped"
    );

    agent.signal(Signal::SIGTERM);
    assert!(agent.wait_exit().success(), "{}", agent.stderr());
    assert!(!agent.stderr().contains("giving up"), "{}", agent.stderr());
}

/// An agent with one game and a control plane that keeps everything (no acks), stopped with
/// SIGQUIT so that its game runs on for the next agent; returns the agent, the game's pid and
/// the outbox's epoch.
fn stopped_agent_with_a_game(cp: &ControlPlaneFake) -> (Agent, u32, u64) {
    let yaml = config(
        &entry("", 1),
        &format!("{}\n{RESTART}", upstream_yaml(cp, "")),
    );
    let mut agent = Agent::start(&yaml);
    let pid = agent.wait_ready_answered(1)[0]["Pid"].as_u64().unwrap() as u32;
    cp.wait_event("SERVER_PROCESS_READY");
    let epoch = cp.rec.lock().unwrap().connections[0].0.epoch;
    agent.signal(Signal::SIGQUIT);
    assert!(agent.wait_exit().success(), "{}", agent.stderr());
    assert!(group_running(pid), "the game outlives its agent");
    (agent, pid, epoch)
}

/// The files in `dir` whose names start with `prefix`.
fn named(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| Some(e.ok()?.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix))
        })
        .collect()
}

/// Starts the agent again on a damaged outbox: it adopts its game, reports the corruption
/// first in a new epoch and resends nothing from the old one. Returns the report's message.
fn restart_survives_a_damaged_outbox(
    mut agent: Agent,
    cp: &ControlPlaneFake,
    pid: u32,
    old_epoch: u64,
) -> String {
    let restarted_ms = gse_agent::api::time::unix_ms(std::time::SystemTime::now());
    agent.spawn();
    let adopted = agent.wait_event("SERVER_PROCESS_ADOPTED");
    assert_eq!(adopted["Pid"], pid, "{adopted}");
    let report = agent.wait_event("UPSTREAM_OUTBOX_CORRUPT");
    let message = report["Message"].as_str().unwrap().to_string();
    let kept = named(&agent.path("data"), "outbox.redb.corrupt-");
    assert_eq!(kept.len(), 1, "the corrupt file is kept aside");
    assert!(
        message.contains(&kept[0].display().to_string()),
        "{message}"
    );
    // The control plane hears of it first thing in the new epoch, and nothing older.
    let (epoch, events) = wait_for("the report upstream", || {
        let rec = cp.rec.lock().unwrap();
        let (hello, events) = rec.connections.iter().rev().find(|(h, e)| {
            h.epoch != old_epoch && e.iter().any(|e| e.code == "UPSTREAM_OUTBOX_CORRUPT")
        })?;
        Some((hello.epoch, events.clone()))
    });
    assert_ne!(epoch, old_epoch);
    assert_eq!(events[0].code, "UPSTREAM_OUTBOX_CORRUPT");
    assert_eq!(events[0].sequence, 1);
    assert_contiguous(&events);
    for e in &events {
        assert!(
            e.time_unix_ms as u64 >= restarted_ms,
            "an old event under the new epoch: {e:?}"
        );
    }
    // Supervision goes on: the game is healthy and a graceful stop ends it.
    agent.wait_ready(1);
    agent.signal(Signal::SIGTERM);
    assert!(agent.wait_exit().success(), "{}", agent.stderr());
    message
}

/// Overwrites 64 bytes at `offset` with garbage.
fn scribble(path: &Path, offset: u64) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(&[0xA5; 64], offset).unwrap();
}

/// The first of `offsets` where garbage makes the file corrupt (the page is in use); found on
/// a copy with the agent's own check.
fn live_page(path: &Path, offsets: impl Iterator<Item = u64>) -> u64 {
    let copy = path.with_extension("probe");
    let found = offsets.into_iter().find(|offset| {
        std::fs::copy(path, &copy).unwrap();
        scribble(&copy, *offset);
        matches!(
            gse_agent::agent::dbfile::open(&copy, 1 << 20),
            Err(gse_agent::agent::dbfile::DbFileError::Corrupt { .. })
        )
    });
    std::fs::remove_file(&copy).unwrap();
    found.unwrap_or_else(|| panic!("no page of {} in use", path.display()))
}

fn outbox_len(agent: &Agent) -> u64 {
    std::fs::metadata(agent.path("data/outbox.redb"))
        .unwrap()
        .len()
}

#[test]
fn garbage_in_the_outbox_header_is_survived_loudly() {
    let cp = ControlPlaneFake::start(None, false);
    let (agent, pid, epoch) = stopped_agent_with_a_game(&cp);
    scribble(&agent.path("data/outbox.redb"), 0);
    let message = restart_survives_a_damaged_outbox(agent, &cp, pid, epoch);
    assert!(message.contains("Not a redb database"), "{message}");
}

#[test]
fn garbage_in_a_middle_page_of_the_outbox_is_survived_loudly() {
    let cp = ControlPlaneFake::start(None, false);
    let (agent, pid, epoch) = stopped_agent_with_a_game(&cp);
    let path = agent.path("data/outbox.redb");
    let len = outbox_len(&agent);
    let page = live_page(
        &path,
        (len / 4..len * 3 / 4).step_by(4096).map(|o| o & !4095),
    );
    scribble(&path, page);
    restart_survives_a_damaged_outbox(agent, &cp, pid, epoch);
}

#[test]
fn garbage_in_the_last_pages_of_the_outbox_is_survived_loudly() {
    let cp = ControlPlaneFake::start(None, false);
    let (agent, pid, epoch) = stopped_agent_with_a_game(&cp);
    let path = agent.path("data/outbox.redb");
    let len = outbox_len(&agent);
    let page = live_page(&path, (1..len / 4096).rev().map(|n| n * 4096));
    scribble(&path, page);
    restart_survives_a_damaged_outbox(agent, &cp, pid, epoch);
}

#[test]
fn a_lost_epoch_record_starts_a_new_epoch_and_resends_nothing_old() {
    use redb::ReadableDatabase as _;
    let cp = ControlPlaneFake::start(None, false);
    let (agent, pid, epoch) = stopped_agent_with_a_game(&cp);
    {
        let meta: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("meta");
        let db = redb::Database::open(agent.path("data/outbox.redb")).unwrap();
        let stored = db
            .begin_read()
            .unwrap()
            .open_table(meta)
            .unwrap()
            .get("epoch")
            .unwrap()
            .map(|v| v.value());
        assert_eq!(stored, Some(epoch));
        let txn = db.begin_write().unwrap();
        txn.open_table(meta).unwrap().remove("epoch").unwrap();
        txn.commit().unwrap();
    }
    let message = restart_survives_a_damaged_outbox(agent, &cp, pid, epoch);
    assert!(message.contains("epoch record is missing"), "{message}");
}

#[test]
fn a_corrupt_state_file_is_moved_aside_and_its_games_are_stopped_as_strays() {
    let yaml = config(&entry("", 1), RESTART);
    let mut agent = Agent::start(&yaml);
    let pid = agent.wait_ready_answered(1)[0]["Pid"].as_u64().unwrap() as u32;
    agent.signal(Signal::SIGQUIT);
    assert!(agent.wait_exit().success(), "{}", agent.stderr());
    scribble(&agent.path("data/state.redb"), 0);
    agent.spawn();
    // Nothing says which slot and session the game held: it is stopped, and a new one runs.
    wait_for("the unadoptable game stopped", || {
        (!group_running(pid)).then_some(())
    });
    let ready = agent.wait_ready(1);
    assert_ne!(ready[0]["Pid"].as_u64().unwrap() as u32, pid);
    assert_eq!(agent.count("SERVER_PROCESS_ADOPTED"), 0);
    assert_eq!(named(&agent.path("data"), "state.redb.corrupt-").len(), 1);
    assert!(
        agent.stderr().contains("the saved state is corrupt"),
        "{}",
        agent.stderr()
    );
    agent.signal(Signal::SIGTERM);
    assert!(agent.wait_exit().success(), "{}", agent.stderr());
}
