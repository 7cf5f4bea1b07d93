//! Builds written for GSE run unchanged: their `install.sh` and games name `/local/game`
//! absolutely, and the agent (root here, as on game hosts) gives each of them its own build
//! there in a private mount namespace, whatever `game-root` is; two fleets on one host each see
//! their own; an agent that is not root says why not, where the build names it, and the ways
//! out. A Node.js game on `@grpc/grpc-js`, built as GSE's tutorials build one, passes `validate`
//! and runs.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{Value, json};

use crate::helper::{AGENT, Agent, FAKE_SERVER, wait_for};

/// Short timings for `validate`; `{launch}` and `{params}` name the game.
const VALIDATE_CONFIG: &str = "
fleet-id: fleet-validate
health-check: { interval: 100ms, timeout: 2s, failure-threshold: 3 }
timeouts: { process-ready: 20s, process-exit: 5s, player-reservation: 5s, stop-grace: 1s, shutdown: 5s }
protection: { policy: NoProtection, no-protection-grace: 5s }
runtime-configuration:
  ServerProcesses:
    - LaunchPath: {launch}
      Parameters: {params}
      ConcurrentExecutions: 1
  GameServerSessionActivationTimeoutSeconds: 20
";

/// install.sh of the GSE-style build: the runtime linked into /local/game, a file written
/// there (lines 4 and 5).
const INSTALL_SH: &str = "#!/bin/sh
set -e
# GSE style: what is not in the package is linked into /local/game.
ln -s {server} /local/game/server
echo \"installed for $GSE_FLEET_ID\" > /local/game/installed.txt
";

/// The launch path: reads what install.sh wrote and starts the runtime, both through
/// /local/game (lines 2 and 3).
const START_SH: &str = "#!/bin/sh
cat /local/game/installed.txt
exec /local/game/server \"$@\"
";

/// A zip build written for GSE: `install.sh` and `start.sh` above.
fn gse_zip(path: &Path) {
    gse_zip_installing(path, "");
}

/// [`gse_zip`], its install.sh ending with `more`.
fn gse_zip_installing(path: &Path, more: &str) {
    use std::io::Write;
    let mut w = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    let opts = zip::write::SimpleFileOptions::default().unix_permissions(0o755);
    w.start_file("install.sh", opts).unwrap();
    w.write_all((INSTALL_SH.replace("{server}", FAKE_SERVER) + more).as_bytes())
        .unwrap();
    w.start_file("start.sh", opts).unwrap();
    w.write_all(START_SH.as_bytes()).unwrap();
    w.finish().unwrap();
}

fn is_root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    eprintln!("skipped: mount namespaces need root (CI runs the tests as root)");
    false
}

/// The host's own /local/game holds nothing a build wrote.
fn host_untouched() {
    for name in ["installed.txt", "server", "node"] {
        let p = Path::new("/local/game").join(name);
        assert!(
            std::fs::symlink_metadata(&p).is_err(),
            "{} was written on the host",
            p.display()
        );
    }
}

/// `gse-agent validate BUILD --config CONFIG --json REPORT` (as `user`, if given); the exit
/// code, the JSON report and the table.
fn validate(
    exe: &Path,
    dir: &Path,
    build: &Path,
    user: Option<u32>,
) -> (Option<i32>, Value, String) {
    let report = dir.join("report.json");
    let tmp = dir.join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let mut cmd = Command::new(exe);
    cmd.arg("validate")
        .arg(build)
        .arg("--config")
        .arg(dir.join("validate.yaml"))
        .arg("--json")
        .arg(&report)
        .env("TMPDIR", &tmp);
    if let Some(id) = user {
        cmd.uid(id).gid(id);
    }
    let out = cmd.output().unwrap();
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    let json = std::fs::read_to_string(&report)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(Value::Null);
    let left: Vec<_> = std::fs::read_dir(&tmp).unwrap().collect();
    assert!(left.is_empty(), "temporary root left behind: {left:?}");
    (out.status.code(), json, table)
}

fn write_validate_config(dir: &Path, launch: &str, params: &str) {
    let text = VALIDATE_CONFIG
        .replace("{launch}", launch)
        .replace("{params}", &format!("{params:?}"));
    std::fs::write(dir.join("validate.yaml"), text).unwrap();
}

/// An agent directory whose config installs `build.zip` (or the directory `build`) into an
/// empty game root (not /local/game), for `fleet`.
fn agent_with_build(fleet: &str, server_processes: &str, write: impl FnOnce(&Path)) -> Agent {
    let yaml = crate::helper::config(server_processes, "build: build")
        .replace("fleet-id: fleet-test", &format!("fleet-id: {fleet}"));
    let agent = Agent::prepared(&yaml, |game| std::fs::remove_dir_all(game).unwrap());
    write(&agent.path("build"));
    agent
}

fn start_sh_entry() -> String {
    "    - LaunchPath: /local/game/start.sh\n      ConcurrentExecutions: 1\n".into()
}

