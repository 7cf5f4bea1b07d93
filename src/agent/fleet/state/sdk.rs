//! The GSE SDK door: one typed call from a game process.

use tokio::time::Instant;

use super::{Fleet, Phase, Proc};
use crate::agent::event::{Change, Event, EventCode};
use crate::agent::fleet::api::{FleetError, SdkCall, SdkReply};
use crate::agent::fleet::timers::Timer;
use crate::agent::session::{CreationPolicy, GssInput, GssStatus, PlayerInput};

impl Fleet {
    // ---- inputs from outside ------------------------------------------------------------------

    /// Handles a GSE SDK call from the process `pid`.
    pub fn sdk(&mut self, pid: u32, call: SdkCall, now: Instant) -> Result<SdkReply, FleetError> {
        let r = self.sdk_call(pid, call, now);
        self.after_input(now);
        r
    }

    /// One SDK call, routed to its verb; every call names a live process.
    pub(super) fn sdk_call(
        &mut self,
        pid: u32,
        call: SdkCall,
        now: Instant,
    ) -> Result<SdkReply, FleetError> {
        let Some(serial) = self.serial_of(pid) else {
            return Err(FleetError::UnknownPid(pid));
        };
        match call {
            SdkCall::ProcessReady {
                client_port,
                grpc_port,
                log_paths,
            } => self.process_ready(pid, serial, (client_port, grpc_port), log_paths, now),
            SdkCall::Activate {
                gss_id,
                max_players,
            } => self.activate(pid, &gss_id, max_players),
            SdkCall::AcceptPlayer {
                gss_id,
                player_session_id,
            } => self.accept_player(pid, &gss_id, player_session_id),
            SdkCall::RemovePlayer {
                gss_id,
                player_session_id,
            } => self.remove_player(pid, &gss_id, player_session_id),
            SdkCall::DescribePlayers(q) => {
                let (page, next) = self.describe_players(&q)?;
                Ok(SdkReply::Players(page, next))
            }
            SdkCall::UpdatePolicy { gss_id, policy } => self.update_policy(pid, gss_id, &policy),
            SdkCall::TerminateSession { gss_id } => {
                self.terminate_session(pid, serial, &gss_id, now)
            }
            SdkCall::ProcessEnding => self.process_ending(pid, serial, now),
            SdkCall::ReportCustomData { current, max } => {
                self.report_custom_data(pid, serial, current, max)
            }
        }
    }

    /// The live process `serial` that `pid` names.
    fn process_mut(&mut self, pid: u32, serial: u64) -> Result<&mut Proc, FleetError> {
        self.procs
            .get_mut(&serial)
            .ok_or(FleetError::UnknownPid(pid))
    }

