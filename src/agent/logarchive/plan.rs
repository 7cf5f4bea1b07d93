//! The pure decisions: where a logPathsToUpload entry lies in the build, how much of a file
//! fits an archive, which archives the folder's bounds remove, and the manifest that says it.

use std::path::{Component, Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::agent::config::{GSE_GAME_ROOT, within_game_root};

/// Where a logPathsToUpload entry lies inside the build, as a relative path of plain names:
/// `/local/game/x`, `<game-root>/x` and a relative `x` all give `x`. Refused, with the reason:
/// an empty path, any `..`, an absolute path elsewhere, and the whole build. Symbolic links
/// are resolved later, on the disk, beneath the build ([`super::walk`]).
pub fn resolve(log_path: &str, game_root: &Path) -> Result<PathBuf, String> {
    if log_path.is_empty() {
        return Err("an empty path".into());
    }
    let path = Path::new(log_path);
    if path.components().any(|c| c == Component::ParentDir) {
        return Err("contains '..': a log path stays inside the build".into());
    }
    let rel = if path.is_absolute() {
        within_game_root(path, game_root).ok_or_else(|| {
            format!(
                "outside the build: log paths are under {GSE_GAME_ROOT}/ (or {}), or relative to it",
                game_root.display()
            )
        })?
    } else {
        path
    };
    let rel: PathBuf = rel
        .components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .collect();
    if rel.as_os_str().is_empty() {
        return Err("names the whole build: name its log files or folders".into());
    }
    Ok(rel)
}

/// How much of a file goes into the archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Take {
    /// All of it.
    Whole,
    /// Only its last bytes, this many: the end of a log is where a crash shows.
    Tail(u64),
    /// Nothing; the reason is in the manifest.
    Skip(&'static str),
}

/// What is left of one archive's bounds as files are added.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    /// Bytes of file content left.
    pub bytes: u64,
    /// Files left.
    pub entries: usize,
}

impl Budget {
    /// Decides how much of a file of `len` bytes goes in, and counts it.
    pub fn take(&mut self, len: u64) -> Take {
        if self.entries == 0 {
            return Take::Skip("the archive holds log-archives.max-entries files already: skipped");
        }
        if self.bytes == 0 && len > 0 {
            return Take::Skip(
                "the archive holds log-archives.max-bytes of files already: skipped",
            );
        }
        self.entries -= 1;
        if len <= self.bytes {
            self.bytes -= len;
            Take::Whole
        } else {
            let keep = std::mem::take(&mut self.bytes);
            Take::Tail(keep)
        }
    }
}

/// One archive as the folder's bounds see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kept {
    /// Its file name.
    pub name: String,
    /// Bytes on disk.
    pub bytes: u64,
    /// When it was written.
    pub written: SystemTime,
}

/// The archives to remove, oldest first: those older than `max_age`, then the oldest of the
/// rest until the others fit in `max_total` bytes. `kept` is oldest first.
pub fn to_remove(kept: &[Kept], now: SystemTime, max_total: u64, max_age: Duration) -> Vec<String> {
    let mut total: u64 = kept.iter().map(|k| k.bytes).sum();
    let mut out = Vec::new();
    for k in kept {
        let old = now.duration_since(k.written).is_ok_and(|age| age > max_age);
        if old || total > max_total {
            total -= k.bytes;
            out.push(k.name.clone());
        }
    }
    out
}

/// `MANIFEST.json`, the archive's own account: whose logs, and for every path the game named
/// what was kept, cut or refused, and why.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Manifest {
    /// The agent's id of the process (`proc-0-1-3`).
    pub process_id: String,
    /// The fleet.
    pub fleet_id: String,
    /// The host.
    pub instance_id: String,
    /// The game server sessions the process hosted, oldest first.
    pub game_server_session_ids: Vec<String>,
    /// How it ended (`SERVER_PROCESS_ENDED`, `SERVER_PROCESS_CRASHED`, …).
    pub event_code: String,
    /// When it started and ended, and when the archive was written (RFC 3339).
    pub start_time: String,
    /// See `start_time`.
    pub end_time: String,
    /// See `start_time`.
    pub archived_at: String,
    /// logPathsToUpload as the game reported it.
    pub log_paths_to_upload: Vec<String>,
    /// What the archive holds.
    pub files: Vec<FileNote>,
    /// What it does not, with the reason (the first [`MAX_SKIP_NOTES`])...
    pub skipped: Vec<SkipNote>,
    /// ...and how many more were not archived, counted but not listed.
    pub skipped_more: u64,
}

