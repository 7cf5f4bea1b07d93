//! The Tencent Cloud API v3 response envelope: `{"Response": {..., "RequestId"}}`, or its
//! `Error` with the code and message of a refusal.

use serde_json::{Map, Value, json};

use super::CapiError;
use crate::common::telemetry::{LogLimit, clip};

/// The v3 envelope of a result: `{"Response": {..., "RequestId"}}`, a refusal as `Error`.
pub fn envelope(result: Result<Value, CapiError>) -> Value {
    let request_id = uuid::Uuid::new_v4().to_string();
    let mut response = match result {
        Ok(Value::Object(o)) => o,
        Ok(_) => Map::new(),
        Err(e) => {
            // Caller-driven: the value is cut and the lines are rate-limited.
            static REFUSALS: std::sync::LazyLock<LogLimit<()>> =
                std::sync::LazyLock::new(|| LogLimit::new(20, std::time::Duration::from_secs(10)));
            if let Some(suppressed) = REFUSALS.admit((), std::time::Instant::now()) {
                tracing::info!(capi.code = e.code.as_str(), error = %clip(&e.message), refusals.suppressed = suppressed, "control API request refused");
            }
            let mut o = Map::new();
            o.insert(
                "Error".into(),
                json!({"Code": e.code, "Message": e.message}),
            );
            o
        }
    };
    response.insert("RequestId".into(), json!(request_id));
    json!({ "Response": response })
}