    fn process_ready(
        &mut self,
        pid: u32,
        serial: u64,
        (client_port, grpc_port): (i32, i32),
        log_paths: Vec<String>,
        now: Instant,
    ) -> Result<SdkReply, FleetError> {
        let port = |v: i32, name: &'static str| {
            u16::try_from(v)
                .ok()
                .filter(|p| *p != 0)
                .ok_or(FleetError::Invalid {
                    param: name,
                    message: format!("{v} is not a port (1-65535)"),
                })
        };
        let client_port = port(client_port, "clientPort")?;
        let grpc_port = port(grpc_port, "grpcPort")?;
        let interval = self.cfg.health_check.interval.get();
        let p = self.process_mut(pid, serial)?;
        if p.phase != Phase::Launching {
            return Err(FleetError::Denied(format!(
                "ProcessReady was already called; the process is {}",
                p.phase.as_str()
            )));
        }
        if p.stop.is_some() {
            return Err(FleetError::Denied(
                "the process is being stopped (ProcessReady came too late)".into(),
            ));
        }
        p.phase = Phase::Active;
        p.deadline = None;
        p.ready_at = Some(now);
        p.client_port = client_port;
        p.grpc_port = grpc_port;
        p.healthy = true;
        p.log_paths = log_paths;
        let id = p.id.clone();
        self.timers
            .add(now + interval, Timer::HealthCheck { serial });
        self.emit(
            Event::new(
                EventCode::ServerProcessReady,
                format!("ready: clientPort {client_port}, grpcPort {grpc_port}"),
            )
            .process(&id, Some(pid)),
        );
        Ok(SdkReply::Done)
    }

    fn activate(
        &mut self,
        pid: u32,
        gss_id: &str,
        max_players: i32,
    ) -> Result<SdkReply, FleetError> {
        let s = self.session_of(pid, gss_id)?;
        let to = s
            .status
            .next(GssInput::Activate)
            .map_err(|e| FleetError::Denied(format!("{gss_id}: {e}")))?;
        if max_players < 0 {
            return Err(FleetError::Invalid {
                param: "maxPlayers",
                message: format!("{max_players} is negative"),
            });
        }
        let Some((_, s)) = self.sessions.get_mut(gss_id) else {
            return Err(FleetError::NotFound {
                kind: "game server session",
                id: gss_id.to_string(),
            });
        };
        s.status = to;
        if max_players > 0 {
            s.max_players = max_players;
        }
        let process_id = s.process_id.clone();
        self.emit(
            Event::new(
                EventCode::GameSessionActivated,
                "game server session ACTIVE",
            )
            .session(gss_id)
            .process(&process_id, Some(pid)),
        );
        Ok(SdkReply::Done)
    }

    fn accept_player(
        &mut self,
        pid: u32,
        gss_id: &str,
        player_session_id: String,
    ) -> Result<SdkReply, FleetError> {
        let s = self.session_of(pid, gss_id)?;
        if !self.player_index.contains_key(&player_session_id) {
            return Err(FleetError::NotFound {
                kind: "player session",
                id: player_session_id,
            });
        }
        if s.status != GssStatus::Active {
            return Err(FleetError::Denied(format!(
                "game server session {gss_id} is {}, not ACTIVE",
                s.status
            )));
        }
        self.player_in_session(gss_id, &player_session_id)?;
        self.player_step(&player_session_id, PlayerInput::Accept, "RESERVED")
    }

    fn remove_player(
        &mut self,
        pid: u32,
        gss_id: &str,
        player_session_id: String,
    ) -> Result<SdkReply, FleetError> {
        self.session_of(pid, gss_id)?;
        if !self.player_index.contains_key(&player_session_id) {
            return Err(FleetError::NotFound {
                kind: "player session",
                id: player_session_id,
            });
        }
        self.player_in_session(gss_id, &player_session_id)?;
        self.player_step(
            &player_session_id,
            PlayerInput::Remove,
            "RESERVED or ACTIVE",
        )
    }

    /// Moves a player session the game named by `input`; refused when it is not `from`.
    fn player_step(
        &mut self,
        player_session_id: &str,
        input: PlayerInput,
        from: &str,
    ) -> Result<SdkReply, FleetError> {
        match self.player_transition(player_session_id, input) {
            Some(Ok(())) => Ok(SdkReply::Done),
            Some(Err(is)) => Err(FleetError::Denied(format!(
                "player session {player_session_id} is {is}, not {from}"
            ))),
            None => Err(FleetError::NotFound {
                kind: "player session",
                id: player_session_id.to_string(),
            }),
        }
    }

    fn update_policy(
        &mut self,
        pid: u32,
        gss_id: String,
        policy: &str,
    ) -> Result<SdkReply, FleetError> {
        let policy = CreationPolicy::parse(policy).ok_or_else(|| FleetError::Invalid {
            param: "newPlayerSessionCreationPolicy",
            message: format!("{policy:?} is not ACCEPT_ALL or DENY_ALL"),
        })?;
        let s = self.session_of(pid, &gss_id)?;
        if s.status.is_final() {
            return Err(FleetError::Denied(format!(
                "game server session {gss_id} is {}",
                s.status
            )));
        }
        if let Some((_, s)) = self.sessions.get_mut(&gss_id)
            && s.policy != policy
        {
            s.policy = policy;
            self.changed(Change::Session(gss_id));
        }
        Ok(SdkReply::Done)
    }

    fn terminate_session(
        &mut self,
        pid: u32,
        serial: u64,
        gss_id: &str,
        now: Instant,
    ) -> Result<SdkReply, FleetError> {
        let s = self.session_of(pid, gss_id)?;
        s.status
            .next(GssInput::Terminate)
            .map_err(|e| FleetError::Denied(format!("{gss_id}: {e}")))?;
        self.end_session(gss_id, GssInput::Terminate, "terminated by the game");
        // A FullProtection process told to terminate may now be ended.
        if let Some(p) = self.procs.get_mut(&serial)
            && matches!(p.phase, Phase::Terminating(_))
        {
            let grace = self.cfg.protection.grace(false).unwrap_or_default();
            p.deadline = Some(now + grace);
            self.timers
                .add(now + grace, Timer::TerminateDeadline { serial });
        }
        Ok(SdkReply::Done)
    }

    fn process_ending(
        &mut self,
        pid: u32,
        serial: u64,
        now: Instant,
    ) -> Result<SdkReply, FleetError> {
        let exit = self.cfg.timeouts.process_exit.get();
        let p = self.process_mut(pid, serial)?;
        if p.phase == Phase::Ending {
            return Err(FleetError::Denied(
                "ProcessEnding was already called".into(),
            ));
        }
        p.phase = Phase::Ending;
        p.deadline = Some(now + exit);
        let (id, session) = (p.id.clone(), p.session.clone());
        self.timers.add(now + exit, Timer::ExitTimeout { serial });
        if let Some(gss_id) = session {
            self.end_session(&gss_id, GssInput::ProcessEnding, "its process is ending");
        }
        self.emit(
            Event::new(
                EventCode::ServerProcessEnding,
                format!(
                    "ProcessEnding; must exit within {}",
                    humantime::format_duration(exit)
                ),
            )
            .process(&id, Some(pid)),
        );
        Ok(SdkReply::Done)
    }

    fn report_custom_data(
        &mut self,
        pid: u32,
        serial: u64,
        current: i32,
        max: i32,
    ) -> Result<SdkReply, FleetError> {
        if current < 0 || max < 0 || current > max {
            return Err(FleetError::Invalid {
                param: "currentCustomCount",
                message: format!(
                    "need 0 <= currentCustomCount <= maxCustomCount, got {current} and {max}"
                ),
            });
        }
        let p = self.process_mut(pid, serial)?;
        p.custom = (current, max);
        if let Some(gss_id) = p.session.clone()
            && let Some((_, s)) = self.sessions.get_mut(&gss_id)
            && (s.current_custom_count, s.max_custom_count) != (current, max)
        {
            s.current_custom_count = current;
            s.max_custom_count = max;
            self.changed(Change::Session(gss_id));
        }
        Ok(SdkReply::Done)
    }
}
