//! Output capture: size-rotated log files and an in-memory tail of the last lines.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;

/// The longest line kept in the tail; longer ones are cut.
const MAX_TAIL_LINE: usize = 512;

/// A log file rotated by size: `x.log` → `x.log.1` → … → `x.log.N`.
#[derive(Debug)]
pub struct RotatingLog {
    path: PathBuf,
    file: Option<File>,
    written: u64,
    max_bytes: u64,
    keep: u32,
}

impl RotatingLog {
    /// Opens (appending to) `path`.
    pub fn open(path: PathBuf, max_bytes: u64, keep: u32) -> std::io::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let written = file.metadata()?.len();
        Ok(Self {
            path,
            file: Some(file),
            written,
            max_bytes,
            keep,
        })
    }

    /// Appends a chunk, rotating first if it would pass the size limit. Write errors (disk full)
    /// are logged once per file and the output is dropped rather than blocking the game.
    pub fn write(&mut self, chunk: &[u8]) {
        if self.written > 0 && self.written + chunk.len() as u64 > self.max_bytes {
            self.rotate();
        }
        let Some(file) = &mut self.file else { return };
        match file.write_all(chunk) {
            Ok(()) => self.written += chunk.len() as u64,
            Err(e) => {
                tracing::warn!(log.path = %self.path.display(), error = %e, "cannot write process output; dropping it");
                self.file = None;
            }
        }
    }

    /// Flushes what the OS has buffered for the file (no-op for plain files; kept for callers
    /// that want a point where everything is written).
    pub fn flush(&mut self) {
        if let Some(f) = &mut self.file {
            let _ = f.flush();
        }
    }

    fn rotate(&mut self) {
        self.file = None;
        let numbered = |n: u32| PathBuf::from(format!("{}.{n}", self.path.display()));
        if self.keep == 0 {
            let _ = std::fs::remove_file(&self.path);
        } else {
            for n in (1..self.keep).rev() {
                let _ = std::fs::rename(numbered(n), numbered(n + 1));
            }
            let _ = std::fs::rename(&self.path, numbered(1));
        }
        match OpenOptions::new()
            .create(true)
            .append(true)
            .truncate(false)
            .open(&self.path)
        {
            Ok(f) => {
                self.file = Some(f);
                self.written = 0;
            }
            Err(e) => {
                tracing::warn!(log.path = %self.path.display(), error = %e, "cannot reopen rotated log");
            }
        }
    }
}

/// The last lines written to either stream.
#[derive(Debug)]
pub struct Tail {
    lines: VecDeque<String>,
    cap: usize,
    partial: [Vec<u8>; 2],
}

impl Tail {
    /// Keeps the last `cap` lines.
    pub fn new(cap: usize) -> Self {
        Self {
            lines: VecDeque::with_capacity(cap),
            cap,
            partial: [Vec::new(), Vec::new()],
        }
    }

    /// Adds a chunk of stream 0 (stdout) or 1 (stderr).
    pub fn push(&mut self, stream: usize, mut chunk: &[u8]) {
        if self.cap == 0 {
            return;
        }
        // Only the last `cap` complete lines of a big chunk can survive: skip the rest.
        let mut newlines = 0;
        for (i, b) in chunk.iter().enumerate().rev() {
            if *b == b'\n' {
                newlines += 1;
                if newlines > self.cap {
                    chunk = &chunk[i + 1..];
                    self.partial[stream].clear();
                    break;
                }
            }
        }
        let mut parts = chunk.split(|b| *b == b'\n').peekable();
        while let Some(part) = parts.next() {
            let partial = &mut self.partial[stream];
            if partial.len() < MAX_TAIL_LINE {
                let room = MAX_TAIL_LINE - partial.len();
                partial.extend_from_slice(&part[..part.len().min(room)]);
            }
            if parts.peek().is_some() {
                let line = String::from_utf8_lossy(partial)
                    .trim_end_matches('\r')
                    .to_string();
                partial.clear();
                if self.lines.len() == self.cap {
                    self.lines.pop_front();
                }
                self.lines.push_back(line);
            }
        }
    }

    /// The kept lines, oldest first, with unterminated last lines included.
    pub fn lines(&self) -> Vec<String> {
        let mut out: Vec<String> = self.lines.iter().cloned().collect();
        for p in &self.partial {
            if !p.is_empty() {
                out.push(String::from_utf8_lossy(p).to_string());
            }
        }
        let extra = out.len().saturating_sub(self.cap);
        out.drain(..extra);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_last_lines_across_chunks() {
        let mut t = Tail::new(3);
        t.push(0, b"one\ntw");
        t.push(0, b"o\nthree\n");
        t.push(1, b"err\n");
        assert_eq!(t.lines(), ["two", "three", "err"]);
        t.push(0, b"partial");
        assert_eq!(t.lines(), ["three", "err", "partial"]);
    }

    #[test]
    fn tail_skips_the_bulk_of_huge_chunks() {
        let mut t = Tail::new(2);
        let big: Vec<u8> = (0..10_000)
            .flat_map(|i| format!("line {i}\n").into_bytes())
            .collect();
        t.push(0, &big);
        assert_eq!(t.lines(), ["line 9998", "line 9999"]);
        t.push(0, &vec![b'x'; 10_000]);
        assert_eq!(t.lines()[1].len(), MAX_TAIL_LINE);
    }

    #[test]
    fn log_rotates_at_the_size_limit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.log");
        let mut log = RotatingLog::open(path.clone(), 10, 2).unwrap();
        for chunk in [&b"12345678"[..], b"abcdefgh", b"ABCDEFGH", b"zz"] {
            log.write(chunk);
        }
        log.flush();
        let read = |p: &str| std::fs::read_to_string(dir.path().join(p)).unwrap();
        assert_eq!(read("p.log"), "ABCDEFGHzz");
        assert_eq!(read("p.log.1"), "abcdefgh");
        assert_eq!(read("p.log.2"), "12345678");
    }
}
