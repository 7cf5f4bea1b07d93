//! Node.js games: the example game `examples/node/` (`@grpc/grpc-js`, pinned with every
//! dependency by its `package-lock.json`), built once by its `build.sh` (see
//! [`super::examples`]).

use std::path::Path;

use super::examples::{Protos, copy_build};

/// Writes the Node.js game's build into the empty directory `build`: `game_server.js`, the
/// repo's protos in `proto/`, `node_modules/`, and a GSE-style `install.sh` that links the
/// system's node to `/local/game/node` (LaunchPath `/local/game/node`, Parameters
/// `game_server.js`).
pub fn write_build(build: &Path) {
    copy_build("node", Protos::Documented, build);
}
