//! `gse-agent status`: asks the running agent for `DescribeAgentStatus` over its local control
//! API and prints it as a table a person reads at a glance ([`table`]), or as JSON.
//!
//! The agent is found through `endpoints.json` in its data-dir (from `--config`), or at the
//! address given with `--capi`. When the config names a `capi-keys-file`, the request is signed
//! with one of its keys as the official SDKs sign (`POST /`, TC3); otherwise it is GSE Local's
//! `POST /capi`.

pub mod table;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use crate::agent::config::{self, ConfigError};

/// The config `status` reads when given none and it exists (where the package installs it).
pub const DEFAULT_CONFIG: &str = "/etc/gse-agent/agent.yaml";

/// How long one request may take before the agent counts as unreachable.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Why `status` could not show the agent.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// The config cannot be used.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The keys file named by the config cannot be read by this user.
    #[error(
        "{source}: status signs its request with a key from it; run status as a user who can read it, or as the agent's user"
    )]
    Keys {
        /// What was wrong with it.
        #[source]
        source: crate::api::tc3::keys::KeysError,
    },
    /// No `endpoints.json`: no agent runs on this data-dir.
    #[error(
        "no agent is running on data-dir {data_dir}: {path} does not exist ({source}); start it with `gse-agent run --config FILE`, or pass --capi ADDR"
    )]
    NoEndpoints {
        /// The agent's data-dir.
        data_dir: PathBuf,
        /// The file looked for.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
    /// `endpoints.json` is not what the agent writes.
    #[error("{path} is not an endpoints file written by gse-agent: {message}")]
    BadEndpoints {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The agent runs with its control API off.
    #[error(
        "the agent on data-dir {data_dir} runs without a control API ({path} has no CapiAddress): set capi-listen in agent.yaml and restart it"
    )]
    NoCapi {
        /// The agent's data-dir.
        data_dir: PathBuf,
        /// The endpoints file.
        path: PathBuf,
    },
    /// The request did not reach the agent or got no answer.
    #[error(
        "cannot reach the agent's control API at {addr} ({origin}): {message}; is the agent running? Start it with `gse-agent run --config FILE`, or pass the right --capi ADDR"
    )]
    Unreachable {
        /// The address tried.
        addr: SocketAddr,
        /// Where the address came from (`--capi` or the endpoints file).
        origin: String,
        /// What went wrong.
        message: String,
    },
    /// The agent answered with an error.
    #[error("the agent at {addr} refused {action}: {code}: {message}{hint}")]
    Refused {
        /// The address asked.
        addr: SocketAddr,
        /// The action asked for.
        action: String,
        /// Tencent's error code.
        code: String,
        /// The agent's message.
        message: String,
        /// What to do about it, if known.
        hint: &'static str,
    },
    /// The answer is not a DescribeAgentStatus response.
    #[error("the agent at {addr} answered something that is not a {action} response: {message}")]
    BadAnswer {
        /// The address asked.
        addr: SocketAddr,
        /// The action asked for.
        action: String,
        /// What is wrong.
        message: String,
    },
}

impl StatusError {
    /// The process exit code: 64 for a config or usage problem, 1 when the agent cannot be
    /// reached or did not answer.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Config(_) | Self::Keys { .. } => 64,
            _ => 1,
        }
    }
}

/// Where the agent's control API is and how to sign for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The control API address.
    pub addr: SocketAddr,
    /// Where it came from, for messages (`--capi`, or the endpoints file's path).
    pub origin: String,
    /// `(SecretId, SecretKey)` to sign with, when the agent's config names a keys file.
    pub key: Option<(String, String)>,
}

/// Finds the agent: `capi` if given, else the `CapiAddress` in `endpoints.json` of the data-dir
/// of `config` (default: [`DEFAULT_CONFIG`] if it exists, else the embedded sample config,
/// whose data-dir is `./gse-data`). The config's `capi-keys-file`, if any, gives the key.
pub fn resolve(capi: Option<SocketAddr>, config: Option<&Path>) -> Result<Target, StatusError> {
    let cfg = match config {
        Some(path) => Some(config::read(path)?),
        None if capi.is_some() => None,
        None if Path::new(DEFAULT_CONFIG).exists() => {
            Some(config::read(Path::new(DEFAULT_CONFIG))?)
        }
        None => Some(config::parse(
            config::SAMPLE_CONFIG,
            "<embedded sample config>",
            Path::new("."),
        )?),
    };
    let key = match cfg.as_ref().and_then(|c| c.capi_keys_file.as_deref()) {
        Some(path) => {
            let keys =
                crate::api::tc3::keys::read(path).map_err(|source| StatusError::Keys { source })?;
            // Any key signs; the smallest id is picked so that runs are alike.
            keys.into_iter().min()
        }
        None => None,
    };
    if let Some(addr) = capi {
        return Ok(Target {
            addr,
            origin: "--capi".into(),
            key,
        });
    }
    let data_dir = cfg
        .as_ref()
        .map(|c| c.data_dir.clone())
        .expect("a config is read whenever --capi is not given");
    let path = data_dir.join("endpoints.json");
    let text = std::fs::read_to_string(&path).map_err(|source| StatusError::NoEndpoints {
        data_dir: data_dir.clone(),
        path: path.clone(),
        source,
    })?;
    let addr = capi_address(&text).map_err(|message| StatusError::BadEndpoints {
        path: path.clone(),
        message,
    })?;
    match addr {
        Some(addr) => Ok(Target {
            addr,
            origin: format!("from {}", path.display()),
            key,
        }),
        None => Err(StatusError::NoCapi { data_dir, path }),
    }
}

