//! Aliases across the control plane, stored in the database, in the same model and checks as
//! the agent's.

use crate::api::ErrorCode;
use serde_json::{Map, Value, json};

use super::{ControlApi, db_error};
use crate::api::CapiError;
use crate::api::alias::wire::{AliasListing, LIST_PARAMS, alias_input, view};
use crate::api::alias::{Alias, Routing};
use crate::api::params::Params;

fn decode(v: Value) -> Result<Alias, CapiError> {
    serde_json::from_value(v).map_err(|e| {
        CapiError::new(
            ErrorCode::InternalError,
            format!("a stored alias does not decode: {e}"),
        )
    })
}

impl ControlApi {
    async fn alias(&self, id: &str) -> Result<Alias, CapiError> {
        let db = self.db().await?;
        let row = db
            .query_opt("SELECT body FROM aliases WHERE alias_id = $1", &[&id])
            .await
            .map_err(db_error("reading an alias"))?;
        match row {
            Some(r) => decode(r.get(0)),
            None => Err(CapiError::new(
                ErrorCode::ResourceNotFound,
                format!("alias {id} does not exist"),
            )),
        }
    }

    /// The fleet an alias routes to (a TERMINAL alias refuses with its message).
    pub(super) async fn resolve(&self, alias_id: &str) -> Result<String, CapiError> {
        match self.alias(alias_id).await?.routing {
            Routing::Simple { fleet_id } => Ok(fleet_id),
            Routing::Terminal { message } => Err(CapiError::new(
                ErrorCode::OperationDenied,
                format!("alias {alias_id} is TERMINAL: {message}"),
            )),
        }
    }

    async fn store_alias(&self, a: &Alias) -> Result<Value, CapiError> {
        let body = serde_json::to_value(a)
            .map_err(|e| CapiError::new(ErrorCode::InternalError, e.to_string()))?;
        let db = self.db().await?;
        db.execute(
            "INSERT INTO aliases (alias_id, body) VALUES ($1, $2)
             ON CONFLICT (alias_id) DO UPDATE SET body = EXCLUDED.body",
            &[&a.id, &body],
        )
        .await
        .map_err(db_error("storing an alias"))?;
        Ok(json!({"Alias": view(super::ARN_REGION, a)}))
    }

    /// How many aliases are stored (the limit counts them).
    async fn alias_count(&self) -> Result<usize, CapiError> {
        let db = self.db().await?;
        let n: i64 = db
            .query_one("SELECT count(*) FROM aliases", &[])
            .await
            .map_err(db_error("counting aliases"))?
            .get(0);
        Ok(n as usize)
    }

    pub(super) async fn create_alias(&self, map: Map<String, Value>) -> Result<Value, CapiError> {
        let p = Params::new(map, &["Name", "Description", "RoutingStrategy", "Tags"])?;
        let input = alias_input(&p, None)?;
        let alias = crate::api::alias::put(
            None,
            self.alias_count().await?,
            input,
            || format!("alias-{}", uuid::Uuid::new_v4()),
            std::time::SystemTime::now(),
        )?;
        self.store_alias(&alias).await
    }

    pub(super) async fn update_alias(&self, map: Map<String, Value>) -> Result<Value, CapiError> {
        let p = Params::new(map, &["AliasId", "Name", "Description", "RoutingStrategy"])?;
        let id = p.str("AliasId", 128)?;
        let input = alias_input(&p, Some(id.clone()))?;
        let existing = Some(self.alias(&id).await?);
        let alias = crate::api::alias::put(
            existing,
            0,
            input,
            // An update keeps its id: no new one is made.
            String::new,
            std::time::SystemTime::now(),
        )?;
        self.store_alias(&alias).await
    }

    pub(super) async fn describe_alias(&self, map: Map<String, Value>) -> Result<Value, CapiError> {
        let p = Params::new(map, &["AliasId"])?;
        let alias = self.alias(&p.str("AliasId", 128)?).await?;
        Ok(json!({"Alias": view(super::ARN_REGION, &alias)}))
    }

    pub(super) async fn delete_alias(&self, map: Map<String, Value>) -> Result<Value, CapiError> {
        let p = Params::new(map, &["AliasId"])?;
        let id = p.str("AliasId", 128)?;
        let db = self.db().await?;
        let n = db
            .execute("DELETE FROM aliases WHERE alias_id = $1", &[&id])
            .await
            .map_err(db_error("deleting an alias"))?;
        if n == 0 {
            return Err(CapiError::new(
                ErrorCode::ResourceNotFound,
                format!("alias {id} does not exist"),
            ));
        }
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
        let db = self.db().await?;
        let rows = db
            .query("SELECT body FROM aliases", &[])
            .await
            .map_err(db_error("listing aliases"))?;
        let mut list = rows
            .into_iter()
            .map(|r| decode(r.get(0)))
            .collect::<Result<Vec<_>, _>>()?;
        list.retain(|a| {
            l.name.as_ref().is_none_or(|n| &a.name == n)
                && l.terminal
                    .is_none_or(|t| t == matches!(a.routing, Routing::Terminal { .. }))
        });
        if l.by_updated {
            list.sort_by_key(|a| (a.updated, a.id.clone()));
        } else {
            list.sort_by_key(|a| (a.created, a.id.clone()));
        }
        if l.descending {
            list.reverse();
        }
        Ok(json!({
            "Aliases": list.iter().skip(l.offset).take(l.limit).map(|a| view(super::ARN_REGION, a)).collect::<Vec<_>>(),
            "TotalCount": list.len(),
        }))
    }
}
