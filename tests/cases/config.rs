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
fn a_control_api_off_loopback_needs_a_private_keys_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.yaml");
    let yaml = crate::helper::config(&crate::helper::entry("", 1), "")
        .replace("capi-listen: 127.0.0.1:0", "capi-listen: 0.0.0.0:0")
        .replace("instance-id: ins-test", "instance-id: \"\"");
    std::fs::write(&path, yaml).unwrap();
    for args in [&["check-config"][..], &["run", "--config"][..]] {
        let out = Command::new(AGENT).args(args).arg(&path).output().unwrap();
        assert_eq!(out.status.code(), Some(64), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("agent.yaml:6: capi-listen: 0.0.0.0:0 is not a loopback address"),
            "{err}"
        );
        assert!(err.contains("capi-keys-file"), "{err}");
        assert!(
            err.contains("agent.yaml:2: instance-id"),
            "every problem is listed: {err}"
        );
    }
    // With keys it may listen anywhere, but only if the file is the owner's alone.
    use std::os::unix::fs::PermissionsExt;
    let keys = dir.path().join("keys");
    std::fs::write(&keys, "AKIDstudio secret\n").unwrap();
    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o644)).unwrap();
    let yaml = crate::helper::config(&crate::helper::entry("", 1), "capi-keys-file: keys")
        .replace("capi-listen: 127.0.0.1:0", "capi-listen: 0.0.0.0:0");
    std::fs::write(&path, yaml).unwrap();
    let check = || {
        Command::new(AGENT)
            .arg("check-config")
            .arg(&path)
            .output()
            .unwrap()
    };
    let out = check();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("capi-keys-file") && err.contains("chmod 600"),
        "{err}"
    );
    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = check();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
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

#[test]
fn run_installs_the_configured_build_once_and_runs_it() {
    use crate::helper::{Agent, FAKE_SERVER, entry, wait_for};
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let zip_path = dir.path().join("build.zip");
    let mut w = zip::ZipWriter::new(std::fs::File::create(&zip_path).unwrap());
    let opts = zip::write::SimpleFileOptions::default().unix_permissions(0o755);
    w.start_file("srv", opts).unwrap();
    write!(w, "#!/bin/sh\nexec {FAKE_SERVER} \"$@\"\n").unwrap();
    w.start_file("install.sh", opts).unwrap();
    w.write_all(b"#!/bin/sh\necho installed >> ../../installs.txt\n")
        .unwrap();
    w.finish().unwrap();
    let yaml = crate::helper::config(
        &entry("", 1).replace("/local/game/server", "/local/game/srv"),
        &format!(
            "build: {}\ntimeouts: {{ stop-grace: 200ms, shutdown: 1s }}",
            zip_path.display()
        ),
    );
    let mut agent = Agent::start_with(&yaml, |game| std::fs::remove_dir_all(game).unwrap());
    agent.wait_ready(1);
    let game = agent.path("game");
    assert!(std::fs::symlink_metadata(&game).unwrap().is_symlink());
    assert!(game.join("srv").is_file());
    agent.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(agent.wait_exit().code(), Some(0));
    assert!(
        !agent.path("data/endpoints.json").exists(),
        "removed at exit"
    );
    // A restart with the same build neither unpacks nor installs again.
    let log_path = agent.path("restart.err");
    let child = Command::new(AGENT)
        .args(["run", "--config"])
        .arg(agent.path("agent.yaml"))
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let mut child = crate::helper::KillOnDrop(child);
    let endpoints = agent.path("data/endpoints.json");
    wait_for("restart", || endpoints.exists().then_some(()));
    let pid = nix::unistd::Pid::from_raw(child.0.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    assert_eq!(child.0.wait().unwrap().code(), Some(0));
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        log.contains("build already unpacked and installed"),
        "{log}"
    );
    let installs = std::fs::read_to_string(agent.path("data/installs.txt")).unwrap();
    assert_eq!(installs.lines().count(), 1);
}