/// The stdout log of a process (a DescribeServerProcesses entry).
fn stdout_of(agent: &Agent, process: &Value) -> String {
    let id = process["ProcessId"].as_str().unwrap();
    std::fs::read_to_string(agent.path(&format!("data/logs/{id}.stdout.log"))).unwrap_or_default()
}

#[test]
fn a_gse_build_that_writes_local_game_validates_and_runs_with_another_game_root() {
    if !is_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let zip = dir.path().join("build.zip");
    gse_zip(&zip);
    write_validate_config(dir.path(), "/local/game/start.sh", "");
    let (code, report, table) = validate(Path::new(AGENT), dir.path(), &zip, None);
    assert_eq!(code, Some(0), "{table}");
    assert!(
        table.contains("/local/game: install.sh and the games see their own build at /local/game"),
        "{table}"
    );
    for place in ["install.sh:4", "install.sh:5", "start.sh:2", "start.sh:3"] {
        assert!(table.contains(place), "{place}: {table}");
    }
    assert!(
        table.contains("these work here because the agent runs as root"),
        "{table}"
    );
    let lg = &report["localGame"];
    assert_eq!(lg["seen"], "private", "{lg}");
    assert_eq!(lg["total"], 4, "{lg}");
    assert_eq!(lg["broken"], 0, "{lg}");
    assert_eq!(lg["references"][0]["file"], "install.sh");
    assert_eq!(lg["references"][0]["line"], 4);
    host_untouched();

    // The same build under `run`, its game root a link into data/builds.
    let agent = {
        let mut a = agent_with_build("fleet-test", &start_sh_entry(), |p| {
            std::fs::copy(&zip, p).unwrap();
        });
        a.spawn();
        a
    };
    let ready = agent.wait_ready(1);
    assert!(
        stdout_of(&agent, &ready[0]).contains("installed for fleet-test"),
        "{}",
        stdout_of(&agent, &ready[0])
    );
    assert!(
        std::fs::symlink_metadata(agent.path("game"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert!(agent.path("game/installed.txt").is_file());
    // Said once at start, as information.
    let err = agent.stderr();
    assert_eq!(
        err.matches("see their own build at /local/game").count(),
        1,
        "{err}"
    );
    assert!(
        err.contains("install.sh:4, install.sh:5, start.sh:2, start.sh:3"),
        "{err}"
    );
    host_untouched();
}

/// Two fleets, one agent each, the same GSE build: each fleet's install.sh and games see that
/// fleet's own copy at /local/game.
#[test]
fn two_fleets_on_one_host_each_see_their_own_local_game() {
    if !is_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let zip = dir.path().join("build.zip");
    gse_zip(&zip);
    let start = |fleet: &str| {
        let mut a = agent_with_build(fleet, &start_sh_entry().replace(": 1", ": 2"), |p| {
            std::fs::copy(&zip, p).unwrap();
        });
        a.spawn();
        a
    };
    let (a, b) = (start("fleet-a"), start("fleet-b"));
    for (agent, fleet) in [(&a, "fleet-a"), (&b, "fleet-b")] {
        let ready = agent.wait_ready(2);
        for p in &ready {
            let out = stdout_of(agent, p);
            assert!(
                out.contains(&format!("installed for {fleet}\n")),
                "{fleet}: {out}"
            );
        }
        assert_eq!(
            std::fs::read_to_string(agent.path("game/installed.txt")).unwrap(),
            format!("installed for {fleet}\n")
        );
    }
    host_untouched();
}

/// Where every directory above `path` lets others in, `path`; else a copy in `dir` (CI's clone
/// may live where an unprivileged user cannot reach).
fn reachable_by_others(path: &Path, dir: &Path) -> PathBuf {
    let open = path
        .ancestors()
        .skip(1)
        .all(|d| std::fs::metadata(d).is_ok_and(|m| m.permissions().mode() & 0o001 != 0));
    if open {
        return path.to_path_buf();
    }
    let copy = dir.join("gse-agent");
    std::fs::copy(path, &copy).unwrap();
    copy
}

fn chown_tree(path: &Path, id: u32) {
    let status = Command::new("chown")
        .arg("-R")
        .arg(format!("{id}:{id}"))
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success());
}

/// Without root: today's behaviour, said plainly once, in validate's table and at the agent's
/// start: what refers to /local/game and the two ways out.
#[test]
fn an_agent_that_is_not_root_says_where_the_build_names_local_game_and_what_to_do() {
    if !is_root() {
        return;
    }
    const NOBODY: u32 = 65534;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let zip = dir.path().join("build.zip");
    gse_zip(&zip);
    write_validate_config(
        dir.path(),
        "/local/game/start.sh",
        "--data /local/game/data",
    );
    let exe = reachable_by_others(Path::new(AGENT), dir.path());
    std::fs::create_dir(dir.path().join("tmp")).unwrap();
    chown_tree(dir.path(), NOBODY);

    let (code, report, table) = validate(&exe, dir.path(), &zip, Some(NOBODY));
    assert_eq!(code, Some(1), "{table}");
    assert_eq!(
        report["steps"][1]["status"], "failed",
        "install.sh cannot write /local/game: {report}"
    );
    for said in [
        "/local/game: install.sh and the games see the host's /local/game, not their build",
        "(the agent is not root)",
        "install.sh:4",
        "start.sh:3",
        "ServerProcesses[0].Parameters",
        "5 of these will not reach the build here; ways out: run gse-agent as root",
        "or set game-root: /local/game",
    ] {
        assert!(table.contains(said), "{said:?} in:\n{table}");
    }
    assert_eq!(table.matches("ways out").count(), 1, "{table}");
    let lg = &report["localGame"];
    assert_eq!(lg["seen"], "host", "{lg}");
    assert_eq!(lg["broken"], 5, "{lg}");
    assert!(lg["reason"].as_str().unwrap().contains("EPERM"), "{lg}");

    // `run`: the same, once, as a warning at start (install.sh then fails as it did).
    let run_dir = dir.path().join("agent");
    std::fs::create_dir(&run_dir).unwrap();
    std::fs::copy(&zip, run_dir.join("build.zip")).unwrap();
    let yaml = crate::helper::config(&start_sh_entry(), "build: build.zip");
    std::fs::write(run_dir.join("agent.yaml"), yaml).unwrap();
    chown_tree(&run_dir, NOBODY);
    let out: Output = Command::new(&exe)
        .args(["run", "--config"])
        .arg(run_dir.join("agent.yaml"))
        .env("RUST_LOG", "info")
        .uid(NOBODY)
        .gid(NOBODY)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    let warnings: Vec<&str> = err.lines().filter(|l| l.contains("ways out")).collect();
    assert_eq!(warnings.len(), 1, "{err}");
    for said in [
        "WARN",
        "see the host's /local/game, not their build",
        "not root",
        "install.sh:4, install.sh:5, start.sh:2, start.sh:3",
        "run gse-agent as root",
        "game-root: /local/game",
    ] {
        assert!(warnings[0].contains(said), "{said:?} in {}", warnings[0]);
    }
    assert!(err.contains("install.sh failed"), "{err}");
    host_untouched();
}

/// A Node.js game on @grpc/grpc-js, its runtime linked into /local/game by install.sh as GSE's
/// tutorials do: `validate` passes every step, and under `run` it hosts a session and ends
/// with ProcessEnding when its process is ended.
#[test]
fn a_node_js_game_passes_validate_and_runs() {
    if !is_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let build = dir.path().join("node-build");
    crate::helper::node::write_build(&build);
    write_validate_config(dir.path(), "/local/game/node", "game_server.js");
    let (code, report, table) = validate(Path::new(AGENT), dir.path(), &build, None);
    assert_eq!(code, Some(0), "{table}\n{report}");
    assert_eq!(report["passed"], true);
    assert!(table.contains("install.sh:4"), "{table}");
    host_untouched();

    let entry = "    - LaunchPath: /local/game/node\n      Parameters: game_server.js\n      ConcurrentExecutions: 1\n";
    let mut agent = agent_with_build("fleet-test", entry, |p| {
        crate::helper::node::write_build(p);
    });
    agent.spawn();
    let ready = agent.wait_ready(1);
    let out = stdout_of(&agent, &ready[0]);
    assert!(out.contains("/local/game: this build"), "{out}");
    let session = agent.create_session(2);
    let id = session["GameServerSessionId"].as_str().unwrap().to_string();
    agent.wait_session_status(&id, "ACTIVE");
    wait_for("the game's own word", || {
        stdout_of(&agent, &ready[0])
            .contains(&format!("activated: {id}"))
            .then_some(())
    });
    agent.ok(json!({"Action": "EndGameServerSessionAndProcess", "GameServerSessionId": id}));
    let ended = agent.wait_event("SERVER_PROCESS_ENDED");
    assert_eq!(agent.count("SERVER_PROCESS_ENDING"), 1);
    assert_eq!(agent.count("SERVER_PROCESS_CRASHED"), 0, "{ended}");
    assert!(stdout_of(&agent, &ready[0]).contains("ending"));
    host_untouched();
}

/// install.sh links the launch path to another file of the build through /local/game: the
/// link leads nowhere on the host, but into the build where the game runs, and the agent's own
/// checks of the launch path follow it there.
#[test]
fn a_launch_path_linked_through_local_game_is_checked_where_the_game_finds_it() {
    if !is_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let zip = dir.path().join("build.zip");
    gse_zip_installing(&zip, "ln -s /local/game/start.sh /local/game/launch\n");
    write_validate_config(dir.path(), "/local/game/launch", "");
    let (code, report, table) = validate(Path::new(AGENT), dir.path(), &zip, None);
    assert_eq!(code, Some(0), "{table}");
    let steps = report["steps"].to_string();
    assert!(steps.contains("script for /bin/sh"), "{steps}");
    host_untouched();
}
