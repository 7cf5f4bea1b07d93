//! Config errors: every broken rule with its file and line.

use std::fmt;
use std::path::PathBuf;

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

impl ConfigError {
    /// A YAML syntax or type error in `file`, at serde's position (line 1 when it gives none).
    pub fn yaml(file: &str, e: &serde_yaml::Error) -> Self {
        let (line, column) = e
            .location()
            .map(|l| (l.line(), l.column()))
            .unwrap_or((1, 1));
        Self::Parse {
            file: file.to_string(),
            line,
            column,
            message: without_position(&e.to_string()),
        }
    }
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

impl Problem {
    /// The problem `message` at `path` of `text` (its line found with [`super::locate`]),
    /// keyed as `section.key[2].field`.
    pub fn at(text: &str, path: &[super::locate::Segment], message: impl Into<String>) -> Self {
        use super::locate::Segment::{Index, Key};
        let key = path
            .iter()
            .map(|s| match s {
                Key(k) => format!(".{k}"),
                Index(i) => format!("[{i}]"),
            })
            .collect::<String>()
            .trim_start_matches('.')
            .to_string();
        Self {
            line: super::locate::locate(text, path),
            key,
            message: message.into(),
        }
    }
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
