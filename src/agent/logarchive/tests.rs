//! The archive's file work on real files: links that escape, things that are not files,
//! bounds, and the folder read back.

use std::io::Read;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::time::{Duration, SystemTime};

use super::walk::{Beneath, Found, Item};
use super::*;
use crate::agent::config::ByteSize;

fn find(b: &Beneath, rel: &str) -> Result<(String, bool), String> {
    b.find(Path::new(rel))
        .map(|(at, f)| (at.display().to_string(), matches!(f, Found::Dir(_))))
}

/// A build at `game/` beside `outside/`, reached through a link `root` as the agent makes
/// the game root.
fn build() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("build/logs/old")).unwrap();
    std::fs::create_dir_all(d.join("outside")).unwrap();
    std::fs::write(d.join("outside/secret"), "secret").unwrap();
    std::fs::write(d.join("build/logs/game.log"), "line 1\n").unwrap();
    std::fs::write(d.join("build/logs/old/game.1.log"), "line 0\n").unwrap();
    symlink(d.join("build"), d.join("root")).unwrap();
    let root = d.join("root");
    (dir, root)
}

#[test]
fn links_inside_the_build_are_followed_and_links_out_of_it_never() {
    let (dir, root) = build();
    let b = root.join("logs");
    symlink("game.log", b.join("latest")).unwrap();
    symlink("/local/game/logs/old", b.join("by-gse-path")).unwrap();
    symlink(root.join("logs/game.log"), b.join("by-game-root")).unwrap();
    symlink("../../outside/secret", b.join("climbs-out")).unwrap();
    symlink(dir.path().join("outside/secret"), b.join("absolute-out")).unwrap();
    symlink("/local/game/../outside", b.join("gse-path-out")).unwrap();
    symlink("loop", b.join("loop")).unwrap();
    nix::unistd::mkfifo(
        &b.join("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    let beneath = Beneath::open(&root, None).unwrap();
    assert_eq!(
        find(&beneath, "logs/game.log"),
        Ok(("logs/game.log".into(), false))
    );
    assert_eq!(
        find(&beneath, "logs/latest"),
        Ok(("logs/game.log".into(), false))
    );
    assert_eq!(
        find(&beneath, "logs/by-gse-path"),
        Ok(("logs/old".into(), true))
    );
    assert_eq!(
        find(&beneath, "logs/by-game-root"),
        Ok(("logs/game.log".into(), false))
    );
    assert_eq!(find(&beneath, "logs"), Ok(("logs".into(), true)));
    for (rel, why) in [
        ("logs/climbs-out", "climbs out of the build"),
        ("logs/absolute-out", "outside the build"),
        ("logs/gse-path-out", "climbs out of the build"),
        ("logs/loop", "more than 40 symbolic links"),
        ("logs/fifo", "a FIFO"),
        ("logs/missing", "does not exist"),
        ("logs/game.log/x", "not a folder"),
    ] {
        let e = find(&beneath, rel).unwrap_err();
        assert!(e.contains(why), "{rel}: {e}");
    }
}

#[test]
fn a_folder_is_walked_sorted_without_following_its_links() {
    let (_dir, root) = build();
    symlink("/etc/passwd", root.join("logs/passwd")).unwrap();
    let beneath = Beneath::open(&root, None).unwrap();
    let Ok((at, Found::Dir(fd))) = beneath.find(Path::new("logs")) else {
        panic!("logs is a folder");
    };
    let mut seen = Vec::new();
    walk::walk(&fd, &at, &mut |item| {
        seen.push(match item {
            Item::File(p, f) => format!("{} {}", p.display(), f.len),
            Item::Skipped(p, why) => format!("{} skipped: {why}", p.display()),
        });
        true
    });
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert_eq!(seen[0], "logs/game.log 7");
    assert_eq!(seen[1], "logs/old/game.1.log 7");
    assert!(
        seen[2].starts_with("logs/passwd skipped: a symbolic link to /etc/passwd"),
        "{seen:?}"
    );
}

fn settings(dir: &Path, root: &Path, max_bytes: u64) -> Settings {
    let policy = ArchivePolicy {
        max_bytes: ByteSize(max_bytes),
        ..Default::default()
    };
    Settings {
        dir: dir.join("archives"),
        log_dir: dir.join("logs"),
        keep_files: 2,
        game_root: root.to_path_buf(),
        policy,
        fleet_id: "fleet-t".into(),
        instance_id: "ins-t".into(),
        read_as: None,
    }
}

fn job(log_paths: &[&str]) -> Job {
    Job {
        process_id: "proc-0-0-1".into(),
        log_paths: log_paths.iter().map(|s| s.to_string()).collect(),
        sessions: vec!["gss-a".into(), "gss-b".into()],
        event_code: "SERVER_PROCESS_CRASHED",
        started_at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        ended_at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_100),
        build: None,
    }
}

fn entries(path: &Path) -> Vec<(String, String)> {
    let mut zip = zip::ZipArchive::new(std::fs::File::open(path).unwrap()).unwrap();
    (0..zip.len())
        .map(|i| {
            let mut f = zip.by_index(i).unwrap();
            let mut text = String::new();
            f.read_to_string(&mut text).unwrap();
            (f.name().unwrap().to_string(), text)
        })
        .collect()
}

#[test]
fn an_archive_holds_the_output_and_the_named_files_within_its_bounds() {
    let (dir, root) = build();
    let d = dir.path();
    let s = settings(d, &root, 64 << 10);
    std::fs::create_dir_all(&s.dir).unwrap();
    std::fs::create_dir_all(&s.log_dir).unwrap();
    std::fs::write(s.log_dir.join("proc-0-0-1.stdout.log"), "out now\n").unwrap();
    std::fs::write(s.log_dir.join("proc-0-0-1.stdout.log.1"), "out before\n").unwrap();
    std::fs::write(s.log_dir.join("proc-0-0-1.stderr.log"), "err now\n").unwrap();
    // 100 KiB that ends in a recognisable line: only its end fits.
    let mut big = "x".repeat(100 << 10);
    big.push_str("\nthe end\n");
    std::fs::write(root.join("big.log"), &big).unwrap();
    symlink(d.join("outside/secret"), root.join("logs/escape")).unwrap();
    let j = job(&[
        "/local/game/logs",
        "/local/game/../outside/secret",
        "/etc/passwd",
        "logs/escape",
        "/local/game/big.log",
        "missing.log",
    ]);
    let a = write::archive(&s, &j, SystemTime::now()).unwrap();
    assert_eq!(a.name, "proc-0-0-1.1700000000000.zip");
    assert_eq!(a.sessions, ["gss-a", "gss-b"]);
    let path = s.dir.join(&a.name);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), a.bytes);
    let got = entries(&path);
    let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "output/proc-0-0-1.stdout.log.1",
            "output/proc-0-0-1.stdout.log",
            "output/proc-0-0-1.stderr.log",
            "files/logs/game.log",
            "files/logs/old/game.1.log",
            "files/big.log",
            "MANIFEST.json",
        ]
    );
    assert_eq!(got[0].1, "out before\n");
    assert_eq!(got[3].1, "line 1\n");
    // What was kept of the big file is its end, up to the budget.
    let used: u64 = got[..5].iter().map(|(_, t)| t.len() as u64).sum();
    assert_eq!(got[5].1.len() as u64, (64 << 10) - used);
    assert!(got[5].1.ends_with("\nthe end\n"));
    assert!(
        !got.iter()
            .any(|(n, t)| n != "MANIFEST.json" && t.contains("secret")),
        "nothing outside is read"
    );
    let m = read_manifest(&path).unwrap();
    assert_eq!(m.process_id, "proc-0-0-1");
    assert_eq!(m.event_code, "SERVER_PROCESS_CRASHED");
    assert_eq!(m.game_server_session_ids, ["gss-a", "gss-b"]);
    let big_note = m.files.iter().find(|f| f.name == "files/big.log").unwrap();
    assert!(
        big_note.truncated.as_deref().unwrap().contains("last"),
        "{big_note:?}"
    );
    assert_eq!(big_note.source_bytes, big.len() as u64);
    let reason = |p: &str| {
        m.skipped
            .iter()
            .find(|n| n.path == p)
            .map(|n| n.reason.clone())
            .unwrap_or_else(|| panic!("{p} is noted: {:?}", m.skipped))
    };
    assert!(reason("/local/game/../outside/secret").contains("'..'"));
    assert!(reason("/etc/passwd").contains("outside the build"));
    assert!(reason("logs/escape").contains("outside the build"));
    assert!(reason("missing.log").contains("does not exist"));
    assert!(reason("/local/game/logs/escape").contains("not followed"));
    // The live stderr exists, its rotated copies do not: nothing said about them.
    assert!(
        !m.skipped.iter().any(|n| n.path.contains("stderr.log.")),
        "{:?}",
        m.skipped
    );
    // Nothing half-written is left beside it.
    let left: Vec<_> = std::fs::read_dir(&s.dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(
        left,
        [std::ffi::OsString::from("proc-0-0-1.1700000000000.zip")]
    );
}

