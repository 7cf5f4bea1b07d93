//! `gse-agent validate BUILD`: run the real agent's steps on a build in a fresh temporary root
//! and say whether it comes up, and why not.
//!
//! unpack → install.sh → run-as → launch-path checks → launch → ProcessReady → health checks →
//! a game server session activated → a player session reserved → OnProcessTerminate answered by
//! ProcessEnding and exit → the rest stopped cleanly. Each step has a deadline; the first
//! failure ends the run. The temporary root and every process are cleaned up on every path,
//! Ctrl-C included.

mod game;
mod launch_path;
mod report;
mod run_config;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::agent::config::{Config, ConfigError};
use crate::agent::daemon::{Agent, AgentError};
use crate::agent::event::{Event, EventCode};
use crate::agent::package::local_refs::{self, Outlook};
use crate::agent::package::{self, Accounts, PackageError, RunAs};
use crate::agent::process::local_game;

pub use report::{Report, Status, Step};
pub use run_config::config_for;
use run_config::timings_note;

/// Exit code: the build failed validation.
pub const EXIT_FAILED: u8 = 1;
/// Exit code: validate itself could not run (bad arguments or config, no temp dir, no port).
pub const EXIT_CANNOT_RUN: u8 = 2;
/// Exit code: interrupted.
pub const EXIT_INTERRUPTED: u8 = 130;

/// Health checks every process must pass.
const HEALTH_CHECKS: u64 = 2;

/// What to validate.
#[derive(Debug, Clone)]
pub struct Options {
    /// The zip or directory.
    pub build: PathBuf,
    /// An agent.yaml whose runtime configuration and timings apply.
    pub config: Option<PathBuf>,
    /// Without a config: the LaunchPath to run.
    pub launch_path: Option<String>,
    /// Without a config: its Parameters.
    pub parameters: String,
    /// Without a config: how many processes.
    pub concurrent_executions: u32,
    /// With a config: use its health-check, timeouts and protection instead of the short
    /// validation timings (a production config's 60 s health interval makes a run minutes long).
    pub config_timings: bool,
    /// Where to copy install.sh's whole log when it fails (the temporary root it was written in
    /// is removed); `None`: only its last lines are reported.
    pub keep_install_log: Option<PathBuf>,
}

/// Why validate could not run at all (as opposed to the build failing).
#[derive(Debug, thiserror::Error)]
pub enum ValidateError {
    /// Neither `--config` nor `--launch-path` says what to launch.
    #[error(
        "validate needs the launch configuration: --config FILE (with runtime-configuration) or --launch-path /local/game/…"
    )]
    NoLaunchConfig,
    /// The configuration is bad.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The build path does not exist.
    #[error("the build {0} does not exist")]
    NoBuild(PathBuf),
    /// The temporary root could not be made.
    #[error("cannot create a temporary root: {0}")]
    TempDir(#[source] std::io::Error),
    /// The agent could not start (e.g. no port).
    #[error("cannot start the agent: {0}")]
    Agent(#[from] AgentError),
    /// The relocated LaunchPath is invalid.
    #[error("{0}")]
    LaunchPath(String),
}

/// Live progress on a terminal.
pub trait Ui {
    /// A step begins.
    fn begin(&mut self, name: &'static str);
    /// A step ended.
    fn end(&mut self, step: &Step);
}

/// The steps, in order.
pub const STEPS: &[&str] = &[
    "unpack",
    "install",
    "run-as",
    "launch-paths",
    "launch",
    "process-ready",
    "health-checks",
    "game-session",
    "player-session",
    "terminate",
    "stop",
];

struct Run<'a> {
    steps: Vec<Step>,
    ui: &'a mut dyn Ui,
    started: Instant,
    interrupted: CancellationToken,
    was_interrupted: bool,
    /// Said below the table.
    notes: Vec<String>,
    /// What the build's `/local/game` references mean here (once unpacked).
    local_game: Option<Outlook>,
}

/// A step's failure: a sentence, the event that caused it (if any), and output lines (of
/// install.sh, when no event carries them).
struct Failure {
    detail: String,
    event: Option<Box<Event>>,
    tail: Vec<String>,
}

impl From<String> for Failure {
    fn from(detail: String) -> Self {
        Self {
            detail,
            event: None,
            tail: Vec::new(),
        }
    }
}

impl Failure {
    fn by(detail: impl Into<String>, event: &Event) -> Self {
        Self {
            detail: detail.into(),
            event: Some(Box::new(event.clone())),
            tail: Vec::new(),
        }
    }
}

impl Run<'_> {
    fn record(
        &mut self,
        name: &'static str,
        t0: Instant,
        r: Result<(Status, String), Failure>,
    ) -> bool {
        let ms = t0.elapsed().as_millis() as u64;
        let step = match r {
            Ok((status, detail)) => Step::new(name, status, ms, detail),
            Err(f) => {
                let mut step = Step::failed(name, ms, f.detail, f.event.as_deref());
                if step.output_tail.is_empty() {
                    step.output_tail = f.tail;
                }
                step
            }
        };
        self.ui.end(&step);
        let ok = step.status != Status::Failed;
        self.steps.push(step);
        ok
    }

    fn report(mut self, build: &Path) -> Report {
        for name in STEPS.iter().skip(self.steps.len()) {
            self.steps.push(Step::new(name, Status::NotRun, 0, ""));
        }
        Report {
            build: build.display().to_string(),
            notes: std::mem::take(&mut self.notes),
            local_game: self.local_game.take(),
            passed: self.steps.iter().all(|s| s.status != Status::Failed) && !self.was_interrupted,
            interrupted: self.was_interrupted,
            duration_millis: self.started.elapsed().as_millis() as u64,
            steps: self.steps,
        }
    }
}

