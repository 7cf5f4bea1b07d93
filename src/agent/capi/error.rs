//! A refused request, as the Tencent Cloud API says it.

use serde_json::Value;

use crate::agent::fleet::actor::HandleError;

/// A refused request: a Tencent Cloud error code and a message naming what was wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapiError {
    /// E.g. `InvalidParameterValue`.
    pub code: &'static str,
    /// What was wrong.
    pub message: String,
}

impl CapiError {
    pub(crate) fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
    pub(crate) fn missing(name: &str) -> Self {
        Self::new(
            "MissingParameter",
            format!("the parameter `{name}` is required"),
        )
    }
    pub(crate) fn value(name: &str, why: impl std::fmt::Display) -> Self {
        Self::new(
            "InvalidParameterValue",
            format!("the parameter `{name}` {why}"),
        )
    }
    pub(crate) fn type_of(name: &str, want: &str, got: &Value) -> Self {
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

impl From<HandleError> for CapiError {
    fn from(e: HandleError) -> Self {
        match e {
            HandleError::Stopped => Self::new("OperationDenied", "the agent is shutting down"),
            HandleError::Fleet(f) => Self::new(f.tencent_code(), f.to_string()),
        }
    }
}
