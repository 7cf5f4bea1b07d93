//! Game output: files the game writes itself, rotated by the agent with copy-truncate, and
//! the tail of those files for exit reports.
//!
//! The game's stdout and stderr are `<log_dir>/<process_id>.{stdout,stderr}.log`, opened with
//! `O_APPEND | O_CREAT` and handed to it as its fds 1 and 2. No pipe runs through the agent, so
//! a game keeps writing (no SIGPIPE, no blocked write) when the agent dies or is upgraded.
//!
//! Rotation is copy-truncate, done by the supervising task every [`CHECK_EVERY`]: when a live
//! file is larger than `max_bytes`, its content is copied into `.1` (older files shift up to
//! `.keep`; what passes `.keep` is deleted) and the live file is truncated to 0. The game's
//! `O_APPEND` writes continue at the new end. A burst larger than `max_bytes` between two
//! checks is split into pieces of at most `max_bytes` (newest in `.1`), of which `keep` are
//! kept, so the disk use per stream stays near `(keep + 1) × max_bytes`.
//!
//! The window: bytes the game writes after the copy read the end of the file and before the
//! truncate are lost (microseconds to milliseconds, depending on how much is copied). That is
//! the price of not owning the game's fds; a game that cannot lose a line must log itself.
//!
//! **Disk faults.** When the copy fails because the disk is full or failing (ENOSPC, EDQUOT,
//! EIO), the live file is truncated all the same: the old output cannot be kept, and keeping
//! the file would leave no room for the new. The bytes not copied are counted, and once the
//! disk takes writes again the agent appends one line to the live file, e.g.
//! `[gse-agent] 123456 bytes of output dropped: No space left on device`. The game's own
//! writes go straight to the file, so the agent cannot count those that failed; when a check
//! finds the file system full it says, once there is room again, that output may be missing
//! and for how long the disk was full. The checks run every [`CHECK_EVERY`], so such a line
//! lands within about a second of the space returning, not before the game's first line.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nix::errno::Errno;

/// How often the live files' sizes are checked (one fstat each).
pub const CHECK_EVERY: Duration = Duration::from_secs(1);
/// At most this much of each file is read for the exit tail.
const TAIL_BYTES: u64 = 64 * 1024;
/// The longest line kept in the tail; longer ones are cut.
const MAX_TAIL_LINE: usize = 512;
/// Copy buffer for rotation.
const COPY_CHUNK: usize = 64 * 1024;

/// Opens (creating, appending to) a log file to give to a child as stdout or stderr. A
/// symlink planted at the path is removed, never followed: the game's output cannot be
/// steered into another file.
pub fn open_for_child(path: &Path) -> std::io::Result<File> {
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
        std::fs::remove_file(path)?;
    }
    OpenOptions::new()
        .create(true)
        .append(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

/// The rotation of the two live log files of one process.
#[derive(Debug)]
pub(crate) struct LogFiles {
    paths: [PathBuf; 2],
    /// The agent's own handles on the live files (for fstat, copy, truncate); opened lazily.
    files: [Option<File>; 2],
    max_bytes: u64,
    keep: u32,
    /// A live file that could not be opened (removed by someone): not tried again, since the
    /// game writes on through its own descriptor and the path will not come back.
    unopenable: [bool; 2],
    /// Output lost to a disk fault, per file, not yet said in it.
    losses: [Loss; 2],
    /// Since when the file system has been seen full.
    full_since: Option<Instant>,
}

/// Output of one file lost to a disk fault, to be said in the file once it takes writes
/// again.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Loss {
    /// Bytes the agent dropped: a rotation could not copy them.
    bytes: u64,
    /// Why, the last time.
    error: Option<Errno>,
    /// How long the file system was seen full: the game's own writes then may have failed.
    full_for: Option<Duration>,
}

impl Loss {
    fn pending(&self) -> bool {
        self.bytes > 0 || self.full_for.is_some()
    }

    /// The line that says it.
    fn marker(&self) -> String {
        let full = self.full_for.map(|d| {
            humantime::format_duration(Duration::from_secs(d.as_secs().max(1))).to_string()
        });
        let mut line = if self.bytes > 0 {
            let why = self.error.map_or("a disk fault", |e| e.desc());
            format!("[gse-agent] {} bytes of output dropped: {why}", self.bytes)
        } else {
            "[gse-agent] output may be missing here".to_string()
        };
        if let Some(full) = full {
            line.push_str(&format!(
                "; the disk was full for {full}: what the game wrote then may be missing"
            ));
        }
        line.push('\n');
        line
    }
}

/// When (unix seconds) a full disk was last said at WARN level.
static FULL_SAID: AtomicU64 = AtomicU64::new(0);

/// Whether `e` says the disk is full or failing (rather than, say, a permission).
fn is_disk_fault(e: &std::io::Error) -> Option<Errno> {
    let errno = Errno::from_raw(e.raw_os_error()?);
    matches!(errno, Errno::ENOSPC | Errno::EDQUOT | Errno::EIO).then_some(errno)
}

