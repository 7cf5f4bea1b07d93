//! Error collection by top-level section: when the whole file does not deserialize, each
//! `key: …` block is checked on its own, so one bad section does not hide the others.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use serde::de::DeserializeOwned;

use super::{
    ArchivePolicy, ConnectionLimits, HealthCheck, LogPolicy, PackagePolicy, Problem, RawProtection,
    RawRuntime, RestartPolicy, Switch, Timeouts, UpstreamConfig,
};

/// Keys a config must have.
const REQUIRED: &[&str] = &["fleet-id", "runtime-configuration"];

/// Checks one `key: …` block of text.
type Check = fn(&str) -> Result<(), serde_yaml::Error>;

/// Every top-level key, with the check of its block.
const SECTIONS: &[(&str, Check)] = &[
    ("fleet-id", check::<String>),
    ("instance-id", check::<String>),
    ("region", check::<String>),
    ("public-ip", check::<IpAddr>),
    ("dns-name", check::<String>),
    ("data-dir", check::<PathBuf>),
    ("game-root", check::<PathBuf>),
    ("build", check::<PathBuf>),
    ("run-as", check::<String>),
    ("package", check::<PackagePolicy>),
    ("upstream", check::<UpstreamConfig>),
    ("sdk-listen", check::<SocketAddr>),
    ("sdk-verify-callers", check::<bool>),
    ("capi-listen", check::<SocketAddr>),
    ("capi-allowed-hosts", check::<Vec<String>>),
    ("capi-keys-file", check::<PathBuf>),
    ("metrics-listen", check::<SocketAddr>),
    ("metrics-token-file", check::<PathBuf>),
    ("connections", check::<ConnectionLimits>),
    ("health-check", check::<HealthCheck>),
    ("timeouts", check::<Timeouts>),
    ("protection", check::<RawProtection>),
    ("restart", check::<RestartPolicy>),
    ("logs", check::<LogPolicy>),
    ("log-archives", check::<ArchivePolicy>),
    ("environment", check::<BTreeMap<String, String>>),
    ("chaos", check::<Switch>),
    ("runtime-configuration", check::<RawRuntime>),
];

