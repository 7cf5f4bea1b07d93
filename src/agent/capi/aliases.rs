//! The alias actions (CreateAlias, DescribeAlias, ListAliases, UpdateAlias, DeleteAlias,
//! ResolveAlias) and the resolution every `AliasId` parameter goes through.

use serde_json::{Map, Value, json};

use super::{Capi, CapiError, unexpected};
use crate::agent::event::format_time;
use crate::agent::fleet::{Control, ControlReply};
use crate::api::alias::{Alias, AliasInput, Routing, arn};
use crate::api::params::{Params, key_value};

/// An alias in the SDK's `Alias` model; its ARN names `region`.
pub(crate) fn view(region: &str, a: &Alias) -> Value {
    let (kind, fleet_id, message) = match &a.routing {
        Routing::Simple { fleet_id } => ("SIMPLE", fleet_id.as_str(), ""),
        Routing::Terminal { message } => ("TERMINAL", "", message.as_str()),
    };
    json!({
        "AliasId": a.id,
        "AliasArn": arn(region, &a.id),
        "Name": a.name,
        "Description": a.description,
        "RoutingStrategy": {"Type": kind, "FleetId": fleet_id, "Message": message},
        "CreationTime": format_time(a.created),
        "LastUpdatedTime": format_time(a.updated),
        "Tags": a.tags.iter().map(|(k, v)| json!({"Key": k, "Value": v})).collect::<Vec<_>>(),
    })
}

fn routing(v: &Value) -> Result<Routing, CapiError> {
    let Value::Object(o) = v else {
        return Err(CapiError::type_of(
            "RoutingStrategy",
            "an object with Type",
            v,
        ));
    };
    let text = |name: &str| match o.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(CapiError::type_of(
            &format!("RoutingStrategy.{name}"),
            "a string",
            other,
        )),
    };
    match text("Type")?.as_deref() {
        Some("SIMPLE") => Ok(Routing::Simple {
            fleet_id: text("FleetId")?
                .filter(|f| !f.is_empty())
                .ok_or_else(|| CapiError::missing("RoutingStrategy.FleetId"))?,
        }),
        Some("TERMINAL") => Ok(Routing::Terminal {
            message: text("Message")?.unwrap_or_default(),
        }),
        Some(other) => Err(CapiError::value(
            "RoutingStrategy.Type",
            format!("{other:?} is not SIMPLE or TERMINAL"),
        )),
        None => Err(CapiError::missing("RoutingStrategy.Type")),
    }
}

/// The alias fields a request sets (`id`: the alias updated, `None` for a new one).
pub(crate) fn alias_input(p: &Params, id: Option<String>) -> Result<AliasInput, CapiError> {
    let mut tags = Vec::new();
    for t in p.opt_array("Tags", 50)?.into_iter().flatten() {
        tags.push(key_value("Tags", t, 128, 256)?);
    }
    Ok(AliasInput {
        id,
        name: p.opt_str("Name", 1024)?,
        description: p.opt_str("Description", 1024)?,
        routing: p.raw("RoutingStrategy").map(routing).transpose()?,
        tags,
    })
}

/// ListAliases' filter, order and page.
pub(crate) struct AliasListing {
    /// Only aliases of this name.
    pub name: Option<String>,
    /// Only TERMINAL (true) or SIMPLE (false) aliases.
    pub terminal: Option<bool>,
    /// Ordered by last update rather than creation.
    pub by_updated: bool,
    /// Newest first.
    pub descending: bool,
    /// Skipped.
    pub offset: usize,
    /// Shown at most.
    pub limit: usize,
}

impl AliasListing {
    /// Reads `Name`, `RoutingStrategyType`, `OrderBy`, `OrderWay`, `Offset` and `Limit`.
    pub(crate) fn read(p: &Params) -> Result<Self, CapiError> {
        let terminal = match p.opt_str("RoutingStrategyType", 16)?.as_deref() {
            None => None,
            Some("SIMPLE") => Some(false),
            Some("TERMINAL") => Some(true),
            Some(other) => {
                return Err(CapiError::value(
                    "RoutingStrategyType",
                    format!("{other:?} is not SIMPLE or TERMINAL"),
                ));
            }
        };
        let limit = p.opt_int("Limit", 1, 100)?.unwrap_or(100) as usize;
        let offset = p.opt_int("Offset", 0, i64::MAX)?.unwrap_or(0) as usize;
        let by_updated = match p.opt_str("OrderBy", 32)?.as_deref() {
            None | Some("CreationTime") => false,
            Some("LastUpdatedTime") => true,
            Some(other) => {
                return Err(CapiError::value(
                    "OrderBy",
                    format!("{other:?} is not CreationTime or LastUpdatedTime"),
                ));
            }
        };
        let descending = match p.opt_str("OrderWay", 8)?.as_deref() {
            None | Some("ASC") => false,
            Some("DESC") => true,
            Some(other) => {
                return Err(CapiError::value(
                    "OrderWay",
                    format!("{other:?} is not ASC or DESC"),
                ));
            }
        };
        Ok(Self {
            name: p.opt_str("Name", 1024)?,
            terminal,
            by_updated,
            descending,
            offset,
            limit,
        })
    }
}

/// ListAliases' parameters.
pub(crate) const LIST_PARAMS: &[&str] = &[
    "Name",
    "RoutingStrategyType",
    "Limit",
    "Offset",
    "OrderBy",
    "OrderWay",
    "Filters",
];

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
                    "OperationDenied",
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
        p.str("Name", 1024)?;
        if p.raw("RoutingStrategy").is_none() {
            return Err(CapiError::missing("RoutingStrategy"));
        }
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
