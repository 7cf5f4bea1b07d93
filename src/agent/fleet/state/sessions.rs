//! Game server sessions and player sessions in the fleet: placement, activation, joins,
//! transitions and listings.

use crate::api::limits::{FINISHED_PLAYERS_KEPT, FINISHED_SESSIONS_KEPT};
use tokio::time::Instant;

use super::{Fleet, Phase};
use crate::agent::event::{Change, Event, EventCode};
use crate::agent::fleet::api::{ControlReply, Effect, FleetError, PlayerQuery, SessionQuery};
use crate::agent::fleet::timers::Timer;
use crate::agent::session::{
    CreationPolicy, GameSession, GssInput, GssStatus, PlayerInput, PlayerSession, PlayerStatus,
};
use crate::api::sessions::{NewPlayer, NewSession};

impl Fleet {
    /// Moves a session and emits the matching event.
    pub(super) fn end_session(&mut self, gss_id: &str, input: GssInput, reason: &str) {
        let Some((_, s)) = self.sessions.get(gss_id) else {
            return;
        };
        let (pid, process_id) = (s.pid, s.process_id.clone());
        if let Some(status) = self.end_session_quietly(gss_id, input, reason) {
            let code = match status {
                GssStatus::Terminated => EventCode::GameSessionTerminated,
                GssStatus::Error => EventCode::GameSessionError,
                GssStatus::Terminating => EventCode::GameSessionTerminating,
                GssStatus::Activating | GssStatus::Active => return,
            };
            self.emit(
                Event::new(code, format!("game server session {}: {reason}", status))
                    .session(gss_id)
                    .process(&process_id, Some(pid)),
            );
        }
    }

    /// Moves a session; on a final status, completes its players and frees its process.
    pub(super) fn end_session_quietly(
        &mut self,
        gss_id: &str,
        input: GssInput,
        reason: &str,
    ) -> Option<GssStatus> {
        let (_, s) = self.sessions.get_mut(gss_id)?;
        let to = s.status.next(input).ok()?;
        s.status = to;
        if !to.is_final() {
            return Some(to);
        }
        s.status_reason = reason.to_string();
        s.termination_time = Some(self.clock.wall);
        s.current_players = 0;
        let pid = s.pid;
        if let Some(p) = self
            .serial_of(pid)
            .and_then(|serial| self.procs.get_mut(&serial))
            && p.session.as_deref() == Some(gss_id)
        {
            p.session = None;
            let retiring = self.slots[p.slot].retiring;
            if retiring && matches!(p.phase, Phase::Active) {
                self.retire_later.push(p.serial);
            }
        }
        for seq in self
            .session_players
            .get(gss_id)
            .cloned()
            .unwrap_or_default()
        {
            let id = self.players[&seq].id.clone();
            self.player_transition(&id, PlayerInput::Remove);
        }
        self.finished_sessions.push_back(gss_id.to_string());
        while self.finished_sessions.len() > FINISHED_SESSIONS_KEPT {
            if let Some(old) = self.finished_sessions.pop_front() {
                self.forget_session(&old);
            }
        }
        Some(to)
    }

    pub(super) fn forget_session(&mut self, gss_id: &str) {
        if let Some((seq, _)) = self.sessions.remove(gss_id) {
            self.session_order.remove(&seq);
        }
        self.idempotency.retain(|_, v| v != gss_id);
        for seq in self.session_players.remove(gss_id).unwrap_or_default() {
            if let Some(p) = self.players.remove(&seq) {
                self.player_index.remove(&p.id);
            }
        }
    }

    /// The session `gss_id`, or NotFound.
    pub(super) fn find_session(&self, gss_id: &str) -> Result<&GameSession, FleetError> {
        self.sessions
            .get(gss_id)
            .map(|(_, s)| s)
            .ok_or_else(|| FleetError::NotFound {
                kind: "game server session",
                id: gss_id.to_string(),
            })
    }

