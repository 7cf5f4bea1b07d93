//! GSE's `/local/game`, made real for install.sh and the games.
//!
//! GSE unpacked every build at `/local/game`, and builds written for it use that path
//! absolutely (GSE's Java tutorial: `ln -s /usr/bin/java /local/game/java` in install.sh). Here
//! a build lives in `game-root` (a link to `<data-dir>/builds/<hash>`), so when the agent may
//! (root, a kernel with mount namespaces), each such child starts in a private mount namespace
//! in which `/local/game` is a bind mount of its build; the rest of the file system is the
//! host's. Several agents (fleets) on one host each give their children their own
//! `/local/game`, and nothing of it is visible on the host.
//!
//! In the child, between fork and exec (only raw system calls there, no allocation):
//! `unshare(CLONE_NEWNS)`, `/` made recursively private (or the bind would propagate back to
//! the host, whose `/` is shared under systemd), the build bound at `/local/game`, then the
//! switch to the run-as user, which must come after the mounts (std's own `uid`/`gid` switch
//! runs before `pre_exec`, when mounting would no longer be allowed).
//!
//! The mount point must exist on the host: a root agent creates the empty directory
//! `/local/game` (and `/local`) once, when it first probes ([`support`]). An existing
//! `/local/game`, empty or not, is left alone on the host; the children see their build over it.
//!
//! Without root or without mount namespaces the children see the host's `/local/game` (today's
//! behaviour); [`support`] says why, once, and the agent and `validate` say it to the operator.

use std::ffi::{CStr, CString};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use nix::errno::Errno;
use nix::mount::MsFlags;
use nix::unistd::{Gid, Uid};

use crate::agent::config::GSE_GAME_ROOT;

