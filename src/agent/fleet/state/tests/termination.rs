//! Processes ending: shutdown, OnProcessTerminate and its deadlines, stopping processes,
//! and exit reports of earlier launches.

use super::*;

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
