use std::time::{Duration, SystemTime};

use serde_json::json;

use super::table::{bytes, duration, render};
use super::{StatusError, capi_address, parse_interval};

fn at(rfc3339: &str) -> SystemTime {
    humantime::parse_rfc3339(rfc3339).unwrap()
}

fn answer() -> serde_json::Value {
    json!({
        "Instance": {
            "Instance": {"FleetId": "fleet-test", "InstanceId": "ins-test"},
            "State": "Active",
            "HealthyProcessCnt": 1, "ActiveProcessCnt": 2, "GameSessionCnt": 1,
            "MaxGameSessionCnt": 3, "PlayerSessionCnt": 2, "MaxPlayerSessionCnt": 4,
            "ProcessCnt": 2, "DesiredProcessCnt": 3, "LaunchFailureCnt": 7, "PausedEntryCnt": 1,
        },
        "ServerProcesses": [
            {
                "ProcessId": "proc-0-0-1", "Pid": 4242, "Status": "ACTIVE", "Healthy": true,
                "StartTime": "2026-01-01T11:58:55Z", "CpuSeconds": 1.234, "RssBytes": 13_002_342,
                "GameServerSessionId": "qcs::gse:local::gameserversession/fleet-test/gssess-0123456789abcdef",
                "CurrentPlayerSessionCount": 2, "Restarts": 0, "LastExit": null,
            },
            {
                "ProcessId": "proc-0-1-3", "Pid": 77, "Status": "ACTIVE", "Healthy": false,
                "StartTime": "2026-01-01T12:00:00Z", "CpuSeconds": null, "RssBytes": null,
                "GameServerSessionId": null, "CurrentPlayerSessionCount": 0, "Restarts": 2,
                "LastExit": {"ProcessId": "proc-0-1-2", "EventCode": "SERVER_PROCESS_CRASHED",
                             "Reason": "exit code 3; last output: last-words", "Time": "2026-01-01T11:59:59Z"},
            },
        ],
        "Entries": [
            {"EntryNumber": 0, "LaunchPath": "/local/game/server", "Parameters": "",
             "DesiredProcessCnt": 2, "ProcessCnt": 2, "LaunchFailureCnt": 0, "LastLaunchError": null,
             "PausedUntil": null, "LastExit": null},
            {"EntryNumber": 1, "LaunchPath": "/local/game/missing", "Parameters": "",
             "DesiredProcessCnt": 1, "ProcessCnt": 0, "LaunchFailureCnt": 7,
             "LastLaunchError": "launch path /srv/game/missing does not exist",
             "PausedUntil": "2026-01-01T12:05:10Z", "LastExit": null},
        ],
        "Events": [
            {"EventTime": "2026-01-01T11:59:59.120Z", "EventCode": "SERVER_PROCESS_CRASHED",
             "ProcessId": "proc-0-1-2", "Message": "process crashed (exit code 3)"},
            {"EventTime": "2026-01-01T12:00:10.000Z", "EventCode": "SERVER_PROCESS_CRASH_LOOP",
             "Message": "/local/game/missing: 7 failures\nof 1 slot"},
        ],
    })
}

#[test]
fn the_table_shows_processes_entries_and_events_aligned() {
    let text = render(&answer(), at("2026-01-01T12:01:00Z")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        "fleet-test ins-test: 2 of 3 processes running (1 healthy), 1 of 3 game server sessions, 2 players, 7 failed launches"
    );
    let header = lines[2];
    assert!(header.starts_with("PROCESS     STATE"), "{text}");
    let first = lines[3];
    let second = lines[4];
    // Every column starts where its header does (counted in characters: `…` is one).
    let starts = |line: &str, at: usize| {
        let chars: Vec<char> = line.chars().collect();
        chars[at] != ' ' && chars[at - 1] == ' '
    };
    for column in [
        "PID",
        "UPTIME",
        "CPU",
        "RSS",
        "SESSION",
        "PLAYERS",
        "RESTARTS",
        "LAST EXIT",
    ] {
        let at = header.find(column).unwrap();
        assert!(starts(first, at), "{column} in {first:?}\n{text}");
        assert!(starts(second, at), "{column} in {second:?}\n{text}");
    }
    assert!(first.contains("4242"), "{first}");
    assert!(first.contains("2m05s"), "uptime: {first}");
    assert!(first.contains("1.23s"), "cpu: {first}");
    assert!(first.contains("12.4MiB"), "rss: {first}");
    assert!(first.contains("gssess-0123456789…"), "session: {first}");
    assert!(first.trim_end().ends_with('-'), "no last exit: {first}");
    assert!(second.contains("ACTIVE/unhealthy"), "{second}");
    assert!(
        second.ends_with("SERVER_PROCESS_CRASHED: exit code 3; last output: last-words"),
        "{second}"
    );
    let paused = lines
        .iter()
        .find(|l| l.contains("/local/game/missing"))
        .unwrap();
    assert!(
        paused.contains("0/1") && paused.contains("2026-01-01T12:05:10Z (in 4m10s)"),
        "{paused}"
    );
    assert!(
        paused.ends_with("launch path /srv/game/missing does not exist"),
        "{paused}"
    );
    assert!(text.contains("LAST EVENTS"), "{text}");
    // A message with a newline stays on its line; an event without a process shows '-'.
    let loop_line = lines
        .iter()
        .find(|l| l.contains("SERVER_PROCESS_CRASH_LOOP"))
        .unwrap();
    assert!(loop_line.contains("  -  "), "{loop_line}");
    assert!(loop_line.ends_with("7 failures of 1 slot"), "{loop_line}");
    assert!(
        lines.iter().all(|l| l.len() == l.trim_end().len()),
        "no trailing blanks"
    );
}

