//! Processes: spawned, adopted, exited (and how an exit is classified), health, termination
//! and stops.

use std::time::Duration;

use tokio::time::Instant;

use super::{Fleet, LaunchState, Phase, Proc, TerminateReason};
use crate::agent::event::{Change, Event, EventCode, ExitDetails};
use crate::agent::fleet::api::{Effect, LastExit, StopReason};
use crate::agent::fleet::timers::Timer;
use crate::agent::process::{ExitInfo, Identity};
use crate::agent::session::{GssInput, GssStatus, unix_seconds};

impl Fleet {
    /// The recorded process `serial` is alive and supervised again (after a restart of the
    /// agent).
    pub fn adopted(&mut self, serial: u64) {
        let Some(p) = self.procs.get(&serial) else {
            return;
        };
        let (id, pid, phase, stop) = (p.id.clone(), p.identity.pid, p.phase, p.stop);
        self.emit(
            Event::new(
                EventCode::ServerProcessAdopted,
                format!("adopted after an agent restart ({})", phase.as_str()),
            )
            .process(&id, Some(pid)),
        );
        if let Some(reason) = stop {
            // The stop asked for before the restart is asked for again.
            self.procs.get_mut(&serial).expect("checked above").stop = None;
            self.stop(serial, reason);
        }
    }

    /// The recorded process `serial` is no longer running (or its pid now names another
    /// process): it is accounted for as an exit whose status is unknown, and replaced.
    pub fn lost(&mut self, serial: u64, why: &str, now: Instant) {
        let info = ExitInfo::status_unknown(
            false,
            vec![format!(
                "not running as recorded when the agent restarted: {why}"
            )],
        );
        self.ended(serial, info, now, false);
    }

    /// The launch `serial` of `slot` succeeded: `identity` names the new process.
    pub fn spawned(
        &mut self,
        slot: usize,
        serial: u64,
        process_id: String,
        identity: Identity,
        now: Instant,
    ) {
        let pid = identity.pid;
        let ready_by = now + self.cfg.timeouts.process_ready.get();
        let s = &mut self.slots[slot];
        s.launch = LaunchState::Idle;
        s.serial = Some(serial);
        let entry = s.entry;
        self.entries[entry].invalid_path_reported = false;
        self.entries[entry].last_launch_error = None;
        self.timers.add(ready_by, Timer::ReadyTimeout { serial });
        let launch_path = self.entries[entry].spec.launch_path.clone();
        self.emit(
            Event::new(
                EventCode::ServerProcessStarted,
                format!("started {launch_path}"),
            )
            .process(&process_id, Some(pid)),
        );
        self.by_pid.insert(pid, serial);
        self.procs.insert(
            serial,
            Proc {
                id: process_id,
                identity,
                deadline: Some(ready_by),
                serial,
                slot,
                started: now,
                ready_at: None,
                phase: Phase::Launching,
                client_port: 0,
                grpc_port: 0,
                healthy: false,
                health_failures: 0,
                health_checks_passed: 0,
                health_in_flight: false,
                session: None,
                log_paths: Vec::new(),
                custom: (0, 0),
                told_to_terminate: None,
                stop: None,
                faults: super::chaos::ProcFaults::default(),
            },
        );
        if self.shutting_down {
            self.stop(serial, StopReason::Shutdown);
        } else if self.slots[slot].retiring {
            // Launched just before a runtime update: it would run the old configuration.
            self.stop(serial, StopReason::Forced);
        }
    }

    /// The process launched as `serial` exited (and was reaped).
    pub fn exited(&mut self, serial: u64, info: ExitInfo, now: Instant) {
        self.ended(serial, info, now, true);
    }

