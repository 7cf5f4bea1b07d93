//! Who owns a build: its run-as user gets it once, right after install.sh and before the first
//! launch, and never again at a later start, when adopted games own the tree (a game that swaps
//! its folder for a link to a root-owned tree gains nothing at the agent's restart).

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use nix::sys::signal::Signal;

use crate::helper::{Agent, FAKE_SERVER, config};

const USER: &str = "gse-test-game";

fn owner(p: &Path) -> u32 {
    std::fs::symlink_metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .uid()
}

#[test]
fn a_build_is_given_to_its_user_once_and_not_again_when_the_agent_restarts() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: run-as needs root (CI runs the tests as root)");
        return;
    }
    let entry = "    - LaunchPath: /local/game/server\n      ConcurrentExecutions: 1\n";
    let yaml = config(
        entry,
        &format!(
            "build: build\nrun-as: {USER}:{USER}\ntimeouts: {{ process-exit: 2s, stop-grace: 500ms, shutdown: 2s }}"
        ),
    );
    let mut agent = Agent::prepared(&yaml, |game| std::fs::remove_dir_all(game).unwrap());
    let build = agent.path("build");
    std::fs::create_dir_all(build.join("data")).unwrap();
    std::fs::write(build.join("data/map.txt"), "map").unwrap();
    // install.sh links the game in, as GSE builds link a runtime.
    let install = format!("#!/bin/sh\nset -e\nln -s {FAKE_SERVER} \"$GSE_GAME_ROOT/server\"\n");
    std::fs::write(build.join("install.sh"), install).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        build.join("install.sh"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    // Root's tree outside the build, which the game will point its folder at.
    let outside = agent.path("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("secret"), "root's").unwrap();
    agent.spawn();
    let ready = agent.wait_ready_answered(1);
    let game = agent.path("game");
    let uid = nix::unistd::User::from_name(USER)
        .unwrap()
        .unwrap()
        .uid
        .as_raw();
    assert_eq!(owner(&game.join("data/map.txt")), uid, "given at install");
    let pid = ready[0]["Pid"].as_u64().unwrap();
    assert_eq!(owner(&Path::new("/proc").join(pid.to_string())), uid);
    // The game holds no capability and can gain no privilege.
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    for line in ["CapEff:\t0000000000000000", "NoNewPrivs:\t1"] {
        assert!(status.contains(line), "{line:?} in {status}");
    }

    // The game swaps its folder for a link to root's tree; root leaves a file in the build.
    std::fs::rename(game.join("data"), game.join("data.old")).unwrap();
    std::os::unix::fs::symlink(&outside, game.join("data")).unwrap();
    std::fs::write(game.join("root-made.txt"), "root's too").unwrap();

    // An upgrade: the agent leaves its games, the next one adopts them.
    agent.signal(Signal::SIGQUIT);
    assert!(agent.wait_exit().success(), "{}", agent.stderr());
    agent.spawn();
    agent.wait_ready(1);
    assert!(
        agent
            .stderr()
            .contains("build already unpacked and installed")
    );
    for (what, path) in [
        ("root's tree outside the build", outside.join("secret")),
        ("root's folder outside the build", outside.clone()),
        (
            "a file in the build the adopted game does not own",
            game.join("root-made.txt"),
        ),
    ] {
        assert_eq!(owner(&path), 0, "{what}: {}", path.display());
    }
    assert_eq!(
        agent
            .stderr()
            .matches("build given to the run-as user")
            .count(),
        1,
        "the build is given once"
    );
}

/// The uid of a running process.
fn uid_of(pid: u64) -> u32 {
    owner(&Path::new("/proc").join(pid.to_string()))
}

#[test]
fn a_game_under_the_default_config_is_unprivileged_and_reads_none_of_the_agents_secrets() {
    use crate::helper::control_plane::ControlPlaneFake;
    use crate::helper::{COMMANDS, entry, write_secret};
    use std::os::unix::fs::PermissionsExt;
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: the default game user needs a root agent (CI runs the tests as root)");
        return;
    }
    let cp = ControlPlaneFake::start(Some("relay-token-0123456789"), true);
    let yaml = |dir: &Path| {
        config(
            &entry(COMMANDS, 1),
            &crate::cases::upstream::upstream_yaml(
                &cp,
                &format!(", token-file: \"{}\"", dir.join("token").display()),
            ),
        )
    };
    let mut agent = Agent::prepared("", |_| {});
    std::fs::write(agent.path("agent.yaml"), yaml(agent.dir.path())).unwrap();
    write_secret(&agent.path("token"), "relay-token-0123456789\n");
    // Only the data-dir's own modes stand between the game and the agent's files.
    std::fs::set_permissions(agent.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    agent.spawn();
    cp.wait_event("AGENT_STARTED");
    let ready = agent.wait_ready_answered(1);
    let pid = ready[0]["Pid"].as_u64().unwrap();
    let game_user = nix::unistd::User::from_name("gse-game")
        .unwrap()
        .expect("the agent creates the default game user when the package has not");
    assert_eq!(uid_of(pid), game_user.uid.as_raw());
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    for line in ["CapEff:\t0000000000000000", "NoNewPrivs:\t1"] {
        assert!(status.contains(line), "{line:?} in {status}");
    }
    let err = agent.stderr();
    assert!(err.contains("games run as an unprivileged user"), "{err}");
    let mut game = agent.game(pid as u32);
    for secret in [
        "data/state.redb",
        "data/outbox.redb",
        "data/endpoints.json",
        "data/log-url.key",
        "token",
    ] {
        let path = agent.path(secret);
        if !path.exists() {
            assert_ne!(
                secret, "data/state.redb",
                "the state file is where it is said to be"
            );
            continue;
        }
        let answer = game.call(&format!("read {}", path.display()));
        assert!(
            answer["error"]
                .as_str()
                .is_some_and(|e| e.contains("Permission denied")),
            "the game read {secret}: {answer}"
        );
    }
    let answer = game.call("read /local/game/server");
    assert!(
        answer["bytes"].as_u64().unwrap() > 0,
        "its own build: {answer}"
    );
    let mode = |p: &str| {
        std::fs::metadata(agent.path(p))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode("data"), 0o711);
    assert_eq!(mode("data/logs"), 0o700);

    // Root only when asked for, and said so.
    agent.signal(Signal::SIGTERM);
    assert!(agent.wait_exit().success(), "{}", agent.stderr());
    let root = yaml(agent.dir.path()).replace("fleet-id:", "run-as: root\nfleet-id:");
    std::fs::write(agent.path("agent.yaml"), root).unwrap();
    agent.spawn();
    let ready = agent.wait_ready(1);
    assert_eq!(uid_of(ready[0]["Pid"].as_u64().unwrap()), 0);
    let err = agent.stderr();
    assert!(err.contains("games run as root, by choice"), "{err}");
}
