//! The upstream relay: every lifecycle event reaches the control plane through a durable
//! outbox, none lost; snapshots of the host's state let it reconcile; commands come back down
//! through the same typed door as the local control API.

pub mod book;
pub mod commands;
pub mod cut;
pub mod ledger;
pub mod outbox;
pub mod relay;
pub mod snapshot;

use crate::api::ErrorCode;
use crate::upstream_proto as up;

/// Tencent's code for the agent's own faults (an interrupted command, a failing ledger).
const INTERNAL_ERROR: ErrorCode = ErrorCode::InternalError;

/// A failed command result.
fn failure(id: impl Into<String>, code: ErrorCode, message: String) -> up::CommandResult {
    up::CommandResult {
        command_id: id.into(),
        ok: false,
        error_code: code.to_string(),
        message,
        response_json: String::new(),
    }
}
