//! The archive reader: positioned reads of one shared file, one per extraction worker, each
//! counting what its decompressor consumed (the streaming ratio check reads the count).

use std::fs::File;
use std::io::Read;
use std::path::Path;

/// A file read at positions of its own: clones share the open file and the parsed central
/// directory (through `ZipArchive`'s clone), each with its own position and small buffer.
pub(super) struct SharedReader {
    file: std::sync::Arc<File>,
    pos: u64,
    len: u64,
    buf: Vec<u8>,
    buf_start: u64,
}

const READ_BUF: usize = 64 * 1024;

thread_local! {
    /// Bytes this thread's [`SharedReader`]s handed out: what a decompressor on this thread has
    /// consumed of the archive (each extraction worker is one thread with one reader).
    static CONSUMED: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// The bytes this thread's readers have handed out so far (see [`CONSUMED`]).
pub(super) fn consumed() -> u64 {
    CONSUMED.with(|c| c.get())
}

fn count_consumed(n: usize) {
    CONSUMED.with(|c| c.set(c.get() + n as u64));
}

impl SharedReader {
    pub(super) fn open(path: &Path) -> std::io::Result<Self> {
        let file = File::open(path)?;
        let len = file.metadata()?.len();
        Ok(Self {
            file: std::sync::Arc::new(file),
            pos: 0,
            len,
            buf: Vec::new(),
            buf_start: 0,
        })
    }
}

impl Clone for SharedReader {
    fn clone(&self) -> Self {
        Self {
            file: self.file.clone(),
            pos: self.pos,
            len: self.len,
            buf: Vec::new(),
            buf_start: 0,
        }
    }
}

impl Read for SharedReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        use std::os::unix::fs::FileExt;
        let end = self.buf_start + self.buf.len() as u64;
        if self.pos < self.buf_start || self.pos >= end {
            if out.len() >= READ_BUF {
                let n = self.file.read_at(out, self.pos)?;
                self.pos += n as u64;
                count_consumed(n);
                return Ok(n);
            }
            self.buf.resize(READ_BUF, 0);
            let n = self.file.read_at(&mut self.buf, self.pos)?;
            self.buf.truncate(n);
            self.buf_start = self.pos;
            if n == 0 {
                return Ok(0);
            }
        }
        let at = (self.pos - self.buf_start) as usize;
        let n = out.len().min(self.buf.len() - at);
        out[..n].copy_from_slice(&self.buf[at..at + n]);
        self.pos += n as u64;
        count_consumed(n);
        Ok(n)
    }
}

impl std::io::Seek for SharedReader {
    fn seek(&mut self, to: std::io::SeekFrom) -> std::io::Result<u64> {
        let pos = match to {
            std::io::SeekFrom::Start(p) => Some(p),
            std::io::SeekFrom::End(d) => self.len.checked_add_signed(d),
            std::io::SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = pos.ok_or_else(|| std::io::Error::other("seek before the start of the file"))?;
        Ok(self.pos)
    }
}