/// Validates a build. `Err` only when validate could not run; a failing build is a report with
/// `passed: false`.
pub async fn validate(
    opts: &Options,
    accounts: &(dyn Accounts + Sync),
    interrupted: CancellationToken,
    ui: &mut dyn Ui,
) -> Result<Report, ValidateError> {
    if !opts.build.exists() {
        return Err(ValidateError::NoBuild(opts.build.clone()));
    }
    let root = tempfile::Builder::new()
        .prefix("gse-validate-")
        .tempdir()
        .map_err(ValidateError::TempDir)?;
    let cfg = config_for(opts, root.path())?;
    let mut run = Run {
        steps: Vec::new(),
        ui,
        started: Instant::now(),
        interrupted,
        was_interrupted: false,
        notes: vec![timings_note(opts, &cfg)],
        local_game: None,
    };
    let plan = crate::agent::package::Plan::for_config(&cfg, opts.build.clone());

    // unpack
    run.ui.begin("unpack");
    let t0 = Instant::now();
    // Extraction runs on blocking threads and is bounded by the limits: it is let finish
    // before the root is removed, even after Ctrl-C.
    let unpacked = package::unpack(&plan).await;
    if run.interrupted.is_cancelled() {
        run.was_interrupted = true;
        run.record("unpack", t0, Err(Failure::from("interrupted".to_string())));
        package::remove_tree(root.path());
        return Ok(run.report(&opts.build));
    }
    let unpacked = match unpacked {
        Ok(u) => {
            let d = format!(
                "{} entries, {:.1} MiB",
                u.stats.entries,
                u.stats.bytes as f64 / 1048576.0
            );
            run.record("unpack", t0, Ok((Status::Passed, d)));
            // Read before install.sh runs: a studio learns of them also when it fails.
            let found = local_refs::scan(&u.dir, &cfg.runtime.server_processes, &cfg.game_root);
            run.local_game = Some(Outlook::new(found, local_game::support(), &cfg.game_root));
            u
        }
        Err(e) => {
            run.record("unpack", t0, Err(Failure::from(e.to_string())));
            return Ok(run.report(&opts.build));
        }
    };

    // install.sh
    run.ui.begin("install");
    let t0 = Instant::now();
    let script = tokio::select! {
        r = package::install_script(&plan, &unpacked) => r,
        () = run.interrupted.cancelled() => {
            // Dropping the script's future kills its process group.
            run.was_interrupted = true;
            run.record("install", t0, Err(Failure::from("interrupted".to_string())));
            package::remove_tree(root.path());
            return Ok(run.report(&opts.build));
        }
    };
    let r = match script {
        Ok(Some(script)) => Ok((
            Status::Passed,
            script.note.unwrap_or_else(|| "install.sh succeeded".into()),
        )),
        Ok(None) => Ok((Status::Skipped, "no install.sh in the package".into())),
        Err(e) => Err(install_failure(
            e,
            opts.keep_install_log.as_deref(),
            &mut run.notes,
        )),
    };
    if !run.record("install", t0, r) {
        return Ok(run.report(&opts.build));
    }

    // run-as
    run.ui.begin("run-as");
    let t0 = Instant::now();
    let (r, run_as) = run_as_step(&plan, &unpacked, accounts);
    if !run.record("run-as", t0, r) {
        return Ok(run.report(&opts.build));
    }
    if let Err(e) = package::activate(&plan, &unpacked) {
        run.ui.begin("launch-paths");
        run.record(
            "launch-paths",
            Instant::now(),
            Err(Failure::from(e.to_string())),
        );
        return Ok(run.report(&opts.build));
    }

    // launch paths
    run.ui.begin("launch-paths");
    let t0 = Instant::now();
    let r = launch_paths_step(&cfg);
    if !run.record("launch-paths", t0, r) {
        return Ok(run.report(&opts.build));
    }

    run_the_game(&mut run, &cfg, run_as).await?;
    // Read-only directories from the build would make TempDir's own removal fail silently.
    package::remove_tree(root.path());
    drop(root);
    Ok(run.report(&opts.build))
}

