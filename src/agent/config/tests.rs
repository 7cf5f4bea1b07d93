use std::path::Path;
use std::time::Duration;

use super::*;

fn parse_ok(text: &str) -> Config {
    parse(text, "agent.yaml", Path::new("/srv")).unwrap_or_else(|e| panic!("{e}"))
}

fn problems(text: &str) -> Vec<Problem> {
    match parse(text, "agent.yaml", Path::new("/srv")) {
        Err(ConfigError::Invalid { problems, .. }) => problems,
        other => panic!("expected Invalid, got {other:?}"),
    }
}

const MINIMAL: &str = "\
fleet-id: fleet-a
runtime-configuration:
  ServerProcesses:
    - LaunchPath: /local/game/server
      Parameters: \"-mode 'battle royale'\"
      ConcurrentExecutions: 2
";

#[test]
fn minimal_config_gets_gse_defaults() {
    let c = parse_ok(MINIMAL);
    assert_eq!(c.game_root, Path::new("/srv/gse-data/game"));
    assert_eq!(c.sdk_listen.to_string(), "127.0.0.1:5758");
    assert_eq!(c.capi_listen, None);
    assert_eq!(c.health_check.interval.get(), Duration::from_secs(60));
    assert_eq!(c.health_check.failure_threshold, 3);
    assert_eq!(c.timeouts.process_ready.get(), Duration::from_secs(300));
    assert_eq!(c.protection.grace(true), Some(Duration::from_secs(3600)));
    let p = &c.runtime.server_processes[0];
    assert_eq!(p.program, Path::new("/srv/gse-data/game/server"));
    assert_eq!(p.args, ["-mode", "battle royale"]);
    assert_eq!(c.total_processes(), 2);
    assert_eq!(c.runtime.activation_timeout, Duration::from_secs(600));
}

#[test]
fn sample_config_is_valid() {
    let c = parse_ok(SAMPLE_CONFIG);
    assert_eq!(c.capi_listen.map(|a| a.port()), Some(8080));
}

#[test]
fn every_problem_is_listed_with_its_line() {
    let text = "\
fleet-id: nope
health-check: { interval: 0s, failure-threshold: 0 }
protection:
  policy: TimeLimitProtection
  time-limit-minutes: 2
runtime-configuration:
  ServerProcesses:
    - LaunchPath: /usr/bin/server
      ConcurrentExecutions: 30
    - LaunchPath: /local/game/../etc/passwd
      Parameters: \"unbalanced 'quote\"
      ConcurrentExecutions: 30
  GameServerSessionActivationTimeoutSeconds: 601
";
    let ps = problems(text);
    let lines: Vec<_> = ps.iter().map(|p| (p.key.as_str(), p.line)).collect();
    for want in [
        ("fleet-id", Some(1)),
        ("health-check.interval", Some(2)),
        ("health-check.failure-threshold", Some(2)),
        ("protection.time-limit-minutes", Some(5)),
        (
            "runtime-configuration.ServerProcesses[0].LaunchPath",
            Some(8),
        ),
        (
            "runtime-configuration.ServerProcesses[1].LaunchPath",
            Some(10),
        ),
        (
            "runtime-configuration.ServerProcesses[1].Parameters",
            Some(11),
        ),
        ("runtime-configuration.ServerProcesses", Some(7)),
        (
            "runtime-configuration.GameServerSessionActivationTimeoutSeconds",
            Some(13),
        ),
    ] {
        assert!(lines.contains(&want), "missing {want:?} in {lines:?}");
    }
    let text = parse(text, "agent.yaml", Path::new("/"))
        .unwrap_err()
        .to_string();
    assert!(text.contains("agent.yaml:7:"), "{text}");
    assert!(text.contains("add up to 60"), "{text}");
}

#[test]
fn type_errors_and_unknown_keys_point_at_their_lines_all_at_once() {
    let err = parse(
        "fleet-id: fleet-a\nsdk-listen: nowhere\nhealth-check:\n  intervall: 1s\nruntime-configuration: {ServerProcesses: []}\n",
        "a.yaml",
        Path::new("/"),
    )
    .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("a.yaml:2: sdk-listen: invalid socket address syntax\n"),
        "{text}"
    );
    assert!(
        text.contains("a.yaml:4: health-check.intervall: unknown field `intervall`"),
        "{text}"
    );
    assert!(
        !text.contains("at line"),
        "no block-relative positions: {text}"
    );
    let err = parse("[1, 2]", "a.yaml", Path::new("/")).unwrap_err();
    assert!(matches!(err, ConfigError::Parse { line: 1, .. }), "{err}");
}

