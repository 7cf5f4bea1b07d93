//! The queue actions: Create/Describe/Update/DeleteGameServerSessionQueue, in the SDK's
//! `GameServerSessionQueue` model.

use serde_json::{Map, Value, json};

use super::{Capi, CapiError, unexpected};
use crate::agent::fleet::{Control, ControlReply};
use crate::api::params::Params;
use crate::api::queue::wire::{queue_input, queue_params};
use crate::api::queue::{Destination, Queue, arn, destination};

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
        let names = p.opt_strings("Names", 100)?.unwrap_or_default();
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
