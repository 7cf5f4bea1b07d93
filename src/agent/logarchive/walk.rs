//! Opening what a game named, beneath its build, never following a link out of it.
//!
//! Every step is an `openat` of one name relative to a directory already opened beneath the
//! build's root, with `O_NOFOLLOW`, after an `fstatat` that does not follow either: the kernel
//! never resolves a link on the agent's behalf. A symbolic link is read and resolved here, as
//! a path of names inside the build: a relative target continues from the link's directory
//! (`..` climbs one opened directory, and climbing above the root is refused); an absolute one
//! must name the build (`/local/game/…` or the game root), and restarts from the root. So by
//! construction every file opened lies beneath the root, whatever the links say and however
//! they change meanwhile (a link swapped in after the check makes the `O_NOFOLLOW` open fail).
//! Devices, FIFOs and sockets are refused before they are opened (opening one can block or
//! act); the type is checked again on the opened file.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat, readlinkat};
use nix::sys::stat::{Mode, SFlag, fstatat};

use crate::agent::config::within_game_root;

/// Symbolic links followed for one path at most (the kernel's own limit).
const MAX_LINKS: usize = 40;
/// Folder levels walked under a named folder at most.
pub const MAX_DEPTH: usize = 32;

/// The build's root, opened once.
pub struct Beneath {
    root: OwnedFd,
    /// The game root as configured (a link target may name it instead of `/local/game`).
    game_root: PathBuf,
    /// Where the root really is (a link target may name that too).
    real_root: PathBuf,
}

/// A regular file, opened.
pub struct OpenFile {
    /// The file.
    pub file: File,
    /// Its size when opened.
    pub len: u64,
    /// Its modification time (Unix seconds).
    pub mtime: i64,
    /// Its permission bits.
    pub mode: u32,
}

/// What a path names, opened.
pub enum Found {
    /// A regular file.
    File(OpenFile),
    /// A folder.
    Dir(OwnedFd),
}

/// One item met walking a folder.
pub enum Item {
    /// A regular file at this path (relative to the build).
    File(PathBuf, OpenFile),
    /// Something not archived, with the reason.
    Skipped(PathBuf, String),
}

impl Beneath {
    /// Opens the build's root: `build` (the one a process ran in), else where `game_root` (a
    /// link to the build, as the agent makes it, followed: the agent made it) leads now. Link
    /// targets may name the build by `/local/game`, `game_root` or its own path.
    pub fn open(game_root: &Path, build: Option<&Path>) -> std::io::Result<Self> {
        let real_root = std::fs::canonicalize(build.unwrap_or(game_root))?;
        let root = openat(
            nix::fcntl::AT_FDCWD,
            &real_root,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Self {
            root,
            game_root: game_root.to_path_buf(),
            real_root,
        })
    }

    /// Opens `rel` (plain names, as [`super::plan::resolve`] gives) beneath the root; returns
    /// where it really lies (relative to the root) and what it is, or why it is refused.
    pub fn find(&self, rel: &Path) -> Result<(PathBuf, Found), String> {
        let mut pending: VecDeque<OsString> = names(rel).collect();
        // The folders opened so far below the root, with their names.
        let mut stack: Vec<(OsString, OwnedFd)> = Vec::new();
        let mut links = 0;
        while let Some(name) = pending.pop_front() {
            if name == ".." {
                if stack.pop().is_none() {
                    return Err(
                        "a symbolic link on the way climbs out of the build: not followed".into(),
                    );
                }
                continue;
            }
            let here = |stack: &[(OsString, OwnedFd)]| -> PathBuf {
                stack
                    .iter()
                    .map(|(n, _)| n.as_os_str())
                    .chain([name.as_os_str()])
                    .collect()
            };
            let dir = stack.last().map_or(self.root.as_fd(), |(_, fd)| fd.as_fd());
            let kind = match stat_kind(dir, &name) {
                Ok(kind) => kind,
                Err(Errno::ENOENT) => {
                    return Err(format!("{} does not exist", here(&stack).display()));
                }
                Err(e) => {
                    return Err(format!(
                        "{} cannot be read: {}",
                        here(&stack).display(),
                        e.desc()
                    ));
                }
            };
            match kind {
                SFlag::S_IFLNK => {
                    links += 1;
                    if links > MAX_LINKS {
                        return Err(format!("more than {MAX_LINKS} symbolic links on the way"));
                    }
                    let target = readlinkat(dir, name.as_os_str()).map_err(|e| {
                        format!(
                            "the link {} cannot be read: {}",
                            here(&stack).display(),
                            e.desc()
                        )
                    })?;
                    let target = PathBuf::from(target);
                    let rest: Vec<OsString> = if target.is_absolute() {
                        let inside = within_game_root(&target, &self.game_root)
                            .or_else(|| target.strip_prefix(&self.real_root).ok())
                            .ok_or_else(|| {
                                format!(
                                    "{} is a symbolic link to {} outside the build: not followed",
                                    here(&stack).display(),
                                    target.display()
                                )
                            })?;
                        stack.clear();
                        names(inside).collect()
                    } else {
                        names(&target).collect()
                    };
                    for n in rest.into_iter().rev() {
                        pending.push_front(n);
                    }
                }
                SFlag::S_IFDIR => {
                    let fd = open_dir(dir, &name).map_err(|e| {
                        format!("{} cannot be opened: {}", here(&stack).display(), e.desc())
                    })?;
                    stack.push((name, fd));
                }
                SFlag::S_IFREG => {
                    let at = here(&stack);
                    if !pending.is_empty() {
                        return Err(format!("{} is a file, not a folder", at.display()));
                    }
                    let file = open_file(dir, &name)
                        .map_err(|e| format!("{} cannot be opened: {e}", at.display()))?;
                    return Ok((at, Found::File(file)));
                }
                other => {
                    return Err(format!(
                        "{} is {}: only regular files and folders are archived",
                        here(&stack).display(),
                        kind_name(other)
                    ));
                }
            }
        }
        let at: PathBuf = stack.iter().map(|(n, _)| n.as_os_str()).collect();
        match stack.pop() {
            Some((_, fd)) => Ok((at, Found::Dir(fd))),
            None => Err("leads to the whole build: name its log files or folders".into()),
        }
    }
}

