//! GSE's RuntimeConfiguration: how many server processes of which launch path a host runs,
//! and its session activation limits. Both halves read it (agent.yaml's
//! `runtime-configuration`, UpdateRuntimeConfiguration) with the same rules.

mod launch_path;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use launch_path::{GSE_GAME_ROOT, resolve_launch_path, within_game_root};

use crate::api::limits::MAX_PROCESSES;
use crate::common::config::locate::Segment::{self, Index, Key};
use crate::common::config::{ConfigError, Problem};

/// One `ServerProcesses` entry, resolved.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct ProcessSpec {
    /// As written (GSE form, e.g. `/local/game/server`).
    pub launch_path: String,
    /// The executable on this host.
    pub program: PathBuf,
    /// `Parameters` as written.
    pub parameters: String,
    /// `Parameters` split like a shell does.
    pub args: Vec<String>,
    /// Processes of this entry on this host.
    pub concurrent_executions: u32,
}

/// The fleet's runtime configuration, validated.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct RuntimeConfiguration {
    /// The launch entries.
    pub server_processes: Vec<ProcessSpec>,
    /// Sessions that may be ACTIVATING at once on this host.
    pub max_concurrent_activations: u32,
    /// ACTIVATING longer than this raises GAME_SESSION_ACTIVATION_TIMEOUT.
    pub activation_timeout: Duration,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
/// A RuntimeConfiguration as written (Tencent's PascalCase names).
pub struct RawRuntime {
    /// `ServerProcesses`.
    pub server_processes: Vec<RawServerProcess>,
    #[serde(default = "default_max_activations")]
    /// `MaxConcurrentGameServerSessionActivations`.
    pub max_concurrent_game_server_session_activations: i64,
    #[serde(default = "default_activation_timeout")]
    /// `GameServerSessionActivationTimeoutSeconds`.
    pub game_server_session_activation_timeout_seconds: i64,
}

/// MaxConcurrentGameServerSessionActivations when not given: no limit.
pub fn default_max_activations() -> i64 {
    i64::from(i32::MAX)
}
/// GameServerSessionActivationTimeoutSeconds when not given: GSE's 600.
pub fn default_activation_timeout() -> i64 {
    600
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
/// One `ServerProcesses` entry as written.
pub struct RawServerProcess {
    /// `LaunchPath`.
    pub launch_path: String,
    #[serde(default)]
    /// `Parameters`.
    pub parameters: String,
    /// `ConcurrentExecutions`.
    pub concurrent_executions: i64,
}

/// Checks `raw` (under `runtime-configuration` of its file) against GSE's rules, calling
/// `problem` for each one broken, and returns what it means on this host, LaunchPaths resolved
/// against `game_root` (entries with a broken rule are left out).
pub fn check(
    raw: &RawRuntime,
    game_root: &Path,
    problem: &mut dyn FnMut(&[Segment], String),
) -> RuntimeConfiguration {
    const RC: Segment = Key("runtime-configuration");
    const SP: Segment = Key("ServerProcesses");
    if raw.server_processes.is_empty() {
        problem(&[RC, SP], "needs at least one entry".into());
    }
    let mut processes = Vec::new();
    let mut total: i64 = 0;
    for (i, p) in raw.server_processes.iter().enumerate() {
        let at = |k| [RC, SP, Index(i), Key(k)];
        if !(1..=i64::from(MAX_PROCESSES)).contains(&p.concurrent_executions) {
            problem(
                &at("ConcurrentExecutions"),
                format!(
                    "{} is out of range: each entry runs 1 to {MAX_PROCESSES} processes",
                    p.concurrent_executions
                ),
            );
        }
        total += p.concurrent_executions.max(0);
        let program = match resolve_launch_path(&p.launch_path, game_root) {
            Ok(program) => Some(program),
            Err(why) => {
                problem(&at("LaunchPath"), why);
                None
            }
        };
        if p.parameters.len() > 1024 {
            problem(
                &at("Parameters"),
                "is longer than GSE's 1024 characters".into(),
            );
        }
        let args = match shell_words::split(&p.parameters) {
            Ok(args) => Some(args),
            Err(e) => {
                problem(
                    &at("Parameters"),
                    format!("cannot be split into arguments: {e}"),
                );
                None
            }
        };
        if let (Some(program), Some(args)) = (program, args) {
            processes.push(ProcessSpec {
                launch_path: p.launch_path.clone(),
                program,
                parameters: p.parameters.clone(),
                args,
                concurrent_executions: p.concurrent_executions.clamp(0, 50) as u32,
            });
        }
    }
    if total > i64::from(MAX_PROCESSES) {
        problem(
            &[RC, SP],
            format!(
                "ConcurrentExecutions add up to {total}: GSE allows at most {MAX_PROCESSES} processes per host"
            ),
        );
    }
    let max_act = raw.max_concurrent_game_server_session_activations;
    if !(1..=i64::from(i32::MAX)).contains(&max_act) {
        problem(
            &[RC, Key("MaxConcurrentGameServerSessionActivations")],
            format!("{max_act} is out of range 1..=2147483647"),
        );
    }
    let timeout = raw.game_server_session_activation_timeout_seconds;
    if !(1..=600).contains(&timeout) {
        problem(
            &[RC, Key("GameServerSessionActivationTimeoutSeconds")],
            format!("{timeout} is out of range: GSE allows 1 to 600 seconds"),
        );
    }
    RuntimeConfiguration {
        server_processes: processes,
        max_concurrent_activations: max_act.clamp(1, i64::from(i32::MAX)) as u32,
        activation_timeout: Duration::from_secs(timeout.clamp(1, 600) as u64),
    }
}

/// Parses and checks a RuntimeConfiguration given on its own (Tencent's JSON, or YAML), as
/// UpdateRuntimeConfiguration carries it; LaunchPaths are resolved against `game_root`.
pub fn parse(text: &str, game_root: &Path) -> Result<RuntimeConfiguration, ConfigError> {
    let file = "RuntimeConfiguration";
    let raw: RawRuntime = serde_yaml::from_str(text).map_err(|e| ConfigError::yaml(file, &e))?;
    let mut problems = Vec::new();
    let runtime = check(&raw, game_root, &mut |path, message| {
        problems.push(Problem::at(text, path, message))
    });
    if problems.is_empty() {
        Ok(runtime)
    } else {
        Err(ConfigError::Invalid {
            file: file.to_string(),
            problems,
        })
    }
}
