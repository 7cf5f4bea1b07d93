//! How a process ended.

use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;

use nix::sys::signal::Signal;

/// The OS's account of an exit, plus what the agent knows about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitInfo {
    /// Exit code, if it exited.
    pub exit_code: Option<i32>,
    /// Terminating signal number, if a signal ended it.
    pub signal: Option<i32>,
    /// A core dump was written.
    pub core_dumped: bool,
    /// The agent sent SIGKILL to its group.
    pub killed_by_agent: bool,
    /// The last lines of output.
    pub output_tail: Vec<String>,
    /// The output file to open for more (the one the last line of the tail came from).
    pub log_file: Option<std::path::PathBuf>,
    /// The exit status was observed (the agent was the parent). False for a process adopted
    /// after an agent restart: init reaped it, so code and signal are unknown.
    pub status_known: bool,
}

impl Default for ExitInfo {
    /// A clean exit of an own child with nothing known yet (status known, no code).
    fn default() -> Self {
        Self {
            exit_code: None,
            signal: None,
            core_dumped: false,
            killed_by_agent: false,
            output_tail: Vec::new(),
            log_file: None,
            status_known: true,
        }
    }
}

impl ExitInfo {
    /// From the wait status; a failed wait is reported as exit code -1.
    pub fn from_status(
        status: std::io::Result<ExitStatus>,
        killed_by_agent: bool,
        output_tail: Vec<String>,
    ) -> Self {
        let (exit_code, signal, core_dumped) = match status {
            Ok(s) => (s.code(), s.signal(), s.core_dumped()),
            Err(_) => (Some(-1), None, false),
        };
        Self {
            exit_code,
            signal,
            core_dumped,
            killed_by_agent,
            output_tail,
            log_file: None,
            status_known: true,
        }
    }

    /// The exit of an adopted process: it is not the agent's child, so no status.
    pub fn status_unknown(killed_by_agent: bool, output_tail: Vec<String>) -> Self {
        Self {
            killed_by_agent,
            output_tail,
            status_known: false,
            ..Self::default()
        }
    }

    /// `SIGSEGV`, or the number when unknown.
    pub fn signal_name(&self) -> Option<String> {
        self.signal.map(|n| {
            Signal::try_from(n)
                .map(|s| s.as_str().to_string())
                .unwrap_or_else(|_| format!("signal {n}"))
        })
    }

    /// `exit code 3`, `killed by SIGSEGV (core dumped)`.
    pub fn describe(&self) -> String {
        if !self.status_known {
            return "exit status unknown (it outlived an agent restart, so it was not the agent's child)"
                .into();
        }
        match (self.exit_code, self.signal_name()) {
            (Some(code), _) => format!("exit code {code}"),
            (None, Some(sig)) if self.core_dumped => format!("killed by {sig} (core dumped)"),
            (None, Some(sig)) => format!("killed by {sig}"),
            (None, None) => "unknown exit status".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_codes_and_signals() {
        let code = ExitInfo::from_status(Ok(ExitStatus::from_raw(3 << 8)), false, vec![]);
        assert_eq!(code.describe(), "exit code 3");
        let sig = ExitInfo::from_status(Ok(ExitStatus::from_raw(11)), false, vec![]);
        assert_eq!(sig.signal_name().as_deref(), Some("SIGSEGV"));
        assert_eq!(sig.describe(), "killed by SIGSEGV");
        let core = ExitInfo::from_status(Ok(ExitStatus::from_raw(11 | 0x80)), false, vec![]);
        assert_eq!(core.describe(), "killed by SIGSEGV (core dumped)");
        let adopted = ExitInfo::status_unknown(false, vec![]);
        assert_eq!(
            adopted.describe(),
            "exit status unknown (it outlived an agent restart, so it was not the agent's child)"
        );
    }
}
