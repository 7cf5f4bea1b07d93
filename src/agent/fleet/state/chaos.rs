//! Crash rehearsal: faults injected into the live fleet on request (`chaos: enabled`).
//!
//! A fault is decided here and performed by the actor as an effect: a signal, a health check
//! answered as failed without asking the game, an OnStartGameServerSession delayed or not
//! made. What follows (the exit, the unhealthy verdict, the failed activation) goes through the
//! same transitions as a real fault, so a rehearsal tests the handling a real crash gets. Each
//! fault is one event with its own code. Faults are not saved: an agent that stops continues
//! the groups it hung (even when it leaves them running for the next agent), and armed
//! failures end with it.

use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::time::Instant;

use super::Fleet;
use crate::agent::event::{Event, EventCode};
use crate::agent::fleet::api::{
    CHAOS_OFF, ControlReply, Fault, FaultTarget, FleetError, MAX_FAULT_COUNT, MAX_FAULT_DURATION,
    StartFault,
};
use crate::agent::fleet::timers::Timer;

/// The faults injected into one process.
#[derive(Debug, Default)]
pub(super) struct ProcFaults {
    /// Health checks still to fail without asking the game.
    pub(super) failing_checks: u32,
    /// The signal crash rehearsal sent it, told apart from a real crash in its exit event.
    pub(super) signal: Option<Signal>,
    /// It is hung (its group stopped) until then; a later hang extends it.
    pub(super) hung_until: Option<Instant>,
}

/// OnStartGameServerSession calls a [`Fault::SessionStart`] still affects.
#[derive(Debug)]
pub(super) struct ArmedStartFault {
    /// Only calls to this process (launch serial); `None`: any.
    pub(super) serial: Option<u64>,
    left: u32,
    fault: StartFault,
}

impl Fleet {
    /// Injects `fault`: checks it, emits its event and queues what the actor performs.
    pub(super) fn inject(
        &mut self,
        fault: Fault,
        now: Instant,
    ) -> Result<ControlReply, FleetError> {
        if !self.cfg.chaos {
            return Err(FleetError::Denied(CHAOS_OFF.into()));
        }
        match fault {
            Fault::Kill { target, signal } => self.kill(&target, signal),
            Fault::Hang { target, duration } => self.hang(&target, duration, now),
            Fault::FailHealthChecks { target, count } => self.fail_health_checks(&target, count),
            Fault::SessionStart {
                process,
                count,
                fault,
            } => self.fault_session_starts(process, count, fault),
        }
    }

    /// Sends `signal` to the process (not its group).
    fn kill(&mut self, target: &FaultTarget, signal: Signal) -> Result<ControlReply, FleetError> {
        if matches!(
            signal,
            Signal::SIGSTOP | Signal::SIGCONT | Signal::SIGTSTP | Signal::SIGTTIN | Signal::SIGTTOU
        ) {
            return Err(FleetError::Invalid {
                param: "Signal",
                message: format!(
                    "{} does not end a process; hang it instead",
                    signal.as_str()
                ),
            });
        }
        let (serial, id, pid) = self.fault_target(target)?;
        if let Some(p) = self.procs.get_mut(&serial) {
            p.faults.signal = Some(signal);
        }
        self.effects.push(crate::agent::fleet::api::Effect::Signal {
            serial,
            signal,
            group: false,
        });
        self.emit(
            Event::new(
                EventCode::ChaosProcessKilled,
                format!("crash rehearsal sent {} to the process", signal.as_str()),
            )
            .process(&id, Some(pid)),
        );
        Ok(injected(id, pid, EventCode::ChaosProcessKilled))
    }

    /// Stops the process group for `duration`.
    fn hang(
        &mut self,
        target: &FaultTarget,
        duration: std::time::Duration,
        now: Instant,
    ) -> Result<ControlReply, FleetError> {
        check_duration(duration)?;
        let (serial, id, pid) = self.fault_target(target)?;
        let until = now + duration;
        if let Some(p) = self.procs.get_mut(&serial) {
            p.faults.hung_until = Some(p.faults.hung_until.map_or(until, |t| t.max(until)));
        }
        self.effects.push(crate::agent::fleet::api::Effect::Signal {
            serial,
            signal: Signal::SIGSTOP,
            group: true,
        });
        self.timers.add(until, Timer::FaultHangEnd { serial });
        self.emit(
            Event::new(
                EventCode::ChaosProcessHung,
                format!(
                    "crash rehearsal stopped the process group (SIGSTOP) for {}",
                    humantime::format_duration(duration)
                ),
            )
            .process(&id, Some(pid)),
        );
        Ok(injected(id, pid, EventCode::ChaosProcessHung))
    }

    /// Fails the process's next `count` health checks.
    fn fail_health_checks(
        &mut self,
        target: &FaultTarget,
        count: Option<u32>,
    ) -> Result<ControlReply, FleetError> {
        let count = count.unwrap_or(self.cfg.health_check.failure_threshold);
        check_count(count)?;
        let (serial, id, pid) = self.fault_target(target)?;
        if let Some(p) = self.procs.get_mut(&serial) {
            p.faults.failing_checks = count;
        }
        let threshold = self.cfg.health_check.failure_threshold;
        self.emit(
            Event::new(
                EventCode::ChaosHealthChecksFailing,
                format!(
                    "crash rehearsal fails the next {count} health check(s) (the process is ended as unhealthy after {threshold} in a row)"
                ),
            )
            .process(&id, Some(pid)),
        );
        Ok(injected(id, pid, EventCode::ChaosHealthChecksFailing))
    }

