//! Transitions of the fleet with no process, no network and a paused clock.

use std::path::Path;
use std::time::SystemTime;

use super::sessions::FINISHED_PLAYERS_KEPT;
use super::*;
use crate::config;
use crate::fleet::api::{
    Control, ControlReply, FleetError, HostStateScope, NewPlayer, NewSession, PlayerQuery, SdkCall,
    SdkReply, SessionUpdate,
};
use crate::fleet::clock::Clock;
use crate::process::ExitInfo;
use crate::session::PlayerStatus;

mod chaos;

const CONFIG: &str = "
fleet-id: fleet-test
health-check: { interval: 1s, timeout: 500ms, failure-threshold: 2 }
timeouts: { process-ready: 5s, process-exit: 2s, player-reservation: 3s, stop-grace: 1s, shutdown: 4s }
protection: { policy: NoProtection, no-protection-grace: 10s }
restart: { initial-backoff: 1s, max-backoff: 8s, reset-after: 30s, crash-loop-max: 4, crash-loop-window: 60s, crash-loop-cool-down: 100s }
runtime-configuration:
  ServerProcesses:
    - LaunchPath: /local/game/a
      ConcurrentExecutions: 2
    - LaunchPath: /local/game/b
      ConcurrentExecutions: 1
  MaxConcurrentGameServerSessionActivations: 1
  GameServerSessionActivationTimeoutSeconds: 5
";

struct Harness {
    fleet: Fleet,
    now: Instant,
    next_pid: u32,
    events: Vec<Event>,
    /// The changes no event reports, in order.
    changes: Vec<Change>,
}

impl Harness {
    fn new() -> Self {
        Self::with_config(CONFIG)
    }

    /// A harness over `yaml` instead of [`CONFIG`].
    fn with_config(yaml: &str) -> Self {
        let cfg = config::parse(yaml, "test.yaml", Path::new("/srv")).unwrap();
        let mut fleet = Fleet::new(Arc::new(cfg), Clock::read());
        fleet.start();
        let mut h = Self {
            fleet,
            now: Instant::now(),
            next_pid: 100,
            events: Vec::new(),
            changes: Vec::new(),
        };
        h.settle();
        h
    }

    /// Performs launches like the actor would (every launch succeeds) and collects the other
    /// effects.
    fn settle(&mut self) -> Vec<Effect> {
        let mut others = Vec::new();
        loop {
            let effects = self.fleet.take_effects();
            if effects.is_empty() {
                return others;
            }
            for e in effects {
                match e {
                    Effect::Launch {
                        slot,
                        serial,
                        process_id,
                        ..
                    } => {
                        self.next_pid += 1;
                        let identity = identity(self.next_pid);
                        self.fleet
                            .spawned(slot, serial, process_id, identity, self.now);
                    }
                    Effect::Emit(ev) => self.events.push(*ev),
                    Effect::Changed(c) => self.changes.push(c),
                    other => others.push(other),
                }
            }
        }
    }

    fn advance(&mut self, d: Duration) -> Vec<Effect> {
        self.now += d;
        let wall = self.fleet.clock.to_wall(self.now);
        self.fleet.set_clock(Clock {
            now: self.now,
            wall,
        });
        self.fleet.tick(self.now);
        self.settle()
    }

    fn pids(&self) -> Vec<u32> {
        let mut v = self.fleet.pids();
        v.sort();
        v
    }

    fn ready(&mut self, pid: u32) {
        let r = self.fleet.sdk(
            pid,
            SdkCall::ProcessReady {
                client_port: 7000 + pid as i32,
                grpc_port: 9000 + pid as i32,
                log_paths: vec![],
            },
            self.now,
        );
        assert!(r.is_ok(), "{r:?}");
        self.settle();
    }

    fn exit(&mut self, pid: u32, code: i32) -> Vec<Effect> {
        self.exit_with(
            pid,
            ExitInfo {
                exit_code: Some(code),
                ..Default::default()
            },
        )
    }

    fn exit_with(&mut self, pid: u32, info: ExitInfo) -> Vec<Effect> {
        let serial = self.s(pid);
        self.fleet.exited(serial, info, self.now);
        self.settle()
    }

    /// The launch serial of the live process `pid`.
    fn s(&self, pid: u32) -> u64 {
        self.fleet.serial_of(pid).expect("a live pid")
    }

    fn proc(&self, pid: u32) -> &Proc {
        &self.fleet.procs[&self.s(pid)]
    }

    fn codes(&self) -> Vec<EventCode> {
        self.events.iter().map(|e| e.event_code).collect()
    }

    fn count(&self, code: EventCode) -> usize {
        self.events.iter().filter(|e| e.event_code == code).count()
    }

    fn create(&mut self, max_players: i32) -> Result<GameSession, FleetError> {
        let r = self.fleet.control(
            Control::CreateSession(NewSession {
                max_players,
                ..Default::default()
            }),
            self.now,
        );
        self.settle();
        match r {
            Ok(ControlReply::Session(s)) => Ok(*s),
            Ok(other) => panic!("{other:?}"),
            Err(e) => Err(e),
        }
    }

    /// Creates a session (placed on `pid`, the only idle ready process) and activates it.
    fn activated(&mut self, pid: u32, max_players: i32) -> GameSession {
        let s = self.create(max_players).unwrap();
        assert_eq!(s.pid, pid);
        self.sdk(
            pid,
            SdkCall::Activate {
                gss_id: s.id.clone(),
                max_players: 0,
            },
        )
        .unwrap();
        s
    }

    fn join(&mut self, gss: &str, n: usize) -> Result<Vec<PlayerSession>, FleetError> {
        let players = (0..n)
            .map(|i| NewPlayer {
                player_id: format!("player-{i}"),
                player_data: String::new(),
            })
            .collect();
        let r = self.fleet.control(
            Control::Join {
                gss_id: gss.into(),
                players,
            },
            self.now,
        );
        self.settle();
        match r {
            Ok(ControlReply::Players(p, _)) => Ok(p),
            Ok(other) => panic!("{other:?}"),
            Err(e) => Err(e),
        }
    }

    fn sdk(&mut self, pid: u32, call: SdkCall) -> Result<SdkReply, FleetError> {
        let r = self.fleet.sdk(pid, call, self.now);
        self.settle();
        r
    }

    fn session(&self, id: &str) -> GameSession {
        self.fleet.sessions[id].1.clone()
    }
}

fn identity(pid: u32) -> Identity {
    Identity {
        pid,
        start_ticks: u64::from(pid),
        exe: "/srv/gse-data/game/server".into(),
        boot_id: "boot".into(),
    }
}

