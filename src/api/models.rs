//! The SDK's models that both halves answer with, one serde struct each, field for field as
//! `tencentcloud-sdk-python-gse`'s `models.py` (3.0.1416) has them: a renamed or missing field
//! is a compile error here, not a silent `null` in one half. `tests/cases/models.rs` holds
//! them against the SDK's own field lists.

use serde::{Deserialize, Serialize};

/// `Instance`: one host of a fleet (DescribeInstances, and nested in DescribeInstancesExtend's
/// `InstanceExtend`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Instance {
    /// The fleet the host serves.
    pub fleet_id: String,
    /// The host's id.
    pub instance_id: String,
    /// The address game clients are given.
    pub ip_address: String,
    /// The DNS name game clients are given (empty: none).
    pub dns_name: String,
    /// `linux`.
    pub operating_system: String,
    /// `Active`; on gse-control also `Unresponsive`, `Disconnected` or `Lost` (see
    /// [`InstanceStatus`]).
    pub status: String,
    /// The machine type (empty: self-hosted).
    #[serde(rename = "Type")]
    pub kind: String,
    /// When the host was first seen, RFC 3339 (empty when unknown).
    pub create_time: String,
    /// Its placement weight, 1–10.
    pub weight: i64,
    /// 1 when reserved (no new sessions are placed there).
    pub reserve_value: i64,
    /// The host's private address (self-hosted hosts have one address: the public one).
    pub private_ip_address: String,
}

/// What an instance's `Status` says of its agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstanceStatus {
    /// Connected and heard from.
    Active,
    /// Its stream is open but delivered nothing for `instance-lost-after`.
    Unresponsive,
    /// Its stream ended (the agent restarts, or is upgraded).
    Disconnected,
    /// Not heard from for `instance-lost-after`.
    Lost,
}

impl InstanceStatus {
    /// The status of an agent that is `connected` (its stream open) or not, and `lost` (not
    /// heard from within `instance-lost-after`) or not.
    pub fn of(connected: bool, lost: bool) -> Self {
        match (connected, lost) {
            (true, false) => Self::Active,
            (true, true) => Self::Unresponsive,
            (false, false) => Self::Disconnected,
            (false, true) => Self::Lost,
        }
    }

    /// The wire value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "Active",
            Self::Unresponsive => "Unresponsive",
            Self::Disconnected => "Disconnected",
            Self::Lost => "Lost",
        }
    }
}

/// `Event`: one fleet event (DescribeFleetEvents).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Event {
    /// `SERVER_PROCESS_CRASHED`, `GAME_SESSION_ACTIVATED`, …
    pub event_code: String,
    /// `event-<sequence>` on the agent, `event-<row id>` on gse-control.
    pub event_id: String,
    /// RFC 3339.
    pub event_time: String,
    /// What happened, in a sentence.
    pub message: String,
    /// A link to the process's archived logs (empty: none).
    pub pre_signed_log_url: String,
    /// The fleet.
    pub resource_id: String,
}
