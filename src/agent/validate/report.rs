//! The validation report: JSON for machines, a table for people.

use serde::Serialize;

use crate::agent::event::{Event, EventCode};
use crate::agent::package::local_refs::Outlook;

/// How a step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// It passed.
    Passed,
    /// It failed: the build would not come up.
    Failed,
    /// It did not apply (e.g. no install.sh) or could not apply (run-as without root).
    Skipped,
    /// An earlier step failed.
    NotRun,
}

impl Status {
    fn label(self) -> &'static str {
        match self {
            Self::Passed => "pass",
            Self::Failed => "FAIL",
            Self::Skipped => "skip",
            Self::NotRun => "-",
        }
    }
}

/// One step of the run.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Step {
    /// Its name (`unpack`, `install`, `process-ready`, …).
    pub name: &'static str,
    /// How it ended.
    pub status: Status,
    /// How long it took.
    pub duration_millis: u64,
    /// What happened, in a sentence.
    pub detail: String,
    /// The GSE event code of the failure, if one was raised.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_code: Option<String>,
    /// The failing process's exit code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// The signal that ended the failing process.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
    /// The last lines of the failing process's output (or install.sh's).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub output_tail: Vec<String>,
    /// What to do about a failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advice: Option<String>,
}

impl Step {
    /// A step that passed.
    pub fn passed(name: &'static str, millis: u64, detail: impl Into<String>) -> Self {
        Self::new(name, Status::Passed, millis, detail)
    }

    /// A step with a status and no failure details.
    pub fn new(name: &'static str, status: Status, millis: u64, detail: impl Into<String>) -> Self {
        Self {
            name,
            status,
            duration_millis: millis,
            detail: detail.into(),
            event_code: None,
            exit_code: None,
            signal: None,
            output_tail: Vec::new(),
            advice: None,
        }
    }

    /// A failed step, with the details of the event that failed it.
    pub fn failed(
        name: &'static str,
        millis: u64,
        detail: impl Into<String>,
        event: Option<&Event>,
    ) -> Self {
        let mut s = Self::new(name, Status::Failed, millis, detail);
        s.advice = advice(name, event.map(|e| e.event_code)).map(str::to_string);
        if let Some(e) = event {
            s.event_code = Some(e.event_code.as_str().to_string());
            if let Some(x) = &e.exit {
                s.exit_code = x.exit_code;
                s.signal = x.signal.clone();
                s.output_tail = x.output_tail.clone();
            }
        }
        s
    }
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// The build validated.
    pub build: String,
    /// Every step passed.
    pub passed: bool,
    /// The run was interrupted (Ctrl-C).
    pub interrupted: bool,
    /// Total time.
    pub duration_millis: u64,
    /// The steps, in order (all of them, `not-run` after a failure).
    pub steps: Vec<Step>,
    /// How the run was made (its timings) and where its evidence is kept.
    pub notes: Vec<String>,
    /// What install.sh and the games see at `/local/game` here, and the build's absolute
    /// references to it (`None` when the build could not be unpacked).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local_game: Option<Outlook>,
}

/// What to do about a failed step: the cause is its detail, the evidence its exit and output.
pub fn advice(step: &str, event: Option<EventCode>) -> Option<&'static str> {
    use EventCode::*;
    Some(match (step, event) {
        ("interrupted", _) => return None,
        (_, Some(ServerProcessInvalidPath)) => {
            "LaunchPath must name an executable file inside the build (under /local/game/): check the path and the file's execute bit in the package"
        }
        (_, Some(ServerProcessProcessReadyTimeout)) => {
            "call ProcessReady (with the client and gRPC ports) once the server listens; it must reach the SDK at GSE_SDK_ADDRESS (127.0.0.1:5758 by default) within timeouts.process-ready"
        }
        (_, Some(ServerProcessCrashed | ServerProcessCrashLoop)) => {
            "the server exits by itself: unpack the build (gse-agent unpack BUILD DIR), run the LaunchPath there with the same Parameters and read its output"
        }
        (_, Some(ServerProcessUnhealthy | ServerProcessTerminatedUnhealthy)) => {
            "answer OnHealthCheck with healthStatus true within health-check.timeout, on the gRPC port given in ProcessReady"
        }
        (_, Some(ServerProcessProcessExitTimeout | ServerProcessForceTerminated)) => {
            "on OnProcessTerminate call ProcessEnding, then exit within timeouts.process-exit"
        }
        (_, Some(GameSessionActivationTimeout | GameSessionError)) => {
            "call ActivateGameServerSession once OnStartGameServerSession arrived, within GameServerSessionActivationTimeoutSeconds"
        }
        ("unpack", _) => {
            "the package breaks a rule named above: rebuild it; gse-agent unpack BUILD DIR applies the same rules"
        }
        ("install", _) => {
            "make install.sh exit 0: it runs with /bin/sh in the build's root (as root on game hosts); its output is above"
        }
        ("run-as", _) => {
            "gse.yaml names a user or group this host lacks: create it, or remove User from gse.yaml"
        }
        ("player-session", _) => {
            "call AcceptPlayerSession with the player session id the client was given"
        }
        ("terminate" | "stop", _) => {
            "on OnProcessTerminate call ProcessEnding, then exit within timeouts.process-exit"
        }
        _ => return None,
    })
}

