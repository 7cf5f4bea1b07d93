//! `cargo bench --locked --bench control [-- agents N ...]`: one gse-control replica (the release
//! binary, on a throwaway PostgreSQL) under many simulated agents, in this process, each speaking
//! the real relay proto over loopback with its own tonic channel and 50 server processes that
//! activate at once. Prints one line per phase and, at the end, one table row per agent count.
//!
//! Per agent count N (each on a fresh database and replica):
//!
//! 1. connect: N agents dial at once (at most 256 handshakes in flight), each with its own
//!    credential (`agent-tokens-file`: `TOKEN INSTANCE-ID FLEET-ID`), each sending Hello, a
//!    complete snapshot (50 idle ACTIVE processes) and its status; the time until the database
//!    shows all N connected with their snapshots stored; then 10 s idle (status every 10 s per
//!    agent, as the real agent) for the idle CPU.
//! 2. rate: CreateGameServerSession on `fleet-bench` offered open-loop at `rate` calls/s (latency
//!    counted from each call's due time, so a stalled server is not hidden), at most 176 in
//!    flight on keep-alive connections; at the same time `placements` placements (one desired
//!    player each) are started, evenly spread, on a queue whose one destination is the fleet,
//!    and polled every 10 ms (at most 48 calls in flight) until FULFILLED. Start → FULFILLED is
//!    given as the client saw it and as stored (ended_ms − started_ms).
//! 3. ceiling: `concurrency` calls in flight, closed loop: the most this replica does.
//! 4. fill (when at most `fill` processes are left free): the rest of the capacity, then 100
//!    calls more; every process must end up taken, and only then may calls be refused.
//!
//! The simulated agent answers as the real one does (src/upstream, src/fleet/state): commands
//! one at a time in order, a create takes the first idle process (LimitExceeded when none;
//! the same IdempotencyToken gets the same session), sends the result (the session ACTIVATING),
//! GAME_SESSION_CREATED and, the game activating at once, GAME_SESSION_ACTIVATED; partial
//! snapshots (every process, the changed sessions with their players) at most one per 20 ms;
//! status every 10 s. Joins reserve the players (PLAYER_SESSION_RESERVED).
//!
//! Failures are counted by Tencent error code. A LimitExceeded is "spurious" when more processes
//! were free than every other call under way could take (the control plane's counts or locks,
//! not a lack of capacity). After each agent count the books are checked (sessions the hosts
//! made = sessions stored, no host over-counted, every event acknowledged, no stream dropped),
//! and PostgreSQL's errors (deadlocks) and lock waits over 1 s are summed up from its log.
//!
//! CPU is utime+stime of gse-control, of every PostgreSQL process, and of this process (the
//! simulated agents and HTTP clients share the same cores), and what other programs took
//! (from /proc/stat: a phase where they took over 10% of a core is flagged, its figures are
//! skewed); RSS is gse-control's VmRSS (peak sampled every 100 ms) and PostgreSQL's summed Pss.
//!
//! Arguments (after `--`; words, as cargo passes `--bench` itself):
//! - `agents N ...`: adds agent counts to the default 100 and 1000; `only N ...` replaces them.
//! - `rate R` (1000), `creates C` (20000), `placements M` (500), `concurrency K` (64),
//!   `ceiling C` (10000), `fill F` (30000): the phases' sizes.
//! - `no-credentials`: no `agent-tokens-file` (an open relay, as before per-host credentials).
//! - `attacks`: instead of the above, the relay's bounds under attack ([`attacks`]).
//! - `pgss`: load pg_stat_statements (PostgreSQL restarts once, before gse-control starts) and
//!   print the statements that cost the most per N; their mean times include lock waits.
//!
//! Needs Debian's postgresql package (initdb, pg_ctl); run as root it runs PostgreSQL as the
//! `postgres` user, as the tests do. The open-files limit is raised to the hard limit (and the
//! hard limit too, as root), for this process and the children it starts.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use gse_agent::upstream_proto as up;
use gse_agent::upstream_proto::control_plane_client::ControlPlaneClient;
use serde_json::{Value, json};
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use up::command::Kind;

#[allow(dead_code)]
#[path = "../../tests/helper/postgres.rs"]
mod postgres;

mod attacks;
mod load;
mod procs;
mod sim;

use load::*;
use procs::*;
use sim::*;

