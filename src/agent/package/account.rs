//! The run-as user: the agent's `run-as`, else `gse.yaml`'s `User: user:group`, else (for an
//! agent running as root) [`DEFAULT_RUN_AS`]; created if missing, owning the build, running the
//! games. No game runs as root unless `run-as: root` says so ([`choose`]). OS calls sit behind
//! [`Accounts`] so the logic is tested without root. The build is given to the user once, by
//! [`give`], before any game of it runs ([`super::owner`] says how).

use std::path::Path;

use serde::Deserialize;

use super::owner::{Given, Inodes};

/// Who games run as when neither `run-as` nor gse.yaml names anyone and the agent runs as
/// root. The package's sysusers.d file creates it; the agent creates it when it is missing.
pub const DEFAULT_RUN_AS: &str = "gse-game:gse-game";

/// A user and group by name and id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    /// User name.
    pub user: String,
    /// Group name.
    pub group: String,
    /// Its uid.
    pub uid: u32,
    /// Its gid.
    pub gid: u32,
}

/// Why the run-as user could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    /// gse.yaml could not be read or parsed.
    #[error("{path}: {message}")]
    GseYaml {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// A `user:group` value is malformed.
    #[error(
        "run-as user {0:?} is not of the form user:group (lower-case letters, digits, '_', '-') or root"
    )]
    Malformed(String),
    /// A user switch needs root.
    #[error("running games as {user}:{group} needs root, but gse-agent runs as uid {uid}")]
    NotRoot {
        /// User.
        user: String,
        /// Group.
        group: String,
        /// The agent's uid.
        uid: u32,
    },
    /// Creating the user or group failed.
    #[error("cannot create {what}: {message}")]
    Create {
        /// `user x` or `group y`.
        what: String,
        /// What failed.
        message: String,
    },
    /// chown failed.
    #[error("cannot give {path} to {user}:{group}: {source}")]
    Chown {
        /// The path.
        path: String,
        /// User.
        user: String,
        /// Group.
        group: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// The OS calls the run-as setup needs.
pub trait Accounts {
    /// The agent's effective uid.
    fn euid(&self) -> u32;
    /// The agent's effective gid.
    fn egid(&self) -> u32;
    /// The gid of `group`, if it exists.
    fn group_id(&self, group: &str) -> Option<u32>;
    /// The uid of `user`, if it exists.
    fn user_id(&self, user: &str) -> Option<u32>;
    /// Creates a system group.
    fn create_group(&self, group: &str) -> Result<(), String>;
    /// Creates a system user with `group` as its primary group and no login shell.
    fn create_user(&self, user: &str, group: &str) -> Result<(), String>;
    /// Gives everything under `root` to `uid:gid` ([`super::owner::give_tree`]).
    fn give_tree(
        &self,
        root: &Path,
        uid: u32,
        gid: u32,
        unpacked: Option<&Inodes>,
    ) -> std::io::Result<Given>;
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GseYaml {
    #[serde(rename = "User")]
    user: Option<String>,
}

/// The `User` of `<root>/gse.yaml`, if the file exists.
pub fn gse_yaml_user(root: &Path) -> Result<Option<String>, AccountError> {
    let path = root.join("gse.yaml");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(None);
    };
    let parsed: GseYaml = serde_yaml::from_str(&text).map_err(|e| AccountError::GseYaml {
        path: path.display().to_string(),
        message: format!("{e} (GSE allows exactly `User: user:group`)"),
    })?;
    Ok(parsed.user)
}

/// Splits and checks `user:group` (`root` alone is `root:root`).
pub fn parse_user_group(spec: &str) -> Result<(String, String), AccountError> {
    if spec == "root" {
        return Ok(("root".into(), "root".into()));
    }
    let valid = |s: &str| {
        !s.is_empty()
            && s.len() <= 32
            && s.chars()
                .next()
                .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
    };
    match spec.split_once(':') {
        Some((u, g)) if valid(u) && valid(g) => Ok((u.to_string(), g.to_string())),
        _ => Err(AccountError::Malformed(spec.to_string())),
    }
}

/// Creates the user and group if missing. Nothing is handed over: see [`give`].
pub fn set_up(accounts: &dyn Accounts, spec: &str) -> Result<RunAs, AccountError> {
    let (user, group) = parse_user_group(spec)?;
    let euid = accounts.euid();
    if euid != 0 {
        // Already that user: nothing to switch (and no group to switch to without root).
        if accounts.user_id(&user) == Some(euid) {
            return Ok(RunAs {
                user,
                group,
                uid: euid,
                gid: accounts.egid(),
            });
        }
        return Err(AccountError::NotRoot {
            user,
            group,
            uid: euid,
        });
    }
    // Another agent on the host may create the same account at the same moment: what counts
    // is that it exists afterwards.
    let gid = match accounts.group_id(&group) {
        Some(gid) => gid,
        None => {
            let made = accounts.create_group(&group);
            accounts
                .group_id(&group)
                .ok_or_else(|| AccountError::Create {
                    what: format!("group {group}"),
                    message: made
                        .err()
                        .unwrap_or_else(|| "it does not exist after groupadd".into()),
                })?
        }
    };
    let uid = match accounts.user_id(&user) {
        Some(uid) => uid,
        None => {
            let made = accounts.create_user(&user, &group);
            accounts
                .user_id(&user)
                .ok_or_else(|| AccountError::Create {
                    what: format!("user {user}"),
                    message: made
                        .err()
                        .unwrap_or_else(|| "it does not exist after useradd".into()),
                })?
        }
    };
    Ok(RunAs {
        user,
        group,
        uid,
        gid,
    })
}

/// Where the run-as user was named, for the start log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Named {
    /// The agent's `run-as`.
    Config,
    /// The build's gse.yaml `User`.
    GseYaml,
    /// Nobody: [`DEFAULT_RUN_AS`].
    Default,
}