#[test]
fn a_second_agent_on_one_data_dir_is_a_config_error() {
    let agent =
        crate::helper::Agent::start(&crate::helper::config(&crate::helper::entry("", 1), ""));
    let config = agent.path("agent.yaml");
    let second = std::process::Command::new(crate::helper::AGENT)
        .args(["run", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(second.status.code(), Some(64));
    let said = String::from_utf8_lossy(&second.stderr);
    let pid = agent.child.as_ref().unwrap().id().to_string();
    assert!(said.contains("in use by a running gse-agent"), "{said}");
    assert!(said.contains(&pid), "{said}");
    let check = std::process::Command::new(crate::helper::AGENT)
        .arg("check-config")
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(check.status.code(), Some(64));
    assert!(
        String::from_utf8_lossy(&check.stderr).contains("in use by a running gse-agent"),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    // The first agent is untouched.
    agent.wait_ready(1);
}

/// What the host must provide is checked by check-config and run alike, before anything
/// starts: a build that is not there and two listeners on one port are config errors (exit 64,
/// every one with its line), not a failed start (exit 1).
#[test]
fn a_missing_build_and_a_port_used_twice_fail_check_config_and_run_alike() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.yaml");
    std::fs::write(
        &path,
        "fleet-id: fleet-a
data-dir: ./data
build: ./builds/v1.zip
sdk-listen: 127.0.0.1:47001
capi-listen: 127.0.0.1:47001
runtime-configuration:
  ServerProcesses:
    - { LaunchPath: /local/game/server, ConcurrentExecutions: 1 }
",
    )
    .unwrap();
    for args in [&["check-config"][..], &["run", "--config"][..]] {
        let out = Command::new(AGENT).args(args).arg(&path).output().unwrap();
        assert_eq!(out.status.code(), Some(64), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("agent.yaml:5: capi-listen: 127.0.0.1:47001 overlaps sdk-listen"),
            "{args:?}: {err}"
        );
        // Only once the file is valid are the host's parts looked at.
        assert!(!err.contains("builds/v1.zip"), "{args:?}: {err}");
    }
    let fixed = std::fs::read_to_string(&path)
        .unwrap()
        .replace("capi-listen: 127.0.0.1:47001", "capi-listen: 127.0.0.1:0");
    std::fs::write(&path, fixed).unwrap();
    for args in [&["check-config"][..], &["run", "--config"][..]] {
        let out = Command::new(AGENT).args(args).arg(&path).output().unwrap();
        assert_eq!(out.status.code(), Some(64), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("agent.yaml:3: build:"), "{args:?}: {err}");
        assert!(err.contains("builds/v1.zip"), "{args:?}: {err}");
        assert!(!dir.path().join("data").exists(), "nothing was started");
    }
}

/// Two fleets on one host, one agent each (its own data-dir and SDK port): every game reaches
/// its own agent through GSE_SDK_ADDRESS, and each fleet's sessions run on its own games.
#[test]
fn two_fleets_on_one_host_each_run_on_their_own_agent() {
    let yaml = |fleet: &str| {
        crate::helper::config(&crate::helper::entry("", 2), "")
            .replace("fleet-id: fleet-test", &format!("fleet-id: {fleet}"))
    };
    let a = crate::helper::Agent::start(&yaml("fleet-a"));
    let b = crate::helper::Agent::start(&yaml("fleet-b"));
    assert_ne!(a.sdk, b.sdk);
    let ready_a = a.wait_ready(2);
    let ready_b = b.wait_ready(2);
    let pids = |ready: &[serde_json::Value]| -> Vec<u64> {
        ready.iter().map(|p| p["Pid"].as_u64().unwrap()).collect()
    };
    let (pids_a, pids_b) = (pids(&ready_a), pids(&ready_b));
    assert!(
        pids_a.iter().all(|p| !pids_b.contains(p)),
        "{pids_a:?} {pids_b:?}"
    );
    for (agent, fleet, own) in [(&a, "fleet-a", &pids_a), (&b, "fleet-b", &pids_b)] {
        let session = agent.ok(serde_json::json!({
            "Action": "CreateGameServerSession",
            "FleetId": fleet,
            "MaximumPlayerSessionCount": 2,
        }))["GameServerSession"]
            .clone();
        let id = session["GameServerSessionId"].as_str().unwrap().to_string();
        assert!(id.contains(&format!("/{fleet}/")), "{id}");
        agent.wait_session_status(&id, "ACTIVE");
        // Activated by one of this agent's own games.
        let host = agent
            .processes()
            .into_iter()
            .find(|p| p["GameServerSessionId"] == id.as_str())
            .unwrap_or_else(|| panic!("no process of {fleet} hosts {id}"));
        assert!(own.contains(&host["Pid"].as_u64().unwrap()), "{host}");
    }
}
