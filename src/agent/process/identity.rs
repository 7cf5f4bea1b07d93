//! Which process a pid is: its start time (clock ticks after boot, from `/proc/<pid>/stat`)
//! and its executable. The pair (pid, start time) never names two processes.

use std::path::PathBuf;

/// A process, identified beyond its (reusable) pid.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Identity {
    /// The pid.
    pub pid: u32,
    /// Start time in clock ticks after boot (`/proc/<pid>/stat` field 22); unchanged by exec.
    pub start_ticks: u64,
    /// The executable (`/proc/<pid>/exe`) as recorded when the process was identified; for
    /// the logs only (a wrapper script that `exec`s its server changes it). Empty when
    /// unreadable. Stored lossily (a non-UTF-8 path must not make the record unwritable).
    #[serde(serialize_with = "serialize_lossy")]
    pub exe: PathBuf,
    /// The kernel's boot id when it was identified: start times count from boot, so a record
    /// from before a reboot never matches a process after it. Empty in records that predate it.
    #[serde(default)]
    pub boot_id: String,
}

fn serialize_lossy<S: serde::Serializer>(path: &std::path::Path, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&path.to_string_lossy())
}

/// This boot's id (`/proc/sys/kernel/random/boot_id`), read once; empty if unreadable.
fn boot_id() -> &'static str {
    static BOOT_ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BOOT_ID.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    })
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

/// The process group of `pid` (`None` if there is no such process).
pub fn process_group(pid: u32) -> Option<u32> {
    read_stat(pid).ok().flatten().map(|s| s.pgrp)
}

impl Identity {
    /// Reads the identity of the live process `pid`.
    pub fn read(pid: u32) -> Result<Identity, IdentityError> {
        let stat = match read_stat(pid) {
            Ok(Some(s)) if !s.is_dead() => s,
            Ok(_) => return Err(IdentityError::Gone { pid }),
            Err(source) => return Err(IdentityError::Stat { pid, source }),
        };
        // Unreadable without ptrace rights over the process: it only names it in the logs.
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
        Ok(Identity::in_this_boot(pid, stat.start_ticks, exe))
    }

    /// The process `pid` that started at `start_ticks` of this boot, running `exe`.
    pub(crate) fn in_this_boot(pid: u32, start_ticks: u64, exe: PathBuf) -> Identity {
        Identity {
            pid,
            start_ticks,
            exe,
            boot_id: boot_id().to_string(),
        }
    }

    /// Whether `current` (read now) is the process this identity recorded: the same pid
    /// started at the same clock tick of the same boot names one process for the life of the
    /// system. The executable is not compared: a wrapper script that `exec`s its server, or a
    /// build replaced on disk, changes it ([`crate::agent::process::adopt`] also checks the tag in
    /// the process's environment).
    pub fn matches(&self, current: &Identity) -> bool {
        self.pid == current.pid
            && self.start_ticks == current.start_ticks
            && (self.boot_id.is_empty()
                || current.boot_id.is_empty()
                || self.boot_id == current.boot_id)
    }
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
    fn pid_start_time_and_boot_name_a_process_whatever_its_executable() {
        let id = |exe: &str| Identity {
            pid: 7,
            start_ticks: 9,
            exe: exe.into(),
            boot_id: "b1".into(),
        };
        // A wrapper that exec'ed its server, or a build replaced on disk: the same process.
        assert!(id("/bin/sh").matches(&id("/g/server")));
        assert!(id("/g/server").matches(&id("/g/server (deleted)")));
        assert!(!id("/g/server").matches(&Identity {
            start_ticks: 10,
            ..id("/g/server")
        }));
        assert!(!id("/g/server").matches(&Identity {
            boot_id: "b2".into(),
            ..id("/g/server")
        }));
        // A record from before boot ids were kept still matches on pid and start time.
        assert!(
            Identity {
                boot_id: String::new(),
                ..id("/g/server")
            }
            .matches(&id("/g/server"))
        );
    }

    #[test]
    fn reads_the_process_group() {
        let group = process_group(std::process::id()).unwrap();
        assert_eq!(group, nix::unistd::getpgrp().as_raw() as u32);
        assert_eq!(process_group(u32::MAX), None);
    }

    #[test]
    fn own_identity_is_readable() {
        let me = Identity::read(std::process::id()).unwrap();
        assert_eq!(me.exe, std::env::current_exe().unwrap());
        assert!(me.start_ticks > 0);
    }
}
