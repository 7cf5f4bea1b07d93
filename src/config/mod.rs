//! `agent.yaml`: read, parse, validate.
//!
//! Three steps, as the house style asks: [`read`] does the I/O, [`parse`] turns text into a
//! [`Config`] and reports *every* semantic problem at once with its line. Agent settings are
//! kebab-case; `runtime-configuration` keeps Tencent's PascalCase names so the JSON of a GSE
//! `DescribeRuntimeConfiguration` pastes in.

mod bytes;
mod duration;
pub mod locate;
mod sections;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use bytes::ByteSize;
pub use duration::HumanDuration;
use locate::Segment::{self, Index, Key};

/// GSE's mount point for the unpacked build; LaunchPaths under it map to `game-root`.
pub const GSE_GAME_ROOT: &str = "/local/game";
/// GSE's limit on the sum of `ConcurrentExecutions` over all entries.
pub const MAX_PROCESSES: u32 = 50;

/// The embedded sample configuration used by `gse-agent run` without `--config`.
pub const SAMPLE_CONFIG: &str = include_str!("sample.yaml");

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The YAML is malformed or a value has the wrong type.
    #[error("{file}:{line}:{column}: {message}")]
    Parse {
        /// Config file name.
        file: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What serde said.
        message: String,
    },
    /// The YAML parsed but breaks one or more rules; every problem is listed.
    #[error("{} problem(s) in {file}:\n{}", problems.len(), ProblemList(file, problems))]
    Invalid {
        /// Config file name.
        file: String,
        /// Every problem found.
        problems: Vec<Problem>,
    },
}

/// One broken rule, with the line of the offending key when it could be found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line of the key, if found.
    pub line: Option<usize>,
    /// Dotted key path, e.g. `runtime-configuration.ServerProcesses[0].LaunchPath`.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

struct ProblemList<'a>(&'a str, &'a [Problem]);

impl fmt::Display for ProblemList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.1.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            match p.line {
                Some(line) => write!(f, "  {}:{}: {}: {}", self.0, line, p.key, p.message)?,
                None => write!(f, "  {}: {}: {}", self.0, p.key, p.message)?,
            }
        }
        Ok(())
    }
}

/// The file as written (serde's view). See [`Config`] for the meaning of each setting.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawConfig {
    fleet_id: String,
    #[serde(default = "default_instance_id")]
    instance_id: String,
    #[serde(default = "default_data_dir")]
    data_dir: PathBuf,
    #[serde(default)]
    game_root: Option<PathBuf>,
    #[serde(default)]
    build: Option<PathBuf>,
    #[serde(default)]
    run_as: Option<String>,
    #[serde(default)]
    package: PackagePolicy,
    #[serde(default)]
    upstream: Option<UpstreamConfig>,
    #[serde(default = "default_sdk_listen")]
    sdk_listen: SocketAddr,
    #[serde(default)]
    capi_listen: Option<SocketAddr>,
    #[serde(default)]
    health_check: HealthCheck,
    #[serde(default)]
    timeouts: Timeouts,
    #[serde(default)]
    protection: RawProtection,
    #[serde(default)]
    restart: RestartPolicy,
    #[serde(default)]
    logs: LogPolicy,
    #[serde(default)]
    environment: BTreeMap<String, String>,
    runtime_configuration: RawRuntime,
}

fn default_instance_id() -> String {
    "ins-local".into()
}
fn default_data_dir() -> PathBuf {
    PathBuf::from("./gse-data")
}
fn default_sdk_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 5758))
}

/// Health checking of ready processes (OnHealthCheck).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct HealthCheck {
    /// Time between two checks of one process (GSE: 60 s).
    pub interval: HumanDuration,
    /// How long one check may take before it counts as failed.
    pub timeout: HumanDuration,
    /// Consecutive failures (false, error or timeout) that make a process unhealthy (GSE: 3).
    pub failure_threshold: u32,
}

impl Default for HealthCheck {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(60).into(),
            timeout: Duration::from_secs(10).into(),
            failure_threshold: 3,
        }
    }
}

