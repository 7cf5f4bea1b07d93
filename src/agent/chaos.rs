//! `gse-agent chaos`: crash rehearsal from the command line. Each subcommand is one
//! `InjectFault` request to the running agent (found as `status` finds it, see
//! [`crate::agent::status::resolve`]); the agent refuses unless its config says `chaos: enabled`.

use std::time::Duration;

use serde_json::{Value, json};

use crate::agent::fleet::api::{MAX_FAULT_COUNT, MAX_FAULT_DURATION};

/// One fault to inject.
#[derive(Debug, Clone, PartialEq, Eq, clap::Subcommand)]
pub enum FaultArgs {
    /// Send a signal to a game process alone, as the kernel sends a crash signal; the agent
    /// then handles its exit as any crash (event CHAOS_PROCESS_KILLED, then the exit's own).
    Kill {
        /// Which process.
        #[command(flatten)]
        target: TargetArgs,
        /// The signal: a name (SIGSEGV, SEGV) or a number.
        #[arg(long, short, default_value = "SIGKILL")]
        signal: String,
    },
    /// Stop a game's whole process group (SIGSTOP) and continue it (SIGCONT) after a while:
    /// health checks go unanswered meanwhile (event CHAOS_PROCESS_HUNG).
    Hang {
        /// Which process.
        #[command(flatten)]
        target: TargetArgs,
        /// How long: seconds (30, 0.5) or a duration (500ms, 2m); at most an hour.
        #[arg(long = "for", value_name = "DURATION", value_parser = parse_duration)]
        duration: Duration,
    },
    /// Fail a game's next health checks without asking it; enough in a row and the agent ends
    /// it as unhealthy (event CHAOS_HEALTH_CHECKS_FAILING).
    FailHealthChecks {
        /// Which process.
        #[command(flatten)]
        target: TargetArgs,
        /// How many health checks fail [default: the agent's health-check.failure-threshold,
        /// enough to end it as unhealthy].
        #[arg(long, short = 'n', value_parser = parse_count)]
        count: Option<u32>,
    },
    /// Delay the next OnStartGameServerSession calls, to one process or to any; the activation
    /// timeout still runs (event CHAOS_SESSION_START_DELAYED).
    DelaySessionStart {
        /// Only calls to this process (its id, `proc-…`).
        #[arg(long, value_name = "PROCESS_ID")]
        process: Option<String>,
        /// How long: seconds or a duration; at most an hour.
        #[arg(long = "for", value_name = "DURATION", value_parser = parse_duration)]
        duration: Duration,
        /// How many calls.
        #[arg(long, short = 'n', default_value_t = 1, value_parser = parse_count)]
        count: u32,
    },
    /// Fail the next OnStartGameServerSession calls, to one process or to any, without calling
    /// the game: their sessions end in ERROR (event CHAOS_SESSION_START_FAILING).
    FailSessionStart {
        /// Only calls to this process (its id, `proc-…`).
        #[arg(long, value_name = "PROCESS_ID")]
        process: Option<String>,
        /// How many calls.
        #[arg(long, short = 'n', default_value_t = 1, value_parser = parse_count)]
        count: u32,
    },
    /// Cut the link to the control plane for a while; events wait in the outbox and are
    /// delivered once it is back (event CHAOS_UPSTREAM_CUT).
    CutUpstream {
        /// How long: seconds or a duration; at most an hour.
        #[arg(long = "for", value_name = "DURATION", value_parser = parse_duration)]
        duration: Duration,
    },
}

/// The game process a fault goes to.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
#[group(required = true, multiple = false)]
pub struct TargetArgs {
    /// The process, by its id (`proc-…`, as `gse-agent status` lists it).
    #[arg(long, value_name = "PROCESS_ID")]
    pub process: Option<String>,
    /// The process hosting this game server session.
    #[arg(long, value_name = "GAME_SERVER_SESSION_ID")]
    pub session: Option<String>,
}