/// Why a child cannot get (or did not get) its own `/local/game`.
#[derive(Debug, thiserror::Error)]
pub enum LocalGameError {
    /// The kernel refused a new mount namespace: not root (no CAP_SYS_ADMIN), or no mount
    /// namespaces (EINVAL, ENOSYS) in this kernel or container.
    #[error("cannot enter a private mount namespace (unshare CLONE_NEWNS): {0}{hint}", hint = unshare_hint(*.0))]
    Unshare(#[source] Errno),
    /// `/` could not be made recursively private in the new namespace.
    #[error("cannot make the mount namespace private (mount --make-rprivate /): {0}")]
    Private(#[source] Errno),
    /// The build could not be bound at `/local/game`.
    #[error("cannot bind {} at {GSE_GAME_ROOT}: {errno}", path.display())]
    Bind {
        /// The build.
        path: PathBuf,
        /// The kernel's answer.
        #[source]
        errno: Errno,
    },
    /// The mount point `/local/game` is missing and could not be created.
    #[error("cannot create the mount point {GSE_GAME_ROOT}: {0}")]
    MountPoint(#[source] std::io::Error),
    /// `/local/game` exists but is not a directory.
    #[error("the mount point {GSE_GAME_ROOT} exists but is not a directory")]
    NotADirectory,
    /// A path cannot be handed to the kernel.
    #[error("the path {} contains a NUL byte", .0.display())]
    Nul(PathBuf),
    /// The probe's thread could not be started or died.
    #[error("cannot probe for mount namespaces: {0}")]
    Probe(String),
}

fn unshare_hint(e: Errno) -> &'static str {
    match e {
        Errno::EPERM => " (the agent is not root)",
        Errno::EINVAL | Errno::ENOSYS => " (this kernel or container has no mount namespaces)",
        _ => "",
    }
}

/// Whether this agent can give a child its own `/local/game`.
#[derive(Debug)]
pub enum Support {
    /// Children get a private mount namespace with their build at `/local/game`.
    Private,
    /// Children see the host's `/local/game`; why.
    Host(LocalGameError),
}

impl Support {
    /// The reason children see the host's `/local/game`, if they do.
    pub fn unavailable(&self) -> Option<&LocalGameError> {
        match self {
            Self::Private => None,
            Self::Host(e) => Some(e),
        }
    }
}

/// What the agent can do, probed once per process (the first call creates the mount point when
/// it may, see the module docs): a thread enters a mount namespace of its own, makes it private
/// and binds the mount point on itself there, then ends (and its namespace with it).
pub fn support() -> &'static Support {
    static SUPPORT: OnceLock<Support> = OnceLock::new();
    SUPPORT.get_or_init(|| {
        let probe = std::thread::Builder::new()
            .name("local-game-probe".into())
            .spawn(|| probe(&Sys))
            .map_err(|e| LocalGameError::Probe(e.to_string()))
            .and_then(|t| {
                t.join()
                    .map_err(|_| LocalGameError::Probe("the probe panicked".into()))
            });
        match probe.and_then(|r| r) {
            Ok(()) => Support::Private,
            Err(e) => Support::Host(e),
        }
    })
}

/// Whether a child whose build is `root` needs a namespace: not when `root` is `/local/game`
/// itself.
pub fn needs_namespace(root: &Path) -> bool {
    root != Path::new(GSE_GAME_ROOT)
}

/// Whether a child whose build is `root` starts in a private namespace with it at
/// `/local/game` (what [`confine`] will do).
pub fn will_confine(root: Option<&Path>) -> bool {
    root.is_some_and(needs_namespace) && matches!(support(), Support::Private)
}

/// Where a child that [`will_confine`] to `root` finds `path` (a host path in its build), as
/// a host path: a link whose target is an absolute path under `/local/game` (as install.sh
/// makes them: `ln -s /local/game/bin/server /local/game/server`) leads into `root` there, not
/// into the host's `/local/game`. Links of the last component are followed one at a time, at
/// most 40 as the kernel does; the path reached is returned for the caller's check to judge.
pub fn seen_at(path: &Path, root: &Path) -> PathBuf {
    let mut p = path.to_path_buf();
    for _ in 0..40 {
        let Ok(target) = std::fs::read_link(&p) else {
            return p;
        };
        let next = match p.parent() {
            Some(dir) if target.is_relative() => dir.join(target),
            _ => target,
        };
        p = match next.strip_prefix(GSE_GAME_ROOT) {
            Ok(rest) => root.join(rest),
            Err(_) => next,
        };
    }
    p
}

/// Sets `cmd` up to see `root` at `/local/game` (when [`needs_namespace`] and [`support`] say
/// so) and to run as `user`; returns whether it will get a private namespace. Call before the
/// spawn: everything the child needs is prepared here.
#[allow(unsafe_code)]
pub fn confine(
    cmd: &mut Command,
    root: Option<&Path>,
    user: Option<(u32, u32)>,
) -> Result<bool, LocalGameError> {
    let (Some(root), true) = (root, will_confine(root)) else {
        if let Some((uid, gid)) = user {
            cmd.uid(uid).gid(gid);
        }
        return Ok(false);
    };
    // Removed since the probe (or never made, by a probe that found it): made again.
    ensure_mount_point()?;
    let plan = Plan::new(root, user)?;
    // SAFETY: the closure runs in the forked child before exec, where only async-signal-safe
    // work is allowed. `enter` makes raw system calls only (unshare, mount, setgroups, setgid,
    // setuid, getuid) on CStrings built above, before the fork; it allocates nothing, takes no
    // lock, and its errors are plain errno values.
    unsafe {
        cmd.pre_exec(move || enter(&Sys, &plan).map_err(std::io::Error::from));
    }
    Ok(true)
}

/// Adds where a confined child was being started to a spawn error (the kernel's errno alone
/// cannot say whether the exec or the namespace failed).
pub fn spawn_context(e: std::io::Error, root: &Path) -> std::io::Error {
    std::io::Error::new(
        e.kind(),
        format!(
            "{e} (started in a private mount namespace with {} bound at {GSE_GAME_ROOT})",
            root.display()
        ),
    )
}

/// Creates `/local/game` (and `/local`) when missing; an existing directory, or a link to one,
/// is used as it is.
fn ensure_mount_point() -> Result<(), LocalGameError> {
    match std::fs::metadata(GSE_GAME_ROOT) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(LocalGameError::NotADirectory),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(GSE_GAME_ROOT)
                .map_err(LocalGameError::MountPoint)?;
            tracing::info!(
                mount.point = GSE_GAME_ROOT,
                "created the empty mount point for the builds' private /local/game"
            );
            Ok(())
        }
        Err(e) => Err(LocalGameError::MountPoint(e)),
    }
}

