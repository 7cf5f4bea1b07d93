//! Which process a pid is: its start time (clock ticks after boot, from `/proc/<pid>/stat`)
//! and its executable. The pair (pid, start time) never names two processes.

use std::path::{Path, PathBuf};

/// A process, identified beyond its (reusable) pid.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Identity {
    /// The pid.
    pub pid: u32,
    /// Start time in clock ticks after boot (`/proc/<pid>/stat` field 22); unchanged by exec.
    pub start_ticks: u64,
    /// The executable (`/proc/<pid>/exe`) as recorded when the process was identified.
    pub exe: PathBuf,
}

/// Why a process could not be identified.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// There is no such process (or it is a zombie: exited, not yet reaped).
    #[error("no process {pid}")]
    Gone {
        /// The pid.
        pid: u32,
    },
    /// `/proc/<pid>/stat` could not be read or parsed.
    #[error("cannot read /proc/{pid}/stat: {source}")]
    Stat {
        /// The pid.
        pid: u32,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// `/proc/<pid>/exe` could not be read (e.g. another user's process and no privilege).
    #[error("cannot read /proc/{pid}/exe: {source}")]
    Exe {
        /// The pid.
        pid: u32,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// The parts of `/proc/<pid>/stat` the process module uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stat {
    /// `R`, `S`, `Z`, …
    pub state: char,
    /// Parent pid.
    pub ppid: u32,
    /// Process group id.
    pub pgrp: u32,
    /// Start time in clock ticks after boot.
    pub start_ticks: u64,
}

impl Stat {
    /// Exited (a zombie or being torn down).
    pub fn is_dead(&self) -> bool {
        matches!(self.state, 'Z' | 'X' | 'x')
    }
}

/// Parses a stat line; fields are counted after the last `)` (the command name may hold
/// spaces and parentheses).
pub(crate) fn parse_stat(text: &str) -> Option<Stat> {
    let after = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // fields[0] is field 3 (state); field N is fields[N - 3].
    Some(Stat {
        state: fields.first()?.chars().next()?,
        ppid: fields.get(1)?.parse().ok()?,
        pgrp: fields.get(2)?.parse().ok()?,
        start_ticks: fields.get(19)?.parse().ok()?,
    })
}

/// `/proc/<pid>/stat`; `Ok(None)` when there is no such process.
pub(crate) fn read_stat(pid: u32) -> std::io::Result<Option<Stat>> {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(text) => parse_stat(&text).map(Some).ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidData, "unparsable stat line")
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(None),
        Err(e) => Err(e),
    }
}

impl Identity {
    /// Reads the identity of the live process `pid`.
    pub fn read(pid: u32) -> Result<Identity, IdentityError> {
        let stat = match read_stat(pid) {
            Ok(Some(s)) if !s.is_dead() => s,
            Ok(_) => return Err(IdentityError::Gone { pid }),
            Err(source) => return Err(IdentityError::Stat { pid, source }),
        };
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).map_err(|source| match source
            .kind()
        {
            std::io::ErrorKind::NotFound => IdentityError::Gone { pid },
            _ => IdentityError::Exe { pid, source },
        })?;
        Ok(Identity {
            pid,
            start_ticks: stat.start_ticks,
            exe,
        })
    }

    /// Whether `current` (read now) is the process this identity recorded. The executable
    /// may since have been deleted or replaced by a new build (`<path> (deleted)`).
    pub fn matches(&self, current: &Identity) -> bool {
        self.pid == current.pid
            && self.start_ticks == current.start_ticks
            && exe_matches(&self.exe, &current.exe)
    }
}

/// `current` is `recorded`, or `recorded` marked deleted by the kernel.
fn exe_matches(recorded: &Path, current: &Path) -> bool {
    if recorded == current {
        return true;
    }
    let (r, c) = (
        recorded.as_os_str().as_encoded_bytes(),
        current.as_os_str().as_encoded_bytes(),
    );
    c.strip_suffix(b" (deleted)") == Some(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_last_paren() {
        let line = "42 (a) b (c)) S 1 42 42 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 98765 1 1";
        let s = parse_stat(line).unwrap();
        assert_eq!(
            (s.state, s.ppid, s.pgrp, s.start_ticks),
            ('S', 1, 42, 98765)
        );
    }

    #[test]
    fn a_deleted_executable_still_matches() {
        let id = |exe: &str| Identity {
            pid: 7,
            start_ticks: 9,
            exe: exe.into(),
        };
        assert!(id("/g/server").matches(&id("/g/server (deleted)")));
        assert!(!id("/g/server").matches(&id("/g/other")));
        assert!(!id("/g/server").matches(&Identity {
            start_ticks: 10,
            ..id("/g/server")
        }));
    }

    #[test]
    fn own_identity_is_readable() {
        let me = Identity::read(std::process::id()).unwrap();
        assert_eq!(me.exe, std::env::current_exe().unwrap());
        assert!(me.start_ticks > 0);
    }
}
