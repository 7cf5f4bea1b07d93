//! Writing one archive: the agent's capture of the process's output, then every path it
//! named, within the archive's bounds, and `MANIFEST.json` saying what was kept, cut or
//! refused. Written to a temporary file in the folder and renamed into place once complete and
//! synced: an archive is whole or absent.

use std::collections::HashSet;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipWriter};

use super::plan::{self, Budget, FileNote, Manifest, SkipNote, Take};
use super::walk::{self, Beneath, Found, Item, OpenFile};
use super::{Archive, ArchiveError, Job, Settings};
use crate::api::time::format_time;

/// The manifest's name in every archive.
pub const MANIFEST: &str = "MANIFEST.json";
/// The name prefix of archives being written (removed at start if one was left behind).
pub const TEMP_PREFIX: &str = ".tmp-";

/// Writes the archive of `job` into the folder; returns it as the index holds it.
pub fn archive(s: &Settings, job: &Job, now: SystemTime) -> Result<Archive, ArchiveError> {
    let name = super::archive_name(&job.process_id, job.started_at);
    let dest = s.dir.join(&name);
    let write_err = |source: std::io::Error| ArchiveError::Write {
        path: dest.clone(),
        source,
    };
    let tmp = tempfile::Builder::new()
        .prefix(TEMP_PREFIX)
        .suffix(".zip")
        .tempfile_in(&s.dir)
        .map_err(write_err)?;
    let mut out = Out {
        zip: ZipWriter::new(BufWriter::new(
            tmp.as_file().try_clone().map_err(write_err)?,
        )),
        budget: Budget {
            bytes: s.policy.max_bytes.get(),
            entries: s.policy.max_entries,
        },
        names: HashSet::new(),
        manifest: Manifest {
            process_id: job.process_id.clone(),
            fleet_id: s.fleet_id.clone(),
            instance_id: s.instance_id.clone(),
            game_server_session_ids: job.sessions.clone(),
            event_code: job.event_code.to_string(),
            start_time: format_time(job.started_at),
            end_time: format_time(job.ended_at),
            archived_at: format_time(now),
            log_paths_to_upload: job.log_paths.clone(),
            ..Default::default()
        },
        process_id: job.process_id.clone(),
    };
    out.capture(s).map_err(write_err)?;
    out.named(s, job).map_err(write_err)?;
    let Out {
        mut zip, manifest, ..
    } = out;
    let manifest = serde_json::to_vec_pretty(&manifest).expect("the manifest serializes");
    let zip_err = |source| ArchiveError::Zip {
        path: dest.clone(),
        source,
    };
    zip.start_file(MANIFEST, options(0o644, now_secs(now), 0))
        .map_err(zip_err)?;
    zip.write_all(&manifest).map_err(write_err)?;
    let mut buffered = zip.finish().map_err(zip_err)?;
    buffered.flush().map_err(write_err)?;
    drop(buffered);
    tmp.as_file().sync_all().map_err(write_err)?;
    let file = tmp.persist(&dest).map_err(|e| write_err(e.error))?;
    let bytes = file.metadata().map_err(write_err)?.len();
    // The rename itself is durable once the folder is synced.
    std::fs::File::open(&s.dir)
        .and_then(|d| d.sync_all())
        .map_err(write_err)?;
    Ok(Archive {
        name,
        process_id: job.process_id.clone(),
        bytes,
        written: now,
        sessions: job.sessions.clone(),
    })
}

struct Out {
    zip: ZipWriter<BufWriter<std::fs::File>>,
    budget: Budget,
    names: HashSet<String>,
    manifest: Manifest,
    process_id: String,
}

impl Out {
    /// The agent's own capture: every output file of the process, rotated ones first.
    fn capture(&mut self, s: &Settings) -> std::io::Result<()> {
        let files = crate::agent::process::output_files(&s.log_dir, &self.process_id, s.keep_files);
        for path in files {
            let live = !path
                .extension()
                .is_some_and(|e| e.to_string_lossy().bytes().all(|b| b.is_ascii_digit()));
            let opened = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
                .open(&path);
            let file = match opened.and_then(|f| Ok((f.metadata()?, f))) {
                Ok((meta, file)) if meta.is_file() => {
                    use std::os::unix::fs::MetadataExt;
                    OpenFile {
                        len: meta.len(),
                        mtime: meta.mtime(),
                        mode: 0o644,
                        file,
                    }
                }
                Ok(_) => {
                    self.skip(path.display().to_string(), "not a regular file".into());
                    continue;
                }
                // Rotated copies exist only once the output grew past logs.max-file-bytes.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && !live => continue,
                Err(e) => {
                    self.skip(path.display().to_string(), format!("cannot be read: {e}"));
                    continue;
                }
            };
            let file_name = path.file_name().unwrap_or_default().to_string_lossy();
            // The agent's own capture files, named by the process id it made: always safe.
            self.add(
                Ok(format!("output/{file_name}")),
                path.display().to_string(),
                file,
            )?;
        }
        Ok(())
    }

