//! Game server session queues: where a placement may put a session (fleet or alias ARNs, in
//! order of preference), how long it may wait, and the players' latency policies.

pub mod wire;

use crate::api::ErrorCode;
use serde::{Deserialize, Serialize};

/// Queues kept at most.
pub const MAX_QUEUES: usize = 100;
/// A placement waits this long when the queue does not say.
pub const DEFAULT_TIMEOUT_SECS: u32 = 600;
/// Destinations per queue at most.
pub const MAX_DESTINATIONS: usize = 20;

/// One latency rule: for `duration_secs` (0: for the rest of the wait), place only where no
/// player's latency exceeds `max_millis`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LatencyPolicy {
    /// `MaximumIndividualPlayerLatencyMilliseconds`.
    pub max_millis: u32,
    /// `PolicyDurationSeconds`.
    pub duration_secs: u32,
}

/// One queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Queue {
    /// Its name: 1–128 of `[a-zA-Z0-9-]`.
    pub name: String,
    /// How long a placement may wait, in seconds.
    pub timeout_secs: u32,
    /// Fleet or alias ARNs, in order of preference.
    pub destinations: Vec<String>,
    /// Latency policies.
    pub latency_policies: Vec<LatencyPolicy>,
    /// Key/value tags.
    pub tags: Vec<(String, String)>,
}

/// A queue's fields as a request gives them (an update leaves `None` fields as they are).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueInput {
    /// The queue.
    pub name: String,
    /// `TimeoutInSeconds`.
    pub timeout_secs: Option<u32>,
    /// `Destinations`.
    pub destinations: Option<Vec<String>>,
    /// `PlayerLatencyPolicies`.
    pub latency_policies: Option<Vec<LatencyPolicy>>,
    /// `Tags` (new queues only).
    pub tags: Vec<(String, String)>,
}

/// What a destination ARN names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// `…:fleet/<FleetId>`.
    Fleet(String),
    /// `…:alias/<AliasId>`.
    Alias(String),
}

/// Reads a destination ARN: `qcs::gse:<region>:uin/<uin>:fleet/<FleetId>` or `…:alias/<AliasId>`.
pub fn destination(arn: &str) -> Result<Destination, String> {
    let bad = || {
        format!(
            "{arn:?} is not a fleet or alias ARN (qcs::gse:<region>:uin/<uin>:fleet/<FleetId> or …:alias/<AliasId>)"
        )
    };
    let rest = arn.strip_prefix("qcs::gse:").ok_or_else(bad)?;
    let mut parts = rest.splitn(3, ':');
    let (Some(_region), Some(uin), Some(resource)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    if !uin.starts_with("uin/") {
        return Err(bad());
    }
    match resource.split_once('/') {
        Some(("fleet", id)) if id.starts_with("fleet-") && id.len() > 6 => {
            Ok(Destination::Fleet(id.to_string()))
        }
        Some(("alias", id)) if id.starts_with("alias-") && id.len() > 6 => {
            Ok(Destination::Alias(id.to_string()))
        }
        _ => Err(bad()),
    }
}

impl QueueInput {
    /// Checks the fields that are set; the message names the parameter.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        let n = self.name.chars().count();
        if n == 0
            || n > 128
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            return Err((
                "Name",
                format!("{:?} is not 1–128 of [a-zA-Z0-9-]", self.name),
            ));
        }
        if self.timeout_secs == Some(0) {
            return Err(("TimeoutInSeconds", "must be at least 1".into()));
        }
        if let Some(d) = &self.destinations {
            if d.len() > MAX_DESTINATIONS {
                return Err(("Destinations", format!("at most {MAX_DESTINATIONS}")));
            }
            for arn in d {
                destination(arn).map_err(|m| ("Destinations", m))?;
            }
        }
        if self.latency_policies.as_ref().is_some_and(|p| p.len() > 10) {
            return Err(("PlayerLatencyPolicies", "at most 10".into()));
        }
        if self.tags.len() > 50 {
            return Err(("Tags", "at most 50".into()));
        }
        Ok(())
    }
}

/// Why CreateGameServerSessionQueue or UpdateGameServerSessionQueue is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PutError {
    /// A field breaks its rule.
    #[error("invalid {param}: {message}")]
    Invalid {
        /// Which one.
        param: &'static str,
        /// What is wrong.
        message: String,
    },
    /// A create names a queue that exists.
    #[error("queue {0} already exists")]
    Exists(String),
    /// An update names a queue that does not exist.
    #[error("queue {0} does not exist")]
    NotFound(String),
    /// There are [`MAX_QUEUES`] already.
    #[error("at most {MAX_QUEUES} queues; delete one first")]
    Full,
}

