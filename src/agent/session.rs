//! Game server sessions and player sessions: models and their pure transitions.

use std::fmt;
use std::time::SystemTime;

use crate::proto;

/// Game server session status (Tencent's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum GssStatus {
    /// Handed to a process; waiting for ActivateGameServerSession.
    Activating,
    /// Activated; players may join.
    Active,
    /// The hosting process is ending.
    Terminating,
    /// Ended.
    Terminated,
    /// Failed (activation timeout, refused start, crashed process).
    Error,
}

impl GssStatus {
    /// Tencent's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Activating => "ACTIVATING",
            Self::Active => "ACTIVE",
            Self::Terminating => "TERMINATING",
            Self::Terminated => "TERMINATED",
            Self::Error => "ERROR",
        }
    }

    /// Parses Tencent's spelling.
    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Activating,
            Self::Active,
            Self::Terminating,
            Self::Terminated,
            Self::Error,
        ]
        .into_iter()
        .find(|v| v.as_str() == s)
    }

    /// Terminated or Error: nothing will change any more.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Terminated | Self::Error)
    }
}

/// What can happen to a game server session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum GssInput {
    /// The process called ActivateGameServerSession.
    Activate,
    /// The process called TerminateGameServerSession.
    Terminate,
    /// The hosting process called ProcessEnding.
    ProcessEnding,
    /// Activation did not happen in time, or the process refused the session.
    Fail,
    /// The hosting process exited; `clean` if it ended normally.
    ProcessExited {
        /// Normal end rather than crash or kill.
        clean: bool,
    },
}

/// A transition that the current status does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("game server session is {from}, cannot {input}")]
pub struct IllegalTransition {
    /// Status at the time.
    pub from: &'static str,
    /// What was attempted.
    pub input: &'static str,
}

impl GssStatus {
    /// The pure transition function.
    pub fn next(self, input: GssInput) -> Result<GssStatus, IllegalTransition> {
        use GssInput as I;
        use GssStatus as S;
        let to = match (self, input) {
            (S::Activating, I::Activate) => S::Active,
            (S::Activating | S::Active | S::Terminating, I::Terminate) => S::Terminated,
            (S::Activating | S::Active, I::ProcessEnding) => S::Terminating,
            (S::Terminating, I::ProcessEnding) => S::Terminating,
            (S::Activating, I::Fail) => S::Error,
            (S::Activating | S::Active | S::Terminating, I::ProcessExited { clean: true }) => {
                S::Terminated
            }
            (S::Activating | S::Active | S::Terminating, I::ProcessExited { clean: false }) => {
                S::Error
            }
            (from, input) => {
                return Err(IllegalTransition {
                    from: from.as_str(),
                    input: match input {
                        I::Activate => "activate",
                        I::Terminate => "terminate",
                        I::ProcessEnding => "end with its process",
                        I::Fail => "fail activation",
                        I::ProcessExited { .. } => "end with its process",
                    },
                });
            }
        };
        Ok(to)
    }
}

impl fmt::Display for GssStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether new player sessions may be created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum CreationPolicy {
    /// Joins are accepted.
    AcceptAll,
    /// Joins are refused.
    DenyAll,
}

impl CreationPolicy {
    /// Tencent's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AcceptAll => "ACCEPT_ALL",
            Self::DenyAll => "DENY_ALL",
        }
    }

    /// Parses Tencent's spelling.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "ACCEPT_ALL" => Some(Self::AcceptAll),
            "DENY_ALL" => Some(Self::DenyAll),
            _ => None,
        }
    }
}

/// A game server session on this host.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct GameSession {
    /// `qcs::gse:<region>::gameserversession/<fleet>/gssess-<uuid>`.
    pub id: String,
    /// The fleet.
    pub fleet_id: String,
    /// Name given at creation.
    pub name: String,
    /// CreatorId given at creation.
    pub creator_id: String,
    /// MaximumPlayerSessionCount.
    pub max_players: i32,
    /// GameProperties (key, value).
    pub game_properties: Vec<(String, String)>,
    /// GameServerSessionData.
    pub data: String,
    /// MatchmakerData.
    pub matchmaker_data: String,
    /// The hosting process's clientPort.
    pub port: i32,
    /// This host's address for players.
    pub ip_address: String,
    /// DNS name (empty locally).
    pub dns_name: String,
    /// Status.
    pub status: GssStatus,
    /// Why it is in its status, for ERROR and TERMINATED.
    pub status_reason: String,
    /// Player session creation policy.
    pub policy: CreationPolicy,
    /// When it was created.
    pub creation_time: SystemTime,
    /// When it ended.
    pub termination_time: Option<SystemTime>,
    /// ReportCustomData's current count.
    pub current_custom_count: i32,
    /// ReportCustomData's maximum.
    pub max_custom_count: i32,
    /// The agent id of the hosting process.
    pub process_id: String,
    /// Its pid.
    pub pid: u32,
    /// RESERVED + ACTIVE player sessions.
    pub current_players: i32,
    /// This session's protection policy (UpdateGameServerSession); `None`: the fleet's.
    pub protection: Option<crate::agent::config::ProtectionPolicy>,
}

impl GameSession {
    /// The message sent in OnStartGameServerSession.
    pub fn to_proto(&self) -> proto::GameServerSession {
        proto::GameServerSession {
            game_server_session_id: self.id.clone(),
            fleet_id: self.fleet_id.clone(),
            name: self.name.clone(),
            max_players: self.max_players,
            joinable: self.policy == CreationPolicy::AcceptAll,
            game_properties: self
                .game_properties
                .iter()
                .map(|(key, value)| proto::GameProperty {
                    key: key.clone(),
                    value: value.clone(),
                })
                .collect(),
            port: self.port,
            ip_address: self.ip_address.clone(),
            game_server_session_data: self.data.clone(),
            matchmaker_data: self.matchmaker_data.clone(),
            dns_name: self.dns_name.clone(),
        }
    }
}