    /// Every path the game named, resolved beneath the build it ran in and opened as the
    /// game's user.
    fn named(&mut self, s: &Settings, job: &Job) -> std::io::Result<()> {
        let _as_the_game = ReadAs::enter(s.read_as);
        let beneath = Beneath::open(&s.game_root, job.build.as_deref());
        // Items a walk may meet, archived or not: files past the budget and refusals cost a
        // look each, so they are bounded too.
        let mut looks = s.policy.max_entries.saturating_add(plan::MAX_SKIP_NOTES);
        let mut seen = HashSet::new();
        for log_path in &job.log_paths {
            if !seen.insert(log_path.as_str()) {
                continue;
            }
            let found = plan::resolve(log_path, &s.game_root).and_then(|rel| match &beneath {
                Ok(b) => b.find(&rel),
                Err(e) => Err(format!(
                    "the build ({}) cannot be opened: {e}",
                    s.game_root.display()
                )),
            });
            match found {
                Err(reason) => {
                    tracing::warn!(process.id = %self.process_id, log.path = %crate::common::telemetry::clip(log_path), reason = %reason, "log path not archived");
                    self.skip(log_path.clone(), reason);
                }
                Ok((at, Found::File(file))) => {
                    self.add(entry_name(&at), log_path.clone(), file)?;
                }
                Ok((at, Found::Dir(dir))) => {
                    let mut failed = None;
                    let mut visit = |item: Item| -> bool {
                        let full = if self.budget.entries == 0 {
                            Some("log-archives.max-entries files already")
                        } else if self.budget.bytes == 0 {
                            Some("log-archives.max-bytes of files already")
                        } else if looks == 0 {
                            Some(
                                "as many paths looked at as it may (max-entries and 1,000 refusals)",
                            )
                        } else {
                            None
                        };
                        if let Some(full) = full {
                            self.skip(
                                format!("{log_path} ({})", at.display()),
                                format!("the rest of the folder: the archive holds {full}"),
                            );
                            return false;
                        }
                        looks -= 1;
                        match item {
                            Item::File(path, file) => {
                                let source = shown(log_path, &at, &path);
                                if let Err(e) = self.add(entry_name(&path), source, file) {
                                    failed = Some(e);
                                    return false;
                                }
                            }
                            Item::Skipped(path, reason) => {
                                self.skip(shown(log_path, &at, &path), reason);
                            }
                        }
                        true
                    };
                    walk::walk(&dir, &at, &mut visit);
                    if let Some(e) = failed {
                        return Err(e);
                    }
                }
            }
        }
        Ok(())
    }

    fn skip(&mut self, path: String, reason: String) {
        if self.manifest.skipped.len() < plan::MAX_SKIP_NOTES {
            self.manifest.skipped.push(SkipNote { path, reason });
        } else {
            self.manifest.skipped_more += 1;
        }
    }