/// The `CapiAddress` of an `endpoints.json` text (`None`: the control API is off).
pub fn capi_address(text: &str) -> Result<Option<SocketAddr>, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    match v.get("CapiAddress") {
        Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => s
            .parse()
            .map(Some)
            .map_err(|e| format!("CapiAddress {s:?} is not an address: {e}")),
        Some(other) => Err(format!("CapiAddress is {other}, not an address")),
        None => Err("it has no CapiAddress".into()),
    }
}

/// Asks the agent for `DescribeAgentStatus` with its last `events` events; returns the
/// `Response` object (without `RequestId`).
pub async fn fetch(target: &Target, events: u32) -> Result<Value, StatusError> {
    let r = call(target, "DescribeAgentStatus", json!({ "Limit": events })).await?;
    if r.get("ServerProcesses").is_none() {
        return Err(StatusError::BadAnswer {
            addr: target.addr,
            action: "DescribeAgentStatus".into(),
            message: "no `ServerProcesses`".into(),
        });
    }
    Ok(r)
}

/// Sends one action with its parameters (a JSON object) to the agent's control API, signed
/// when the target has a key; returns the `Response` object (without `RequestId`), or the
/// agent's refusal as [`StatusError::Refused`].
pub async fn call(target: &Target, action: &str, params: Value) -> Result<Value, StatusError> {
    let unreachable = |message: String| StatusError::Unreachable {
        addr: target.addr,
        origin: target.origin.clone(),
        message,
    };
    let client = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .no_proxy()
        .build()
        .map_err(|e| unreachable(format!("cannot make an HTTP client: {e}")))?;
    let host = target.addr.to_string();
    let request = match &target.key {
        Some((id, secret)) => {
            let body = params.to_string();
            let timestamp = crate::api::tc3::now_unix();
            let mut r = client.post(format!("http://{host}/"));
            for (name, value) in crate::api::tc3::signed_headers(
                id,
                secret,
                &host,
                action,
                body.as_bytes(),
                timestamp,
            ) {
                r = r.header(name, value);
            }
            r.body(body)
        }
        None => {
            let mut body = params;
            if let Value::Object(o) = &mut body {
                o.insert("Action".into(), Value::String(action.into()));
            }
            client
                .post(format!("http://{host}/capi"))
                .header("Content-Type", "application/json")
                .body(body.to_string())
        }
    };
    let response = request
        .send()
        .await
        .map_err(|e| unreachable(error_chain(&e)))?;
    let body = response
        .bytes()
        .await
        .map_err(|e| unreachable(error_chain(&e)))?;
    let bad = |message: String| StatusError::BadAnswer {
        addr: target.addr,
        action: action.to_string(),
        message,
    };
    let v: Value = serde_json::from_slice(&body).map_err(|e| bad(e.to_string()))?;
    let Some(Value::Object(mut r)) = v.get("Response").cloned() else {
        return Err(bad("no `Response` object".into()));
    };
    if let Some(e) = r.get("Error") {
        let code = e["Code"].as_str().unwrap_or_default().to_string();
        let hint = match code.as_str() {
            c if c.starts_with("AuthFailure") && target.key.is_none() => {
                "; the agent wants signed requests: pass --config with the agent.yaml whose capi-keys-file holds a key"
            }
            "InvalidAction" => "; the agent is older than this gse-agent: upgrade it",
            _ => "",
        };
        return Err(StatusError::Refused {
            addr: target.addr,
            action: action.to_string(),
            code,
            message: e["Message"].as_str().unwrap_or_default().to_string(),
            hint,
        });
    }
    r.remove("RequestId");
    Ok(Value::Object(r))
}

/// The error and its causes on one line (reqwest's own message says little).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let part = c.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        cause = c.source();
    }
    text
}

/// Parses `--watch`'s interval: plain seconds (`2`, `0.5`) or a duration (`500ms`, `1m`); at
/// least 100 ms.
pub fn parse_interval(s: &str) -> Result<Duration, String> {
    let d = match s.parse::<f64>() {
        Ok(secs) if secs.is_finite() && secs >= 0.0 => Duration::from_secs_f64(secs),
        Ok(_) => return Err(format!("{s:?} is not a number of seconds")),
        Err(_) => humantime::parse_duration(s).map_err(|e| {
            format!("{s:?} is neither seconds (2, 0.5) nor a duration (500ms): {e}")
        })?,
    };
    if d < Duration::from_millis(100) {
        return Err(format!("{s:?} is below the shortest interval, 100ms"));
    }
    Ok(d)
}

#[cfg(test)]
mod tests;