impl PutError {
    /// The Tencent Cloud API error code GSE answered it with (a name that is taken is
    /// `ResourceInUse`, "the resource is occupied").
    pub fn code(&self) -> crate::api::ErrorCode {
        match self {
            Self::Invalid { .. } => ErrorCode::InvalidParameterValue,
            Self::Exists(_) => ErrorCode::ResourceInUse,
            Self::NotFound(_) => ErrorCode::ResourceNotFound,
            Self::Full => ErrorCode::LimitExceeded,
        }
    }
}

impl From<PutError> for crate::api::CapiError {
    fn from(e: PutError) -> Self {
        Self::new(e.code(), e.to_string())
    }
}

/// The queue a create (`create`) or an update makes of `input`, as both halves apply it:
/// `existing` is the queue stored under its name, `count` how many there are.
pub fn put(
    existing: Option<Queue>,
    count: usize,
    input: QueueInput,
    create: bool,
) -> Result<Queue, PutError> {
    input
        .check()
        .map_err(|(param, message)| PutError::Invalid { param, message })?;
    match (existing, create) {
        (Some(_), true) => Err(PutError::Exists(input.name)),
        (None, false) => Err(PutError::NotFound(input.name)),
        (None, true) if count >= MAX_QUEUES => Err(PutError::Full),
        (None, true) => Ok(Queue {
            name: input.name,
            timeout_secs: input.timeout_secs.unwrap_or(DEFAULT_TIMEOUT_SECS),
            destinations: input.destinations.unwrap_or_default(),
            latency_policies: input.latency_policies.unwrap_or_default(),
            tags: input.tags,
        }),
        (Some(mut q), false) => {
            if let Some(t) = input.timeout_secs {
                q.timeout_secs = t;
            }
            if let Some(d) = input.destinations {
                q.destinations = d;
            }
            if let Some(p) = input.latency_policies {
                q.latency_policies = p;
            }
            Ok(q)
        }
    }
}

/// The Tencent resource name of a queue on this host, in its `region`.
pub fn arn(region: &str, name: &str) -> String {
    format!("qcs::gse:{region}:uin/0:gameserversessionqueue/{name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(name: &str) -> QueueInput {
        QueueInput {
            name: name.into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_put_is_refused_with_the_code_gse_gave() {
        let made = put(None, 0, input("q1"), true).unwrap();
        assert_eq!(made.timeout_secs, DEFAULT_TIMEOUT_SECS);
        let again = put(Some(made.clone()), 1, input("q1"), true).unwrap_err();
        assert_eq!(
            (again.code(), again.to_string().as_str()),
            (ErrorCode::ResourceInUse, "queue q1 already exists")
        );
        let full = put(None, MAX_QUEUES, input("q2"), true).unwrap_err();
        assert_eq!(full.code(), ErrorCode::LimitExceeded);
        let missing = put(None, 1, input("q3"), false).unwrap_err();
        assert_eq!(missing.code(), ErrorCode::ResourceNotFound);
        let bad = put(None, 0, input("no spaces"), true).unwrap_err();
        assert_eq!(bad.code(), ErrorCode::InvalidParameterValue);
        let changed = put(
            Some(made),
            1,
            QueueInput {
                timeout_secs: Some(9),
                ..input("q1")
            },
            false,
        )
        .unwrap();
        assert_eq!(changed.timeout_secs, 9);
    }

    #[test]
    fn destination_arns() {
        assert_eq!(
            destination("qcs::gse:ap-shanghai:uin/100001:fleet/fleet-abc"),
            Ok(Destination::Fleet("fleet-abc".into()))
        );
        assert_eq!(
            destination("qcs::gse:local:uin/0:alias/alias-1"),
            Ok(Destination::Alias("alias-1".into()))
        );
        for bad in [
            "fleet-abc",
            "qcs::gse:x:uin/1:fleet/",
            "qcs::gse:x:1:fleet/fleet-a",
            "qcs::cvm:x:uin/1:fleet/fleet-a",
            "qcs::gse:x:uin/1:queue/q",
        ] {
            assert!(destination(bad).is_err(), "{bad}");
        }
    }
}