/// The user games run as: `configured` (the agent's `run-as`), else `gse_yaml` (the build's
/// `User`), else, for an agent running as root, [`DEFAULT_RUN_AS`], set up by [`set_up`].
/// `None`: the games run as the agent itself, which is either not root and asked for nobody,
/// or root by the explicit choice of `run-as: root` (or a gse.yaml `User: root:root`), which
/// is logged as a warning every start.
pub fn choose(
    accounts: &dyn Accounts,
    configured: Option<&str>,
    gse_yaml: Option<&str>,
) -> Result<Option<RunAs>, AccountError> {
    let (spec, named) = match (configured, gse_yaml) {
        (Some(spec), _) => (spec, Named::Config),
        (None, Some(spec)) => (spec, Named::GseYaml),
        (None, None) if accounts.euid() == 0 => (DEFAULT_RUN_AS, Named::Default),
        (None, None) => return Ok(None),
    };
    let user = set_up(accounts, spec)?;
    if user.uid == 0 {
        tracing::warn!(
            run_as = spec,
            named_by = ?named,
            "games run as root, by choice: a game can read and change everything on this host"
        );
        return Ok(None);
    }
    tracing::info!(
        run_as.user = %user.user,
        run_as.group = %user.group,
        process.uid = user.uid,
        named_by = ?named,
        "games run as an unprivileged user"
    );
    Ok(Some(user))
}

/// Gives `root` to `run_as` (not a user the agent already is: nothing to change then). Called
/// once per tree, before any game runs in it; `unpacked` tells install.sh's files apart.
pub fn give(
    accounts: &dyn Accounts,
    run_as: &RunAs,
    root: &Path,
    unpacked: Option<&Inodes>,
) -> Result<Given, AccountError> {
    if accounts.euid() != 0 {
        return Ok(Given::default());
    }
    let given = accounts
        .give_tree(root, run_as.uid, run_as.gid, unpacked)
        .map_err(|source| AccountError::Chown {
            path: root.display().to_string(),
            user: run_as.user.clone(),
            group: run_as.group.clone(),
            source,
        })?;
    tracing::info!(
        path = %root.display(),
        user = %run_as.user,
        files.changed = given.changed,
        files.linked = given.linked,
        files.root_only = given.root_only,
        files.moved = given.moved,
        "build given to the run-as user"
    );
    Ok(given)
}