/// The processes sent OnProcessTerminate among `effects`.
fn terminated(effects: &[Effect]) -> Vec<u64> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Terminate { serial, .. } => Some(*serial),
            _ => None,
        })
        .collect()
}

fn is_stop(e: &Effect, want: u64) -> bool {
    matches!(e, Effect::Stop { serial, .. } if *serial == want)
}

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

fn status(fleet: &mut Fleet, now: Instant) -> crate::fleet::api::FleetStatus {
    match fleet.control(Control::DescribeStatus, now) {
        Ok(ControlReply::Status(s)) => *s,
        other => panic!("{other:?}"),
    }
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

#[tokio::test(start_paused = true)]
async fn session_and_player_lifecycle() {
    let mut h = Harness::new();
    let pids = h.pids();
    assert!(
        matches!(h.create(2), Err(FleetError::Limit(_))),
        "no ready process"
    );
    h.ready(pids[1]);
    let s = h.create(2).unwrap();
    assert_eq!(s.status, GssStatus::Activating);
    assert_eq!(s.pid, pids[1]);
    assert_eq!(s.port, 7000 + pids[1] as i32);
    // Another pid cannot activate it.
    let err = h
        .sdk(
            pids[0],
            SdkCall::Activate {
                gss_id: s.id.clone(),
                max_players: 0,
            },
        )
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("not hosted by the calling process"),
        "{err}"
    );
    assert!(
        !err.to_string().contains(&pids[1].to_string()),
        "the refusal does not name the host: {err}"
    );
    assert!(
        matches!(h.join(&s.id, 1), Err(FleetError::Denied(_))),
        "not ACTIVE yet"
    );
    h.sdk(
        pids[1],
        SdkCall::Activate {
            gss_id: s.id.clone(),
            max_players: 0,
        },
    )
    .unwrap();
    assert_eq!(h.session(&s.id).status, GssStatus::Active);
    let players = h.join(&s.id, 2).unwrap();
    assert!(
        matches!(h.join(&s.id, 1), Err(FleetError::Limit(_))),
        "full"
    );
    let accept = |id: &str| SdkCall::AcceptPlayer {
        gss_id: s.id.clone(),
        player_session_id: id.to_string(),
    };
    h.sdk(pids[1], accept(&players[0].id)).unwrap();
    let err = h.sdk(pids[1], accept(&players[0].id)).unwrap_err();
    assert!(err.to_string().contains("is ACTIVE, not RESERVED"), "{err}");
    // The second player is never accepted and times out.
    h.advance(Duration::from_secs(3));
    assert!(h.codes().contains(&EventCode::PlayerSessionTimedOut));
    assert_eq!(h.session(&s.id).current_players, 1);
    h.sdk(
        pids[1],
        SdkCall::RemovePlayer {
            gss_id: s.id.clone(),
            player_session_id: players[0].id.clone(),
        },
    )
    .unwrap();
    assert_eq!(h.session(&s.id).current_players, 0);
    // Every player event names the session's process.
    let player_events: Vec<&Event> = h
        .events
        .iter()
        .filter(|e| e.player_session_id.is_some())
        .collect();
    assert_eq!(
        player_events.len(),
        5,
        "2 reserved, active, timed out, completed"
    );
    for e in player_events {
        assert_eq!(e.pid, Some(pids[1]), "{e:?}");
        assert!(e.process_id.is_some(), "{e:?}");
    }
    // DENY_ALL blocks joins.
    h.sdk(
        pids[1],
        SdkCall::UpdatePolicy {
            gss_id: s.id.clone(),
            policy: "DENY_ALL".into(),
        },
    )
    .unwrap();
    assert!(matches!(h.join(&s.id, 1), Err(FleetError::Denied(_))));
    h.sdk(
        pids[1],
        SdkCall::ReportCustomData {
            current: 3,
            max: 10,
        },
    )
    .unwrap();
    assert_eq!(h.session(&s.id).current_custom_count, 3);
    h.sdk(
        pids[1],
        SdkCall::TerminateSession {
            gss_id: s.id.clone(),
        },
    )
    .unwrap();
    assert_eq!(h.session(&s.id).status, GssStatus::Terminated);
    assert!(h.proc(pids[1]).session.is_none(), "process may host again");
    let err = h
        .sdk(
            pids[1],
            SdkCall::TerminateSession {
                gss_id: s.id.clone(),
            },
        )
        .unwrap_err();
    assert!(err.to_string().contains("is TERMINATED"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn activation_timeout_errors_the_session_and_terminates_the_process() {
    let mut h = Harness::new();
    let pid = h.pids()[0];
    h.ready(pid);
    let s = h.create(4).unwrap();
    let effects = h.advance(Duration::from_secs(5));
    assert!(h.codes().contains(&EventCode::GameSessionActivationTimeout));
    assert_eq!(h.session(&s.id).status, GssStatus::Error);
    assert!(effects.iter().any(|e| is_stop(e, h.s(pid))));
    h.exit(pid, 0);
    assert!(h.codes().contains(&EventCode::ServerProcessForceTerminated));
    assert_eq!(h.pids().len(), 3);
}

#[tokio::test(start_paused = true)]
async fn concurrent_activations_are_limited() {
    let mut h = Harness::new();
    for pid in h.pids() {
        h.ready(pid);
    }
    let first = h.create(1).unwrap();
    let err = h.create(1).unwrap_err();
    assert!(
        err.to_string()
            .contains("MaxConcurrentGameServerSessionActivations is 1"),
        "{err}"
    );
    h.sdk(
        first.pid,
        SdkCall::Activate {
            gss_id: first.id,
            max_players: 0,
        },
    )
    .unwrap();
    h.create(1).unwrap();
}

#[tokio::test(start_paused = true)]
async fn process_exit_takes_its_session_and_players_along() {
    let mut h = Harness::new();
    let pid = h.pids()[0];
    h.ready(pid);
    let s = h.activated(pid, 4);
    let players = h.join(&s.id, 2).unwrap();
    h.exit(pid, 139);
    assert_eq!(h.session(&s.id).status, GssStatus::Error);
    for p in players {
        let seq = h.fleet.player_index[&p.id];
        assert_eq!(h.fleet.players[&seq].status, PlayerStatus::Completed);
    }
    // A clean end after ProcessEnding terminates the session instead.
    let pid = h.pids()[0];
    h.ready(pid);
    let s = h.activated(pid, 4);
    h.sdk(pid, SdkCall::ProcessEnding).unwrap();
    assert_eq!(h.session(&s.id).status, GssStatus::Terminating);
    h.exit(pid, 0);
    assert_eq!(h.session(&s.id).status, GssStatus::Terminated);
    assert!(h.codes().contains(&EventCode::ServerProcessEnded));
}

#[tokio::test(start_paused = true)]
async fn process_ending_without_exit_times_out() {
    let mut h = Harness::new();
    let pid = h.pids()[0];
    h.ready(pid);
    h.sdk(pid, SdkCall::ProcessEnding).unwrap();
    assert!(h.sdk(pid, SdkCall::ProcessEnding).is_err(), "twice");
    let effects = h.advance(Duration::from_secs(2));
    assert!(effects.iter().any(|e| is_stop(e, h.s(pid))));
    h.exit_with(
        pid,
        ExitInfo {
            signal: Some(9),
            killed_by_agent: true,
            ..Default::default()
        },
    );
    assert!(
        h.codes()
            .contains(&EventCode::ServerProcessProcessExitTimeout)
    );
}

#[tokio::test(start_paused = true)]
async fn sdk_refuses_unknown_pids_and_illegal_calls() {
    let mut h = Harness::new();
    assert_eq!(
        h.sdk(1, SdkCall::ProcessEnding).unwrap_err(),
        FleetError::UnknownPid(1)
    );
    let pid = h.pids()[0];
    let bad_port = h
        .sdk(
            pid,
            SdkCall::ProcessReady {
                client_port: 70000,
                grpc_port: 1,
                log_paths: vec![],
            },
        )
        .unwrap_err();
    assert!(bad_port.to_string().contains("clientPort"), "{bad_port}");
    h.ready(pid);
    let twice = h
        .sdk(
            pid,
            SdkCall::ProcessReady {
                client_port: 1,
                grpc_port: 2,
                log_paths: vec![],
            },
        )
        .unwrap_err();
    assert!(twice.to_string().contains("already called"), "{twice}");
    let missing = h
        .sdk(
            pid,
            SdkCall::Activate {
                gss_id: "nope".into(),
                max_players: 0,
            },
        )
        .unwrap_err();
    assert!(matches!(missing, FleetError::NotFound { .. }));
    let policy = h
        .sdk(
            pid,
            SdkCall::UpdatePolicy {
                gss_id: "nope".into(),
                policy: "MAYBE".into(),
            },
        )
        .unwrap_err();
    assert!(
        policy.to_string().contains("ACCEPT_ALL or DENY_ALL"),
        "{policy}"
    );
    let custom = h
        .sdk(pid, SdkCall::ReportCustomData { current: 5, max: 1 })
        .unwrap_err();
    assert!(matches!(custom, FleetError::Invalid { .. }));
}

#[tokio::test(start_paused = true)]
async fn player_listing_pages_and_filters() {
    let mut h = Harness::new();
    let pid = h.pids()[0];
    h.ready(pid);
    let s = h.activated(pid, 10);
    let players = h.join(&s.id, 5).unwrap();
    h.sdk(
        pid,
        SdkCall::AcceptPlayer {
            gss_id: s.id.clone(),
            player_session_id: players[1].id.clone(),
        },
    )
    .unwrap();
    let mut seen = Vec::new();
    let mut token = None;
    loop {
        let q = PlayerQuery {
            gss_id: Some(s.id.clone()),
            next_token: token.clone(),
            limit: 2,
            ..Default::default()
        };
        let Ok(SdkReply::Players(page, next)) = h.sdk(pid, SdkCall::DescribePlayers(q)) else {
            panic!()
        };
        assert!(page.len() <= 2);
        seen.extend(page.into_iter().map(|p| p.id));
        if next.is_none() {
            break;
        }
        token = next;
    }
    assert_eq!(
        seen,
        players.iter().map(|p| p.id.clone()).collect::<Vec<_>>()
    );
    let q = PlayerQuery {
        status: Some(PlayerStatus::Active),
        limit: 10,
        ..Default::default()
    };
    let Ok(SdkReply::Players(page, None)) = h.sdk(pid, SdkCall::DescribePlayers(q)) else {
        panic!()
    };
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].id, players[1].id);
    let q = PlayerQuery {
        player_id: Some("player-3".into()),
        limit: 10,
        ..Default::default()
    };
    let Ok(SdkReply::Players(page, _)) = h.sdk(pid, SdkCall::DescribePlayers(q)) else {
        panic!()
    };
    assert_eq!(page[0].id, players[3].id);
    let bad = PlayerQuery {
        next_token: Some("garbage".into()),
        limit: 1,
        ..Default::default()
    };
    assert!(matches!(
        h.sdk(pid, SdkCall::DescribePlayers(bad)),
        Err(FleetError::Invalid { .. })
    ));
}

#[tokio::test(start_paused = true)]
async fn shutdown_terminates_ready_processes_and_stops_the_rest() {
    let mut h = Harness::new();
    let pids = h.pids();
    h.ready(pids[0]);
    h.fleet.begin_shutdown(h.now);
    let effects = h.settle();
    assert!(
        effects
            .iter()
            .any(|e| matches!(e, Effect::Terminate { serial, .. } if *serial == h.s(pids[0])))
    );
    assert!(effects.iter().any(|e| is_stop(e, h.s(pids[1]))));
    assert!(effects.iter().any(|e| is_stop(e, h.s(pids[2]))));
    assert!(matches!(h.create(1), Err(FleetError::Denied(_))));
    for pid in &pids[1..] {
        h.exit(*pid, 0);
    }
    assert_eq!(h.pids(), vec![pids[0]], "nothing relaunched");
    let effects = h.advance(Duration::from_secs(4));
    assert!(
        effects.iter().any(|e| is_stop(e, h.s(pids[0]))),
        "shutdown deadline"
    );
    h.exit(pids[0], 0);
    assert!(h.fleet.is_stopped());
}

#[tokio::test(start_paused = true)]
async fn end_session_and_process_sends_on_process_terminate() {
    let mut h = Harness::new();
    let pid = h.pids()[0];
    h.ready(pid);
    let s = h.create(1).unwrap();
    let r = h.fleet.control(
        Control::EndSessionAndProcess {
            gss_id: s.id.clone(),
        },
        h.now,
    );
    assert!(r.is_ok());
    let effects = h.settle();
    assert!(
        effects
            .iter()
            .any(|e| matches!(e, Effect::Terminate { .. }))
    );
    h.sdk(
        pid,
        SdkCall::TerminateSession {
            gss_id: s.id.clone(),
        },
    )
    .unwrap();
    h.sdk(pid, SdkCall::ProcessEnding).unwrap();
    h.exit(pid, 0);
    assert!(h.codes().contains(&EventCode::ServerProcessEnded));
    let c = h.fleet.counters();
    assert_eq!(c.max_game_session_cnt, 3);
}

#[tokio::test(start_paused = true)]
async fn an_ending_process_keeps_its_exit_deadline_when_told_to_terminate() {
    let mut h = Harness::new();
    let pid = h.pids()[0];
    h.ready(pid);
    let s = h.activated(pid, 1);
    h.sdk(pid, SdkCall::ProcessEnding).unwrap();
    let r = h.fleet.control(
        Control::EndSessionAndProcess {
            gss_id: s.id.clone(),
        },
        h.now,
    );
    assert!(r.is_ok(), "{r:?}");
    let effects = h.settle();
    assert!(
        !effects
            .iter()
            .any(|e| matches!(e, Effect::Terminate { .. }))
    );
    assert!(h.sdk(pid, SdkCall::ProcessEnding).is_err(), "still ENDING");
    let effects = h.advance(Duration::from_secs(2));
    assert!(
        effects.iter().any(|e| is_stop(e, h.s(pid))),
        "process-exit still applies"
    );
}

#[tokio::test(start_paused = true)]
async fn nothing_is_placed_on_a_process_being_stopped() {
    let mut h = Harness::new();
    let pids = h.pids();
    h.ready(pids[0]);
    h.create(1).unwrap();
    h.advance(Duration::from_secs(5)); // activation timeout: pids[0] is being stopped
    let err = h.create(1).unwrap_err();
    assert!(matches!(err, FleetError::Limit(_)), "{err}");
    // The same 5 s were pids[1]'s ready timeout: its late ProcessReady is refused.
    let late = h.sdk(
        pids[1],
        SdkCall::ProcessReady {
            client_port: 1,
            grpc_port: 2,
            log_paths: vec![],
        },
    );
    assert!(
        late.unwrap_err().to_string().contains("came too late"),
        "a stopping process cannot become ready"
    );
}

#[tokio::test(start_paused = true)]
async fn a_clean_end_before_ready_counts_as_a_failure() {
    let mut h = Harness::new();
    for round in 0..3 {
        let pid = *h
            .fleet
            .procs
            .values()
            .filter(|p| p.slot == 2)
            .map(|p| &p.identity.pid)
            .next()
            .unwrap_or_else(|| panic!("round {round}: slot 2 not running"));
        h.sdk(pid, SdkCall::ProcessEnding).unwrap();
        h.exit(pid, 0);
        h.advance(Duration::from_secs(8));
    }
    assert!(h.codes().contains(&EventCode::ServerProcessEnded));
    assert!(
        h.fleet.slots[2].failures >= 3,
        "ended-before-ready exits back off"
    );
}

#[tokio::test(start_paused = true)]
async fn an_unhealthy_process_under_full_protection_still_gets_a_deadline() {
    let text = CONFIG.replace(
        "policy: NoProtection, no-protection-grace: 10s",
        "policy: FullProtection, time-limit-minutes: 5",
    );
    let cfg = config::parse(&text, "test.yaml", Path::new("/srv")).unwrap();
    let mut h = Harness::new();
    h.fleet = Fleet::new(Arc::new(cfg), Clock::read());
    h.fleet.start();
    h.settle();
    let pid = h.pids()[0];
    h.ready(pid);
    h.activated(pid, 1);
    for _ in 0..2 {
        h.advance(Duration::from_secs(1));
        h.fleet.health_result(h.s(pid), false, "x", h.now);
    }
    let effects = h.settle();
    assert!(
        effects.iter().any(
            |e| matches!(e, Effect::Terminate { termination_time, .. } if *termination_time > 0)
        ),
        "{effects:?}"
    );
    let effects = h.advance(Duration::from_secs(300));
    assert!(effects.iter().any(|e| is_stop(e, h.s(pid))));
}

#[tokio::test(start_paused = true)]
async fn a_stale_exit_report_for_an_earlier_launch_is_ignored() {
    let mut h = Harness::new();
    let pid = h.pids()[0];
    let serial = h.s(pid);
    h.exit(pid, 1);
    h.fleet.exited(serial, ExitInfo::default(), h.now);
    h.settle();
    assert_eq!(
        h.count(EventCode::ServerProcessCrashed),
        1,
        "one exit, one event"
    );
    assert_eq!(h.pids().len(), 3, "the slot relaunched once");
}

#[tokio::test(start_paused = true)]
async fn reports_name_launches_so_a_reused_pid_is_never_confused() {
    let mut h = Harness::new();
    let pid = h.pids()[0];
    let old = h.s(pid);
    h.ready(pid);
    h.exit(pid, 1);
    // Late answers for the dead launch change nothing, whatever pid the OS reuses.
    for _ in 0..5 {
        h.fleet.health_result(old, false, "late answer", h.now);
    }
    h.fleet
        .start_session_result(old, "gss", Err("late".into()), h.now);
    let effects = h.settle();
    assert!(effects.is_empty(), "{effects:?}");
    assert!(!h.codes().contains(&EventCode::ServerProcessUnhealthy));
}

#[tokio::test(start_paused = true)]
async fn finished_players_of_a_long_session_are_forgotten() {
    let mut h = Harness::new();
    let pid = h.pids()[0];
    h.ready(pid);
    let s = h.activated(pid, 2);
    for _ in 0..(FINISHED_PLAYERS_KEPT + 50) {
        let p = h.join(&s.id, 1).unwrap().remove(0);
        h.sdk(
            pid,
            SdkCall::RemovePlayer {
                gss_id: s.id.clone(),
                player_session_id: p.id,
            },
        )
        .unwrap();
    }
    assert_eq!(h.fleet.players.len(), FINISHED_PLAYERS_KEPT);
    assert_eq!(h.fleet.player_index.len(), FINISHED_PLAYERS_KEPT);
    assert_eq!(h.fleet.session_players[&s.id].len(), FINISHED_PLAYERS_KEPT);
}

#[tokio::test(start_paused = true)]
async fn update_session_changes_fields_and_its_own_protection() {
    let mut h = Harness::new();
    let pid = h.pids()[0];
    h.ready(pid);
    let s = h.activated(pid, 2);
    let update = |fields: SessionUpdate| {
        Control::UpdateSession(SessionUpdate {
            gss_id: s.id.clone(),
            ..fields
        })
    };
    let bad = h.fleet.control(
        update(SessionUpdate {
            protection: Some("Forever".into()),
            ..Default::default()
        }),
        h.now,
    );
    assert!(
        matches!(
            bad,
            Err(FleetError::Invalid {
                param: "ProtectionPolicy",
                ..
            })
        ),
        "{bad:?}"
    );
    let ok = h.fleet.control(
        update(SessionUpdate {
            max_players: Some(8),
            name: Some("renamed".into()),
            creation_policy: Some("DENY_ALL".into()),
            protection: Some("FullProtection".into()),
            ..Default::default()
        }),
        h.now,
    );
    assert!(ok.is_ok(), "{ok:?}");
    let now = h.session(&s.id);
    assert_eq!((now.max_players, now.name.as_str()), (8, "renamed"));
    assert!(
        matches!(h.join(&s.id, 1), Err(FleetError::Denied(_))),
        "DENY_ALL"
    );
    // FullProtection on the session: OnProcessTerminate carries no deadline and none fires.
    h.fleet
        .control(
            Control::EndSessionAndProcess {
                gss_id: s.id.clone(),
            },
            h.now,
        )
        .unwrap();
    let effects = h.settle();
    assert!(
        effects.iter().any(|e| matches!(
            e,
            Effect::Terminate {
                termination_time: 0,
                ..
            }
        )),
        "{effects:?}"
    );
    let effects = h.advance(Duration::from_secs(3600));
    assert!(!effects.iter().any(|e| is_stop(e, h.s(pid))));
}

#[tokio::test(start_paused = true)]
async fn a_runtime_update_starts_new_processes_and_retires_old_ones_as_sessions_end() {
    let mut h = Harness::new();
    let old = h.pids();
    for pid in &old {
        h.ready(*pid);
    }
    let s = h.activated(old[0], 2);
    let runtime = config::parse_runtime(
        r#"{"ServerProcesses": [{"LaunchPath": "/local/game/v2", "ConcurrentExecutions": 2}],
            "GameServerSessionActivationTimeoutSeconds": 9}"#,
        Path::new("/srv/gse-data/game"),
    )
    .unwrap();
    h.fleet
        .control(Control::UpdateRuntime(Box::new(runtime)), h.now)
        .unwrap();
    let effects = h.settle();
    // Idle old processes are told to terminate; the one hosting a session is not.
    let told = terminated(&effects);
    assert_eq!(told.len(), 2, "{effects:?}");
    assert!(!told.contains(&h.s(old[0])));
    assert!(h.codes().contains(&EventCode::RuntimeConfigurationUpdated));
    // Two new processes under the new LaunchPath: 3 old + 2 new while the old ones drain.
    assert_eq!(h.pids().len(), 5);
    let new: Vec<u32> = h.pids().into_iter().filter(|p| !old.contains(p)).collect();
    for pid in &new {
        assert_eq!(
            h.fleet.spec(h.proc(*pid).slot).launch_path,
            "/local/game/v2"
        );
    }
    assert_eq!(h.fleet.counters().max_game_session_cnt, 2);
    // The retired idle ones end and are not replaced.
    for serial in &told {
        let pid = h.fleet.procs[serial].identity.pid;
        h.exit(pid, 0);
    }
    assert_eq!(h.pids().len(), 3);
    // The session ends: its old process is retired then.
    h.fleet
        .sdk(
            old[0],
            SdkCall::TerminateSession {
                gss_id: s.id.clone(),
            },
            h.now,
        )
        .unwrap();
    let effects = h.settle();
    assert!(
        effects
            .iter()
            .any(|e| matches!(e, Effect::Terminate { serial, .. } if *serial == h.s(old[0]))),
        "{effects:?}"
    );
    h.exit(old[0], 0);
    let mut left = h.pids();
    left.sort();
    let mut want = new.clone();
    want.sort();
    assert_eq!(left, want, "only the new processes remain");
    assert_eq!(h.fleet.activation_timeout, Duration::from_secs(9));
}

