//! Queues on the wire: the queue a request names, and which parameters each action takes.

use serde_json::Value;

use crate::api::CapiError;
use crate::api::params::{Params, key_value};
use crate::api::queue::{LatencyPolicy, QueueInput};

/// A queue's fields as a request gives them (`create`: Tags are read too).
pub fn queue_input(p: &Params, create: bool) -> Result<QueueInput, CapiError> {
    let destinations = match p.opt_array("Destinations", crate::api::queue::MAX_DESTINATIONS)? {
        None => None,
        Some(list) => Some(
            list.iter()
                .map(|d| match d {
                    Value::Object(o) => match o.get("DestinationArn") {
                        Some(Value::String(s)) => Ok(s.clone()),
                        _ => Err(CapiError::missing("Destinations.DestinationArn")),
                    },
                    other => Err(CapiError::type_of(
                        "Destinations",
                        "a list of {DestinationArn}",
                        other,
                    )),
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
    };
    let latency_policies = match p.opt_array("PlayerLatencyPolicies", 10)? {
        None => None,
        Some(list) => Some(
            list.iter()
                .map(|v| {
                    let Value::Object(o) = v else {
                        return Err(CapiError::type_of("PlayerLatencyPolicies", "objects", v));
                    };
                    let field = |name: &str| {
                        o.get(name)
                            .and_then(Value::as_u64)
                            .and_then(|n| u32::try_from(n).ok())
                    };
                    Ok(LatencyPolicy {
                        max_millis: field("MaximumIndividualPlayerLatencyMilliseconds")
                            .ok_or_else(|| {
                                CapiError::missing(
                                    "PlayerLatencyPolicies.MaximumIndividualPlayerLatencyMilliseconds",
                                )
                            })?,
                        duration_secs: field("PolicyDurationSeconds").unwrap_or(0),
                    })
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
    };
    let mut tags = Vec::new();
    if create {
        for t in p.opt_array("Tags", 50)?.into_iter().flatten() {
            tags.push(key_value("Tags", t, 128, 256)?);
        }
    }
    Ok(QueueInput {
        name: p.str("Name", 128)?,
        timeout_secs: p.opt_int("TimeoutInSeconds", 1, 86_400)?.map(|t| t as u32),
        destinations,
        latency_policies,
        tags,
    })
}

/// The parameters Create (`true`) or UpdateGameServerSessionQueue take.
pub fn queue_params(create: bool) -> &'static [&'static str] {
    if create {
        &[
            "Name",
            "Destinations",
            "PlayerLatencyPolicies",
            "TimeoutInSeconds",
            "Tags",
        ]
    } else {
        &[
            "Name",
            "Destinations",
            "PlayerLatencyPolicies",
            "TimeoutInSeconds",
        ]
    }
}
