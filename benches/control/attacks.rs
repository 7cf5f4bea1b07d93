//! `cargo bench --locked --bench control -- attacks`: the relay's bounds under attack, as
//! issue 26 measures them. Ten simulated hosts relay as usual while, one after another:
//!
//! 1. 2,000 streams that never say Hello, from 100 loopback addresses: 20 to a connection,
//!    then each on a connection of its own;
//! 2. a Hello whose instance id is 1 MiB;
//! 3. 10,000 made-up instance ids tried with one valid credential (64 at a time);
//! 4. that credential's own host sends a complete snapshot of 20,000 sessions.
//!
//! After each: gse-control's RSS peak against its idle RSS (the target: within 16 MiB), the
//! real hosts still connected with nothing dropped, 20 creates answered by them, and the
//! replica's refusal counters. At the end: no instance or fleet the attacks named exists.

use super::*;

/// Real hosts relaying beside the attacks.
const REAL: usize = 10;
/// The attacker holds the credential of host `ins-REAL` (listed, so valid).
const ATTACKER: usize = REAL;

/// Silent streams, and the loopback addresses they come from.
const SILENT: usize = 2_000;
const SILENT_FROM: usize = 100;
/// Instance ids tried with the attacker's credential, and how many at once.
const FORGED_IDS: usize = 10_000;
const FORGING: usize = 64;
/// Sessions in the oversized snapshot.
const SNAPSHOT_SESSIONS: usize = 20_000;

/// A relay stream with `first` as its first messages and the attacker's token; the server's
/// answer (an error, for every attack here). The sender is kept open until the answer.
async fn open(
    channel: tonic::transport::Channel,
    first: Vec<up::AgentMessage>,
    token: &str,
) -> Result<(), tonic::Status> {
    // Held to the end: a stream whose sender is gone would look closed, not silent.
    let (tx, rx) = mpsc::channel::<up::AgentMessage>(4);
    for m in first {
        tx.send(m).await.unwrap();
    }
    let mut request = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let mut client = ControlPlaneClient::new(channel).max_decoding_message_size(64 << 20);
    let mut inbound = client.relay(request).await?.into_inner();
    // Admitted: read until the server ends it (the oversized snapshot).
    loop {
        match inbound.message().await {
            Ok(Some(_)) => {}
            Ok(None) => return Ok(()),
            Err(e) => return Err(e),
        }
    }
}

fn channel(relay: SocketAddr, from: Option<std::net::IpAddr>) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{relay}"))
        .unwrap()
        .local_address(from)
        .connect_timeout(Duration::from_secs(30))
        .connect_lazy()
}

fn hello(instance: String) -> up::AgentMessage {
    message(up::agent_message::Body::Hello(up::Hello {
        fleet_id: FLEET.into(),
        instance_id: instance,
        agent_version: "attacker".into(),
        epoch: 1,
        region: REGION.into(),
        public_ip: "6.6.6.6".into(),
        ..Default::default()
    }))
}