impl FaultArgs {
    /// The `InjectFault` parameters.
    pub fn params(&self) -> Value {
        let mut p = json!({});
        let target = |p: &mut Value, t: &TargetArgs| {
            if let Some(id) = &t.process {
                p["ServerProcessId"] = json!(id);
            }
            if let Some(id) = &t.session {
                p["GameServerSessionId"] = json!(id);
            }
        };
        match self {
            Self::Kill { target: t, signal } => {
                p["Fault"] = json!("KillProcess");
                p["Signal"] = json!(signal);
                target(&mut p, t);
            }
            Self::Hang {
                target: t,
                duration,
            } => {
                p["Fault"] = json!("HangProcess");
                p["DurationSeconds"] = json!(duration.as_secs_f64());
                target(&mut p, t);
            }
            Self::FailHealthChecks { target: t, count } => {
                p["Fault"] = json!("FailHealthChecks");
                if let Some(n) = count {
                    p["Count"] = json!(n);
                }
                target(&mut p, t);
            }
            Self::DelaySessionStart {
                process,
                duration,
                count,
            } => {
                p["Fault"] = json!("DelayGameServerSessionStart");
                p["DurationSeconds"] = json!(duration.as_secs_f64());
                p["Count"] = json!(count);
                if let Some(id) = process {
                    p["ServerProcessId"] = json!(id);
                }
            }
            Self::FailSessionStart { process, count } => {
                p["Fault"] = json!("FailGameServerSessionStart");
                p["Count"] = json!(count);
                if let Some(id) = process {
                    p["ServerProcessId"] = json!(id);
                }
            }
            Self::CutUpstream { duration } => {
                p["Fault"] = json!("CutUpstream");
                p["DurationSeconds"] = json!(duration.as_secs_f64());
            }
        }
        p
    }
}

/// One line for the agent's answer: what was injected where, and the event to look for.
pub fn describe(answer: &Value) -> String {
    let fault = answer["Fault"].as_str().unwrap_or("fault");
    let code = answer["EventCode"].as_str().unwrap_or("?");
    match (answer["ServerProcessId"].as_str(), answer["Pid"].as_u64()) {
        (Some(id), Some(pid)) => format!("injected {fault} into {id} (pid {pid}); event {code}"),
        _ => format!("injected {fault}; event {code}"),
    }
}

/// A fault's duration: plain seconds (`30`, `0.5`) or a duration (`500ms`, `2m`); more than
/// zero and at most [`MAX_FAULT_DURATION`].
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = match s.parse::<f64>() {
        Ok(secs) if secs.is_finite() && secs >= 0.0 => {
            Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX)
        }
        Ok(_) => return Err(format!("{s:?} is not a number of seconds")),
        Err(_) => humantime::parse_duration(s).map_err(|e| {
            format!("{s:?} is neither seconds (30, 0.5) nor a duration (500ms, 2m): {e}")
        })?,
    };
    if d.is_zero() || d > MAX_FAULT_DURATION {
        return Err(format!(
            "{s:?} is not more than zero and at most {}",
            humantime::format_duration(MAX_FAULT_DURATION)
        ));
    }
    Ok(d)
}

/// A fault's count: 1 to [`MAX_FAULT_COUNT`].
pub fn parse_count(s: &str) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(n) if (1..=MAX_FAULT_COUNT).contains(&n) => Ok(n),
        _ => Err(format!("{s:?} is not a count from 1 to {MAX_FAULT_COUNT}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_seconds_or_humantime_within_an_hour() {
        assert_eq!(parse_duration("30").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("0.5").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("0").is_err());
        assert!(parse_duration("2h").is_err());
        assert!(parse_duration("soon").unwrap_err().contains("soon"));
    }

    #[test]
    fn each_fault_becomes_its_inject_fault_parameters() {
        let kill = FaultArgs::Kill {
            target: TargetArgs {
                process: Some("proc-1-1-1".into()),
                session: None,
            },
            signal: "SEGV".into(),
        };
        assert_eq!(
            kill.params(),
            json!({"Fault": "KillProcess", "Signal": "SEGV", "ServerProcessId": "proc-1-1-1"})
        );
        let cut = FaultArgs::CutUpstream {
            duration: Duration::from_millis(1500),
        };
        assert_eq!(
            cut.params(),
            json!({"Fault": "CutUpstream", "DurationSeconds": 1.5})
        );
        assert_eq!(
            describe(
                &json!({"Fault": "KillProcess", "ServerProcessId": "proc-1", "Pid": 42, "EventCode": "CHAOS_PROCESS_KILLED"})
            ),
            "injected KillProcess into proc-1 (pid 42); event CHAOS_PROCESS_KILLED"
        );
    }
}