/// Player session status (Tencent's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum PlayerStatus {
    /// Joined, not yet accepted by the game.
    Reserved,
    /// Accepted by the game.
    Active,
    /// Left, or its game server session ended.
    Completed,
    /// Not accepted within the reservation timeout.
    TimedOut,
}

impl PlayerStatus {
    /// Tencent's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reserved => "RESERVED",
            Self::Active => "ACTIVE",
            Self::Completed => "COMPLETED",
            Self::TimedOut => "TIMEDOUT",
        }
    }

    /// Parses Tencent's spelling.
    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Reserved,
            Self::Active,
            Self::Completed,
            Self::TimedOut,
        ]
        .into_iter()
        .find(|v| v.as_str() == s)
    }

    /// Counts against the session's maximum.
    pub fn holds_slot(self) -> bool {
        matches!(self, Self::Reserved | Self::Active)
    }
}

/// What can happen to a player session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum PlayerInput {
    /// AcceptPlayerSession.
    Accept,
    /// RemovePlayerSession, or its game server session ended.
    Remove,
    /// The reservation timed out.
    Timeout,
}

impl PlayerStatus {
    /// The pure transition function; the error names the status that forbids it.
    pub fn next(self, input: PlayerInput) -> Result<PlayerStatus, &'static str> {
        use PlayerInput as I;
        use PlayerStatus as S;
        match (self, input) {
            (S::Reserved, I::Accept) => Ok(S::Active),
            (S::Reserved | S::Active, I::Remove) => Ok(S::Completed),
            (S::Reserved, I::Timeout) => Ok(S::TimedOut),
            (from, _) => Err(from.as_str()),
        }
    }
}

/// A player session.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct PlayerSession {
    /// `psess-<uuid>`.
    pub id: String,
    /// The player.
    pub player_id: String,
    /// Its game server session.
    pub gss_id: String,
    /// The fleet.
    pub fleet_id: String,
    /// Address players connect to.
    pub ip_address: String,
    /// Port players connect to.
    pub port: i32,
    /// DNS name (empty locally).
    pub dns_name: String,
    /// PlayerData given at join.
    pub player_data: String,
    /// Status.
    pub status: PlayerStatus,
    /// When it was reserved.
    pub creation_time: SystemTime,
    /// When it ended.
    pub termination_time: Option<SystemTime>,
}

/// Unix seconds; 0 for `None`.
pub fn unix_seconds(t: Option<SystemTime>) -> i64 {
    t.and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl PlayerSession {
    /// The SDK's view.
    pub fn to_proto(&self) -> proto::PlayerSession {
        proto::PlayerSession {
            player_session_id: self.id.clone(),
            player_id: self.player_id.clone(),
            game_server_session_id: self.gss_id.clone(),
            fleet_id: self.fleet_id.clone(),
            ip_address: self.ip_address.clone(),
            status: self.status.as_str().to_string(),
            creation_time: unix_seconds(Some(self.creation_time)),
            termination_time: unix_seconds(self.termination_time),
            port: self.port,
            player_data: self.player_data.clone(),
            dns_name: self.dns_name.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_happy_path_and_failures() {
        use GssInput as I;
        use GssStatus as S;
        assert_eq!(S::Activating.next(I::Activate), Ok(S::Active));
        assert_eq!(S::Active.next(I::ProcessEnding), Ok(S::Terminating));
        assert_eq!(
            S::Terminating.next(I::ProcessExited { clean: true }),
            Ok(S::Terminated)
        );
        assert_eq!(
            S::Active.next(I::ProcessExited { clean: false }),
            Ok(S::Error)
        );
        assert_eq!(S::Activating.next(I::Fail), Ok(S::Error));
        let err = S::Active.next(I::Activate).unwrap_err();
        assert_eq!(
            err.to_string(),
            "game server session is ACTIVE, cannot activate"
        );
        for end in [S::Terminated, S::Error] {
            for input in [I::Activate, I::Terminate, I::Fail, I::ProcessEnding] {
                assert!(end.next(input).is_err(), "{end:?} {input:?}");
            }
        }
    }

    #[test]
    fn player_transitions() {
        use PlayerInput as I;
        use PlayerStatus as S;
        assert_eq!(S::Reserved.next(I::Accept), Ok(S::Active));
        assert_eq!(S::Active.next(I::Remove), Ok(S::Completed));
        assert_eq!(S::Reserved.next(I::Timeout), Ok(S::TimedOut));
        assert_eq!(S::Active.next(I::Timeout), Err("ACTIVE"));
        assert_eq!(S::TimedOut.next(I::Accept), Err("TIMEDOUT"));
        assert!(S::Reserved.holds_slot() && !S::Completed.holds_slot());
    }

    #[test]
    fn names_round_trip() {
        for s in ["ACTIVATING", "ACTIVE", "TERMINATING", "TERMINATED", "ERROR"] {
            assert_eq!(GssStatus::parse(s).unwrap().as_str(), s);
        }
        for s in ["RESERVED", "ACTIVE", "COMPLETED", "TIMEDOUT"] {
            assert_eq!(PlayerStatus::parse(s).unwrap().as_str(), s);
        }
        assert_eq!(unix_seconds(None), 0);
    }
}
