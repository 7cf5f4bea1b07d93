//! Crash rehearsal's faults as the fleet takes them (`Control::InjectFault`).

use std::time::Duration;

/// A fault crash rehearsal injects (`chaos: enabled` only). Each is one event with its own
/// code when injected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Send `signal` to the process alone, as the kernel sends a crash signal; its exit is then
    /// handled as any crash.
    Kill {
        /// Which process.
        target: FaultTarget,
        /// The signal (not one that stops or continues a process: see [`Fault::Hang`]).
        signal: nix::sys::signal::Signal,
    },
    /// Stop the whole process group (SIGSTOP) and continue it (SIGCONT) after `duration`.
    Hang {
        /// Which process.
        target: FaultTarget,
        /// How long it stays stopped.
        duration: Duration,
    },
    /// The process's next `count` health checks fail without the game being asked.
    FailHealthChecks {
        /// Which process.
        target: FaultTarget,
        /// How many; `None`: `health-check.failure-threshold`, enough to end it as unhealthy.
        count: Option<u32>,
    },
    /// The next `count` OnStartGameServerSession calls, to `process` or to any process, are
    /// delayed or fail.
    SessionStart {
        /// Only calls to this process (by process id); `None`: to any.
        process: Option<String>,
        /// How many calls.
        count: u32,
        /// What happens to them.
        fault: StartFault,
    },
}

/// The process a [`Fault`] is aimed at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultTarget {
    /// By its process id.
    Process(String),
    /// The process hosting this game server session.
    Session(String),
}

/// What happens to an OnStartGameServerSession call crash rehearsal armed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartFault {
    /// The call is made this much later (the activation timeout still runs).
    Delay(Duration),
    /// The call is not made; the agent takes it as failed, as if the game had answered with an
    /// error.
    Fail,
}

/// Why a fault is refused when the config does not say `chaos: enabled`.
pub const CHAOS_OFF: &str = "crash rehearsal is off on this agent: set `chaos: enabled` in agent.yaml (never on a host that serves players)";

/// The longest a process may be hung, an OnStartGameServerSession delayed, or the upstream
/// link cut by crash rehearsal.
pub const MAX_FAULT_DURATION: Duration = Duration::from_secs(3600);
/// The most health checks or session starts one fault affects.
pub const MAX_FAULT_COUNT: u32 = 1000;