#[test]
fn an_empty_fleet_and_a_foreign_answer_are_told() {
    let mut a = answer();
    a["ServerProcesses"] = json!([]);
    let text = render(&a, at("2026-01-01T12:01:00Z")).unwrap();
    assert!(text.contains("\nno processes\n"), "{text}");
    let e = render(&json!({"ServerProcesses": []}), SystemTime::now()).unwrap_err();
    assert!(e.contains("Instance"), "{e}");
}

#[test]
fn durations_and_sizes_read_at_a_glance() {
    let d = |s| duration(Duration::from_secs(s), false);
    assert_eq!(d(0), "0s");
    assert_eq!(d(59), "59s");
    assert_eq!(d(65), "1m05s");
    assert_eq!(d(7260), "2h01m");
    assert_eq!(d(3 * 86400 + 4 * 3600 + 59), "3d04h");
    assert_eq!(duration(Duration::from_millis(120), true), "0.12s");
    assert_eq!(duration(Duration::from_secs(61), true), "1m01s");
    assert_eq!(bytes(512), "512B");
    assert_eq!(bytes(1536), "1.5KiB");
    assert_eq!(bytes(3 << 30), "3.0GiB");
}

#[test]
fn watch_intervals_are_seconds_or_durations() {
    assert_eq!(parse_interval("2"), Ok(Duration::from_secs(2)));
    assert_eq!(parse_interval("0.5"), Ok(Duration::from_millis(500)));
    assert_eq!(parse_interval("250ms"), Ok(Duration::from_millis(250)));
    assert!(parse_interval("10ms").unwrap_err().contains("100ms"));
    assert!(parse_interval("-1").unwrap_err().contains("\"-1\""));
    assert!(parse_interval("soon").unwrap_err().contains("\"soon\""));
}

#[test]
fn the_endpoints_file_gives_the_control_api_address() {
    assert_eq!(
        capi_address(r#"{"SdkAddress": "127.0.0.1:1", "CapiAddress": "127.0.0.1:8080"}"#),
        Ok(Some("127.0.0.1:8080".parse().unwrap()))
    );
    assert_eq!(capi_address(r#"{"CapiAddress": null}"#), Ok(None));
    assert!(capi_address("{}").unwrap_err().contains("no CapiAddress"));
    assert!(
        capi_address(r#"{"CapiAddress": "x"}"#)
            .unwrap_err()
            .contains("\"x\"")
    );
    assert!(capi_address("not json").is_err());
}

#[test]
fn a_missing_endpoints_file_means_no_agent_and_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "fleet-id: fleet-x\ndata-dir: {}\nruntime-configuration:\n  ServerProcesses:\n    - LaunchPath: /local/game/server\n      ConcurrentExecutions: 1\n",
        dir.path().join("data").display()
    );
    let config = dir.path().join("agent.yaml");
    std::fs::write(&config, yaml).unwrap();
    let e = super::resolve(None, Some(&config)).unwrap_err();
    assert!(matches!(e, StatusError::NoEndpoints { .. }), "{e}");
    assert_eq!(e.exit_code(), 1);
    let text = e.to_string();
    assert!(
        text.contains("endpoints.json") && text.contains("--capi"),
        "{text}"
    );
    let bad = super::resolve(None, Some(&dir.path().join("nope.yaml"))).unwrap_err();
    assert_eq!(bad.exit_code(), 64, "{bad}");
}