#[test]
fn control_api_listens_on_loopback_only() {
    for addr in ["0.0.0.0:8080", "192.0.2.7:8080", "[::]:8080"] {
        let ps = problems(&format!("capi-listen: \"{addr}\"\n{MINIMAL}"));
        let p = ps
            .iter()
            .find(|p| p.key == "capi-listen")
            .unwrap_or_else(|| panic!("{addr} accepted: {ps:?}"));
        assert_eq!(p.line, Some(1), "{p:?}");
        assert!(
            p.message.contains("not a loopback address"),
            "{}",
            p.message
        );
        assert!(p.message.contains("capi-keys-file"), "{}", p.message);
    }
    // Listed with the others, as every problem is.
    let ps = problems(&format!(
        "capi-listen: 0.0.0.0:8080\ninstance-id: \"\"\n{MINIMAL}"
    ));
    let keys: Vec<_> = ps.iter().map(|p| p.key.as_str()).collect();
    assert!(
        keys.contains(&"capi-listen") && keys.contains(&"instance-id"),
        "{keys:?}"
    );
    for addr in ["127.0.0.1:8080", "127.0.0.2:0", "\"[::1]:8080\""] {
        let c = parse_ok(&format!("capi-listen: {addr}\n{MINIMAL}"));
        assert!(c.capi_listen.is_some(), "{addr}");
    }
}

#[test]
fn capi_allowed_hosts_lists_extra_host_values() {
    assert!(parse_ok(MINIMAL).capi_allowed_hosts.is_empty());
    let c = parse_ok(&format!(
        "capi-listen: 127.0.0.1:8080\ncapi-allowed-hosts: [GSE.internal:8443, gse-proxy]\n{MINIMAL}"
    ));
    assert_eq!(c.capi_allowed_hosts, ["gse.internal:8443", "gse-proxy"]);
    let ps = problems(&format!(
        "capi-allowed-hosts: [\"\", \"http://x/\"]\n{MINIMAL}"
    ));
    let bad: Vec<_> = ps
        .iter()
        .filter(|p| p.key == "capi-allowed-hosts" && p.line == Some(1))
        .collect();
    assert_eq!(bad.len(), 2, "{ps:?}");
    let err = parse(
        &format!("capi-allowed-hosts: gse.internal\n{MINIMAL}"),
        "agent.yaml",
        Path::new("/srv"),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("agent.yaml:1: capi-allowed-hosts"), "{err}");
}

#[test]
fn launch_paths_stay_in_the_game_root() {
    let root = Path::new("/data/game");
    assert_eq!(
        resolve_launch_path("/local/game/bin/server", root).unwrap(),
        Path::new("/data/game/bin/server")
    );
    assert_eq!(
        resolve_launch_path("/data/game/server", root).unwrap(),
        Path::new("/data/game/server")
    );
    for bad in [
        "/usr/bin/node",
        "node",
        "/local/game/",
        "/local/game/a/../../x",
        "",
    ] {
        assert!(resolve_launch_path(bad, root).is_err(), "{bad}");
    }
}

#[test]
fn protection_grace_follows_the_policy() {
    let mut p = Protection {
        policy: ProtectionPolicy::FullProtection,
        time_limit: Duration::from_secs(600),
        no_protection_grace: Duration::from_secs(300),
    };
    assert_eq!(p.grace(true), None);
    assert_eq!(p.grace(false), Some(Duration::from_secs(300)));
    p.policy = ProtectionPolicy::TimeLimitProtection;
    assert_eq!(p.grace(true), Some(Duration::from_secs(600)));
}

/// Every released schema's example keeps loading (house style: backward compatibility); add a
/// file per schema version to `tests/data/`.
#[test]
fn released_examples_still_load() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let mut loaded = 0;
    for entry in std::fs::read_dir(&data).unwrap() {
        let path = entry.unwrap().path();
        let c = read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(c.total_processes() >= 1);
        loaded += 1;
    }
    assert!(loaded >= 1);
    let packaged = Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/agent.yaml");
    assert_eq!(read(&packaged).unwrap().game_root, Path::new("/local/game"));
}

