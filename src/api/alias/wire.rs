//! Aliases on the wire: the SDK's `Alias` model of an alias, and the alias a request names.

use serde_json::{Value, json};

use crate::api::CapiError;
use crate::api::alias::{Alias, AliasInput, Routing, arn};
use crate::api::params::{Params, key_value};
use crate::api::time::format_time;

/// An alias in the SDK's `Alias` model; its ARN names `region`.
pub fn view(region: &str, a: &Alias) -> Value {
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
pub fn alias_input(p: &Params, id: Option<String>) -> Result<AliasInput, CapiError> {
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
pub struct AliasListing {
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
    pub fn read(p: &Params) -> Result<Self, CapiError> {
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
pub const LIST_PARAMS: &[&str] = &[
    "Name",
    "RoutingStrategyType",
    "Limit",
    "Offset",
    "OrderBy",
    "OrderWay",
    "Filters",
];