/// Refusals listed in a manifest at most: a game that names a folder of millions of links or
/// FIFOs gets a bounded manifest (and a bounded walk: see `write`).
pub const MAX_SKIP_NOTES: usize = 1000;

/// One file in the archive.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct FileNote {
    /// Its name in the archive.
    pub name: String,
    /// Where it came from (as the game named it, or the agent's output file).
    pub source: String,
    /// Bytes in the archive.
    pub bytes: u64,
    /// Bytes the file had (more than `bytes` when it was cut).
    pub source_bytes: u64,
    /// Why it was cut, if it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub truncated: Option<String>,
}

/// A path (or a file under a named folder) not in the archive.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct SkipNote {
    /// The path, as the game named it (or where it lies under a named folder).
    pub path: String,
    /// Why.
    pub reason: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOT: &str = "/srv/gse/game";

    fn r(p: &str) -> Result<String, String> {
        resolve(p, Path::new(ROOT)).map(|p| p.display().to_string())
    }

    #[test]
    fn log_paths_map_into_the_build_and_nothing_else_does() {
        assert_eq!(r("/local/game/logs/game.log").unwrap(), "logs/game.log");
        assert_eq!(r("/srv/gse/game/logs").unwrap(), "logs");
        assert_eq!(r("logs/game.log").unwrap(), "logs/game.log");
        assert_eq!(r("./logs//game.log").unwrap(), "logs/game.log");
        for (bad, why) in [
            ("/etc/passwd", "outside the build"),
            ("/local/gamer/x", "outside the build"),
            ("/srv/gse/game-other/x", "outside the build"),
            ("/local/game/../etc/passwd", "'..'"),
            ("logs/../../x", "'..'"),
            ("/local/game", "whole build"),
            ("/local/game/", "whole build"),
            (".", "whole build"),
            ("", "empty"),
        ] {
            let e = r(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn a_file_past_the_budget_keeps_its_end_and_later_ones_are_skipped() {
        let mut b = Budget {
            bytes: 100,
            entries: 10,
        };
        assert_eq!(b.take(60), Take::Whole);
        assert_eq!(b.take(0), Take::Whole);
        assert_eq!(b.take(50), Take::Tail(40));
        assert!(matches!(b.take(1), Take::Skip(why) if why.contains("max-bytes")));
        // An empty file costs no bytes, only an entry.
        assert_eq!(b.take(0), Take::Whole);
        let mut b = Budget {
            bytes: 100,
            entries: 1,
        };
        assert_eq!(b.take(1), Take::Whole);
        assert!(matches!(b.take(1), Take::Skip(why) if why.contains("max-entries")));
    }

    #[test]
    fn the_old_go_first_then_the_oldest_until_the_rest_fit() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let kept = |v: &[(&str, u64, u64)]| -> Vec<Kept> {
            v.iter()
                .map(|(n, b, s)| Kept {
                    name: n.to_string(),
                    bytes: *b,
                    written: t0 + Duration::from_secs(*s),
                })
                .collect()
        };
        let day = Duration::from_secs(86_400);
        let now = t0 + Duration::from_secs(100);
        let all = kept(&[("a", 10, 0), ("b", 10, 50), ("c", 10, 99)]);
        assert!(to_remove(&all, now, 30, day).is_empty());
        assert_eq!(to_remove(&all, now, 29, day), ["a"]);
        assert_eq!(to_remove(&all, now, 10, day), ["a", "b"]);
        assert_eq!(to_remove(&all, now, 1000, Duration::from_secs(60)), ["a"]);
        assert_eq!(
            to_remove(&all, now, 1000, Duration::from_secs(1)),
            ["a", "b"]
        );
        // A clock set back makes nothing old.
        assert!(to_remove(&all, t0, 1000, Duration::from_secs(1)).is_empty());
    }

    #[test]
    fn the_manifest_reads_back_what_was_written() {
        let m = Manifest {
            process_id: "proc-0-0-1".into(),
            game_server_session_ids: vec!["gss-1".into()],
            files: vec![FileNote {
                name: "files/a.log".into(),
                bytes: 3,
                source_bytes: 9,
                truncated: Some("cut".into()),
                ..Default::default()
            }],
            ..Default::default()
        };
        let text = serde_json::to_string(&m).unwrap();
        assert!(
            text.contains("\"GameServerSessionIds\":[\"gss-1\"]"),
            "{text}"
        );
        assert_eq!(serde_json::from_str::<Manifest>(&text).unwrap(), m);
    }
}
