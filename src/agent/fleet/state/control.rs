//! The control door: one typed command from the local API or the control plane.

use tokio::time::Instant;

use super::{Fleet, TerminateReason};
use crate::agent::event::{Event, EventCode};
use crate::agent::fleet::api::{
    Control, ControlReply, EntryGauge, EntryView, FleetError, FleetGauges, FleetStatus, HostState,
    HostStateScope, ProcessGauge, ProcessView, SessionState,
};

impl Fleet {
    /// Handles a control command.
    pub fn control(&mut self, cmd: Control, now: Instant) -> Result<ControlReply, FleetError> {
        let r = self.control_command(cmd, now);
        self.after_input(now);
        r
    }

    pub(super) fn control_command(
        &mut self,
        cmd: Control,
        now: Instant,
    ) -> Result<ControlReply, FleetError> {
        match cmd {
            Control::CreateSession(req) => {
                req.check()?;
                Ok(ControlReply::Session(Box::new(
                    self.create_session(req, now)?,
                )))
            }
            Control::DescribeSessions(q) => self.describe_sessions(&q),
            Control::Join { gss_id, players } => {
                crate::api::sessions::check_players(&players)?;
                Ok(ControlReply::Players(
                    self.join(&gss_id, players, now)?,
                    None,
                ))
            }

            Control::DescribePlayers(q) => {
                let (page, next) = self.describe_players(&q)?;
                Ok(ControlReply::Players(page, next))
            }
            Control::EndSessionAndProcess { gss_id } => self.end_session_and_process(&gss_id, now),
            Control::DescribeProcesses => Ok(ControlReply::Processes(self.process_views())),
            Control::DescribeStatus => Ok(ControlReply::Status(Box::new(FleetStatus {
                processes: self.process_views(),
                entries: self.entry_views(now),
                counters: self.counters(),
            }))),
            Control::DescribeHostState(scope) => {
                Ok(ControlReply::HostState(Box::new(self.host_state(&scope))))
            }
            Control::DescribeInstance => Ok(ControlReply::Instance(self.counters())),
            Control::DescribeGauges => Ok(ControlReply::Gauges(Box::new(self.gauges(now)))),
            Control::InjectFault(fault) => self.inject(fault, now),
            Control::PutAlias(input) => self.put_alias(input),
            Control::PutQueue { input, create } => self.put_queue(input, create),
            Control::StartPlacement(request) => self.start_placement(*request, now),
            Control::StopPlacement(id) => self.stop_placement(&id),
            Control::DescribePlacement(id) => self.describe_placement(&id),
            Control::DeleteQueue(name) => self.delete_queue(&name),
            Control::DescribeQueues(names) => Ok(self.describe_queues(&names)),
            Control::DeleteAlias(id) => self.delete_alias(&id),
            Control::DescribeAlias(id) => self.describe_alias(&id),
            Control::ListAliases { name, terminal } => {
                Ok(self.list_aliases(name.as_deref(), terminal))
            }
            Control::DescribeRuntime => Ok(ControlReply::Runtime(Box::new(self.current_runtime()))),
            Control::UpdateSession(u) => {
                Ok(ControlReply::Session(Box::new(self.update_session(u)?)))
            }
            Control::UpdateRuntime(runtime) => {
                if self.shutting_down {
                    return Err(FleetError::Denied("the agent is shutting down".into()));
                }
                self.update_runtime(*runtime, now);
                Ok(ControlReply::Done)
            }
            Control::Redeploy => {
                if self.shutting_down {
                    return Err(FleetError::Denied("the agent is shutting down".into()));
                }
                let current = self.current_runtime();
                self.update_runtime(current, now);
                Ok(ControlReply::Done)
            }
            Control::SetWeight(weight) => self.set_weight(weight),
            Control::SetReserved(on) => self.set_reserved(on),
            Control::SetDraining(on) => self.set_draining(on, now),
        }
    }

    /// EndGameServerSessionAndProcess: the session's process is told to terminate.
    fn end_session_and_process(
        &mut self,
        gss_id: &str,
        now: Instant,
    ) -> Result<ControlReply, FleetError> {
        let s = self.find_session(gss_id)?;
        if s.status.is_final() {
            return Err(FleetError::Denied(format!(
                "game server session {gss_id} is already {}",
                s.status
            )));
        }
        if let Some(serial) = self.serial_of(s.pid) {
            self.terminate(serial, TerminateReason::Requested, now);
        }
        Ok(ControlReply::Done)
    }

    /// The host's placement weight (1–10).
    fn set_weight(&mut self, weight: u8) -> Result<ControlReply, FleetError> {
        if !(1..=10).contains(&weight) {
            return Err(FleetError::Invalid {
                param: "Weight",
                message: format!("{weight} is not 1–10"),
            });
        }
        self.weight = weight;
        Ok(ControlReply::Done)
    }

    /// Reserved: no new sessions are placed here (the running ones go on).
    fn set_reserved(&mut self, on: bool) -> Result<ControlReply, FleetError> {
        if self.reserved != on {
            self.reserved = on;
            self.emit(Event::new(
                if on {
                    EventCode::InstanceReserved
                } else {
                    EventCode::InstanceUnreserved
                },
                if on {
                    "reserved: no new game server sessions are placed here"
                } else {
                    "no longer reserved"
                },
            ));
        }
        Ok(ControlReply::Done)
    }

