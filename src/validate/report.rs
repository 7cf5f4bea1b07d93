//! The validation report: JSON for machines, a table for people.

use serde::Serialize;

use crate::event::Event;

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
            }
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
