use super::*;
use crate::agent::fleet::{EntryGauge, ProcessGauge};

#[test]
fn process_ids_give_entry_and_generation() {
    assert_eq!(entry_and_generation("proc-0-1-3"), Some(("0", 3)));
    assert_eq!(entry_and_generation("proc-12-0-1"), Some(("12", 1)));
    for bad in [
        "proc-0-1",
        "proc-x-1-2",
        "proc-0-1-2-3",
        "gssess-1",
        "proc-0-1-y",
    ] {
        assert_eq!(entry_and_generation(bad), None, "{bad}");
    }
}

fn fleet() -> FleetGauges {
    FleetGauges {
        entries: vec![EntryGauge {
            number: 0,
            launch_path: "/local/game/server".into(),
            parameters: "--mode \"duel\"".into(),
            paused_for: None,
            launch_failures: 0,
        }],
        processes: vec![
            ProcessGauge {
                process_id: "proc-0-0-1".into(),
                pid: 100,
                entry: 0,
                phase: "ACTIVE",
            },
            ProcessGauge {
                process_id: "proc-0-1-2".into(),
                pid: 101,
                entry: 0,
                phase: "LAUNCHING",
            },
        ],
        sessions: [("ACTIVE", 1)].into_iter().collect(),
        players: [("RESERVED", 2), ("ACTIVE", 1)].into_iter().collect(),
        placement_outcomes: [("FULFILLED", 3)].into_iter().collect(),
        placements_pending: 1,
        health_check_failures: 4,
        slots: 2,
        slots_running: 2,
        stopping: false,
    }
}

/// The value of the series `name{labels}` (labels as written, in order), if served.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.parse().unwrap())
}

