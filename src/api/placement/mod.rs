//! Game server session placements: a request to start a session through a queue, served when
//! a healthy idle process of a destination this host serves can take it.

pub mod wire;

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::api::sessions::NewPlayer;

/// Finished placements kept for Describe at most (pending ones are all kept).
pub const FINISHED_KEPT: usize = 1000;
/// Pending placements at most.
pub const MAX_PENDING: usize = 1000;

/// Where a placement is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Status {
    /// Waiting for a process (or for its session to become ACTIVE).
    Pending,
    /// The session is ACTIVE and its players are placed.
    Fulfilled,
    /// StopGameServerSessionPlacement came first.
    Cancelled,
    /// The queue's timeout passed first.
    TimedOut,
    /// It can never succeed (see its reason).
    Failed,
}

impl Status {
    /// GSE's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "PENDING",
            Status::Fulfilled => "FULFILLED",
            Status::Cancelled => "CANCELLED",
            Status::TimedOut => "TIMED_OUT",
            Status::Failed => "FAILED",
        }
    }
}

/// A player's latency to a region, as the request gave it (stored and echoed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Latency {
    /// PlayerId.
    pub player_id: String,
    /// RegionIdentifier.
    pub region: String,
    /// LatencyInMilliseconds.
    pub millis: u32,
}

/// What StartGameServerSessionPlacement asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlacementRequest {
    /// PlacementId: 1–48 of `[a-zA-Z0-9-]`, unique.
    pub id: String,
    /// GameServerSessionQueueName.
    pub queue: String,
    /// MaximumPlayerSessionCount.
    pub max_players: i32,
    /// GameServerSessionName.
    pub name: String,
    /// GameProperties.
    pub game_properties: Vec<(String, String)>,
    /// GameServerSessionData.
    pub data: String,
    /// DesiredPlayerSessions.
    pub players: Vec<(String, String)>,
    /// PlayerLatencies.
    pub latencies: Vec<Latency>,
}

/// One placement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    /// What was asked.
    pub request: PlacementRequest,
    /// Where it is.
    pub status: Status,
    /// Why it failed.
    pub reason: String,
    /// When it started.
    pub start: SystemTime,
    /// When it finished.
    pub end: Option<SystemTime>,
    /// When it times out.
    pub deadline: SystemTime,
    /// The session started for it, once one is.
    pub gss_id: Option<String>,
    /// Where players connect, once fulfilled.
    pub ip_address: String,
    /// The port.
    pub port: i32,
    /// (PlayerId, PlayerSessionId) of the placed players.
    pub placed: Vec<(String, String)>,
}

impl PlacementRequest {
    /// Checks the request; the message names the parameter.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        let n = self.id.chars().count();
        if n == 0
            || n > 48
            || !self
                .id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            return Err((
                "PlacementId",
                format!("{:?} is not 1–48 of [a-zA-Z0-9-]", self.id),
            ));
        }
        if self.max_players < 0 {
            return Err(("MaximumPlayerSessionCount", "must not be negative".into()));
        }
        if self.players.len() > 25 {
            return Err(("DesiredPlayerSessions", "at most 25".into()));
        }
        if self.players.len() > self.max_players as usize {
            return Err((
                "DesiredPlayerSessions",
                format!(
                    "{} players do not fit MaximumPlayerSessionCount {}",
                    self.players.len(),
                    self.max_players
                ),
            ));
        }
        if self.latencies.len() > 100 {
            return Err(("PlayerLatencies", "at most 100".into()));
        }
        Ok(())
    }

    /// The desired players as the fleet joins them.
    pub fn new_players(&self) -> Vec<NewPlayer> {
        self.players
            .iter()
            .map(|(id, data)| NewPlayer {
                player_id: id.clone(),
                player_data: data.clone(),
            })
            .collect()
    }
}
