//! Reading, parsing and checking every rule at once.

use std::path::Path;
use std::time::Duration;

use super::locate::Segment::{self, Index, Key};
use super::*;

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
                return Err(ConfigError::yaml(file, &e));
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
    v.verdict(config, file)
}

struct Validator<'a> {
    text: &'a str,
    problems: Vec<Problem>,
}

impl Validator<'_> {
    /// `value` if no rule was broken, else every problem found in `file`.
    fn verdict<T>(self, value: T, file: &str) -> Result<T, ConfigError> {
        if self.problems.is_empty() {
            Ok(value)
        } else {
            Err(ConfigError::Invalid {
                file: file.to_string(),
                problems: self.problems,
            })
        }
    }

    fn problem(&mut self, path: &[Segment], message: impl Into<String>) {
        self.problems.push(Problem::at(self.text, path, message));
    }

    /// Two listeners on one port would fail the second bind at start: said here instead,
    /// against the later key. An unspecified address overlaps every address of its family's
    /// port; port 0 (any free port) never clashes.
    fn distinct_listeners(&mut self, listeners: &[(&'static str, Option<std::net::SocketAddr>)]) {
        for (i, (key, addr)) in listeners.iter().enumerate() {
            let Some(addr) = addr.filter(|a| a.port() != 0) else {
                continue;
            };
            let clash = listeners[..i].iter().find(|(_, other)| {
                other.is_some_and(|o| {
                    o.port() == addr.port()
                        && (o.ip() == addr.ip()
                            || o.ip().is_unspecified()
                            || addr.ip().is_unspecified())
                })
            });
            if let Some((other, Some(at))) = clash {
                self.problem(
                    &[Key(key)],
                    format!("{addr} overlaps {other} ({at}): give each listener its own port"),
                );
            }
        }
    }

    fn positive(&mut self, path: &[Segment], d: HumanDuration) {
        if d.get().is_zero() {
            self.problem(path, "must be longer than zero");
        }
    }

    fn log_archives(&mut self, a: &ArchivePolicy) {
        let key = |k| [Key("log-archives"), Key(k)];
        if a.max_bytes.get() < 4096 {
            self.problem(&key("max-bytes"), "must be at least 4096 bytes (4KiB)");
        }
        if a.max_total_bytes.get() < a.max_bytes.get() {
            self.problem(
                &key("max-total-bytes"),
                format!(
                    "is smaller than max-bytes ({} bytes): one archive would not fit",
                    a.max_bytes.get()
                ),
            );
        }
        if a.max_entries == 0 || a.max_entries > 1_000_000 {
            self.problem(&key("max-entries"), "must be 1 to 1000000");
        }
        self.positive(&key("max-age"), a.max_age);
        if a.url_expiry.get() < Duration::from_secs(1) || a.url_expiry.get() > MAX_URL_EXPIRY {
            self.problem(&key("url-expiry"), "must be 1s to 7 days");
        }
        if let Some(base) = &a.url_base
            && let Err(why) = check_url_base(base)
        {
            self.problem(&key("url-base"), why);
        }
    }

    /// Who this host is: fleet, instance, region and the address clients are given.
    fn identity(&mut self, raw: &RawConfig) {
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
        if let Some(why) = region_problem(&raw.region) {
            self.problem(&[Key("region")], format!("{:?} {why}", raw.region));
        }
        if let Some(ip) = raw.public_ip
            && (ip.is_unspecified() || ip.is_multicast())
        {
            self.problem(
                &[Key("public-ip")],
                format!("{ip} is not an address game clients can connect to"),
            );
        }
        if let Some(name) = &raw.dns_name
            && let Some(why) = dns_name_problem(name)
        {
            self.problem(
                &[Key("dns-name")],
                format!("{name:?} is not a DNS name: {why}"),
            );
        }
    }

    /// Health checks, the game's deadlines, session protection and restarts.
    fn timings(&mut self, raw: &RawConfig) {
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
    }

    /// Connection bounds, log files and archives, the games' environment.
    fn limits(&mut self, raw: &RawConfig) {
        let c = &raw.connections;
        for (key, max) in [("sdk-max", c.sdk_max), ("capi-max", c.capi_max)] {
            if max == 0 {
                self.problem(&[Key("connections"), Key(key)], "must be at least 1");
            }
        }
        if c.header_timeout.get().is_zero() {
            self.problem(
                &[Key("connections"), Key("header-timeout")],
                "must be longer than 0s",
            );
        }
        if c.idle_timeout.get().is_zero() {
            self.problem(
                &[Key("connections"), Key("idle-timeout")],
                "must be longer than 0s",
            );
        }
        if raw.logs.max_file_bytes.get() < 4096 {
            self.problem(
                &[Key("logs"), Key("max-file-bytes")],
                "must be at least 4096 bytes (4KiB)",
            );
        }
        if raw.logs.keep_files > 100 {
            self.problem(&[Key("logs"), Key("keep-files")], "must be at most 100");
        }
        if raw.logs.tail_lines > 1000 {
            self.problem(&[Key("logs"), Key("tail-lines")], "must be at most 1000");
        }
        self.log_archives(&raw.log_archives);
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
    }

    /// The listeners, each beyond loopback only with its secret, and the secrets readable.
    fn listeners(
        &mut self,
        raw: &RawConfig,
        keys_file: Option<&Path>,
        token_file: Option<&Path>,
        upstream_token: Option<&Path>,
    ) {
        if let Some(path) = keys_file
            && let Err(e) = crate::api::tc3::keys::read(path)
        {
            self.problem(&[Key("capi-keys-file")], e.to_string());
        }
        if let Some(addr) = raw.capi_listen
            && !addr.ip().to_canonical().is_loopback()
            && keys_file.is_none()
        {
            self.problem(
                &[Key("capi-listen")],
                format!(
                    "{addr} is not a loopback address: without capi-keys-file the control API \
                     has no authentication, so it listens on 127.0.0.1 or [::1] only; set \
                     capi-keys-file to require signed requests (TC3-HMAC-SHA256)"
                ),
            );
        }
        if let Some(path) = upstream_token
            && let Err(e) = crate::common::token::read(path)
        {
            self.problem(&[Key("upstream"), Key("token-file")], e.to_string());
        }
        if let Some(path) = token_file
            && let Err(e) = crate::common::token::read(path)
        {
            self.problem(&[Key("metrics-token-file")], e.to_string());
        }
        if let Some(addr) = raw.metrics_listen
            && !addr.ip().to_canonical().is_loopback()
            && token_file.is_none()
        {
            self.problem(
                &[Key("metrics-listen")],
                format!(
                    "{addr} is not a loopback address: without metrics-token-file /metrics \
                         has no authentication, so it listens on 127.0.0.1 or [::1] only; set \
                         metrics-token-file to require `Authorization: Bearer <token>` \
                         (Prometheus: authorization.credentials_file)"
                ),
            );
        }
        self.distinct_listeners(&[
            ("sdk-listen", Some(raw.sdk_listen)),
            ("capi-listen", raw.capi_listen),
            ("metrics-listen", raw.metrics_listen),
        ]);
        for host in &raw.capi_allowed_hosts {
            if host.is_empty()
                || !host.bytes().all(|b| b.is_ascii_graphic())
                || host.contains(['/', '@', ','])
            {
                self.problem(
                    &[Key("capi-allowed-hosts")],
                    format!("{host:?} is not a Host header value: write a name or address, with its port if the proxy sends one (e.g. gse.internal:8443)"),
                );
            }
        }
    }

    /// Package limits and the upstream link.
    fn package_and_upstream(&mut self, raw: &RawConfig) {
        let p = &raw.package;
        if p.max_entries == 0 || p.max_ratio == 0 || p.max_bytes.get() == 0 {
            self.problem(
                &[Key("package")],
                "max-bytes, max-entries and max-ratio must be above zero",
            );
        }
        self.positive(&[Key("package"), Key("install-timeout")], p.install_timeout);
        if let Some(u) = &raw.upstream {
            self.endpoints(&u.endpoints);
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
    }

    fn validate(&mut self, raw: RawConfig, base: &Path) -> Config {
        self.identity(&raw);
        self.timings(&raw);
        self.limits(&raw);
        let abs = |p: &Path| std::path::absolute(base.join(p)).unwrap_or_else(|_| base.join(p));
        let keys_file = raw.capi_keys_file.as_ref().map(|k| abs(k));
        let token_file = raw.metrics_token_file.as_ref().map(|t| abs(t));
        let upstream_token = raw
            .upstream
            .as_ref()
            .and_then(|u| u.token_file.as_ref())
            .map(|t| abs(t));
        self.listeners(
            &raw,
            keys_file.as_deref(),
            token_file.as_deref(),
            upstream_token.as_deref(),
        );
        let data_dir = abs(&raw.data_dir);
        let game_root = raw
            .game_root
            .as_ref()
            .map(|g| abs(g))
            .unwrap_or_else(|| data_dir.join("game"));
        let runtime = self.runtime(&raw.runtime_configuration, &game_root);
        let build = raw.build.as_ref().map(|b| abs(b));
        if let Some(spec) = &raw.run_as
            && let Err(e) = crate::agent::package::account::parse_user_group(spec)
        {
            self.problem(&[Key("run-as")], e.to_string());
        }
        self.package_and_upstream(&raw);
        Config {
            fleet_id: raw.fleet_id,
            instance_id: raw.instance_id,
            region: raw.region,
            public_ip: raw.public_ip,
            dns_name: raw.dns_name,
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
            sdk_verify_callers: raw.sdk_verify_callers,
            capi_listen: raw.capi_listen,
            capi_allowed_hosts: raw
                .capi_allowed_hosts
                .iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
            capi_keys_file: keys_file,
            metrics_listen: raw.metrics_listen,
            metrics_token_file: token_file,
            connections: raw.connections.clone(),
            health_check: raw.health_check,
            timeouts: raw.timeouts,
            protection: Protection {
                policy: raw.protection.policy,
                time_limit: Duration::from_secs(u64::from(raw.protection.time_limit_minutes) * 60),
                no_protection_grace: raw.protection.no_protection_grace.get(),
            },
            restart: raw.restart,
            logs: raw.logs,
            log_archives: raw.log_archives,
            environment: raw.environment,
            chaos: raw.chaos == Switch::Enabled,
            runtime,
        }
    }

    /// `upstream.endpoint`: one URL or a list of them, each `http(s)://host[:port]`; a bad one
    /// in a list is named by its index.
    fn endpoints(&mut self, endpoints: &[String]) {
        const UP: Segment = Key("upstream");
        const EP: Segment = Key("endpoint");
        if endpoints.is_empty() {
            self.problem(&[UP, EP], "needs at least one endpoint");
        }
        for (i, url) in endpoints.iter().enumerate() {
            let why = if !(url.starts_with("https://") || url.starts_with("http://")) {
                Some("must start with https:// (or http://)".to_string())
            } else {
                match url.parse::<tonic::transport::Uri>() {
                    Err(e) => Some(format!("is not a URL: {e}")),
                    Ok(uri) if uri.host().is_none_or(str::is_empty) => {
                        Some("names no host".to_string())
                    }
                    Ok(_) if endpoints[..i].contains(url) => Some("is listed twice".to_string()),
                    Ok(_) => None,
                }
            };
            if let Some(why) = why {
                // A single endpoint is `upstream.endpoint` itself; in a list, its index.
                if endpoints.len() == 1 {
                    self.problem(&[UP, EP], format!("{url:?} {why}"));
                } else {
                    self.problem(&[UP, EP, Index(i)], format!("{url:?} {why}"));
                }
            }
        }
    }

    fn runtime(&mut self, raw: &RawRuntime, game_root: &Path) -> RuntimeConfiguration {
        crate::api::runtime::check(raw, game_root, &mut |path, message| {
            self.problem(path, message)
        })
    }
}

/// Why `region` is not a region name (1–64 characters of `a-z`, `0-9` and `-`), if it is not.
fn region_problem(region: &str) -> Option<&'static str> {
    if region.is_empty() || region.len() > 64 {
        return Some("must be 1 to 64 characters long");
    }
    if !region
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Some("may hold only a-z, 0-9 and '-' (e.g. ap-shanghai)");
    }
    None
}