mod properties {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Whatever a LaunchPath says, an accepted one resolves inside the game root.
        #[test]
        fn accepted_launch_paths_stay_inside_the_game_root(path in "(/local/game/|/data/game/|/|)([a-z.]{0,4}/){0,4}[a-z.]{0,6}") {
            let root = Path::new("/data/game");
            if let Ok(resolved) = resolve_launch_path(&path, root) {
                prop_assert!(resolved.starts_with(root), "{path} -> {}", resolved.display());
                prop_assert!(!resolved.components().any(|c| c == std::path::Component::ParentDir));
            }
        }
    }
}

#[test]
fn region_and_address_default_to_a_local_host() {
    let c = parse_ok(MINIMAL);
    assert_eq!(c.region, "local");
    assert_eq!((c.public_ip, c.dns_name.as_deref()), (None, None));
    assert_eq!(
        (c.client_ip().as_str(), c.client_dns_name()),
        ("127.0.0.1", "")
    );
    assert_eq!(c.arn("fleet/fleet-a"), "qcs::gse:local:uin/0:fleet/fleet-a");
    let c = parse_ok(&format!(
        "region: ap-shanghai\npublic-ip: 203.0.113.7\ndns-name: game-1.example.com\n{MINIMAL}"
    ));
    assert_eq!(c.region, "ap-shanghai");
    assert_eq!(c.client_ip(), "203.0.113.7");
    assert_eq!(c.client_dns_name(), "game-1.example.com");
    assert_eq!(c.arn("alias/a-1"), "qcs::gse:ap-shanghai:uin/0:alias/a-1");
    let c = parse_ok(&format!("public-ip: \"2001:db8::7\"\n{MINIMAL}"));
    assert_eq!(c.client_ip(), "2001:db8::7");
}

#[test]
fn a_bad_region_is_named() {
    for bad in [
        "",
        "AP-Shanghai",
        "ap_shanghai",
        "ap shanghai",
        &"a".repeat(65),
    ] {
        let ps = problems(&format!("region: \"{bad}\"\n{MINIMAL}"));
        let p = ps
            .iter()
            .find(|p| p.key == "region")
            .unwrap_or_else(|| panic!("{bad:?} accepted: {ps:?}"));
        assert_eq!(p.line, Some(1), "{p:?}");
    }
    assert_eq!(
        parse_ok(&format!("region: {}\n{MINIMAL}", "a".repeat(64)))
            .region
            .len(),
        64
    );
}

#[test]
fn a_bad_public_ip_or_dns_name_is_named() {
    // Not an address at all: a type error at its line.
    let err = parse(
        &format!("public-ip: 203.0.113\n{MINIMAL}"),
        "agent.yaml",
        Path::new("/srv"),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("agent.yaml:1: public-ip: invalid IP address syntax"),
        "{err}"
    );
    // An address no client can connect to.
    for bad in ["0.0.0.0", "\"::\"", "224.0.0.1"] {
        let ps = problems(&format!("public-ip: {bad}\n{MINIMAL}"));
        assert!(
            ps.iter().any(|p| p.key == "public-ip" && p.line == Some(1)),
            "{bad}: {ps:?}"
        );
    }
    for bad in [
        "",
        "-game.example.com",
        "game..example.com",
        "game_1.example.com",
        "example.com.",
    ] {
        let ps = problems(&format!("dns-name: \"{bad}\"\n{MINIMAL}"));
        assert!(
            ps.iter().any(|p| p.key == "dns-name" && p.line == Some(1)),
            "{bad:?}: {ps:?}"
        );
    }
    let long = format!("{}.example.com", "a".repeat(64));
    let ps = problems(&format!("dns-name: {long}\n{MINIMAL}"));
    assert!(ps.iter().any(|p| p.key == "dns-name"), "{ps:?}");
}

