//! Giving a build to its run-as user, once, safely.
//!
//! The walk runs as root on a tree that no game of the build can run in yet (right after
//! install.sh, before the first launch), and it still trusts no path: every step is a
//! descriptor opened beneath the folder before it (`openat` with `O_NOFOLLOW`), so a folder
//! swapped for a link meanwhile makes the open fail instead of leading the walk out of the
//! build. A file is changed through a descriptor of the file itself (`O_PATH`), after checking
//! that descriptor's inode has exactly one link: a hard link to a file outside the build (say
//! `/etc/shadow`) is never handed over. Links themselves are changed, never followed.
//!
//! What install.sh left readable by root alone (owner root, no group or other permission,
//! created by the script rather than unpacked from the zip) stays root's, so the game, and the
//! log archives that open what it names as its user, never read it.

use std::collections::HashSet;
use std::ffi::OsString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, open, openat};
use nix::sys::stat::{FileStat, Mode, SFlag, fstat, fstatat};
use nix::unistd::{Gid, Uid, fchown, fchownat};

/// The inodes of a tree, by device and number.
pub type Inodes = HashSet<(u64, u64)>;

/// What the walk did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Given {
    /// Files, folders and links handed over.
    pub changed: u64,
    /// Files left alone because they have more than one link.
    pub linked: u64,
    /// Root-only files install.sh created, left root's.
    pub root_only: u64,
    /// Entries that changed or vanished while the walk looked at them, left alone.
    pub moved: u64,
}

/// Folders deeper than this are not walked (a zip's names are far shorter).
const MAX_DEPTH: usize = 256;

/// Gives everything under `root` (a folder, not followed if it is a link) to `uid:gid`, except
/// hard-linked files and, when `unpacked` lists what came from the zip, the root-only files
/// install.sh made.
pub fn give_tree(
    root: &Path,
    uid: u32,
    gid: u32,
    unpacked: Option<&Inodes>,
) -> std::io::Result<Given> {
    let fd = open(
        root,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let owner = (Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)));
    fchown(&fd, owner.0, owner.1)?;
    let mut given = Given {
        changed: 1,
        ..Given::default()
    };
    give_dir(&fd, owner, unpacked, 0, &mut given)?;
    Ok(given)
}

