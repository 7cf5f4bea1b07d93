//! Reading and checking the parameters of one control API request.

use crate::api::ErrorCode;
use serde_json::{Map, Value};

use super::CapiError;

/// The request's parameters (the JSON object minus `Action`).
pub struct Params {
    map: Map<String, Value>,
}

impl Params {
    /// Wraps the request object; refuses names the action does not know (Tencent's
    /// `UnknownParameter`), so a typo is not silently ignored.
    pub fn new(mut map: Map<String, Value>, known: &[&str]) -> Result<Self, CapiError> {
        map.remove("Action");
        // Envelope fields of Tencent Cloud API v3 requests that callers may echo.
        for envelope in ["Version", "Region", "RequestId"] {
            map.remove(envelope);
        }
        if let Some(name) = map.keys().find(|k| !known.contains(&k.as_str())) {
            return Err(CapiError::new(
                ErrorCode::UnknownParameter,
                format!("the parameter `{name}` is not recognized by this action"),
            ));
        }
        Ok(Self { map })
    }

    fn get(&self, name: &str) -> Option<&Value> {
        self.map.get(name).filter(|v| !v.is_null())
    }

    /// An optional string of at most `max` characters.
    pub fn opt_str(&self, name: &str, max: usize) -> Result<Option<String>, CapiError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::String(s)) if s.chars().count() > max => Err(CapiError::value(
                name,
                format!(
                    "is {} characters long; at most {max} are allowed",
                    s.chars().count()
                ),
            )),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(CapiError::type_of(name, "a string", other)),
        }
    }

    /// A required, non-empty string of at most `max` characters.
    pub fn str(&self, name: &str, max: usize) -> Result<String, CapiError> {
        match self.opt_str(name, max)? {
            Some(s) if !s.is_empty() => Ok(s),
            Some(_) => Err(CapiError::value(name, "must not be empty")),
            None => Err(CapiError::missing(name)),
        }
    }

    /// An optional integer within `min..=max`.
    pub fn opt_int(&self, name: &str, min: i64, max: i64) -> Result<Option<i64>, CapiError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Number(n)) => {
                let v = n.as_i64().ok_or_else(|| {
                    CapiError::type_of(name, "an integer", &Value::Number(n.clone()))
                })?;
                if v < min || v > max {
                    return Err(CapiError::value(
                        name,
                        format!("{v} is out of range {min}..={max}"),
                    ));
                }
                Ok(Some(v))
            }
            Some(other) => Err(CapiError::type_of(name, "an integer", other)),
        }
    }

    /// A required integer within `min..=max`.
    pub fn int(&self, name: &str, min: i64, max: i64) -> Result<i64, CapiError> {
        self.opt_int(name, min, max)?
            .ok_or_else(|| CapiError::missing(name))
    }
    /// `FleetIds`: an optional list of at most 100 fleet ids.
    pub fn fleet_ids(&self) -> Result<Option<Vec<String>>, CapiError> {
        self.opt_strings("FleetIds", 100)
    }

    /// An optional list of at most `max` strings.
    pub fn opt_strings(&self, name: &str, max: usize) -> Result<Option<Vec<String>>, CapiError> {
        let Some(list) = self.opt_array(name, max)? else {
            return Ok(None);
        };
        list.iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.clone()),
                other => Err(CapiError::type_of(name, "a list of strings", other)),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    /// An optional array.
    pub fn opt_array(&self, name: &str, max: usize) -> Result<Option<&Vec<Value>>, CapiError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Array(a)) if a.len() > max => Err(CapiError::value(
                name,
                format!("has {} items; at most {max} are allowed", a.len()),
            )),
            Some(Value::Array(a)) => Ok(Some(a)),
            Some(other) => Err(CapiError::type_of(name, "an array", other)),
        }
    }

    /// A required JSON object (e.g. `RuntimeConfiguration`).
    pub fn object(&self, name: &str) -> Result<&Value, CapiError> {
        match self.get(name) {
            Some(v @ Value::Object(_)) => Ok(v),
            Some(other) => Err(CapiError::type_of(name, "an object", other)),
            None => Err(CapiError::missing(name)),
        }
    }

    /// The raw value.
    pub fn raw(&self, name: &str) -> Option<&Value> {
        self.get(name)
    }
}

/// Checks a `{Key, Value}` object's fields (GameProperties, PlayerDataMap).
pub fn key_value(
    param: &str,
    v: &Value,
    key_max: usize,
    value_max: usize,
) -> Result<(String, String), CapiError> {
    let Value::Object(o) = v else {
        return Err(CapiError::type_of(param, "an object with Key and Value", v));
    };
    let field = |name: &str, max: usize| -> Result<String, CapiError> {
        let full = format!("{param}.{name}");
        match o.get(name) {
            Some(Value::String(s)) if s.chars().count() <= max => Ok(s.clone()),
            Some(Value::String(_)) => Err(CapiError::value(
                &full,
                format!("is longer than {max} characters"),
            )),
            Some(other) => Err(CapiError::type_of(&full, "a string", other)),
            None => Err(CapiError::missing(&full)),
        }
    };
    Ok((field("Key", key_max)?, field("Value", value_max)?))
}