/// Deadlines of the process and player lifecycles.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct Timeouts {
    /// From launch to ProcessReady, else SERVER_PROCESS_PROCESS_READY_TIMEOUT.
    pub process_ready: HumanDuration,
    /// From ProcessEnding to exit, else SERVER_PROCESS_PROCESS_EXIT_TIMEOUT.
    pub process_exit: HumanDuration,
    /// A RESERVED player session not accepted within this becomes TIMEDOUT.
    pub player_reservation: HumanDuration,
    /// Between SIGTERM and SIGKILL to a process group when the agent stops a process.
    pub stop_grace: HumanDuration,
    /// On agent shutdown: how long processes get after OnProcessTerminate before they are stopped.
    pub shutdown: HumanDuration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            process_ready: Duration::from_secs(300).into(),
            process_exit: Duration::from_secs(30).into(),
            player_reservation: Duration::from_secs(60).into(),
            stop_grace: Duration::from_secs(10).into(),
            shutdown: Duration::from_secs(30).into(),
        }
    }
}

/// GSE's game server session protection policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
pub enum ProtectionPolicy {
    /// Killed after the no-protection grace (GSE: 5 minutes).
    NoProtection,
    /// Killed after `time-limit-minutes` (5–1440).
    TimeLimitProtection,
    /// Never killed while it hosts a game server session.
    FullProtection,
}

impl ProtectionPolicy {
    /// Parses Tencent's name.
    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::NoProtection,
            Self::TimeLimitProtection,
            Self::FullProtection,
        ]
        .into_iter()
        .find(|p| p.as_str() == s)
    }

    /// Tencent's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoProtection => "NoProtection",
            Self::TimeLimitProtection => "TimeLimitProtection",
            Self::FullProtection => "FullProtection",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
struct RawProtection {
    policy: ProtectionPolicy,
    time_limit_minutes: u32,
    no_protection_grace: HumanDuration,
}

impl Default for RawProtection {
    fn default() -> Self {
        Self {
            policy: ProtectionPolicy::TimeLimitProtection,
            time_limit_minutes: 60,
            no_protection_grace: Duration::from_secs(300).into(),
        }
    }
}

/// How long a process told to terminate (OnProcessTerminate) may keep running.
#[derive(Debug, Clone)]
pub struct Protection {
    /// The fleet's policy.
    pub policy: ProtectionPolicy,
    /// TimeLimitProtection's window.
    pub time_limit: Duration,
    /// NoProtection's window, also used for processes that host no session.
    pub no_protection_grace: Duration,
}

impl Protection {
    /// The time a terminating process gets, `None` for no deadline. A process without an active
    /// game server session has nothing to protect and gets the no-protection grace.
    pub fn grace(&self, hosts_session: bool) -> Option<Duration> {
        if !hosts_session {
            return Some(self.no_protection_grace);
        }
        match self.policy {
            ProtectionPolicy::NoProtection => Some(self.no_protection_grace),
            ProtectionPolicy::TimeLimitProtection => Some(self.time_limit),
            ProtectionPolicy::FullProtection => None,
        }
    }
}

/// Restart pacing and the crash-loop breaker.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct RestartPolicy {
    /// Delay before the second restart in a row; the first is immediate. Doubles per failure.
    pub initial_backoff: HumanDuration,
    /// The cap of the doubling.
    pub max_backoff: HumanDuration,
    /// A process that ran this long resets its slot's backoff.
    pub reset_after: HumanDuration,
    /// Crashes of one ServerProcesses entry within `crash-loop-window` that trip the breaker.
    pub crash_loop_max: u32,
    /// The breaker's window.
    pub crash_loop_window: HumanDuration,
    /// How long a tripped entry stays paused.
    pub crash_loop_cool_down: HumanDuration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        Self {
            initial_backoff: Duration::from_secs(1).into(),
            max_backoff: Duration::from_secs(60).into(),
            reset_after: Duration::from_secs(60).into(),
            crash_loop_max: 10,
            crash_loop_window: Duration::from_secs(60).into(),
            crash_loop_cool_down: Duration::from_secs(300).into(),
        }
    }
}

/// Limits and timeouts of build installation.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct PackagePolicy {
    /// Total bytes an archive may make the agent write.
    pub max_bytes: ByteSize,
    /// Entries an archive may hold.
    pub max_entries: u64,
    /// Bytes written per compressed byte allowed for entries above `ratio-min-bytes`.
    pub max_ratio: u64,
    /// Entries up to this size are not ratio-checked.
    pub ratio_min_bytes: ByteSize,
    /// Free space the target filesystem must keep during extraction.
    pub reserve_bytes: ByteSize,
    /// How long install.sh may run.
    pub install_timeout: HumanDuration,
}