#[test]
fn upstream_endpoint_takes_one_url_or_a_list() {
    let c = parse_ok(&format!(
        "upstream: {{ endpoint: \"https://cp-a:9443\" }}\n{MINIMAL}"
    ));
    assert_eq!(c.upstream.unwrap().endpoints, ["https://cp-a:9443"]);
    let c = parse_ok(&format!(
        "upstream:\n  endpoint:\n    - https://cp-a:9443\n    - http://10.0.0.2:9443\n{MINIMAL}"
    ));
    assert_eq!(
        c.upstream.unwrap().endpoints,
        ["https://cp-a:9443", "http://10.0.0.2:9443"]
    );
    // A bad one in a list is named by its index, each of them.
    let ps = problems(&format!(
        "upstream:\n  endpoint:\n    - https://cp-a:9443\n    - ftp://cp-b\n    - https://cp-a:9443\n{MINIMAL}"
    ));
    let keys: Vec<_> = ps.iter().map(|p| (p.key.as_str(), p.line)).collect();
    assert!(
        keys.contains(&("upstream.endpoint[1]", Some(4))),
        "{keys:?}"
    );
    assert!(
        keys.contains(&("upstream.endpoint[2]", Some(5))),
        "{keys:?}"
    );
    let twice = ps.iter().find(|p| p.key == "upstream.endpoint[2]").unwrap();
    assert!(twice.message.contains("listed twice"), "{}", twice.message);
    let ps = problems(&format!("upstream: {{ endpoint: [] }}\n{MINIMAL}"));
    assert!(ps.iter().any(|p| p.key == "upstream.endpoint"), "{ps:?}");
    let ps = problems(&format!(
        "upstream: {{ endpoint: \"cp-a:9443\" }}\n{MINIMAL}"
    ));
    let p = ps.iter().find(|p| p.key == "upstream.endpoint").unwrap();
    assert!(
        p.message.contains("must start with https://"),
        "{}",
        p.message
    );
    let err = parse(
        &format!("upstream: {{ endpoint: {{ url: x }} }}\n{MINIMAL}"),
        "agent.yaml",
        Path::new("/srv"),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("an endpoint URL or a list of endpoint URLs"),
        "{err}"
    );
}

#[test]
fn every_size_takes_the_same_units() {
    for (text, bytes) in [
        ("10MiB", 10u64 << 20),
        ("10MB", 10_000_000),
        ("1GiB", 1 << 30),
        ("65536", 65_536),
    ] {
        let c = parse_ok(&format!(
            "{MINIMAL}logs: {{ max-file-bytes: {text} }}\npackage: {{ max-bytes: {text} }}\n"
        ));
        assert_eq!(c.logs.max_file_bytes.get(), bytes, "{text}");
        assert_eq!(c.package.max_bytes.get(), bytes, "{text}");
    }
    let p = problems(&format!("{MINIMAL}logs:\n  max-file-bytes: 1KiB\n"));
    assert_eq!(p[0].key, "logs.max-file-bytes");
    assert!(p[0].message.contains("4096"), "{}", p[0].message);
}