const CONTROL: &str = env!("CARGO_BIN_EXE_gse-control");
const FLEET: &str = "fleet-bench";
const REGION: &str = "local";
/// Server processes per simulated host.
const PROCESSES: usize = 50;
/// Relay handshakes in flight while agents connect.
const CONNECTING: usize = 256;
/// API calls in flight at most in the open-loop phase, and of the placements beside it (the API
/// takes 256 connections).
const OPEN_LOOP_IN_FLIGHT: usize = 176;
const PLACEMENT_IN_FLIGHT: usize = 48;
/// How often a placement is described while it is PENDING.
const PLACEMENT_POLL: Duration = Duration::from_millis(10);
/// Partial snapshots of one connection are at least this far apart (the agent's COALESCE).
const COALESCE: Duration = Duration::from_millis(20);
/// The agent's default status interval.
const STATUS_EVERY: Duration = Duration::from_secs(10);
/// USER_HZ on Linux.
const HZ: f64 = 100.0;

// ---------------------------------------------------------------------------------------------
// Command line

struct Options {
    agents: Vec<usize>,
    rate: f64,
    creates: usize,
    placements: usize,
    concurrency: usize,
    ceiling: usize,
    fill: usize,
    pgss: bool,
    /// Each host with its own credential (`agent-tokens-file`); off: an open relay.
    credentials: bool,
    /// The relay under attack instead of the load phases.
    attacks: bool,
}

impl Options {
    fn parse() -> Options {
        let mut o = Options {
            agents: vec![100, 1000],
            rate: 1000.0,
            creates: 20_000,
            placements: 500,
            concurrency: 64,
            ceiling: 10_000,
            fill: 30_000,
            pgss: false,
            credentials: true,
            attacks: false,
        };
        let words: Vec<String> = std::env::args()
            .skip(1)
            .filter(|a| !a.starts_with("--"))
            .collect();
        let mut it = words.iter().peekable();
        let number = |w: Option<&String>, what: &str| -> f64 {
            w.and_then(|w| w.replace('_', "").parse::<f64>().ok())
                .unwrap_or_else(|| panic!("`{what}` takes a number"))
        };
        while let Some(w) = it.next() {
            match w.as_str() {
                "agents" | "only" => {
                    if w == "only" {
                        o.agents.clear();
                    }
                    while let Some(n) = it.peek().and_then(|n| n.replace('_', "").parse().ok()) {
                        o.agents.push(n);
                        it.next();
                    }
                }
                "rate" => o.rate = number(it.next(), "rate"),
                "creates" => o.creates = number(it.next(), "creates") as usize,
                "placements" => o.placements = number(it.next(), "placements") as usize,
                "concurrency" => o.concurrency = number(it.next(), "concurrency") as usize,
                "ceiling" => o.ceiling = number(it.next(), "ceiling") as usize,
                "fill" => o.fill = number(it.next(), "fill") as usize,
                "pgss" => o.pgss = true,
                "no-credentials" => o.credentials = false,
                "attacks" => o.attacks = true,
                other => panic!(
                    "unknown argument {other:?}: agents N.. | only N.. | rate R | creates C | placements M | concurrency K | ceiling C | fill F | pgss | no-credentials | attacks"
                ),
            }
        }
        o.agents.sort_unstable();
        o.agents.dedup();
        o
    }
}

// ---------------------------------------------------------------------------------------------
// One agent count

/// One table row.
#[derive(Default)]
struct Row {
    agents: usize,
    connect: Duration,
    rss_connected_kib: u64,
    idle: Spent,
    rate: Summary,
    placement_client: (Duration, Duration),
    placement_stored: (Duration, Duration),
    placement_ok: usize,
    placement_total: usize,
    ceiling: Option<Summary>,
    fill_bad: Option<usize>,
    load: Spent,
    rss_peak_kib: u64,
    hwm_kib: u64,
    pg_pss_kib: u64,
}

fn scenario(n: usize, o: &Options) -> Row {
    let capacity = n * PROCESSES;
    println!("control: {n} agents ({capacity} processes): starting PostgreSQL and gse-control");
    let pg = postgres::Postgres::start();
    if o.pgss {
        enable_pg_stat_statements(&pg);
    }
    log_lock_waits(&pg);
    let postmaster = postmaster_pid(&pg);
    let control = Control::start(&pg.url, o.credentials.then_some(n));
    let rss = RssSampler::start(control.pid());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let row = rt.block_on(drive(n, o, &pg, &control, postmaster, &rss));
    drop(rt);
    if o.pgss {
        print_statements(&pg);
    }
    print_pg_log(&pg, n);
    let (warnings, first) = control.warnings();
    if warnings > 0 {
        println!(
            "control: {n} agents: gse-control logged {warnings} warnings/errors; first: {}",
            first.join(" | ")
        );
    }
    drop(rss);
    drop(control);
    drop(pg);
    row
}

