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

/// `GameProperty`: one key and value of a session's game properties.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct GameProperty {
    /// The key.
    pub key: String,
    /// The value.
    pub value: String,
}

/// `GameServerSession`: a session as the agent reports it and both halves answer with it.
/// gse-control stores it as the agent sent it and reads it back through this type, so a field
/// that is missing or renamed is a refusal of the stored row, never a silent 0.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct GameServerSession {
    /// RFC 3339.
    pub creation_time: String,
    /// Who created it.
    pub creator_id: String,
    /// Player sessions RESERVED or ACTIVE.
    pub current_player_session_count: i64,
    /// The DNS name game clients are given (empty: none).
    pub dns_name: String,
    /// The fleet.
    pub fleet_id: String,
    /// The game properties.
    pub game_properties: Vec<GameProperty>,
    /// Data for the game.
    pub game_server_session_data: String,
    /// `qcs::gse:<region>::gameserversession/<fleet>/<id>`.
    pub game_server_session_id: String,
    /// The address game clients connect to.
    pub ip_address: String,
    /// The matchmaker's data (empty: none).
    pub matchmaker_data: String,
    /// The most player sessions it takes.
    pub maximum_player_session_count: i64,
    /// Its name.
    pub name: String,
    /// `ACCEPT_ALL` or `DENY_ALL`.
    pub player_session_creation_policy: String,
    /// The port game clients connect to.
    pub port: i64,
    /// `ACTIVATING`, `ACTIVE`, `TERMINATING`, `TERMINATED`, `ERROR`.
    pub status: String,
    /// Why it has its status (e.g. `INTERRUPTED`; empty: none).
    pub status_reason: String,
    /// RFC 3339, once it ended.
    pub termination_time: Option<String>,
    /// The machine type.
    pub instance_type: String,
    /// What the game reported with ReportCustomData.
    pub current_custom_count: i64,
    /// The most the game reported with ReportCustomData.
    pub max_custom_count: i64,
    /// Its host's weight.
    pub weight: i64,
    /// `Enable` or `Disable`.
    pub availability_status: String,
}
