//! Aliases: a stable name for a fleet that a backend creates sessions through, so the fleet
//! behind it can be swapped (SIMPLE routing) or closed with a message (TERMINAL routing).

pub mod wire;

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

/// Aliases kept at most.
pub const MAX_ALIASES: usize = 100;

/// Where an alias sends requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Routing {
    /// To this fleet.
    Simple {
        /// The fleet.
        fleet_id: String,
    },
    /// Nowhere: every request is refused with this message.
    Terminal {
        /// Said to the caller.
        message: String,
    },
}

/// One alias.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alias {
    /// `alias-…`.
    pub id: String,
    /// 1–1024 characters.
    pub name: String,
    /// At most 1024 characters.
    pub description: String,
    /// Where it routes.
    pub routing: Routing,
    /// Key/value tags, at most 50.
    pub tags: Vec<(String, String)>,
    /// When it was created.
    pub created: SystemTime,
    /// When it last changed.
    pub updated: SystemTime,
}

/// A new alias, or the fields an update sets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AliasInput {
    /// The alias updated (`None` for a new one).
    pub id: Option<String>,
    /// Name.
    pub name: Option<String>,
    /// Description.
    pub description: Option<String>,
    /// Routing.
    pub routing: Option<Routing>,
    /// Tags (new aliases only).
    pub tags: Vec<(String, String)>,
}

/// Why an alias request is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AliasError {
    /// A field breaks its rule.
    #[error("{field}: {message}")]
    Invalid {
        /// Which one.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
}

fn invalid(field: &'static str, message: impl Into<String>) -> AliasError {
    AliasError::Invalid {
        field,
        message: message.into(),
    }
}

impl Routing {
    /// Checks a routing strategy as GSE does.
    pub fn check(&self) -> Result<(), AliasError> {
        match self {
            Routing::Simple { fleet_id } => {
                if !fleet_id.starts_with("fleet-") || fleet_id.len() == 6 || fleet_id.len() > 128 {
                    return Err(invalid(
                        "RoutingStrategy.FleetId",
                        format!("{fleet_id:?} does not match ^fleet-\\S+"),
                    ));
                }
            }
            Routing::Terminal { message } => {
                if message.chars().count() > 1024 {
                    return Err(invalid(
                        "RoutingStrategy.Message",
                        "longer than 1024 characters",
                    ));
                }
            }
        }
        Ok(())
    }
}

impl AliasInput {
    /// Checks the fields that are set.
    pub fn check(&self) -> Result<(), AliasError> {
        if let Some(name) = &self.name {
            let n = name.chars().count();
            if n == 0 || n > 1024 {
                return Err(invalid("Name", "must be 1–1024 characters"));
            }
        }
        if self
            .description
            .as_ref()
            .is_some_and(|d| d.chars().count() > 1024)
        {
            return Err(invalid("Description", "longer than 1024 characters"));
        }
        if let Some(r) = &self.routing {
            r.check()?;
        }
        if self.tags.len() > 50 {
            return Err(invalid("Tags", "at most 50"));
        }
        Ok(())
    }
}

/// The Tencent resource name of an alias on this host, in its `region`.
pub fn arn(region: &str, id: &str) -> String {
    format!("qcs::gse:{region}:uin/0:alias/{id}")
}
