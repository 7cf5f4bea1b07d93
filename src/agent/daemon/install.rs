//! The build at start: the embedded sample's link to `gse-fake-server`, or the configured
//! build installed (unpack, install.sh) with its run-as user set up.

use std::path::{Path, PathBuf};

use super::{AgentError, create_dir};
use crate::agent::config::Config;
use crate::agent::package::{self, Accounts, PackageError, RunAs};

/// Installs the sample build of the embedded config: a link to `gse-fake-server` (which ships
/// beside `gse-agent`) in the game root, as GSE's docs link non-package binaries.
pub fn install_sample_build(cfg: &Config) -> Result<(), AgentError> {
    create_dir(&cfg.game_root)?;
    let exe = std::env::current_exe().map_err(|e| AgentError::SampleServer {
        path: PathBuf::from("gse-agent"),
        reason: format!("cannot locate the running executable: {e}"),
    })?;
    let server = exe.with_file_name("gse-fake-server");
    if !server.is_file() {
        return Err(AgentError::SampleServer {
            path: server,
            reason: "it does not exist".into(),
        });
    }
    for spec in &cfg.runtime.server_processes {
        let link = &spec.program;
        if std::fs::symlink_metadata(link).is_ok() {
            let _ = std::fs::remove_file(link);
        }
        std::os::unix::fs::symlink(&server, link).map_err(|e| AgentError::SampleServer {
            path: link.clone(),
            reason: format!("cannot link it to {}: {e}", server.display()),
        })?;
    }
    Ok(())
}

/// Installs the configured build (if any) and sets up the run-as user; returns who the games
/// run as.
pub async fn install_build(
    cfg: &Config,
    accounts: &(dyn Accounts + Sync),
) -> Result<Option<RunAs>, AgentError> {
    // First, before anything is written into it (Agent::build closes it again for the paths,
    // such as validate, that start there).
    crate::agent::data_dir::prepare(&cfg.data_dir)?;
    match &cfg.build {
        Some(build) => {
            let plan = package::Plan::for_config(cfg, build.clone());
            let announce = |b: &package::Unpacked| announce_local_game(cfg, &b.dir);
            Ok(package::install_with(&plan, accounts, announce)
                .await?
                .run_as)
        }
        None => {
            announce_local_game(cfg, &cfg.game_root);
            set_up_run_as(cfg, accounts)
        }
    }
}

/// Says once, at start, what install.sh and the games see at `/local/game` (probing it, see
/// [`crate::agent::process::local_game`]) and which lines of `build` (the build about to be installed,
/// or the game root) name it: a warning with the ways out when some of them will not reach
/// the build on this host.
pub fn announce_local_game(cfg: &Config, build: &Path) {
    use crate::agent::package::local_refs::{self, Outlook};
    let found = local_refs::scan(build, &cfg.runtime.server_processes, &cfg.game_root);
    let outlook = Outlook::new(
        found,
        crate::agent::process::local_game::support(),
        &cfg.game_root,
    );
    let places = outlook.found.places();
    match outlook.verdict() {
        Some(verdict) if outlook.broken > 0 => tracing::warn!(
            local_game.references = %places,
            "{}; /local/game is named at {places}: {verdict}",
            outlook.headline()
        ),
        Some(verdict) => tracing::info!(
            local_game.references = %places,
            "{}; /local/game is named at {places}: {verdict}",
            outlook.headline()
        ),
        None => tracing::info!(
            "{}; no install.sh line or launch path names /local/game",
            outlook.headline()
        ),
    }
}

/// Without a build: the run-as user of the configuration (or the default one), given the game root once (recorded
/// in `data-dir/game-root.owner`: a later start, whose adopted games own the tree, changes
/// nothing; a new user or game root is given it anew).
fn set_up_run_as(
    cfg: &Config,
    accounts: &(dyn Accounts + Sync),
) -> Result<Option<RunAs>, AgentError> {
    let Some(user) = package::account::choose(accounts, cfg.run_as.as_deref(), None)
        .map_err(PackageError::from)?
    else {
        return Ok(None);
    };
    create_dir(&cfg.game_root)?;
    let record = cfg.data_dir.join("game-root.owner");
    let given = format!("{}:{} {}\n", user.uid, user.gid, cfg.game_root.display());
    if std::fs::read_to_string(&record).ok().as_deref() != Some(given.as_str()) {
        package::account::give(accounts, &user, &cfg.game_root, None)
            .map_err(PackageError::from)?;
        let tmp = record.with_extension("owner.tmp");
        std::fs::write(&tmp, &given)
            .and_then(|()| std::fs::rename(&tmp, &record))
            .map_err(|source| AgentError::RecordOwner {
                path: record.clone(),
                source,
            })?;
    }
    Ok(Some(user))
}
