//! A corpus of hostile zips, made here with the zip crate's writer (and byte patches for what
//! the writer will not produce). Each asserts the exact error and that nothing was written
//! outside the staging directory.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipWriter};

use super::*;

const LIMITS: Limits = Limits {
    max_bytes: 32 << 20,
    max_entries: 100,
    max_ratio: 100,
    ratio_min_bytes: 1 << 20,
    reserve_bytes: 0,
};

enum E<'a> {
    File(&'a str, &'a [u8]),
    Mode(&'a str, &'a [u8], u32),
    Attr(&'a str, &'a [u8], u32),
    Dir(&'a str),
    Link(&'a str, &'a str),
}

fn make_zip(path: &Path, entries: &[E]) {
    let mut w = ZipWriter::new(std::fs::File::create(path).unwrap());
    let opts = SimpleFileOptions::default().compression_method(CompressionMethod::Deflated);
    for e in entries {
        match e {
            E::File(name, data) => {
                w.start_file(*name, opts).unwrap();
                w.write_all(data).unwrap();
            }
            E::Mode(name, data, mode) => {
                w.start_file(*name, opts.unix_permissions(*mode)).unwrap();
                w.write_all(data).unwrap();
            }
            E::Attr(name, data, mode) => {
                w.start_file(*name, opts.external_attributes(*mode << 16))
                    .unwrap();
                w.write_all(data).unwrap();
            }
            E::Dir(name) => w.add_directory(*name, opts).unwrap(),
            E::Link(name, target) => w.add_symlink(*name, *target, opts).unwrap(),
        }
    }
    w.finish().unwrap();
}

struct Case {
    dir: tempfile::TempDir,
}

impl Case {
    fn new(entries: &[E]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        make_zip(&dir.path().join("build.zip"), entries);
        Self { dir }
    }
    fn zip(&self) -> PathBuf {
        self.dir.path().join("build.zip")
    }
    fn staging(&self) -> PathBuf {
        self.dir.path().join("stage")
    }
    fn unpack(&self, limits: &Limits) -> Result<Stats, UnzipError> {
        std::fs::create_dir_all(self.staging()).unwrap();
        unzip::unpack(&self.zip(), &self.staging(), limits, &|_, _, _| {})
    }
    /// Refused with exactly `message`, and nothing exists outside staging.
    fn refused(&self, message: &str) {
        self.refused_with(&LIMITS, message)
    }
    fn refused_with(&self, limits: &Limits, message: &str) {
        let err = self.unpack(limits).unwrap_err();
        assert_eq!(err.to_string(), message);
        let mut outside: Vec<String> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        outside.sort();
        assert_eq!(
            outside,
            ["build.zip", "stage"],
            "nothing written outside staging"
        );
    }
    fn patch(&self, f: impl FnOnce(&mut Vec<u8>)) {
        let mut bytes = std::fs::read(self.zip()).unwrap();
        f(&mut bytes);
        std::fs::write(self.zip(), bytes).unwrap();
    }
}

/// Offsets of every local (PK\3\4) and central (PK\1\2) header.
fn headers(bytes: &[u8]) -> (Vec<usize>, Vec<usize>) {
    let find = |sig: &[u8; 4]| {
        bytes
            .windows(4)
            .enumerate()
            .filter(|(_, w)| w == sig)
            .map(|(i, _)| i)
            .collect::<Vec<_>>()
    };
    (find(b"PK\x03\x04"), find(b"PK\x01\x02"))
}

fn put_u16(bytes: &mut [u8], at: usize, v: u16) {
    bytes[at..at + 2].copy_from_slice(&v.to_le_bytes());
}

#[test]
fn a_good_build_keeps_modes_and_safe_links() {
    let c = Case::new(&[
        E::Dir("bin/"),
        E::Mode("bin/server", b"#!/bin/sh\n", 0o755),
        E::Mode("data/config.txt", b"x=1\n", 0o640),
        E::Link("bin/cfg", "../data/config.txt"),
    ]);
    let stats = c.unpack(&LIMITS).unwrap();
    assert_eq!(stats.entries, 4);
    let s = c.staging();
    let mode = |p: &str| std::fs::metadata(s.join(p)).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode("bin/server"), 0o755);
    assert_eq!(mode("data/config.txt"), 0o640);
    assert_eq!(
        std::fs::read_link(s.join("bin/cfg")).unwrap(),
        Path::new("../data/config.txt")
    );
    assert_eq!(std::fs::read_to_string(s.join("bin/cfg")).unwrap(), "x=1\n");
}

