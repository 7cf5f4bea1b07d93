//! Simulated agents: the real relay proto, answering as the agent does.

use super::*;

/// What every simulated host shares with the bench.
#[derive(Default)]
pub(crate) struct Shared {
    /// Free processes across every host.
    pub(crate) idle: AtomicI64,
    /// Creates and placements under way (each may still take a process).
    pub(crate) wanting: AtomicI64,
    /// Sessions the hosts made.
    pub(crate) created: AtomicU64,
    /// Creates a host refused for want of a free process (the control plane's counts were
    /// behind; it tries another host).
    pub(crate) refused: AtomicU64,
    /// Creates answered again for a known idempotency token.
    pub(crate) replayed: AtomicU64,
    /// Players joined.
    pub(crate) joined: AtomicU64,
    /// Commands of any other kind.
    pub(crate) other_commands: AtomicU64,
    /// Events sent, and the highest sequence the control plane acknowledged, summed.
    pub(crate) events: AtomicU64,
    pub(crate) acked: AtomicU64,
    /// Streams that ended before the bench stopped them, and why the first did.
    pub(crate) dropped: AtomicU64,
    pub(crate) first_drop: Mutex<Option<String>>,
}

pub(crate) struct Proc {
    pub(crate) id: String,
    pub(crate) pid: u32,
    pub(crate) port: i64,
    pub(crate) session: Option<String>,
}

/// One simulated host: its processes, sessions and players, and its outbox sequence.
pub(crate) struct Host {
    pub(crate) instance: String,
    pub(crate) procs: Vec<Proc>,
    pub(crate) sessions: HashMap<String, Value>,
    pub(crate) players: HashMap<String, Vec<Value>>,
    pub(crate) tokens: HashMap<String, String>,
    pub(crate) sequence: u64,
    pub(crate) acked: u64,
    /// Sessions changed since the last snapshot.
    pub(crate) dirty: BTreeSet<String>,
    pub(crate) shared: Arc<Shared>,
}

pub(crate) fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

pub(crate) fn message(body: up::agent_message::Body) -> up::AgentMessage {
    up::AgentMessage { body: Some(body) }
}

pub(crate) fn failure(id: String, code: &str, text: String) -> up::CommandResult {
    up::CommandResult {
        command_id: id,
        ok: false,
        error_code: code.into(),
        message: text,
        response_json: String::new(),
    }
}

/// The relay token of the host `instance`.
pub(crate) fn host_token(instance: &str) -> String {
    format!("bench-token-{instance}-0123456789")
}

impl Host {
    pub(crate) fn new(index: usize, shared: Arc<Shared>) -> Host {
        let instance = format!("ins-{index}");
        let procs = (0..PROCESSES)
            .map(|i| Proc {
                id: format!("proc-{index}-{i}"),
                pid: 10_000 + i as u32,
                port: 7000 + i as i64,
                session: None,
            })
            .collect();
        shared.idle.fetch_add(PROCESSES as i64, Ordering::Relaxed);
        Host {
            instance,
            procs,
            sessions: HashMap::new(),
            players: HashMap::new(),
            tokens: HashMap::new(),
            sequence: 0,
            acked: 0,
            dirty: BTreeSet::new(),
            shared,
        }
    }

    pub(crate) fn hello(&self) -> up::AgentMessage {
        message(up::agent_message::Body::Hello(up::Hello {
            fleet_id: FLEET.into(),
            instance_id: self.instance.clone(),
            agent_version: "bench".into(),
            last_acked_sequence: self.acked,
            epoch: 1,
            region: REGION.into(),
            public_ip: "127.0.0.1".into(),
            dns_name: String::new(),
        }))
    }

    pub(crate) fn processes(&self) -> Vec<up::ProcessState> {
        self.procs
            .iter()
            .map(|p| up::ProcessState {
                process_id: p.id.clone(),
                pid: p.pid,
                status: "ACTIVE".into(),
                healthy: true,
                game_server_session_id: p.session.clone().unwrap_or_default(),
            })
            .collect()
    }