#[test]
fn the_folder_is_read_back_and_interrupted_writes_are_removed() {
    let (dir, root) = build();
    let s = settings(dir.path(), &root, 1 << 20);
    std::fs::create_dir_all(&s.dir).unwrap();
    write::archive(&s, &job(&["logs/game.log"]), SystemTime::now()).unwrap();
    std::fs::write(s.dir.join(".tmp-abc.zip"), "half").unwrap();
    std::fs::write(s.dir.join("not-a-zip.zip"), "junk").unwrap();
    let index = scan(&s.dir).unwrap();
    assert!(!s.dir.join(".tmp-abc.zip").exists());
    assert_eq!(index.len(), 2);
    assert_eq!(index.by_session("gss-b").unwrap().process_id, "proc-0-0-1");
    assert!(index.by_session("gss-c").is_none());
    assert_eq!(
        index.by_process("not-a-zip").unwrap().sessions,
        Vec::<String>::new()
    );
}

#[test]
fn archive_names_are_plain() {
    assert!(is_archive_name("proc-0-1-3.zip"));
    let at = SystemTime::UNIX_EPOCH + Duration::from_millis(1_764_126_000_123);
    let name = archive_name("proc-0-1-3", at);
    assert_eq!(name, "proc-0-1-3.1764126000123.zip");
    assert!(is_archive_name(&name));
    // A process id that started over names another launch's archive differently.
    assert_ne!(
        name,
        archive_name("proc-0-1-3", at + Duration::from_millis(1))
    );
    for bad in [
        "../x.zip",
        ".tmp-1.zip",
        "proc",
        "a/b.zip",
        "proc%2f.zip",
        "",
    ] {
        assert!(!is_archive_name(bad), "{bad}");
    }
}

