//! The file as written: serde's view, before validation.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::*;

/// The file as written (serde's view). See [`Config`] for the meaning of each setting.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawConfig {
    pub(super) fleet_id: String,
    #[serde(default = "default_instance_id")]
    pub(super) instance_id: String,
    #[serde(default = "default_region")]
    pub(super) region: String,
    #[serde(default)]
    pub(super) public_ip: Option<IpAddr>,
    #[serde(default)]
    pub(super) dns_name: Option<String>,
    #[serde(default = "default_data_dir")]
    pub(super) data_dir: PathBuf,
    #[serde(default)]
    pub(super) game_root: Option<PathBuf>,
    #[serde(default)]
    pub(super) build: Option<PathBuf>,
    #[serde(default)]
    pub(super) run_as: Option<String>,
    #[serde(default)]
    pub(super) package: PackagePolicy,
    #[serde(default)]
    pub(super) upstream: Option<UpstreamConfig>,
    #[serde(default = "default_sdk_listen")]
    pub(super) sdk_listen: SocketAddr,
    #[serde(default = "default_true")]
    pub(super) sdk_verify_callers: bool,
    #[serde(default)]
    pub(super) capi_listen: Option<SocketAddr>,
    #[serde(default)]
    pub(super) capi_allowed_hosts: Vec<String>,
    #[serde(default)]
    pub(super) capi_keys_file: Option<PathBuf>,
    #[serde(default)]
    pub(super) metrics_listen: Option<SocketAddr>,
    #[serde(default)]
    pub(super) metrics_token_file: Option<PathBuf>,
    #[serde(default)]
    pub(super) connections: ConnectionLimits,
    #[serde(default)]
    pub(super) health_check: HealthCheck,
    #[serde(default)]
    pub(super) timeouts: Timeouts,
    #[serde(default)]
    pub(super) protection: RawProtection,
    #[serde(default)]
    pub(super) restart: RestartPolicy,
    #[serde(default)]
    pub(super) logs: LogPolicy,
    #[serde(default)]
    pub(super) log_archives: ArchivePolicy,
    #[serde(default)]
    pub(super) environment: BTreeMap<String, String>,
    #[serde(default)]
    pub(super) chaos: Switch,
    pub(super) runtime_configuration: RawRuntime,
}

/// An on/off setting written as a word (`chaos: enabled`), so that turning on something risky
/// reads as meant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum Switch {
    Enabled,
    #[default]
    Disabled,
}

pub(super) fn default_instance_id() -> String {
    "ins-local".into()
}
pub(super) fn default_region() -> String {
    "local".into()
}
pub(super) fn default_data_dir() -> PathBuf {
    PathBuf::from("./gse-data")
}
pub(super) fn default_true() -> bool {
    true
}
pub(super) fn default_sdk_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 5758))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub(super) struct RawProtection {
    pub(super) policy: ProtectionPolicy,
    pub(super) time_limit_minutes: u32,
    pub(super) no_protection_grace: HumanDuration,
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