    /// Delays or fails the next `count` OnStartGameServerSession calls (to `process`, or to any).
    fn fault_session_starts(
        &mut self,
        process: Option<String>,
        count: u32,
        fault: StartFault,
    ) -> Result<ControlReply, FleetError> {
        check_count(count)?;
        if let StartFault::Delay(d) = fault {
            check_duration(d)?;
        }
        let target = match &process {
            Some(id) => Some(self.fault_target(&FaultTarget::Process(id.clone()))?),
            None => None,
        };
        self.start_faults.push(ArmedStartFault {
            serial: target.as_ref().map(|(serial, ..)| *serial),
            left: count,
            fault,
        });
        let whose = match &target {
            Some((_, id, _)) => format!("to {id}"),
            None => "to any process".into(),
        };
        let (code, message) = match fault {
            StartFault::Delay(d) => (
                EventCode::ChaosSessionStartDelayed,
                format!(
                    "crash rehearsal delays the next {count} OnStartGameServerSession call(s) {whose} by {}",
                    humantime::format_duration(d)
                ),
            ),
            StartFault::Fail => (
                EventCode::ChaosSessionStartFailing,
                format!(
                    "crash rehearsal fails the next {count} OnStartGameServerSession call(s) {whose}"
                ),
            ),
        };
        let mut event = Event::new(code, message);
        if let Some((_, id, pid)) = &target {
            event = event.process(id, Some(*pid));
        }
        self.emit(event);
        Ok(match target {
            Some((_, id, pid)) => injected(id, pid, code),
            None => ControlReply::Injected {
                process_id: None,
                pid: None,
                event_code: code,
            },
        })
    }

    /// The live process a fault names: `(serial, process id, pid)`.
    fn fault_target(&self, target: &FaultTarget) -> Result<(u64, String, u32), FleetError> {
        let serial = match target {
            FaultTarget::Process(id) => self
                .procs
                .iter()
                .find(|(_, p)| p.id == *id)
                .map(|(serial, _)| *serial)
                .ok_or_else(|| FleetError::NotFound {
                    kind: "server process",
                    id: id.clone(),
                })?,
            FaultTarget::Session(gss_id) => {
                let s = self.find_session(gss_id)?;
                if s.status.is_final() {
                    return Err(FleetError::Denied(format!(
                        "game server session {gss_id} is already {}; its process is no longer its host",
                        s.status
                    )));
                }
                self.serial_of(s.pid).ok_or_else(|| FleetError::NotFound {
                    kind: "server process of game server session",
                    id: gss_id.clone(),
                })?
            }
        };
        let p = &self.procs[&serial];
        Ok((serial, p.id.clone(), p.identity.pid))
    }

    /// A health check of `serial` is due: `Some(detail)` when crash rehearsal fails it instead.
    pub(super) fn injected_health_failure(&mut self, serial: u64) -> Option<String> {
        let p = self.procs.get_mut(&serial)?;
        if p.faults.failing_checks == 0 {
            return None;
        }
        p.faults.failing_checks -= 1;
        Some(format!(
            "failed by crash rehearsal ({} more to fail)",
            p.faults.failing_checks
        ))
    }

    /// The fault crash rehearsal armed for the next OnStartGameServerSession to `serial`, if
    /// any (the oldest that applies; used up as it is taken).
    pub(super) fn take_start_fault(&mut self, serial: u64) -> Option<StartFault> {
        let i = self
            .start_faults
            .iter()
            .position(|f| f.serial.is_none_or(|s| s == serial))?;
        let armed = &mut self.start_faults[i];
        armed.left -= 1;
        let fault = armed.fault;
        if armed.left == 0 {
            self.start_faults.remove(i);
        }
        Some(fault)
    }

    /// A hang's time is up: continue the process if it still runs and no later hang holds it.
    pub(super) fn end_hang(&mut self, serial: u64, now: Instant) {
        let Some(p) = self.procs.get_mut(&serial) else {
            return;
        };
        if p.faults.hung_until.is_some_and(|t| t <= now) {
            p.faults.hung_until = None;
            self.effects.push(crate::agent::fleet::api::Effect::Signal {
                serial,
                signal: Signal::SIGCONT,
                group: true,
            });
        }
    }

    /// The processes crash rehearsal holds hung now (an agent leaving them to the next one
    /// continues them first).
    pub fn hung(&self) -> Vec<u64> {
        self.procs
            .iter()
            .filter(|(_, p)| p.faults.hung_until.is_some())
            .map(|(serial, _)| *serial)
            .collect()
    }

    /// Forgets the faults armed for a process that ended.
    pub(super) fn forget_faults(&mut self, serial: u64) {
        self.start_faults.retain(|f| f.serial != Some(serial));
    }
}

fn injected(process_id: String, pid: u32, event_code: EventCode) -> ControlReply {
    ControlReply::Injected {
        process_id: Some(process_id),
        pid: Some(pid),
        event_code,
    }
}

fn check_duration(d: Duration) -> Result<(), FleetError> {
    if d.is_zero() || d > MAX_FAULT_DURATION {
        return Err(FleetError::Invalid {
            param: "DurationSeconds",
            message: format!(
                "{} is not more than zero and at most {}",
                humantime::format_duration(d),
                humantime::format_duration(MAX_FAULT_DURATION)
            ),
        });
    }
    Ok(())
}

fn check_count(n: u32) -> Result<(), FleetError> {
    if !(1..=MAX_FAULT_COUNT).contains(&n) {
        return Err(FleetError::Invalid {
            param: "Count",
            message: format!("{n} is not 1–{MAX_FAULT_COUNT}"),
        });
    }
    Ok(())
}
