//! Aliases: created, updated, deleted and resolved here, saved with the rest of the fleet.

use super::Fleet;
use crate::agent::fleet::api::{ControlReply, FleetError};
use crate::api::alias::{Alias, AliasInput, Routing};

impl Fleet {
    /// CreateAlias or UpdateAlias, by the API's rule ([`crate::api::alias::put`]).
    pub(super) fn put_alias(&mut self, input: AliasInput) -> Result<ControlReply, FleetError> {
        let existing = input
            .id
            .as_ref()
            .and_then(|id| self.aliases.get(id).cloned());
        let ids = &mut self.ids;
        let alias = crate::api::alias::put(
            existing,
            self.aliases.len(),
            input,
            || format!("alias-{}", ids.next_uuid()),
            self.clock.wall,
        )?;
        self.aliases.insert(alias.id.clone(), alias.clone());
        Ok(ControlReply::Alias(Box::new(alias)))
    }

    fn alias_mut(&mut self, id: &str) -> Result<&mut Alias, FleetError> {
        self.aliases
            .get_mut(id)
            .ok_or_else(|| FleetError::NotFound {
                kind: "alias",
                id: id.to_string(),
            })
    }

    pub(super) fn delete_alias(&mut self, id: &str) -> Result<ControlReply, FleetError> {
        self.alias_mut(id)?;
        self.aliases.remove(id);
        Ok(ControlReply::Done)
    }

    pub(super) fn describe_alias(&self, id: &str) -> Result<ControlReply, FleetError> {
        self.aliases
            .get(id)
            .map(|a| ControlReply::Alias(Box::new(a.clone())))
            .ok_or_else(|| FleetError::NotFound {
                kind: "alias",
                id: id.to_string(),
            })
    }

    pub(super) fn list_aliases(&self, name: Option<&str>, terminal: Option<bool>) -> ControlReply {
        let mut list: Vec<Alias> = self
            .aliases
            .values()
            .filter(|a| name.is_none_or(|n| a.name.contains(n)))
            .filter(|a| terminal.is_none_or(|t| matches!(a.routing, Routing::Terminal { .. }) == t))
            .cloned()
            .collect();
        list.sort_by(|a, b| a.created.cmp(&b.created).then_with(|| a.id.cmp(&b.id)));
        ControlReply::Aliases(list)
    }
}
