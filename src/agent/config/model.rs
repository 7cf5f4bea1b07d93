//! The validated configuration: what the rest of the agent reads.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::*;

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

/// Bounds on the connections clients may hold open to the SDK and the control API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct ConnectionLimits {
    /// Live SDK connections at most (lowered to fit the open-files limit).
    pub sdk_max: usize,
    /// Live control API connections at most (lowered to fit the open-files limit).
    pub capi_max: usize,
    /// A new connection must send its first bytes (and a control API request its headers)
    /// within this.
    pub header_timeout: HumanDuration,
    /// A control API connection that sends nothing for this long is closed.
    pub idle_timeout: HumanDuration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        // The control API's are the shared door's.
        let api = crate::api::server::ConnectionBounds::default();
        Self {
            sdk_max: 4096,
            capi_max: api.max_connections,
            header_timeout: api.header_timeout.into(),
            idle_timeout: api.idle_timeout.into(),
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
    /// Failures within `crash-loop-window` of the slots of one ServerProcesses entry that
    /// failed at least twice in it that trip the breaker (a slot's single failure never counts).
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
            max_ratio: 100,
            ratio_min_bytes: ByteSize(1 << 20),
            reserve_bytes: ByteSize(1 << 30),
            install_timeout: Duration::from_secs(600).into(),
        }
    }
}

impl PackagePolicy {
    /// The extraction limits.
    pub fn limits(&self) -> crate::agent::package::Limits {
        crate::agent::package::Limits {
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
    /// `https://host:port` (or `http://` on a trusted network), one or several: the relay
    /// dials them in order and moves to the next when a connection fails or is lost (replicas
    /// of one control plane). Written `endpoint:` as one string or a list.
    #[serde(rename = "endpoint", deserialize_with = "one_or_many")]
    pub endpoints: Vec<String>,
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
    /// A connection (TCP, TLS handshake, HTTP/2) that is not up within this is given up and
    /// retried with the backoff.
    #[serde(default = "default_upstream_timeout")]
    pub connect_timeout: HumanDuration,
    /// The control plane must answer the Relay call (response headers) within this.
    #[serde(default = "default_upstream_timeout")]
    pub response_timeout: HumanDuration,
}

/// `endpoint: URL` or `endpoint: [URL, ...]`.
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    struct OneOrMany;
    impl<'de> serde::de::Visitor<'de> for OneOrMany {
        type Value = Vec<String>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an endpoint URL or a list of endpoint URLs")
        }

        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(vec![v.to_string()])
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(url) = seq.next_element::<String>()? {
                out.push(url);
            }
            Ok(out)
        }
    }
    d.deserialize_any(OneOrMany)
}

fn default_upstream_timeout() -> HumanDuration {
    Duration::from_secs(10).into()
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
    /// A log file is rotated when it reaches this size (bytes, or `10MiB`, `10MB`, … as
    /// every size in the config).
    pub max_file_bytes: ByteSize,
    /// Rotated files kept per process (`.1` … `.N`).
    pub keep_files: u32,
    /// Lines of output kept in memory and attached to crash events.
    pub tail_lines: usize,
}

impl Default for LogPolicy {
    fn default() -> Self {
        Self {
            max_file_bytes: ByteSize(10 * 1024 * 1024),
            keep_files: 3,
            tail_lines: 20,
        }
    }
}

/// Game logs kept when a process ends (`log-archives`): what it named in logPathsToUpload and
/// the agent's capture of its output, one zip per launch in `data-dir/log-archives`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct ArchivePolicy {
    /// Bytes of files one archive holds (before compression): a file past it keeps its end and
    /// the ones after it are skipped, each with the reason in the archive's `MANIFEST.json`.
    pub max_bytes: ByteSize,
    /// Files one archive holds; the rest are skipped with the reason.
    pub max_entries: usize,
    /// Bytes every archive together may take on disk: the oldest are removed first.
    pub max_total_bytes: ByteSize,
    /// Archives older than this are removed.
    pub max_age: HumanDuration,
    /// How long a log link (GetGameServerSessionLogUrl, …) stays valid.
    pub url_expiry: HumanDuration,
    /// The scheme, host and port log links start with (e.g. `https://gse.internal:8443` for a
    /// TLS proxy in front of the control API); `None`: `http://` and the `Host` the request
    /// was sent to.
    pub url_base: Option<String>,
}

impl Default for ArchivePolicy {
    fn default() -> Self {
        Self {
            max_bytes: ByteSize(100 << 20),
            max_entries: 10_000,
            max_total_bytes: ByteSize(2 << 30),
            max_age: Duration::from_secs(7 * 24 * 3600).into(),
            url_expiry: Duration::from_secs(3600).into(),
            url_base: None,
        }
    }
}

/// What sessions say in `IpAddress` when `public-ip` is not set.
pub const DEFAULT_CLIENT_IP: &str = "127.0.0.1";