/// Every problem found by checking each top-level section separately, and within a mapping
/// each of its keys on its own, so one bad value does not hide the next (empty if none is
/// found this way, e.g. when the file is not a mapping at all).
pub fn problems(text: &str) -> Vec<Problem> {
    let blocks = blocks(text);
    let mut problems = Vec::new();
    for block in &blocks {
        let Some(&(_, check)) = SECTIONS.iter().find(|(k, _)| *k == block.key) else {
            problems.push(Problem {
                line: Some(block.line),
                key: block.key.clone(),
                message: unknown_key(&block.key),
            });
            continue;
        };
        if let Err(e) = check(&block.text) {
            let fields = field_problems(block, check);
            if fields.is_empty() {
                let line = e.location().map(|l| block.line + l.line() - 1);
                problems.push(Problem {
                    line: line.or(Some(block.line)),
                    key: block.key.clone(),
                    message: message_of(&e, &block.key),
                });
            } else {
                problems.extend(fields);
            }
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

/// The problems of a mapping section's keys, each checked alone (the others left to their
/// defaults); empty when the section is not a mapping or no key is wrong by itself (e.g. a
/// required key is missing: the section's own message says so).
fn field_problems(block: &Block, check: Check) -> Vec<Problem> {
    let Ok(serde_yaml::Value::Mapping(top)) = serde_yaml::from_str(&block.text) else {
        return Vec::new();
    };
    let Some((_, serde_yaml::Value::Mapping(fields))) = top.into_iter().next() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (name, value) in fields {
        let name = match &name {
            serde_yaml::Value::String(s) => s.clone(),
            other => serde_yaml::to_string(other)
                .unwrap_or_default()
                .trim()
                .to_string(),
        };
        let mut alone = serde_yaml::Mapping::new();
        alone.insert(name.clone().into(), value);
        let mut section = serde_yaml::Mapping::new();
        section.insert(block.key.clone().into(), alone.into());
        let Ok(text) = serde_yaml::to_string(&section) else {
            continue;
        };
        if let Err(e) = check(&text) {
            let message = message_of(&e, &block.key);
            let message = message
                .strip_prefix(&format!("{name}: "))
                .map(str::to_string)
                .unwrap_or(message);
            if message.starts_with("missing field") {
                continue;
            }
            out.push(Problem {
                line: Some(key_line(block, &name)),
                key: format!("{}.{name}", block.key),
                message,
            });
        }
    }
    out
}

/// serde's message without its position and the section's name (the problem names both).
fn message_of(e: &serde_yaml::Error, section: &str) -> String {
    let message = crate::common::config::without_position(&e.to_string());
    message
        .strip_prefix(&format!("{section}: "))
        .or_else(|| message.strip_prefix(&format!("{section}.")))
        .map(str::to_string)
        .unwrap_or(message)
}

/// The line where `key` is written inside `block` (block or flow style), else the block's.
fn key_line(block: &Block, key: &str) -> usize {
    let pattern = format!("{key}:");
    for (i, line) in block.text.lines().enumerate() {
        // The section's own key comes first on its line.
        let body = if i == 0 {
            line.split_once(':').map(|(_, rest)| rest).unwrap_or("")
        } else {
            line
        };
        let hit = body.match_indices(&pattern).any(|(at, _)| {
            body[..at]
                .chars()
                .next_back()
                .is_none_or(|c| c == '{' || c == ',' || c == ' ' || c == '\t' || c == '-')
        });
        if hit {
            return block.line + i;
        }
    }
    block.line
}

/// "unknown key", with the nearest known one when there is a near one.
fn unknown_key(key: &str) -> String {
    let nearest = SECTIONS
        .iter()
        .map(|(k, _)| (*k, distance(key, k)))
        .filter(|(k, d)| *d <= 2 || k.starts_with(key) || key.starts_with(k))
        .min_by_key(|(_, d)| *d);
    match nearest {
        Some((k, _)) => format!("unknown key; did you mean {k}?"),
        None => "unknown key; `gse-agent sample-config` prints every key with its default".into(),
    }
}

/// Levenshtein distance (keys are short).
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
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
                ("health-check.interval", Some(3)),
                ("sdk-listen", Some(5)),
                ("colour", Some(6)),
                ("logs.tail-lines", Some(7)),
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
    fn every_bad_value_of_an_inline_map_is_reported_on_its_line() {
        let text = "\
fleet-id: fleet-a
logs: { max-file-bytes: 10XB, keep-files: -3, bogus: 1 }
health-check:
  interval: 5 parsecs
  timeout: 2s
  failure-threshold: many
heath-check: {}
";
        let ps = problems(text);
        let got: Vec<(&str, Option<usize>)> = ps.iter().map(|p| (p.key.as_str(), p.line)).collect();
        assert_eq!(
            got,
            [
                ("logs.max-file-bytes", Some(2)),
                ("logs.keep-files", Some(2)),
                ("logs.bogus", Some(2)),
                ("health-check.interval", Some(4)),
                ("health-check.failure-threshold", Some(6)),
                ("heath-check", Some(7)),
                ("runtime-configuration", None),
            ],
            "{ps:#?}"
        );
        // The bad value quoted, and the accepted forms shown.
        assert!(
            ps[0].message.contains("\"10XB\"") && ps[0].message.contains("KiB"),
            "{}",
            ps[0].message
        );
        assert!(ps[1].message.contains("-3"), "{}", ps[1].message);
        assert!(
            ps[2].message.contains("expected one of"),
            "{}",
            ps[2].message
        );
        assert!(ps[3].message.contains("5 parsecs"), "{}", ps[3].message);
        assert_eq!(ps[5].message, "unknown key; did you mean health-check?");
    }

    #[test]
    fn distance_counts_edits() {
        assert_eq!(distance("heath-check", "health-check"), 1);
        assert_eq!(distance("", "abc"), 3);
        assert_eq!(distance("logs", "logs"), 0);
    }

    #[test]
    fn a_valid_file_has_no_section_problems() {
        assert!(problems(super::super::SAMPLE_CONFIG).is_empty());
    }
}
