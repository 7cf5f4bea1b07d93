//! The Tencent Cloud API both halves serve, as far as it is shared so far: the envelope and its
//! errors (`envelope`, `error`), reading a request and its parameters (`request`, `params`),
//! the browser guard (`guard`), the audit record (`audit`), TC3 signatures and CAM key
//! policies (`tc3`), the search grammar of SearchGameServerSessions (`search`), and the rules
//! of aliases and queues (`alias`, `queue`), and the SDK's models both answer with (`models`).
//! It imports neither half.

pub mod alias;
pub mod audit;
pub mod envelope;
mod error;
pub mod guard;
pub mod limits;
pub mod models;
pub mod params;
pub mod placement;
pub mod queue;
pub mod request;
pub mod requests;
pub mod runtime;
pub mod search;
pub mod server;
pub mod sessions;
pub mod tc3;
pub mod time;

pub use envelope::envelope;
pub use error::{CapiError, ErrorCode};
pub use request::request;
