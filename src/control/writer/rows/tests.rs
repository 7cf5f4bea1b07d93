//! What a group merges and what wins, without a database.

use std::sync::Arc;

use serde_json::{Value, json};

use super::*;
use crate::control::store::Batch;
use crate::upstream_proto as up;

fn src(instance: &str, stream: &str) -> Source {
    Source {
        instance_id: instance.into(),
        fleet_id: "fleet-1".into(),
        epoch: 7,
        stream: stream.into(),
        replica: "replica-a".into(),
    }
}

fn event(sequence: u64) -> up::Event {
    up::Event {
        sequence,
        code: "GAME_SESSION_CREATED".into(),
        ..Default::default()
    }
}

fn session(id: &str, status: &str) -> Value {
    json!({"GameServerSessionId": id, "Status": status})
}

fn snapshot(sessions: &[Value], processes: &[(&str, bool)], complete: bool) -> up::Snapshot {
    up::Snapshot {
        complete,
        game_server_sessions_json: sessions.iter().map(Value::to_string).collect(),
        processes: processes
            .iter()
            .map(|(gss, healthy)| up::ProcessState {
                status: "ACTIVE".into(),
                healthy: *healthy,
                game_server_session_id: (*gss).into(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

#[test]
fn each_write_gets_its_own_highest_sequence() {
    let a = Write::Relay {
        src: src("ins-a", "s1"),
        batch: Arc::new(Batch {
            events: vec![event(3), event(5), event(4)],
            ..Default::default()
        }),
        current: true,
    };
    let made = Write::Created {
        fleet: "fleet-1".into(),
        instance: "ins-a".into(),
        session: None,
        token: None,
        counted: true,
    };
    let stale = Write::Relay {
        src: src("ins-b", "old"),
        batch: Arc::new(Batch {
            events: vec![event(9)],
            ..Default::default()
        }),
        current: false,
    };
    let rows = Rows::of(&[&a, &made, &stale]);
    assert_eq!(rows.highest, vec![Some(5), None, Some(9)]);
    assert!(!rows.activates());
    assert_eq!(rows.events.sequence, vec![3, 5, 4, 9]);
    // A stream the hub no longer holds stores its events and nothing of the host.
    assert_eq!(rows.hosts.keys().collect::<Vec<_>>(), vec!["ins-a"]);
}

#[test]
fn the_latest_snapshot_wins_and_sets_the_free_count() {
    let first = Write::Relay {
        src: src("ins-a", "s1"),
        batch: Arc::new(Batch {
            snapshots: vec![
                snapshot(
                    &[session("g1", "ACTIVATING")],
                    &[("g1", true), ("", true)],
                    false,
                ),
                snapshot(
                    &[session("g1", "ACTIVE")],
                    &[("g1", true), ("", true), ("", false)],
                    false,
                ),
            ],
            ..Default::default()
        }),
        current: true,
    };
    let rows = Rows::of(&[&first]);
    assert_eq!(rows.reported.rows.len(), 1);
    assert_eq!(rows.reported.rows[0].1.body["Status"], "ACTIVE");
    assert!(rows.activates());
    let host = &rows.hosts["ins-a"];
    // One idle healthy process (the unhealthy one is not free), three in all.
    assert_eq!(host.idle, Some(1));
    assert_eq!(host.processes, Some(3));
    assert_eq!(host.busy, Some(format!("{{{}}}", session_key("g1"))));
    assert!(rows.complete.is_empty());
}

#[test]
fn an_activation_event_marks_its_session_active() {
    let mut activated = event(4);
    activated.code = "GAME_SESSION_ACTIVATED".into();
    activated.game_server_session_id = "g1".into();
    let w = Write::Relay {
        src: src("ins-a", "s1"),
        batch: Arc::new(Batch {
            events: vec![event(3), activated],
            ..Default::default()
        }),
        current: true,
    };
    let rows = Rows::of(&[&w]);
    assert_eq!(rows.activated, vec!["g1".to_string()]);
    assert!(rows.activates());
}

#[test]
fn session_keys_are_stable_and_distinct() {
    // FNV-1a's published value for "a": the key does not change between builds.
    assert_eq!(session_key("a") as u64, 0xaf63_dc4c_8601_ec8c);
    assert_ne!(session_key("gss-1"), session_key("gss-2"));
    assert_eq!(
        keys(["a", "b"].into_iter()),
        format!("{{{},{}}}", session_key("a"), session_key("b"))
    );
    assert_eq!(keys(std::iter::empty()), "{}");
}

#[test]
fn creates_on_one_host_are_counted_together() {
    let create = |gss: Option<&str>, token: Option<&str>, counted| Write::Created {
        fleet: "fleet-1".into(),
        instance: "ins-a".into(),
        session: gss.map(|g| session(g, "ACTIVATING")),
        token: token.map(Into::into),
        counted,
    };
    let rows = Rows::of(&[
        &create(Some("g1"), Some("t1"), true),
        &create(Some("g2"), None, false),
        &create(None, None, true),
    ]);
    assert_eq!(rows.counts["ins-a"], (2, vec!["g1".into(), "g2".into()]));
    assert_eq!(rows.tokens, vec![("t1".into(), "g1".into())]);
    assert_eq!(rows.made.ids(), vec!["g1".to_string(), "g2".to_string()]);
}

#[test]
fn a_complete_snapshot_lists_what_the_host_still_has() {
    let w = Write::Relay {
        src: src("ins-a", "s1"),
        batch: Arc::new(Batch {
            snapshots: vec![snapshot(&[session("g1", "ACTIVE")], &[("g1", true)], true)],
            ..Default::default()
        }),
        current: true,
    };
    let rows = Rows::of(&[&w]);
    assert_eq!(rows.complete, vec![("ins-a".into(), vec!["g1".into()])]);
}

#[test]
fn players_joined_and_reported_stay_apart() {
    let p = json!({"PlayerSessionId": "p1", "GameServerSessionId": "g1", "Status": "RESERVED"});
    let joined = Write::Players(vec![p.clone(), p.clone()]);
    let mut s = snapshot(&[], &[], false);
    s.player_sessions_json = vec![p.to_string()];
    let reported = Write::Relay {
        src: src("ins-a", "s1"),
        batch: Arc::new(Batch {
            snapshots: vec![s],
            ..Default::default()
        }),
        current: true,
    };
    let rows = Rows::of(&[&joined, &reported]);
    assert_eq!(rows.players_joined.ids(), vec!["p1".to_string()]);
    assert_eq!(rows.players_reported.ids(), vec!["p1".to_string()]);
}