/// Runtime updates and redeploys add slots; the ones whose process ended are compacted away,
/// so the table stays the size of what runs, process ids are never reused, and a retiring
/// process that still hosts a session keeps its place through the renumbering.
#[tokio::test(start_paused = true)]
async fn slots_of_old_configurations_are_compacted_and_ids_stay_unique() {
    let mut h = Harness::new();
    let first = h.pids();
    for pid in &first {
        h.ready(*pid);
    }
    // One old process keeps a session through every update.
    let kept = first[0];
    let s = h.activated(kept, 2);
    let mut ids = std::collections::HashSet::new();
    for update in 0..30 {
        let runtime = config::parse_runtime(
            &format!(
                r#"{{"ServerProcesses": [{{"LaunchPath": "/local/game/v{update}", "ConcurrentExecutions": 2}}]}}"#
            ),
            Path::new("/srv/gse-data/game"),
        )
        .unwrap();
        h.fleet
            .control(Control::UpdateRuntime(Box::new(runtime)), h.now)
            .unwrap();
        let effects = h.settle();
        for serial in terminated(&effects) {
            let pid = h.fleet.procs[&serial].identity.pid;
            h.exit(pid, 0);
        }
        for pid in h.pids() {
            if h.proc(pid).phase == Phase::Launching {
                h.ready(pid);
            }
        }
        for p in h.fleet.procs.values() {
            ids.insert(p.id.clone());
        }
        assert!(
            h.fleet.slots.len() <= 2 + 2 + 1,
            "update {update}: {} slots",
            h.fleet.slots.len()
        );
    }
    assert!(ids.len() >= 60, "{} distinct process ids", ids.len());
    // The session's process is where it was, still serving; its slot is retiring.
    let p = h.proc(kept);
    assert!(h.fleet.slots[p.slot].retiring);
    assert_eq!(h.fleet.slots[p.slot].serial, Some(h.s(kept)));
    h.fleet
        .sdk(
            kept,
            SdkCall::TerminateSession {
                gss_id: s.id.clone(),
            },
            h.now,
        )
        .unwrap();
    let effects = h.settle();
    assert!(terminated(&effects).contains(&h.s(kept)), "{effects:?}");
    h.exit(kept, 0);
    assert_eq!(h.pids().len(), 2, "only the current processes run");
    assert!(
        h.fleet
            .current_runtime()
            .server_processes
            .iter()
            .all(|e| e.launch_path.ends_with("/v29")),
        "the runtime in force is the last one"
    );
    // Entry numbers survive a restart: ids stay unique after it.
    let numbers: Vec<usize> = h.fleet.entries.iter().map(|e| e.number).collect();
    let next = h.fleet.next_entry_number;
    restart(&mut h);
    let restored: Vec<usize> = h.fleet.entries.iter().map(|e| e.number).collect();
    assert_eq!((restored, h.fleet.next_entry_number), (numbers, next));
}