    pub(super) fn session_of(&self, pid: u32, gss_id: &str) -> Result<&GameSession, FleetError> {
        let s = self.find_session(gss_id)?;
        if s.pid != pid {
            // Which process hosts it is not the caller's business.
            return Err(FleetError::Denied(format!(
                "game server session {gss_id} is not hosted by the calling process (pid {pid})"
            )));
        }
        Ok(s)
    }

    pub(super) fn create_session(
        &mut self,
        req: NewSession,
        now: Instant,
    ) -> Result<GameSession, FleetError> {
        self.check_open()?;
        if let Some(token) = &req.idempotency_token
            && let Some(id) = self.idempotency.get(token)
            && let Some((_, s)) = self.sessions.get(id)
        {
            return Ok(s.clone());
        }
        let fleet = &self.cfg.fleet_id;
        let suffix = req
            .custom_id
            .clone()
            .unwrap_or_else(|| format!("gssess-{}", self.ids.next_uuid()));
        let id = format!(
            "qcs::gse:{}::gameserversession/{fleet}/{suffix}",
            self.cfg.region
        );
        if self.sessions.contains_key(&id) {
            return Err(FleetError::Invalid {
                param: "GameServerSessionId",
                message: format!("{id} already exists"),
            });
        }
        self.check_activations()?;
        let serial = self.idle_process()?;
        let p = &self.procs[&serial];
        let pid = p.identity.pid;
        let session = GameSession {
            id: id.clone(),
            fleet_id: fleet.clone(),
            name: req.name,
            creator_id: req.creator_id,
            max_players: req.max_players,
            game_properties: req.game_properties,
            data: req.data,
            matchmaker_data: String::new(),
            port: i32::from(p.client_port),
            ip_address: self.cfg.client_ip(),
            dns_name: self.cfg.client_dns_name().to_string(),
            status: GssStatus::Activating,
            status_reason: String::new(),
            policy: CreationPolicy::AcceptAll,
            creation_time: self.clock.wall,
            termination_time: None,
            current_custom_count: p.custom.0,
            max_custom_count: p.custom.1,
            process_id: p.id.clone(),
            pid,
            current_players: 0,
            protection: None,
        };
        let grpc_port = p.grpc_port;
        let process_id = p.id.clone();
        if let Some(p) = self.procs.get_mut(&serial) {
            p.session = Some(id.clone());
        }
        let seq = self.seq();
        self.session_order.insert(seq, id.clone());
        self.sessions.insert(id.clone(), (seq, session.clone()));
        if let Some(token) = req.idempotency_token {
            self.idempotency.insert(token, id.clone());
        }
        self.timers.add(
            now + self.activation_timeout,
            Timer::ActivationTimeout { gss_id: id.clone() },
        );
        self.emit(
            Event::new(
                EventCode::GameSessionCreated,
                format!("placed on {process_id}; OnStartGameServerSession sent"),
            )
            .session(&id)
            .process(&process_id, Some(pid)),
        );
        let fault = self.take_start_fault(serial);
        self.effects.push(Effect::StartSession {
            serial,
            grpc_port,
            session: session.to_proto(),
            fault,
        });
        Ok(session)
    }

    /// Refused while the agent shuts down, and while the host drains or is reserved.
    fn check_open(&self) -> Result<(), FleetError> {
        if self.shutting_down {
            return Err(FleetError::Denied("the agent is shutting down".into()));
        }
        if self.draining || self.reserved {
            return Err(FleetError::Denied(format!(
                "the host is {}: it takes no new game server sessions",
                if self.draining {
                    "draining"
                } else {
                    "reserved"
                }
            )));
        }
        Ok(())
    }

