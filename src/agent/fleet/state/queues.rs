//! Game server session queues: created, described, updated and deleted here, saved with the
//! rest of the fleet.

use super::Fleet;
use crate::agent::fleet::api::{ControlReply, FleetError};
use crate::api::queue::{DEFAULT_TIMEOUT_SECS, MAX_QUEUES, Queue, QueueInput};

impl Fleet {
    /// CreateGameServerSessionQueue (`create`) or UpdateGameServerSessionQueue.
    pub(super) fn put_queue(
        &mut self,
        input: QueueInput,
        create: bool,
    ) -> Result<ControlReply, FleetError> {
        input
            .check()
            .map_err(|(param, message)| FleetError::Invalid { param, message })?;
        let queue = if create {
            if self.queues.contains_key(&input.name) {
                return Err(FleetError::Denied(format!(
                    "queue {} already exists",
                    input.name
                )));
            }
            if self.queues.len() >= MAX_QUEUES {
                return Err(FleetError::Limit(format!(
                    "at most {MAX_QUEUES} queues; delete one first"
                )));
            }
            let q = Queue {
                name: input.name,
                timeout_secs: input.timeout_secs.unwrap_or(DEFAULT_TIMEOUT_SECS),
                destinations: input.destinations.unwrap_or_default(),
                latency_policies: input.latency_policies.unwrap_or_default(),
                tags: input.tags,
            };
            self.queues.insert(q.name.clone(), q.clone());
            q
        } else {
            let q = self
                .queues
                .get_mut(&input.name)
                .ok_or_else(|| FleetError::NotFound {
                    kind: "game server session queue",
                    id: input.name.clone(),
                })?;
            if let Some(t) = input.timeout_secs {
                q.timeout_secs = t;
            }
            if let Some(d) = input.destinations {
                q.destinations = d;
            }
            if let Some(p) = input.latency_policies {
                q.latency_policies = p;
            }
            q.clone()
        };
        Ok(ControlReply::Queues(vec![queue]))
    }

    pub(super) fn delete_queue(&mut self, name: &str) -> Result<ControlReply, FleetError> {
        self.queues
            .remove(name)
            .map(|_| ControlReply::Done)
            .ok_or_else(|| FleetError::NotFound {
                kind: "game server session queue",
                id: name.to_string(),
            })
    }

    /// The queues named (all when `names` is empty), by name.
    pub(super) fn describe_queues(&self, names: &[String]) -> ControlReply {
        ControlReply::Queues(
            self.queues
                .values()
                .filter(|q| names.is_empty() || names.contains(&q.name))
                .cloned()
                .collect(),
        )
    }
}