    /// Accounts for the end of the process `serial`; `counts` says whether a failure counts
    /// toward its slot's backoff and its entry's crash-loop breaker (an end noticed only at a
    /// restart of the agent does not: a reboot would otherwise pause every entry).
    fn ended(&mut self, serial: u64, info: ExitInfo, now: Instant, counts: bool) {
        let Some(p) = self.procs.remove(&serial) else {
            return;
        };
        let pid = p.identity.pid;
        if self.by_pid.get(&pid) == Some(&serial) {
            self.by_pid.remove(&pid);
        }
        self.effects.push(Effect::Forget { serial });
        self.forget_faults(serial);
        let code = classify(&p);
        let ran = now.saturating_duration_since(p.started);
        let details = ExitDetails {
            exit_code: info.exit_code,
            signal: info.signal_name(),
            core_dumped: info.core_dumped,
            likely_oom_kill: info.signal == Some(nix::sys::signal::Signal::SIGKILL as i32)
                && !info.killed_by_agent
                && p.faults.signal != Some(nix::sys::signal::Signal::SIGKILL),
            run_millis: ran.as_millis() as u64,
            ready_millis: p
                .ready_at
                .map(|t| now.saturating_duration_since(t).as_millis() as u64),
            output_tail: if code == EventCode::ServerProcessEnded {
                Vec::new()
            } else {
                info.output_tail.clone()
            },
            log_file: info.log_file.as_ref().map(|f| f.display().to_string()),
        };
        let message = match code {
            EventCode::ServerProcessEnded => format!("process ended ({})", info.describe()),
            EventCode::ServerProcessCrashed => match p.faults.signal {
                Some(sent) if info.signal == Some(sent as i32) => format!(
                    "process crashed ({}, sent by crash rehearsal)",
                    info.describe()
                ),
                _ => format!("process crashed ({})", info.describe()),
            },
            EventCode::ServerProcessProcessReadyTimeout => format!(
                "no ProcessReady within {}, so the agent stopped it (then: {})",
                humantime::format_duration(self.cfg.timeouts.process_ready.get()),
                info.describe()
            ),
            EventCode::ServerProcessProcessExitTimeout => format!(
                "did not exit within {} of ProcessEnding, so the agent stopped it (then: {})",
                humantime::format_duration(self.cfg.timeouts.process_exit.get()),
                info.describe()
            ),
            EventCode::ServerProcessTerminatedUnhealthy => {
                format!("unhealthy process ended ({})", info.describe())
            }
            _ => format!("process terminated by the agent ({})", info.describe()),
        };
        self.emit(
            Event::new(code, message)
                .process(&p.id, Some(pid))
                .exit(details),
        );
        self.archive_logs(&p, code, now);
        let last_line = info
            .output_tail
            .iter()
            .rev()
            .map(|l| l.trim())
            .find(|l| !l.is_empty());
        self.slots[p.slot].last_exit = Some(LastExit {
            process_id: p.id.clone(),
            event_code: code.as_str(),
            reason: match last_line {
                Some(line) if code != EventCode::ServerProcessEnded => {
                    format!("{}; last output: {line}", info.describe())
                }
                _ => info.describe(),
            },
            at: self.clock.to_wall(now),
        });
        let clean = code == EventCode::ServerProcessEnded;
        if let Some(gss_id) = &p.session {
            let reason = if clean {
                "process ended".to_string()
            } else {
                format!("process {} ({})", code.as_str(), info.describe())
            };
            self.end_session(gss_id, GssInput::ProcessExited { clean }, &reason);
        }
        let slot = p.slot;
        self.slots[slot].serial = None;
        // A process that ended before it ever became ready is failing too, however it ended:
        // without this, one that calls ProcessEnding at start-up would relaunch hot forever.
        let failure = (p.ready_at.is_none() && p.stop.is_none())
            || matches!(
                code,
                EventCode::ServerProcessCrashed
                    | EventCode::ServerProcessProcessReadyTimeout
                    | EventCode::ServerProcessTerminatedUnhealthy
                    | EventCode::ServerProcessProcessExitTimeout
            );
        if failure && counts {
            self.after_failure(slot, now, ran);
        } else if failure {
            self.schedule_launch(slot, now, Duration::ZERO);
        } else {
            self.slots[slot].failures = 0;
            self.schedule_launch(slot, now, Duration::ZERO);
        }
    }

    /// Asks for the archive of the ended process `p`: the paths it named, the sessions it
    /// hosted (those the fleet still holds), how and when it ended.
    fn archive_logs(&mut self, p: &Proc, code: EventCode, now: Instant) {
        let mut hosted: Vec<(u64, &String)> = self
            .sessions
            .iter()
            .filter(|(_, (_, s))| s.process_id == p.id)
            .map(|(id, (order, _))| (*order, id))
            .collect();
        hosted.sort();
        let job = crate::agent::logarchive::Job {
            process_id: p.id.clone(),
            log_paths: p.log_paths.clone(),
            sessions: hosted.into_iter().map(|(_, id)| id.clone()).collect(),
            event_code: code.as_str(),
            started_at: self.clock.to_wall(p.started),
            ended_at: self.clock.to_wall(now),
            build: None,
        };
        self.effects.push(Effect::ArchiveLogs {
            serial: p.serial,
            job: Box::new(job),
        });
    }

