//! Game logs as GSE kept them: when a process ends, the files and folders it named in
//! `ProcessReady.logPathsToUpload` and the agent's capture of its output go into one zip per
//! launch in `data-dir/log-archives/`, within per-archive and folder bounds, and are served
//! through pre-signed links on the control API's listener.
//!
//! The fleet's pure core decides what to archive ([`Job`], in an exit's effects); the
//! [`Archiver`] task owns the folder and its index and does the file work on the blocking
//! pool, one archive at a time, never on the fleet actor. Readers ([`LogLinks`]: the control
//! API and the link server) see the index as an immutable snapshot it publishes after each
//! change.
//!
//! - [`plan`]: the pure decisions (where a path lies in the build, bounds, the manifest).
//! - [`walk`]: opening beneath the build without following a link out of it.
//! - `write`: one archive, written whole or not at all.
//! - [`link`]: the pre-signed links and the agent's key.
//! - `serve`: `GET /game-logs/<archive>` for the holder of a valid link ([`router`]).

pub mod link;
pub mod plan;
mod serve;
pub mod walk;
mod write;

pub use link::{LinkError, Signer};
pub use serve::router;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, watch};
use tracing::Instrument;

use crate::agent::config::{ArchivePolicy, Config};

/// The folder under `data-dir` archives are kept in.
pub const FOLDER: &str = "log-archives";
/// The agent's link key under `data-dir`.
pub const KEY_FILE: &str = "log-url.key";
/// Archives waiting to be written at most; past it an exit's archive is skipped (and logged).
const QUEUE: usize = 1024;
/// The largest manifest read back when the folder is scanned at start.
const MAX_MANIFEST_BYTES: u64 = 4 << 20;

/// What the fleet decided to archive when a process ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// The agent's id of the process (`proc-0-1-3`): names the archive.
    pub process_id: String,
    /// logPathsToUpload as it reported them (empty if it never called ProcessReady).
    pub log_paths: Vec<String>,
    /// The game server sessions it hosted, oldest first.
    pub sessions: Vec<String>,
    /// How it ended (the exit event's code).
    pub event_code: &'static str,
    /// When it started (wall clock).
    pub started_at: SystemTime,
    /// When it ended (wall clock).
    pub ended_at: SystemTime,
    /// The build it ran in (its game root as resolved when it started), which a later
    /// DeployBuild does not change; `None`: where the game root leads now.
    pub build: Option<PathBuf>,
}