    /// Adds one file within the budget: all of it, its end, or nothing (with the reason).
    fn add(
        &mut self,
        name: Result<String, &'static str>,
        source: String,
        mut f: OpenFile,
    ) -> std::io::Result<()> {
        let name = match name {
            Ok(name) => name,
            Err(rule) => {
                self.skip(
                    source,
                    format!("its name is not one an archive may hold safely ({rule}): skipped"),
                );
                return Ok(());
            }
        };
        if !self.names.insert(name.clone()) {
            self.skip(source, format!("already in the archive as {name}"));
            return Ok(());
        }
        let (start, want, truncated) = match self.budget.take(f.len) {
            Take::Skip(why) => {
                self.skip(source, why.into());
                return Ok(());
            }
            Take::Whole => (0, f.len, None),
            Take::Tail(keep) => (
                f.len - keep,
                keep,
                Some(format!(
                    "cut to its last {keep} of {} bytes: the archive holds log-archives.max-bytes of files",
                    f.len
                )),
            ),
        };
        self.zip
            .start_file(name.as_str(), options(f.mode, f.mtime, want))
            .map_err(std::io::Error::other)?;
        let mut note = FileNote {
            name,
            source,
            bytes: 0,
            source_bytes: f.len,
            truncated,
        };
        if start > 0
            && let Err(e) = f.file.seek(SeekFrom::Start(start))
        {
            note.truncated = Some(format!("could not be read: {e}"));
            self.manifest.files.push(note);
            return Ok(());
        }
        // Read errors are the file's (noted); write errors are the archive's (returned).
        let mut buf = vec![0u8; 64 << 10];
        let mut left = want;
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            match f.file.read(&mut buf[..n]) {
                Ok(0) => break,
                Ok(k) => {
                    self.zip.write_all(&buf[..k])?;
                    note.bytes += k as u64;
                    left -= k as u64;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    note.truncated =
                        Some(format!("reading stopped after {} bytes: {e}", note.bytes));
                    break;
                }
            }
        }
        self.manifest.files.push(note);
        Ok(())
    }
}

/// A file's name in the archive: `files/` and where it lies in the build, if that is a name
/// the build unpacker would accept ([`crate::agent::package::unzip::safe_path`]): UTF-8, no control
/// characters (an ESC sequence would reach the terminal of whoever lists the archive), no
/// backslash (a separator on Windows, where `..\\` climbs out), nothing absolute or `..`.
fn entry_name(at: &Path) -> Result<String, &'static str> {
    let rel = at.to_str().ok_or("a name that is not UTF-8")?;
    let name = format!("files/{rel}");
    crate::agent::package::unzip::safe_path(name.as_bytes(), &name)?;
    Ok(name)
}

/// How a file under a named folder is shown in the manifest: the name the game gave, and
/// where in that folder.
fn shown(log_path: &str, dir: &Path, path: &Path) -> String {
    match path.strip_prefix(dir) {
        Ok(rest) => PathBuf::from(log_path).join(rest).display().to_string(),
        Err(_) => path.display().to_string(),
    }
}

fn options(mode: u32, mtime: i64, len: u64) -> SimpleFileOptions {
    SimpleFileOptions::default()
        .compression_method(CompressionMethod::Deflated)
        .unix_permissions(mode)
        .last_modified_time(zip_time(mtime))
        .large_file(len >= u64::from(u32::MAX))
}

fn now_secs(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// This thread's file-system identity switched to the game's user while what the game named
/// is opened (Linux's fsuid and fsgid are per thread), so the archive holds only what the
/// game itself could read: a root-only file in its build, or a hard link to one, is refused
/// by the kernel. Restored when dropped.
struct ReadAs {
    uid: nix::unistd::Uid,
    gid: nix::unistd::Gid,
}

impl ReadAs {
    fn enter(ids: Option<(u32, u32)>) -> Option<Self> {
        let (uid, gid) = ids?;
        let gid = nix::unistd::setfsgid(nix::unistd::Gid::from_raw(gid));
        let uid = nix::unistd::setfsuid(nix::unistd::Uid::from_raw(uid));
        Some(Self { uid, gid })
    }
}

impl Drop for ReadAs {
    fn drop(&mut self) {
        nix::unistd::setfsuid(self.uid);
        nix::unistd::setfsgid(self.gid);
    }
}

/// A Unix time as a zip time (UTC; zip's own 1980 epoch for anything it cannot hold).
pub(super) fn zip_time(unix: i64) -> zip::DateTime {
    civil(unix).unwrap_or_default()
}

fn civil(unix: i64) -> Option<zip::DateTime> {
    // A game may set any mtime: outside what a zip time holds (1980 to 2107) it is zip's own
    // epoch, before formatting (which cannot write years past 9999).
    if !(315_532_800..=4_354_819_199).contains(&unix) {
        return None;
    }
    let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(unix as u64);
    let text = humantime::format_rfc3339_seconds(t).to_string();
    let num = |r: std::ops::Range<usize>| text.get(r).and_then(|s| s.parse::<u16>().ok());
    zip::DateTime::from_date_and_time(
        num(0..4)?,
        num(5..7)? as u8,
        num(8..10)? as u8,
        num(11..13)? as u8,
        num(14..16)? as u8,
        num(17..19)? as u8,
    )
    .ok()
}