#[test]
fn metrics_listen_is_off_by_default_and_loopback_only_without_a_token() {
    let c = parse_ok(MINIMAL);
    assert_eq!((c.metrics_listen, c.metrics_token_file), (None, None));
    for addr in ["0.0.0.0:9100", "\"[::]:9100\""] {
        let ps = problems(&format!(
            "sdk-listen: 127.0.0.1:0\nmetrics-listen: {addr}\n{MINIMAL}"
        ));
        let p = ps
            .iter()
            .find(|p| p.key == "metrics-listen")
            .unwrap_or_else(|| panic!("{addr} accepted: {ps:?}"));
        assert_eq!(p.line, Some(2), "{p:?}");
        assert!(
            p.message.contains("not a loopback address"),
            "{}",
            p.message
        );
        assert!(p.message.contains("metrics-token-file"), "{}", p.message);
    }
    let c = parse_ok(&format!("metrics-listen: 127.0.0.1:9100\n{MINIMAL}"));
    assert_eq!(c.metrics_listen.map(|a| a.port()), Some(9100));
    // With a token, any address; the file is read and named when it cannot be.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), "0123456789abcdef0123\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        dir.path().join("token"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let yaml = format!("metrics-listen: 0.0.0.0:9100\nmetrics-token-file: token\n{MINIMAL}");
    let c = parse(&yaml, "agent.yaml", dir.path()).unwrap();
    assert_eq!(c.metrics_token_file, Some(dir.path().join("token")));
    let err = parse(
        &format!("metrics-listen: 0.0.0.0:9100\nmetrics-token-file: missing\n{MINIMAL}"),
        "agent.yaml",
        dir.path(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("agent.yaml:2: metrics-token-file"), "{err}");
    assert!(err.contains("cannot read"), "{err}");
}

#[test]
fn no_two_listeners_share_a_port() {
    let ps = problems(&format!(
        "sdk-listen: 127.0.0.1:9100\nmetrics-listen: 127.0.0.1:9100\n{MINIMAL}"
    ));
    let p = ps
        .iter()
        .find(|p| p.key == "metrics-listen")
        .unwrap_or_else(|| panic!("accepted: {ps:?}"));
    assert!(p.message.contains("overlaps sdk-listen"), "{}", p.message);
    // The capi beside the SDK, and an unspecified address over a specific one.
    let ps = problems(&format!(
        "sdk-listen: 127.0.0.1:5758\ncapi-listen: 127.0.0.1:5758\n{MINIMAL}"
    ));
    assert!(
        ps.iter()
            .any(|p| p.key == "capi-listen" && p.line == Some(2)),
        "{ps:?}"
    );
    let ps = problems(&format!(
        "capi-keys-file: /dev/null\nsdk-listen: 127.0.0.1:7000\ncapi-listen: 0.0.0.0:7000\n{MINIMAL}"
    ));
    assert!(
        ps.iter()
            .any(|p| p.key == "capi-listen" && p.message.contains("overlaps sdk-listen")),
        "{ps:?}"
    );
    parse_ok(&format!(
        "sdk-listen: 127.0.0.1:7000\ncapi-listen: 127.0.0.2:7000\n{MINIMAL}"
    ));
    // Port 0 picks a free port for each.
    parse_ok(&format!(
        "sdk-listen: 127.0.0.1:0\nmetrics-listen: 127.0.0.1:0\n{MINIMAL}"
    ));
}

#[test]
fn crash_rehearsal_is_off_unless_the_config_says_enabled_in_words() {
    assert!(!parse_ok(MINIMAL).chaos);
    assert!(parse_ok(&format!("chaos: enabled\n{MINIMAL}")).chaos);
    assert!(!parse_ok(&format!("chaos: disabled\n{MINIMAL}")).chaos);
    let p = problems(&format!("chaos: true\n{MINIMAL}"));
    let p = p.iter().find(|p| p.key == "chaos").expect("chaos is named");
    assert_eq!(p.line, Some(1), "{p:?}");
    assert!(
        p.message.contains("enabled") && p.message.contains("disabled"),
        "{}",
        p.message
    );
}

#[test]
fn log_archives_have_sane_defaults_and_their_bounds_are_checked() {
    let c = parse_ok(MINIMAL);
    let a = &c.log_archives;
    assert_eq!(a.max_bytes.get(), 100 << 20);
    assert_eq!(a.max_total_bytes.get(), 2 << 30);
    assert_eq!(a.max_age.get(), Duration::from_secs(7 * 86_400));
    assert_eq!(a.url_expiry.get(), Duration::from_secs(3600));
    assert_eq!(a.url_base, None);
    let c = parse_ok(&format!(
        "{MINIMAL}log-archives: {{ max-bytes: 1MiB, max-total-bytes: 1MiB, max-age: 1d, url-base: \"https://gse.internal:8443\" }}\n"
    ));
    assert_eq!(c.log_archives.max_age.get(), Duration::from_secs(86_400));
    let p = problems(&format!(
        "{MINIMAL}log-archives: {{ max-bytes: 1GiB, max-total-bytes: 10MiB, max-entries: 0, max-age: 0s, url-expiry: 8d, url-base: gse.internal }}\n"
    ));
    let keys: Vec<&str> = p.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "log-archives.max-total-bytes",
            "log-archives.max-entries",
            "log-archives.max-age",
            "log-archives.url-expiry",
            "log-archives.url-base",
        ],
        "{p:?}"
    );
    assert!(
        p[0].message.contains("one archive would not fit"),
        "{}",
        p[0].message
    );
    assert!(p[4].message.contains("http://"), "{}", p[4].message);
    for base in ["https://gse.internal:8443/logs", "http://", "http://a b"] {
        let p = problems(&format!(
            "{MINIMAL}log-archives: {{ url-base: \"{base}\" }}\n"
        ));
        assert_eq!(p[0].key, "log-archives.url-base", "{base}");
    }
    // A typo in the section is reported on its line with the nearest key.
    let p = problems(&format!("{MINIMAL}log-archives: {{ max-byte: 1MiB }}\n"));
    assert_eq!(p[0].key, "log-archives.max-byte", "{p:?}");
}
