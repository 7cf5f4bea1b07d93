//! Reading a request: its action and parameters, in either form, refused at the door when a
//! value could never be stored.

use crate::api::ErrorCode;
use serde_json::{Map, Value};

use super::CapiError;
use crate::common::telemetry::clip;

/// A request's action and parameters: the action from `X-TC-Action` (`header`, the Tencent
/// Cloud API form, where an empty body means no parameters) or from the body's `Action` (GSE
/// Local's form); both, when given, must agree.
pub fn request(
    header: Option<&str>,
    body: &[u8],
) -> Result<(String, Map<String, Value>), CapiError> {
    let body = if header.is_some() && body.iter().all(u8::is_ascii_whitespace) {
        b"{}".as_slice()
    } else {
        body
    };
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        CapiError::new(
            ErrorCode::InvalidParameter,
            format!("the request body is not valid JSON: {e}"),
        )
    })?;
    let Value::Object(mut map) = value else {
        return Err(CapiError::new(
            ErrorCode::InvalidParameter,
            "the request body must be a JSON object of the action's parameters",
        ));
    };
    let action = match (header, map.get("Action")) {
        (Some(h), None) => {
            map.insert("Action".into(), Value::String(h.to_string()));
            h.to_string()
        }
        (Some(h), Some(Value::String(b))) if b == h => h.to_string(),
        (Some(h), Some(b)) => {
            return Err(CapiError::value(
                "Action",
                format!("the body's Action {b} is not X-TC-Action {h:?}"),
            ));
        }
        (None, Some(Value::String(a))) => a.clone(),
        (None, Some(other)) => return Err(CapiError::type_of("Action", "a string", other)),
        (None, None) => return Err(CapiError::missing("Action")),
    };
    if let Some(at) = nul_at(&map, "") {
        return Err(CapiError::new(
            ErrorCode::InvalidParameter,
            format!(
                "the parameter `{at}` holds a NUL character (U+0000): no value may, since none can be stored"
            ),
        ));
    }
    Ok((action, map))
}

/// The first parameter (as `Name`, `List.0.Key`) whose name or string value holds a NUL
/// character, which PostgreSQL's text and JSON cannot store and no GSE field needs.
fn nul_at(map: &Map<String, Value>, prefix: &str) -> Option<String> {
    fn walk(v: &Value, path: String) -> Option<String> {
        match v {
            Value::String(s) if s.contains('\0') => Some(path),
            Value::Array(items) => items
                .iter()
                .enumerate()
                .find_map(|(i, item)| walk(item, format!("{path}.{i}"))),
            Value::Object(m) => nul_at(m, &path),
            _ => None,
        }
    }
    map.iter().find_map(|(k, v)| {
        let path = if prefix.is_empty() {
            clip(k).into_owned()
        } else {
            format!("{prefix}.{}", clip(k))
        };
        if k.contains('\0') {
            return Some(path.replace('\0', "\\0"));
        }
        walk(v, path)
    })
}