impl Report {
    /// The table printed at the end of a run.
    pub fn table(&self) -> String {
        let mut out = String::new();
        out.push_str(&format!(
            "{:<18} {:<6} {:>8}  {}\n",
            "STEP", "RESULT", "TIME", "DETAIL"
        ));
        for s in &self.steps {
            let time = if s.status == Status::NotRun {
                String::new()
            } else {
                format!("{:.2}s", s.duration_millis as f64 / 1000.0)
            };
            let mut detail = s.detail.clone();
            if let Some(code) = &s.event_code {
                detail.push_str(&format!(" [{code}]"));
            }
            out.push_str(&format!(
                "{:<18} {:<6} {:>8}  {}\n",
                s.name,
                s.status.label(),
                time,
                detail
            ));
            if s.status == Status::Failed {
                for line in &s.output_tail {
                    out.push_str(&format!("{:<36}| {line}\n", ""));
                }
                if let Some(advice) = &s.advice {
                    out.push_str(&format!("{:<36}→ {advice}\n", ""));
                }
            }
        }
        if let Some(o) = &self.local_game {
            out.push_str(&format!("\n/local/game: {}\n", o.headline()));
            for r in &o.found.references {
                out.push_str(&format!("  {:<32} {}\n", r.place(), r.text));
            }
            if o.found.total > o.found.references.len() {
                out.push_str(&format!(
                    "  … and {} more\n",
                    o.found.total - o.found.references.len()
                ));
            }
            match o.verdict() {
                Some(v) => out.push_str(&format!("  → {v}\n")),
                None => out.push_str("  no install.sh line or launch path names /local/game\n"),
            }
        }
        if !self.notes.is_empty() {
            out.push('\n');
        }
        for note in &self.notes {
            out.push_str(&format!("{note}\n"));
        }
        let verdict = match (self.passed, self.interrupted) {
            (_, true) => "INTERRUPTED",
            (true, _) => "PASSED: the build comes up",
            (false, _) => "FAILED: the build would not come up",
        };
        out.push_str(&format!(
            "\n{verdict} ({:.1}s)\n",
            self.duration_millis as f64 / 1000.0
        ));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_failure_the_run_can_meet_says_what_to_do() {
        for step in [
            "unpack",
            "install",
            "run-as",
            "player-session",
            "terminate",
            "stop",
        ] {
            assert!(advice(step, None).is_some(), "{step}");
        }
        for code in [
            EventCode::ServerProcessInvalidPath,
            EventCode::ServerProcessProcessReadyTimeout,
            EventCode::ServerProcessCrashed,
            EventCode::ServerProcessCrashLoop,
            EventCode::ServerProcessUnhealthy,
            EventCode::ServerProcessTerminatedUnhealthy,
            EventCode::ServerProcessProcessExitTimeout,
            EventCode::ServerProcessForceTerminated,
            EventCode::GameSessionActivationTimeout,
            EventCode::GameSessionError,
        ] {
            assert!(advice("launch", Some(code)).is_some(), "{code:?}");
        }
        // The event says more than the step it failed.
        assert_eq!(
            advice("process-ready", Some(EventCode::ServerProcessCrashed)),
            advice("launch", Some(EventCode::ServerProcessCrashed))
        );
    }
}
