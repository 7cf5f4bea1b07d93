//! Absolute `/local/game` paths in a build: the lines of `install.sh` and of the launch paths'
//! scripts, the launch paths that are links into it, and the `Parameters` that name it. They
//! work only where the build is seen at `/local/game` (GSE; this agent as root, see
//! [`crate::agent::process::local_game`]), so `validate` and the agent's start name them.
//!
//! Only regular files the build names are read (a file that is itself a link is not: its
//! target is reported instead, and the open refuses one swapped in meanwhile), each at most
//! [`MAX_SCAN_BYTES`]; binaries are not searched. The build is the studio's own, unpacked by
//! the agent's rules, so its folders are not links out.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::agent::config::{GSE_GAME_ROOT, ProcessSpec};
use crate::agent::process::local_game::{Support, needs_namespace};

/// The two ways out when install.sh and the games see the host's `/local/game`.
pub const WAYS_OUT: &str = "run gse-agent as root (as on game hosts: each build then sees itself at /local/game), or set game-root: /local/game (the games then find their build there; install.sh still runs before its build is switched in, so it must write through relative paths or $GSE_GAME_ROOT)";

/// Bytes of a script searched (a longer one is searched this far).
pub const MAX_SCAN_BYTES: u64 = 1 << 20;
/// References reported per build (the rest are counted, not listed).
pub const MAX_REFERENCES: usize = 50;
/// Characters of a line shown.
const MAX_TEXT: usize = 160;

/// One place that names `/local/game` absolutely.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Reference {
    /// `install.sh`, a launch path's file (relative to the build), or
    /// `ServerProcesses[i].Parameters`.
    pub file: String,
    /// Its line (1-based) in a file; `None` for a link or the Parameters.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    /// The line (clipped), the link's target, or the Parameters.
    pub text: String,
}

impl Reference {
    /// `install.sh:3` or `ServerProcesses[0].Parameters`.
    pub fn place(&self) -> String {
        match self.line {
            Some(n) => format!("{}:{n}", self.file),
            None => self.file.clone(),
        }
    }
}

/// What was found: the first [`MAX_REFERENCES`], and how many in all.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Found {
    /// The references, in order: install.sh, then each ServerProcesses entry.
    pub references: Vec<Reference>,
    /// How many there were (more than listed when over the cap).
    pub total: usize,
}

impl Found {
    fn push(&mut self, r: Reference) {
        self.total += 1;
        if self.references.len() < MAX_REFERENCES {
            self.references.push(r);
        }
    }

    /// `install.sh:2, start.sh:5` (with `and N more` past the list).
    pub fn places(&self) -> String {
        let mut s = self
            .references
            .iter()
            .map(Reference::place)
            .collect::<Vec<_>>()
            .join(", ");
        if self.total > self.references.len() {
            s.push_str(&format!(" and {} more", self.total - self.references.len()));
        }
        s
    }
}

/// What install.sh and the games see at `/local/game`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Seen {
    /// Their own build, in a private mount namespace.
    Private,
    /// `game-root` is `/local/game` itself: the games see their build there, install.sh the
    /// live build (not the one it installs).
    GameRoot,
    /// The host's `/local/game`, not their build.
    Host,
}

/// What a build's `/local/game` references mean on this host: said once at the agent's start
/// and in validate's report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Outlook {
    /// What install.sh and the games see there.
    pub seen: Seen,
    /// Why not their own build in a private namespace.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The references found.
    #[serde(flatten)]
    pub found: Found,
    /// How many of them will not reach the build here.
    pub broken: usize,
}

impl Outlook {
    /// The outlook of `found` on a host with `support`, for an agent with `game_root`.
    pub fn new(found: Found, support: &Support, game_root: &Path) -> Self {
        let (seen, reason) = match support.unavailable() {
            None => (Seen::Private, None),
            Some(e) if !needs_namespace(game_root) => (Seen::GameRoot, Some(e.to_string())),
            Some(e) => (Seen::Host, Some(e.to_string())),
        };
        let broken = match seen {
            Seen::Private => 0,
            // Only install.sh runs in another directory than /local/game.
            Seen::GameRoot => found
                .references
                .iter()
                .filter(|r| r.file == "install.sh")
                .count(),
            Seen::Host => found.total,
        };
        Self {
            seen,
            reason,
            found,
            broken,
        }
    }

    /// One sentence: what they see, and why.
    pub fn headline(&self) -> String {
        let why = self.reason.as_deref().unwrap_or_default();
        match self.seen {
            Seen::Private => "install.sh and the games see their own build at /local/game (a private mount namespace: the agent runs as root)".into(),
            Seen::GameRoot => format!("game-root is /local/game: the games see their build there, but install.sh sees the live build there, not the one it installs ({why})"),
            Seen::Host => format!("install.sh and the games see the host's /local/game, not their build ({why})"),
        }
    }