/// Why the archive folder cannot be used or an archive could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// The folder could not be created or read.
    #[error("cannot use the log archive folder {path}: {source}")]
    Folder {
        /// The folder.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The link key cannot be made or used.
    #[error("the log link key {path} {why}")]
    Key {
        /// The key file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// Writing an archive failed (it was not kept).
    #[error("cannot write the log archive {path}: {source}")]
    Write {
        /// The archive.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The zip writer refused (it was not kept).
    #[error("cannot write the log archive {path}: {source}")]
    Zip {
        /// The archive.
        path: PathBuf,
        /// The error.
        #[source]
        source: zip::result::ZipError,
    },
}

/// The file name of the archive of the launch `process_id` started at `started_at`:
/// `proc-0-1-3.1764126000123.zip`. The start time (Unix milliseconds) keeps names unique when
/// process ids start over (a data-dir whose saved state was lost keeps its archives), so a
/// link given out never leads to another launch's logs.
pub fn archive_name(process_id: &str, started_at: SystemTime) -> String {
    let ms = started_at
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    format!("{process_id}.{ms}.zip")
}

/// The process id an archive's file name starts with.
fn process_of(name: &str) -> &str {
    name.split('.').next().unwrap_or(name)
}

/// One archive in the folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Archive {
    /// Its file name ([`archive_name`]).
    pub name: String,
    /// The process whose logs it holds.
    pub process_id: String,
    /// Bytes on disk.
    pub bytes: u64,
    /// When it was written.
    pub written: SystemTime,
    /// The game server sessions that process hosted.
    pub sessions: Vec<String>,
}

/// The archives in the folder, oldest first.
#[derive(Debug, Clone, Default)]
pub struct Index {
    archives: Vec<Archive>,
}

impl Index {
    /// The archive of the process `process_id` (the latest, should process ids have started
    /// over).
    pub fn by_process(&self, process_id: &str) -> Option<&Archive> {
        self.archives
            .iter()
            .rev()
            .find(|a| a.process_id == process_id)
    }

    /// The archive of the process that hosted the session `gss_id` (the latest, should two
    /// claim it).
    pub fn by_session(&self, gss_id: &str) -> Option<&Archive> {
        self.archives
            .iter()
            .rev()
            .find(|a| a.sessions.iter().any(|s| s == gss_id))
    }

    /// Every archive, newest first.
    pub fn newest_first(&self) -> impl Iterator<Item = &Archive> {
        self.archives.iter().rev()
    }

    /// How many archives there are.
    pub fn len(&self) -> usize {
        self.archives.len()
    }

    /// No archive yet.
    pub fn is_empty(&self) -> bool {
        self.archives.is_empty()
    }

    fn insert(&mut self, a: Archive) {
        self.archives.retain(|b| b.name != a.name);
        let at = self
            .archives
            .partition_point(|b| (b.written, &b.name) <= (a.written, &a.name));
        self.archives.insert(at, a);
    }
}

/// What the archiver needs to know of the configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The archive folder.
    pub dir: PathBuf,
    /// The agent's output capture (`data-dir/logs`).
    pub log_dir: PathBuf,
    /// Rotated output files kept per stream (`logs.keep-files`).
    pub keep_files: u32,
    /// The build (GSE's `/local/game`).
    pub game_root: PathBuf,
    /// The bounds.
    pub policy: ArchivePolicy,
    /// Written into each manifest.
    pub fleet_id: String,
    /// Written into each manifest.
    pub instance_id: String,
    /// The uid and gid the games run as (`run-as`): what a game named is opened as that user,
    /// so its archive holds only what the game itself could read. `None`: as the agent.
    pub read_as: Option<(u32, u32)>,
}

impl Settings {
    /// The settings of `cfg`.
    pub fn of(cfg: &Config) -> Self {
        Self {
            dir: cfg.data_dir.join(FOLDER),
            log_dir: cfg.data_dir.join("logs"),
            keep_files: cfg.logs.keep_files,
            game_root: cfg.game_root.clone(),
            policy: cfg.log_archives.clone(),
            fleet_id: cfg.fleet_id.clone(),
            instance_id: cfg.instance_id.clone(),
            read_as: None,
        }
    }
}

/// The fleet's side: hands finished processes to the archiver, never waiting.
#[derive(Debug)]
pub struct LogJobs {
    tx: mpsc::Sender<Work>,
}

/// What the archiver does, in the order it was asked.
enum Work {
    /// Write an archive.
    Archive(Job),
    /// Remove an old process's output files (the last launches of a slot keep theirs): after
    /// its archive, which was asked for first, has taken them.
    Retire(String),
}

impl LogJobs {
    /// Queues the archive of an ended process (skipped, and logged, if the queue is full).
    pub fn submit(&self, job: Job) {
        match self.tx.try_send(Work::Archive(job)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(Work::Archive(job))) => {
                tracing::warn!(process.id = %job.process_id, "log archive skipped: {QUEUE} archives are waiting to be written");
            }
            Err(mpsc::error::TrySendError::Closed(Work::Archive(job))) => {
                tracing::warn!(process.id = %job.process_id, "log archive skipped: the archiver has stopped");
            }
            Err(_) => {}
        }
    }

    /// Queues the removal of an old process's output files behind its archive; `false` when
    /// the queue cannot take it (full, or the archiver stopped): the caller removes them.
    pub fn retire(&self, process_id: String) -> bool {
        self.tx.try_send(Work::Retire(process_id)).is_ok()
    }
}