#[test]
fn fleet_counts_become_series_and_zero_phases_stay_listed() {
    let m = Metrics::new(false);
    m.observe_fleet(Some(&fleet()));
    let text = m.encode();
    let v = |s| value(&text, s);
    assert_eq!(
        v("gse_agent_processes{entry=\"0\",phase=\"ACTIVE\"}"),
        Some(1.0)
    );
    assert_eq!(
        v("gse_agent_processes{entry=\"0\",phase=\"LAUNCHING\"}"),
        Some(1.0)
    );
    assert_eq!(
        v("gse_agent_processes{entry=\"0\",phase=\"ENDING\"}"),
        Some(0.0)
    );
    assert_eq!(
        v("gse_agent_game_server_sessions{status=\"ACTIVE\"}"),
        Some(1.0)
    );
    assert_eq!(
        v("gse_agent_player_sessions{status=\"RESERVED\"}"),
        Some(2.0)
    );
    assert_eq!(
        v("gse_agent_placements_total{outcome=\"FULFILLED\"}"),
        Some(3.0)
    );
    assert_eq!(v("gse_agent_placements_pending"), Some(1.0));
    assert_eq!(v("gse_agent_health_check_failures_total"), Some(4.0));
    // Label values are escaped.
    assert!(
        text.contains(r#"gse_agent_entry_info{entry="0",launch_path="/local/game/server",parameters="--mode \"duel\""} 1"#),
        "{text}"
    );
    // No control plane: no upstream series.
    assert!(!text.contains("upstream"), "{text}");
    assert!(text.ends_with("# EOF\n"));
    // A counter read from the state goes up to the state's total, never down.
    assert_eq!(
        v("gse_agent_entry_launch_failures_total{entry=\"0\"}"),
        Some(0.0)
    );
    let mut later = fleet();
    later.health_check_failures = 6;
    later.entries[0].launch_failures = 7;
    later.sessions.clear();
    m.observe_fleet(Some(&later));
    let text = m.encode();
    assert_eq!(
        value(&text, "gse_agent_health_check_failures_total"),
        Some(6.0)
    );
    assert_eq!(
        value(&text, "gse_agent_entry_launch_failures_total{entry=\"0\"}"),
        Some(7.0),
        "the entry's count, not added to the last one"
    );
    assert_eq!(
        value(&text, "gse_agent_game_server_sessions{status=\"ACTIVE\"}"),
        None
    );
    // No answer from the fleet: no stale counts.
    m.observe_fleet(None);
    assert_eq!(
        value(
            &m.encode(),
            "gse_agent_processes{entry=\"0\",phase=\"ACTIVE\"}"
        ),
        None
    );
}

#[test]
fn events_count_restarts_exits_crash_loops_and_the_link() {
    let m = Metrics::new(true);
    let started = |id: &str| Event::new(EventCode::ServerProcessStarted, "").process(id, Some(1));
    m.record(&started("proc-0-0-1"));
    m.record(&Event::new(EventCode::ServerProcessCrashed, "").process("proc-0-0-1", Some(1)));
    m.record(&started("proc-0-0-2"));
    m.record(&Event::new(EventCode::ServerProcessCrashLoop, ""));
    m.record(&Event::new(EventCode::UpstreamConnected, ""));
    let text = m.encode();
    let v = |s| value(&text, s);
    assert_eq!(
        v("gse_agent_process_restarts_total{entry=\"0\"}"),
        Some(1.0)
    );
    assert_eq!(
        v("gse_agent_process_exits_total{entry=\"0\",code=\"SERVER_PROCESS_CRASHED\"}"),
        Some(1.0)
    );
    assert_eq!(v("gse_agent_crash_loops_total"), Some(1.0));
    assert_eq!(
        v("gse_agent_events_total{code=\"SERVER_PROCESS_STARTED\"}"),
        Some(2.0)
    );
    assert_eq!(v("gse_agent_upstream_connected"), Some(1.0));
    m.record(&Event::new(EventCode::UpstreamDisconnected, ""));
    assert_eq!(
        value(&m.encode(), "gse_agent_upstream_connected"),
        Some(0.0)
    );
}

#[test]
fn sdk_calls_are_counted_by_result_and_timed() {
    let m = Metrics::new(false);
    m.sdk_call("ProcessReady", SdkResult::Ok, Duration::from_micros(300));
    m.sdk_call("ProcessReady", SdkResult::Refused, Duration::from_millis(2));
    let text = m.encode();
    let v = |s| value(&text, s);
    assert_eq!(
        v("gse_agent_sdk_calls_total{rpc=\"ProcessReady\",result=\"ok\"}"),
        Some(1.0)
    );
    assert_eq!(
        v("gse_agent_sdk_calls_total{rpc=\"ProcessReady\",result=\"refused\"}"),
        Some(1.0)
    );
    assert_eq!(
        v("gse_agent_sdk_call_duration_seconds_count{rpc=\"ProcessReady\"}"),
        Some(2.0)
    );
    // 300 µs falls in the 0.4 ms bucket, 2 ms in the 6.4 ms one.
    assert_eq!(
        v("gse_agent_sdk_call_duration_seconds_bucket{le=\"0.0004\",rpc=\"ProcessReady\"}"),
        Some(1.0)
    );
}

#[test]
fn samples_replace_the_last_ones() {
    let m = Metrics::new(false);
    let procs = vec![
        ("proc-0-0-1".to_string(), 0, 100),
        ("proc-0-1-1".to_string(), 0, 101),
    ];
    let usage = |pid| Usage {
        pid,
        cpu_seconds: 1.5,
        rss_bytes: 4096,
        open_fds: Some(7),
    };
    m.observe_usage(&procs, &[usage(100), usage(101)], Duration::from_micros(50));
    let text = m.encode();
    assert_eq!(
        value(
            &text,
            "gse_agent_process_resident_memory_bytes{process_id=\"proc-0-1-1\",entry=\"0\"}"
        ),
        Some(4096.0)
    );
    assert_eq!(
        value(
            &text,
            "gse_agent_process_cpu_seconds_total{process_id=\"proc-0-0-1\",entry=\"0\"}"
        ),
        Some(1.5)
    );
    // proc-0-1-1 ended: its series go.
    m.observe_usage(&procs[..1], &[usage(100)], Duration::from_micros(50));
    let text = m.encode();
    assert!(!text.contains("proc-0-1-1"), "{text}");
    assert_eq!(
        value(
            &text,
            "gse_agent_process_open_fds{process_id=\"proc-0-0-1\",entry=\"0\"}"
        ),
        Some(7.0)
    );
}

#[test]
fn readiness_names_what_is_missing() {
    let g = fleet();
    let (ready, body) = server::readiness(true, Ok(&g));
    assert!(ready, "{body}");
    assert!(
        body.starts_with("ready: ") && body.contains("2 of 2"),
        "{body}"
    );
    let (ready, body) = server::readiness(false, Ok(&g));
    assert!(
        !ready && body.contains("SDK server is not serving"),
        "{body}"
    );
    let mut short = fleet();
    short.slots_running = 1;
    short.entries[0].paused_for = Some(Duration::from_secs(3600));
    let (ready, body) = server::readiness(true, Ok(&short));
    assert!(!ready, "{body}");
    assert!(body.contains("1 of 2 processes"), "{body}");
    assert!(body.contains("paused for 1h"), "{body}");
    let (ready, body) = server::readiness(true, Err("the fleet supervisor did not answer"));
    assert!(!ready && body.contains("did not answer"), "{body}");
    let mut stopping = fleet();
    stopping.stopping = true;
    assert!(!server::readiness(true, Ok(&stopping)).0);
}
