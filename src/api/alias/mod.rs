//! Aliases: a stable name for a fleet that a backend creates sessions through, so the fleet
//! behind it can be swapped (SIMPLE routing) or closed with a message (TERMINAL routing).

pub mod wire;

use crate::api::ErrorCode;
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
    /// A new alias lacks a required parameter.
    #[error("the parameter `{0}` is required")]
    Missing(&'static str),
    /// The alias an update names does not exist.
    #[error("alias {0} does not exist")]
    NotFound(String),
    /// There are [`MAX_ALIASES`] already.
    #[error("at most {MAX_ALIASES} aliases; delete one first")]
    Full,
}

impl AliasError {
    /// The Tencent Cloud API error code GSE answered it with.
    pub fn code(&self) -> crate::api::ErrorCode {
        match self {
            Self::Invalid { .. } => ErrorCode::InvalidParameterValue,
            Self::Missing(_) => ErrorCode::MissingParameter,
            Self::NotFound(_) => ErrorCode::ResourceNotFound,
            Self::Full => ErrorCode::LimitExceeded,
        }
    }
}

impl From<AliasError> for crate::api::CapiError {
    fn from(e: AliasError) -> Self {
        Self::new(e.code(), e.to_string())
    }
}

/// CreateAlias (`input.id` is `None`) or UpdateAlias, as both halves apply it: `existing` is
/// the alias stored under `input.id`, `count` how many there are; a new alias gets `new_id()`
/// and both times are `now`.
pub fn put(
    existing: Option<Alias>,
    count: usize,
    input: AliasInput,
    new_id: impl FnOnce() -> String,
    now: SystemTime,
) -> Result<Alias, AliasError> {
    input.check()?;
    match input.id {
        Some(id) => {
            let mut a = existing.ok_or(AliasError::NotFound(id))?;
            if let Some(name) = input.name {
                a.name = name;
            }
            if let Some(d) = input.description {
                a.description = d;
            }
            if let Some(r) = input.routing {
                a.routing = r;
            }
            a.updated = now;
            Ok(a)
        }
        None => {
            if count >= MAX_ALIASES {
                return Err(AliasError::Full);
            }
            let name = input.name.ok_or(AliasError::Missing("Name"))?;
            let routing = input
                .routing
                .ok_or(AliasError::Missing("RoutingStrategy"))?;
            Ok(Alias {
                id: new_id(),
                name,
                description: input.description.unwrap_or_default(),
                routing,
                tags: input.tags,
                created: now,
                updated: now,
            })
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn new(name: Option<&str>) -> AliasInput {
        AliasInput {
            name: name.map(str::to_string),
            routing: Some(Routing::Simple {
                fleet_id: "fleet-a".into(),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_put_is_refused_with_the_code_gse_gave() {
        let now = SystemTime::UNIX_EPOCH;
        let made = put(None, 0, new(Some("a")), || "alias-1".into(), now).unwrap();
        assert_eq!((made.id.as_str(), made.name.as_str()), ("alias-1", "a"));
        let full = put(None, MAX_ALIASES, new(Some("b")), || "alias-2".into(), now).unwrap_err();
        assert_eq!(full.code(), ErrorCode::LimitExceeded);
        let unnamed = put(None, 1, new(None), || "alias-3".into(), now).unwrap_err();
        assert_eq!(unnamed.code(), ErrorCode::MissingParameter);
        let gone = AliasInput {
            id: Some("alias-9".into()),
            ..Default::default()
        };
        let e = put(None, 1, gone, String::new, now).unwrap_err();
        assert_eq!(
            (e.code(), e.to_string().as_str()),
            (ErrorCode::ResourceNotFound, "alias alias-9 does not exist")
        );
        let later = now + std::time::Duration::from_secs(5);
        let renamed = AliasInput {
            id: Some("alias-1".into()),
            name: Some("b".into()),
            ..Default::default()
        };
        let updated = put(Some(made), 1, renamed, String::new, later).unwrap();
        assert_eq!(
            (updated.name.as_str(), updated.updated, updated.created),
            ("b", later, now)
        );
    }
}