impl LogFiles {
    /// The files of one process; nothing is opened yet.
    pub fn new(paths: [PathBuf; 2], max_bytes: u64, keep: u32) -> Self {
        Self {
            paths,
            files: [None, None],
            max_bytes,
            keep,
            unopenable: [false, false],
            losses: Default::default(),
            full_since: None,
        }
    }

    /// A copy with no open handles (after a rotation task was lost).
    pub fn fresh(&self) -> Self {
        Self::new(self.paths.clone(), self.max_bytes, self.keep)
    }

    /// The live files.
    pub fn paths(&self) -> &[PathBuf; 2] {
        &self.paths
    }

    /// Whether [`LogFiles::check`] has work: a live file is not open yet or passed the limit,
    /// the file system is (or was just) full, or a loss is to be said. One fstat per open
    /// file and one fstatvfs (metadata, no disk read), so it runs on the async worker and
    /// only real work goes to the blocking pool.
    pub fn needs_check(&self) -> bool {
        self.full_since.is_some()
            || self.losses.iter().any(Loss::pending)
            || self.disk_full() == Some(true)
            || self
                .files
                .iter()
                .zip(&self.unopenable)
                .any(|(f, gave_up)| match f {
                    None => !gave_up,
                    Some(f) => f.metadata().is_ok_and(|m| m.len() > self.max_bytes),
                })
    }

    /// Whether the file system of the live files has no space left for unprivileged writers
    /// (`None`: no file open to ask).
    fn disk_full(&self) -> Option<bool> {
        let file = self.files.iter().flatten().next()?;
        let stat = nix::sys::statvfs::fstatvfs(file).ok()?;
        Some(stat.blocks_available() == 0)
    }

    /// Rotates each live file that passed the limit. Blocking: run it off the async workers.
    pub fn check(&mut self) {
        for i in 0..2 {
            if self.files[i].is_none() && !self.unopenable[i] {
                match OpenOptions::new()
                    .read(true)
                    .write(true)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&self.paths[i])
                {
                    Ok(f) => self.files[i] = Some(f),
                    Err(e) => {
                        tracing::debug!(output.path = %self.paths[i].display(), error = %e, "cannot open log for rotation; not rotated");
                        self.unopenable[i] = true;
                        continue;
                    }
                }
            }
            let Some(file) = &mut self.files[i] else {
                continue;
            };
            let len = match file.metadata() {
                Ok(m) => m.len(),
                Err(_) => continue,
            };
            if len > self.max_bytes {
                match rotate(&self.paths[i], file, len, self.max_bytes, self.keep) {
                    Ok(None) => {}
                    Ok(Some((dropped, errno))) => {
                        tracing::warn!(output.path = %self.paths[i].display(), output.dropped = dropped, error = %errno.desc(), "cannot keep rotated output: the disk refuses writes; the live file was truncated");
                        self.losses[i].bytes += dropped;
                        self.losses[i].error = Some(errno);
                    }
                    Err(e) => {
                        tracing::warn!(output.path = %self.paths[i].display(), error = %e, "cannot rotate log");
                    }
                }
            }
        }
        self.watch_space();
        if self.full_since.is_none() {
            self.say_losses();
        }
    }

    /// Notes when the file system fills up, and for how long it was full once it is not.
    fn watch_space(&mut self) {
        match (self.disk_full(), self.full_since) {
            (Some(true), None) => {
                // Every game's files see it at once: said once a minute, not once per game.
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                if now >= FULL_SAID.load(Ordering::Relaxed) + 60 {
                    FULL_SAID.store(now, Ordering::Relaxed);
                    tracing::warn!(output.path = %self.paths[0].display(), "the disk holding the games' output is full: their writes fail");
                } else {
                    tracing::debug!(output.path = %self.paths[0].display(), "the disk holding the game's output is full");
                }
                self.full_since = Some(Instant::now());
            }
            (Some(false) | None, Some(since)) => {
                let full_for = since.elapsed();
                for loss in &mut self.losses {
                    loss.full_for = Some(loss.full_for.unwrap_or_default() + full_for);
                }
                self.full_since = None;
            }
            _ => {}
        }
    }

    /// Appends the line that says each pending loss to its live file; one that cannot be
    /// written stays pending.
    fn say_losses(&mut self) {
        for i in 0..2 {
            if !self.losses[i].pending() {
                continue;
            }
            let line = self.losses[i].marker();
            // After a partial line of the game's, the marker starts a line of its own.
            let after_partial = self.files[i].as_ref().is_some_and(|f| {
                use std::os::unix::fs::FileExt;
                let len = f.metadata().map(|m| m.len()).unwrap_or(0);
                let mut last = [b'\n'];
                len > 0 && f.read_at(&mut last, len - 1).is_ok() && last[0] != b'\n'
            });
            let text = if after_partial {
                format!("\n{line}")
            } else {
                line
            };
            let written = OpenOptions::new()
                .append(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&self.paths[i])
                .and_then(|mut f| f.write_all(text.as_bytes()));
            match written {
                Ok(()) => {
                    tracing::info!(output.path = %self.paths[i].display(), output.dropped = self.losses[i].bytes, "said in the log that output was lost to a disk fault");
                    self.losses[i] = Loss::default();
                }
                Err(e) => {
                    tracing::debug!(output.path = %self.paths[i].display(), error = %e, "cannot say the output loss yet");
                }
            }
        }
    }
}

