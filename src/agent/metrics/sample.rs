//! Per-game CPU, memory and open files, read with `sysinfo` from `/proc` on a fixed period.
//!
//! Only the processes the fleet names are read (`/proc/<pid>/stat`, `statm` and the `fd`
//! directory of each), never the whole process table; the reads are blocking and run on a
//! blocking thread.

use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System};

/// What one process used, as of one sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Usage {
    /// The OS pid.
    pub pid: u32,
    /// User and system CPU time since it started, in seconds.
    pub cpu_seconds: f64,
    /// Resident memory in bytes.
    pub rss_bytes: u64,
    /// Open file descriptors (`None` when `/proc/<pid>/fd` cannot be read).
    pub open_fds: Option<u64>,
}

/// Reads the usage of given processes; keeps `sysinfo`'s state between samples.
pub struct Sampler {
    system: System,
}

impl Default for Sampler {
    fn default() -> Self {
        Self::new()
    }
}

impl Sampler {
    /// A sampler that has read nothing yet.
    pub fn new() -> Self {
        Self {
            system: System::new(),
        }
    }

    /// The usage of each of `pids` that is still running (a process that is gone is left
    /// out), in the order given. Blocking: reads `/proc`.
    pub fn sample(&mut self, pids: &[u32]) -> Vec<Usage> {
        let wanted: Vec<Pid> = pids.iter().map(|p| Pid::from_u32(*p)).collect();
        // A process that left the fleet's list (ended, or its pid now someone else's) is
        // forgotten with its open stat file: sysinfo only drops what it refreshes and finds
        // dead, so the table starts over when the list lost a pid.
        if self.system.processes().keys().any(|p| !wanted.contains(p)) {
            self.system = System::new();
        }
        // Threads are not listed (`without_tasks`): a game's threads would cost a read each.
        self.system.refresh_processes_specifics(
            ProcessesToUpdate::Some(&wanted),
            true,
            ProcessRefreshKind::nothing()
                .with_cpu()
                .with_memory()
                .without_tasks(),
        );
        wanted
            .iter()
            .filter_map(|pid| {
                let p = self.system.process(*pid)?;
                Some(Usage {
                    pid: pid.as_u32(),
                    cpu_seconds: p.accumulated_cpu_time() as f64 / 1000.0,
                    rss_bytes: p.memory(),
                    open_fds: p.open_files().map(|n| n as u64),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_own_process_is_read_and_a_dead_pid_left_out() {
        let me = std::process::id();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let mut s = Sampler::new();
        // Burn a little CPU so that the count is above zero.
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        assert!(x != 1);
        let usage = s.sample(&[me, dead]);
        assert_eq!(usage.len(), 1, "{usage:?}");
        let u = usage[0];
        assert_eq!(u.pid, me);
        assert!(u.rss_bytes > 1 << 20, "{u:?}");
        assert!(u.open_fds.is_some_and(|n| n >= 3), "{u:?}");
        assert!(u.cpu_seconds > 0.0, "{u:?}");
    }
}
