//! The session requests both halves take (CreateGameServerSession's, UpdateGameServerSession's,
//! the players of a join), each checked against GSE's limits by one rule, the refusal naming
//! the parameter.

use crate::api::ErrorCode;

/// A value outside GSE's limits: `invalid PARAM: why`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {param}: {message}")]
pub struct Invalid {
    /// The parameter.
    pub param: &'static str,
    /// Why.
    pub message: String,
}

impl From<Invalid> for super::CapiError {
    fn from(e: Invalid) -> Self {
        Self::new(ErrorCode::InvalidParameterValue, e.to_string())
    }
}

/// Parameters of a new game server session.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewSession {
    /// MaximumPlayerSessionCount.
    pub max_players: i32,
    /// Name.
    pub name: String,
    /// CreatorId.
    pub creator_id: String,
    /// GameProperties.
    pub game_properties: Vec<(String, String)>,
    /// GameServerSessionData.
    pub data: String,
    /// Custom id suffix (GameServerSessionId).
    pub custom_id: Option<String>,
    /// IdempotencyToken.
    pub idempotency_token: Option<String>,
}

/// What UpdateGameServerSession changes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionUpdate {
    /// The session.
    pub gss_id: String,
    /// New MaximumPlayerSessionCount.
    pub max_players: Option<i32>,
    /// New Name.
    pub name: Option<String>,
    /// New PlayerSessionCreationPolicy (ACCEPT_ALL or DENY_ALL).
    pub creation_policy: Option<String>,
    /// New ProtectionPolicy (NoProtection, TimeLimitProtection, FullProtection).
    pub protection: Option<String>,
}

/// One player to join.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewPlayer {
    /// PlayerId.
    pub player_id: String,
    /// PlayerData.
    pub player_data: String,
}

/// Tencent Cloud's limits on a new game server session, checked where the command is handled,
/// whichever door (control API or upstream) it came through.
impl NewSession {
    /// Checks every limit; the error names the parameter.
    pub fn check(&self) -> Result<(), Invalid> {
        if self.max_players < 0 {
            return Err(invalid(
                "MaximumPlayerSessionCount",
                format!("{} is negative", self.max_players),
            ));
        }
        max_chars("Name", &self.name, 1024)?;
        max_chars("CreatorId", &self.creator_id, 1024)?;
        max_chars("GameServerSessionData", &self.data, 4096)?;
        if self.game_properties.len() > 16 {
            return Err(invalid(
                "GameProperties",
                format!(
                    "has {} items; at most 16 are allowed",
                    self.game_properties.len()
                ),
            ));
        }
        for (key, value) in &self.game_properties {
            max_chars("GameProperties.Key", key, 32)?;
            max_chars("GameProperties.Value", value, 96)?;
        }
        if let Some(id) = &self.custom_id {
            max_chars("GameServerSessionId", id, 48)?;
            if id.is_empty()
                || !id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(invalid(
                    "GameServerSessionId",
                    "may hold only letters, digits, '-' and '_'",
                ));
            }
        }
        if let Some(t) = &self.idempotency_token {
            max_chars("IdempotencyToken", t, 48)?;
        }
        Ok(())
    }
}

/// Checks the players of a join: 1 to 25, ids of 1 to 1024 characters and distinct, data of at
/// most 2048.
pub fn check_players(players: &[NewPlayer]) -> Result<(), Invalid> {
    if players.is_empty() || players.len() > 25 {
        return Err(invalid(
            "PlayerIds",
            format!("has {} players; 1 to 25 are allowed", players.len()),
        ));
    }
    for (i, p) in players.iter().enumerate() {
        if p.player_id.is_empty() {
            return Err(invalid("PlayerId", "must not be empty"));
        }
        max_chars("PlayerId", &p.player_id, 1024)?;
        max_chars("PlayerData", &p.player_data, 2048)?;
        if players[..i].iter().any(|q| q.player_id == p.player_id) {
            return Err(invalid(
                "PlayerIds",
                format!("{:?} is listed twice", p.player_id),
            ));
        }
    }
    Ok(())
}

fn invalid(param: &'static str, message: impl Into<String>) -> Invalid {
    Invalid {
        param,
        message: message.into(),
    }
}

fn max_chars(param: &'static str, value: &str, max: usize) -> Result<(), Invalid> {
    let n = value.chars().count();
    if n > max {
        return Err(invalid(
            param,
            format!("is {n} characters long; at most {max} are allowed"),
        ));
    }
    Ok(())
}