    /// Every process, and `sessions` with their players.
    pub(crate) fn snapshot<'a>(
        &self,
        complete: bool,
        sessions: impl Iterator<Item = &'a String>,
    ) -> up::AgentMessage {
        let mut s = up::Snapshot {
            complete,
            processes: self.processes(),
            ..Default::default()
        };
        for id in sessions {
            if let Some(v) = self.sessions.get(id) {
                s.game_server_sessions_json.push(v.to_string());
            }
            for p in self.players.get(id).into_iter().flatten() {
                s.player_sessions_json.push(p.to_string());
            }
        }
        message(up::agent_message::Body::Snapshot(s))
    }

    pub(crate) fn complete_snapshot(&self) -> up::AgentMessage {
        self.snapshot(true, self.sessions.keys())
    }

    pub(crate) fn partial_snapshot(&mut self) -> up::AgentMessage {
        let dirty = std::mem::take(&mut self.dirty);
        self.snapshot(false, dirty.iter())
    }

    pub(crate) fn status(&self) -> up::AgentMessage {
        let players: usize = self.players.values().map(Vec::len).sum();
        let max_players: i64 = self
            .sessions
            .values()
            .map(|s| s["MaximumPlayerSessionCount"].as_i64().unwrap_or(0))
            .sum();
        message(up::agent_message::Body::Status(up::InstanceStatus {
            healthy_process_cnt: PROCESSES as u32,
            active_process_cnt: PROCESSES as u32,
            game_session_cnt: self.sessions.len() as u32,
            max_game_session_cnt: PROCESSES as u32,
            player_session_cnt: players as u32,
            max_player_session_cnt: max_players as u32,
            draining: false,
            unacked_events: self.sequence - self.acked,
            reserved: false,
        }))
    }

    pub(crate) fn event(
        &mut self,
        code: &str,
        text: String,
        p: usize,
        gss: &str,
        psid: &str,
    ) -> up::AgentMessage {
        self.sequence += 1;
        self.shared.events.fetch_add(1, Ordering::Relaxed);
        message(up::agent_message::Body::Event(up::Event {
            sequence: self.sequence,
            time_unix_ms: now_ms(),
            code: code.into(),
            message: text,
            process_id: self.procs[p].id.clone(),
            pid: self.procs[p].pid,
            game_server_session_id: gss.into(),
            player_session_id: psid.into(),
            exit: None,
        }))
    }

    /// What the agent sends back for one control message.
    pub(crate) fn on_message(&mut self, m: up::ControlMessage) -> Vec<up::AgentMessage> {
        match m.body {
            Some(up::control_message::Body::Ack(a)) => {
                if a.sequence > self.acked {
                    self.shared
                        .acked
                        .fetch_add(a.sequence - self.acked, Ordering::Relaxed);
                    self.acked = a.sequence;
                }
                Vec::new()
            }
            Some(up::control_message::Body::Command(c)) => self.command(c),
            None => Vec::new(),
        }
    }

    pub(crate) fn command(&mut self, c: up::Command) -> Vec<up::AgentMessage> {
        let id = c.id;
        let result = |r: up::CommandResult| message(up::agent_message::Body::Result(r));
        match c.kind {
            Some(Kind::CreateGameServerSession(create)) => self.create(id, create),
            Some(Kind::JoinGameServerSession(join)) => self.join(id, join),
            _ => {
                self.shared.other_commands.fetch_add(1, Ordering::Relaxed);
                vec![result(up::CommandResult {
                    command_id: id,
                    ok: true,
                    ..Default::default()
                })]
            }
        }
    }

    /// As the agent's fleet creates one (src/fleet/state/sessions.rs), then the game activates
    /// it at once.
    pub(crate) fn create(
        &mut self,
        id: String,
        c: up::CreateGameServerSession,
    ) -> Vec<up::AgentMessage> {
        let result = |r: up::CommandResult| message(up::agent_message::Body::Result(r));
        if !c.idempotency_token.is_empty()
            && let Some(gss) = self.tokens.get(&c.idempotency_token)
            && let Some(s) = self.sessions.get(gss)
        {
            self.shared.replayed.fetch_add(1, Ordering::Relaxed);
            return vec![result(up::CommandResult {
                command_id: id,
                ok: true,
                response_json: s.to_string(),
                ..Default::default()
            })];
        }
        let suffix = if c.game_server_session_id.is_empty() {
            format!("gssess-{}", uuid::Uuid::new_v4())
        } else {
            c.game_server_session_id.clone()
        };
        let gss = format!("qcs::gse:{REGION}::gameserversession/{FLEET}/{suffix}");
        if self.sessions.contains_key(&gss) {
            return vec![result(failure(
                id,
                "InvalidParameterValue",
                format!("{gss} already exists"),
            ))];
        }
        let Some(p) = self.procs.iter().position(|p| p.session.is_none()) else {
            self.shared.refused.fetch_add(1, Ordering::Relaxed);
            return vec![result(failure(
                id,
                "LimitExceeded",
                "no idle, healthy, ready server process is available on this host".into(),
            ))];
        };
        self.procs[p].session = Some(gss.clone());
        self.shared.idle.fetch_sub(1, Ordering::Relaxed);
        self.shared.created.fetch_add(1, Ordering::Relaxed);
        let mut session = json!({
            "GameServerSessionId": gss,
            "FleetId": FLEET,
            "Name": c.name,
            "CreatorId": c.creator_id,
            "Status": "ACTIVATING",
            "StatusReason": "",
            "CreationTime": now_rfc3339(),
            "TerminationTime": null,
            "CurrentPlayerSessionCount": 0,
            "MaximumPlayerSessionCount": c.maximum_player_session_count,
            "PlayerSessionCreationPolicy": "ACCEPT_ALL",
            "GameProperties": c.game_properties.iter().map(|g| json!({"Key": g.key, "Value": g.value})).collect::<Vec<_>>(),
            "GameServerSessionData": c.game_server_session_data,
            "MatchmakerData": "",
            "IpAddress": "127.0.0.1",
            "DnsName": "",
            "Port": self.procs[p].port,
            "InstanceType": "localhost",
            "Weight": 0,
            "AvailabilityStatus": "Enable",
            "CurrentCustomCount": 0,
            "MaxCustomCount": 0,
        });
        if !c.idempotency_token.is_empty() {
            self.tokens.insert(c.idempotency_token, gss.clone());
        }
        let mut out = vec![result(up::CommandResult {
            command_id: id,
            ok: true,
            response_json: session.to_string(),
            ..Default::default()
        })];
        let pid = self.procs[p].pid;
        out.push(self.event(
            "GAME_SESSION_CREATED",
            format!(
                "placed on {}; OnStartGameServerSession sent",
                self.procs[p].id
            ),
            p,
            &gss,
            "",
        ));
        // The game activates at once.
        session["Status"] = json!("ACTIVE");
        out.push(self.event(
            "GAME_SESSION_ACTIVATED",
            format!("activated by the game (pid {pid})"),
            p,
            &gss,
            "",
        ));
        self.sessions.insert(gss.clone(), session);
        self.dirty.insert(gss);
        out
    }

    pub(crate) fn join(
        &mut self,
        id: String,
        j: up::JoinGameServerSession,
    ) -> Vec<up::AgentMessage> {
        let result = |r: up::CommandResult| message(up::agent_message::Body::Result(r));
        let gss = j.game_server_session_id;
        let Some(session) = self.sessions.get_mut(&gss) else {
            return vec![result(failure(
                id,
                "ResourceNotFound",
                format!("game server session {gss} does not exist"),
            ))];
        };
        let count = session["CurrentPlayerSessionCount"].as_i64().unwrap_or(0);
        let max = session["MaximumPlayerSessionCount"].as_i64().unwrap_or(0);
        if session["Status"] != "ACTIVE" || count + j.players.len() as i64 > max {
            return vec![result(failure(
                id,
                "OperationDenied",
                format!("game server session {gss} takes no more players"),
            ))];
        }
        session["CurrentPlayerSessionCount"] = json!(count + j.players.len() as i64);
        let port = session["Port"].clone();
        let p = self
            .procs
            .iter()
            .position(|p| p.session.as_deref() == Some(gss.as_str()))
            .unwrap_or(0);
        let now = now_rfc3339();
        let list: Vec<Value> = j
            .players
            .iter()
            .map(|pl| {
                json!({
                    "PlayerSessionId": format!("psess-{}", uuid::Uuid::new_v4()),
                    "PlayerId": pl.player_id,
                    "GameServerSessionId": gss,
                    "FleetId": FLEET,
                    "IpAddress": "127.0.0.1",
                    "DnsName": "",
                    "Port": port,
                    "PlayerData": pl.player_data,
                    "Status": "RESERVED",
                    "CreationTime": now,
                    "TerminationTime": null,
                })
            })
            .collect();
        self.shared
            .joined
            .fetch_add(list.len() as u64, Ordering::Relaxed);
        let mut out = vec![result(up::CommandResult {
            command_id: id,
            ok: true,
            response_json: Value::Array(list.clone()).to_string(),
            ..Default::default()
        })];
        for pl in &list {
            let psid = pl["PlayerSessionId"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            out.push(self.event("PLAYER_SESSION_RESERVED", "reserved".into(), p, &gss, &psid));
        }
        self.players.entry(gss.clone()).or_default().extend(list);
        self.dirty.insert(gss);
        out
    }
}