/// The readers' side: links to archives, and their check.
#[derive(Clone)]
pub struct LogLinks {
    index: watch::Receiver<Arc<Index>>,
    signer: Arc<Signer>,
    dir: PathBuf,
    expiry: Duration,
    url_base: Option<String>,
}

impl LogLinks {
    /// The index as it is now.
    pub fn index(&self) -> Arc<Index> {
        self.index.borrow().clone()
    }

    /// The scheme and authority links start with: `log-archives.url-base`, else `http://`
    /// and `host` (the `Host` a request was sent to).
    pub fn base(&self, host: &str) -> String {
        match &self.url_base {
            Some(base) => base.trim_end_matches('/').to_string(),
            None => format!("http://{host}"),
        }
    }

    /// A link to `archive` under `base`, valid for `log-archives.url-expiry` from `now`.
    pub fn link(&self, archive: &Archive, base: &str, now: SystemTime) -> String {
        let now = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        let expires = (now + self.expiry).as_secs() as i64;
        self.signer.link(base, &archive.name, expires)
    }

    /// Checks a request for the archive `name` with `query` at `now`.
    pub fn check(&self, name: &str, query: Option<&str>, now: SystemTime) -> Result<(), LinkError> {
        let now = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        self.signer.check(name, query, now)
    }

    /// Where the archive `name` is (only a name [`is_archive_name`] accepts).
    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

/// Whether `name` can be an archive's name: `<process id>.zip`, of letters, digits, `-`, `_`
/// and `.`, not hidden.
pub fn is_archive_name(name: &str) -> bool {
    name.len() <= 200
        && name.ends_with(".zip")
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// The task that owns the folder: writes archives as processes end and keeps the bounds.
pub struct Archiver {
    settings: Arc<Settings>,
    jobs: mpsc::Receiver<Work>,
    index: Index,
    publish: watch::Sender<Arc<Index>>,
}

/// Opens the archive folder of `cfg` (creating it and the link key if missing, removing what
/// an interrupted write left, reading what is kept), for games that run as `read_as` (uid,
/// gid; `None`: as the agent); returns the fleet's side, the readers' side and the task to run.
pub fn open(
    cfg: &Config,
    read_as: Option<(u32, u32)>,
) -> Result<(LogJobs, LogLinks, Archiver), ArchiveError> {
    let settings = Settings {
        read_as,
        ..Settings::of(cfg)
    };
    std::fs::create_dir_all(&settings.dir).map_err(|source| ArchiveError::Folder {
        path: settings.dir.clone(),
        source,
    })?;
    let signer = Signer::load_or_create(&cfg.data_dir.join(KEY_FILE))?;
    let index = scan(&settings.dir)?;
    let (tx, jobs) = mpsc::channel(QUEUE);
    let (publish, readers) = watch::channel(Arc::new(index.clone()));
    let links = LogLinks {
        index: readers,
        signer: Arc::new(signer),
        dir: settings.dir.clone(),
        expiry: cfg.log_archives.url_expiry.get(),
        url_base: cfg.log_archives.url_base.clone(),
    };
    let archiver = Archiver {
        settings: Arc::new(settings),
        jobs,
        index,
        publish,
    };
    Ok((LogJobs { tx }, links, archiver))
}

/// What the folder holds: every archive with the sessions its manifest names (an archive
/// whose manifest cannot be read is kept, without sessions); leftovers of interrupted writes
/// are removed.
fn scan(dir: &Path) -> Result<Index, ArchiveError> {
    let entries = std::fs::read_dir(dir).map_err(|source| ArchiveError::Folder {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut index = Index::default();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Ok(meta) = entry.path().symlink_metadata() else {
            continue;
        };
        if name.starts_with(write::TEMP_PREFIX) && meta.is_file() {
            let _ = std::fs::remove_file(entry.path());
            continue;
        }
        if !meta.is_file() || !is_archive_name(&name) {
            continue;
        }
        let sessions = match read_manifest(&entry.path()) {
            Ok(m) => m.game_server_session_ids,
            Err(e) => {
                tracing::warn!(archive = %name, error = %e, "log archive without a readable manifest: kept, linked to no session");
                Vec::new()
            }
        };
        index.insert(Archive {
            process_id: process_of(&name).to_string(),
            name,
            bytes: meta.len(),
            written: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            sessions,
        });
    }
    Ok(index)
}

/// The manifest of the archive at `path`.
pub fn read_manifest(path: &Path) -> Result<plan::Manifest, String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut zip = zip::ZipArchive::new(file).map_err(|e| e.to_string())?;
    let entry = zip.by_name(write::MANIFEST).map_err(|e| e.to_string())?;
    let mut text = Vec::new();
    entry
        .take(MAX_MANIFEST_BYTES)
        .read_to_end(&mut text)
        .map_err(|e| e.to_string())?;
    serde_json::from_slice(&text).map_err(|e| e.to_string())
}

impl Archiver {
    /// Writes archives as jobs come and applies the folder's bounds after each and
    /// periodically (for the age bound); ends once the fleet's side is dropped and every
    /// queued archive is written.
    pub async fn run(mut self) {
        self.prune().await;
        let age = self.settings.policy.max_age.get();
        let mut tick = tokio::time::interval(
            (age / 10).clamp(Duration::from_millis(200), Duration::from_secs(3600)),
        );
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                work = self.jobs.recv() => match work {
                    None => break,
                    Some(Work::Archive(job)) => {
                        self.write(job).await;
                        self.prune().await;
                    }
                    Some(Work::Retire(process_id)) => {
                        let s = self.settings.clone();
                        let _ = tokio::task::spawn_blocking(move || {
                            crate::agent::process::remove_output_files(&s.log_dir, &process_id, s.keep_files)
                        })
                        .await;
                    }
                },
                _ = tick.tick() => self.prune().await,
            }
        }
    }

