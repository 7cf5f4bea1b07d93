//! Build packages: a zip (or a directory) unpacked safely beside the game root, `install.sh`
//! run once per build, the run-as user set up, then the game root switched to the new build.
//!
//! Builds live in `<data-dir>/builds/<sha256>`; the game root is a symlink to the active one,
//! replaced atomically. A build is unpacked into `builds/.staging-…` and renamed into place only
//! when everything succeeded; on any failure the staging directory is removed and the previous
//! build is untouched. `builds/<sha256>.installed` records that install.sh succeeded and the
//! build was given to its run-as user, so a restart with the same build neither unpacks,
//! installs nor hands anything over again: ownership is set once, after install.sh and before
//! the first launch, never on a tree a running or adopted game owns ([`owner`]).

pub mod account;
mod copy;
pub mod local_refs;
pub mod owner;
pub mod script;
pub mod unzip;

use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

pub use account::{AccountError, Accounts, RunAs, System};
pub use copy::copy_tree;
pub use script::{ScriptError, ScriptRun};
pub use unzip::{Limits, Stats, UnzipError};

/// Builds kept (the active one included); older ones are removed.
pub const BUILDS_KEPT: usize = 3;

/// Why a build could not be installed. The previous build stays active.
#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    /// The build path does not exist or cannot be read.
    #[error("cannot read the build {path}: {source}")]
    Read {
        /// The build.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A directory or link of the builds area could not be made.
    #[error("cannot {step} {path}: {source}")]
    Fs {
        /// What was being done.
        step: &'static str,
        /// The path.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Extraction refused the archive or failed.
    #[error("unpacking {build} failed: {source}")]
    Unpack {
        /// The build.
        build: PathBuf,
        /// Why.
        #[source]
        source: UnzipError,
    },
    /// install.sh failed.
    #[error(transparent)]
    Install(#[from] ScriptError),
    /// The run-as user could not be set up.
    #[error(transparent)]
    Account(#[from] AccountError),
    /// The game root is a real directory the agent does not manage.
    #[error(
        "game-root {0} is a directory with files in it; with `build:` set, gse-agent makes it a link to the active build. Move it away or point game-root elsewhere"
    )]
    GameRootOccupied(PathBuf),
}

/// A build unpacked into the builds area.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unpacked {
    /// `<data-dir>/builds/<sha256>`.
    pub dir: PathBuf,
    /// The build's content hash (hex sha256).
    pub hash: String,
    /// Whether it was unpacked now (false: it was there from an earlier run).
    pub fresh: bool,
    /// Entries and bytes written (zero when not fresh).
    pub stats: Stats,
    /// What the unpack wrote, when fresh: tells install.sh's files apart when the build is
    /// handed to its run-as user.
    pub written: Option<Written>,
}

/// The inodes an unpack wrote (shown by their count).
#[derive(Clone, PartialEq, Eq)]
pub struct Written(pub std::sync::Arc<owner::Inodes>);

impl std::fmt::Debug for Written {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} inodes", self.0.len())
    }
}

/// How a build was installed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    /// The unpacked build.
    pub build: Unpacked,
    /// install.sh's run, if it ran now.
    pub script: Option<ScriptRun>,
    /// The user games run as, if switched.
    pub run_as: Option<RunAs>,
}

/// What [`install`] needs from the configuration.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The zip or directory.
    pub build: PathBuf,
    /// Where builds and install logs go.
    pub data_dir: PathBuf,
    /// The link to switch.
    pub game_root: PathBuf,
    /// Extraction bounds.
    pub limits: Limits,
    /// install.sh's timeout.
    pub install_timeout: Duration,
    /// `run-as` from the agent config (overrides gse.yaml).
    pub run_as: Option<String>,
    /// install.sh's environment.
    pub env: Vec<(String, String)>,
}

impl Plan {
    /// The plan of an agent config: its build, limits and install.sh environment.
    pub fn for_config(cfg: &crate::agent::config::Config, build: PathBuf) -> Plan {
        Plan {
            build,
            data_dir: cfg.data_dir.clone(),
            game_root: cfg.game_root.clone(),
            limits: cfg.package.limits(),
            install_timeout: cfg.package.install_timeout.get(),
            run_as: cfg.run_as.clone(),
            // install.sh sees what a game sees, minus what only exists once the agent runs.
            env: cfg.game_env(cfg.sdk_listen),
        }
    }
}