    /// What the listed references mean: they work here, or the ways out.
    pub fn verdict(&self) -> Option<String> {
        if self.found.total == 0 {
            return None;
        }
        Some(if self.broken == 0 {
            "these work here because the agent runs as root; an agent that is not root would leave them to the host's /local/game".into()
        } else {
            format!(
                "{} of these will not reach the build here; ways out: {WAYS_OUT}",
                self.broken
            )
        })
    }
}

/// Searches the unpacked build `build` (installed at `game_root`, against which the launch
/// paths were resolved) and the launch entries.
pub fn scan(build: &Path, processes: &[ProcessSpec], game_root: &Path) -> Found {
    let mut found = Found::default();
    for r in scan_script(build, Path::new("install.sh")) {
        found.push(r);
    }
    let mut seen: Vec<PathBuf> = Vec::new();
    for (i, p) in processes.iter().enumerate() {
        if let Ok(rel) = p.program.strip_prefix(game_root)
            && !seen.iter().any(|s| s == rel)
        {
            seen.push(rel.to_path_buf());
            for r in scan_launch(build, rel) {
                found.push(r);
            }
        }
        if mentions(&p.parameters) {
            found.push(Reference {
                file: format!("ServerProcesses[{i}].Parameters"),
                line: None,
                text: clip(&p.parameters),
            });
        }
    }
    found
}

/// A launch path's file: a link into `/local/game`, or a script whose lines name it.
fn scan_launch(build: &Path, rel: &Path) -> Vec<Reference> {
    let path = build.join(rel);
    match std::fs::symlink_metadata(&path) {
        Ok(m) if m.file_type().is_symlink() => std::fs::read_link(&path)
            .ok()
            .filter(|t| mentions(&t.to_string_lossy()))
            .map(|t| Reference {
                file: rel.display().to_string(),
                line: None,
                text: format!("a link to {}", t.display()),
            })
            .into_iter()
            .collect(),
        _ => scan_script(build, rel),
    }
}

/// The lines of the regular file `build/rel` that name `/local/game` (none for a binary, a
/// link or a missing file).
fn scan_script(build: &Path, rel: &Path) -> Vec<Reference> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = build.join(rel);
    // Not through a link, and what was opened is what is judged (no swap between a look and
    // the open): O_NOFOLLOW for the file itself, then the open file's own metadata.
    let Ok(file) = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(&path)
    else {
        return Vec::new();
    };
    if !file.metadata().is_ok_and(|m| m.is_file()) {
        return Vec::new();
    }
    let mut text = Vec::new();
    if file.take(MAX_SCAN_BYTES).read_to_end(&mut text).is_err() {
        return Vec::new();
    }
    // install.sh is run with /bin/sh even without a #! line; other files only as scripts.
    if rel != Path::new("install.sh") && !text.starts_with(b"#!") {
        return Vec::new();
    }
    lines_naming(&String::from_utf8_lossy(&text))
        .into_iter()
        .map(|(line, text)| Reference {
            file: rel.display().to_string(),
            line: Some(line),
            text,
        })
        .collect()
}

/// The (1-based) lines of a script that name `/local/game` absolutely; comments are skipped,
/// the `#!` line is not.
pub fn lines_naming(script: &str) -> Vec<(usize, String)> {
    script
        .lines()
        .enumerate()
        .filter(|(i, l)| {
            let t = l.trim_start();
            (!t.starts_with('#') || (*i == 0 && t.starts_with("#!"))) && mentions(l)
        })
        .map(|(i, l)| (i + 1, clip(l.trim())))
        .collect()
}

/// Whether `text` names `/local/game` as an absolute path: not as the tail of another path
/// (`/srv/local/game`, `$HOME/local/game`) nor as the head of another name (`/local/gamedata`).
pub fn mentions(text: &str) -> bool {
    let continues_path =
        |c: char| c.is_alphanumeric() || matches!(c, '.' | '_' | '-' | '/' | '~' | '$' | '}' | ')');
    let continues_name = |c: char| c.is_alphanumeric() || matches!(c, '.' | '_' | '-');
    text.match_indices(GSE_GAME_ROOT).any(|(at, m)| {
        let before = text[..at].chars().next_back();
        let after = text[at + m.len()..].chars().next();
        !before.is_some_and(continues_path) && !after.is_some_and(continues_name)
    })
}