/// The replica's refusal counters, `rule=count` for those above zero.
async fn refusals(metrics: SocketAddr) -> String {
    let text = reqwest::get(format!("http://{metrics}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("gse_control_relay_refused_total{rule=\"")?;
            let (rule, n) = rest.split_once("\"} ")?;
            (n != "0").then(|| format!("{rule}={n}"))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs the attacks; panics when a real host lost its stream or a create failed.
pub(crate) fn attacks() {
    let pg = postgres::Postgres::start();
    let control = Control::start(&pg.url, Some(REAL + 1));
    let pid = control.pid();
    let rss = RssSampler::start(pid);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let shared = Arc::new(Shared::default());
        let stop = CancellationToken::new();
        let gate = Arc::new(Semaphore::new(CONNECTING));
        let (ctx, mut crx) = mpsc::unbounded_channel();
        for i in 0..REAL {
            tokio::spawn(run_agent(
                Host::new(i, shared.clone()),
                format!("http://{}", control.relay),
                gate.clone(),
                ctx.clone(),
                stop.clone(),
            ));
        }
        for _ in 0..REAL {
            crx.recv().await.unwrap().expect("a real host connects");
        }
        let api = Api::new(control.api);
        tokio::time::sleep(Duration::from_secs(3)).await;
        let idle = status_kib(pid, "VmRSS:");
        println!(
            "attacks: {REAL} hosts relaying, gse-control idle RSS {} MiB",
            idle / 1024
        );
        rss.take();
        let token = host_token(&format!("ins-{ATTACKER}"));
        let check = |what: &'static str| {
            let (api, shared, metrics) = (api.clone(), shared.clone(), control.metrics);
            let peak = rss.take().max(status_kib(pid, "VmRSS:"));
            async move {
                let mut failed = Vec::new();
                for _ in 0..20 {
                    if let Err(e) = api.create().await {
                        failed.push(e);
                    }
                }
                let dropped = shared.dropped.load(Ordering::Relaxed);
                println!(
                    "attacks: {what}: gse-control RSS peak {} MiB ({:+} MiB over idle); real hosts: {dropped} streams dropped, 20 creates, {} failed; refused so far: {}",
                    peak / 1024,
                    (peak as i64 - idle as i64) / 1024,
                    failed.len(),
                    refusals(metrics).await
                );
                assert!(failed.is_empty(), "{what}: creates failed: {failed:?}");
                assert_eq!(dropped, 0, "{what}: a real host lost its stream");
            }
        };

        // 1. Silent streams from many addresses: 20 to a connection, then each on its own.
        for (shape, per_connection) in [("on 100 connections", 20), ("each on its own connection", 1)] {
            let t0 = Instant::now();
            let connections: Vec<_> = (0..SILENT / per_connection)
                .map(|i| {
                    let from = std::net::IpAddr::from([127, 0, 1, (i % SILENT_FROM) as u8 + 1]);
                    channel(control.relay, Some(from))
                })
                .collect();
            let mut silent = Vec::with_capacity(SILENT);
            for i in 0..SILENT {
                let (ch, token) = (connections[i % connections.len()].clone(), token.clone());
                silent.push(tokio::spawn(async move { open(ch, vec![], &token).await }));
            }
            drop(connections);
            let mut codes: BTreeMap<String, usize> = BTreeMap::new();
            for s in silent {
                let code = match s.await.unwrap() {
                    Ok(()) => "admitted".to_string(),
                    Err(e) => format!("{:?}", e.code()),
                };
                *codes.entry(code).or_default() += 1;
            }
            println!(
                "attacks: {SILENT} silent streams from {SILENT_FROM} addresses, {shape}, answered in {:.1} s: {codes:?}",
                t0.elapsed().as_secs_f64()
            );
            check(if per_connection == 1 { "silent streams, a connection each" } else { "silent streams, 20 to a connection" }).await;
        }

        // 2. A Hello with a 1 MiB id.
        let big = open(
            channel(control.relay, None),
            vec![hello("x".repeat(1 << 20))],
            &token,
        )
        .await;
        println!(
            "attacks: a Hello with a 1 MiB id: {:?}",
            big.err().map(|e| e.code())
        );
        check("a 1 MiB id").await;

        // 3. Made-up instance ids with one valid credential.
        let t0 = Instant::now();
        let ch = channel(control.relay, None);
        let gate = Arc::new(Semaphore::new(FORGING));
        let mut tries = Vec::with_capacity(FORGED_IDS);
        for i in 0..FORGED_IDS {
            let (ch, token, gate) = (ch.clone(), token.clone(), gate.clone());
            tries.push(tokio::spawn(async move {
                let _p = gate.acquire_owned().await.unwrap();
                open(ch, vec![hello(format!("ins-forged-{i}"))], &token).await
            }));
        }
        let mut codes: BTreeMap<String, usize> = BTreeMap::new();
        for t in tries {
            let code = match t.await.unwrap() {
                Ok(()) => "admitted".to_string(),
                Err(e) => format!("{:?}", e.code()),
            };
            *codes.entry(code).or_default() += 1;
        }
        println!(
            "attacks: {FORGED_IDS} made-up instance ids with one credential in {:.1} s: {codes:?}",
            t0.elapsed().as_secs_f64()
        );
        check("made-up ids").await;

        // 4. The attacker's own host, a snapshot of 20,000 sessions.
        let session = |i: usize| {
            json!({
                "GameServerSessionId": format!("qcs::gse:{REGION}:uin/0:gameserversession/{FLEET}/forged-{i}"),
                "FleetId": FLEET, "InstanceId": format!("ins-{ATTACKER}"), "Status": "ACTIVE",
                "IpAddress": "6.6.6.6", "Port": 6666, "MaximumPlayerSessionCount": 10,
                "CurrentPlayerSessionCount": 0, "CreationTime": now_rfc3339(), "Name": "forged",
            })
            .to_string()
        };
        let snapshot = message(up::agent_message::Body::Snapshot(up::Snapshot {
            complete: true,
            processes: vec![up::ProcessState {
                process_id: "proc-x".into(),
                pid: 1,
                status: "ACTIVE".into(),
                healthy: true,
                game_server_session_id: String::new(),
            }],
            game_server_sessions_json: (0..SNAPSHOT_SESSIONS).map(session).collect(),
            player_sessions_json: vec![],
        }));
        let mut own = hello(format!("ins-{ATTACKER}"));
        if let Some(up::agent_message::Body::Hello(h)) = &mut own.body {
            h.agent_version = "bench".into();
        }
        let ended = open(channel(control.relay, None), vec![own, snapshot], &token).await;
        println!(
            "attacks: a snapshot of {SNAPSHOT_SESSIONS} sessions from its own host: {}",
            match ended {
                Ok(()) => "the stream was ended".to_string(),
                Err(e) => format!("{:?}: {}", e.code(), e.message()),
            }
        );
        check("a 20,000-session snapshot").await;

        let (db, connection) = tokio_postgres::connect(&pg.url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        let count = |sql: &'static str| {
            let db = &db;
            async move { db.query_one(sql, &[]).await.unwrap().get::<_, i64>(0) }
        };
        println!(
            "attacks: afterwards: {} instances, {} fleets, {} sessions stored that the attacks named; gse-control VmHWM {} MiB",
            count("SELECT count(*) FROM instances").await,
            count("SELECT count(DISTINCT fleet_id) FROM instances").await,
            count("SELECT count(*) FROM sessions WHERE gss_id LIKE '%forged%'").await,
            status_kib(pid, "VmHWM:") / 1024
        );
        stop.cancel();
    });
    drop(rss);
}