    /// A health check of the process launched as `serial` finished.
    pub fn health_result(&mut self, serial: u64, healthy: bool, detail: &str, now: Instant) {
        let threshold = self.cfg.health_check.failure_threshold;
        let interval = self.cfg.health_check.interval.get();
        let Some(p) = self.procs.get_mut(&serial) else {
            return;
        };
        let pid = p.identity.pid;
        p.health_in_flight = false;
        if p.phase != Phase::Active {
            return;
        }
        if healthy {
            p.health_failures = 0;
            p.health_checks_passed += 1;
            let recovered = !p.healthy;
            p.healthy = true;
            if recovered {
                // Healthy again: no event says so, but the process list changed.
                self.effects.push(Effect::Changed(Change::Processes));
            }
        } else {
            p.health_failures += 1;
            self.health_check_failures += 1;
            tracing::debug!(
                process.pid = pid,
                health.failures = p.health_failures,
                health.detail = detail,
                "health check failed"
            );
        }
        if p.health_failures >= threshold {
            p.healthy = false;
            let id = p.id.clone();
            self.emit(
                Event::new(
                    EventCode::ServerProcessUnhealthy,
                    format!("{threshold} consecutive health checks failed (last: {detail})"),
                )
                .process(&id, Some(pid)),
            );
            self.terminate(serial, TerminateReason::Unhealthy, now);
        } else {
            self.timers
                .add(now + interval, Timer::HealthCheck { serial });
        }
    }

    /// OnStartGameServerSession to the process launched as `serial` returned; `Err` carries
    /// why it failed.
    pub fn start_session_result(
        &mut self,
        serial: u64,
        gss_id: &str,
        result: Result<(), String>,
        now: Instant,
    ) {
        let Err(why) = result else { return };
        let activating = self
            .sessions
            .get(gss_id)
            .is_some_and(|(_, s)| s.status == GssStatus::Activating);
        if activating {
            self.end_session(
                gss_id,
                GssInput::Fail,
                &format!("OnStartGameServerSession failed: {why}"),
            );
            if let Some(p) = self.procs.get_mut(&serial) {
                p.session = None;
            }
        }
        self.after_input(now);
    }

    /// Begins the agent's shutdown: nothing new launches; every ready process is sent
    /// OnProcessTerminate with the shutdown deadline; the rest are stopped.
    pub fn begin_shutdown(&mut self, now: Instant) {
        if self.shutting_down {
            return;
        }
        self.shutting_down = true;
        self.emit(Event::new(
            EventCode::AgentStopping,
            format!("stopping {} server process(es)", self.procs.len()),
        ));
        for serial in self.serials() {
            match self.procs[&serial].phase {
                Phase::Active | Phase::Terminating(_) => {
                    self.terminate(serial, TerminateReason::Shutdown, now)
                }
                Phase::Launching => self.stop(serial, StopReason::Shutdown),
                Phase::Ending => {}
            }
        }
    }

    /// Stops every process now (second signal, or the shutdown deadline passed).
    pub fn stop_all(&mut self) {
        self.shutting_down = true;
        for serial in self.serials() {
            self.stop(serial, StopReason::Shutdown);
        }
    }

