use std::process::Command;

use crate::helper::AGENT;

#[test]
fn bad_config_exits_64_listing_every_problem_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.yaml");
    std::fs::write(
        &path,
        "fleet-id: nope
health-check: { interval: 0s }
runtime-configuration:
  ServerProcesses:
    - LaunchPath: /opt/server
      ConcurrentExecutions: 51
",
    )
    .unwrap();
    let out = Command::new(AGENT)
        .args(["run", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    for want in [
        "agent.yaml:1: fleet-id",
        "agent.yaml:2: health-check.interval",
        "agent.yaml:5: runtime-configuration.ServerProcesses[0].LaunchPath",
        "agent.yaml:6: runtime-configuration.ServerProcesses[0].ConcurrentExecutions",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
}

#[test]
fn unreadable_and_malformed_configs_exit_64() {
    let out = Command::new(AGENT)
        .args(["run", "--config", "/nonexistent/agent.yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot read config /nonexistent/agent.yaml")
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.yaml");
    std::fs::write(
        &path,
        "fleet-id: fleet-a\ntimeouts: { process-ready: soon }\n",
    )
    .unwrap();
    let out = Command::new(AGENT)
        .arg("check-config")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("a.yaml:2:") && err.contains("invalid duration \"soon\""),
        "{err}"
    );
}