fn clip(s: &str) -> String {
    if s.chars().count() <= MAX_TEXT {
        return s.to_string();
    }
    let mut out: String = s.chars().take(MAX_TEXT).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absolute_mentions_are_found_and_lookalikes_are_not() {
        for yes in [
            "/local/game",
            "ln -s /usr/bin/node /local/game/node",
            "cd \"/local/game\" && ./run",
            "ROOT=/local/game/bin",
            "cp x '/local/game/'",
            "-jar /local/game/app.jar",
            "PATH=/usr/bin:/local/game/bin",
        ] {
            assert!(mentions(yes), "{yes}");
        }
        for no in [
            "/srv/local/game/x",
            "$HOME/local/game",
            "${ROOT}/local/game",
            "/local/gamedata",
            "/local/game-2",
            "local/game",
            "./node",
        ] {
            assert!(!mentions(no), "{no}");
        }
    }

    #[test]
    fn lines_are_numbered_and_comments_skipped_but_not_the_shebang() {
        let script = "#!/local/game/bin/sh\n# writes /local/game/x\n\n  ln -s /usr/bin/java /local/game/java # GSE style\necho done\n";
        assert_eq!(
            lines_naming(script),
            [
                (1, "#!/local/game/bin/sh".to_string()),
                (
                    4,
                    "ln -s /usr/bin/java /local/game/java # GSE style".to_string()
                )
            ]
        );
    }

    fn spec(launch: &str, params: &str, root: &Path) -> ProcessSpec {
        ProcessSpec {
            launch_path: launch.into(),
            program: crate::agent::config::resolve_launch_path(launch, root).unwrap(),
            parameters: params.into(),
            args: Vec::new(),
            concurrent_executions: 1,
        }
    }

    #[test]
    fn a_build_is_searched_where_it_can_matter() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let build = dir.path();
        std::fs::write(
            build.join("install.sh"),
            "set -e\nln -s /usr/bin/node /local/game/node\n",
        )
        .unwrap();
        std::fs::write(
            build.join("start.sh"),
            "#!/bin/sh\nexec /local/game/bin/server\n",
        )
        .unwrap();
        std::fs::write(build.join("server"), b"\x7fELF /local/game/in/a/binary").unwrap();
        symlink("/local/game/bin/real", build.join("linked")).unwrap();
        symlink("/usr/bin/node", build.join("node")).unwrap();
        let root = Path::new("/srv/g");
        let processes = [
            spec("/local/game/start.sh", "", root),
            spec("/local/game/start.sh", "", root),
            spec("/local/game/server", "--data /local/game/data", root),
            spec("/local/game/linked", "", root),
            spec("/local/game/node", "game_server.js", root),
        ];
        let found = scan(build, &processes, root);
        let places: Vec<String> = found.references.iter().map(Reference::place).collect();
        assert_eq!(
            places,
            [
                "install.sh:2",
                "start.sh:2",
                "ServerProcesses[2].Parameters",
                "linked"
            ]
        );
        assert_eq!(found.total, 4);
        assert_eq!(found.references[3].text, "a link to /local/game/bin/real");
        assert_eq!(
            found.places(),
            "install.sh:2, start.sh:2, ServerProcesses[2].Parameters, linked"
        );
    }

    #[test]
    fn what_the_references_mean_depends_on_the_host_and_the_game_root() {
        use crate::agent::process::local_game::LocalGameError;
        use nix::errno::Errno;
        let r = |file: &str| Reference {
            file: file.into(),
            line: Some(2),
            text: "x /local/game/y".into(),
        };
        let found = Found {
            references: vec![r("install.sh"), r("start.sh")],
            total: 2,
        };
        let elsewhere = Path::new("/srv/gse/game");
        let private = Outlook::new(found.clone(), &Support::Private, elsewhere);
        assert_eq!((private.seen, private.broken), (Seen::Private, 0));
        assert!(private.verdict().unwrap().contains("work here"));
        let host = || Support::Host(LocalGameError::Unshare(Errno::EPERM));
        let fallback = Outlook::new(found.clone(), &host(), elsewhere);
        assert_eq!((fallback.seen, fallback.broken), (Seen::Host, 2));
        assert!(fallback.reason.as_deref().unwrap().contains("not root"));
        let v = fallback.verdict().unwrap();
        assert!(
            v.starts_with(
                "2 of these will not reach the build here; ways out: run gse-agent as root"
            ),
            "{v}"
        );
        assert!(v.contains("game-root: /local/game"), "{v}");
        // With game-root /local/game the games see their build; install.sh still does not.
        let at_root = Outlook::new(found, &host(), Path::new(GSE_GAME_ROOT));
        assert_eq!((at_root.seen, at_root.broken), (Seen::GameRoot, 1));
        assert!(
            at_root
                .headline()
                .contains("install.sh sees the live build")
        );
        let none = Outlook::new(Found::default(), &host(), elsewhere);
        assert_eq!(none.verdict(), None);
    }

    #[test]
    fn the_list_is_capped_and_says_how_many_more() {
        let dir = tempfile::tempdir().unwrap();
        let script: String = (0..MAX_REFERENCES + 3)
            .map(|i| format!("touch /local/game/f{i}\n"))
            .collect();
        std::fs::write(dir.path().join("install.sh"), script).unwrap();
        let found = scan(dir.path(), &[], Path::new("/srv/g"));
        assert_eq!(found.references.len(), MAX_REFERENCES);
        assert_eq!(found.total, MAX_REFERENCES + 3);
        assert!(
            found.places().ends_with(" and 3 more"),
            "{}",
            found.places()
        );
    }
}