impl Default for PackagePolicy {
    fn default() -> Self {
        Self {
            max_bytes: ByteSize(10 << 30),
            max_entries: 200_000,
            max_ratio: 1000,
            ratio_min_bytes: ByteSize(1 << 20),
            reserve_bytes: ByteSize(1 << 30),
            install_timeout: Duration::from_secs(600).into(),
        }
    }
}

impl PackagePolicy {
    /// The extraction limits.
    pub fn limits(&self) -> crate::package::Limits {
        crate::package::Limits {
            max_bytes: self.max_bytes.get(),
            max_entries: self.max_entries,
            max_ratio: self.max_ratio,
            ratio_min_bytes: self.ratio_min_bytes.get(),
            reserve_bytes: self.reserve_bytes.get(),
        }
    }
}

/// The control plane the agent relays events to and takes commands from.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct UpstreamConfig {
    /// `https://host:port` (or `http://` on a trusted network).
    pub endpoint: String,
    /// A file holding the bearer token (read at every connection, so it can be rotated).
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// PEM CA bundle that signs the control plane's certificate (default: the system roots).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate for mTLS.
    #[serde(default)]
    pub client_cert: Option<PathBuf>,
    /// PEM private key of the client certificate.
    #[serde(default)]
    pub client_key: Option<PathBuf>,
    /// How often instance status is sent.
    #[serde(default = "default_status_interval")]
    pub status_interval: HumanDuration,
    /// First reconnect delay (jittered, doubling).
    #[serde(default = "default_reconnect_initial")]
    pub reconnect_initial: HumanDuration,
    /// Reconnect delay cap.
    #[serde(default = "default_reconnect_max")]
    pub reconnect_max: HumanDuration,
    /// Unacknowledged events on disk before the UPSTREAM_OUTBOX_FULL alarm.
    #[serde(default = "default_outbox_max")]
    pub outbox_max_bytes: ByteSize,
}

fn default_status_interval() -> HumanDuration {
    Duration::from_secs(10).into()
}
fn default_reconnect_initial() -> HumanDuration {
    Duration::from_secs(1).into()
}
fn default_reconnect_max() -> HumanDuration {
    Duration::from_secs(60).into()
}
fn default_outbox_max() -> ByteSize {
    ByteSize(256 << 20)
}

/// Capture of each process's stdout and stderr.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct LogPolicy {
    /// A log file is rotated when it reaches this many bytes.
    pub max_file_bytes: u64,
    /// Rotated files kept per process (`.1` … `.N`).
    pub keep_files: u32,
    /// Lines of output kept in memory and attached to crash events.
    pub tail_lines: usize,
}

