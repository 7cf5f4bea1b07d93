//! The GSE SDK door: one typed call from a game process.

use tokio::time::Instant;

use super::{Fleet, Phase};
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
            } => {
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
                let p = self
                    .procs
                    .get_mut(&serial)
                    .expect("by_pid names live processes");
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
            SdkCall::Activate {
                gss_id,
                max_players,
            } => {
                let s = self.session_of(pid, &gss_id)?;
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
                let (_, s) = self.sessions.get_mut(&gss_id).expect("checked above");
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
                    .session(&gss_id)
                    .process(&process_id, Some(pid)),
                );
                Ok(SdkReply::Done)
            }
            SdkCall::AcceptPlayer {
                gss_id,
                player_session_id,
            }
            | SdkCall::RemovePlayer {
                gss_id,
                player_session_id,
            } if !self.player_index.contains_key(&player_session_id) => {
                self.session_of(pid, &gss_id)?;
                Err(FleetError::NotFound {
                    kind: "player session",
                    id: player_session_id,
                })
            }
            SdkCall::AcceptPlayer {
                gss_id,
                player_session_id,
            } => {
                let s = self.session_of(pid, &gss_id)?;
                if s.status != GssStatus::Active {
                    return Err(FleetError::Denied(format!(
                        "game server session {gss_id} is {}, not ACTIVE",
                        s.status
                    )));
                }
                self.player_in_session(&gss_id, &player_session_id)?;
                match self.player_transition(&player_session_id, PlayerInput::Accept) {
                    Some(Ok(())) => Ok(SdkReply::Done),
                    Some(Err(from)) => Err(FleetError::Denied(format!(
                        "player session {player_session_id} is {from}, not RESERVED"
                    ))),
                    None => unreachable!("player_in_session checked it exists"),
                }
            }
            SdkCall::RemovePlayer {
                gss_id,
                player_session_id,
            } => {
                self.session_of(pid, &gss_id)?;
                self.player_in_session(&gss_id, &player_session_id)?;
                match self.player_transition(&player_session_id, PlayerInput::Remove) {
                    Some(Ok(())) => Ok(SdkReply::Done),
                    Some(Err(from)) => Err(FleetError::Denied(format!(
                        "player session {player_session_id} is {from}, not RESERVED or ACTIVE"
                    ))),
                    None => unreachable!("player_in_session checked it exists"),
                }
            }
            SdkCall::DescribePlayers(q) => {
                let (page, next) = self.describe_players(&q)?;
                Ok(SdkReply::Players(page, next))
            }
            SdkCall::UpdatePolicy { gss_id, policy } => {
                let policy = CreationPolicy::parse(&policy).ok_or_else(|| FleetError::Invalid {
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
            SdkCall::TerminateSession { gss_id } => {
                let s = self.session_of(pid, &gss_id)?;
                s.status
                    .next(GssInput::Terminate)
                    .map_err(|e| FleetError::Denied(format!("{gss_id}: {e}")))?;
                self.end_session(&gss_id, GssInput::Terminate, "terminated by the game");
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
            SdkCall::ProcessEnding => {
                let exit = self.cfg.timeouts.process_exit.get();
                let p = self
                    .procs
                    .get_mut(&serial)
                    .expect("by_pid names live processes");
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
            SdkCall::ReportCustomData { current, max } => {
                if current < 0 || max < 0 || current > max {
                    return Err(FleetError::Invalid {
                        param: "currentCustomCount",
                        message: format!(
                            "need 0 <= currentCustomCount <= maxCustomCount, got {current} and {max}"
                        ),
                    });
                }
                let p = self
                    .procs
                    .get_mut(&serial)
                    .expect("by_pid names live processes");
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
    }
}