/// Hex sha256 of a zip file, or of a directory's paths, modes and contents.
pub fn content_hash(build: &Path) -> Result<String, PackageError> {
    let read = |source| PackageError::Read {
        path: build.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(build).map_err(read)?;
    let mut hasher = Sha256::new();
    if meta.is_dir() {
        hash_dir(build, &mut hasher).map_err(read)?;
    } else {
        hash_file(build, &mut hasher).map_err(read)?;
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

fn hash_dir(root: &Path, h: &mut Sha256) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    // An explicit stack: a deep tree cannot overflow the thread's stack.
    let mut dirs = vec![PathBuf::new()];
    while let Some(rel) = dirs.pop() {
        let mut entries: Vec<_> = std::fs::read_dir(root.join(&rel))?.collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| std::cmp::Reverse(e.file_name()));
        for e in entries {
            let path = rel.join(e.file_name());
            let meta = std::fs::symlink_metadata(root.join(&path))?;
            h.update(path.as_os_str().as_encoded_bytes());
            h.update(meta.permissions().mode().to_le_bytes());
            let ft = meta.file_type();
            if ft.is_dir() {
                dirs.push(path);
            } else if ft.is_symlink() {
                h.update(
                    std::fs::read_link(root.join(&path))?
                        .as_os_str()
                        .as_encoded_bytes(),
                );
            } else if ft.is_file() {
                h.update(meta.len().to_le_bytes());
                hash_file(&root.join(&path), h)?;
            } else {
                return Err(std::io::Error::other(format!(
                    "{} is a device, FIFO or socket; builds hold only files, directories and links",
                    path.display()
                )));
            }
        }
    }
    Ok(())
}

fn hash_file(path: &Path, h: &mut Sha256) -> std::io::Result<()> {
    let mut f = std::fs::File::open(path)?;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        h.update(&buf[..n]);
    }
}

fn fs_err(step: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> PackageError {
    let path = path.to_path_buf();
    move |source| PackageError::Fs { step, path, source }
}

/// Removes a directory tree, making read-only directories writable first (never fails: what
/// cannot be removed stays).
pub fn remove_tree(path: &Path) {
    if std::fs::remove_dir_all(path).is_ok() || !path.exists() {
        return;
    }
    fn open_up(p: &Path) {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(m) = std::fs::symlink_metadata(p)
            && m.is_dir()
        {
            let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o700));
            if let Ok(rd) = std::fs::read_dir(p) {
                for e in rd.flatten() {
                    open_up(&e.path());
                }
            }
        }
    }
    open_up(path);
    let _ = std::fs::remove_dir_all(path);
}

fn marker(builds: &Path, hash: &str) -> PathBuf {
    builds.join(format!("{hash}.installed"))
}

/// Unpacks (or reuses) the build in the builds area. Extraction runs on a blocking thread.
pub async fn unpack(plan: &Plan) -> Result<Unpacked, PackageError> {
    let builds = plan.data_dir.join("builds");
    std::fs::create_dir_all(&builds).map_err(fs_err("create", &builds))?;
    let build = plan.build.clone();
    let hash = {
        let b = build.clone();
        tokio::task::spawn_blocking(move || content_hash(&b))
            .await
            .map_err(|e| PackageError::Read {
                path: build.clone(),
                source: std::io::Error::other(e.to_string()),
            })??
    };
    let dir = builds.join(&hash);
    if dir.is_dir() && marker(&builds, &hash).is_file() {
        tracing::info!(package.hash = %hash, "build already unpacked and installed");
        return Ok(Unpacked {
            dir,
            hash,
            fresh: false,
            stats: Stats::default(),
            written: None,
        });
    }
    // An earlier attempt that did not finish: start over.
    remove_tree(&dir);
    // Staging directories left by an agent that was killed mid-extraction.
    if let Ok(rd) = std::fs::read_dir(&builds) {
        for e in rd.flatten() {
            if e.file_name().to_string_lossy().starts_with(".staging-") {
                remove_tree(&e.path());
            }
        }
    }
    let staging = builds.join(format!(".staging-{hash}-{}", std::process::id()));
    std::fs::create_dir(&staging).map_err(fs_err("create", &staging))?;
    let limits = plan.limits;
    let (b, s) = (build.clone(), staging.clone());
    let result = tokio::task::spawn_blocking(move || {
        let progress = Reporter::new(&b);
        let report = |done, total, bytes| progress.report(done, total, bytes);
        let r = if b.is_dir() {
            copy::copy_tree(&b, &s, &limits, &report)
        } else {
            unzip::unpack(&b, &s, &limits, &report)
        };
        progress.finish();
        r
    })
    .await;
    let stats = match result {
        Ok(Ok(stats)) => stats,
        Ok(Err(source)) => {
            remove_tree(&staging);
            return Err(PackageError::Unpack { build, source });
        }
        Err(e) => {
            remove_tree(&staging);
            return Err(PackageError::Read {
                path: build,
                source: std::io::Error::other(e.to_string()),
            });
        }
    };
    if let Err(e) = std::fs::rename(&staging, &dir) {
        remove_tree(&staging);
        return Err(fs_err("move the unpacked build to", &dir)(e));
    }
    let d = dir.clone();
    let written = tokio::task::spawn_blocking(move || owner::inodes(&d))
        .await
        .map_err(std::io::Error::other)
        .and_then(|r| r)
        .map_err(fs_err("list the unpacked build", &dir))?;
    tracing::info!(package.hash = %hash, package.entries = stats.entries, package.bytes = stats.bytes, "build unpacked");
    Ok(Unpacked {
        dir,
        hash,
        fresh: true,
        stats,
        written: Some(Written(std::sync::Arc::new(written))),
    })
}