/// Everything the child needs, made before the fork.
#[derive(Debug, Clone)]
struct Plan {
    source: CString,
    target: CString,
    user: Option<(Uid, Gid)>,
}

impl Plan {
    fn new(root: &Path, user: Option<(u32, u32)>) -> Result<Self, LocalGameError> {
        let c = |p: &Path| {
            CString::new(p.as_os_str().as_encoded_bytes())
                .map_err(|_| LocalGameError::Nul(p.to_path_buf()))
        };
        Ok(Self {
            source: c(root)?,
            target: c(Path::new(GSE_GAME_ROOT))?,
            user: user.map(|(u, g)| (Uid::from_raw(u), Gid::from_raw(g))),
        })
    }
}

/// The raw calls of the child, behind a seam (a recording fake in the tests).
trait Kernel {
    /// `unshare(CLONE_NEWNS)`.
    fn unshare_mounts(&self) -> Result<(), Errno>;
    /// `mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL)`.
    fn make_private(&self) -> Result<(), Errno>;
    /// `mount(source, target, NULL, MS_BIND | MS_REC, NULL)`.
    fn bind(&self, source: &CStr, target: &CStr) -> Result<(), Errno>;
    /// Whether the real uid is 0.
    fn is_root(&self) -> bool;
    /// `setgroups(0, NULL)`.
    fn clear_groups(&self) -> Result<(), Errno>;
    /// `setgid`.
    fn set_gid(&self, gid: Gid) -> Result<(), Errno>;
    /// `setuid`.
    fn set_uid(&self, uid: Uid) -> Result<(), Errno>;
}

/// The child's steps, in order: a namespace of its own, private, the build bound, then the
/// user switch (supplementary groups dropped as std does for a root parent, gid before uid).
fn enter(k: &impl Kernel, plan: &Plan) -> Result<(), Errno> {
    k.unshare_mounts()?;
    k.make_private()?;
    k.bind(&plan.source, &plan.target)?;
    if let Some((uid, gid)) = plan.user {
        if k.is_root() {
            k.clear_groups()?;
        }
        k.set_gid(gid)?;
        k.set_uid(uid)?;
    }
    Ok(())
}

/// The probe's steps (in its own thread): what [`enter`] will do, on the mount point itself.
fn probe(k: &impl Kernel) -> Result<(), LocalGameError> {
    k.unshare_mounts().map_err(LocalGameError::Unshare)?;
    k.make_private().map_err(LocalGameError::Private)?;
    ensure_mount_point()?;
    let on_itself = Plan::new(Path::new(GSE_GAME_ROOT), None)?;
    k.bind(&on_itself.source, &on_itself.target)
        .map_err(|errno| LocalGameError::Bind {
            path: PathBuf::from(GSE_GAME_ROOT),
            errno,
        })
}

/// The real kernel.
struct Sys;

impl Kernel for Sys {
    fn unshare_mounts(&self) -> Result<(), Errno> {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)
    }

    fn make_private(&self) -> Result<(), Errno> {
        nix::mount::mount(
            None::<&CStr>,
            c"/",
            None::<&CStr>,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            None::<&CStr>,
        )
    }

    fn bind(&self, source: &CStr, target: &CStr) -> Result<(), Errno> {
        nix::mount::mount(
            Some(source),
            target,
            None::<&CStr>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&CStr>,
        )
    }

    fn is_root(&self) -> bool {
        nix::unistd::getuid().is_root()
    }

    fn clear_groups(&self) -> Result<(), Errno> {
        nix::unistd::setgroups(&[])
    }

    fn set_gid(&self, gid: Gid) -> Result<(), Errno> {
        nix::unistd::setgid(gid)
    }

    fn set_uid(&self, uid: Uid) -> Result<(), Errno> {
        nix::unistd::setuid(uid)
    }
}

#[cfg(test)]
mod tests;