/// The real agent, on the temporary root (the build was installed step by step before), runs
/// the game's steps; then nothing it started is left.
async fn run_the_game(
    run: &mut Run<'_>,
    cfg: &Config,
    run_as: Option<RunAs>,
) -> Result<(), ValidateError> {
    let agent = Agent::build(cfg.clone(), run_as).await?;
    let mut events = agent.bus().subscribe();
    let stops = crate::agent::fleet::actor::Stops::default();
    let (shutdown, force) = (stops.shutdown.clone(), stops.force.clone());
    let running = agent.start(stops);
    let fleet = running.fleet.clone();
    let outcome = game::drive(run, cfg, &fleet, &mut events, &shutdown).await;
    drop(fleet);
    // Whatever happened, nothing outlives validate: stop gracefully if the run got that far,
    // else at once.
    if !shutdown.is_cancelled() || outcome.is_err() {
        force.cancel();
        shutdown.cancel();
    }
    let _ = tokio::time::timeout(Duration::from_secs(60), running.wait()).await;
    Ok(())
}

/// The run-as step: who the games will run as (a gse.yaml `User` is checked only as root).
fn run_as_step(
    plan: &package::Plan,
    unpacked: &package::Unpacked,
    accounts: &(dyn Accounts + Sync),
) -> (Result<(Status, String), Failure>, Option<RunAs>) {
    match package::run_as(plan, unpacked, accounts) {
        Ok(Some(r)) => (
            Ok((
                Status::Passed,
                format!("games run as {}:{}", r.user, r.group),
            )),
            Some(r),
        ),
        Ok(None) => (
            Ok((
                Status::Skipped,
                "no gse.yaml User; games run as the agent's user".into(),
            )),
            None,
        ),
        Err(PackageError::Account(e @ package::AccountError::NotRoot { .. })) => (
            Ok((
                Status::Skipped,
                format!("{e}; run validate as root to check it"),
            )),
            None,
        ),
        Err(e) => (Err(Failure::from(e.to_string())), None),
    }
}

/// The launch-paths step: each LaunchPath as the game will find it.
fn launch_paths_step(cfg: &Config) -> Result<(Status, String), Failure> {
    let mut checked = Vec::new();
    let mut bad = None;
    for spec in &cfg.runtime.server_processes {
        // As the game will find it (see `process::launch`).
        let program = if local_game::will_confine(Some(&cfg.game_root)) {
            local_game::seen_at(&spec.program, &cfg.game_root)
        } else {
            spec.program.clone()
        };
        match launch_path::check(&program) {
            Ok(what) => checked.push(format!("{}: {what}", spec.launch_path)),
            Err(why) => {
                bad = Some(format!("{}: {why}", spec.launch_path));
                break;
            }
        }
    }
    match bad {
        None => Ok((Status::Passed, checked.join("; "))),
        Some(why) => Err(Failure::by(
            why,
            &Event::new(EventCode::ServerProcessInvalidPath, ""),
        )),
    }
}

/// install.sh failed: what it did, its last lines, and its whole log copied to `keep` (the
/// temporary root it was written in is about to go).
fn install_failure(e: PackageError, keep: Option<&Path>, notes: &mut Vec<String>) -> Failure {
    use crate::agent::package::ScriptError;
    let (detail, log, tail) = match &e {
        PackageError::Install(ScriptError::Failed { status, log, tail }) => (
            format!("install.sh failed ({status})"),
            Some(log),
            tail.as_str(),
        ),
        PackageError::Install(ScriptError::Timeout { timeout, log, tail }) => (
            format!(
                "install.sh did not finish within {} (package.install-timeout) and was killed",
                humantime::format_duration(*timeout)
            ),
            Some(log),
            tail.as_str(),
        ),
        _ => (e.to_string(), None, ""),
    };
    if let (Some(log), Some(keep)) = (log, keep) {
        match std::fs::copy(log, keep) {
            Ok(_) => notes.push(format!("install.sh's whole log: {}", keep.display())),
            Err(e) => notes.push(format!(
                "install.sh's log could not be kept at {}: {e}",
                keep.display()
            )),
        }
    } else if log.is_some() {
        notes.push(
            "only the last lines of install.sh's output are shown; --json REPORT keeps its whole log next to the report"
                .into(),
        );
    }
    Failure {
        tail: tail.lines().map(str::to_string).collect(),
        ..Failure::from(detail)
    }
}
