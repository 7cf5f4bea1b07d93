//! Game server session queues: created, described, updated and deleted here, saved with the
//! rest of the fleet.

use super::Fleet;
use crate::agent::fleet::api::{ControlReply, FleetError};
use crate::api::queue::QueueInput;

impl Fleet {
    /// CreateGameServerSessionQueue (`create`) or UpdateGameServerSessionQueue, by the API's
    /// rule ([`crate::api::queue::put`]).
    pub(super) fn put_queue(
        &mut self,
        input: QueueInput,
        create: bool,
    ) -> Result<ControlReply, FleetError> {
        let existing = self.queues.get(&input.name).cloned();
        let queue = crate::api::queue::put(existing, self.queues.len(), input, create)?;
        self.queues.insert(queue.name.clone(), queue.clone());
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