#[test]
fn setuid_and_setgid_bits_are_dropped() {
    let c = Case::new(&[
        E::Attr("suid", b"x", 0o104755),
        E::Attr("sgid", b"x", 0o102755),
    ]);
    c.unpack(&LIMITS).unwrap();
    for f in ["suid", "sgid"] {
        let mode = std::fs::metadata(c.staging().join(f))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o755, "{f}");
    }
}

#[test]
fn device_nodes_and_fifos_are_refused() {
    Case::new(&[E::Attr("dev/sda", b"", 0o060644)])
        .refused("entry \"dev/sda\": block device entries are never created");
    Case::new(&[E::Attr("tty", b"", 0o020644)])
        .refused("entry \"tty\": character device entries are never created");
    Case::new(&[E::Attr("pipe", b"", 0o010644)])
        .refused("entry \"pipe\": FIFO entries are never created");
}

#[test]
fn unsafe_names_are_refused() {
    let evil = format!("/tmp/gse-evil-{}", std::process::id());
    Case::new(&[E::File(&evil, b"x")]).refused(&format!("entry {evil:?}: absolute path"));
    assert!(!Path::new(&evil).exists());
    Case::new(&[E::File("ok/../../escape", b"x")])
        .refused("entry \"ok/../../escape\": '..' in path");
    Case::new(&[E::File("a/../b", b"x")]).refused("entry \"a/../b\": '..' in path");
    Case::new(&[E::File("..\\..\\escape", b"x")]).refused(
        "entry \"..\\\\..\\\\escape\": backslash in name (a Windows separator that can traverse)",
    );
    Case::new(&[E::File("bad\u{7}name", b"x")])
        .refused("entry \"bad\\u{7}name\": control character in name");
}

#[test]
fn a_nul_in_a_name_is_refused() {
    let c = Case::new(&[E::File("abXdef", b"x")]);
    c.patch(|b| {
        for i in 0..b.len() - 6 {
            if &b[i..i + 6] == b"abXdef" {
                b[i + 2] = 0;
            }
        }
    });
    c.refused("entry \"ab\\0def\": NUL byte in name");
}

#[test]
fn symlinks_leaving_the_root_or_written_through_are_refused() {
    Case::new(&[E::Link("up", "../../etc")])
        .refused("entry \"up\": symlink to \"../../etc\" leaves the build root");
    Case::new(&[E::Link("java", "/usr/bin/java")])
        .refused("entry \"java\": symlink to \"/usr/bin/java\" is absolute");
    Case::new(&[E::Dir("sub/"), E::Link("d", "sub"), E::File("d/x", b"x")])
        .refused("entry \"d/x\": would be written through the symlink \"d\"");
    // A chain: `b -> a/..` with `a -> .` would resolve to the parent of the root.
    Case::new(&[E::Link("a", "."), E::Link("b", "a/..")])
        .refused("entry \"b\": symlink to \"a/..\" climbs with '..' after descending");
}

#[test]
fn duplicate_entries_are_refused() {
    Case::new(&[E::File("a", b"1"), E::File("./a", b"2")])
        .refused("entry \"./a\": duplicate of an earlier entry");
    let c = Case::new(&[E::File("aaa", b"1"), E::File("bbb", b"2")]);
    c.patch(|b| {
        for i in 0..b.len() - 3 {
            if &b[i..i + 3] == b"bbb" {
                b[i..i + 3].copy_from_slice(b"aaa");
            }
        }
    });
    c.refused("the archive lists an entry name more than once (duplicate entries)");
}

#[test]
fn encrypted_and_unsupported_entries_are_refused() {
    let c = Case::new(&[E::File("secret", b"x")]);
    c.patch(|b| {
        let (local, central) = headers(b);
        b[local[0] + 6] |= 1;
        b[central[0] + 8] |= 1;
    });
    c.refused("entry \"secret\": encrypted entries are not supported");
    let c = Case::new(&[E::File("bz", b"x")]);
    c.patch(|b| {
        let (local, central) = headers(b);
        put_u16(b, local[0] + 8, 12);
        put_u16(b, central[0] + 10, 12);
    });
    c.refused("entry \"bz\": unsupported compression method 12 (Bzip2) (only stored and deflate)");
}

#[test]
fn crc_mismatch_is_refused() {
    let c = Case::new(&[E::File("f", b"hello hello hello")]);
    c.patch(|b| {
        let (local, central) = headers(b);
        b[local[0] + 14] ^= 0xff;
        b[central[0] + 16] ^= 0xff;
    });
    let err = c.unpack(&LIMITS).unwrap_err();
    assert_eq!(
        err.to_string(),
        "entry \"f\": CRC mismatch (the archive is corrupt)"
    );
}

