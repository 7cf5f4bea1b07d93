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

#[test]
fn tells_systemd_when_ready_and_when_stopping() {
    use std::os::unix::net::UnixDatagram;
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("notify");
    let listener = UnixDatagram::bind(&socket).unwrap();
    listener
        .set_read_timeout(Some(crate::helper::DEADLINE))
        .unwrap();
    std::fs::create_dir_all(dir.path().join("game")).unwrap();
    std::os::unix::fs::symlink(crate::helper::FAKE_SERVER, dir.path().join("game/server")).unwrap();
    let yaml = crate::helper::config(&crate::helper::entry("", 1), "");
    std::fs::write(dir.path().join("agent.yaml"), yaml).unwrap();
    let child = Command::new(AGENT)
        .args(["run", "--config"])
        .arg(dir.path().join("agent.yaml"))
        .env("NOTIFY_SOCKET", &socket)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut child = crate::helper::KillOnDrop(child);
    let mut buf = [0u8; 64];
    let n = listener.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"READY=1");
    let pid = nix::unistd::Pid::from_raw(child.0.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let n = listener.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"STOPPING=1");
    assert_eq!(child.0.wait().unwrap().code(), Some(0));
}
