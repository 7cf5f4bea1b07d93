//! Launches, restarts and the crash-loop breaker, launch failures, ready timeouts and health checks.

use super::*;

#[tokio::test(start_paused = true)]
async fn start_launches_concurrent_executions_of_every_entry() {
    let h = Harness::new();
    assert_eq!(h.pids().len(), 3);
    assert_eq!(h.count(EventCode::ServerProcessStarted), 3);
    let ids: Vec<_> = h.fleet.procs.values().map(|p| p.id.clone()).collect();
    for want in ["proc-0-0-1", "proc-0-1-1", "proc-1-0-1"] {
        assert!(ids.contains(&want.to_string()), "{ids:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn crash_relaunches_at_once_then_backs_off_and_resets_after_a_stable_run() {
    let mut h = Harness::new();
    let pid = h.pids()[0];
    h.exit(pid, 3);
    assert_eq!(h.count(EventCode::ServerProcessCrashed), 1);
    assert_eq!(h.pids().len(), 3, "first crash: immediate relaunch");
    let pid = *h.pids().last().unwrap();
    h.exit(pid, 3);
    assert_eq!(h.pids().len(), 2, "second crash waits initial-backoff");
    h.advance(Duration::from_millis(999));
    assert_eq!(h.pids().len(), 2);
    h.advance(Duration::from_millis(1));
    assert_eq!(h.pids().len(), 3);
    // A run longer than reset-after resets the slot's backoff.
    let pid = *h.pids().last().unwrap();
    h.advance(Duration::from_secs(31));
    h.exit(pid, 3);
    assert_eq!(h.pids().len(), 3, "backoff was reset");
    let crash = h
        .events
        .iter()
        .find(|e| e.event_code == EventCode::ServerProcessCrashed)
        .unwrap();
    assert_eq!(crash.exit.as_ref().unwrap().exit_code, Some(3));
}

#[tokio::test(start_paused = true)]
async fn crash_loop_breaker_pauses_the_entry_with_one_event() {
    let mut h = Harness::new();
    // Entry 1 (one slot) crashes repeatedly.
    for _ in 0..6 {
        let pid = h
            .fleet
            .procs
            .values()
            .find(|p| h.fleet.slots[p.slot].entry == 1)
            .map(|p| p.identity.pid);
        if let Some(pid) = pid {
            h.exit(pid, 1);
        }
        h.advance(Duration::from_secs(8));
    }
    assert_eq!(h.count(EventCode::ServerProcessCrashLoop), 1);
    // Ready timeouts (the test never calls ProcessReady) count as failures too.
    let failures = h.count(EventCode::ServerProcessCrashed)
        + h.count(EventCode::ServerProcessProcessReadyTimeout);
    assert_eq!(
        failures,
        4,
        "the breaker trips at crash-loop-max: {:?}",
        h.codes()
    );
    h.advance(Duration::from_secs(60));
    assert_eq!(h.pids().len(), 2, "entry 1 is paused");
    h.advance(Duration::from_secs(60));
    assert_eq!(h.count(EventCode::ServerProcessCrashLoopEnded), 1);
    let slots: Vec<_> = h
        .fleet
        .procs
        .values()
        .map(|p| (p.id.clone(), p.slot))
        .collect();
    assert_eq!(
        h.pids().len(),
        3,
        "entry 1 launches again: {slots:?} {:?}",
        h.codes()
    );
}

/// A harness running one entry of 50 slots (crash-loop-max is 4).
fn fifty_slots() -> Harness {
    let mut h = Harness::new();
    let yaml = CONFIG
        .replace("ConcurrentExecutions: 2", "ConcurrentExecutions: 50")
        .replace(
            "    - LaunchPath: /local/game/b\n      ConcurrentExecutions: 1\n",
            "",
        );
    let cfg = config::parse(&yaml, "test.yaml", Path::new("/srv")).unwrap();
    h.fleet = Fleet::new(Arc::new(cfg), Clock::read());
    h.fleet.start();
    h.events.clear();
    h.settle();
    assert_eq!(h.pids().len(), 50);
    h
}

/// The live pid of `slot`, if any.
fn pid_of_slot(h: &Harness, slot: usize) -> Option<u32> {
    h.fleet
        .procs
        .values()
        .find(|p| p.slot == slot)
        .map(|p| p.identity.pid)
}

#[tokio::test(start_paused = true)]
async fn many_slots_failing_once_at_the_same_instant_all_relaunch() {
    let mut h = fifty_slots();
    let old = h.pids();
    for pid in &old {
        h.ready(*pid);
    }
    for pid in &old {
        h.exit_with(
            *pid,
            ExitInfo {
                signal: Some(nix::sys::signal::Signal::SIGKILL as i32),
                ..Default::default()
            },
        );
    }
    assert_eq!(h.count(EventCode::ServerProcessCrashed), 50);
    assert_eq!(
        h.count(EventCode::ServerProcessCrashLoop),
        0,
        "{:?}",
        h.codes()
    );
    // Every slot relaunched at once (a first failure relaunches immediately).
    assert_eq!(h.count(EventCode::ServerProcessStarted), 100);
    let new = h.pids();
    assert_eq!(new.len(), 50);
    assert!(new.iter().all(|p| !old.contains(p)), "{new:?}");
}

#[tokio::test(start_paused = true)]
async fn a_few_slots_failing_repeatedly_among_many_trip_the_breaker_once() {
    let mut h = fifty_slots();
    for pid in h.pids() {
        h.ready(pid);
    }
    // Slots 0..3 crash over and over; the 47 others run.
    for _ in 0..5 {
        for slot in 0..3 {
            if let Some(pid) = pid_of_slot(&h, slot) {
                h.exit(pid, 1);
            }
        }
        h.advance(Duration::from_millis(1500));
    }
    assert_eq!(
        h.count(EventCode::ServerProcessCrashLoop),
        1,
        "{:?}",
        h.codes()
    );
    let trip = h
        .events
        .iter()
        .find(|e| e.event_code == EventCode::ServerProcessCrashLoop)
        .unwrap();
    assert!(
        trip.message
            .contains("4 failures of 2 repeatedly failing slot(s)"),
        "{}",
        trip.message
    );
    // Tripped at the second failure of slot 1; slot 2's second failure came while paused.
    assert_eq!(
        h.count(EventCode::ServerProcessCrashed),
        6,
        "{:?}",
        h.codes()
    );
    assert_eq!(h.pids().len(), 47, "the failing slots are paused");
}

/// The launches among `effects`: (slot, serial, process id).
fn launches(effects: &[Effect]) -> Vec<(usize, u64, String)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Launch {
                slot,
                serial,
                process_id,
                ..
            } => Some((*slot, *serial, process_id.clone())),
            _ => None,
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_missing_launch_path_is_retried_with_the_backoff_counted_and_paused() {
    let cfg = config::parse(CONFIG, "test.yaml", Path::new("/srv")).unwrap();
    let mut fleet = Fleet::new(Arc::new(cfg), Clock::read());
    let t0 = Instant::now();
    let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    fleet.set_clock(Clock { now: t0, wall });
    fleet.start();
    let first = launches(&fleet.take_effects());
    // Entry b (slot 2) starts; entry a's file is missing (slots 0 and 1).
    let (b_slot, b_serial, b_id) = first.iter().find(|l| l.0 == 2).cloned().unwrap();
    fleet.spawned(b_slot, b_serial, b_id, identity(500), t0);
    let missing = "launch path /srv/game/a does not exist";
    let fail = |fleet: &mut Fleet, launches: Vec<(usize, u64, String)>, now| {
        for (slot, _, id) in launches.into_iter().filter(|l| l.0 < 2) {
            fleet.spawn_failed(slot, id, true, missing.into(), now);
        }
        fleet.take_effects()
    };
    // The first relaunch is immediate, as for a crash...
    let effects = fail(&mut fleet, first, t0);
    let invalid = |effects: &[Effect]| {
        effects
            .iter()
            .filter(|e| matches!(e, Effect::Emit(ev) if ev.event_code == EventCode::ServerProcessInvalidPath))
            .count()
    };
    assert_eq!(invalid(&effects), 1, "two slots of one entry: one event");
    let again = launches(&effects);
    assert_eq!(again.len(), 2, "{effects:?}");
    // ...the second failure of each slot waits the backoff, and 4 repeated failures trip the
    // breaker: the entry pauses for the cool-down.
    let effects = fail(&mut fleet, again, t0);
    assert_eq!(
        invalid(&effects),
        0,
        "reported once until a launch succeeds"
    );
    assert!(launches(&effects).is_empty(), "{effects:?}");
    assert!(effects.iter().any(
        |e| matches!(e, Effect::Emit(ev) if ev.event_code == EventCode::ServerProcessCrashLoop)
    ));
    let s = status(&mut fleet, t0);
    assert_eq!(s.counters.launch_failure_cnt, 4);
    assert_eq!(s.counters.process_cnt, 1);
    assert_eq!(s.counters.desired_process_cnt, 3);
    assert_eq!(s.counters.paused_entry_cnt, 1);
    let a = &s.entries[0];
    assert_eq!((a.desired, a.running, a.launch_failures), (2, 0, 4));
    assert_eq!(a.last_launch_error.as_deref(), Some(missing));
    assert_eq!(a.paused_until, Some(wall + Duration::from_secs(100)));
    let last = a.last_exit.as_ref().unwrap();
    assert_eq!(last.event_code, "SERVER_PROCESS_INVALID_PATH");
    assert_eq!(last.reason, missing);
    assert_eq!(s.entries[1].paused_until, None);
    // The backoff's timer comes and goes: the pause holds the launches...
    fleet.tick(t0 + Duration::from_secs(99));
    assert!(launches(&fleet.take_effects()).is_empty());
    // ...until it ends; then the file is there and the launches succeed.
    fleet.tick(t0 + Duration::from_secs(100));
    let relaunched = launches(&fleet.take_effects());
    assert_eq!(relaunched.len(), 2, "both slots launch after the cool-down");
    let now = t0 + Duration::from_secs(100);
    for (i, (slot, serial, id)) in relaunched.into_iter().enumerate() {
        fleet.spawned(slot, serial, id, identity(600 + i as u32), now);
    }
    let s = status(&mut fleet, now);
    let a = &s.entries[0];
    assert_eq!((a.running, a.launch_failures), (2, 4), "the count stays");
    assert_eq!(a.last_launch_error, None);
    assert_eq!(a.paused_until, None);
    assert_eq!(s.counters.paused_entry_cnt, 0);
    assert_eq!(s.counters.process_cnt, 3);
    // Each process knows why its slot's last launch failed.
    let p = s.processes.iter().find(|p| p.entry == 0).unwrap();
    assert_eq!(
        p.last_exit.as_ref().map(|x| x.event_code),
        Some("SERVER_PROCESS_INVALID_PATH")
    );
    assert_eq!(p.started_at, wall + Duration::from_secs(100));
}

#[tokio::test(start_paused = true)]
async fn a_crash_is_remembered_with_its_last_line_of_output() {
    let mut h = Harness::new();
    let pid = h.pids()[0];
    let serial = h.fleet.serial_of(pid).unwrap();
    let info = ExitInfo::from_status(
        Ok(std::os::unix::process::ExitStatusExt::from_raw(3 << 8)),
        false,
        vec!["loading map".into(), "fatal: no map".into(), "".into()],
    );
    h.fleet.exited(serial, info, h.now);
    h.settle();
    let s = status(&mut h.fleet, h.now);
    let replaced = s
        .processes
        .iter()
        .find(|p| p.last_exit.is_some())
        .expect("the relaunched process carries its slot's last exit");
    let x = replaced.last_exit.as_ref().unwrap();
    assert_eq!(x.event_code, "SERVER_PROCESS_CRASHED");
    assert_eq!(x.reason, "exit code 3; last output: fatal: no map");
    assert_eq!(replaced.restarts, 1);
}

#[tokio::test(start_paused = true)]
async fn ready_timeout_stops_and_classifies() {
    let mut h = Harness::new();
    let pids = h.pids();
    for pid in &pids[1..] {
        h.ready(*pid);
    }
    let effects = h.advance(Duration::from_secs(5));
    assert!(
        effects.iter().any(|e| is_stop(e, h.s(pids[0]))),
        "{effects:?}"
    );
    assert_eq!(
        effects
            .iter()
            .filter(|e| matches!(e, Effect::Stop { .. }))
            .count(),
        1
    );
    h.exit_with(
        pids[0],
        ExitInfo {
            signal: Some(15),
            ..Default::default()
        },
    );
    assert!(
        h.codes()
            .contains(&EventCode::ServerProcessProcessReadyTimeout)
    );
}

#[tokio::test(start_paused = true)]
async fn unhealthy_process_is_terminated_then_killed_at_the_deadline() {
    let mut h = Harness::new();
    let pid = h.pids()[0];
    h.ready(pid);
    let effects = h.advance(Duration::from_secs(1));
    assert!(
        effects
            .iter()
            .any(|e| matches!(e, Effect::HealthCheck { serial: p, .. } if *p == h.s(pid)))
    );
    h.fleet
        .health_result(h.s(pid), false, "healthStatus false", h.now);
    h.settle();
    let effects = h.advance(Duration::from_secs(1));
    assert!(
        effects
            .iter()
            .any(|e| matches!(e, Effect::HealthCheck { .. }))
    );
    h.fleet.health_result(h.s(pid), false, "timeout", h.now);
    let effects = h.settle();
    assert!(h.codes().contains(&EventCode::ServerProcessUnhealthy));
    assert!(
        effects.iter().any(|e| matches!(e, Effect::Terminate { serial: p, termination_time, .. } if *p == h.s(pid) && *termination_time > 0)),
        "{effects:?}"
    );
    // Unhealthy: no new session goes there.
    assert!(!h.proc(pid).healthy);
    let effects = h.advance(Duration::from_secs(10));
    assert!(effects.iter().any(|e| is_stop(e, h.s(pid))));
    h.exit(pid, 0);
    assert!(
        h.codes()
            .contains(&EventCode::ServerProcessTerminatedUnhealthy)
    );
    assert_eq!(h.pids().len(), 3, "replaced");
}

#[tokio::test(start_paused = true)]
async fn a_healthy_answer_resets_the_failure_count() {
    let mut h = Harness::new();
    let pid = h.pids()[0];
    h.ready(pid);
    for healthy in [false, true, false, true] {
        h.advance(Duration::from_secs(1));
        h.fleet.health_result(h.s(pid), healthy, "x", h.now);
        h.settle();
    }
    assert!(!h.codes().contains(&EventCode::ServerProcessUnhealthy));
}

#[tokio::test]
async fn events_carry_the_time_of_the_input_not_of_the_machine() {
    let mut h = Harness::new();
    let wall = std::time::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
    h.fleet.set_clock(Clock { now: h.now, wall });
    let pid = h.pids()[0];
    h.events.clear();
    h.ready(pid);
    assert!(!h.events.is_empty());
    assert!(
        h.events.iter().all(|e| e.event_time == wall),
        "{:?}",
        h.events
    );
}