/// Runs install.sh of a fresh build (unless the build was installed before); on failure the
/// unpacked build is removed so that the next attempt starts clean. Success is recorded by
/// [`mark_installed`] once the build is also given to its run-as user.
pub async fn install_script(
    plan: &Plan,
    build: &Unpacked,
) -> Result<Option<ScriptRun>, PackageError> {
    let builds = plan.data_dir.join("builds");
    let done = marker(&builds, &build.hash);
    if done.is_file() {
        return Ok(None);
    }
    let logs = plan.data_dir.join("logs");
    std::fs::create_dir_all(&logs).map_err(fs_err("create", &logs))?;
    let log = logs.join(format!("install-{}.log", &build.hash[..12]));
    let mut env = plan.env.clone();
    env.retain(|(k, _)| k != "GSE_GAME_ROOT");
    env.push(("GSE_GAME_ROOT".into(), build.dir.display().to_string()));
    match script::run_install_script(&build.dir, &log, &env, plan.install_timeout).await {
        Ok(run) => Ok(run),
        Err(e) => {
            remove_tree(&build.dir);
            Err(e.into())
        }
    }
}

/// Records that `build` is installed and handed over (with install.sh's note): later starts
/// neither run install.sh nor change owners again.
pub fn mark_installed(
    plan: &Plan,
    build: &Unpacked,
    script: Option<&ScriptRun>,
) -> Result<(), PackageError> {
    let done = marker(&plan.data_dir.join("builds"), &build.hash);
    if done.is_file() {
        return Ok(());
    }
    let note = script.and_then(|r| r.note.clone()).unwrap_or_default();
    std::fs::write(&done, note).map_err(fs_err("write", &done))
}

/// Sets up the run-as user ([`account::choose`]: the agent's `run-as`, else gse.yaml's `User`,
/// else the default unprivileged user) and, while the build
/// is not yet installed (no game of it has run), gives it the build: once, never again at a
/// later start, when adopted games own the tree.
pub fn run_as(
    plan: &Plan,
    build: &Unpacked,
    accounts: &(dyn Accounts + Sync),
) -> Result<Option<RunAs>, PackageError> {
    let gse_yaml = match &plan.run_as {
        Some(_) => None,
        None => account::gse_yaml_user(&build.dir)?,
    };
    let Some(user) = account::choose(accounts, plan.run_as.as_deref(), gse_yaml.as_deref())? else {
        return Ok(None);
    };
    // Given before (the record names the user), nothing changes; a build not yet installed,
    // or now run as another user, is given (the walk follows no link, so it is safe even
    // under running games).
    let builds = plan.data_dir.join("builds");
    let record = builds.join(format!("{}.owner", build.hash));
    let owner = format!("{}:{}", user.uid, user.gid);
    let installed = marker(&builds, &build.hash).is_file();
    if !installed || std::fs::read_to_string(&record).ok().as_deref() != Some(owner.as_str()) {
        let written = build.written.as_ref().map(|w| w.0.as_ref());
        account::give(accounts, &user, &build.dir, written)?;
        std::fs::write(&record, &owner).map_err(fs_err("write", &record))?;
    }
    Ok(Some(user))
}

