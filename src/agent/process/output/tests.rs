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
fn a_loss_is_said_in_one_line() {
    let counted = Loss {
        bytes: 123_456,
        error: Some(Errno::ENOSPC),
        full_for: None,
    };
    assert_eq!(
        counted.marker(),
        "[gse-agent] 123456 bytes of output dropped: No space left on device\n"
    );
    let seen = Loss {
        full_for: Some(Duration::from_millis(7_400)),
        ..Loss::default()
    };
    assert_eq!(
        seen.marker(),
        "[gse-agent] output may be missing here; the disk was full for 7s: what the game wrote then may be missing\n"
    );
    assert!(!Loss::default().pending());
}

#[test]
fn a_full_disk_truncates_counts_and_says_what_was_dropped() {
    let Some(fs) = crate::agent::dbfile::tests::Tmpfs::mount("1m") else {
        return;
    };
    let live = fs.path().join("p.log");
    let mut game = open_for_child(&live).unwrap();
    game.write_all(&[b'x'; 300 * 1024]).unwrap();
    let filler = fs.fill();
    let mut logs = LogFiles::new([live.clone(), fs.path().join("q.log")], 100 * 1024, 2);
    assert!(logs.needs_check());
    logs.check();
    let rotated: u64 = (1..=2)
        .filter_map(|n| std::fs::metadata(numbered(&live, n)).ok())
        .map(|m| m.len())
        .sum();
    let text = read(fs.path(), "p.log");
    let dropped = 300 * 1024 - rotated;
    assert!(dropped > 0);
    // The truncation made room: the line is there at once, before the game's next one.
    assert_eq!(
        text,
        format!("[gse-agent] {dropped} bytes of output dropped: No space left on device\n")
    );
    game.write_all(b"after\n").unwrap();
    logs.check();
    assert!(read(fs.path(), "p.log").ends_with("dropped: No space left on device\nafter\n"));
    drop(filler);
}

#[test]
fn a_disk_seen_full_is_said_once_there_is_room() {
    let Some(fs) = crate::agent::dbfile::tests::Tmpfs::mount("1m") else {
        return;
    };
    let (out, err) = (fs.path().join("o.log"), fs.path().join("e.log"));
    let mut game = open_for_child(&out).unwrap();
    drop(open_for_child(&err).unwrap());
    game.write_all(b"partial").unwrap();
    let mut logs = LogFiles::new([out, err], 1 << 20, 2);
    logs.check();
    let filler = fs.fill();
    assert!(
        game.write_all(&[b'y'; 8192]).is_err(),
        "the game's writes fail"
    );
    assert!(logs.needs_check());
    logs.check();
    std::fs::remove_file(filler).unwrap();
    assert!(logs.needs_check());
    logs.check();
    let said = |text: &str| {
        // How long depends on the machine's pace; at least a second is said.
        let line = text.rsplit_terminator('\n').next().unwrap_or_default();
        line.starts_with("[gse-agent] output may be missing here; the disk was full for ")
            && line.ends_with("s: what the game wrote then may be missing")
            && text.ends_with('\n')
    };
    let out = read(fs.path(), "o.log");
    // What fitted of the game's write is there; the line starts a line of its own.
    assert!(out.starts_with("partial"), "{out:?}");
    assert!(out.contains("\n[gse-agent] "), "a line of its own: {out:?}");
    assert!(said(&out), "{out:?}");
    let err = read(fs.path(), "e.log");
    assert!(said(&err) && err.lines().count() == 1, "{err:?}");
    assert!(!logs.needs_check(), "said once");
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
        tail(&[out.clone(), err.clone()], 4).lines,
        ["o2", "o3", "o4", "e1"]
    );
    let two = tail(&[out.clone(), err.clone()], 2);
    assert_eq!(two.lines, ["o4", "e1"]);
    assert_eq!(two.file, err, "the last line is stderr's");
}

#[test]
fn the_tail_names_the_file_its_last_line_came_from() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("o.log");
    let err = dir.path().join("e.log");
    std::fs::write(&out, "o1\n").unwrap();
    let only_stdout = tail(&[out.clone(), err.clone()], 5);
    assert_eq!(
        (only_stdout.lines, only_stdout.file),
        (vec!["o1".into()], out.clone())
    );
    std::fs::write(&out, "").unwrap();
    let silent = tail(&[out.clone(), err.clone()], 5);
    assert!(silent.lines.is_empty());
    assert_eq!(silent.file, out, "no output: stdout's file is named");
    std::fs::write(&err, "boom\n").unwrap();
    assert_eq!(tail(&[out, err.clone()], 5).file, err);
}

#[test]
fn tail_reads_only_the_end_of_a_big_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("o.log");
    let big: String = (0..100_000).map(|i| format!("line {i}\n")).collect();
    std::fs::write(&out, big).unwrap();
    let lines = tail(&[out, dir.path().join("none")], 2).lines;
    assert_eq!(lines, ["line 99998", "line 99999"]);
    let long = dir.path().join("long.log");
    std::fs::write(&long, "x".repeat(10_000)).unwrap();
    assert_eq!(
        tail(&[long, dir.path().join("none")], 1).lines[0].len(),
        MAX_TAIL_LINE
    );
}
