//! Error collection by top-level section: when the whole file does not deserialize, each
//! `key: …` block is checked on its own, so one bad section does not hide the others.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use serde::de::DeserializeOwned;

use super::{
    ConnectionLimits, HealthCheck, LogPolicy, PackagePolicy, Problem, RawProtection, RawRuntime,
    RestartPolicy, Timeouts, UpstreamConfig,
};

/// Keys a config must have.
const REQUIRED: &[&str] = &["fleet-id", "runtime-configuration"];

/// Every problem found by checking each top-level section separately (empty if none is
/// found this way, e.g. when the file is not a mapping at all).
pub fn problems(text: &str) -> Vec<Problem> {
    let blocks = blocks(text);
    let mut problems = Vec::new();
    for block in &blocks {
        let check = match block.key.as_str() {
            "fleet-id" | "instance-id" | "region" | "dns-name" => check::<String>,
            "public-ip" => check::<IpAddr>,
            "data-dir" | "game-root" | "build" | "capi-keys-file" | "metrics-token-file" => {
                check::<PathBuf>
            }
            "run-as" => check::<String>,
            "capi-allowed-hosts" => check::<Vec<String>>,
            "package" => check::<PackagePolicy>,
            "upstream" => check::<UpstreamConfig>,
            "sdk-listen" | "capi-listen" | "metrics-listen" => check::<SocketAddr>,
            "sdk-verify-callers" => check::<bool>,
            "connections" => check::<ConnectionLimits>,
            "health-check" => check::<HealthCheck>,
            "timeouts" => check::<Timeouts>,
            "protection" => check::<RawProtection>,
            "restart" => check::<RestartPolicy>,
            "logs" => check::<LogPolicy>,
            "environment" => check::<BTreeMap<String, String>>,
            "runtime-configuration" => check::<RawRuntime>,
            _ => {
                problems.push(Problem {
                    line: Some(block.line),
                    key: block.key.clone(),
                    message: "unknown key".into(),
                });
                continue;
            }
        };
        if let Err(e) = check(&block.text) {
            let line = e.location().map(|l| block.line + l.line() - 1);
            let message = without_position(&e.to_string());
            // serde_yaml names the path; the problem names the key already.
            let message = message
                .strip_prefix(&format!("{}: ", block.key))
                .map(str::to_string)
                .unwrap_or(message);
            problems.push(Problem {
                line: line.or(Some(block.line)),
                key: block.key.clone(),
                message,
            });
        }
    }
    if !problems.is_empty() {
        for key in REQUIRED {
            if !blocks.iter().any(|b| b.key == *key) {
                problems.push(Problem {
                    line: None,
                    key: key.to_string(),
                    message: "is required".into(),
                });
            }
        }
    }
    problems
}

/// serde_yaml ends messages with ` at line L column C`; the caller reports its own line.
pub fn without_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i)
            if message[i + 9..]
                .split(" column ")
                .all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())) =>
        {
            message[..i].to_string()
        }
        _ => message.to_string(),
    }
}

fn check<T: DeserializeOwned>(text: &str) -> Result<(), serde_yaml::Error> {
    serde_yaml::from_str::<BTreeMap<String, T>>(text).map(|_| ())
}

struct Block {
    key: String,
    /// 1-based line of the key.
    line: usize,
    text: String,
}

/// Splits YAML text at its top-level keys (lines at column 0 that are not comments, list
/// items or document markers).
fn blocks(text: &str) -> Vec<Block> {
    let mut out: Vec<Block> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let top = !line.starts_with([' ', '\t', '#', '-']) && !line.trim().is_empty();
        if top && let Some((key, _)) = line.split_once(':') {
            out.push(Block {
                key: key.trim().trim_matches(['"', '\'']).to_string(),
                line: i + 1,
                text: String::new(),
            });
        }
        if let Some(b) = out.last_mut() {
            b.text.push_str(line);
            b.text.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_every_malformed_section_with_its_line() {
        let text = "\
fleet-id: fleet-a
health-check:
  interval: soon
timeouts: { process-ready: 5m }
sdk-listen: nowhere
colour: blue
logs: { tail-lines: many }
";
        let ps = problems(text);
        let got: Vec<(&str, Option<usize>)> = ps.iter().map(|p| (p.key.as_str(), p.line)).collect();
        assert_eq!(
            got,
            [
                ("health-check", Some(3)),
                ("sdk-listen", Some(5)),
                ("colour", Some(6)),
                ("logs", Some(7)),
                ("runtime-configuration", None),
            ]
        );
        assert!(
            ps[0].message.contains("invalid duration \"soon\""),
            "{}",
            ps[0].message
        );
    }

    #[test]
    fn a_valid_file_has_no_section_problems() {
        assert!(problems(super::super::SAMPLE_CONFIG).is_empty());
    }
}
