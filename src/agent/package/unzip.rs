//! Safe extraction of a zip build into a fresh staging directory.
//!
//! Two passes. The first reads only the central directory (and symlink targets) and refuses the
//! archive before anything is written: unsafe names, duplicates, encryption, unsupported
//! methods, device nodes, symlinks that leave the root or are written through, too many
//! entries. The second writes: directories, then files (on up to two threads, each with its own
//! file handle), then symlinks, then directory modes. Declared sizes are not trusted: the bytes
//! actually written are counted against the total, the per-entry ratio and the disk reserve.
//!
//! The ratio is checked as the entry streams, against the compressed bytes read for it so far
//! (read ahead included, so never overstated): a bomb that expands past the limit from its
//! first megabytes stops there, not after it has written gigabytes. (Deflate tops out near
//! 1,032:1; the read-ahead a ratio near the limit hides is why the default is 100:1.)

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use zip::CompressionMethod;
use zip::ZipArchive;
use zip::result::ZipError;

/// Bounds on what an archive may make the agent write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Total bytes written.
    pub max_bytes: u64,
    /// Entries in the archive.
    pub max_entries: u64,
    /// Bytes written per compressed byte, for entries larger than `ratio_min_bytes`.
    pub max_ratio: u64,
    /// Entries up to this size are not ratio-checked (tiny files compress absurdly well).
    pub ratio_min_bytes: u64,
    /// Free space the target filesystem must keep.
    pub reserve_bytes: u64,
}

/// What extraction wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Entries in the archive.
    pub entries: u64,
    /// Bytes written.
    pub bytes: u64,
}

/// Progress as extraction goes: entries done of all, bytes written.
pub type Progress<'a> = &'a (dyn Fn(u64, u64, u64) + Sync);

#[derive(Debug)]
enum Kind {
    Dir,
    File,
    Symlink(String),
}

/// What the first pass keeps per entry: little, so 200,000 entries stay cheap. Names and
/// paths are read again from the (shared) central directory when needed.
#[derive(Debug)]
struct Planned {
    index: usize,
    kind: Kind,
    mode: u32,
    compressed: u64,
}

type Archive = ZipArchive<SharedReader>;

/// The name of entry `index` and the path it extracts to (checked in the first pass).
fn entry_path(zip: &mut Archive, index: usize) -> Result<(String, PathBuf), UnzipError> {
    let entry = zip.by_index_raw(index).map_err(|e| UnzipError::Data {
        entry: format!("#{index}"),
        message: e.to_string(),
    })?;
    let raw = entry.name_raw();
    let name = String::from_utf8_lossy(raw).into_owned();
    let path = safe_path(raw, &name).map_err(|rule| UnzipError::UnsafeName {
        entry: name.clone(),
        rule,
    })?;
    Ok((name, path))
}

const S_IFMT: u32 = 0o170000;

/// Extracts `archive` into `dest`, which must be a new, empty directory.
pub fn unpack(
    archive: &Path,
    dest: &Path,
    limits: &Limits,
    progress: Progress<'_>,
) -> Result<Stats, UnzipError> {
    let reader = SharedReader::open(archive).map_err(|source| UnzipError::Open {
        path: archive.to_path_buf(),
        source,
    })?;
    let mut zip = ZipArchive::new(reader).map_err(|e| UnzipError::NotZip {
        path: archive.to_path_buf(),
        message: e.to_string(),
    })?;
    let plan = plan(&mut zip, limits)?;
    let total_entries = plan.len() as u64;

    let written = AtomicU64::new(0);
    let done = AtomicU64::new(0);
    let ctx = Ctx {
        dest,
        limits,
        written: &written,
        done: &done,
        total_entries,
        progress,
        failed: AtomicBool::new(false),
    };
    for p in plan.iter().filter(|p| matches!(p.kind, Kind::Dir)) {
        ctx.create_dir(&mut zip, p)?;
    }
    let files: Vec<&Planned> = plan
        .iter()
        .filter(|p| matches!(p.kind, Kind::File))
        .collect();
    // Two workers, each with its own clone of the archive (one parsed central directory, own
    // read position), take files largest first.
    let mut queue = files;
    queue.sort_by_key(|p| std::cmp::Reverse(p.compressed));
    let queue = Mutex::new(queue.into_iter());
    let workers = if plan.len() > 1 { 2 } else { 1 };
    let results: Vec<Result<(), UnzipError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                let ctx = &ctx;
                let queue = &queue;
                let mut zip = zip.clone();
                scope.spawn(move || -> Result<(), UnzipError> {
                    loop {
                        if ctx.failed.load(Ordering::Relaxed) {
                            return Ok(());
                        }
                        let next = queue.lock().unwrap_or_else(|p| p.into_inner()).next();
                        let Some(p) = next else { return Ok(()) };
                        if let Err(e) = ctx.write_file(&mut zip, p) {
                            ctx.failed.store(true, Ordering::Relaxed);
                            return Err(e);
                        }
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(UnzipError::Data {
                        entry: String::new(),
                        message: "an extraction thread panicked".into(),
                    })
                })
            })
            .collect()
    });
    for r in results {
        r?;
    }
    for p in &plan {
        if let Kind::Symlink(target) = &p.kind {
            let path = dest.join(entry_path(&mut zip, p.index)?.1);
            std::os::unix::fs::symlink(target, &path)
                .map_err(|source| UnzipError::Write { path, source })?;
            ctx.tick();
        }
    }
    // Directory modes last: a read-only directory must not block its own children.
    for p in plan.iter().filter(|p| matches!(p.kind, Kind::Dir)) {
        let path = dest.join(entry_path(&mut zip, p.index)?.1);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(p.mode))
            .map_err(|source| UnzipError::Write { path, source })?;
    }
    Ok(Stats {
        entries: total_entries,
        bytes: written.load(Ordering::Relaxed),
    })
}

