//! What an entry may be called, and where a symlink may point: the rules the unpacker (and the
//! log archives' entry names) share.

use std::path::{Component, Path, PathBuf};

/// Checks an entry name and returns the relative path it extracts to.
pub fn safe_path(raw: &[u8], name: &str) -> Result<PathBuf, &'static str> {
    if raw.is_empty() || name.is_empty() {
        return Err("empty name");
    }
    if raw.contains(&0) {
        return Err("NUL byte in name");
    }
    if name.chars().any(|c| c.is_control()) {
        return Err("control character in name");
    }
    if name.contains('\\') {
        return Err("backslash in name (a Windows separator that can traverse)");
    }
    if name.starts_with('/') {
        return Err("absolute path");
    }
    if name.len() >= 2 && name.as_bytes()[1] == b':' && name.as_bytes()[0].is_ascii_alphabetic() {
        return Err("drive-letter path");
    }
    let mut path = PathBuf::new();
    for part in name.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err("'..' in path"),
            p => path.push(p),
        }
    }
    if path.as_os_str().is_empty() {
        return Err("names the root itself");
    }
    Ok(path)
}

/// Whether a symlink at `link` (relative to the root) pointing to `target` stays inside the
/// root whatever other links the build holds. The target may climb with leading `..` no higher
/// than the root, and may not climb again after descending: a later `..` could undo a component
/// that is itself a link (`b -> a/..` with `a -> .`) and walk out. Descending from a point inside
/// the root stays inside, so by induction every link of the build resolves inside it.
pub fn symlink_stays_inside(link: &Path, target: &str) -> Result<(), &'static str> {
    if target.is_empty() {
        return Err("is empty");
    }
    if target.starts_with('/') {
        return Err("is absolute");
    }
    if target.contains(['\0', '\\']) {
        return Err("has a NUL or backslash");
    }
    let mut depth = link.parent().map(|p| p.components().count()).unwrap_or(0);
    let mut descended = false;
    for c in Path::new(target).components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir if descended => return Err("climbs with '..' after descending"),
            Component::ParentDir => {
                depth = depth.checked_sub(1).ok_or("leaves the build root")?;
            }
            Component::Normal(_) => descended = true,
            Component::RootDir | Component::Prefix(_) => return Err("is absolute"),
        }
    }
    Ok(())
}