/// Runs one simulated agent until `stop`: connects (under `gate`), says what it holds, reports
/// how long the handshake took on `connected`, then answers commands as the agent does
/// (one at a time, in order), with coalesced partial snapshots and periodic status.
pub(crate) async fn run_agent(
    mut host: Host,
    relay: String,
    gate: Arc<Semaphore>,
    connected: mpsc::UnboundedSender<Result<Duration, String>>,
    stop: CancellationToken,
) {
    let shared = host.shared.clone();
    let permit = gate.acquire_owned().await.unwrap();
    let t0 = Instant::now();
    let setup = async {
        let channel = tonic::transport::Endpoint::from_shared(relay)
            .map_err(|e| e.to_string())?
            .connect_timeout(Duration::from_secs(30))
            .tcp_nodelay(true)
            .connect()
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let mut client = ControlPlaneClient::new(channel);
        let (tx, rx) = mpsc::channel::<up::AgentMessage>(256);
        tx.send(host.hello()).await.unwrap();
        tx.send(host.complete_snapshot()).await.unwrap();
        tx.send(host.status()).await.unwrap();
        // Each host its own credential, as agent-tokens-file lists them (procs::Control).
        let mut request = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {}", host_token(&host.instance))
                .parse()
                .unwrap(),
        );
        let response = client
            .relay(request)
            .await
            .map_err(|e| format!("relay: {e}"))?;
        Ok::<_, String>((client, tx, response.into_inner()))
    };
    let (_client, tx, mut inbound) = match setup.await {
        Ok(v) => v,
        Err(e) => {
            let _ = connected.send(Err(e));
            return;
        }
    };
    drop(permit);
    let _ = connected.send(Ok(t0.elapsed()));
    let mut status = tokio::time::interval_at(Instant::now() + STATUS_EVERY, STATUS_EVERY);
    status.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut not_before = Instant::now() + COALESCE;
    let why = loop {
        let pending = !host.dirty.is_empty();
        tokio::select! {
            () = stop.cancelled() => return,
            m = inbound.message() => match m {
                Ok(Some(m)) => {
                    for out in host.on_message(m) {
                        if tx.send(out).await.is_err() {
                            break;
                        }
                    }
                }
                Ok(None) => break "the control plane ended the stream".to_string(),
                Err(e) => break format!("the stream failed: {e}"),
            },
            () = tokio::time::sleep_until(not_before), if pending => {
                let s = host.partial_snapshot();
                if tx.send(s).await.is_err() {
                    break "the outbound stream closed".to_string();
                }
                not_before = Instant::now() + COALESCE;
            }
            _ = status.tick() => {
                let _ = tx.try_send(host.status());
            }
        }
    };
    if !stop.is_cancelled() {
        shared.dropped.fetch_add(1, Ordering::Relaxed);
        shared
            .first_drop
            .lock()
            .unwrap()
            .get_or_insert(format!("{}: {why}", host.instance));
    }
}
