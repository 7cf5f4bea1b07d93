//! Crash rehearsal's faults: decided by the fleet, handled as real faults afterwards.

use nix::sys::signal::Signal;

use super::*;
use crate::agent::fleet::api::{Fault, FaultTarget, StartFault};

fn rehearsal() -> Harness {
    Harness::with_config(&format!("chaos: enabled\n{CONFIG}"))
}

fn inject(h: &mut Harness, fault: Fault) -> Result<ControlReply, FleetError> {
    h.fleet.control(Control::InjectFault(fault), h.now)
}

fn process(h: &Harness, pid: u32) -> FaultTarget {
    FaultTarget::Process(h.proc(pid).id.clone())
}

fn signals(effects: &[Effect]) -> Vec<(u64, Signal, bool)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Signal {
                serial,
                signal,
                group,
            } => Some((*serial, *signal, *group)),
            _ => None,
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn faults_are_refused_unless_the_config_enables_them() {
    let mut h = Harness::new();
    let pid = h.pids()[0];
    let target = process(&h, pid);
    let e = inject(
        &mut h,
        Fault::Kill {
            target,
            signal: Signal::SIGKILL,
        },
    )
    .unwrap_err();
    assert!(
        matches!(&e, FleetError::Denied(m) if m.contains("chaos: enabled")),
        "{e}"
    );
    assert!(signals(&h.settle()).is_empty());
    assert!(!h.codes().iter().any(|c| c.as_str().starts_with("CHAOS_")));
}

#[tokio::test(start_paused = true)]
async fn a_kill_signals_the_process_alone_and_its_exit_is_a_crash_said_to_be_rehearsed() {
    let mut h = rehearsal();
    let pid = h.pids()[0];
    let serial = h.s(pid);
    let target = process(&h, pid);
    let r = inject(
        &mut h,
        Fault::Kill {
            target,
            signal: Signal::SIGKILL,
        },
    )
    .unwrap();
    assert!(matches!(r, ControlReply::Injected { pid: Some(p), .. } if p == pid));
    assert_eq!(signals(&h.settle()), vec![(serial, Signal::SIGKILL, false)]);
    let event = h.events.last().unwrap();
    assert_eq!(event.event_code, EventCode::ChaosProcessKilled);
    assert!(event.message.contains("SIGKILL"), "{}", event.message);
    h.exit_with(
        pid,
        ExitInfo {
            signal: Some(Signal::SIGKILL as i32),
            ..Default::default()
        },
    );
    let crash = h
        .events
        .iter()
        .find(|e| e.event_code == EventCode::ServerProcessCrashed)
        .expect("the exit is a crash");
    assert!(
        crash.message.contains("sent by crash rehearsal"),
        "{}",
        crash.message
    );
    // A SIGKILL the agent's rehearsal sent is not the OOM killer's.
    assert!(!crash.exit.as_ref().unwrap().likely_oom_kill);
    assert_eq!(h.pids().len(), 3, "replaced like any crash");
}

#[tokio::test(start_paused = true)]
async fn a_kill_names_a_process_by_its_session_and_refuses_what_does_not_end_a_process() {
    let mut h = rehearsal();
    let pid = h.pids()[0];
    h.ready(pid);
    let s = h.activated(pid, 4);
    let r = inject(
        &mut h,
        Fault::Kill {
            target: FaultTarget::Session(s.id.clone()),
            signal: Signal::SIGSEGV,
        },
    )
    .unwrap();
    assert!(matches!(r, ControlReply::Injected { pid: Some(p), .. } if p == pid));
    let target = process(&h, pid);
    let e = inject(
        &mut h,
        Fault::Kill {
            target,
            signal: Signal::SIGSTOP,
        },
    )
    .unwrap_err();
    assert!(
        matches!(
            e,
            FleetError::Invalid {
                param: "Signal",
                ..
            }
        ),
        "{e}"
    );
    let e = inject(
        &mut h,
        Fault::Kill {
            target: FaultTarget::Process("proc-9-9-9".into()),
            signal: Signal::SIGKILL,
        },
    )
    .unwrap_err();
    assert!(matches!(e, FleetError::NotFound { .. }), "{e}");
}

#[tokio::test(start_paused = true)]
async fn a_hang_stops_the_group_and_continues_it_when_its_time_is_up() {
    let mut h = rehearsal();
    let (a, b) = (h.pids()[0], h.pids()[1]);
    let (sa, sb) = (h.s(a), h.s(b));
    for pid in [a, b] {
        let target = process(&h, pid);
        inject(
            &mut h,
            Fault::Hang {
                target,
                duration: Duration::from_secs(5),
            },
        )
        .unwrap();
    }
    assert_eq!(
        signals(&h.settle()),
        vec![(sa, Signal::SIGSTOP, true), (sb, Signal::SIGSTOP, true)]
    );
    assert_eq!(h.count(EventCode::ChaosProcessHung), 2);
    assert!(signals(&h.advance(Duration::from_secs(4))).is_empty());
    // `b` ended meanwhile: only `a` is continued.
    h.exit(b, 0);
    assert_eq!(
        signals(&h.advance(Duration::from_secs(1))),
        vec![(sa, Signal::SIGCONT, true)]
    );
    let target = process(&h, a);
    let e = inject(
        &mut h,
        Fault::Hang {
            target,
            duration: Duration::from_secs(7200),
        },
    )
    .unwrap_err();
    assert!(
        matches!(
            e,
            FleetError::Invalid {
                param: "DurationSeconds",
                ..
            }
        ),
        "{e}"
    );
}

