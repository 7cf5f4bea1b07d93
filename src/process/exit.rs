//! How a process ended.

use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;

use nix::sys::signal::Signal;

/// The OS's account of an exit, plus what the agent knows about it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
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
    }
}
