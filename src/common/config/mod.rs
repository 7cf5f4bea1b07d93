//! What both halves' config files are read with: human durations and sizes, problems reported
//! with their file and line, and finding a key's line (`locate`).

mod bytes;
mod duration;
mod error;
pub mod locate;

pub use bytes::ByteSize;
pub use duration::HumanDuration;
pub use error::{ConfigError, Problem, without_position};
