//! Aliases: created, updated, deleted and resolved here, saved with the rest of the fleet.

use super::Fleet;
use crate::agent::fleet::api::{ControlReply, FleetError};
use crate::api::alias::{Alias, AliasInput, MAX_ALIASES, Routing};

impl Fleet {
    pub(super) fn put_alias(&mut self, input: AliasInput) -> Result<ControlReply, FleetError> {
        input.check().map_err(|e| match e {
            crate::api::alias::AliasError::Invalid { field, message } => FleetError::Invalid {
                param: field,
                message,
            },
        })?;
        let wall = self.clock.wall;
        let alias = match &input.id {
            Some(id) => {
                let a = self.alias_mut(id)?;
                if let Some(name) = input.name {
                    a.name = name;
                }
                if let Some(d) = input.description {
                    a.description = d;
                }
                if let Some(r) = input.routing {
                    a.routing = r;
                }
                a.updated = wall;
                a.clone()
            }
            None => {
                if self.aliases.len() >= MAX_ALIASES {
                    return Err(FleetError::Limit(format!(
                        "at most {MAX_ALIASES} aliases; delete one first"
                    )));
                }
                let (Some(name), Some(routing)) = (input.name, input.routing) else {
                    return Err(FleetError::Invalid {
                        param: "Name",
                        message: "Name and RoutingStrategy are required".into(),
                    });
                };
                let alias = Alias {
                    id: format!("alias-{}", self.ids.next_uuid()),
                    name,
                    description: input.description.unwrap_or_default(),
                    routing,
                    tags: input.tags,
                    created: wall,
                    updated: wall,
                };
                self.aliases.insert(alias.id.clone(), alias.clone());
                alias
            }
        };
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