#[test]
fn truncated_and_non_zip_files_are_refused() {
    let c = Case::new(&[E::File("f", &[7u8; 4096])]);
    c.patch(|b| b.truncate(b.len() / 2));
    let err = c.unpack(&LIMITS).unwrap_err();
    assert!(matches!(err, UnzipError::NotZip { .. }), "{err}");
    assert!(
        err.to_string().contains("is not a readable zip archive"),
        "{err}"
    );
    let c = Case::new(&[]);
    std::fs::write(c.zip(), b"#!/bin/sh\necho not a zip\n").unwrap();
    let err = c.unpack(&LIMITS).unwrap_err();
    assert!(matches!(err, UnzipError::NotZip { .. }), "{err}");
}

#[test]
fn too_many_entries_are_refused_before_writing() {
    let names: Vec<String> = (0..6).map(|i| format!("f{i}")).collect();
    let entries: Vec<E> = names.iter().map(|n| E::File(n, b"x")).collect();
    let limits = Limits {
        max_entries: 5,
        ..LIMITS
    };
    Case::new(&entries).refused_with(&limits, "the archive has 6 entries; the limit is 5");
}

/// Zeros compress about 1,032:1: a bomb is stopped within its first megabytes, as it streams,
/// by the bytes written against the compressed bytes read for it so far, with the default
/// limits' ratio and no total limit to help.
#[test]
fn a_zip_bomb_stops_within_its_first_megabytes() {
    let zeros = vec![0u8; 64 << 20];
    let c = Case::new(&[E::File("ok.txt", b"fine"), E::File("bomb.bin", &zeros)]);
    let limits = Limits {
        max_bytes: u64::MAX / 2,
        max_ratio: 100,
        ..LIMITS
    };
    let err = c.unpack(&limits).unwrap_err();
    match &err {
        UnzipError::Ratio {
            entry,
            written,
            declared,
            ..
        } => {
            assert_eq!(entry, "bomb.bin");
            assert!(*written < 16 << 20, "stopped after {written} bytes: {err}");
            assert!(*declared < 1 << 20, "{err}");
        }
        other => panic!("{other}"),
    }
    assert!(err.to_string().contains("zip bomb"), "{err}");
}

#[test]
fn zip_bombs_stop_at_the_ratio_and_the_total() {
    let zeros = vec![0u8; 8 << 20];
    // One highly compressible large entry: the ratio bound trips.
    let c = Case::new(&[E::File("bomb", &zeros)]);
    let err = c.unpack(&LIMITS).unwrap_err();
    assert!(matches!(err, UnzipError::Ratio { .. }), "{err}");
    // Many entries that together expand far beyond the limit (ratio allowed): the total trips,
    // counted on bytes actually written.
    let names: Vec<String> = (0..16).map(|i| format!("part{i}")).collect();
    let entries: Vec<E> = names.iter().map(|n| E::File(n, &zeros)).collect();
    let c = Case::new(&entries);
    let limits = Limits {
        max_ratio: u64::MAX / 2,
        ..LIMITS
    };
    let err = c.unpack(&limits).unwrap_err();
    assert!(
        matches!(err, UnzipError::TooLarge { limit, .. } if limit == 32 << 20),
        "{err}"
    );
    let written = du(&c.staging());
    assert!(written <= (32 << 20) + (1 << 20), "wrote {written} bytes");
}

#[test]
fn declared_sizes_are_not_trusted() {
    let zeros = vec![0u8; 8 << 20];
    let c = Case::new(&[E::File("liar", &zeros)]);
    // Claim 1 KiB uncompressed in both headers.
    c.patch(|b| {
        let (local, central) = headers(b);
        b[local[0] + 22..local[0] + 26].copy_from_slice(&1024u32.to_le_bytes());
        b[central[0] + 24..central[0] + 28].copy_from_slice(&1024u32.to_le_bytes());
    });
    let limits = Limits {
        max_bytes: 2 << 20,
        max_ratio: u64::MAX / 2,
        ..LIMITS
    };
    // Either the reader stops at the lie, or the byte count does; never more than the limit.
    let _ = c.unpack(&limits);
    assert!(du(&c.staging()) <= 3 << 20);
}

