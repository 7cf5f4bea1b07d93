//! Directory builds: copied into staging under the same rules as a zip (no special files, no
//! symlinks leaving the root, setuid/setgid bits never set, bytes counted as they are written,
//! the disk reserve kept).

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use super::unzip::{Limits, Progress, Stats, UnzipError, free_space, symlink_stays_inside};

/// Copies `src` into the empty directory `dest`.
pub fn copy_tree(
    src: &Path,
    dest: &Path,
    limits: &Limits,
    progress: Progress<'_>,
) -> Result<Stats, UnzipError> {
    let mut stats = Stats::default();
    // Depth-first with an explicit stack: a deep tree cannot overflow the thread's stack.
    let mut dirs: Vec<(std::path::PathBuf, u32)> = vec![(std::path::PathBuf::new(), 0o755)];
    let mut modes = Vec::new();
    while let Some((rel, mode)) = dirs.pop() {
        modes.push((rel.clone(), mode));
        let dir = src.join(&rel);
        let read = |source: std::io::Error| UnzipError::Data {
            entry: rel.display().to_string(),
            message: format!("cannot read {}: {source}", dir.display()),
        };
        let mut entries: Vec<_> = std::fs::read_dir(&dir)
            .map_err(read)?
            .collect::<Result<_, _>>()
            .map_err(read)?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let path = rel.join(e.file_name());
            let name = path.display().to_string();
            stats.entries += 1;
            if stats.entries > limits.max_entries {
                return Err(UnzipError::TooManyEntries {
                    count: stats.entries,
                    limit: limits.max_entries,
                });
            }
            let from = src.join(&path);
            let to = dest.join(&path);
            let meta = std::fs::symlink_metadata(&from).map_err(|source| UnzipError::Data {
                entry: name.clone(),
                message: source.to_string(),
            })?;
            let write = |source| UnzipError::Write {
                path: to.clone(),
                source,
            };
            let ft = meta.file_type();
            let perm = meta.permissions().mode() & 0o777;
            if ft.is_dir() {
                std::fs::create_dir(&to).map_err(write)?;
                dirs.push((path, perm));
            } else if ft.is_symlink() {
                let target = std::fs::read_link(&from).map_err(write)?;
                let target_str = target.to_string_lossy().into_owned();
                symlink_stays_inside(&path, &target_str).map_err(|rule| UnzipError::Symlink {
                    entry: name.clone(),
                    target: target_str.clone(),
                    rule,
                })?;
                std::os::unix::fs::symlink(&target, &to).map_err(write)?;
            } else if ft.is_file() {
                let remaining = limits.max_bytes.saturating_sub(stats.bytes);
                if meta.len() > remaining {
                    return Err(UnzipError::TooLarge {
                        entry: name,
                        limit: limits.max_bytes,
                    });
                }
                let free = free_space(dest);
                if free.is_some_and(|f| f.saturating_sub(meta.len()) < limits.reserve_bytes) {
                    return Err(UnzipError::DiskReserve {
                        entry: name,
                        free: free.unwrap_or(0),
                        reserve: limits.reserve_bytes,
                    });
                }
                stats.bytes += copy_file(&from, &to, remaining, &name, limits.max_bytes)?;
                std::fs::set_permissions(&to, std::fs::Permissions::from_mode(perm))
                    .map_err(write)?;
            } else {
                return Err(UnzipError::Special {
                    entry: name,
                    kind: "device, FIFO or socket",
                });
            }
            progress(stats.entries, 0, stats.bytes);
        }
    }
    // Modes last, deepest first: a read-only directory must not block its own children.
    for (rel, mode) in modes.into_iter().rev() {
        let path = dest.join(&rel);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
            .map_err(|source| UnzipError::Write { path, source })?;
    }
    Ok(stats)
}

/// Copies one file into a new owner-only file, counting bytes (the source may grow).
fn copy_file(
    from: &Path,
    to: &Path,
    budget: u64,
    name: &str,
    limit: u64,
) -> Result<u64, UnzipError> {
    let mut input = std::fs::File::open(from).map_err(|source| UnzipError::Data {
        entry: name.to_string(),
        message: source.to_string(),
    })?;
    let write = |source| UnzipError::Write {
        path: to.to_path_buf(),
        source,
    };
    let mut out = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
        .open(to)
        .map_err(write)?;
    let mut buf = vec![0u8; 128 * 1024];
    let mut n_total = 0u64;
    loop {
        let n = input.read(&mut buf).map_err(|source| UnzipError::Data {
            entry: name.to_string(),
            message: source.to_string(),
        })?;
        if n == 0 {
            return Ok(n_total);
        }
        n_total += n as u64;
        if n_total > budget {
            return Err(UnzipError::TooLarge {
                entry: name.to_string(),
                limit,
            });
        }
        out.write_all(&buf[..n]).map_err(write)?;
    }
}
