//! Snapshots and restores across an agent restart: adoption, lost processes, refused records.

use super::*;

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