#[tokio::test(start_paused = true)]
async fn failed_health_checks_are_not_asked_of_the_game_and_end_it_as_unhealthy() {
    let mut h = rehearsal();
    let pid = h.pids()[0];
    h.ready(pid);
    let target = process(&h, pid);
    inject(
        &mut h,
        Fault::FailHealthChecks {
            target,
            count: None,
        },
    )
    .unwrap();
    h.settle();
    assert_eq!(h.count(EventCode::ChaosHealthChecksFailing), 1);
    // By default as many as the threshold (2): they end it; the game is never asked meanwhile.
    let first = h.advance(Duration::from_secs(1));
    let second = h.advance(Duration::from_secs(1));
    for effects in [&first, &second] {
        assert!(
            !effects
                .iter()
                .any(|e| matches!(e, Effect::HealthCheck { .. })),
            "{effects:?}"
        );
    }
    assert!(h.codes().contains(&EventCode::ServerProcessUnhealthy));
    let unhealthy = h
        .events
        .iter()
        .find(|e| e.event_code == EventCode::ServerProcessUnhealthy)
        .unwrap();
    assert!(
        unhealthy.message.contains("crash rehearsal"),
        "{}",
        unhealthy.message
    );
    assert!(
        second.iter().any(|e| matches!(e, Effect::Terminate { .. })),
        "{second:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn one_failed_health_check_then_the_game_is_asked_again() {
    let mut h = rehearsal();
    let pid = h.pids()[0];
    h.ready(pid);
    let target = process(&h, pid);
    inject(
        &mut h,
        Fault::FailHealthChecks {
            target,
            count: Some(1),
        },
    )
    .unwrap();
    h.settle();
    let first = h.advance(Duration::from_secs(1));
    assert!(
        !first
            .iter()
            .any(|e| matches!(e, Effect::HealthCheck { .. }))
    );
    let second = h.advance(Duration::from_secs(1));
    assert!(
        second
            .iter()
            .any(|e| matches!(e, Effect::HealthCheck { .. })),
        "{second:?}"
    );
    assert!(!h.codes().contains(&EventCode::ServerProcessUnhealthy));
}

/// Creates a session, activates it, and returns its process and the fault its
/// OnStartGameServerSession carried.
fn start_fault_of_next_create(h: &mut Harness) -> (u32, Option<StartFault>) {
    let r = h.fleet.control(
        Control::CreateSession(NewSession {
            max_players: 2,
            ..Default::default()
        }),
        h.now,
    );
    let Ok(ControlReply::Session(s)) = r else {
        panic!("{r:?}")
    };
    let fault = h
        .settle()
        .into_iter()
        .find_map(|e| match e {
            Effect::StartSession { fault, .. } => Some(fault),
            _ => None,
        })
        .expect("OnStartGameServerSession is sent");
    // One activation at a time: activate it before the next create.
    h.sdk(
        s.pid,
        SdkCall::Activate {
            gss_id: s.id.clone(),
            max_players: 0,
        },
    )
    .unwrap();
    (s.pid, fault)
}

#[tokio::test(start_paused = true)]
async fn session_start_faults_for_any_process_apply_to_the_next_calls_and_are_used_up() {
    let mut h = rehearsal();
    for pid in h.pids() {
        h.ready(pid);
    }
    let delay = StartFault::Delay(Duration::from_secs(3));
    inject(
        &mut h,
        Fault::SessionStart {
            process: None,
            count: 2,
            fault: delay,
        },
    )
    .unwrap();
    h.settle();
    assert_eq!(h.count(EventCode::ChaosSessionStartDelayed), 1);
    let faults: Vec<_> = (0..3)
        .map(|_| start_fault_of_next_create(&mut h).1)
        .collect();
    assert_eq!(faults, vec![Some(delay), Some(delay), None]);
}

#[tokio::test(start_paused = true)]
async fn a_session_start_fault_for_one_process_goes_to_its_calls_only_and_ends_with_it() {
    let mut h = rehearsal();
    let pids = h.pids();
    for pid in &pids {
        h.ready(*pid);
    }
    let target = h.proc(pids[1]).id.clone();
    inject(
        &mut h,
        Fault::SessionStart {
            process: Some(target),
            count: 5,
            fault: StartFault::Fail,
        },
    )
    .unwrap();
    h.settle();
    assert_eq!(h.count(EventCode::ChaosSessionStartFailing), 1);
    for _ in 0..3 {
        let (pid, fault) = start_fault_of_next_create(&mut h);
        let expected = (pid == pids[1]).then_some(StartFault::Fail);
        assert_eq!(fault, expected, "session on {pid}");
    }
    // Its process ended: what was armed for it is gone.
    let serial = h.s(pids[1]);
    assert!(
        h.fleet
            .start_faults
            .iter()
            .any(|f| f.serial == Some(serial))
    );
    h.exit(pids[1], 0);
    assert!(h.fleet.start_faults.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_longer_hang_made_meanwhile_holds_the_group_until_its_own_end() {
    let mut h = rehearsal();
    let pid = h.pids()[0];
    let serial = h.s(pid);
    for secs in [2, 10] {
        let target = process(&h, pid);
        inject(
            &mut h,
            Fault::Hang {
                target,
                duration: Duration::from_secs(secs),
            },
        )
        .unwrap();
    }
    h.settle();
    assert_eq!(h.fleet.hung(), vec![serial]);
    assert!(signals(&h.advance(Duration::from_secs(2))).is_empty());
    assert_eq!(
        signals(&h.advance(Duration::from_secs(8))),
        vec![(serial, Signal::SIGCONT, true)]
    );
    assert!(h.fleet.hung().is_empty());
}