    /// Refused while MaxConcurrentGameServerSessionActivations sessions are ACTIVATING.
    fn check_activations(&self) -> Result<(), FleetError> {
        let activating = self
            .sessions
            .values()
            .filter(|(_, s)| s.status == GssStatus::Activating)
            .count();
        let limit = self.max_activations as usize;
        if activating >= limit {
            return Err(FleetError::Limit(format!(
                "{activating} game server session(s) are ACTIVATING; MaxConcurrentGameServerSessionActivations is {limit}"
            )));
        }
        Ok(())
    }

    /// The idle process a new session goes to: active, healthy, not stopping or retiring, the
    /// lowest slot first.
    fn idle_process(&self) -> Result<u64, FleetError> {
        self.procs
            .values()
            .filter(|p| {
                p.phase == Phase::Active
                    && p.healthy
                    && p.stop.is_none()
                    && p.session.is_none()
                    && !self.slots[p.slot].retiring
            })
            .min_by_key(|p| p.slot)
            .map(|p| p.serial)
            .ok_or_else(|| {
                FleetError::Limit(
                    "no idle, healthy, ready server process is available on this host".into(),
                )
            })
    }

    /// UpdateGameServerSession.
    pub(super) fn update_session(
        &mut self,
        u: crate::api::sessions::SessionUpdate,
    ) -> Result<GameSession, FleetError> {
        let s = self.find_session(&u.gss_id)?;
        if s.status.is_final() {
            return Err(FleetError::Denied(format!(
                "game server session {} is {}",
                u.gss_id, s.status
            )));
        }
        if let Some(n) = u.max_players
            && n < 0
        {
            return Err(FleetError::Invalid {
                param: "MaximumPlayerSessionCount",
                message: format!("{n} is negative"),
            });
        }
        if let Some(name) = &u.name
            && name.chars().count() > 1024
        {
            return Err(FleetError::Invalid {
                param: "Name",
                message: "is longer than 1024 characters".into(),
            });
        }
        let policy = match &u.creation_policy {
            None => None,
            Some(p) => Some(CreationPolicy::parse(p).ok_or_else(|| FleetError::Invalid {
                param: "PlayerSessionCreationPolicy",
                message: format!("{p:?} is not ACCEPT_ALL or DENY_ALL"),
            })?),
        };
        let protection =
            match &u.protection {
                None => None,
                Some(p) => Some(crate::agent::config::ProtectionPolicy::parse(p).ok_or_else(
                    || FleetError::Invalid {
                        param: "ProtectionPolicy",
                        message: format!(
                            "{p:?} is not NoProtection, TimeLimitProtection or FullProtection"
                        ),
                    },
                )?),
            };
        let (_, s) = self.sessions.get_mut(&u.gss_id).expect("found above");
        if let Some(n) = u.max_players {
            s.max_players = n;
        }
        if let Some(name) = u.name {
            s.name = name;
        }
        if let Some(p) = policy {
            s.policy = p;
        }
        if protection.is_some() {
            s.protection = protection;
        }
        let updated = s.clone();
        // GSE has no event for it; a control plane mirroring the session must still learn.
        self.changed(Change::Session(u.gss_id));
        Ok(updated)
    }

    pub(super) fn describe_sessions(&self, q: &SessionQuery) -> Result<ControlReply, FleetError> {
        if let Some(id) = &q.gss_id {
            let s = self.find_session(id)?;
            let hit = q.status.is_none_or(|st| st == s.status);
            return Ok(ControlReply::Sessions(
                if hit { vec![s.clone()] } else { vec![] },
                None,
            ));
        }
        let start = parse_token(q.next_token.as_deref())?;
        let mut page = Vec::new();
        let mut next = None;
        for (seq, id) in self.session_order.range(start..) {
            let (_, s) = &self.sessions[id];
            if q.status.is_some_and(|st| st != s.status) {
                continue;
            }
            if page.len() == q.limit {
                next = Some(seq.to_string());
                break;
            }
            page.push(s.clone());
        }
        Ok(ControlReply::Sessions(page, next))
    }

