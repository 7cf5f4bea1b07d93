//! control.yaml: what one gse-control replica connects to and listens on. Every problem in the
//! file is reported at once, with its line, as the agent's config is.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::common::config::locate::{Segment, locate};
use crate::common::config::{ConfigError, HumanDuration, Problem};

/// The shortest and longest `instance-lost-after` accepted.
const LOST_AFTER_RANGE: (Duration, Duration) =
    (Duration::from_secs(1), Duration::from_secs(24 * 3600));

/// TLS for the relay listener.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RelayTls {
    /// PEM certificate chain the replica presents.
    pub cert_file: PathBuf,
    /// PEM private key of that certificate.
    pub key_file: PathBuf,
    /// PEM CA bundle: when set, agents must present a certificate it signed.
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
}

/// One replica's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ControlConfig {
    /// A PostgreSQL URL (`postgres://user:password@host:port/db`).
    pub database: String,
    /// The Tencent Cloud API listener.
    #[serde(default = "default_api_listen")]
    pub api_listen: SocketAddr,
    /// TC3 keys (as the agent's `capi-keys-file`): when set, every API request must be signed.
    #[serde(default)]
    pub api_keys_file: Option<PathBuf>,
    /// Extra `Host` values the API accepts (behind a proxy), as the agent's
    /// `capi-allowed-hosts`.
    #[serde(default)]
    pub api_allowed_hosts: Vec<String>,
    /// The listener agents relay to.
    #[serde(default = "default_relay_listen")]
    pub relay_listen: SocketAddr,
    /// TLS for the relay listener.
    #[serde(default)]
    pub relay_tls: Option<RelayTls>,
    /// The hosts' credentials: `TOKEN INSTANCE-ID [FLEET-ID]` per line, mode 600
    /// ([`super::credentials`]).
    #[serde(default)]
    pub agent_tokens_file: Option<PathBuf>,
    /// An instance from which nothing was stored for this long is `Lost` (no relay stream) or
    /// `Unresponsive` (a stream that delivers nothing): it gets no new sessions. Longer than the
    /// agents' `upstream.status-interval` (10 s by default), which keeps a quiet host seen.
    #[serde(default = "default_lost_after")]
    pub instance_lost_after: HumanDuration,
    /// Hosts of a fleet a build roll-out deploys to at once.
    #[serde(default = "default_rollout_batch")]
    pub rollout_batch: usize,
    /// Where `GET /metrics`, `/healthz` and `/readyz` are served (off when unset); beyond
    /// loopback only with `metrics-token-file`.
    #[serde(default)]
    pub metrics_listen: Option<SocketAddr>,
    /// A bearer token file (one line, mode 600): `/metrics` then needs
    /// `Authorization: Bearer <token>`; the probes never do.
    #[serde(default)]
    pub metrics_token_file: Option<PathBuf>,
}

fn default_api_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9080))
}

fn default_relay_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9443))
}

fn default_lost_after() -> HumanDuration {
    Duration::from_secs(60).into()
}

fn default_rollout_batch() -> usize {
    2
}

