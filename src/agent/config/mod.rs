//! `agent.yaml`: read, parse, validate.
//!
//! Three steps, as the house style asks: [`read`] does the I/O, [`parse`] turns text into a
//! [`Config`] and reports *every* semantic problem at once with its line; [`read_for_host`]
//! (for `run` and `check-config`) adds what the host must provide. Agent settings are
//! kebab-case; `runtime-configuration` keeps Tencent's PascalCase names so the JSON of a GSE
//! `DescribeRuntimeConfiguration` pastes in.

mod host;
mod launch_path;
mod model;
mod raw;
mod sections;
mod validate;

// The vocabulary every config file is read with.
pub use crate::common::config::{ByteSize, ConfigError, HumanDuration, Problem, locate};
pub use host::read_for_host;
pub use launch_path::{resolve_launch_path, within_game_root};
pub use model::*;
use raw::*;
pub use validate::{parse, parse_runtime, read};

/// GSE's mount point for the unpacked build; LaunchPaths under it map to `game-root`.
pub const GSE_GAME_ROOT: &str = "/local/game";

/// The embedded sample configuration used by `gse-agent run` without `--config`.
pub const SAMPLE_CONFIG: &str = include_str!("sample.yaml");

#[cfg(test)]
mod tests;