    pub(super) fn join(
        &mut self,
        gss_id: &str,
        players: Vec<NewPlayer>,
        now: Instant,
    ) -> Result<Vec<PlayerSession>, FleetError> {
        let s = self.find_session(gss_id)?;
        if s.status != GssStatus::Active {
            return Err(FleetError::Denied(format!(
                "game server session {gss_id} is {}, players can join only ACTIVE sessions",
                s.status
            )));
        }
        if s.policy == CreationPolicy::DenyAll {
            return Err(FleetError::Denied(format!(
                "game server session {gss_id} has PlayerSessionCreationPolicy DENY_ALL"
            )));
        }
        let free = s.max_players - s.current_players;
        if players.len() as i64 > i64::from(free) {
            return Err(FleetError::Limit(format!(
                "game server session {gss_id} has {} of {} player slots taken; cannot add {}",
                s.current_players,
                s.max_players,
                players.len()
            )));
        }
        let (ip, port, fleet, dns) = (
            s.ip_address.clone(),
            s.port,
            s.fleet_id.clone(),
            s.dns_name.clone(),
        );
        let (pid, process_id) = (s.pid, s.process_id.clone());
        let deadline = now + self.cfg.timeouts.player_reservation.get();
        let mut out = Vec::with_capacity(players.len());
        for np in players {
            let ps = PlayerSession {
                id: format!("psess-{}", self.ids.next_uuid()),
                player_id: np.player_id,
                gss_id: gss_id.to_string(),
                fleet_id: fleet.clone(),
                ip_address: ip.clone(),
                port,
                dns_name: dns.clone(),
                player_data: np.player_data,
                status: PlayerStatus::Reserved,
                creation_time: self.clock.wall,
                termination_time: None,
            };
            let seq = self.seq();
            self.player_index.insert(ps.id.clone(), seq);
            self.session_players
                .entry(gss_id.to_string())
                .or_default()
                .push(seq);
            self.timers.add(
                deadline,
                Timer::Reservation {
                    player_session_id: ps.id.clone(),
                },
            );
            self.emit(
                Event::new(
                    EventCode::PlayerSessionReserved,
                    format!("player {} reserved", ps.player_id),
                )
                .session(gss_id)
                .player(&ps.id)
                .process(&process_id, Some(pid)),
            );
            out.push(ps.clone());
            self.players.insert(seq, ps);
        }
        if let Some((_, s)) = self.sessions.get_mut(gss_id) {
            s.current_players += out.len() as i32;
        }
        Ok(out)
    }

