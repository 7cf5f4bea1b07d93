//! `gse-agent validate`: a good build passes; each kind of broken build fails at the right step
//! with the right event code; the JSON report says so; nothing is left behind.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::helper::{AGENT, FAKE_SERVER, KillOnDrop, children_of, wait_for};

const CONFIG: &str = "
fleet-id: fleet-validate
health-check: { interval: 100ms, timeout: 300ms, failure-threshold: 2 }
timeouts: { process-ready: 2s, process-exit: 1s, player-reservation: 5s, stop-grace: 200ms, shutdown: 2s }
protection: { policy: NoProtection, no-protection-grace: 1s }
runtime-configuration:
  ServerProcesses:
    - LaunchPath: /local/game/server
      ConcurrentExecutions: 2
  GameServerSessionActivationTimeoutSeconds: 1
";

struct Build {
    dir: tempfile::TempDir,
}

impl Build {
    /// A directory build whose `server` runs the fake server with `flags`.
    fn new(flags: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let build = dir.path().join("build");
        std::fs::create_dir(&build).unwrap();
        let script = format!("#!/bin/sh\nexec {FAKE_SERVER} {flags} \"$@\"\n");
        write_exec(&build.join("server"), &script);
        std::fs::write(dir.path().join("agent.yaml"), CONFIG).unwrap();
        std::fs::create_dir(dir.path().join("tmp")).unwrap();
        Self { dir }
    }

