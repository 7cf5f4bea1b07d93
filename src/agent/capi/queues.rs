//! The queue actions: Create/Describe/Update/DeleteGameServerSessionQueue, in the SDK's
//! `GameServerSessionQueue` model.

use serde_json::{Map, Value, json};

use super::{Capi, CapiError, unexpected};
use crate::agent::fleet::{Control, ControlReply};
use crate::api::params::{Params, key_value};
use crate::api::queue::{Destination, LatencyPolicy, Queue, QueueInput, arn, destination};

/// A queue's fields as a request gives them (`create`: Tags are read too).
pub(crate) fn queue_input(p: &Params, create: bool) -> Result<QueueInput, CapiError> {
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
pub(crate) fn queue_params(create: bool) -> &'static [&'static str] {
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

impl Capi {
    /// A queue as the SDK's model has it; a destination this host serves says `ACTIVE`.
    async fn queue_view(&self, q: &Queue) -> Value {
        let mut destinations = Vec::new();
        for d in &q.destinations {
            let here = match destination(d) {
                Ok(Destination::Fleet(f)) => f == self.cfg.fleet_id,
                Ok(Destination::Alias(a)) => {
                    self.resolve(&a).await.ok() == Some(self.cfg.fleet_id.clone())
                }
                Err(_) => false,
            };
            destinations.push(json!({
                "DestinationArn": d,
                "FleetStatus": if here { "ACTIVE" } else { "" },
            }));
        }
        json!({
            "Name": q.name,
            "GameServerSessionQueueArn": arn(&self.cfg.region, &q.name),
            "TimeoutInSeconds": q.timeout_secs,
            "Destinations": destinations,
            "PlayerLatencyPolicies": q.latency_policies.iter().map(|p| json!({
                "MaximumIndividualPlayerLatencyMilliseconds": p.max_millis,
                "PolicyDurationSeconds": p.duration_secs,
            })).collect::<Vec<_>>(),
            "Tags": q.tags.iter().map(|(k, v)| json!({"Key": k, "Value": v})).collect::<Vec<_>>(),
        })
    }

    async fn put_queue(&self, map: Map<String, Value>, create: bool) -> Result<Value, CapiError> {
        let p = Params::new(map, queue_params(create))?;
        let input = queue_input(&p, create)?;
        match self
            .fleet
            .control(Control::PutQueue { input, create })
            .await?
        {
            ControlReply::Queues(q) if q.len() == 1 => {
                Ok(json!({"GameServerSessionQueue": self.queue_view(&q[0]).await}))
            }
            other => Err(unexpected(&other)),
        }
    }

    pub(super) async fn create_queue(&self, map: Map<String, Value>) -> Result<Value, CapiError> {
        self.put_queue(map, true).await
    }

    pub(super) async fn update_queue(&self, map: Map<String, Value>) -> Result<Value, CapiError> {
        self.put_queue(map, false).await
    }

    pub(super) async fn delete_queue(&self, map: Map<String, Value>) -> Result<Value, CapiError> {
        let p = Params::new(map, &["Name"])?;
        let name = p.str("Name", 128)?;
        self.fleet.control(Control::DeleteQueue(name)).await?;
        Ok(json!({}))
    }

    pub(super) async fn describe_queues(
        &self,
        map: Map<String, Value>,
    ) -> Result<Value, CapiError> {
        let p = Params::new(map, &["Names", "Limit", "Offset", "Filters"])?;
        let mut names = Vec::new();
        for n in p.opt_array("Names", 100)?.into_iter().flatten() {
            match n {
                Value::String(s) => names.push(s.clone()),
                other => return Err(CapiError::type_of("Names", "a list of strings", other)),
            }
        }
        let limit = p.opt_int("Limit", 1, 100)?.unwrap_or(100) as usize;
        let offset = p.opt_int("Offset", 0, i64::MAX)?.unwrap_or(0) as usize;
        let queues = match self.fleet.control(Control::DescribeQueues(names)).await? {
            ControlReply::Queues(q) => q,
            other => return Err(unexpected(&other)),
        };
        let mut shown = Vec::new();
        for q in queues.iter().skip(offset).take(limit) {
            shown.push(self.queue_view(q).await);
        }
        Ok(json!({"GameServerSessionQueues": shown, "TotalCount": queues.len()}))
    }
}