/// The first pass: every rule that can be checked before writing.
fn plan(zip: &mut Archive, limits: &Limits) -> Result<Vec<Planned>, UnzipError> {
    let count = zip.len() as u64;
    if count > limits.max_entries {
        return Err(UnzipError::TooManyEntries {
            count,
            limit: limits.max_entries,
        });
    }
    if zip.has_duplicate_names() {
        return Err(UnzipError::DuplicateNames);
    }
    let mut plan = Vec::with_capacity(zip.len());
    // Path hashes, not paths: duplicates are confirmed by comparing the real paths.
    let mut hashes: Vec<(u64, usize)> = Vec::with_capacity(zip.len());
    let mut links: HashMap<PathBuf, String> = HashMap::new();
    for index in 0..zip.len() {
        let (name, path) = entry_path(zip, index)?;
        let entry = zip.by_index_raw(index).map_err(|e| data_error(&name, &e))?;
        if entry.encrypted() {
            return Err(UnzipError::Encrypted { entry: name });
        }
        let method = entry.compression();
        if !matches!(
            method,
            CompressionMethod::Stored | CompressionMethod::Deflated
        ) {
            return Err(UnzipError::Unsupported {
                entry: name,
                method: method_name(method),
            });
        }
        let mode = entry.unix_mode();
        let kind_bits = mode.map(|m| m & S_IFMT).unwrap_or(0);
        let special = match kind_bits {
            0o020000 => Some("character device"),
            0o060000 => Some("block device"),
            0o010000 => Some("FIFO"),
            0o140000 => Some("socket"),
            _ => None,
        };
        if let Some(kind) = special {
            return Err(UnzipError::Special { entry: name, kind });
        }
        let compressed = entry.compressed_size();
        let is_symlink = kind_bits == 0o120000;
        let is_dir = !is_symlink && (entry.is_dir() || kind_bits == 0o040000);
        drop(entry);
        hashes.push((path_hash(&path), index));
        let kind = if is_symlink {
            let target = read_symlink_target(zip, index, &name)?;
            symlink_stays_inside(&path, &target).map_err(|rule| UnzipError::Symlink {
                entry: name.clone(),
                target: target.clone(),
                rule,
            })?;
            links.insert(path, name);
            Kind::Symlink(target)
        } else if is_dir {
            Kind::Dir
        } else {
            Kind::File
        };
        let default_mode = if is_dir { 0o755 } else { 0o644 };
        // Permission bits only: never setuid, setgid or sticky.
        let mode = mode.map(|m| m & 0o777).unwrap_or(default_mode);
        plan.push(Planned {
            index,
            kind,
            mode,
            compressed,
        });
    }
    hashes.sort_unstable();
    for pair in hashes.windows(2) {
        let ((h1, i1), (h2, i2)) = (pair[0], pair[1]);
        if h1 == h2 {
            let (_, first) = entry_path(zip, i1.min(i2))?;
            let (later_name, later) = entry_path(zip, i1.max(i2))?;
            if first == later {
                return Err(UnzipError::Duplicate { entry: later_name });
            }
        }
    }
    if !links.is_empty() {
        for index in 0..zip.len() {
            let (name, path) = entry_path(zip, index)?;
            for ancestor in path.ancestors().skip(1) {
                if let Some(link) = links.get(ancestor) {
                    return Err(UnzipError::ThroughSymlink {
                        entry: name,
                        link: link.clone(),
                    });
                }
            }
        }
    }
    Ok(plan)
}

fn path_hash(p: &Path) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    p.hash(&mut h);
    h.finish()
}

fn read_symlink_target(zip: &mut Archive, index: usize, name: &str) -> Result<String, UnzipError> {
    let entry = zip.by_index(index).map_err(|e| data_error(name, &e))?;
    let mut target = Vec::new();
    entry
        .take(4096)
        .read_to_end(&mut target)
        .map_err(|e| read_error(name, e))?;
    String::from_utf8(target).map_err(|_| UnzipError::Symlink {
        entry: name.to_string(),
        target: "<not UTF-8>".into(),
        rule: "is not valid UTF-8",
    })
}