/// `path.n`
pub(crate) fn numbered(path: &Path, n: u64) -> PathBuf {
    PathBuf::from(format!("{}.{n}", path.display()))
}

/// Copy-truncate of `file` (at `path`, `len` bytes long). When the disk refuses the copy
/// (full or failing), the file is truncated all the same; returns how many bytes were not
/// kept, and why.
fn rotate(
    path: &Path,
    file: &mut File,
    len: u64,
    max: u64,
    keep: u32,
) -> std::io::Result<Option<(u64, Errno)>> {
    let keep = u64::from(keep);
    let max = max.max(1);
    if keep > 0 {
        let pieces = len.div_ceil(max).min(keep);
        for n in (1..=keep).rev() {
            let from = numbered(path, n);
            if n + pieces > keep {
                let _ = std::fs::remove_file(&from);
            } else {
                let _ = std::fs::rename(&from, numbered(path, n + pieces));
            }
        }
        let mut buf = vec![0u8; COPY_CHUNK];
        let mut kept = 0u64;
        for k in 1..=pieces {
            let end = len - (k - 1) * max;
            let start = len.saturating_sub(k * max);
            // A new file, never through a link planted at the name.
            let piece = numbered(path, k);
            let _ = std::fs::remove_file(&piece);
            let copied = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&piece)
                .and_then(|mut out| copy_range(file, &mut out, start, end, &mut buf, &mut kept));
            if let Err(e) = copied {
                let Some(errno) = is_disk_fault(&e) else {
                    return Err(e);
                };
                // What was copied stays in the pieces (the last one cut short); the rest
                // goes.
                file.set_len(0)?;
                return Ok(Some((len - kept, errno)));
            }
        }
    }
    file.set_len(0)?;
    Ok(None)
}

/// Copies bytes `start..end` of `from` to `to`, adding what was written to `kept`.
fn copy_range(
    from: &mut File,
    to: &mut File,
    start: u64,
    end: u64,
    buf: &mut [u8],
    kept: &mut u64,
) -> std::io::Result<()> {
    from.seek(SeekFrom::Start(start))?;
    let mut left = end - start;
    while left > 0 {
        let want = usize::try_from(left).map_or(buf.len(), |l| l.min(buf.len()));
        let n = from.read(&mut buf[..want])?;
        if n == 0 {
            break;
        }
        let mut chunk = &buf[..n];
        while !chunk.is_empty() {
            let w = to.write(chunk)?;
            if w == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            *kept += w as u64;
            chunk = &chunk[w..];
        }
        left -= n as u64;
    }
    Ok(())
}

/// The end of a process's output, for its exit report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Tail {
    /// The last lines: stdout's, then stderr's (their relative order is unknown).
    pub lines: Vec<String>,
    /// The file to open for more: the one the last line came from (stderr's when it wrote
    /// anything in the tail, else stdout's).
    pub file: PathBuf,
}

/// The last `n` lines of the process's output (`paths`: stdout's and stderr's files), at most
/// `n` in all. Reads at most [`TAIL_BYTES`] of each file (plus of its `.1` when the live file
/// was just truncated). Blocking.
pub(crate) fn tail(paths: &[PathBuf; 2], n: usize) -> Tail {
    let mut out = Vec::new();
    let mut file = paths[0].clone();
    for path in paths.iter().filter(|_| n > 0) {
        let mut lines = tail_of_file(path, n);
        if lines.len() < n {
            let mut older = tail_of_file(&numbered(path, 1), n - lines.len());
            older.append(&mut lines);
            lines = older;
        }
        if !lines.is_empty() {
            file = path.clone();
        }
        out.extend(lines);
    }
    let extra = out.len().saturating_sub(n);
    out.drain(..extra);
    Tail { lines: out, file }
}

/// The last `n` lines of one file (a missing file has none).
fn tail_of_file(path: &Path, n: usize) -> Vec<String> {
    // Never through a planted link: the tail goes into events anyone may read.
    let Ok(mut f) = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
    else {
        return Vec::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(TAIL_BYTES);
    let mut bytes = Vec::new();
    if f.seek(SeekFrom::Start(start)).is_err()
        || f.take(TAIL_BYTES).read_to_end(&mut bytes).is_err()
    {
        return Vec::new();
    }
    let mut text: &[u8] = &bytes;
    if start > 0 {
        // Started mid-line: drop the fragment.
        text = text
            .iter()
            .position(|b| *b == b'\n')
            .map_or(&[][..], |i| &text[i + 1..]);
    }
    let text = text.strip_suffix(b"\n").unwrap_or(text);
    if text.is_empty() {
        return Vec::new();
    }
    let lines: Vec<&[u8]> = text.split(|b| *b == b'\n').collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| {
            let l = &l[..l.len().min(MAX_TAIL_LINE)];
            String::from_utf8_lossy(l)
                .trim_end_matches('\r')
                .to_string()
        })
        .collect()
}

#[cfg(test)]
mod tests;