#[test]
fn the_disk_reserve_is_kept() {
    let c = Case::new(&[E::File("f", b"x")]);
    let limits = Limits {
        reserve_bytes: u64::MAX / 2,
        ..LIMITS
    };
    let err = c.unpack(&limits).unwrap_err();
    assert!(matches!(err, UnzipError::DiskReserve { .. }), "{err}");
}

fn du(p: &Path) -> u64 {
    let mut n = 0;
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            let m = std::fs::symlink_metadata(e.path()).unwrap();
            n += if m.is_dir() { du(&e.path()) } else { m.len() };
        }
    }
    n
}

// ---- the install sequence ------------------------------------------------------------------

fn plan(dir: &Path, build: PathBuf) -> Plan {
    Plan {
        build,
        data_dir: dir.join("data"),
        game_root: dir.join("game"),
        limits: LIMITS,
        install_timeout: Duration::from_secs(20),
        run_as: None,
        env: vec![("PATH".into(), "/usr/bin:/bin".into())],
    }
}

/// An agent that is not root and has no accounts to look up: the games run as itself.
struct NoAccounts;
impl Accounts for NoAccounts {
    fn euid(&self) -> u32 {
        1000
    }
    fn egid(&self) -> u32 {
        1000
    }
    fn group_id(&self, _: &str) -> Option<u32> {
        None
    }
    fn user_id(&self, _: &str) -> Option<u32> {
        None
    }
    fn create_group(&self, _: &str) -> Result<(), String> {
        Err("not in tests".into())
    }
    fn create_user(&self, _: &str, _: &str) -> Result<(), String> {
        Err("not in tests".into())
    }
    fn give_tree(
        &self,
        _: &Path,
        _: u32,
        _: u32,
        _: Option<&owner::Inodes>,
    ) -> std::io::Result<owner::Given> {
        Ok(owner::Given::default())
    }
}

fn build_zip(dir: &Path, name: &str, install: Option<(&[u8], u32)>) -> PathBuf {
    let path = dir.join(name);
    let mut entries = vec![E::Mode("server", b"#!/bin/sh\nsleep 1\n", 0o755)];
    if let Some((script, mode)) = install {
        entries.push(E::Mode("install.sh", script, mode));
    }
    make_zip(&path, &entries);
    path
}

#[tokio::test]
async fn install_unpacks_once_runs_the_script_once_and_switches() {
    let dir = tempfile::tempdir().unwrap();
    let zip = build_zip(
        dir.path(),
        "v1.zip",
        Some((
            b"#!/bin/sh\necho installing in $(pwd)\necho run >> ../../install-count\n",
            0o755,
        )),
    );
    let p = plan(dir.path(), zip);
    let first = install(&p, &NoAccounts).await.unwrap();
    assert!(first.build.fresh);
    assert!(first.script.is_some());
    let root = std::fs::read_link(dir.path().join("game")).unwrap();
    assert_eq!(root, first.build.dir);
    assert!(dir.path().join("game/server").is_file());
    let log = std::fs::read_to_string(first.script.unwrap().log).unwrap();
    assert!(log.contains("installing in"), "{log}");
    // Same build again: nothing unpacked, nothing run.
    let again = install(&p, &NoAccounts).await.unwrap();
    assert!(!again.build.fresh);
    assert!(again.script.is_none());
    let count = std::fs::read_to_string(dir.path().join("data/install-count")).unwrap();
    assert_eq!(count.lines().count(), 1);
}

#[tokio::test]
async fn a_failed_build_leaves_the_previous_one_live() {
    let dir = tempfile::tempdir().unwrap();
    let good = build_zip(dir.path(), "good.zip", None);
    install(&plan(dir.path(), good), &NoAccounts).await.unwrap();
    let live = std::fs::read_link(dir.path().join("game")).unwrap();
    // A hostile archive.
    let bad = dir.path().join("bad.zip");
    make_zip(&bad, &[E::File("../escape", b"x")]);
    let err = install(&plan(dir.path(), bad), &NoAccounts)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("'..' in path"), "{err}");
    assert_eq!(std::fs::read_link(dir.path().join("game")).unwrap(), live);
    // A failing install.sh.
    let failing = build_zip(
        dir.path(),
        "failing.zip",
        Some((
            b"#!/bin/sh\necho step one\necho cannot find libfoo >&2\nexit 3\n",
            0o755,
        )),
    );
    let err = install(&plan(dir.path(), failing), &NoAccounts)
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("install.sh failed (exit code 3)"), "{text}");
    assert!(text.contains("cannot find libfoo"), "{text}");
    assert_eq!(std::fs::read_link(dir.path().join("game")).unwrap(), live);
    // No staging or half-installed build is left behind.
    let builds: Vec<String> = std::fs::read_dir(dir.path().join("data/builds"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        builds.len(),
        2,
        "the live build and its marker only: {builds:?}"
    );
}