    /// Draining: idle processes stop and the rest as their sessions end; undone by `false`.
    fn set_draining(&mut self, on: bool, now: Instant) -> Result<ControlReply, FleetError> {
        if self.shutting_down {
            return Err(FleetError::Denied("the agent is shutting down".into()));
        }
        if self.draining != on {
            self.draining = on;
            if on {
                self.drain(now);
            } else {
                self.undrain();
            }
        }
        Ok(ControlReply::Done)
    }

    /// Every process, by process id.
    fn process_views(&self) -> Vec<ProcessView> {
        let mut v: Vec<ProcessView> = self
            .procs
            .values()
            .map(|p| ProcessView {
                process_id: p.id.clone(),
                pid: p.identity.pid,
                launch_path: self.spec(p.slot).launch_path.clone(),
                status: p.phase.as_str(),
                healthy: p.healthy,
                health_checks_passed: p.health_checks_passed,
                client_port: p.client_port,
                grpc_port: p.grpc_port,
                game_server_session_id: p.session.clone(),
                restarts: self.slots[p.slot].generation - 1,
                log_paths: p.log_paths.clone(),
                entry: self.entries[self.slots[p.slot].entry].number,
                started_at: self.clock.to_wall(p.started),
                current_players: p
                    .session
                    .as_ref()
                    .and_then(|id| self.sessions.get(id))
                    .filter(|(_, s)| !s.status.is_final())
                    .map(|(_, s)| s.current_players)
                    .unwrap_or(0),
                last_exit: self.slots[p.slot].last_exit.clone(),
            })
            .collect();
        v.sort_by(|a, b| a.process_id.cmp(&b.process_id));
        v
    }

    /// Every entry: what it should run, what runs, its failed launches and its pause.
    fn entry_views(&self, now: Instant) -> Vec<EntryView> {
        let stopping = self.draining || self.shutting_down;
        let mut v: Vec<EntryView> = self
            .entries
            .iter()
            .map(|e| EntryView {
                number: e.number,
                launch_path: e.spec.launch_path.clone(),
                parameters: e.spec.parameters.clone(),
                desired: 0,
                running: 0,
                launch_failures: e.launch_failures,
                last_launch_error: e.last_launch_error.clone(),
                paused_until: e
                    .breaker
                    .paused_until
                    .filter(|t| *t > now)
                    .map(|t| self.clock.to_wall(t)),
                last_exit: None,
            })
            .collect();
        for s in &self.slots {
            let view = &mut v[s.entry];
            if !s.retiring && !stopping {
                view.desired += 1;
            }
            if s.serial.is_some() {
                view.running += 1;
            }
            if let Some(x) = &s.last_exit
                && view.last_exit.as_ref().is_none_or(|old| old.at <= x.at)
            {
                view.last_exit = Some(x.clone());
            }
        }
        v.sort_by_key(|e| e.number);
        v
    }

    /// The counts the metrics read ([`Control::DescribeGauges`]).
    fn gauges(&self, now: Instant) -> FleetGauges {
        let mut g = FleetGauges {
            entries: self
                .entries
                .iter()
                .map(|e| EntryGauge {
                    number: e.number,
                    launch_path: e.spec.launch_path.clone(),
                    parameters: e.spec.parameters.clone(),
                    paused_for: e.breaker.paused_until.filter(|t| *t > now).map(|t| t - now),
                    launch_failures: e.launch_failures,
                })
                .collect(),
            placement_outcomes: self.placement_outcomes.clone(),
            health_check_failures: self.health_check_failures,
            slots: self.slots.iter().filter(|s| !s.retiring).count() as u64,
            slots_running: self
                .slots
                .iter()
                .filter(|s| !s.retiring && s.serial.is_some())
                .count() as u64,
            stopping: self.shutting_down || self.draining,
            ..Default::default()
        };
        g.processes = self
            .procs
            .values()
            .map(|p| ProcessGauge {
                process_id: p.id.clone(),
                pid: p.identity.pid,
                entry: self.entries[self.slots[p.slot].entry].number,
                phase: p.phase.as_str(),
            })
            .collect();
        g.processes.sort_by(|a, b| a.process_id.cmp(&b.process_id));
        for (_, s) in self.sessions.values() {
            *g.sessions.entry(s.status.as_str()).or_default() += 1;
        }
        for p in self.players.values() {
            *g.players.entry(p.status.as_str()).or_default() += 1;
        }
        g.placements_pending = self
            .pending_placements
            .iter()
            .filter(|id| {
                self.placements
                    .get(*id)
                    .is_some_and(|p| p.status == crate::api::placement::Status::Pending)
            })
            .count() as u64;
        g
    }

    /// The processes, and the sessions of `scope` with their players.
    fn host_state(&self, scope: &HostStateScope) -> HostState {
        let with_players = |id: &str| {
            let (_, session) = self.sessions.get(id)?;
            let players = self
                .session_players
                .get(id)
                .into_iter()
                .flatten()
                .filter_map(|seq| self.players.get(seq).cloned())
                .collect();
            Some(SessionState {
                session: session.clone(),
                players,
            })
        };
        let sessions = match scope {
            HostStateScope::All => self
                .session_order
                .values()
                .filter_map(|id| with_players(id))
                .collect(),
            HostStateScope::Sessions(ids) => ids.iter().filter_map(|id| with_players(id)).collect(),
        };
        HostState {
            processes: self.process_views(),
            sessions,
        }
    }
}