impl Default for LogPolicy {
    fn default() -> Self {
        Self {
            max_file_bytes: 10 * 1024 * 1024,
            keep_files: 3,
            tail_lines: 20,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
struct RawRuntime {
    server_processes: Vec<RawServerProcess>,
    #[serde(default = "default_max_activations")]
    max_concurrent_game_server_session_activations: i64,
    #[serde(default = "default_activation_timeout")]
    game_server_session_activation_timeout_seconds: i64,
}

fn default_max_activations() -> i64 {
    i64::from(i32::MAX)
}
fn default_activation_timeout() -> i64 {
    600
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
struct RawServerProcess {
    launch_path: String,
    #[serde(default)]
    parameters: String,
    concurrent_executions: i64,
}

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

/// The validated agent configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// `fleet-…`.
    pub fleet_id: String,
    /// This host's instance id.
    pub instance_id: String,
    /// Logs, state and builds.
    pub data_dir: PathBuf,
    /// GSE's `/local/game` on this host; the working directory of every game process.
    pub game_root: PathBuf,
    /// The build package (zip or directory) installed at start, if any.
    pub build: Option<PathBuf>,
    /// `user:group` games run as (overrides the package's gse.yaml).
    pub run_as: Option<String>,
    /// Build installation limits.
    pub package: PackagePolicy,
    /// The control plane, if any.
    pub upstream: Option<UpstreamConfig>,
    /// Where the GSE SDK service listens.
    pub sdk_listen: SocketAddr,
    /// Where the local control API listens; `None` turns it off.
    pub capi_listen: Option<SocketAddr>,
    /// Health checking.
    pub health_check: HealthCheck,
    /// Lifecycle deadlines.
    pub timeouts: Timeouts,
    /// Termination protection.
    pub protection: Protection,
    /// Restart pacing.
    pub restart: RestartPolicy,
    /// Output capture.
    pub logs: LogPolicy,
    /// Extra environment variables for every game process.
    pub environment: BTreeMap<String, String>,
    /// What to run.
    pub runtime: RuntimeConfiguration,
}

impl Config {
    /// The same configuration with other data and game roots (LaunchPaths re-resolved).
    pub fn relocated(mut self, data_dir: PathBuf, game_root: PathBuf) -> Result<Self, String> {
        for p in &mut self.runtime.server_processes {
            p.program = resolve_launch_path(&p.launch_path, &game_root)?;
        }
        self.data_dir = data_dir;
        self.game_root = game_root;
        Ok(self)
    }

    /// Sum of `ConcurrentExecutions`.
    pub fn total_processes(&self) -> u32 {
        self.runtime
            .server_processes
            .iter()
            .map(|p| p.concurrent_executions)
            .sum()
    }
}

/// Reads and parses a config file; relative paths in it are resolved against its directory.
pub fn read(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    parse(&text, &path.display().to_string(), base)
}

/// Parses and validates config text. `file` names it in errors; `base` anchors relative paths.
pub fn parse(text: &str, file: &str, base: &Path) -> Result<Config, ConfigError> {
    let raw: RawConfig = match serde_yaml::from_str(text) {
        Ok(raw) => raw,
        Err(e) => {
            // serde stops at the first error; check each top-level section on its own so that
            // every malformed one is reported.
            let problems = sections::problems(text);
            if problems.is_empty() {
                let (line, column) = e
                    .location()
                    .map(|l| (l.line(), l.column()))
                    .unwrap_or((1, 1));
                return Err(ConfigError::Parse {
                    file: file.to_string(),
                    line,
                    column,
                    message: sections::without_position(&e.to_string()),
                });
            }
            return Err(ConfigError::Invalid {
                file: file.to_string(),
                problems,
            });
        }
    };
    let mut v = Validator {
        text,
        problems: Vec::new(),
    };
    // Game processes run in the game root, so every path must be absolute.
    let base = std::path::absolute(base).unwrap_or_else(|_| base.to_path_buf());
    let config = v.validate(raw, &base);
    if v.problems.is_empty() {
        Ok(config)
    } else {
        Err(ConfigError::Invalid {
            file: file.to_string(),
            problems: v.problems,
        })
    }
}

struct Validator<'a> {
    text: &'a str,
    problems: Vec<Problem>,
}

impl Validator<'_> {
    fn problem(&mut self, path: &[Segment], message: impl Into<String>) {
        let key = path
            .iter()
            .map(|s| match s {
                Key(k) => format!(".{k}"),
                Index(i) => format!("[{i}]"),
            })
            .collect::<String>()
            .trim_start_matches('.')
            .to_string();
        self.problems.push(Problem {
            line: locate::locate(self.text, path),
            key,
            message: message.into(),
        });
    }

    fn positive(&mut self, path: &[Segment], d: HumanDuration) {
        if d.get().is_zero() {
            self.problem(path, "must be longer than zero");
        }
    }

    fn validate(&mut self, raw: RawConfig, base: &Path) -> Config {
        let fleet_ok = raw
            .fleet_id
            .strip_prefix("fleet-")
            .is_some_and(|rest| !rest.is_empty() && !rest.contains(char::is_whitespace));
        if !fleet_ok {
            self.problem(
                &[Key("fleet-id")],
                format!(
                    "{:?} is not a fleet id: it must match ^fleet-\\S+",
                    raw.fleet_id
                ),
            );
        }
        if raw.instance_id.is_empty() || raw.instance_id.contains(char::is_whitespace) {
            self.problem(
                &[Key("instance-id")],
                "must be non-empty without whitespace",
            );
        }
        let hc = &raw.health_check;
        self.positive(&[Key("health-check"), Key("interval")], hc.interval);
        self.positive(&[Key("health-check"), Key("timeout")], hc.timeout);
        if hc.failure_threshold > 100 {
            self.problem(
                &[Key("health-check"), Key("failure-threshold")],
                "must be at most 100",
            );
        }
        if hc.failure_threshold == 0 {
            self.problem(
                &[Key("health-check"), Key("failure-threshold")],
                "must be at least 1",
            );
        }
        let t = &raw.timeouts;
        for (key, d) in [
            ("process-ready", t.process_ready),
            ("process-exit", t.process_exit),
            ("player-reservation", t.player_reservation),
        ] {
            self.positive(&[Key("timeouts"), Key(key)], d);
        }
        if !(5..=1440).contains(&raw.protection.time_limit_minutes) {
            self.problem(
                &[Key("protection"), Key("time-limit-minutes")],
                format!(
                    "{} is out of range: GSE allows 5 to 1440 minutes",
                    raw.protection.time_limit_minutes
                ),
            );
        }
        let r = &raw.restart;
        if r.max_backoff < r.initial_backoff {
            self.problem(
                &[Key("restart"), Key("max-backoff")],
                format!(
                    "{} is shorter than initial-backoff {}",
                    r.max_backoff, r.initial_backoff
                ),
            );
        }
        if r.crash_loop_max == 0 {
            self.problem(
                &[Key("restart"), Key("crash-loop-max")],
                "must be at least 1",
            );
        }
        if raw.logs.max_file_bytes < 4096 {
            self.problem(
                &[Key("logs"), Key("max-file-bytes")],
                "must be at least 4096",
            );
        }
        if raw.logs.keep_files > 100 {
            self.problem(&[Key("logs"), Key("keep-files")], "must be at most 100");
        }
        if raw.logs.tail_lines > 1000 {
            self.problem(&[Key("logs"), Key("tail-lines")], "must be at most 1000");
        }
        for name in raw.environment.keys() {
            if name.is_empty() || name.contains(['=', '\0']) || name.starts_with("GSE_") {
                self.problem(
                    &[Key("environment")],
                    format!(
                        "variable {name:?} is not allowed: names must be non-empty, without '=', and GSE_* is set by the agent"
                    ),
                );
            }
        }
        let abs = |p: &Path| std::path::absolute(base.join(p)).unwrap_or_else(|_| base.join(p));
        let data_dir = abs(&raw.data_dir);
        let game_root = raw
            .game_root
            .as_ref()
            .map(|g| abs(g))
            .unwrap_or_else(|| data_dir.join("game"));
        let runtime = self.runtime(&raw.runtime_configuration, &game_root);
        let build = raw.build.as_ref().map(|b| abs(b));
        if let Some(spec) = &raw.run_as
            && let Err(e) = crate::package::account::parse_user_group(spec)
        {
            self.problem(&[Key("run-as")], e.to_string());
        }
        let p = &raw.package;
        if p.max_entries == 0 || p.max_ratio == 0 || p.max_bytes.get() == 0 {
            self.problem(
                &[Key("package")],
                "max-bytes, max-entries and max-ratio must be above zero",
            );
        }
        self.positive(&[Key("package"), Key("install-timeout")], p.install_timeout);
        if let Some(u) = &raw.upstream {
            if !(u.endpoint.starts_with("https://") || u.endpoint.starts_with("http://")) {
                self.problem(
                    &[Key("upstream"), Key("endpoint")],
                    format!("{:?} must start with https:// (or http://)", u.endpoint),
                );
            }
            if u.client_cert.is_some() != u.client_key.is_some() {
                self.problem(&[Key("upstream")], "client-cert and client-key go together");
            }
            self.positive(
                &[Key("upstream"), Key("status-interval")],
                u.status_interval,
            );
            self.positive(
                &[Key("upstream"), Key("reconnect-initial")],
                u.reconnect_initial,
            );
            if u.reconnect_max < u.reconnect_initial {
                self.problem(
                    &[Key("upstream"), Key("reconnect-max")],
                    "is shorter than reconnect-initial",
                );
            }
        }
        Config {
            fleet_id: raw.fleet_id,
            instance_id: raw.instance_id,
            data_dir,
            game_root,
            build,
            run_as: raw.run_as,
            package: raw.package,
            upstream: raw.upstream.map(|mut u| {
                for p in [
                    &mut u.token_file,
                    &mut u.ca_file,
                    &mut u.client_cert,
                    &mut u.client_key,
                ]
                .into_iter()
                .flatten()
                {
                    *p = abs(p);
                }
                u
            }),
            sdk_listen: raw.sdk_listen,
            capi_listen: raw.capi_listen,
            health_check: raw.health_check,
            timeouts: raw.timeouts,
            protection: Protection {
                policy: raw.protection.policy,
                time_limit: Duration::from_secs(u64::from(raw.protection.time_limit_minutes) * 60),
                no_protection_grace: raw.protection.no_protection_grace.get(),
            },
            restart: raw.restart,
            logs: raw.logs,
            environment: raw.environment,
            runtime,
        }
    }

    fn runtime(&mut self, raw: &RawRuntime, game_root: &Path) -> RuntimeConfiguration {
        const RC: Segment = Key("runtime-configuration");
        const SP: Segment = Key("ServerProcesses");
        if raw.server_processes.is_empty() {
            self.problem(&[RC, SP], "needs at least one entry");
        }
        let mut processes = Vec::new();
        let mut total: i64 = 0;
        for (i, p) in raw.server_processes.iter().enumerate() {
            let at = |k| [RC, SP, Index(i), Key(k)];
            if !(1..=i64::from(MAX_PROCESSES)).contains(&p.concurrent_executions) {
                self.problem(
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
                    self.problem(&at("LaunchPath"), why);
                    None
                }
            };
            if p.parameters.len() > 1024 {
                self.problem(&at("Parameters"), "is longer than GSE's 1024 characters");
            }
            let args = match shell_words::split(&p.parameters) {
                Ok(args) => Some(args),
                Err(e) => {
                    self.problem(
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
            self.problem(
                &[RC, SP],
                format!("ConcurrentExecutions add up to {total}: GSE allows at most {MAX_PROCESSES} processes per host"),
            );
        }
        let max_act = raw.max_concurrent_game_server_session_activations;
        if !(1..=i64::from(i32::MAX)).contains(&max_act) {
            self.problem(
                &[RC, Key("MaxConcurrentGameServerSessionActivations")],
                format!("{max_act} is out of range 1..=2147483647"),
            );
        }
        let timeout = raw.game_server_session_activation_timeout_seconds;
        if !(1..=600).contains(&timeout) {
            self.problem(
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
}

/// Parses and validates a RuntimeConfiguration given on its own (Tencent's JSON, or YAML), as
/// UpdateRuntimeConfiguration carries it; LaunchPaths are resolved against `game_root`.
pub fn parse_runtime(text: &str, game_root: &Path) -> Result<RuntimeConfiguration, ConfigError> {
    let file = "RuntimeConfiguration";
    let raw: RawRuntime = serde_yaml::from_str(text).map_err(|e| {
        let (line, column) = e
            .location()
            .map(|l| (l.line(), l.column()))
            .unwrap_or((1, 1));
        ConfigError::Parse {
            file: file.to_string(),
            line,
            column,
            message: sections::without_position(&e.to_string()),
        }
    })?;
    let mut v = Validator {
        text,
        problems: Vec::new(),
    };
    let runtime = v.runtime(&raw, game_root);
    if v.problems.is_empty() {
        Ok(runtime)
    } else {
        Err(ConfigError::Invalid {
            file: file.to_string(),
            problems: v.problems,
        })
    }
}

/// Maps a GSE LaunchPath to a path on this host: `/local/game/x` → `<game-root>/x`; a path
/// already inside the game root is kept; anything else, and any `..`, is refused.
pub fn resolve_launch_path(launch_path: &str, game_root: &Path) -> Result<PathBuf, String> {
    if launch_path.is_empty() || launch_path.len() > 1024 {
        return Err("must be 1 to 1024 characters".into());
    }
    let path = Path::new(launch_path);
    if path.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(format!("{launch_path:?} contains '..'"));
    }
    if let Ok(rest) = path.strip_prefix(GSE_GAME_ROOT) {
        if rest.as_os_str().is_empty() {
            return Err(format!(
                "{launch_path:?} names the game root, not a file in it"
            ));
        }
        return Ok(game_root.join(rest));
    }
    if path.is_absolute() && path.starts_with(game_root) {
        return Ok(path.to_path_buf());
    }
    Err(format!(
        "{launch_path:?} is outside the game root: LaunchPath must start with {GSE_GAME_ROOT}/ (mapped to {})",
        game_root.display()
    ))
}

#[cfg(test)]
mod tests;
