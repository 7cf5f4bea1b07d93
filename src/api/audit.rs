//! Who changed what, on both halves: every API call that changes something is recorded with
//! the SecretId that signed it (never the key or the signature), the action, the resources it
//! named, the caller's address, how it ended and its RequestId. The door writes each record as
//! a structured log line (`audit=true`, journald fields on the agent); gse-control also keeps
//! them in its database (its door's `Handler::audit`).

use serde_json::{Map, Value};

/// Resources kept per record at most (a request may name many fleets).
pub const MAX_RESOURCES: usize = 32;

/// One audited call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Unix milliseconds.
    pub time_ms: i64,
    /// The SecretId that signed it (`-` on an API without keys).
    pub secret_id: String,
    /// The action.
    pub action: String,
    /// The resources it named: `fleet/ID`, `alias/ID`, `queue/NAME`, `asset/ID`, and the
    /// session and player session ids it named.
    pub resources: Vec<String>,
    /// The caller's address.
    pub source: String,
    /// `ok`, or the error code it was answered with.
    pub outcome: String,
    /// The RequestId of the answer.
    pub request_id: String,
}

/// Whether `action` changes something (anything but a read).
pub fn changes(action: &str) -> bool {
    !["Describe", "List", "Search", "Get", "Resolve"]
        .iter()
        .any(|read| action.starts_with(read))
}

impl Record {
    /// The record of one answered call.
    pub fn of(
        secret_id: Option<&str>,
        action: &str,
        params: &Map<String, Value>,
        source: &str,
        answer: &Value,
        time_ms: i64,
    ) -> Self {
        let mut resources: Vec<String> = crate::api::tc3::policy::resources_of(action, params)
            .into_iter()
            .map(|r| format!("{}/{}", r.kind, r.id))
            .collect();
        for key in [
            "GameServerSessionId",
            "PlayerSessionId",
            "PlacementId",
            "InstanceId",
        ] {
            if let Some(Value::String(id)) = params.get(key) {
                resources.push(crate::common::telemetry::clip(id).into_owned());
            }
        }
        // What a create made.
        if let Some(Value::String(id)) = answer
            .pointer("/GameServerSession/GameServerSessionId")
            .or_else(|| answer.pointer("/PlayerSession/PlayerSessionId"))
        {
            resources.push(id.clone());
        }
        resources.dedup();
        resources.truncate(MAX_RESOURCES);
        let outcome = answer
            .pointer("/Error/Code")
            .and_then(Value::as_str)
            .unwrap_or("ok")
            .to_string();
        Self {
            time_ms,
            secret_id: secret_id.unwrap_or("-").to_string(),
            action: crate::common::telemetry::clip(action).into_owned(),
            resources,
            source: source.to_string(),
            outcome,
            request_id: answer
                .get("RequestId")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
        }
    }

    /// Writes the record as one structured log line.
    pub fn log(&self) {
        tracing::info!(
            audit = true,
            secret.id = %self.secret_id,
            api.action = %self.action,
            api.resources = %self.resources.join(","),
            client.addr = %self.source,
            api.outcome = %self.outcome,
            request.id = %self.request_id,
            "api call audited"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changing_call_is_recorded_with_what_it_named_and_made() {
        assert!(changes("CreateGameServerSession") && changes("DeleteAlias"));
        assert!(!changes("DescribeFleetEvents") && !changes("SearchGameServerSessions"));
        let params = serde_json::json!({"FleetId": "fleet-a", "MaximumPlayerSessionCount": 2});
        let answer = serde_json::json!({
            "GameServerSession": {"GameServerSessionId": "gssess-1"},
            "RequestId": "req-1",
        });
        let r = Record::of(
            Some("AKIDx"),
            "CreateGameServerSession",
            params.as_object().unwrap(),
            "10.0.0.1:5000",
            &answer,
            7,
        );
        assert_eq!(r.resources, ["fleet/fleet-a", "gssess-1"]);
        assert_eq!((r.outcome.as_str(), r.request_id.as_str()), ("ok", "req-1"));
        let refused = serde_json::json!({"Error": {"Code": "UnauthorizedOperation"}});
        let r = Record::of(None, "DeleteAlias", &Map::new(), "x", &refused, 7);
        assert_eq!(
            (r.secret_id.as_str(), r.outcome.as_str()),
            ("-", "UnauthorizedOperation")
        );
    }
}