#[tokio::test]
async fn install_script_mistakes_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let crlf = build_zip(
        dir.path(),
        "crlf.zip",
        Some((b"#!/bin/sh\r\necho hi\r\n", 0o755)),
    );
    let err = install(&plan(dir.path(), crlf), &NoAccounts)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("Windows (CRLF) line endings"),
        "{err}"
    );
    let noexec = build_zip(
        dir.path(),
        "noexec.zip",
        Some((b"echo ran via sh\n", 0o644)),
    );
    let done = install(&plan(dir.path(), noexec), &NoAccounts)
        .await
        .unwrap();
    let run = done.script.unwrap();
    assert!(run.note.unwrap().contains("run with /bin/sh"));
    assert!(
        std::fs::read_to_string(run.log)
            .unwrap()
            .contains("ran via sh")
    );
}

#[tokio::test]
async fn install_script_timeout_kills_it() {
    let dir = tempfile::tempdir().unwrap();
    let slow = build_zip(
        dir.path(),
        "slow.zip",
        Some((b"#!/bin/sh\necho waiting\nsleep 600\n", 0o755)),
    );
    let mut p = plan(dir.path(), slow);
    p.install_timeout = Duration::from_millis(300);
    let err = install(&p, &NoAccounts).await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains("did not finish within 300ms"), "{text}");
    assert!(text.contains("waiting"), "{text}");
}

#[tokio::test]
async fn directory_builds_install_too_and_hash_by_content() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("server"), "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(src.join("server"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let h1 = content_hash(&src).unwrap();
    let done = install(&plan(dir.path(), src.clone()), &NoAccounts)
        .await
        .unwrap();
    assert_eq!(done.build.hash, h1);
    assert!(dir.path().join("game/server").is_file());
    std::fs::write(src.join("server"), "#!/bin/sh\necho v2\n").unwrap();
    assert_ne!(content_hash(&src).unwrap(), h1);
    std::os::unix::fs::symlink("/etc/passwd", src.join("escape")).unwrap();
    let err = install(&plan(dir.path(), src), &NoAccounts)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("is absolute"), "{err}");
}

#[tokio::test]
async fn run_as_user_for_real_when_root() {
    if nix::unistd::geteuid().as_raw() != 0 || !Path::new("/usr/sbin/useradd").exists() {
        eprintln!("skipped: needs root and useradd");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("user.zip");
    make_zip(
        &path,
        &[
            E::Mode("server", b"#!/bin/sh\n", 0o755),
            E::File("gse.yaml", b"User: gse-test-user:gse-test-group\n"),
        ],
    );
    let done = install(&plan(dir.path(), path), &System).await.unwrap();
    let r = done.run_as.unwrap();
    assert_eq!(
        (r.user.as_str(), r.group.as_str()),
        ("gse-test-user", "gse-test-group")
    );
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(dir.path().join("game/server")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (r.uid, r.gid));
}

#[tokio::test]
async fn directory_builds_follow_the_same_rules() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("server"), "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(src.join("server"), std::fs::Permissions::from_mode(0o4755)).unwrap();
    let done = install(&plan(dir.path(), src.clone()), &NoAccounts)
        .await
        .unwrap();
    let mode = std::fs::metadata(done.build.dir.join("server"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o755, "setuid dropped");
    // A FIFO is refused before anything is copied.
    nix::unistd::mkfifo(
        &src.join("pipe"),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .unwrap();
    let err = install(&plan(dir.path(), src.clone()), &NoAccounts)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("device, FIFO or socket"), "{err}");
    std::fs::remove_file(src.join("pipe")).unwrap();
    // Too large for the limit.
    std::fs::write(src.join("big"), vec![1u8; 4 << 20]).unwrap();
    let mut p = plan(dir.path(), src.clone());
    p.limits.max_bytes = 1 << 20;
    let err = install(&p, &NoAccounts).await.unwrap_err();
    assert!(err.to_string().contains("passed the limit"), "{err}");
    // A chained symlink.
    std::fs::remove_file(src.join("big")).unwrap();
    std::os::unix::fs::symlink(".", src.join("a")).unwrap();
    std::os::unix::fs::symlink("a/..", src.join("b")).unwrap();
    let err = install(&plan(dir.path(), src), &NoAccounts)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("climbs with '..' after descending"),
        "{err}"
    );
}
