//! Directory builds: copied into staging under the same rules as a zip (no special files, no
//! symlinks leaving the root, setuid/setgid bits dropped, bytes counted).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::unzip::{Limits, Progress, Stats, UnzipError};

/// Copies `src` into the empty directory `dest`.
pub fn copy_tree(
    src: &Path,
    dest: &Path,
    limits: &Limits,
    progress: Progress<'_>,
) -> Result<Stats, UnzipError> {
    let mut stats = Stats::default();
    walk(src, dest, Path::new(""), limits, progress, &mut stats)?;
    Ok(stats)
}

fn name(rel: &Path) -> String {
    rel.display().to_string()
}

fn walk(
    src: &Path,
    dest: &Path,
    rel: &Path,
    limits: &Limits,
    progress: Progress<'_>,
    stats: &mut Stats,
) -> Result<(), UnzipError> {
    let dir = src.join(rel);
    let read = |source| UnzipError::Data {
        entry: name(rel),
        message: format!("cannot read {}: {source}", dir.display()),
    };
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .map_err(read)?
        .collect::<Result<_, _>>()
        .map_err(read)?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let path = rel.join(e.file_name());
        let from = src.join(&path);
        let to = dest.join(&path);
        stats.entries += 1;
        if stats.entries > limits.max_entries {
            return Err(UnzipError::TooManyEntries {
                count: stats.entries,
                limit: limits.max_entries,
            });
        }
        let meta = std::fs::symlink_metadata(&from).map_err(|source| UnzipError::Data {
            entry: name(&path),
            message: source.to_string(),
        })?;
        let write = |source| UnzipError::Write {
            path: to.clone(),
            source,
        };
        let ft = meta.file_type();
        if ft.is_dir() {
            std::fs::create_dir(&to).map_err(write)?;
            walk(src, dest, &path, limits, progress, stats)?;
            std::fs::set_permissions(
                &to,
                std::fs::Permissions::from_mode(meta.permissions().mode() & 0o777),
            )
            .map_err(write)?;
        } else if ft.is_symlink() {
            let target = std::fs::read_link(&from).map_err(write)?;
            let target_str = target.to_string_lossy().into_owned();
            let mut depth = path.components().count() as i64 - 1;
            let mut escapes = target.is_absolute();
            for c in target.components() {
                match c {
                    std::path::Component::ParentDir => depth -= 1,
                    std::path::Component::Normal(_) => depth += 1,
                    _ => {}
                }
                escapes |= depth < 0;
            }
            if escapes {
                return Err(UnzipError::Symlink {
                    entry: name(&path),
                    target: target_str,
                    rule: "leaves the build root",
                });
            }
            std::os::unix::fs::symlink(&target, &to).map_err(write)?;
        } else if ft.is_file() {
            let n = std::fs::copy(&from, &to).map_err(write)?;
            stats.bytes += n;
            if stats.bytes > limits.max_bytes {
                return Err(UnzipError::TooLarge {
                    entry: name(&path),
                    limit: limits.max_bytes,
                });
            }
            std::fs::set_permissions(
                &to,
                std::fs::Permissions::from_mode(meta.permissions().mode() & 0o777),
            )
            .map_err(write)?;
        } else {
            return Err(UnzipError::Special {
                entry: name(&path),
                kind: "device, FIFO or socket",
            });
        }
        progress(stats.entries, 0, stats.bytes);
    }
    Ok(())
}
