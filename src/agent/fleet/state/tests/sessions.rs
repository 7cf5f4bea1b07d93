//! Game server sessions and player sessions, the SDK door and session protection.

use super::*;

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
