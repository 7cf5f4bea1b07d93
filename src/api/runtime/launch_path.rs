//! LaunchPath → a path on this host.

use std::path::{Component, Path, PathBuf};

/// GSE's mount point for the unpacked build; LaunchPaths under it map to `game-root`.
pub const GSE_GAME_ROOT: &str = "/local/game";

/// Maps a GSE LaunchPath to a path on this host: `/local/game/x` → `<game-root>/x`; a path
/// already inside the game root is kept; anything else, and any `..`, is refused.
pub fn resolve_launch_path(launch_path: &str, game_root: &Path) -> Result<PathBuf, String> {
    if launch_path.is_empty() || launch_path.len() > 1024 {
        return Err("must be 1 to 1024 characters".into());
    }
    let path = Path::new(launch_path);
    if path.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(format!("{launch_path:?} contains '..'"));
    }
    match within_game_root(path, game_root) {
        Some(rest) if rest.as_os_str().is_empty() => Err(format!(
            "{launch_path:?} names the game root, not a file in it"
        )),
        Some(rest) => Ok(game_root.join(rest)),
        None => Err(format!(
            "{launch_path:?} is outside the game root: LaunchPath must start with {GSE_GAME_ROOT}/ (mapped to {})",
            game_root.display()
        )),
    }
}

/// The part of an absolute GSE path inside the game root: `/local/game/x` and
/// `<game-root>/x` → `x` (empty for the root itself); `None` for any other path. Lexical: `..`
/// is the caller's to refuse or resolve.
pub fn within_game_root<'a>(path: &'a Path, game_root: &Path) -> Option<&'a Path> {
    path.strip_prefix(GSE_GAME_ROOT).ok().or_else(|| {
        path.strip_prefix(game_root)
            .ok()
            .filter(|_| path.is_absolute())
    })
}