/// `12 (Bzip2)`: the number as in the archive and its name.
#[allow(deprecated)] // to_u16 is the only public way to get a method's number.
fn method_name(method: CompressionMethod) -> String {
    let code = method.to_u16();
    format!("{code} ({})", CompressionMethod::name_from_u16(code))
}

fn data_error(name: &str, e: &ZipError) -> UnzipError {
    UnzipError::Data {
        entry: name.to_string(),
        message: e.to_string(),
    }
}

fn read_error(name: &str, e: std::io::Error) -> UnzipError {
    if e.to_string().to_ascii_lowercase().contains("checksum") {
        UnzipError::Crc {
            entry: name.to_string(),
        }
    } else {
        UnzipError::Data {
            entry: name.to_string(),
            message: e.to_string(),
        }
    }
}

struct Ctx<'a> {
    dest: &'a Path,
    limits: &'a Limits,
    written: &'a AtomicU64,
    done: &'a AtomicU64,
    total_entries: u64,
    progress: Progress<'a>,
    failed: AtomicBool,
}

/// Free bytes on the filesystem holding `path`, if it can be told.
pub fn free_space(path: &Path) -> Option<u64> {
    let st = nix::sys::statvfs::statvfs(path).ok()?;
    // The field types differ between platforms (u32 on some 32-bit ones).
    #[allow(clippy::unnecessary_cast)]
    Some((st.blocks_available() as u64).saturating_mul(st.fragment_size() as u64))
}

/// How often (bytes written) free space is checked again.
const SPACE_CHECK_EVERY: u64 = 64 * 1024 * 1024;

impl Ctx<'_> {
    fn tick(&self) {
        let done = self.done.fetch_add(1, Ordering::Relaxed) + 1;
        (self.progress)(
            done,
            self.total_entries,
            self.written.load(Ordering::Relaxed),
        );
    }

    fn create_dir(&self, zip: &mut Archive, p: &Planned) -> Result<(), UnzipError> {
        let path = self.dest.join(entry_path(zip, p.index)?.1);
        std::fs::create_dir_all(&path).map_err(|source| UnzipError::Write { path, source })?;
        self.tick();
        Ok(())
    }

    fn check_space(&self, entry: &str) -> Result<(), UnzipError> {
        let Some(free) = free_space(self.dest) else {
            return Ok(()); // Unknown: the byte limit still bounds us.
        };
        if free < self.limits.reserve_bytes {
            return Err(UnzipError::DiskReserve {
                entry: entry.to_string(),
                free,
                reserve: self.limits.reserve_bytes,
            });
        }
        Ok(())
    }

    fn write_file(&self, zip: &mut Archive, p: &Planned) -> Result<(), UnzipError> {
        let (name, rel) = entry_path(zip, p.index)?;
        self.check_space(&name)?;
        let path = self.dest.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|source| UnzipError::Write {
                path: parent.to_path_buf(),
                source,
            })?;
        }
        let mut out = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
            .open(&path)
            .map_err(|source| UnzipError::Write {
                path: path.clone(),
                source,
            })?;
        let consumed_before = consumed();
        let mut entry = zip.by_index(p.index).map_err(|e| data_error(&name, &e))?;
        let mut buf = vec![0u8; 256 * 1024];
        let mut entry_bytes: u64 = 0;
        let mut since_check: u64 = 0;
        loop {
            let n = entry.read(&mut buf).map_err(|e| read_error(&name, e))?;
            if n == 0 {
                break;
            }
            let n64 = n as u64;
            entry_bytes += n64;
            since_check += n64;
            let total = self.written.fetch_add(n64, Ordering::Relaxed) + n64;
            if total > self.limits.max_bytes {
                return Err(UnzipError::TooLarge {
                    entry: name.clone(),
                    limit: self.limits.max_bytes,
                });
            }
            // Against what was read for this entry so far, and never more than it declared.
            let compressed = (consumed() - consumed_before).min(p.compressed).max(1);
            if entry_bytes > self.limits.ratio_min_bytes
                && entry_bytes > compressed.saturating_mul(self.limits.max_ratio)
            {
                return Err(UnzipError::Ratio {
                    entry: name.clone(),
                    written: entry_bytes,
                    compressed,
                    declared: p.compressed,
                    limit: self.limits.max_ratio,
                });
            }
            if since_check >= SPACE_CHECK_EVERY {
                since_check = 0;
                self.check_space(&name)?;
            }
            out.write_all(&buf[..n])
                .map_err(|source| UnzipError::Write {
                    path: path.clone(),
                    source,
                })?;
            if self.failed.load(Ordering::Relaxed) {
                return Ok(()); // Another worker failed; staging is discarded anyway.
            }
        }
        drop(entry);
        out.set_permissions(std::fs::Permissions::from_mode(p.mode))
            .map_err(|source| UnzipError::Write {
                path: path.clone(),
                source,
            })?;
        self.tick();
        Ok(())
    }
}

mod error;
mod names;
mod reader;

pub use error::UnzipError;

pub use names::{safe_path, symlink_stays_inside};
use reader::{SharedReader, consumed};

#[cfg(test)]
mod tests;