/// Points the game root at `build` (an atomic rename of a new link over the old one) and
/// removes builds beyond [`BUILDS_KEPT`].
pub fn activate(plan: &Plan, build: &Unpacked) -> Result<(), PackageError> {
    let root = &plan.game_root;
    if let Ok(meta) = std::fs::symlink_metadata(root)
        && meta.is_dir()
    {
        // An empty directory (created by an earlier run without a build) may go.
        std::fs::remove_dir(root).map_err(|_| PackageError::GameRootOccupied(root.clone()))?;
    }
    if let Some(parent) = root.parent() {
        std::fs::create_dir_all(parent).map_err(fs_err("create", parent))?;
    }
    let tmp = root.with_file_name(format!(
        ".{}.new-{}",
        root.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default(),
        std::process::id()
    ));
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&build.dir, &tmp).map_err(fs_err("create the link", &tmp))?;
    std::fs::rename(&tmp, root).map_err(fs_err("switch", root))?;
    // The marker's time orders builds for pruning: the live one is the newest.
    if let Ok(f) = std::fs::File::options()
        .append(true)
        .open(marker(&plan.data_dir.join("builds"), &build.hash))
    {
        let _ = f.set_modified(std::time::SystemTime::now());
    }
    tracing::info!(game.root = %root.display(), package.hash = %build.hash, "build is live");
    prune(&plan.data_dir.join("builds"), &build.hash);
    Ok(())
}

fn prune(builds: &Path, active: &str) {
    let Ok(rd) = std::fs::read_dir(builds) else {
        return;
    };
    let mut installed: Vec<(std::time::SystemTime, String)> = rd
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let hash = name.strip_suffix(".installed")?.to_string();
            Some((e.metadata().ok()?.modified().ok()?, hash))
        })
        .filter(|(_, h)| h != active)
        .collect();
    installed.sort();
    let excess = (installed.len() + 1).saturating_sub(BUILDS_KEPT);
    for (_, hash) in installed.into_iter().take(excess) {
        remove_tree(&builds.join(&hash));
        let _ = std::fs::remove_file(marker(builds, &hash));
        let _ = std::fs::remove_file(builds.join(format!("{hash}.owner")));
    }
}

/// The whole sequence for `gse-agent run`: unpack, install.sh, run-as, switch.
pub async fn install(
    plan: &Plan,
    accounts: &(dyn Accounts + Sync),
) -> Result<Installed, PackageError> {
    install_with(plan, accounts, |_| {}).await
}

/// [`install`], calling `unpacked` with the build once it is on disk, before install.sh runs
/// (the agent's start reads it there, see [`local_refs`]).
pub async fn install_with(
    plan: &Plan,
    accounts: &(dyn Accounts + Sync),
    unpacked: impl FnOnce(&Unpacked),
) -> Result<Installed, PackageError> {
    let build = unpack(plan).await?;
    unpacked(&build);
    let script = install_script(plan, &build).await?;
    let run_as = run_as(plan, &build, accounts)?;
    mark_installed(plan, &build, script.as_ref())?;
    activate(plan, &build)?;
    Ok(Installed {
        build,
        script,
        run_as,
    })
}

/// Progress on a terminal (entries and bytes, at most every 200 ms); silent otherwise.
struct Reporter {
    on_tty: bool,
    last: std::sync::Mutex<std::time::Instant>,
    name: String,
}

impl Reporter {
    fn new(build: &Path) -> Self {
        Self {
            on_tty: std::io::stderr().is_terminal(),
            last: std::sync::Mutex::new(std::time::Instant::now()),
            name: build.display().to_string(),
        }
    }

    fn report(&self, done: u64, total: u64, bytes: u64) {
        if !self.on_tty {
            return;
        }
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if last.elapsed() < Duration::from_millis(200) && done != total {
            return;
        }
        *last = std::time::Instant::now();
        eprint!(
            "\runpacking {}: {done}/{total} entries, {:.1} MiB",
            self.name,
            bytes as f64 / (1024.0 * 1024.0)
        );
    }

    fn finish(&self) {
        if self.on_tty {
            eprintln!();
        }
    }
}

#[cfg(test)]
mod tests;
