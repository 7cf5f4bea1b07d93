//! LaunchPath → a path on this host.

use std::path::{Component, Path, PathBuf};

use super::GSE_GAME_ROOT;

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
    if let Ok(rest) = path.strip_prefix(GSE_GAME_ROOT) {
        if rest.as_os_str().is_empty() {
            return Err(format!(
                "{launch_path:?} names the game root, not a file in it"
            ));
        }
        return Ok(game_root.join(rest));
    }
    if path.is_absolute() && path.starts_with(game_root) {
        return Ok(path.to_path_buf());
    }
    Err(format!(
        "{launch_path:?} is outside the game root: LaunchPath must start with {GSE_GAME_ROOT}/ (mapped to {})",
        game_root.display()
    ))
}
