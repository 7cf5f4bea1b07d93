//! The alias actions (CreateAlias, DescribeAlias, ListAliases, UpdateAlias, DeleteAlias,
//! ResolveAlias) and the resolution every `AliasId` parameter goes through.

use crate::api::ErrorCode;
use serde_json::{Map, Value, json};

use super::{Capi, CapiError, unexpected};
use crate::agent::fleet::{Control, ControlReply};
use crate::api::alias::wire::LIST_PARAMS;
use crate::api::alias::wire::{AliasListing, alias_input, view};
use crate::api::alias::{AliasInput, Routing};
use crate::api::params::Params;

impl Capi {
    /// The fleet an alias routes to (a TERMINAL alias refuses with its message).
    pub(super) async fn resolve(&self, alias_id: &str) -> Result<String, CapiError> {
        match self
            .fleet
            .control(Control::DescribeAlias(alias_id.to_string()))
            .await?
        {
            ControlReply::Alias(a) => match a.routing {
                Routing::Simple { fleet_id } => Ok(fleet_id),
                Routing::Terminal { message } => Err(CapiError::new(
                    ErrorCode::OperationDenied,
                    format!("alias {alias_id} is TERMINAL: {message}"),
                )),
            },
            other => Err(unexpected(&other)),
        }
    }

    async fn put_alias(&self, input: AliasInput) -> Result<Value, CapiError> {
        match self.fleet.control(Control::PutAlias(input)).await? {
            ControlReply::Alias(a) => Ok(json!({"Alias": view(&self.cfg.region, &a)})),
            other => Err(unexpected(&other)),
        }
    }

    pub(super) async fn create_alias(&self, map: Map<String, Value>) -> Result<Value, CapiError> {
        let p = Params::new(map, &["Name", "Description", "RoutingStrategy", "Tags"])?;
        let input = alias_input(&p, None)?;
        self.put_alias(input).await
    }

    pub(super) async fn update_alias(&self, map: Map<String, Value>) -> Result<Value, CapiError> {
        let p = Params::new(map, &["AliasId", "Name", "Description", "RoutingStrategy"])?;
        let id = p.str("AliasId", 128)?;
        let input = alias_input(&p, Some(id))?;
        self.put_alias(input).await
    }

    pub(super) async fn describe_alias(&self, map: Map<String, Value>) -> Result<Value, CapiError> {
        let p = Params::new(map, &["AliasId"])?;
        let id = p.str("AliasId", 128)?;
        match self.fleet.control(Control::DescribeAlias(id)).await? {
            ControlReply::Alias(a) => Ok(json!({"Alias": view(&self.cfg.region, &a)})),
            other => Err(unexpected(&other)),
        }
    }

    pub(super) async fn delete_alias(&self, map: Map<String, Value>) -> Result<Value, CapiError> {
        let p = Params::new(map, &["AliasId"])?;
        let id = p.str("AliasId", 128)?;
        self.fleet.control(Control::DeleteAlias(id)).await?;
        Ok(json!({}))
    }

    pub(super) async fn resolve_alias(&self, map: Map<String, Value>) -> Result<Value, CapiError> {
        let p = Params::new(map, &["AliasId"])?;
        let id = p.str("AliasId", 128)?;
        Ok(json!({"FleetId": self.resolve(&id).await?}))
    }

    pub(super) async fn list_aliases(&self, map: Map<String, Value>) -> Result<Value, CapiError> {
        let p = Params::new(map, LIST_PARAMS)?;
        let l = AliasListing::read(&p)?;
        let (name, terminal, by_updated, descending, offset, limit) = (
            l.name,
            l.terminal,
            l.by_updated,
            l.descending,
            l.offset,
            l.limit,
        );
        let mut list = match self
            .fleet
            .control(Control::ListAliases { name, terminal })
            .await?
        {
            ControlReply::Aliases(list) => list,
            other => return Err(unexpected(&other)),
        };
        if by_updated {
            list.sort_by_key(|a| a.updated);
        }
        if descending {
            list.reverse();
        }
        Ok(json!({
            "Aliases": list.iter().skip(offset).take(limit).map(|a| view(&self.cfg.region, a)).collect::<Vec<_>>(),
            "TotalCount": list.len(),
        }))
    }
}