async fn db_count(db: &tokio_postgres::Client, sql: &str) -> i64 {
    db.query_one(sql, &[]).await.unwrap().get(0)
}

async fn drive(
    n: usize,
    o: &Options,
    pg: &postgres::Postgres,
    control: &Control,
    postmaster: u32,
    rss: &RssSampler,
) -> Row {
    let capacity = n * PROCESSES;
    let pid = control.pid();
    let mut row = Row {
        agents: n,
        ..Default::default()
    };
    let (db, connection) = tokio_postgres::connect(&pg.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let shared = Arc::new(Shared::default());
    let stop = CancellationToken::new();

    // 1. Connect.
    let before = Cpu::now(pid, postmaster);
    let gate = Arc::new(Semaphore::new(CONNECTING));
    let (ctx, mut crx) = mpsc::unbounded_channel();
    let t0 = Instant::now();
    let mut agents = Vec::with_capacity(n);
    for i in 0..n {
        agents.push(tokio::spawn(run_agent(
            Host::new(i, shared.clone()),
            format!("http://{}", control.relay),
            gate.clone(),
            ctx.clone(),
            stop.clone(),
        )));
    }
    let mut handshakes = Vec::with_capacity(n);
    for _ in 0..n {
        match tokio::time::timeout(Duration::from_secs(120), crx.recv()).await {
            Ok(Some(Ok(d))) => handshakes.push(d),
            Ok(Some(Err(e))) => panic!("an agent could not connect: {e}\n{}", control.log_tail()),
            _ => panic!(
                "agents did not connect within 120 s:\n{}",
                control.log_tail()
            ),
        }
    }
    let streams = t0.elapsed();
    loop {
        let ready = db_count(
            &db,
            "SELECT count(*) FROM instances WHERE connected AND processes = 50 AND idle = 50",
        )
        .await;
        if ready as usize >= n {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(300),
            "only {ready} of {n} agents are stored as connected:\n{}",
            control.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    row.connect = t0.elapsed();
    let connect_cpu = Cpu::now(pid, postmaster).since(&before);
    handshakes.sort();
    row.rss_connected_kib = status_kib(pid, "VmRSS:");
    println!(
        "control: {n} agents: all streams open in {:.2} s (handshake p50 {} ms, p99 {} ms), all stored as connected with their snapshots in {:.2} s; gse-control RSS {} MiB; {connect_cpu}",
        streams.as_secs_f64(),
        ms(percentile(&handshakes, 0.5)),
        ms(percentile(&handshakes, 0.99)),
        row.connect.as_secs_f64(),
        row.rss_connected_kib / 1024
    );

    // Idle: status every 10 s per agent.
    let before = Cpu::now(pid, postmaster);
    tokio::time::sleep(STATUS_EVERY).await;
    row.idle = Cpu::now(pid, postmaster).since(&before);
    println!(
        "control: {n} agents connected, idle: gse-control RSS {} MiB; {}",
        status_kib(pid, "VmRSS:") / 1024,
        row.idle
    );

    let api = Api::new(control.api);
    api.call(
        "CreateGameServerSessionQueue",
        &json!({
            "Name": "bench",
            "Destinations": [{"DestinationArn": format!("qcs::gse:{REGION}:uin/0:fleet/{FLEET}")}],
        }),
    )
    .await
    .expect("CreateGameServerSessionQueue");

    // 2. Creates at the offered rate, placements alongside.
    let m = o.placements.min(capacity / 10);
    let creates = o.creates.min((capacity - m) * 6 / 10);
    let over = Duration::from_secs_f64(creates as f64 / o.rate);
    rss.take();
    let before = Cpu::now(pid, postmaster);
    let prefix = format!("pl-{n}");
    let (load, placed) = tokio::join!(
        open_loop(&api, &shared, creates, o.rate),
        placements(&api, &shared, m, over, &prefix)
    );
    row.load = Cpu::now(pid, postmaster).since(&before);
    row.rss_peak_kib = rss.take();
    row.rate = Summary::of(&load.0, load.1);
    println!(
        "control: {n} agents: creates offered at {:.0}/s: {}",
        o.rate, row.rate
    );
    let (fulfilled, other) = placed;
    row.placement_ok = fulfilled.len();
    row.placement_total = m;
    row.placement_client = (percentile(&fulfilled, 0.5), percentile(&fulfilled, 0.99));
    let stored: Vec<Duration> = {
        let rows = db
            .query(
                "SELECT ended_ms - started_ms FROM placements WHERE status = 'FULFILLED' ORDER BY 1",
                &[],
            )
            .await
            .unwrap();
        rows.iter()
            .map(|r| Duration::from_millis(r.get::<_, i64>(0).max(0) as u64))
            .collect()
    };
    row.placement_stored = (percentile(&stored, 0.5), percentile(&stored, 0.99));
    println!(
        "control: {n} agents: placements during the creates: {m} started, {} FULFILLED{}; Start → FULFILLED as polled every {} ms: p50 {} ms, p99 {} ms, max {} ms; as stored: p50 {} ms, p99 {} ms, max {} ms",
        fulfilled.len(),
        if other.is_empty() {
            String::new()
        } else {
            format!(" (others: {other:?})")
        },
        PLACEMENT_POLL.as_millis(),
        ms(row.placement_client.0),
        ms(row.placement_client.1),
        ms(fulfilled.last().copied().unwrap_or_default()),
        ms(row.placement_stored.0),
        ms(row.placement_stored.1),
        ms(stored.last().copied().unwrap_or_default()),
    );
    println!(
        "control: {n} agents: during the creates: gse-control RSS peak {} MiB; {}; gse-control {:.2} ms CPU per create",
        row.rss_peak_kib / 1024,
        row.load,
        row.load.control * 1000.0 / (creates + m).max(1) as f64
    );

    // 3. The ceiling: closed loop.
    let free = shared.idle.load(Ordering::Relaxed).max(0) as usize;
    let ceiling = o.ceiling.min(free.saturating_sub(100));
    if ceiling >= 1000 {
        let before = Cpu::now(pid, postmaster);
        let (out, took) = closed_loop(&api, &shared, ceiling, o.concurrency).await;
        let spent = Cpu::now(pid, postmaster).since(&before);
        let s = Summary::of(&out, took);
        println!(
            "control: {n} agents: ceiling, {} in flight: {s}; {spent}",
            o.concurrency
        );
        row.ceiling = Some(s);
    }

    // 4. Fill what is left, then ask for more.
    let free = shared.idle.load(Ordering::Relaxed).max(0) as usize;
    if free <= o.fill {
        let before = Cpu::now(pid, postmaster);
        let (out, took) = closed_loop(&api, &shared, free, o.concurrency).await;
        let spent = Cpu::now(pid, postmaster).since(&before);
        let s = Summary::of(&out, took);
        println!(
            "control: {n} agents: filling the last {free} free processes, {} in flight: {s}; {spent}",
            o.concurrency
        );
        let left = shared.idle.load(Ordering::Relaxed).max(0) as usize;
        let (probe, took) = closed_loop(&api, &shared, 100, 8).await;
        let p = Summary::of(&probe, took);
        let after = shared.idle.load(Ordering::Relaxed).max(0) as usize;
        // Refused while processes stayed free to the end: certainly not a lack of capacity.
        let stranded =
            (s.spurious + s.real_limit).min(left) + (p.spurious + p.real_limit).min(after);
        println!(
            "control: {n} agents: {left} processes were left free by the fill; 100 creates more: {p}; {after} left free; refused while processes stayed free: {stranded}"
        );
        let other: usize = s.failures.values().sum::<usize>() + p.failures.values().sum::<usize>();
        row.fill_bad = Some(other + stranded);
    }

    // The books: what the hosts made is what the database holds.
    let stored_sessions = db_count(&db, "SELECT count(*) FROM sessions").await;
    let active = db_count(&db, "SELECT count(*) FROM sessions WHERE status = 'ACTIVE'").await;
    let overbooked = db_count(
        &db,
        "SELECT count(*) FROM instances WHERE cardinality(busy_keys) > processes OR idle < 0 OR in_flight <> 0",
    )
    .await;
    let connected = db_count(&db, "SELECT count(*) FROM instances WHERE connected").await;
    println!(
        "control: {n} agents: hosts made {} sessions ({} refused for a full host, {} replayed by token, {} players joined); stored {stored_sessions} ({active} ACTIVE); instances with inconsistent counts {overbooked}; connected {connected}; events sent {} acked {}; streams dropped {}{}",
        shared.created.load(Ordering::Relaxed),
        shared.refused.load(Ordering::Relaxed),
        shared.replayed.load(Ordering::Relaxed),
        shared.joined.load(Ordering::Relaxed),
        shared.events.load(Ordering::Relaxed),
        shared.acked.load(Ordering::Relaxed),
        shared.dropped.load(Ordering::Relaxed),
        shared
            .first_drop
            .lock()
            .unwrap()
            .as_ref()
            .map(|d| format!(" (first: {d})"))
            .unwrap_or_default(),
    );
    row.hwm_kib = status_kib(pid, "VmHWM:");
    row.pg_pss_kib = pg_pids(postmaster).into_iter().map(pss_kib).sum();
    println!(
        "control: {n} agents: gse-control VmHWM {} MiB; PostgreSQL Pss (all processes) {} MiB; this bench RSS {} MiB",
        row.hwm_kib / 1024,
        row.pg_pss_kib / 1024,
        status_kib(std::process::id(), "VmRSS:") / 1024
    );
    stop.cancel();
    for a in agents {
        let _ = tokio::time::timeout(Duration::from_secs(10), a).await;
    }
    row
}

/// The statements that cost PostgreSQL the most, from pg_stat_statements.
fn print_statements(pg: &postgres::Postgres) {
    let rows = pg.query(
        "SELECT calls, round(total_exec_time::numeric, 0), round(mean_exec_time::numeric, 3),
                rows, regexp_replace(left(query, 160), '\\s+', ' ', 'g')
         FROM pg_stat_statements ORDER BY total_exec_time DESC LIMIT 15",
    );
    println!("  pg_stat_statements, by total time: calls | total ms | mean ms | rows | statement");
    for r in rows {
        println!("  {}", r.join(" | "));
    }
}

fn main() {
    let o = Options::parse();
    let files = raise_open_files();
    println!(
        "control: gse-control under simulated agents ({PROCESSES} processes each), one replica, PostgreSQL on the same host; {} CPUs; open files {files}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    if o.attacks {
        attacks::attacks();
        return;
    }
    let rows: Vec<Row> = o.agents.iter().map(|&n| scenario(n, &o)).collect();
    println!();
    println!(
        "| agents | processes | connect s | idle CPU ctl/pg % | creates/s (offered {:.0}) | p50 ms | p99 ms | bad failures | ceiling/s ({} in flight), p99 ms | placement p50/p99 ms, polled | stored | ctl RSS MiB connected/peak | ctl CPU s (ms/create) | pg CPU s (ms/create) | bench CPU s | other programs CPU % | pg Pss MiB |",
        o.rate, o.concurrency
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in &rows {
        let pct = |s: f64| s / r.idle.wall.max(1e-9) * 100.0;
        let per = |s: f64| s * 1000.0 / (r.rate.calls + r.placement_total).max(1) as f64;
        println!(
            "| {} | {} | {:.2} | {:.1}/{:.1} | {:.0} | {} | {} | {}{} | {} | {}/{} ({}/{} ok) | {}/{} | {}/{} | {:.1} ({:.2}) | {:.1} ({:.2}) | {:.1} | {:.0} | {} |",
            r.agents,
            r.agents * PROCESSES,
            r.connect.as_secs_f64(),
            pct(r.idle.control),
            pct(r.idle.pg),
            r.rate.per_s,
            ms(r.rate.p50),
            ms(r.rate.p99),
            r.rate.bad(),
            match r.fill_bad {
                Some(b) => format!(" (fill+probe: {b})"),
                None => String::new(),
            },
            r.ceiling
                .as_ref()
                .map(|c| format!("{:.0}, {}", c.per_s, ms(c.p99)))
                .unwrap_or_else(|| "-".into()),
            ms(r.placement_client.0),
            ms(r.placement_client.1),
            r.placement_ok,
            r.placement_total,
            ms(r.placement_stored.0),
            ms(r.placement_stored.1),
            r.rss_connected_kib / 1024,
            r.rss_peak_kib.max(r.rss_connected_kib) / 1024,
            r.load.control,
            per(r.load.control),
            r.load.pg,
            per(r.load.pg),
            r.load.bench,
            r.load.other / r.load.wall.max(1e-9) * 100.0,
            r.pg_pss_kib / 1024,
        );
    }
    println!(
        "(creates, placements and CPU/RSS peak: the open-loop phase; bad failures: any failure but LimitExceeded with every process taken)"
    );
}
