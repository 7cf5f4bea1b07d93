//! `agent.yaml`: read, parse, validate.
//!
//! Three steps, as the house style asks: [`read`] does the I/O, [`parse`] turns text into a
//! [`Config`] and reports *every* semantic problem at once with its line; [`read_for_host`]
//! (for `run` and `check-config`) adds what the host must provide. Agent settings are
//! kebab-case; `runtime-configuration` keeps Tencent's PascalCase names so the JSON of a GSE
//! `DescribeRuntimeConfiguration` pastes in.

mod host;
mod model;
mod raw;
mod sections;
mod validate;

// The vocabulary every config file is read with.
use crate::api::runtime::RawRuntime;
pub use crate::common::config::{ByteSize, ConfigError, HumanDuration, Problem, locate};
pub use host::read_for_host;
pub use model::*;
use raw::*;
pub use validate::{parse, read};
// GSE's RuntimeConfiguration is the API's: the agent reads it in agent.yaml as it is.
pub use crate::api::runtime::{
    GSE_GAME_ROOT, ProcessSpec, RuntimeConfiguration, parse as parse_runtime, resolve_launch_path,
    within_game_root,
};

/// The embedded sample configuration used by `gse-agent run` without `--config`.
pub const SAMPLE_CONFIG: &str = include_str!("sample.yaml");

#[cfg(test)]
mod tests;