#[test]
fn a_process_logs_are_found_in_the_build_it_ran_in_after_a_deploy_moved_the_game_root() {
    let (dir, root) = build();
    // A DeployBuild: the game root now leads to another build, without the old logs folder.
    let old = dir.path().join("build");
    std::fs::create_dir_all(dir.path().join("new")).unwrap();
    std::fs::remove_file(&root).unwrap();
    symlink(dir.path().join("new"), &root).unwrap();
    let now = Beneath::open(&root, None).unwrap();
    assert!(
        find(&now, "logs/game.log")
            .unwrap_err()
            .contains("does not exist")
    );
    let then = Beneath::open(&root, Some(&old)).unwrap();
    assert_eq!(
        find(&then, "logs/game.log"),
        Ok(("logs/game.log".into(), false))
    );
    // Its folders too.
    assert_eq!(find(&then, "logs/old"), Ok(("logs/old".into(), true)));
}

#[test]
fn any_file_time_a_game_sets_becomes_a_zip_time() {
    use super::write::zip_time;
    assert_eq!(zip_time(i64::MAX), zip::DateTime::default());
    assert_eq!(zip_time(-5), zip::DateTime::default());
    assert_eq!(zip_time(253_402_300_800), zip::DateTime::default());
    let t = zip_time(1_700_000_000);
    assert_eq!((t.year(), t.month(), t.day()), (2023, 11, 14));
}