    /// Applies a player transition; keeps the session's count and emits the event.
    pub(super) fn player_transition(
        &mut self,
        id: &str,
        input: PlayerInput,
    ) -> Option<Result<(), &'static str>> {
        let seq = *self.player_index.get(id)?;
        let ps = self.players.get_mut(&seq)?;
        let to = match ps.status.next(input) {
            Ok(to) => to,
            Err(from) => return Some(Err(from)),
        };
        let freed = ps.status.holds_slot() && !to.holds_slot();
        ps.status = to;
        if !to.holds_slot() {
            ps.termination_time = Some(self.clock.wall);
        }
        let gss_id = ps.gss_id.clone();
        let player_id = ps.player_id.clone();
        let (code, what) = match to {
            PlayerStatus::Active => (EventCode::PlayerSessionActive, "accepted"),
            PlayerStatus::Completed => (EventCode::PlayerSessionCompleted, "completed"),
            PlayerStatus::TimedOut => (EventCode::PlayerSessionTimedOut, "not accepted in time"),
            PlayerStatus::Reserved => (EventCode::PlayerSessionReserved, "reserved"),
        };
        if freed && let Some((_, s)) = self.sessions.get_mut(&gss_id) {
            s.current_players = (s.current_players - 1).max(0);
        }
        // The session's process, as on every other event that has one.
        let host = self
            .sessions
            .get(&gss_id)
            .map(|(_, s)| (s.process_id.clone(), s.pid));
        let mut event = Event::new(code, format!("player {player_id} {what}"))
            .session(&gss_id)
            .player(id);
        if let Some((process_id, pid)) = host {
            event = event.process(&process_id, Some(pid));
        }
        self.emit(event);
        if !to.holds_slot() {
            self.forget_old_players(&gss_id);
        }
        Some(Ok(()))
    }

    /// Keeps at most [`FINISHED_PLAYERS_KEPT`] finished player sessions of one session.
    fn forget_old_players(&mut self, gss_id: &str) {
        let Some(seqs) = self.session_players.get_mut(gss_id) else {
            return;
        };
        let players = &self.players;
        let finished = |seq: &u64| players.get(seq).is_some_and(|p| !p.status.holds_slot());
        let mut excess = seqs.iter().filter(|s| finished(s)).count();
        if excess <= FINISHED_PLAYERS_KEPT {
            return;
        }
        excess -= FINISHED_PLAYERS_KEPT;
        let mut forgotten = Vec::with_capacity(excess);
        seqs.retain(|seq| {
            if forgotten.len() < excess && finished(seq) {
                forgotten.push(*seq);
                false
            } else {
                true
            }
        });
        for seq in forgotten {
            if let Some(p) = self.players.remove(&seq) {
                self.player_index.remove(&p.id);
            }
        }
    }

    pub(super) fn describe_players(
        &self,
        q: &PlayerQuery,
    ) -> Result<(Vec<PlayerSession>, Option<String>), FleetError> {
        let start = parse_token(q.next_token.as_deref())?;
        let matches = |p: &PlayerSession| {
            q.gss_id.as_ref().is_none_or(|g| *g == p.gss_id)
                && q.player_id.as_ref().is_none_or(|x| *x == p.player_id)
                && q.player_session_id.as_ref().is_none_or(|x| *x == p.id)
                && q.status.is_none_or(|s| s == p.status)
        };
        let mut page = Vec::new();
        let mut next = None;
        // Narrow the scan to one session's players when possible.
        let candidates: Box<dyn Iterator<Item = (u64, &PlayerSession)>> =
            if let Some(id) = &q.player_session_id {
                Box::new(
                    self.player_index
                        .get(id)
                        .and_then(|seq| self.players.get(seq).map(|p| (*seq, p)))
                        .into_iter(),
                )
            } else if let Some(g) = &q.gss_id {
                Box::new(
                    self.session_players
                        .get(g)
                        .into_iter()
                        .flatten()
                        .filter(move |seq| **seq >= start)
                        .filter_map(|seq| self.players.get(seq).map(|p| (*seq, p))),
                )
            } else {
                Box::new(self.players.range(start..).map(|(k, v)| (*k, v)))
            };
        for (seq, p) in candidates {
            if seq < start || !matches(p) {
                continue;
            }
            if page.len() == q.limit {
                next = Some(seq.to_string());
                break;
            }
            page.push(p.clone());
        }
        Ok((page, next))
    }

    pub(super) fn player_in_session(
        &self,
        gss_id: &str,
        player_session_id: &str,
    ) -> Result<(), FleetError> {
        let seq = self
            .player_index
            .get(player_session_id)
            .ok_or_else(|| FleetError::NotFound {
                kind: "player session",
                id: player_session_id.to_string(),
            })?;
        if self.players[seq].gss_id != gss_id {
            return Err(FleetError::Denied(format!(
                "player session {player_session_id} belongs to another game server session"
            )));
        }
        Ok(())
    }
}

pub(super) fn parse_token(token: Option<&str>) -> Result<u64, FleetError> {
    match token {
        None | Some("") => Ok(0),
        Some(t) => t.parse().map_err(|_| FleetError::Invalid {
            param: "NextToken",
            message: format!("{t:?} is not a token returned by this agent"),
        }),
    }
}
