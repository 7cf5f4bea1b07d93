//! Checks of a valid config against the host it is to run on, made by `run` and
//! `check-config` (not by `validate`, which may be given a production config on a
//! workstation): the `build` exists, `data-dir` can be written (or created), and no running
//! agent holds `data-dir`. Each is a config error with its line, like a bad value.

use std::io::ErrorKind;
use std::path::Path;

use nix::unistd::AccessFlags;

use super::locate::{self, Segment::Key};
use super::*;

/// Reads and parses `path` as [`read`] does, then checks it against this host; every problem
/// of both kinds at once.
pub fn read_for_host(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let file = path.display().to_string();
    let cfg = parse(&text, &file, path.parent().unwrap_or(Path::new(".")))?;
    let problems = problems(&cfg, &text);
    if problems.is_empty() {
        Ok(cfg)
    } else {
        Err(ConfigError::Invalid { file, problems })
    }
}

/// What stops `cfg` from running here.
fn problems(cfg: &Config, text: &str) -> Vec<Problem> {
    let mut out = Vec::new();
    let mut problem = |key: &'static str, message: String| {
        out.push(Problem {
            line: locate::locate(text, &[Key(key)]),
            key: key.to_string(),
            message,
        });
    };
    if let Some(build) = &cfg.build {
        match std::fs::metadata(build) {
            Ok(m) if m.is_file() || m.is_dir() => {}
            Ok(_) => problem(
                "build",
                format!("{} is neither a zip file nor a directory", build.display()),
            ),
            Err(e) => problem(
                "build",
                format!(
                    "{}: {e}; the agent deploys it at start: give the build's zip or directory, or leave build out and deploy with DeployBuild",
                    build.display()
                ),
            ),
        }
    }
    if let Some(why) = unwritable(&cfg.data_dir) {
        problem("data-dir", why);
    } else if let Some(holder) = crate::agent::lock::holder(&cfg.data_dir) {
        problem(
            "data-dir",
            format!(
                "{} is in use by a running gse-agent ({holder}): each agent needs its own data-dir",
                cfg.data_dir.display()
            ),
        );
    }
    out
}

/// Why the agent could not write `dir` (creating it and its missing parents), if it could not.
fn unwritable(dir: &Path) -> Option<String> {
    let mut at = dir;
    loop {
        match std::fs::metadata(at) {
            Ok(m) if m.is_dir() => break,
            Ok(_) => return Some(format!("{} is not a directory", at.display())),
            // Missing, or under a file: the ancestor says which.
            Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => {
                match at.parent() {
                    Some(parent) if !parent.as_os_str().is_empty() => at = parent,
                    _ => return None,
                }
            }
            Err(e) => return Some(format!("cannot read {}: {e}", at.display())),
        }
    }
    match nix::unistd::access(at, AccessFlags::W_OK | AccessFlags::X_OK) {
        Ok(()) => None,
        Err(e) if at == dir => Some(format!(
            "{} is not writable by this user ({e}): the agent keeps its state, builds and logs there",
            dir.display()
        )),
        Err(e) => Some(format!(
            "{} does not exist and cannot be made: {} is not writable by this user ({e})",
            dir.display(),
            at.display()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_in(dir: &Path, extra: &str) -> (std::path::PathBuf, String) {
        let text = format!(
            "fleet-id: fleet-1\n{extra}runtime-configuration:\n  ServerProcesses:\n    - {{ LaunchPath: /local/game/server, ConcurrentExecutions: 1 }}\n"
        );
        let path = dir.join("agent.yaml");
        std::fs::write(&path, &text).unwrap();
        (path, text)
    }

    #[test]
    fn a_missing_build_and_a_data_dir_under_a_file_are_config_errors_with_lines() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("plain"), "x").unwrap();
        let (path, _) = config_in(
            dir.path(),
            "build: ./no-such.zip\ndata-dir: ./plain/state\n",
        );
        let Err(ConfigError::Invalid { problems, .. }) = read_for_host(&path) else {
            panic!("accepted");
        };
        let got: Vec<(&str, Option<usize>)> =
            problems.iter().map(|p| (p.key.as_str(), p.line)).collect();
        assert_eq!(
            got,
            [("build", Some(2)), ("data-dir", Some(3))],
            "{problems:?}"
        );
        assert!(problems[0].message.contains("no-such.zip"), "{problems:?}");
        assert!(
            problems[1].message.contains("is not a directory"),
            "{problems:?}"
        );
    }

    #[test]
    fn a_data_dir_yet_to_be_made_under_a_writable_one_passes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("build")).unwrap();
        let (path, _) = config_in(dir.path(), "build: ./build\ndata-dir: ./a/b/c\n");
        let cfg = read_for_host(&path).unwrap();
        assert!(!cfg.data_dir.exists(), "checking made nothing");
    }

    #[test]
    fn a_data_dir_a_running_agent_holds_is_a_config_error() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        let _held = crate::agent::lock::acquire(&data).unwrap();
        let (path, _) = config_in(dir.path(), "data-dir: ./data\n");
        let Err(ConfigError::Invalid { problems, .. }) = read_for_host(&path) else {
            panic!("accepted");
        };
        assert_eq!(problems[0].key, "data-dir");
        assert!(
            problems[0]
                .message
                .contains("in use by a running gse-agent"),
            "{problems:?}"
        );
    }
}