    async fn write(&mut self, job: Job) {
        let settings = self.settings.clone();
        let span = tracing::info_span!("log_archive", process.id = %job.process_id);
        let result = tokio::task::spawn_blocking(move || {
            let r = write::archive(&settings, &job, SystemTime::now());
            (job, r)
        })
        .instrument(span)
        .await;
        match result {
            Ok((_, Ok(archive))) => {
                tracing::debug!(process.id = %archive.process_id, archive.bytes = archive.bytes, "log archive written");
                self.index.insert(archive);
                self.publish.send_replace(Arc::new(self.index.clone()));
            }
            Ok((job, Err(e))) => {
                tracing::warn!(process.id = %job.process_id, error = %e, "log archive not written");
            }
            Err(e) => tracing::error!(error = %e, "writing a log archive panicked"),
        }
    }

    /// Removes what the bounds no longer allow, oldest first.
    async fn prune(&mut self) {
        let kept: Vec<plan::Kept> = self
            .index
            .archives
            .iter()
            .map(|a| plan::Kept {
                name: a.name.clone(),
                bytes: a.bytes,
                written: a.written,
            })
            .collect();
        let p = &self.settings.policy;
        let gone = plan::to_remove(
            &kept,
            SystemTime::now(),
            p.max_total_bytes.get(),
            p.max_age.get(),
        );
        if gone.is_empty() {
            return;
        }
        // Out of the listing first: no link is handed out for a file about to go (and once a
        // file is gone, no listing names it).
        self.index.archives.retain(|a| !gone.contains(&a.name));
        self.publish.send_replace(Arc::new(self.index.clone()));
        let dir = self.settings.dir.clone();
        let names = gone;
        let _ = tokio::task::spawn_blocking(move || {
            for name in names {
                match std::fs::remove_file(dir.join(&name)) {
                    Ok(()) => tracing::debug!(archive = %name, "log archive removed (log-archives bounds)"),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => tracing::warn!(archive = %name, error = %e, "cannot remove a log archive"),
                }
            }
        })
        .await;
    }
}

#[cfg(test)]
mod tests;