/// Walks the folder `dir` (at `at`, relative to the build) depth first, names sorted, handing
/// every regular file and every refusal to `visit` until it returns `false`. Links inside a
/// folder are not followed (its target is archived when it lies in the folder too).
pub fn walk(dir: &OwnedFd, at: &Path, visit: &mut dyn FnMut(Item) -> bool) -> bool {
    walk_at(dir, at, 0, visit)
}

fn walk_at(dir: &OwnedFd, at: &Path, depth: usize, visit: &mut dyn FnMut(Item) -> bool) -> bool {
    let names = match list(dir) {
        Ok(names) => names,
        Err(e) => {
            return visit(Item::Skipped(
                at.to_path_buf(),
                format!("the folder cannot be listed: {e}"),
            ));
        }
    };
    for name in names {
        let path = at.join(&name);
        let item = match stat_kind(dir.as_fd(), &name) {
            Err(Errno::ENOENT) => continue,
            Err(e) => Item::Skipped(path, format!("cannot be read: {}", e.desc())),
            Ok(SFlag::S_IFREG) => match open_file(dir.as_fd(), &name) {
                Ok(file) => Item::File(path, file),
                Err(e) => Item::Skipped(path, format!("cannot be opened: {e}")),
            },
            Ok(SFlag::S_IFDIR) if depth + 1 >= MAX_DEPTH => Item::Skipped(
                path,
                format!("a folder more than {MAX_DEPTH} levels deep: not walked"),
            ),
            Ok(SFlag::S_IFDIR) => match open_dir(dir.as_fd(), &name) {
                Ok(sub) => {
                    if !walk_at(&sub, &path, depth + 1, visit) {
                        return false;
                    }
                    continue;
                }
                Err(e) => Item::Skipped(path, format!("cannot be opened: {}", e.desc())),
            },
            Ok(SFlag::S_IFLNK) => {
                let target = readlinkat(dir.as_fd(), name.as_os_str())
                    .map(|t| PathBuf::from(t).display().to_string())
                    .unwrap_or_else(|_| "?".into());
                Item::Skipped(
                    path,
                    format!("a symbolic link to {target}: links inside a folder are not followed"),
                )
            }
            Ok(other) => Item::Skipped(
                path,
                format!(
                    "{}: only regular files and folders are archived",
                    kind_name(other)
                ),
            ),
        };
        if !visit(item) {
            return false;
        }
    }
    true
}

/// The plain names of a path, `..` kept (a link target may hold them), `.` and `/` dropped.
fn names(path: &Path) -> impl Iterator<Item = OsString> + '_ {
    path.components().filter_map(|c| match c {
        Component::Normal(n) => Some(n.to_os_string()),
        Component::ParentDir => Some(OsString::from("..")),
        _ => None,
    })
}

fn stat_kind(dir: BorrowedFd<'_>, name: &OsStr) -> Result<SFlag, Errno> {
    let st = fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW)?;
    Ok(SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()))
}

fn open_dir(dir: BorrowedFd<'_>, name: &OsStr) -> Result<OwnedFd, Errno> {
    openat(
        dir,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

/// Opens a file the `fstatat` found regular: without following a link, without blocking (a
/// FIFO swapped in meanwhile), and checks it is still a regular file.
fn open_file(dir: BorrowedFd<'_>, name: &OsStr) -> Result<OpenFile, String> {
    use std::os::unix::fs::MetadataExt;
    let fd = openat(
        dir,
        name,
        OFlag::O_RDONLY
            | OFlag::O_NOFOLLOW
            | OFlag::O_NONBLOCK
            | OFlag::O_NOCTTY
            | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| e.desc().to_string())?;
    let file = File::from(fd);
    let meta = file.metadata().map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("it changed into something else than a file while it was opened".into());
    }
    Ok(OpenFile {
        len: meta.len(),
        mtime: meta.mtime(),
        mode: meta.mode() & 0o777,
        file,
    })
}

/// The names in a folder, sorted (read through the descriptor, so the folder is the one
/// opened beneath the root).
fn list(dir: &OwnedFd) -> std::io::Result<Vec<OsString>> {
    let mut names: Vec<OsString> = std::fs::read_dir(format!("/proc/self/fd/{}", dir.as_raw_fd()))?
        .filter_map(|e| e.ok().map(|e| e.file_name()))
        .collect();
    names.sort();
    Ok(names)
}

fn kind_name(kind: SFlag) -> &'static str {
    match kind {
        SFlag::S_IFIFO => "a FIFO",
        SFlag::S_IFCHR => "a character device",
        SFlag::S_IFBLK => "a block device",
        SFlag::S_IFSOCK => "a socket",
        _ => "not a regular file",
    }
}