/// The real system: nix lookups, `groupadd`/`useradd`, `lchown`.
pub struct System;

fn run(cmd: &str, args: &[&str]) -> Result<(), String> {
    // Through the process registry: the agent's orphan reaper must not take its status.
    let out = crate::agent::process::command_output(std::process::Command::new(cmd).args(args))
        .map_err(|e| format!("cannot run {cmd}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Accounts for System {
    fn euid(&self) -> u32 {
        nix::unistd::geteuid().as_raw()
    }
    fn egid(&self) -> u32 {
        nix::unistd::getegid().as_raw()
    }
    fn group_id(&self, group: &str) -> Option<u32> {
        nix::unistd::Group::from_name(group)
            .ok()
            .flatten()
            .map(|g| g.gid.as_raw())
    }
    fn user_id(&self, user: &str) -> Option<u32> {
        nix::unistd::User::from_name(user)
            .ok()
            .flatten()
            .map(|u| u.uid.as_raw())
    }
    fn create_group(&self, group: &str) -> Result<(), String> {
        run("groupadd", &["--system", group])
    }
    fn create_user(&self, user: &str, group: &str) -> Result<(), String> {
        run(
            "useradd",
            &[
                "--system",
                "--gid",
                group,
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                user,
            ],
        )
    }
    fn give_tree(
        &self,
        root: &Path,
        uid: u32,
        gid: u32,
        unpacked: Option<&Inodes>,
    ) -> std::io::Result<Given> {
        super::owner::give_tree(root, uid, gid, unpacked)
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::collections::HashMap;

    use super::*;

    #[derive(Default)]
    struct Fake {
        euid: u32,
        users: RefCell<HashMap<String, u32>>,
        groups: RefCell<HashMap<String, u32>>,
        calls: RefCell<Vec<String>>,
        creating: Creating,
    }

    /// What groupadd and useradd do.
    #[derive(Default, Clone, Copy)]
    enum Creating {
        /// They create it.
        #[default]
        Works,
        /// Another agent created it a moment before: it exists, and the command says so.
        Raced,
        /// They create nothing.
        Fails,
    }

    impl Fake {
        fn create(&self, call: String, made: impl FnOnce()) -> Result<(), String> {
            self.calls.borrow_mut().push(call.clone());
            match self.creating {
                Creating::Works => {
                    made();
                    Ok(())
                }
                Creating::Raced => {
                    made();
                    Err(format!("{call}: it already exists"))
                }
                Creating::Fails => Err(format!("{call}: cannot lock /etc/group")),
            }
        }
    }

    impl Accounts for Fake {
        fn euid(&self) -> u32 {
            self.euid
        }
        fn egid(&self) -> u32 {
            self.euid
        }
        fn group_id(&self, g: &str) -> Option<u32> {
            self.groups.borrow().get(g).copied()
        }
        fn user_id(&self, u: &str) -> Option<u32> {
            self.users.borrow().get(u).copied()
        }
        fn create_group(&self, g: &str) -> Result<(), String> {
            self.create(format!("groupadd {g}"), || {
                self.groups.borrow_mut().insert(g.into(), 900);
            })
        }
        fn create_user(&self, u: &str, g: &str) -> Result<(), String> {
            self.create(format!("useradd {u} {g}"), || {
                self.users.borrow_mut().insert(u.into(), 901);
            })
        }
        fn give_tree(
            &self,
            root: &Path,
            uid: u32,
            gid: u32,
            _: Option<&Inodes>,
        ) -> std::io::Result<Given> {
            self.calls
                .borrow_mut()
                .push(format!("chown {uid}:{gid} {}", root.display()));
            Ok(Given::default())
        }
    }

    #[test]
    fn creates_missing_user_and_group_then_chowns() {
        let fake = Fake::default();
        let r = set_up(&fake, "user_00:users").unwrap();
        give(&fake, &r, Path::new("/g"), None).unwrap();
        assert_eq!((r.uid, r.gid), (901, 900));
        assert_eq!(
            *fake.calls.borrow(),
            [
                "groupadd users",
                "useradd user_00 users",
                "chown 901:900 /g"
            ]
        );
    }

    #[test]
    fn existing_accounts_are_reused() {
        let fake = Fake::default();
        fake.users.borrow_mut().insert("game".into(), 1000);
        fake.groups.borrow_mut().insert("game".into(), 1000);
        let r = set_up(&fake, "game:game").unwrap();
        assert!(
            fake.calls.borrow().is_empty(),
            "nothing is handed over by set_up"
        );
        give(&fake, &r, Path::new("/g"), None).unwrap();
        assert_eq!(*fake.calls.borrow(), ["chown 1000:1000 /g"]);
    }

    #[test]
    fn a_switch_without_root_is_refused_clearly() {
        let fake = Fake {
            euid: 1000,
            ..Default::default()
        };
        let err = set_up(&fake, "user_00:users").unwrap_err();
        assert_eq!(
            err.to_string(),
            "running games as user_00:users needs root, but gse-agent runs as uid 1000"
        );
        assert!(fake.calls.borrow().is_empty());
    }

    #[test]
    fn nobody_named_is_the_default_user_for_root_and_the_agent_itself_otherwise() {
        let root = Fake::default();
        let r = choose(&root, None, None).unwrap().unwrap();
        assert_eq!(
            (r.user.as_str(), r.group.as_str()),
            ("gse-game", "gse-game")
        );
        assert_eq!(
            *root.calls.borrow(),
            ["groupadd gse-game", "useradd gse-game gse-game"]
        );
        let user = Fake {
            euid: 1000,
            ..Default::default()
        };
        assert_eq!(choose(&user, None, None).unwrap(), None);
        assert!(user.calls.borrow().is_empty());
    }

    #[test]
    fn the_config_wins_over_gse_yaml_and_root_is_only_a_choice() {
        let fake = Fake::default();
        fake.users.borrow_mut().insert("root".into(), 0);
        fake.groups.borrow_mut().insert("root".into(), 0);
        let r = choose(&fake, Some("game:game"), Some("other:other"))
            .unwrap()
            .unwrap();
        assert_eq!(r.user, "game");
        let r = choose(&fake, None, Some("other:other")).unwrap().unwrap();
        assert_eq!(r.user, "other");
        assert_eq!(choose(&fake, Some("root"), Some("x:x")).unwrap(), None);
        assert_eq!(choose(&fake, None, Some("root:root")).unwrap(), None);
    }

    #[test]
    fn an_account_another_agent_created_meanwhile_is_used() {
        let raced = Fake {
            creating: Creating::Raced,
            ..Default::default()
        };
        let r = set_up(&raced, "game:game").unwrap();
        assert_eq!((r.uid, r.gid), (901, 900));
        let failing = Fake {
            creating: Creating::Fails,
            ..Default::default()
        };
        assert_eq!(
            set_up(&failing, "game:game").unwrap_err().to_string(),
            "cannot create group game: groupadd game: cannot lock /etc/group"
        );
    }

    #[test]
    fn malformed_specs_are_refused() {
        assert_eq!(
            parse_user_group("root").unwrap(),
            ("root".into(), "root".into())
        );
        for bad in ["user", ":g", "u:", "Root:x", "a b:c", "u:g:h", "Root"] {
            assert!(parse_user_group(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn gse_yaml_is_read() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(gse_yaml_user(dir.path()).unwrap(), None);
        std::fs::write(dir.path().join("gse.yaml"), "User: user_00:users\n").unwrap();
        assert_eq!(
            gse_yaml_user(dir.path()).unwrap().as_deref(),
            Some("user_00:users")
        );
        std::fs::write(dir.path().join("gse.yaml"), "Usr: x\n").unwrap();
        let err = gse_yaml_user(dir.path()).unwrap_err().to_string();
        assert!(err.contains("exactly `User: user:group`"), "{err}");
    }
}
