//! What the fleet tells others: placements, the fields of sessions, changes without events, the host state, log archive requests.

use super::*;

/// A placement on a reserved host waits (it is not failed) and is served once the host is
/// unreserved; one through a queue this host does not serve fails at once.
#[tokio::test(start_paused = true)]
async fn a_placement_waits_out_a_reservation_and_fails_when_nothing_here_serves_it() {
    use crate::api::placement::{PlacementRequest, Status};
    use crate::api::queue::QueueInput;
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
    let jobs: Vec<&crate::agent::logarchive::Job> = effects
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