impl ControlConfig {
    /// Reads and checks `path`.
    pub fn read(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses and checks the text of a control.yaml; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Self, ConfigError> {
        let cfg: ControlConfig =
            serde_yaml::from_str(text).map_err(|e| ConfigError::yaml(file, &e))?;
        let problems = cfg.problems(text);
        if problems.is_empty() {
            Ok(cfg)
        } else {
            Err(ConfigError::Invalid {
                file: file.to_string(),
                problems,
            })
        }
    }

    /// The metrics listener's rules, and each listener on a port of its own.
    fn listener_problems(&self, problem: &mut impl FnMut(&[Segment], &str, String)) {
        if let Some(addr) = self.metrics_listen
            && !addr.ip().to_canonical().is_loopback()
            && self.metrics_token_file.is_none()
        {
            problem(
                &[Segment::Key("metrics-listen")],
                "metrics-listen",
                format!(
                    "{addr} is reachable from other hosts, and /metrics would be unauthenticated: set metrics-token-file or listen on 127.0.0.1"
                ),
            );
        }
        if let Some(f) = &self.metrics_token_file
            && let Err(e) = crate::common::token::read(f)
        {
            problem(
                &[Segment::Key("metrics-token-file")],
                "metrics-token-file",
                e.to_string(),
            );
        }
        let listeners = [
            ("api-listen", Some(self.api_listen)),
            ("relay-listen", Some(self.relay_listen)),
            ("metrics-listen", self.metrics_listen),
        ];
        for (i, (key, addr)) in listeners.iter().enumerate() {
            let earlier = listeners[..i]
                .iter()
                .find(|(_, other)| addr.is_some_and(|a| a.port() != 0 && *other == Some(a)));
            if let (Some(addr), Some((other, _))) = (addr, earlier) {
                problem(
                    &[Segment::Key(key)],
                    key,
                    format!("{addr} is {other} too: give each its own port"),
                );
            }
        }
    }

    /// Every broken rule.
    fn problems(&self, text: &str) -> Vec<Problem> {
        let mut out = Vec::new();
        let mut problem = |path: &[Segment], key: &str, message: String| {
            out.push(Problem {
                line: locate(text, path),
                key: key.to_string(),
                message,
            });
        };
        let database = [Segment::Key("database")];
        if !(self.database.starts_with("postgres://") || self.database.starts_with("postgresql://"))
        {
            problem(
                &database,
                "database",
                "must be a PostgreSQL URL: postgres://user:password@host:port/dbname".into(),
            );
        } else if let Err(e) = self.database.parse::<tokio_postgres::Config>() {
            problem(
                &database,
                "database",
                format!("is not a usable PostgreSQL URL: {e}"),
            );
        }
        if !self.api_listen.ip().is_loopback() && self.api_keys_file.is_none() {
            problem(
                &[Segment::Key("api-listen")],
                "api-listen",
                format!(
                    "{} is reachable from other hosts, and the API would be unauthenticated: set api-keys-file (TC3 keys) or listen on 127.0.0.1",
                    self.api_listen
                ),
            );
        }
        if !self.relay_listen.ip().is_loopback() {
            let authenticated = self.agent_tokens_file.is_some()
                || self
                    .relay_tls
                    .as_ref()
                    .is_some_and(|t| t.client_ca_file.is_some());
            if self.relay_tls.is_none() || !authenticated {
                problem(
                    &[Segment::Key("relay-listen")],
                    "relay-listen",
                    format!(
                        "{} is reachable from other hosts: set relay-tls (cert-file, key-file) and authenticate agents with agent-tokens-file or relay-tls.client-ca-file, or listen on 127.0.0.1",
                        self.relay_listen
                    ),
                );
            }
        }
        self.listener_problems(&mut problem);
        if let Some(f) = &self.agent_tokens_file
            && let Err(e) = super::credentials::Credentials::read(f)
        {
            problem(
                &[Segment::Key("agent-tokens-file")],
                "agent-tokens-file",
                e.to_string(),
            );
        }
        let mut file = |path: &[Segment], key: &str, f: &Path| {
            if let Err(e) = std::fs::metadata(f) {
                problem(path, key, format!("cannot read {}: {e}", f.display()));
            }
        };
        if let Some(f) = &self.api_keys_file {
            file(&[Segment::Key("api-keys-file")], "api-keys-file", f);
        }
        if let Some(tls) = &self.relay_tls {
            let mut each = vec![("cert-file", &tls.cert_file), ("key-file", &tls.key_file)];
            if let Some(ca) = &tls.client_ca_file {
                each.push(("client-ca-file", ca));
            }
            for (key, f) in each {
                file(
                    &[Segment::Key("relay-tls"), Segment::Key(key)],
                    &format!("relay-tls.{key}"),
                    f,
                );
            }
        }
        let lost = self.instance_lost_after.get();
        if lost < LOST_AFTER_RANGE.0 || lost > LOST_AFTER_RANGE.1 {
            out.push(Problem {
                line: locate(text, &[Segment::Key("instance-lost-after")]),
                key: "instance-lost-after".into(),
                message: format!("{} is outside 1s..24h", humantime::format_duration(lost)),
            });
        }
        if self.rollout_batch == 0 || self.rollout_batch > 1000 {
            out.push(Problem {
                line: locate(text, &[Segment::Key("rollout-batch")]),
                key: "rollout-batch".into(),
                message: format!("{} is outside 1..=1000", self.rollout_batch),
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(text: &str) -> Vec<Problem> {
        match ControlConfig::parse(text, "control.yaml") {
            Err(ConfigError::Invalid { problems, .. }) => problems,
            other => panic!("expected problems, got {other:?}"),
        }
    }

    #[test]
    fn the_shipped_sample_is_valid() {
        let text = include_str!("../../packaging/control.yaml");
        let c = ControlConfig::parse(text, "packaging/control.yaml").unwrap();
        assert_eq!(c.instance_lost_after.get(), Duration::from_secs(60));
    }

    #[test]
    fn defaults_fill_everything_but_the_database() {
        let c = ControlConfig::parse("database: postgres://gse@127.0.0.1:5432/gse\n", "c").unwrap();
        assert_eq!(c.api_listen, default_api_listen());
        assert_eq!(c.relay_listen, default_relay_listen());
        assert_eq!(c.instance_lost_after.get(), Duration::from_secs(60));
        assert_eq!(c.rollout_batch, 2);
        assert_eq!((c.metrics_listen, c.metrics_token_file), (None, None));
    }

    #[test]
    fn public_metrics_need_a_token_file_of_mode_600() {
        let p = problems("database: postgres://h/d\nmetrics-listen: 0.0.0.0:9100\n");
        assert_eq!((p[0].key.as_str(), p[0].line), ("metrics-listen", Some(2)));
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "0123456789abcdef\n").unwrap();
        let text = format!(
            "database: postgres://h/d\nmetrics-listen: 0.0.0.0:9100\nmetrics-token-file: {}\n",
            token.display()
        );
        let p = problems(&text);
        assert_eq!(p[0].key, "metrics-token-file");
        assert!(p[0].message.contains("chmod 600"), "{}", p[0].message);
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
        let c = ControlConfig::parse(&text, "c").unwrap();
        assert_eq!(c.metrics_listen, Some("0.0.0.0:9100".parse().unwrap()));
    }

    #[test]
    fn every_problem_is_listed_with_its_line() {
        let p = problems(
            "database: mysql://x\napi-listen: 0.0.0.0:9080\nrelay-listen: 0.0.0.0:9443\ninstance-lost-after: 0s\n",
        );
        let keys: Vec<_> = p.iter().map(|p| (p.key.as_str(), p.line)).collect();
        assert_eq!(
            keys,
            [
                ("database", Some(1)),
                ("api-listen", Some(2)),
                ("relay-listen", Some(3)),
                ("instance-lost-after", Some(4)),
            ]
        );
    }

    #[test]
    fn unknown_keys_and_missing_database_are_parse_errors() {
        for text in [
            "api-listen: 127.0.0.1:1\n",
            "database: postgres://h/d\nbogus: 1\n",
        ] {
            assert!(matches!(
                ControlConfig::parse(text, "c"),
                Err(ConfigError::Parse { .. })
            ));
        }
    }

    #[test]
    fn a_public_relay_needs_tls_and_agent_credentials() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        std::fs::write(&f, "x").unwrap();
        let f = f.display();
        let text = format!(
            "database: postgres://h/d\nrelay-listen: 0.0.0.0:9443\nrelay-tls: {{cert-file: {f}, key-file: {f}}}\n"
        );
        assert_eq!(problems(&text)[0].key, "relay-listen");
        let tokens = dir.path().join("tokens");
        std::fs::write(&tokens, "0123456789abcdef-a ins-a\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tokens, std::fs::Permissions::from_mode(0o600)).unwrap();
        let ok = format!("{text}agent-tokens-file: {}\n", tokens.display());
        ControlConfig::parse(&ok, "c").unwrap();
        // A shared token of old is named with its line and the way out.
        std::fs::write(&tokens, "one-token-for-every-host\n").unwrap();
        let bad = problems(&ok);
        assert_eq!(bad[0].key, "agent-tokens-file");
        assert!(
            bad[0]
                .message
                .contains(":1: a token must name the one instance"),
            "{}",
            bad[0].message
        );
    }
}