#[tokio::test(start_paused = true)]
async fn a_process_launched_under_the_old_configuration_is_stopped_at_once() {
    let mut h = Harness::new();
    let pid = h.pids()[0];
    // A crash queues an immediate relaunch; the runtime update lands before it is spawned.
    h.fleet.exited(h.s(pid), ExitInfo::default(), h.now);
    let launch = h
        .fleet
        .take_effects()
        .into_iter()
        .find_map(|e| match e {
            Effect::Launch {
                slot,
                serial,
                process_id,
                ..
            } => Some((slot, serial, process_id)),
            _ => None,
        })
        .expect("an immediate relaunch");
    let runtime = config::parse_runtime(
        r#"{"ServerProcesses": [{"LaunchPath": "/local/game/v2", "ConcurrentExecutions": 1}]}"#,
        Path::new("/srv/gse-data/game"),
    )
    .unwrap();
    h.fleet
        .control(Control::UpdateRuntime(Box::new(runtime)), h.now)
        .unwrap();
    h.settle();
    h.fleet
        .spawned(launch.0, launch.1, launch.2, identity(999), h.now);
    let effects = h.settle();
    assert!(effects.iter().any(|e| is_stop(e, h.s(999))), "{effects:?}");
    h.exit_with(
        999,
        ExitInfo {
            signal: Some(15),
            ..Default::default()
        },
    );
    assert_eq!(
        h.fleet.slots[launch.0].failures, 0,
        "stopping it is not its failure"
    );
}