#[test]
fn a_folder_of_thousands_of_refusals_and_a_path_named_twice_keep_the_manifest_bounded() {
    let (dir, root) = build();
    let s = settings(dir.path(), &root, 64 << 10);
    std::fs::create_dir_all(&s.dir).unwrap();
    std::fs::create_dir_all(&s.log_dir).unwrap();
    for stream in ["stdout", "stderr"] {
        std::fs::write(s.log_dir.join(format!("proc-0-0-1.{stream}.log")), "").unwrap();
    }
    std::fs::create_dir(root.join("fifos")).unwrap();
    let n = plan::MAX_SKIP_NOTES + 200;
    for i in 0..n {
        nix::unistd::mkfifo(
            &root.join(format!("fifos/{i:05}")),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .unwrap();
    }
    let j = job(&["fifos", "fifos", "logs/game.log", "logs/game.log"]);
    let a = write::archive(&s, &j, SystemTime::now()).unwrap();
    let m = read_manifest(&s.dir.join(&a.name)).unwrap();
    assert_eq!(m.skipped.len(), plan::MAX_SKIP_NOTES);
    assert_eq!(
        m.skipped_more as usize,
        n - plan::MAX_SKIP_NOTES,
        "named twice, walked once"
    );
    assert_eq!(
        m.files
            .iter()
            .filter(|f| f.name == "files/logs/game.log")
            .count(),
        1
    );
}

#[test]
fn what_the_game_could_not_read_itself_is_refused() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: switching to the game's user needs root");
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let (dir, root) = build();
    // The game's user may walk to its build, as it does when it runs.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut s = settings(dir.path(), &root, 64 << 10);
    s.read_as = Some((65534, 65534));
    std::fs::create_dir_all(&s.dir).unwrap();
    std::fs::create_dir_all(&s.log_dir).unwrap();
    for stream in ["stdout", "stderr"] {
        std::fs::write(s.log_dir.join(format!("proc-0-0-1.{stream}.log")), "").unwrap();
    }
    // install.sh (as root) left a secret in the build; the game names it and a hard link.
    std::fs::write(root.join("secret.key"), "hunter2").unwrap();
    std::fs::set_permissions(
        root.join("secret.key"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    std::fs::hard_link(root.join("secret.key"), root.join("logs/linked.key")).unwrap();
    let j = job(&["secret.key", "logs/linked.key", "logs/game.log"]);
    let a = write::archive(&s, &j, SystemTime::now()).unwrap();
    let path = s.dir.join(&a.name);
    let got = entries(&path);
    assert!(
        !got.iter().any(|(_, text)| text.contains("hunter2")),
        "{got:?}"
    );
    assert!(
        got.iter().any(|(n, _)| n == "files/logs/game.log"),
        "{got:?}"
    );
    let m = read_manifest(&path).unwrap();
    for refused in ["secret.key", "logs/linked.key"] {
        assert!(
            m.skipped.iter().any(|n| n.path == refused),
            "{refused}: {:?}",
            m.skipped
        );
    }
    // The thread is the agent again afterwards.
    assert_eq!(
        nix::unistd::setfsuid(nix::unistd::Uid::from_raw(0)).as_raw(),
        0
    );
}

#[tokio::test]
async fn an_old_process_output_is_removed_only_after_its_archive_took_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("game")).unwrap();
    std::fs::create_dir_all(d.join("data/logs")).unwrap();
    let yaml = "fleet-id: fleet-t\ndata-dir: data\ngame-root: game\nruntime-configuration:\n  ServerProcesses:\n    - { LaunchPath: /local/game/s, ConcurrentExecutions: 1 }\n";
    let cfg = crate::agent::config::parse(yaml, "agent.yaml", d).unwrap();
    let live = d.join("data/logs/proc-0-0-1.stdout.log");
    std::fs::write(&live, "said before it ended\n").unwrap();
    let (jobs, _links, archiver) = open(&cfg, None).unwrap();
    let task = tokio::spawn(archiver.run());
    // As a crash loop asks: the archive at the exit, the removal at a later launch.
    jobs.submit(job(&[]));
    assert!(jobs.retire("proc-0-0-1".into()));
    drop(jobs);
    task.await.unwrap();
    assert!(!live.exists(), "the output is removed");
    let archive = std::fs::read_dir(d.join("data").join(FOLDER))
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().ends_with(".zip"))
        .expect("the archive is written");
    let got = entries(&archive.path());
    assert!(
        got.iter()
            .any(|(n, text)| n == "output/proc-0-0-1.stdout.log" && text.contains("said before")),
        "{got:?}"
    );
}

/// Names a game chose that an unzip could be hurt by (a backslash that climbs on Windows, an
/// ESC sequence that reaches a terminal, a newline) are the unpacker's refusals too: skipped
/// and said in the manifest, while their plain neighbours are archived.
#[test]
fn names_the_unpacker_would_refuse_are_skipped_and_said() {
    let (dir, root) = build();
    let s = settings(dir.path(), &root, 64 << 10);
    std::fs::create_dir_all(&s.dir).unwrap();
    std::fs::create_dir_all(&s.log_dir).unwrap();
    std::fs::create_dir_all(root.join("hostile")).unwrap();
    let hostile = [
        "..\\..\\..\\x.txt",
        "\u{1b}]0;owned\u{7}.log",
        "two\nlines.log",
    ];
    for name in hostile {
        std::fs::write(root.join("hostile").join(name), "bad\n").unwrap();
    }
    std::fs::write(root.join("hostile/plain.log"), "good\n").unwrap();
    let a = write::archive(&s, &job(&["hostile"]), SystemTime::now()).unwrap();
    let path = s.dir.join(&a.name);
    let names: Vec<String> = entries(&path).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["files/hostile/plain.log", "MANIFEST.json"]);
    let m = read_manifest(&path).unwrap();
    for (name, rule) in hostile
        .iter()
        .zip(["backslash", "control character", "control character"])
    {
        let note = m
            .skipped
            .iter()
            .find(|n| n.path.ends_with(name))
            .unwrap_or_else(|| panic!("{name:?} is noted: {:?}", m.skipped));
        assert!(note.reason.contains(rule), "{name:?}: {}", note.reason);
    }
}
