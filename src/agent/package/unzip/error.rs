//! Why an archive was refused or could not be extracted.

use std::path::PathBuf;

/// Why an archive was refused or could not be extracted. Each variant names the entry and the
/// rule.
#[derive(Debug, thiserror::Error)]
pub enum UnzipError {
    /// The archive file could not be opened.
    #[error("cannot open {path}: {source}")]
    Open {
        /// The archive.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Not a zip file, or its central directory is damaged or truncated.
    #[error("{path} is not a readable zip archive: {message}")]
    NotZip {
        /// The archive.
        path: PathBuf,
        /// What the reader said.
        message: String,
    },
    /// An entry's name breaks a rule.
    #[error("entry {entry:?}: {rule}")]
    UnsafeName {
        /// The entry as named in the archive.
        entry: String,
        /// The rule it breaks.
        rule: &'static str,
    },
    /// Two entries extract to the same path.
    #[error("entry {entry:?}: duplicate of an earlier entry")]
    Duplicate {
        /// The later entry.
        entry: String,
    },
    /// The central directory lists a name twice.
    #[error("the archive lists an entry name more than once (duplicate entries)")]
    DuplicateNames,
    /// Encrypted entries are not supported.
    #[error("entry {entry:?}: encrypted entries are not supported")]
    Encrypted {
        /// The entry.
        entry: String,
    },
    /// A compression method other than stored or deflate.
    #[error("entry {entry:?}: unsupported compression method {method} (only stored and deflate)")]
    Unsupported {
        /// The entry.
        entry: String,
        /// The method.
        method: String,
    },
    /// A device node, FIFO or socket.
    #[error("entry {entry:?}: {kind} entries are never created")]
    Special {
        /// The entry.
        entry: String,
        /// What it is.
        kind: &'static str,
    },
    /// A symlink that leaves the root, or is absolute.
    #[error("entry {entry:?}: symlink to {target:?} {rule}")]
    Symlink {
        /// The entry.
        entry: String,
        /// Its target.
        target: String,
        /// The rule it breaks.
        rule: &'static str,
    },
    /// An entry would be written through a symlink the archive creates.
    #[error("entry {entry:?}: would be written through the symlink {link:?}")]
    ThroughSymlink {
        /// The entry.
        entry: String,
        /// The symlink entry.
        link: String,
    },
    /// The CRC of the data read does not match the archive's.
    #[error("entry {entry:?}: CRC mismatch (the archive is corrupt)")]
    Crc {
        /// The entry.
        entry: String,
    },
    /// The entry's data could not be read (truncated or corrupt).
    #[error("entry {entry:?}: cannot read its data: {message}")]
    Data {
        /// The entry.
        entry: String,
        /// What failed.
        message: String,
    },
    /// More entries than allowed.
    #[error("the archive has {count} entries; the limit is {limit}")]
    TooManyEntries {
        /// Entries in the archive.
        count: u64,
        /// The limit.
        limit: u64,
    },
    /// The total written would pass the limit.
    #[error("entry {entry:?}: extraction passed the limit of {limit} bytes written")]
    TooLarge {
        /// The entry being written.
        entry: String,
        /// The limit.
        limit: u64,
    },
    /// A large entry expands suspiciously (zip bomb).
    #[error(
        "entry {entry:?}: expands more than {limit}× its compressed bytes ({written} bytes from {compressed} of its {declared} compressed bytes): a zip bomb"
    )]
    Ratio {
        /// The entry.
        entry: String,
        /// Bytes it had written when it was stopped.
        written: u64,
        /// Compressed bytes read for it by then.
        compressed: u64,
        /// Its whole compressed size, as declared.
        declared: u64,
        /// The limit.
        limit: u64,
    },
    /// The filesystem would drop below the reserve.
    #[error("entry {entry:?}: only {free} bytes free; {reserve} must stay free")]
    DiskReserve {
        /// The entry being written.
        entry: String,
        /// Free bytes.
        free: u64,
        /// The reserve.
        reserve: u64,
    },
    /// Writing into the staging directory failed.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}
