//! A refused request, as the Tencent Cloud API says it.

use serde_json::Value;

/// A refused request: a Tencent Cloud error code and a message naming what was wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapiError {
    /// E.g. `InvalidParameterValue`.
    pub code: &'static str,
    /// What was wrong.
    pub message: String,
}

impl CapiError {
    /// A refusal with `code` and `message`.
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
    /// `MissingParameter`: the parameter `name` is required.
    pub fn missing(name: &str) -> Self {
        Self::new(
            "MissingParameter",
            format!("the parameter `{name}` is required"),
        )
    }
    /// `InvalidParameterValue`: the parameter `name` and why its value is refused.
    pub fn value(name: &str, why: impl std::fmt::Display) -> Self {
        Self::new(
            "InvalidParameterValue",
            format!("the parameter `{name}` {why}"),
        )
    }
    /// `InvalidParameter`: the parameter `name` must be `want`, not what `got` is.
    pub fn type_of(name: &str, want: &str, got: &Value) -> Self {
        let kind = match got {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Number(_) => "a number",
            Value::String(_) => "a string",
            Value::Array(_) => "an array",
            Value::Object(_) => "an object",
        };
        Self::new(
            "InvalidParameter",
            format!("the parameter `{name}` must be {want}, not {kind}"),
        )
    }
}