/// Why `name` is not a DNS host name, if it is not: at most 253 characters in dot-separated
/// labels of 1 to 63 letters, digits and hyphens, none starting or ending with a hyphen.
fn dns_name_problem(name: &str) -> Option<String> {
    if name.is_empty() || name.len() > 253 {
        return Some("it must be 1 to 253 characters long".into());
    }
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Some("each dot-separated label must be 1 to 63 characters long".into());
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Some(format!(
                "label {label:?} may hold only letters, digits and '-'"
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Some(format!("label {label:?} may not start or end with '-'"));
        }
    }
    None
}

/// The longest `log-archives.url-expiry`: a link is a bearer credential.
const MAX_URL_EXPIRY: Duration = Duration::from_secs(7 * 24 * 3600);

/// `log-archives.url-base`: `http://` or `https://`, a host (and port), nothing after it.
fn check_url_base(base: &str) -> Result<(), String> {
    let Some(authority) = base
        .strip_prefix("https://")
        .or_else(|| base.strip_prefix("http://"))
    else {
        return Err(format!(
            "{base:?} must start with http:// or https:// (e.g. https://gse.internal:8443)"
        ));
    };
    if authority.is_empty()
        || !authority.bytes().all(|b| b.is_ascii_graphic())
        || authority.contains(['/', '?', '#', '@'])
    {
        return Err(format!(
            "{base:?} must be a scheme and a host with an optional port, nothing else (e.g. https://gse.internal:8443)"
        ));
    }
    Ok(())
}