fn give_dir(
    dir: &OwnedFd,
    owner: (Option<Uid>, Option<Gid>),
    unpacked: Option<&Inodes>,
    depth: usize,
    given: &mut Given,
) -> std::io::Result<()> {
    for name in list(dir)? {
        let st = match fstatat(dir, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::ENOENT) => {
                given.moved += 1;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        match kind(&st) {
            SFlag::S_IFDIR => {
                if depth + 1 >= MAX_DEPTH {
                    given.moved += 1;
                    continue;
                }
                let sub = match openat(
                    dir,
                    name.as_os_str(),
                    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                    Mode::empty(),
                ) {
                    Ok(sub) => sub,
                    // Swapped for a link or a file since the look: not followed.
                    Err(Errno::ELOOP | Errno::ENOTDIR | Errno::ENOENT) => {
                        given.moved += 1;
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                };
                if !same(&fstat(&sub)?, &st) {
                    given.moved += 1;
                    continue;
                }
                fchown(&sub, owner.0, owner.1)?;
                given.changed += 1;
                give_dir(&sub, owner, unpacked, depth + 1, given)?;
            }
            // The link itself, never what it points to.
            SFlag::S_IFLNK => {
                match fchownat(
                    dir,
                    name.as_os_str(),
                    owner.0,
                    owner.1,
                    AtFlags::AT_SYMLINK_NOFOLLOW,
                ) {
                    Ok(()) => given.changed += 1,
                    Err(Errno::ENOENT) => given.moved += 1,
                    Err(e) => return Err(e.into()),
                }
            }
            _ => give_file(dir.as_fd(), &name, &st, owner, unpacked, given)?,
        }
    }
    Ok(())
}

/// A file (or FIFO, socket, device node install.sh made) through a descriptor of its own.
fn give_file(
    dir: BorrowedFd<'_>,
    name: &OsString,
    looked: &FileStat,
    owner: (Option<Uid>, Option<Gid>),
    unpacked: Option<&Inodes>,
    given: &mut Given,
) -> std::io::Result<()> {
    let fd = match openat(
        dir,
        name.as_os_str(),
        OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => {
            given.moved += 1;
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    let st = fstat(&fd)?;
    if !same(&st, looked) || kind(&st) == SFlag::S_IFLNK {
        given.moved += 1;
        return Ok(());
    }
    if st.st_nlink > 1 {
        given.linked += 1;
        return Ok(());
    }
    let from_zip = unpacked.is_none_or(|u| u.contains(&(st.st_dev, st.st_ino)));
    if !from_zip && st.st_uid == 0 && st.st_mode & 0o077 == 0 {
        given.root_only += 1;
        return Ok(());
    }
    fchownat(&fd, "", owner.0, owner.1, AtFlags::AT_EMPTY_PATH)?;
    given.changed += 1;
    Ok(())
}

/// The inodes of every file under `root` (links not followed), to tell later what install.sh
/// added.
pub fn inodes(root: &Path) -> std::io::Result<Inodes> {
    let fd = open(
        root,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let mut out = Inodes::new();
    let mut stack = vec![(fd, 0usize)];
    while let Some((dir, depth)) = stack.pop() {
        for name in list(&dir)? {
            let Ok(st) = fstatat(&dir, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW) else {
                continue;
            };
            out.insert((st.st_dev, st.st_ino));
            if kind(&st) == SFlag::S_IFDIR && depth + 1 < MAX_DEPTH {
                let sub = openat(
                    &dir,
                    name.as_os_str(),
                    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )?;
                stack.push((sub, depth + 1));
            }
        }
    }
    Ok(out)
}

fn kind(st: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits())
}

fn same(a: &FileStat, b: &FileStat) -> bool {
    (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)
}

/// The names in a folder, read through its descriptor (the folder opened beneath the root).
fn list(dir: &OwnedFd) -> std::io::Result<Vec<OsString>> {
    std::fs::read_dir(format!("/proc/self/fd/{}", dir.as_raw_fd()))?
        .map(|e| e.map(|e| e.file_name()))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};

    use super::*;

    fn owner(p: &Path) -> (u32, u32) {
        let m = std::fs::symlink_metadata(p).unwrap();
        (m.uid(), m.gid())
    }

    /// As root: the build is handed over; a link is changed but not followed, a folder
    /// linked out is not walked, a hard link to an outside file and a root-only file install.sh
    /// made stay as they were.
    #[test]
    fn the_build_and_nothing_beyond_it_is_handed_over() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: changing owners needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let (build, outside) = (dir.path().join("build"), dir.path().join("outside"));
        std::fs::create_dir_all(build.join("data/deep")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("secret"), "root's").unwrap();
        std::fs::write(build.join("server"), "game").unwrap();
        std::fs::write(build.join("data/deep/map"), "map").unwrap();
        symlink(&outside, build.join("out")).unwrap();
        symlink(outside.join("secret"), build.join("secret-link")).unwrap();
        let unpacked = inodes(&build).unwrap();
        // What install.sh does after the unpack: a hard link out, a root-only key, a log.
        std::fs::hard_link(outside.join("secret"), build.join("hard")).unwrap();
        std::fs::write(build.join("key.pem"), "k").unwrap();
        std::fs::set_permissions(
            build.join("key.pem"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        std::fs::write(build.join("install.log"), "done").unwrap();

        let given = give_tree(&build, 65534, 65534, Some(&unpacked)).unwrap();
        for game_owns in [
            "",
            "server",
            "data",
            "data/deep",
            "data/deep/map",
            "out",
            "secret-link",
            "install.log",
        ] {
            assert_eq!(owner(&build.join(game_owns)), (65534, 65534), "{game_owns}");
        }
        for root_keeps in [
            outside.clone(),
            outside.join("secret"),
            build.join("key.pem"),
        ] {
            assert_eq!(owner(&root_keeps), (0, 0), "{}", root_keeps.display());
        }
        assert_eq!(given.linked, 1, "{given:?}");
        assert_eq!(given.root_only, 1, "{given:?}");
    }

    #[test]
    fn a_root_that_is_a_link_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("real")).unwrap();
        symlink(dir.path().join("real"), dir.path().join("link")).unwrap();
        let uid = nix::unistd::geteuid().as_raw();
        let gid = nix::unistd::getegid().as_raw();
        let err = give_tree(&dir.path().join("link"), uid, gid, None).unwrap_err();
        assert!(
            matches!(err.raw_os_error(), Some(libc::ELOOP | libc::ENOTDIR)),
            "{err}"
        );
    }
}
