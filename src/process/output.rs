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

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

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

    /// Whether [`LogFiles::check`] has work: a live file is not open yet or passed the limit.
    /// One fstat per open file (inode metadata, no disk read), so it runs on the async
    /// worker and only real work goes to the blocking pool.
    pub fn needs_check(&self) -> bool {
        self.files
            .iter()
            .zip(&self.unopenable)
            .any(|(f, gave_up)| match f {
                None => !gave_up,
                Some(f) => f.metadata().is_ok_and(|m| m.len() > self.max_bytes),
            })
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
                        tracing::debug!(log.path = %self.paths[i].display(), error = %e, "cannot open log for rotation; not rotated");
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
            if len > self.max_bytes
                && let Err(e) = rotate(&self.paths[i], file, len, self.max_bytes, self.keep)
            {
                tracing::warn!(log.path = %self.paths[i].display(), error = %e, "cannot rotate log");
            }
        }
    }
}

/// `path.n`
fn numbered(path: &Path, n: u64) -> PathBuf {
    PathBuf::from(format!("{}.{n}", path.display()))
}

/// Copy-truncate of `file` (at `path`, `len` bytes long).
fn rotate(path: &Path, file: &mut File, len: u64, max: u64, keep: u32) -> std::io::Result<()> {
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
        for k in 1..=pieces {
            let end = len - (k - 1) * max;
            let start = len.saturating_sub(k * max);
            // A new file, never through a link planted at the name.
            let piece = numbered(path, k);
            let _ = std::fs::remove_file(&piece);
            let mut out = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&piece)?;
            file.seek(SeekFrom::Start(start))?;
            let mut left = end - start;
            while left > 0 {
                let want = usize::try_from(left).map_or(buf.len(), |l| l.min(buf.len()));
                let n = file.read(&mut buf[..want])?;
                if n == 0 {
                    break;
                }
                out.write_all(&buf[..n])?;
                left -= n as u64;
            }
        }
    }
    file.set_len(0)
}

/// The last `n` lines of the process's output: stdout's, then stderr's (their relative order
/// is unknown), at most `n` in all. Reads at most [`TAIL_BYTES`] of each file (plus of its
/// `.1` when the live file was just truncated). Blocking.
pub(crate) fn tail(paths: &[PathBuf; 2], n: usize) -> Vec<String> {
    if n == 0 {
        return Vec::new();
    }
    let mut out = Vec::new();
    for path in paths {
        let mut lines = tail_of_file(path, n);
        if lines.len() < n {
            let mut older = tail_of_file(&numbered(path, 1), n - lines.len());
            older.append(&mut lines);
            lines = older;
        }
        out.extend(lines);
    }
    let extra = out.len().saturating_sub(n);
    out.drain(..extra);
    out
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
mod tests {
    use super::*;

    fn read(dir: &Path, name: &str) -> String {
        std::fs::read_to_string(dir.join(name)).unwrap()
    }

    #[test]
    fn planted_links_are_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "do not touch\n").unwrap();
        let live = dir.path().join("p.log");
        // A link at the live name is replaced, not written through.
        std::os::unix::fs::symlink(&secret, &live).unwrap();
        let mut f = open_for_child(&live).unwrap();
        f.write_all(&[b'x'; 100]).unwrap();
        assert!(
            !std::fs::symlink_metadata(&live)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(read(dir.path(), "secret"), "do not touch\n");
        // A link at a rotated name is not written through either.
        std::os::unix::fs::symlink(&secret, dir.path().join("p.log.1")).unwrap();
        let mut logs = LogFiles::new([live.clone(), dir.path().join("q.log")], 10, 2);
        logs.check();
        assert_eq!(read(dir.path(), "secret"), "do not touch\n");
        assert_eq!(std::fs::metadata(&live).unwrap().len(), 0, "rotated");
        // The tail is never read through a link.
        let linked = dir.path().join("r.log");
        std::os::unix::fs::symlink(&secret, &linked).unwrap();
        assert!(tail_of_file(&linked, 5).is_empty());
    }

    #[test]
    fn copy_truncate_keeps_the_writers_fd_and_shifts_old_files() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("p.log");
        let other = dir.path().join("q.log");
        let mut writer = open_for_child(&live).unwrap();
        let mut logs = LogFiles::new([live.clone(), other], 10, 2);
        for chunk in [&b"12345678901"[..], b"abcdefghijk", b"ABCDEFGHIJK"] {
            writer.write_all(chunk).unwrap();
            logs.check();
            assert_eq!(std::fs::metadata(&live).unwrap().len(), 0);
        }
        // The writer's O_APPEND continues at the new end.
        writer.write_all(b"zz").unwrap();
        assert_eq!(read(dir.path(), "p.log"), "zz");
        // 11 bytes with a limit of 10: two pieces, newest in .1, the oldest pushed out.
        assert_eq!(read(dir.path(), "p.log.1"), "BCDEFGHIJK");
        assert_eq!(read(dir.path(), "p.log.2"), "A");
        assert!(!dir.path().join("p.log.3").exists());
    }

    #[test]
    fn a_burst_is_split_into_pieces_of_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("p.log");
        std::fs::write(&live, "aaaabbbbccccdd").unwrap();
        let mut logs = LogFiles::new([live, dir.path().join("q.log")], 4, 2);
        logs.check();
        assert_eq!(read(dir.path(), "p.log"), "");
        assert_eq!(read(dir.path(), "p.log.1"), "ccdd");
        assert_eq!(read(dir.path(), "p.log.2"), "bbcc");
    }

    #[test]
    fn keep_zero_only_truncates() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("p.log");
        std::fs::write(&live, "0123456789abc").unwrap();
        LogFiles::new([live, dir.path().join("q.log")], 4, 0).check();
        assert_eq!(read(dir.path(), "p.log"), "");
        assert!(!dir.path().join("p.log.1").exists());
    }

    #[test]
    fn tail_reads_stdout_then_stderr_and_looks_into_the_rotated_file() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("o.log");
        let err = dir.path().join("e.log");
        std::fs::write(&out, "o3\no4").unwrap();
        std::fs::write(dir.path().join("o.log.1"), "o1\no2\n").unwrap();
        std::fs::write(&err, "e1\r\n").unwrap();
        assert_eq!(
            tail(&[out.clone(), err.clone()], 4),
            ["o2", "o3", "o4", "e1"]
        );
        assert_eq!(tail(&[out, err], 2), ["o4", "e1"]);
    }

    #[test]
    fn tail_reads_only_the_end_of_a_big_file() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("o.log");
        let big: String = (0..100_000).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&out, big).unwrap();
        let lines = tail(&[out, dir.path().join("none")], 2);
        assert_eq!(lines, ["line 99998", "line 99999"]);
        let long = dir.path().join("long.log");
        std::fs::write(&long, "x".repeat(10_000)).unwrap();
        assert_eq!(
            tail(&[long, dir.path().join("none")], 1)[0].len(),
            MAX_TAIL_LINE
        );
    }
}
