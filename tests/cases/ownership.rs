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