    /// Starts validate in the background (for interrupting it).
    fn spawn(&self) -> KillOnDrop {
        let child = Command::new(AGENT)
            .arg("validate")
            .arg(self.build())
            .arg("--config")
            .arg(self.dir.path().join("agent.yaml"))
            .env("TMPDIR", self.dir.path().join("tmp"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        KillOnDrop(child)
    }

    fn build(&self) -> PathBuf {
        self.dir.path().join("build")
    }

    fn validate(&self) -> (Option<i32>, Value, String) {
        let report = self.dir.path().join("report.json");
        let out = Command::new(AGENT)
            .arg("validate")
            .arg(self.build())
            .arg("--config")
            .arg(self.dir.path().join("agent.yaml"))
            .arg("--json")
            .arg(&report)
            .env("TMPDIR", self.dir.path().join("tmp"))
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let json = std::fs::read_to_string(&report)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or(Value::Null);
        self.assert_clean();
        (out.status.code(), json, stdout)
    }

    /// The temporary root is gone.
    fn assert_clean(&self) {
        let left: Vec<_> = std::fs::read_dir(self.dir.path().join("tmp"))
            .unwrap()
            .collect();
        assert!(left.is_empty(), "temporary root left behind: {left:?}");
    }
}

fn write_exec(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn step<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no step {name} in {report}"))
}

/// The run failed at `name` with `code`, and every later step did not run.
fn failed_at(report: &Value, name: &str, code: &str) {
    assert_eq!(report["passed"], false, "{report}");
    let s = step(report, name);
    assert_eq!(s["status"], "failed", "{report}");
    assert_eq!(s["eventCode"], code, "{s}");
    let steps = report["steps"].as_array().unwrap();
    let at = steps.iter().position(|s| s["name"] == name).unwrap();
    for later in &steps[at + 1..] {
        assert_eq!(later["status"], "not-run", "{later}");
    }
    for earlier in &steps[..at] {
        assert_ne!(earlier["status"], "failed", "{earlier}");
    }
}

#[test]
fn a_good_build_passes_every_step() {
    let b = Build::new("");
    let (code, report, table) = b.validate();
    assert_eq!(code, Some(0), "{table}");
    assert_eq!(report["passed"], true);
    for name in [
        "unpack",
        "launch-paths",
        "launch",
        "process-ready",
        "health-checks",
        "game-session",
        "player-session",
        "terminate",
        "stop",
    ] {
        assert_eq!(step(&report, name)["status"], "passed", "{name}: {report}");
    }
    assert_eq!(step(&report, "install")["status"], "skipped");
    assert!(table.contains("PASSED: the build comes up"), "{table}");
}

#[test]
fn a_zip_build_with_an_install_script_passes() {
    let b = Build::new("");
    let zip = b.dir.path().join("build.zip");
    let mut w = zip::ZipWriter::new(std::fs::File::create(&zip).unwrap());
    let opts = zip::write::SimpleFileOptions::default().unix_permissions(0o755);
    use std::io::Write;
    w.start_file("server", opts).unwrap();
    w.write_all(std::fs::read(b.build().join("server")).unwrap().as_slice())
        .unwrap();
    w.start_file("install.sh", opts).unwrap();
    w.write_all(b"#!/bin/sh\necho installed > installed.txt\n")
        .unwrap();
    w.finish().unwrap();
    let out = Command::new(AGENT)
        .arg("validate")
        .arg(&zip)
        .arg("--config")
        .arg(b.dir.path().join("agent.yaml"))
        .env("TMPDIR", b.dir.path().join("tmp"))
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{table}");
    assert!(table.contains("install            pass"), "{table}");
    b.assert_clean();
}

#[test]
fn a_build_that_crashes_on_start_fails_at_process_ready() {
    let b = Build::new("--crash-at before-ready --crash-with exit:7 --say dying-words");
    let (code, report, _) = b.validate();
    assert_eq!(code, Some(1));
    failed_at(&report, "process-ready", "SERVER_PROCESS_CRASHED");
    let s = step(&report, "process-ready");
    assert_eq!(s["exitCode"], 7);
    assert!(
        s["outputTail"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l == "dying-words"),
        "{s}"
    );
}

#[test]
fn a_build_that_never_calls_process_ready_fails_with_the_ready_timeout() {
    let (code, report, _) = Build::new("--no-ready").validate();
    assert_eq!(code, Some(1));
    failed_at(
        &report,
        "process-ready",
        "SERVER_PROCESS_PROCESS_READY_TIMEOUT",
    );
}

#[test]
fn a_build_that_fails_health_checks_fails_there() {
    let (code, report, _) = Build::new("--health unhealthy").validate();
    assert_eq!(code, Some(1));
    failed_at(&report, "health-checks", "SERVER_PROCESS_UNHEALTHY");
}

#[test]
fn a_build_that_never_activates_fails_at_the_game_session() {
    let (code, report, _) = Build::new("--skip-activation").validate();
    assert_eq!(code, Some(1));
    failed_at(&report, "game-session", "GAME_SESSION_ACTIVATION_TIMEOUT");
}

#[test]
fn a_build_that_ignores_on_process_terminate_fails_at_terminate() {
    let (code, report, _) = Build::new("--ignore-terminate --ignore-sigterm").validate();
    assert_eq!(code, Some(1));
    failed_at(&report, "terminate", "SERVER_PROCESS_FORCE_TERMINATED");
    assert_eq!(step(&report, "terminate")["signal"], "SIGKILL");
}

#[test]
fn a_failing_install_script_fails_at_install_with_its_output() {
    let b = Build::new("");
    write_exec(
        &b.build().join("install.sh"),
        "#!/bin/sh\necho fetching deps\necho 'yum: command not found' >&2\nexit 127\n",
    );
    let (code, report, _) = b.validate();
    assert_eq!(code, Some(1));
    let s = step(&report, "install");
    assert_eq!(s["status"], "failed");
    assert!(
        s["detail"].as_str().unwrap().contains("exit code 127"),
        "{s}"
    );
    let tail: Vec<&str> = s["outputTail"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    assert!(tail.contains(&"yum: command not found"), "{tail:?}");
    // Cause, evidence, what to do; and no pointer into the removed temporary root: the whole
    // log is kept beside the report instead.
    let detail = s["detail"].as_str().unwrap();
    assert!(!detail.contains("gse-validate-"), "{detail}");
    assert!(
        s["advice"].as_str().unwrap().contains("install.sh exit 0"),
        "{s}"
    );
    let kept = b.dir.path().join("report.json.install.log");
    let log = std::fs::read_to_string(&kept).unwrap();
    assert!(
        log.contains("fetching deps") && log.contains("yum: command not found"),
        "{log}"
    );
    assert!(
        report["notes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n.as_str().unwrap().contains(&kept.display().to_string())),
        "{report}"
    );
}

/// A production config's 60 s health interval and long stop grace do not make validate slow:
/// the agent's own waits are short unless --config-timings says otherwise; the deadlines the
/// game must meet stay the config's.
#[test]
fn a_production_config_validates_with_short_waits_unless_asked_not_to() {
    let b = Build::new("");
    let production = CONFIG
        .replace("interval: 100ms", "interval: 60s")
        .replace("stop-grace: 200ms", "stop-grace: 30s");
    std::fs::write(b.dir.path().join("agent.yaml"), production).unwrap();
    let (code, report, table) = b.validate();
    assert_eq!(code, Some(0), "{table}");
    let notes = report["notes"].to_string();
    assert!(notes.contains("health checks every 1s"), "{notes}");
    assert!(
        notes.contains("ProcessReady within 2s"),
        "the game's deadline is kept: {notes}"
    );
    // With --config-timings the config's interval applies (a build that never gets ready
    // fails at its 2 s deadline, before any health check is due).
    let b = Build::new("--no-ready");
    let production = CONFIG.replace("interval: 100ms", "interval: 60s");
    std::fs::write(b.dir.path().join("agent.yaml"), production).unwrap();
    let report_path = b.dir.path().join("report.json");
    let out = Command::new(AGENT)
        .arg("validate")
        .arg(b.build())
        .arg("--config")
        .arg(b.dir.path().join("agent.yaml"))
        .arg("--config-timings")
        .arg("--json")
        .arg(&report_path)
        .env("TMPDIR", b.dir.path().join("tmp"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(&report_path).unwrap()).unwrap();
    let notes = report["notes"].to_string();
    assert!(
        notes.contains("every timing from the config") && notes.contains("every 1m"),
        "{notes}"
    );
    let s = step(&report, "process-ready");
    let detail = s["detail"].as_str().unwrap();
    assert!(detail.contains("so the agent stopped it"), "{detail}");
    assert!(
        s["advice"].as_str().unwrap().contains("call ProcessReady"),
        "{s}"
    );
    b.assert_clean();
}

#[test]
fn a_missing_or_broken_launch_path_fails_at_launch_paths() {
    let b = Build::new("");
    std::fs::write(b.build().join("server"), "#!/bin/sh\r\necho hi\r\n").unwrap();
    let (code, report, _) = b.validate();
    assert_eq!(code, Some(1));
    failed_at(&report, "launch-paths", "SERVER_PROCESS_INVALID_PATH");
    assert!(
        step(&report, "launch-paths")["detail"]
            .as_str()
            .unwrap()
            .contains("CRLF")
    );
}

#[test]
fn validate_itself_failing_is_exit_2() {
    let out = Command::new(AGENT)
        .args([
            "validate",
            "/nonexistent/build.zip",
            "--launch-path",
            "/local/game/x",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(AGENT)
        .arg("validate")
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs the launch configuration"));
}

#[test]
fn ctrl_c_cleans_up_everything() {
    let b = Build::new("--no-ready --fork 1 --ignore-sigterm");
    std::fs::write(
        b.dir.path().join("agent.yaml"),
        CONFIG.replace("process-ready: 2s", "process-ready: 1h"),
    )
    .unwrap();
    let mut child = b.spawn();
    let validate_pid = child.0.id();
    // Wait until its game processes run (they are the validate process's children).
    let games = wait_for("game processes", || {
        let kids = children_of(validate_pid);
        (kids.len() >= 2).then_some(kids)
    });
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(validate_pid as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let status = wait_for("validate exit", || child.0.try_wait().unwrap());
    assert_eq!(status.code(), Some(130));
    for g in games {
        wait_for("game gone", || {
            (!crate::helper::group_running(g)).then_some(())
        });
    }
    b.assert_clean();
}

#[test]
fn ctrl_c_during_install_kills_the_script_and_cleans_up() {
    let b = Build::new("");
    let pidfile = b.dir.path().join("install.pid");
    write_exec(
        &b.build().join("install.sh"),
        &format!(
            "#!/bin/sh\nsleep 600 &\necho $! > {}\nwait\n",
            pidfile.display()
        ),
    );
    let mut child = b.spawn();
    let sleeper: i32 = wait_for("install.sh running", || {
        std::fs::read_to_string(&pidfile).ok()?.trim().parse().ok()
    });
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.0.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let status = wait_for("validate exit", || child.0.try_wait().unwrap());
    assert_eq!(status.code(), Some(130));
    wait_for("install.sh's child gone", || {
        let alive = std::fs::read_to_string(format!("/proc/{sleeper}/stat"))
            .map(|s| !s.contains(") Z "))
            .unwrap_or(false);
        (!alive).then_some(())
    });
    b.assert_clean();
}