/// The validated agent configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// `fleet-…`.
    pub fleet_id: String,
    /// This host's instance id.
    pub instance_id: String,
    /// The host's region (`local` unless set): the region part of the ARNs of this host's
    /// resources, and what a control plane places by.
    pub region: String,
    /// The address game clients connect to, as sessions report it in `IpAddress`; `None`: the
    /// agent was not told (sessions say 127.0.0.1).
    pub public_ip: Option<IpAddr>,
    /// The DNS name of that address, as sessions report it in `DnsName`; `None`: empty.
    pub dns_name: Option<String>,
    /// Logs, state and builds.
    pub data_dir: PathBuf,
    /// GSE's `/local/game` on this host; the working directory of every game process.
    pub game_root: PathBuf,
    /// The build package (zip or directory) installed at start, if any.
    pub build: Option<PathBuf>,
    /// `user:group` games run as, or `root` (overrides the package's gse.yaml; unset, an agent
    /// running as root runs them as [`crate::agent::package::account::DEFAULT_RUN_AS`]).
    pub run_as: Option<String>,
    /// Build installation limits.
    pub package: PackagePolicy,
    /// The control plane, if any.
    pub upstream: Option<UpstreamConfig>,
    /// Where the GSE SDK service listens.
    pub sdk_listen: SocketAddr,
    /// Whether an SDK call must come from the process its `pid` metadata names (or a member
    /// of that process's group), as the kernel says who holds the connection.
    pub sdk_verify_callers: bool,
    /// Where the local control API listens; `None` turns it off.
    pub capi_listen: Option<SocketAddr>,
    /// `Host` header values the control API accepts besides its own address (e.g. the name a
    /// reverse proxy forwards), lowercase.
    pub capi_allowed_hosts: Vec<String>,
    /// The Tencent Cloud API keys (`SecretId SecretKey` lines): when set, every control API
    /// request must be signed with one (TC3-HMAC-SHA256).
    pub capi_keys_file: Option<PathBuf>,
    /// Where `/metrics`, `/healthz` and `/readyz` are served; `None` turns them off.
    pub metrics_listen: Option<SocketAddr>,
    /// A file holding one bearer token: when set, `/metrics` answers only requests with
    /// `Authorization: Bearer <token>` (and `metrics-listen` may be a non-loopback address).
    pub metrics_token_file: Option<PathBuf>,
    /// Bounds on client connections.
    pub connections: ConnectionLimits,
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
    /// Game logs archived when a process ends.
    pub log_archives: ArchivePolicy,
    /// Extra environment variables for every game process.
    pub environment: BTreeMap<String, String>,
    /// Crash rehearsal may inject faults into the live fleet (`chaos: enabled`; off by
    /// default, and never for a host that serves players).
    pub chaos: bool,
    /// What to run.
    pub runtime: RuntimeConfiguration,
}

impl Config {
    /// The variables of [`Config::game_env`] that name this agent's games (and, inherited,
    /// their descendants): how a restarted agent recognises them on the host.
    pub fn owner_tag(&self) -> Vec<(&'static str, String)> {
        const OWNER: [&str; 3] = ["GSE_FLEET_ID", "GSE_INSTANCE_ID", "GSE_GAME_ROOT"];
        self.game_env(self.sdk_listen)
            .into_iter()
            .filter_map(|(k, v)| Some((*OWNER.iter().find(|o| **o == k)?, v)))
            .collect()
    }

    /// The environment every game process gets (documented in the README); install.sh gets
    /// it too, with the configured SDK address.
    pub fn game_env(&self, sdk_addr: SocketAddr) -> Vec<(String, String)> {
        let mut env = vec![
            (
                "PATH".to_string(),
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
            ),
            ("HOME".into(), self.game_root.display().to_string()),
            ("LANG".into(), "C.UTF-8".into()),
            ("GSE_SDK_ADDRESS".into(), sdk_addr.to_string()),
            ("GSE_FLEET_ID".into(), self.fleet_id.clone()),
            ("GSE_INSTANCE_ID".into(), self.instance_id.clone()),
            ("GSE_GAME_ROOT".into(), self.game_root.display().to_string()),
        ];
        for (k, v) in &self.environment {
            env.retain(|(name, _)| name != k);
            env.push((k.clone(), v.clone()));
        }
        env
    }

    /// The same configuration with other data and game roots (LaunchPaths re-resolved).
    pub fn relocated(mut self, data_dir: PathBuf, game_root: PathBuf) -> Result<Self, String> {
        for p in &mut self.runtime.server_processes {
            p.program = resolve_launch_path(&p.launch_path, &game_root)?;
        }
        self.data_dir = data_dir;
        self.game_root = game_root;
        Ok(self)
    }

    /// The address sessions and player sessions report in `IpAddress`: `public-ip`, else
    /// 127.0.0.1.
    pub fn client_ip(&self) -> String {
        self.public_ip
            .map(|ip| ip.to_string())
            .unwrap_or_else(|| DEFAULT_CLIENT_IP.to_string())
    }

    /// The name sessions and player sessions report in `DnsName`: `dns-name`, else empty.
    pub fn client_dns_name(&self) -> &str {
        self.dns_name.as_deref().unwrap_or("")
    }

    /// The Tencent resource name of this host's `resource` (e.g. `fleet/fleet-1`), in its
    /// region: `qcs::gse:<region>:uin/0:<resource>`.
    pub fn arn(&self, resource: &str) -> String {
        format!("qcs::gse:{}:uin/0:{resource}", self.region)
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