    /// Sends OnProcessTerminate (or stops at once a process without callbacks) and arms the
    /// protection deadline.
    pub(super) fn terminate(&mut self, serial: u64, reason: TerminateReason, now: Instant) {
        let shutdown_grace = self.cfg.timeouts.shutdown.get();
        // The session's own policy (UpdateGameServerSession) wins over the fleet's.
        let live_policy = self.live_session_policy(serial);
        let protection = crate::agent::config::Protection {
            policy: live_policy.unwrap_or(self.cfg.protection.policy),
            ..self.cfg.protection.clone()
        };
        let hosts_session = live_policy.is_some();
        let grace = match reason {
            TerminateReason::Shutdown => Some(shutdown_grace),
            // A hung unhealthy process must not hold its slot forever: FullProtection falls
            // back to the time limit.
            TerminateReason::Unhealthy => protection
                .grace(hosts_session)
                .or(Some(protection.time_limit)),
            TerminateReason::Requested | TerminateReason::Retired => {
                protection.grace(hosts_session)
            }
        };
        let Some(p) = self.procs.get_mut(&serial) else {
            return;
        };
        if p.phase == Phase::Ending {
            return; // It is leaving already; process-exit bounds it.
        }
        if p.phase == Phase::Launching || p.grpc_port == 0 {
            self.stop(serial, reason.stop_reason());
            return;
        }
        if let Phase::Terminating(old) = p.phase {
            // Already told; a shutdown only shortens the deadline.
            if old == reason || reason != TerminateReason::Shutdown {
                return;
            }
        }
        p.phase = Phase::Terminating(reason);
        p.told_to_terminate.get_or_insert(reason);
        let (grpc_port, pid) = (p.grpc_port, p.identity.pid);
        let id = p.id.clone();
        let termination_time = grace
            .map(|g| unix_seconds(Some(self.clock.to_wall(now) + g)))
            .unwrap_or(0);
        p.deadline = grace.map(|g| now + g);
        if let Some(g) = grace {
            self.timers
                .add(now + g, Timer::TerminateDeadline { serial });
        }
        self.effects.push(Effect::Terminate {
            serial,
            grpc_port,
            termination_time,
        });
        let why = match reason {
            TerminateReason::Unhealthy => "unhealthy",
            TerminateReason::Requested => "requested",
            TerminateReason::Shutdown => "agent shutdown",
            TerminateReason::Retired => "retired by a runtime configuration update",
        };
        let deadline = grace
            .map(|g| format!("must end within {}", humantime::format_duration(g)))
            .unwrap_or_else(|| "no deadline (FullProtection)".into());
        self.emit(
            Event::new(
                EventCode::ServerProcessTerminating,
                format!("OnProcessTerminate sent ({why}); {deadline}"),
            )
            .process(&id, Some(pid)),
        );
    }

    /// The protection policy of the live session the process `serial` hosts, if it hosts one.
    pub(super) fn live_session_policy(
        &self,
        serial: u64,
    ) -> Option<crate::agent::config::ProtectionPolicy> {
        self.procs
            .get(&serial)
            .and_then(|p| p.session.as_ref())
            .and_then(|id| self.sessions.get(id))
            .filter(|(_, s)| !s.status.is_final())
            .map(|(_, s)| s.protection.unwrap_or(self.cfg.protection.policy))
    }

    /// Asks the actor to stop a process; the first reason given wins.
    pub(super) fn stop(&mut self, serial: u64, reason: StopReason) {
        let grace = self.cfg.timeouts.stop_grace.get();
        if let Some(p) = self.procs.get_mut(&serial) {
            if p.stop.is_some() {
                return;
            }
            p.stop = Some(reason);
            p.healthy = false;
            self.effects.push(Effect::Stop { serial, grace });
        }
    }
}

/// The GSE event code of an exit: the agent's reason for stopping it wins; an unhealthy
/// process stays TERMINATED_UNHEALTHY however it ends; then ProcessEnding or a requested
/// termination make a normal end; anything else is a crash.
fn classify(p: &Proc) -> EventCode {
    let unhealthy = p.told_to_terminate == Some(TerminateReason::Unhealthy);
    match (p.stop, p.phase) {
        (Some(StopReason::ReadyTimeout), _) => EventCode::ServerProcessProcessReadyTimeout,
        (Some(StopReason::ExitTimeout), _) => EventCode::ServerProcessProcessExitTimeout,
        (Some(StopReason::Unhealthy), _) => EventCode::ServerProcessTerminatedUnhealthy,
        _ if unhealthy => EventCode::ServerProcessTerminatedUnhealthy,
        (Some(StopReason::Forced), _) => EventCode::ServerProcessForceTerminated,
        (Some(StopReason::Shutdown), Phase::Ending) => EventCode::ServerProcessEnded,
        (Some(StopReason::Shutdown), _) => EventCode::ServerProcessForceTerminated,
        (None, Phase::Ending | Phase::Terminating(_)) => EventCode::ServerProcessEnded,
        (None, Phase::Launching | Phase::Active) => EventCode::ServerProcessCrashed,
    }
}
