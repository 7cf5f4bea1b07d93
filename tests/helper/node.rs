//! Node.js games: the test game `tests/node/game_server.js` and its npm packages
//! (`@grpc/grpc-js`, `@grpc/proto-loader`, pinned with every dependency by
//! `tests/node/package-lock.json`), installed once with `npm ci` into a cache under `target/tmp`
//! keyed by the lock file's hash, and copied into each build.

use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

const NODE_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/node");

/// The cached `node_modules` of the test game (see [`super::cached_dir`]), named by the lock
/// file's hash so a changed lock file installs afresh.
pub fn node_modules() -> PathBuf {
    let lock_text = std::fs::read(Path::new(NODE_DIR).join("package-lock.json"))
        .expect("tests/node/package-lock.json");
    let hash: String = Sha256::digest(&lock_text)
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect();
    let cache = super::cached_dir(&format!("node-game-{hash}"), |cache| {
        std::fs::create_dir_all(cache).unwrap();
        for f in ["package.json", "package-lock.json"] {
            std::fs::copy(Path::new(NODE_DIR).join(f), cache.join(f)).unwrap();
        }
        // Exactly the lock file's versions; no install scripts (none is needed).
        let out = Command::new("npm")
            .args([
                "ci",
                "--ignore-scripts",
                "--no-audit",
                "--no-fund",
                "--loglevel=error",
            ])
            .current_dir(cache)
            .output()
            .unwrap_or_else(|e| panic!("npm ci: {e} (.ci/run installs Debian's nodejs and npm)"));
        assert!(
            out.status.success(),
            "npm ci failed (the npm registry must be reachable):\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    });
    cache.join("node_modules")
}

/// Writes the Node.js game's build into the empty directory `build`: `game_server.js`, the
/// repo's protos in `proto/`, `node_modules/`, and a GSE-style `install.sh` that links the
/// system's node to `/local/game/node` (LaunchPath `/local/game/node`, Parameters
/// `game_server.js`).
pub fn write_build(build: &Path) {
    let modules = node_modules();
    std::fs::create_dir_all(build.join("proto")).unwrap();
    std::fs::copy(
        Path::new(NODE_DIR).join("game_server.js"),
        build.join("game_server.js"),
    )
    .unwrap();
    for proto in ["GseGrpcSdkService.proto", "GameServerGrpcSdkService.proto"] {
        let from = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("proto")
            .join(proto);
        std::fs::copy(from, build.join("proto").join(proto)).unwrap();
    }
    let status = Command::new("cp")
        .arg("-a")
        .arg(&modules)
        .arg(build.join("node_modules"))
        .status()
        .expect("run cp");
    assert!(status.success(), "cp -a {}", modules.display());
    let install = "#!/bin/sh\nset -e\n# As GSE's tutorials link a runtime that is not in the package.\nln -s \"$(command -v node)\" /local/game/node\n";
    std::fs::write(build.join("install.sh"), install).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        build.join("install.sh"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
}
