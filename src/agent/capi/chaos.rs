//! `InjectFault` (agent extension): crash rehearsal on the live fleet, refused unless the
//! agent's config says `chaos: enabled`.
//!
//! Parameters: `Fault` (one of [`FAULTS`]); the target, `ServerProcessId` or
//! `GameServerSessionId` (the process hosting it); `Signal` (KillProcess; default SIGKILL),
//! `DurationSeconds` (HangProcess, DelayGameServerSessionStart, CutUpstream), `Count`
//! (FailHealthChecks, default `health-check.failure-threshold`; DelayGameServerSessionStart and
//! FailGameServerSessionStart, default 1).
//! The answer names the process the fault went to and the code of the event it made.

use crate::api::ErrorCode;
use std::str::FromStr;
use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::{Map, Value, json};

use super::{Capi, CapiError, unexpected};
use crate::agent::event::{Event, EventCode};
use crate::agent::fleet::api::{
    CHAOS_OFF, Fault, FaultTarget, MAX_FAULT_COUNT, MAX_FAULT_DURATION, StartFault,
};
use crate::agent::fleet::{Control, ControlReply};
use crate::api::params::Params;

/// The faults `InjectFault` knows.
pub const FAULTS: &[&str] = &[
    "KillProcess",
    "HangProcess",
    "FailHealthChecks",
    "DelayGameServerSessionStart",
    "FailGameServerSessionStart",
    "CutUpstream",
];

const PARAMS: &[&str] = &[
    "Fault",
    "ServerProcessId",
    "GameServerSessionId",
    "Signal",
    "DurationSeconds",
    "Count",
];

impl Capi {
    pub(super) async fn inject_fault(&self, map: Map<String, Value>) -> Result<Value, CapiError> {
        let p = Params::new(map, PARAMS)?;
        let name = p.str("Fault", 64)?;
        if !self.cfg.chaos {
            return Err(CapiError::new(ErrorCode::OperationDenied, CHAOS_OFF));
        }
        let fault = match name.as_str() {
            "KillProcess" => Fault::Kill {
                target: target(&p)?,
                signal: match p.opt_str("Signal", 16)? {
                    Some(s) => signal(&s)?,
                    None => Signal::SIGKILL,
                },
            },
            "HangProcess" => Fault::Hang {
                target: target(&p)?,
                duration: duration(&p)?,
            },
            "FailHealthChecks" => Fault::FailHealthChecks {
                target: target(&p)?,
                // By default as many as end it as unhealthy.
                count: p
                    .opt_int("Count", 1, i64::from(MAX_FAULT_COUNT))?
                    .map(|n| n as u32),
            },
            "DelayGameServerSessionStart" | "FailGameServerSessionStart" => {
                if p.raw("GameServerSessionId").is_some() {
                    return Err(CapiError::value(
                        "GameServerSessionId",
                        "a session start fault is armed before the session exists: name the process (ServerProcessId) or none",
                    ));
                }
                Fault::SessionStart {
                    process: p.opt_str("ServerProcessId", 128)?,
                    count: count(&p)?,
                    fault: if name == "FailGameServerSessionStart" {
                        StartFault::Fail
                    } else {
                        StartFault::Delay(duration(&p)?)
                    },
                }
            }
            "CutUpstream" => return self.cut_upstream(duration(&p)?),
            other => {
                return Err(CapiError::value(
                    "Fault",
                    format!("{other:?} is not one of {}", FAULTS.join(", ")),
                ));
            }
        };
        match self.fleet.control(Control::InjectFault(fault)).await? {
            ControlReply::Injected {
                process_id,
                pid,
                event_code,
            } => Ok(json!({
                "Fault": name,
                "ServerProcessId": process_id,
                "Pid": pid,
                "EventCode": event_code.as_str(),
            })),
            other => Err(unexpected(&other)),
        }
    }

    /// Cuts the upstream link for `duration`; its event goes into the outbox before the cut,
    /// and reaches the control plane once the link is back.
    fn cut_upstream(&self, duration: Duration) -> Result<Value, CapiError> {
        let Some(cut) = &self.link_cut else {
            return Err(CapiError::new(
                ErrorCode::OperationDenied,
                "this agent has no upstream link to cut: its config has no `upstream:` section",
            ));
        };
        self.bus.emit(Event::new(
            EventCode::ChaosUpstreamCut,
            format!(
                "crash rehearsal cut the link to the control plane for {}",
                humantime::format_duration(duration)
            ),
        ));
        cut.cut_for(duration);
        Ok(json!({
            "Fault": "CutUpstream",
            "ServerProcessId": null,
            "Pid": null,
            "EventCode": EventCode::ChaosUpstreamCut.as_str(),
        }))
    }
}

/// `ServerProcessId` or `GameServerSessionId`, exactly one.
fn target(p: &Params) -> Result<FaultTarget, CapiError> {
    match (
        p.opt_str("ServerProcessId", 128)?,
        p.opt_str("GameServerSessionId", 256)?,
    ) {
        (Some(id), None) => Ok(FaultTarget::Process(id)),
        (None, Some(id)) => Ok(FaultTarget::Session(id)),
        (Some(_), Some(_)) => Err(CapiError::value(
            "ServerProcessId",
            "give the process (ServerProcessId) or the session (GameServerSessionId), not both",
        )),
        (None, None) => Err(CapiError::missing(
            "ServerProcessId` or `GameServerSessionId",
        )),
    }
}

/// A signal by name (`SIGSEGV`, `SEGV`, any case) or number (`11`).
pub fn signal(text: &str) -> Result<Signal, CapiError> {
    let upper = text.trim().to_ascii_uppercase();
    let parsed = match upper.parse::<i32>() {
        Ok(n) => Signal::try_from(n).ok(),
        Err(_) if upper.starts_with("SIG") => Signal::from_str(&upper).ok(),
        Err(_) => Signal::from_str(&format!("SIG{upper}")).ok(),
    };
    parsed.ok_or_else(|| {
        CapiError::value(
            "Signal",
            format!("{text:?} is not a signal (a name such as SIGSEGV or SEGV, or a number)"),
        )
    })
}

/// `DurationSeconds`: a positive number of seconds (fractions allowed), at most an hour.
fn duration(p: &Params) -> Result<Duration, CapiError> {
    let v = p
        .raw("DurationSeconds")
        .ok_or_else(|| CapiError::missing("DurationSeconds"))?;
    let secs = v
        .as_f64()
        .ok_or_else(|| CapiError::type_of("DurationSeconds", "a number", v))?;
    let max = MAX_FAULT_DURATION.as_secs_f64();
    if !(secs > 0.0 && secs <= max) {
        return Err(CapiError::value(
            "DurationSeconds",
            format!("{secs} is not more than 0 and at most {max}"),
        ));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// `Count`: 1 unless given.
fn count(p: &Params) -> Result<u32, CapiError> {
    Ok(p.opt_int("Count", 1, i64::from(MAX_FAULT_COUNT))?
        .unwrap_or(1) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_by_name_short_name_or_number() {
        assert_eq!(signal("SIGSEGV").unwrap(), Signal::SIGSEGV);
        assert_eq!(signal("segv").unwrap(), Signal::SIGSEGV);
        assert_eq!(signal("9").unwrap(), Signal::SIGKILL);
        let e = signal("SIGNOPE").unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidParameterValue);
        assert!(e.message.contains("SIGNOPE"), "{}", e.message);
        assert!(signal("0").is_err());
    }
}