/// A restart: the fleet as records, rebuilt under the same config.
fn restart(h: &mut Harness) -> Vec<Recorded> {
    let wall = SystemTime::now();
    let records = h.fleet.snapshot(h.now, wall);
    let cfg = h.fleet.cfg.clone();
    h.now += Duration::from_millis(500);
    let (fleet, recorded) = Fleet::restore(cfg, &records, h.now, wall + Duration::from_millis(500))
        .unwrap()
        .expect("records were stored");
    h.fleet = fleet;
    // As the actor does: a new run draws its ids from a new seed.
    h.fleet.set_id_seed(1);
    h.events.clear();
    recorded
}

#[tokio::test(start_paused = true)]
async fn a_restored_fleet_adopts_its_processes_sessions_and_players() {
    let mut h = Harness::new();
    let pids = h.pids();
    for pid in &pids {
        h.ready(*pid);
    }
    let gss = h.activated(pids[0], 4);
    let players = h.join(&gss.id, 2).unwrap();
    h.sdk(
        pids[0],
        SdkCall::AcceptPlayer {
            gss_id: gss.id.clone(),
            player_session_id: players[0].id.clone(),
        },
    )
    .unwrap();
    let ids: Vec<String> = pids.iter().map(|p| h.proc(*p).id.clone()).collect();

    let recorded = restart(&mut h);
    assert_eq!(recorded.len(), 3);
    for r in &recorded {
        h.fleet.adopted(r.serial);
    }
    h.fleet.start();
    let effects = h.settle();
    assert!(
        !effects.iter().any(|e| matches!(e, Effect::Launch { .. })),
        "nothing new launches: {effects:?}"
    );
    assert_eq!(h.count(EventCode::ServerProcessAdopted), 3);
    assert_eq!(h.pids(), pids);
    let again: Vec<String> = pids.iter().map(|p| h.proc(*p).id.clone()).collect();
    assert_eq!(again, ids, "the same process ids");
    // Health checks resume at once.
    let effects = h.advance(Duration::ZERO);
    let checks = effects
        .iter()
        .filter(|e| matches!(e, Effect::HealthCheck { .. }))
        .count();
    assert_eq!(checks, 3, "{effects:?}");
    // The session, its players and the game's SDK calls carry on.
    let s = h.session(&gss.id);
    assert_eq!(s.status, GssStatus::Active);
    assert_eq!(s.current_players, 2, "one active, one reserved");
    let status = |h: &Harness, id: &str| h.fleet.players[&h.fleet.player_index[id]].status;
    assert_eq!(status(&h, &players[0].id), PlayerStatus::Active);
    assert_eq!(status(&h, &players[1].id), PlayerStatus::Reserved);
    h.sdk(
        pids[0],
        SdkCall::AcceptPlayer {
            gss_id: gss.id.clone(),
            player_session_id: players[1].id.clone(),
        },
    )
    .unwrap();
    assert_eq!(status(&h, &players[1].id), PlayerStatus::Active);
    // A second session goes to another process, never the busy one.
    let second = h.create(2).unwrap();
    assert_ne!(second.pid, pids[0]);
}

#[tokio::test(start_paused = true)]
async fn a_recorded_process_that_is_gone_is_reported_once_and_replaced_with_a_new_id() {
    let mut h = Harness::new();
    let pids = h.pids();
    h.ready(pids[0]);
    let gss = h.activated(pids[0], 4);
    let old_id = h.proc(pids[0]).id.clone();
    let recorded = restart(&mut h);
    for r in &recorded {
        if r.identity.pid == pids[0] {
            h.fleet.lost(r.serial, "pid is gone", h.now);
        } else {
            h.fleet.adopted(r.serial);
        }
    }
    h.fleet.start();
    h.settle();
    assert_eq!(h.count(EventCode::ServerProcessCrashed), 1);
    assert_eq!(
        h.count(EventCode::ServerProcessStarted),
        1,
        "only the missing slot"
    );
    assert_eq!(h.session(&gss.id).status, GssStatus::Error);
    let new_ids: Vec<String> = h.pids().into_iter().map(|p| h.proc(p).id.clone()).collect();
    assert!(
        !new_ids.contains(&old_id),
        "ids are never reused: {new_ids:?}"
    );
    assert_eq!(h.pids().len(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_stop_asked_for_before_the_restart_is_asked_for_again() {
    let mut h = Harness::new();
    let pid = h.pids()[0];
    // Never ready: the ready timeout stops it.
    h.advance(Duration::from_secs(6));
    let recorded = restart(&mut h);
    let r = recorded.iter().find(|r| r.identity.pid == pid).unwrap();
    h.fleet.adopted(r.serial);
    let effects = h.settle();
    assert!(effects.iter().any(|e| is_stop(e, h.s(pid))), "{effects:?}");
}

#[tokio::test(start_paused = true)]
async fn records_from_a_newer_agent_are_refused_and_a_bad_record_is_skipped() {
    let h = Harness::new();
    let mut records = h.fleet.snapshot(h.now, SystemTime::now());
    let meta = String::from_utf8(records["meta"].clone()).unwrap();
    records.insert(
        "meta".into(),
        meta.replace("\"version\":1", "\"version\":99").into_bytes(),
    );
    let err = Fleet::restore(h.fleet.cfg.clone(), &records, h.now, SystemTime::now())
        .err()
        .expect("refused");
    assert!(err.to_string().contains("newer gse-agent"), "{err}");
    // One unreadable record costs what it holds, not the start.
    records.insert("meta".into(), meta.clone().into_bytes());
    let broken = records
        .keys()
        .find(|k| k.starts_with("proc/"))
        .unwrap()
        .clone();
    records.insert(broken, b"{".to_vec());
    let (_, recorded) = Fleet::restore(h.fleet.cfg.clone(), &records, h.now, SystemTime::now())
        .unwrap()
        .unwrap();
    assert_eq!(recorded.len(), 2);
    // The meta record is required.
    records.insert("meta".into(), b"{".to_vec());
    let err = Fleet::restore(h.fleet.cfg.clone(), &records, h.now, SystemTime::now())
        .err()
        .expect("refused");
    assert!(err.to_string().contains("meta"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn a_config_file_changed_across_a_restart_is_applied_as_a_runtime_update() {
    let mut h = Harness::new();
    let pids = h.pids();
    for pid in &pids {
        h.ready(*pid);
    }
    let gss = h.activated(pids[0], 2);
    let records = h.fleet.snapshot(h.now, SystemTime::now());
    let changed = CONFIG.replace(
        "    - LaunchPath: /local/game/b\n      ConcurrentExecutions: 1\n",
        "    - LaunchPath: /local/game/c\n      ConcurrentExecutions: 1\n",
    );
    let cfg = config::parse(&changed, "test.yaml", Path::new("/srv")).unwrap();
    let (mut fleet, recorded) = Fleet::restore(Arc::new(cfg), &records, h.now, SystemTime::now())
        .unwrap()
        .unwrap();
    for r in &recorded {
        fleet.adopted(r.serial);
    }
    fleet.start();
    h.fleet = fleet;
    h.events.clear();
    let effects = h.settle();
    // The idle old processes are told to terminate; the one hosting the session stays.
    let told = terminated(&effects);
    assert_eq!(told.len(), 2, "{effects:?}");
    assert!(!told.contains(&h.s(pids[0])));
    assert_eq!(h.session(&gss.id).status, GssStatus::Active);
    assert!(h.codes().contains(&EventCode::RuntimeConfigurationUpdated));
    // The new configuration's processes launch: a×2 and c×1 beside the three old ones.
    assert_eq!(h.pids().len(), 6);
    let c = h
        .pids()
        .into_iter()
        .filter(|p| h.fleet.spec(h.proc(*p).slot).launch_path == "/local/game/c")
        .count();
    assert_eq!(c, 1);
}

#[tokio::test(start_paused = true)]
async fn processes_gone_at_a_restart_do_not_trip_the_crash_loop_breaker() {
    let mut h = Harness::new();
    let cfg = config::parse(
        &CONFIG.replace("ConcurrentExecutions: 2", "ConcurrentExecutions: 6"),
        "test.yaml",
        Path::new("/srv"),
    )
    .unwrap();
    h.fleet = Fleet::new(Arc::new(cfg), Clock::read());
    h.fleet.start();
    h.settle();
    let recorded = restart(&mut h);
    assert_eq!(recorded.len(), 7);
    // A reboot: every recorded process is gone (crash-loop-max is 4).
    for r in &recorded {
        h.fleet.lost(r.serial, "no such process", h.now);
    }
    h.fleet.start();
    h.settle();
    assert_eq!(h.count(EventCode::ServerProcessCrashed), 7);
    assert_eq!(h.count(EventCode::ServerProcessCrashLoop), 0);
    assert_eq!(h.pids().len(), 7, "every slot relaunched at once");
}

#[tokio::test(start_paused = true)]
async fn the_state_of_another_fleet_is_refused() {
    let h = Harness::new();
    let records = h.fleet.snapshot(h.now, SystemTime::now());
    let other = config::parse(
        &CONFIG.replace("fleet-id: fleet-test", "fleet-id: fleet-other"),
        "test.yaml",
        Path::new("/srv"),
    )
    .unwrap();
    let err = Fleet::restore(Arc::new(other), &records, h.now, SystemTime::now())
        .err()
        .expect("refused");
    assert!(
        err.to_string().contains("belongs to fleet fleet-test"),
        "{err}"
    );
}

/// A placement on a reserved host waits (it is not failed) and is served once the host is
/// unreserved; one through a queue this host does not serve fails at once.
#[tokio::test(start_paused = true)]
async fn a_placement_waits_out_a_reservation_and_fails_when_nothing_here_serves_it() {
    use crate::placement::{PlacementRequest, Status};
    use crate::queue::QueueInput;
    let mut h = Harness::new();
    for pid in h.pids() {
        h.ready(pid);
    }
    for (name, fleet) in [("here", "fleet-test"), ("there", "fleet-other")] {
        h.fleet
            .control(
                Control::PutQueue {
                    input: QueueInput {
                        name: name.into(),
                        destinations: Some(vec![format!("qcs::gse:local:uin/0:fleet/{fleet}")]),
                        ..Default::default()
                    },
                    create: true,
                },
                h.now,
            )
            .unwrap();
    }
    h.fleet.control(Control::SetReserved(true), h.now).unwrap();
    let start = |h: &mut Harness, id: &str, queue: &str| match h
        .fleet
        .control(
            Control::StartPlacement(Box::new(PlacementRequest {
                id: id.into(),
                queue: queue.into(),
                max_players: 2,
                ..Default::default()
            })),
            h.now,
        )
        .unwrap()
    {
        ControlReply::Placement(p) => p.status,
        other => panic!("{other:?}"),
    };
    assert_eq!(start(&mut h, "p1", "here"), Status::Pending);
    assert_eq!(start(&mut h, "p2", "there"), Status::Failed);
    h.fleet.control(Control::SetReserved(false), h.now).unwrap();
    let p = &h.fleet.placements["p1"];
    assert!(
        p.gss_id.as_deref().is_some_and(|id| id.ends_with("/p1")),
        "{p:?}"
    );
    assert_eq!(
        p.status,
        Status::Pending,
        "ACTIVATING until the game activates it"
    );
}

#[tokio::test(start_paused = true)]
async fn sessions_carry_the_configured_region_and_address() {
    let mut h = Harness::new();
    let yaml = format!(
        "region: ap-shanghai\npublic-ip: 203.0.113.7\ndns-name: game-1.example.com\n{CONFIG}"
    );
    let cfg = config::parse(&yaml, "test.yaml", Path::new("/srv")).unwrap();
    h.fleet = Fleet::new(Arc::new(cfg), Clock::read());
    h.fleet.start();
    h.settle();
    let pid = h.pids()[0];
    h.ready(pid);
    let s = h.activated(pid, 2);
    assert!(
        s.id.starts_with("qcs::gse:ap-shanghai::gameserversession/fleet-test/gssess-"),
        "{}",
        s.id
    );
    assert_eq!(
        (s.ip_address.as_str(), s.dns_name.as_str()),
        ("203.0.113.7", "game-1.example.com")
    );
    let p = h.join(&s.id, 1).unwrap().remove(0);
    assert_eq!(
        (p.ip_address.as_str(), p.dns_name.as_str()),
        ("203.0.113.7", "game-1.example.com")
    );
    // Unset: the loopback address and no name, in region `local`.
    let mut h = Harness::new();
    let pid = h.pids()[0];
    h.ready(pid);
    let s = h.activated(pid, 2);
    assert!(s.id.starts_with("qcs::gse:local::"), "{}", s.id);
    assert_eq!(
        (s.ip_address.as_str(), s.dns_name.as_str()),
        ("127.0.0.1", "")
    );
}

#[tokio::test(start_paused = true)]
async fn session_changes_without_an_event_are_reported_as_changes() {
    let mut h = Harness::new();
    let pid = h.pids()[0];
    h.ready(pid);
    let s = h.activated(pid, 4);
    let changed = Change::Session(s.id.clone());
    h.changes.clear();
    h.fleet
        .control(
            Control::UpdateSession(SessionUpdate {
                gss_id: s.id.clone(),
                name: Some("renamed".into()),
                ..Default::default()
            }),
            h.now,
        )
        .unwrap();
    h.settle();
    assert_eq!(h.changes, std::slice::from_ref(&changed));
    // Custom counts: a change only when they differ.
    for _ in 0..2 {
        h.sdk(pid, SdkCall::ReportCustomData { current: 1, max: 5 })
            .unwrap();
    }
    assert_eq!(h.changes, [changed.clone(), changed.clone()]);
    h.sdk(
        pid,
        SdkCall::UpdatePolicy {
            gss_id: s.id.clone(),
            policy: "DENY_ALL".into(),
        },
    )
    .unwrap();
    assert_eq!(h.changes.len(), 3);
    // Refused updates change nothing.
    let bad = h.fleet.control(
        Control::UpdateSession(SessionUpdate {
            gss_id: s.id.clone(),
            max_players: Some(-1),
            ..Default::default()
        }),
        h.now,
    );
    assert!(bad.is_err());
    h.settle();
    assert_eq!(h.changes.len(), 3);
}

#[tokio::test(start_paused = true)]
async fn host_state_reads_processes_sessions_and_their_players_at_once() {
    let mut h = Harness::new();
    let pids = h.pids();
    h.ready(pids[0]);
    let first = h.activated(pids[0], 4);
    let players = h.join(&first.id, 2).unwrap();
    h.ready(pids[1]);
    let second = h.activated(pids[1], 4);
    let state =
        |h: &mut Harness, scope| match h.fleet.control(Control::DescribeHostState(scope), h.now) {
            Ok(ControlReply::HostState(s)) => *s,
            other => panic!("{other:?}"),
        };
    let all = state(&mut h, HostStateScope::All);
    assert_eq!(all.processes.len(), 3);
    assert!(
        all.processes
            .windows(2)
            .all(|w| w[0].process_id < w[1].process_id)
    );
    let ids: Vec<&str> = all.sessions.iter().map(|s| s.session.id.as_str()).collect();
    assert_eq!(ids, [first.id.as_str(), second.id.as_str()], "oldest first");
    let got: Vec<&str> = all.sessions[0]
        .players
        .iter()
        .map(|p| p.id.as_str())
        .collect();
    assert_eq!(got, [players[0].id.as_str(), players[1].id.as_str()]);
    assert!(all.sessions[1].players.is_empty());
    // A scope names sessions; one the fleet does not hold is left out.
    let some = state(
        &mut h,
        HostStateScope::Sessions(vec!["gone".into(), second.id.clone()]),
    );
    assert_eq!(some.processes.len(), 3);
    assert_eq!(some.sessions.len(), 1);
    assert_eq!(some.sessions[0].session.id, second.id);
    assert!(Control::DescribeHostState(HostStateScope::All).is_query());
}

#[tokio::test(start_paused = true)]
async fn an_exit_asks_for_the_archive_of_what_the_process_named_and_the_sessions_it_hosted() {
    let mut h = Harness::new();
    let pid = h.pids()[0];
    let id = h.proc(pid).id.clone();
    let log_paths = vec!["/local/game/logs/game.log".to_string(), "logs".to_string()];
    h.sdk(
        pid,
        SdkCall::ProcessReady {
            client_port: 7000,
            grpc_port: 9000,
            log_paths: log_paths.clone(),
        },
    )
    .unwrap();
    let first = h.activated(pid, 4);
    h.sdk(
        pid,
        SdkCall::TerminateSession {
            gss_id: first.id.clone(),
        },
    )
    .unwrap();
    let second = h.activated(pid, 4);
    h.advance(Duration::from_secs(3));
    let effects = h.exit(pid, 0);
    let jobs: Vec<&crate::logarchive::Job> = effects
        .iter()
        .filter_map(|e| match e {
            Effect::ArchiveLogs { job, .. } => Some(&**job),
            _ => None,
        })
        .collect();
    assert_eq!(jobs.len(), 1, "{effects:?}");
    let j = jobs[0];
    assert_eq!(j.process_id, id);
    assert_eq!(j.log_paths, log_paths);
    assert_eq!(j.sessions, [first.id, second.id]);
    assert_eq!(j.event_code, "SERVER_PROCESS_CRASHED");
    assert_eq!(
        j.ended_at.duration_since(j.started_at).unwrap(),
        Duration::from_secs(3)
    );
    // A process that never called ProcessReady is archived too (its output), naming nothing.
    let other = h.pids()[0];
    let effects = h.exit(other, 1);
    assert!(
        effects
            .iter()
            .any(|e| matches!(e, Effect::ArchiveLogs { job: j, .. } if j.log_paths.is_empty() && j.sessions.is_empty())),
        "{effects:?}"
    );
}
