//! `cargo bench --locked --bench control [-- agents N ...]`: one gse-control replica (the release
//! binary, on a throwaway PostgreSQL) under many simulated agents, in this process, each speaking
//! the real relay proto over loopback with its own tonic channel and 50 server processes that
//! activate at once. Prints one line per phase and, at the end, one table row per agent count.
//!
//! Per agent count N (each on a fresh database and replica):
//!
//! 1. connect: N agents dial at once (at most 256 handshakes in flight), each sending Hello, a
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
#[path = "../tests/helper/postgres.rs"]
mod postgres;

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
                other => panic!(
                    "unknown argument {other:?}: agents N.. | only N.. | rate R | creates C | placements M | concurrency K | ceiling C | fill F | pgss"
                ),
            }
        }
        o.agents.sort_unstable();
        o.agents.dedup();
        o
    }
}

// ---------------------------------------------------------------------------------------------
// Processes: gse-control, PostgreSQL, and what they cost

/// A gse-control replica on a temp dir; SIGTERM (then SIGKILL) when dropped.
struct Control {
    dir: tempfile::TempDir,
    child: Option<Child>,
    api: SocketAddr,
    relay: SocketAddr,
}

impl Control {
    fn start(database: &str) -> Control {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("control.yaml"),
            format!("database: {database}\napi-listen: 127.0.0.1:0\nrelay-listen: 127.0.0.1:0\n"),
        )
        .unwrap();
        let endpoints = dir.path().join("endpoints.json");
        let log = std::fs::File::create(dir.path().join("control.err")).unwrap();
        let child = Command::new(CONTROL)
            .args(["run", "--config"])
            .arg(dir.path().join("control.yaml"))
            .arg("--endpoints-file")
            .arg(&endpoints)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start gse-control");
        let mut c = Control {
            dir,
            child: Some(child),
            api: "127.0.0.1:1".parse().unwrap(),
            relay: "127.0.0.1:1".parse().unwrap(),
        };
        let started = std::time::Instant::now();
        let v: Value = loop {
            if let Some(status) = c.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("gse-control exited ({status}):\n{}", c.log_tail());
            }
            if let Some(v) = std::fs::read_to_string(&endpoints)
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok())
            {
                break v;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "gse-control did not start:\n{}",
                c.log_tail()
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        c.api = v["api"].as_str().unwrap().parse().unwrap();
        c.relay = v["relay"].as_str().unwrap().parse().unwrap();
        c
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// The last lines of its log, and how many lines were warnings or errors.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("control.err")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Log lines at WARN or ERROR, and the first few of them.
    fn warnings(&self) -> (usize, Vec<String>) {
        let text = std::fs::read_to_string(self.dir.path().join("control.err")).unwrap_or_default();
        let bad: Vec<&str> = text
            .lines()
            .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
            .collect();
        (
            bad.len(),
            bad.iter().take(3).map(|l| l.to_string()).collect(),
        )
    }
}

impl Drop for Control {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while std::time::Instant::now() < deadline {
                if c.try_wait().ok().flatten().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The fields of /proc/PID/stat after the command name (state is index 0).
fn stat_fields(pid: u32) -> Option<Vec<u64>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    Some(
        rest.split_whitespace()
            .map(|f| f.parse::<u64>().unwrap_or(0))
            .collect(),
    )
}

/// utime+stime, plus the reaped children's when `children`.
fn ticks(pid: u32, children: bool) -> u64 {
    stat_fields(pid)
        .map(|f| f[11] + f[12] + if children { f[13] + f[14] } else { 0 })
        .unwrap_or(0)
}

fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn pss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("Pss:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// PostgreSQL's postmaster and every process it started.
fn pg_pids(postmaster: u32) -> Vec<u32> {
    let mut pids = vec![postmaster];
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if stat_fields(pid).is_some_and(|f| f.get(1) == Some(&(postmaster as u64))) {
                pids.push(pid);
            }
        }
    }
    pids
}

/// CPU ticks used so far by gse-control, PostgreSQL and this process.
#[derive(Clone, Copy)]
struct Cpu {
    control: u64,
    pg: u64,
    bench: u64,
    /// Every CPU's busy ticks (/proc/stat), to tell what other programs took.
    machine: u64,
    at: std::time::Instant,
}

/// Busy ticks of every CPU that processes are charged with: user, nice, system, steal (not
/// irq and softirq time, which is the kernel's, e.g. loopback TCP, and no process's).
fn machine_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let f: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    [0, 1, 2, 7].iter().filter_map(|&i| f.get(i)).sum()
}

impl Cpu {
    fn now(control: u32, postmaster: u32) -> Cpu {
        let pg = pg_pids(postmaster)
            .into_iter()
            .map(|p| ticks(p, p == postmaster))
            .sum();
        Cpu {
            control: ticks(control, false),
            pg,
            bench: ticks(std::process::id(), false),
            machine: machine_ticks(),
            at: std::time::Instant::now(),
        }
    }

    /// CPU-seconds each used since `before`, and the wall time.
    fn since(&self, before: &Cpu) -> Spent {
        Spent {
            control: (self.control - before.control) as f64 / HZ,
            pg: self.pg.saturating_sub(before.pg) as f64 / HZ,
            bench: (self.bench - before.bench) as f64 / HZ,
            other: ((self.machine - before.machine) as f64
                - (self.control + self.pg + self.bench) as f64
                + (before.control + before.pg + before.bench) as f64)
                .max(0.0)
                / HZ,
            wall: (self.at - before.at).as_secs_f64(),
        }
    }
}

#[derive(Clone, Copy, Default)]
struct Spent {
    control: f64,
    pg: f64,
    bench: f64,
    /// Other programs on the machine (and the kernel's own threads).
    other: f64,
    wall: f64,
}

impl std::fmt::Display for Spent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pct = |s: f64| s / self.wall.max(1e-9) * 100.0;
        write!(
            f,
            "CPU over {:.1} s: gse-control {:.2} s ({:.0}% of a core), PostgreSQL {:.2} s ({:.0}%), bench (agents + clients) {:.2} s ({:.0}%), other programs {:.2} s ({:.0}%){}",
            self.wall,
            self.control,
            pct(self.control),
            self.pg,
            pct(self.pg),
            self.bench,
            pct(self.bench),
            self.other,
            pct(self.other),
            if pct(self.other) > 10.0 && self.wall >= 2.0 {
                " -- the machine was not quiet: figures are skewed"
            } else {
                ""
            }
        )
    }
}

/// Samples gse-control's VmRSS every 100 ms; keeps the highest since the last reset.
struct RssSampler {
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RssSampler {
    fn start(pid: u32) -> RssSampler {
        let peak = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (peak, stop) = (peak.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    peak.fetch_max(status_kib(pid, "VmRSS:"), Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
        };
        RssSampler {
            peak,
            stop,
            thread: Some(thread),
        }
    }

    /// The peak since the last call, in KiB.
    fn take(&self) -> u64 {
        self.peak.swap(0, Ordering::Relaxed)
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn raise_open_files() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    let want: u64 = 1 << 20;
    if hard < want && setrlimit(Resource::RLIMIT_NOFILE, want, want).is_ok() {
        return want;
    }
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).unwrap();
    hard
}

/// Loads pg_stat_statements: preloaded, so the server restarts (before gse-control starts).
fn enable_pg_stat_statements(pg: &postgres::Postgres) {
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::process::CommandExt;
    pg.query("ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'");
    let data = pg.scalar("SHOW data_directory");
    let bin = pg.scalar("SELECT setting FROM pg_config WHERE name = 'BINDIR'");
    let owner = std::fs::metadata(&data).unwrap();
    let dir = std::path::Path::new(&data).parent().unwrap().to_path_buf();
    let out = Command::new(format!("{bin}/pg_ctl"))
        .args(["-D", &data, "-m", "fast", "-w", "restart", "-l"])
        .arg(dir.join("server.log"))
        .uid(owner.uid())
        .gid(owner.gid())
        .current_dir(&dir)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pg_ctl restart: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    pg.query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements");
}

/// Logs lock waits longer than deadlock_timeout (1 s), for [`print_pg_log`].
fn log_lock_waits(pg: &postgres::Postgres) {
    pg.query("ALTER SYSTEM SET log_lock_waits = on");
    pg.query("SELECT pg_reload_conf()");
}

/// PostgreSQL's errors and long lock waits during the run, from its server log (the helper
/// writes it beside the data directory), counted by message.
fn print_pg_log(pg: &postgres::Postgres, n: usize) {
    let data = pg.scalar("SHOW data_directory");
    let Some(dir) = std::path::Path::new(&data).parent() else {
        return;
    };
    let log = std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    let mut detail: BTreeMap<String, String> = BTreeMap::new();
    let mut last: Option<String> = None;
    for line in log.lines() {
        // A message's continuation lines (a deadlock's DETAIL: each process and its statement)
        // are indented.
        if line.starts_with(char::is_whitespace) {
            if let Some(m) = &last
                && let Some(d) = detail.get_mut(m)
                && !d.contains("statement:")
                && d.len() < 1500
            {
                d.push(' ');
                d.push_str(&line.split_whitespace().collect::<Vec<_>>().join(" "));
            }
            continue;
        }
        let text = line.split_once("] ").map(|(_, t)| t).unwrap_or(line);
        if let Some(m) = text.strip_prefix("ERROR:") {
            let m = m.trim().to_string();
            *counts.entry(m.clone()).or_default() += 1;
            last = Some(m);
        } else if text.starts_with("LOG:") && text.contains("still waiting for") {
            let m = text
                .split_once(" still waiting for ")
                .map(|(_, w)| {
                    format!(
                        "lock wait > 1 s for {}",
                        w.split(" on ").next().unwrap_or(w)
                    )
                })
                .unwrap_or_else(|| text.to_string());
            *counts.entry(m.clone()).or_default() += 1;
            last = Some(m);
        } else if let (Some(d), Some(m)) = (text.strip_prefix("DETAIL:"), &last) {
            detail
                .entry(m.clone())
                .or_insert_with(|| d.trim().chars().take(600).collect());
        } else if let (Some(q), Some(m)) = (text.strip_prefix("STATEMENT:"), &last) {
            let e = detail.entry(m.clone()).or_default();
            if !e.contains("statement:") {
                e.push_str(&format!(
                    " statement: {}",
                    q.split_whitespace()
                        .collect::<Vec<_>>()
                        .join(" ")
                        .chars()
                        .take(200)
                        .collect::<String>()
                ));
            }
        } else if !text.starts_with("CONTEXT:") && !text.starts_with("HINT:") {
            last = None;
        }
    }
    if counts.is_empty() {
        println!("control: {n} agents: PostgreSQL logged no errors and no lock wait over 1 s");
        return;
    }
    for (m, c) in &counts {
        println!(
            "control: {n} agents: PostgreSQL logged {c} × {m}{}",
            detail.get(m).map(|d| format!(" ({d})")).unwrap_or_default()
        );
    }
}

fn postmaster_pid(pg: &postgres::Postgres) -> u32 {
    let data = pg.scalar("SHOW data_directory");
    std::fs::read_to_string(format!("{data}/postmaster.pid"))
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

// ---------------------------------------------------------------------------------------------
// Simulated agents

/// What every simulated host shares with the bench.
#[derive(Default)]
struct Shared {
    /// Free processes across every host.
    idle: AtomicI64,
    /// Creates and placements under way (each may still take a process).
    wanting: AtomicI64,
    /// Sessions the hosts made.
    created: AtomicU64,
    /// Creates a host refused for want of a free process (the control plane's counts were
    /// behind; it tries another host).
    refused: AtomicU64,
    /// Creates answered again for a known idempotency token.
    replayed: AtomicU64,
    /// Players joined.
    joined: AtomicU64,
    /// Commands of any other kind.
    other_commands: AtomicU64,
    /// Events sent, and the highest sequence the control plane acknowledged, summed.
    events: AtomicU64,
    acked: AtomicU64,
    /// Streams that ended before the bench stopped them, and why the first did.
    dropped: AtomicU64,
    first_drop: Mutex<Option<String>>,
}

struct Proc {
    id: String,
    pid: u32,
    port: i64,
    session: Option<String>,
}

/// One simulated host: its processes, sessions and players, and its outbox sequence.
struct Host {
    instance: String,
    procs: Vec<Proc>,
    sessions: HashMap<String, Value>,
    players: HashMap<String, Vec<Value>>,
    tokens: HashMap<String, String>,
    sequence: u64,
    acked: u64,
    /// Sessions changed since the last snapshot.
    dirty: BTreeSet<String>,
    shared: Arc<Shared>,
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn message(body: up::agent_message::Body) -> up::AgentMessage {
    up::AgentMessage { body: Some(body) }
}

fn failure(id: String, code: &str, text: String) -> up::CommandResult {
    up::CommandResult {
        command_id: id,
        ok: false,
        error_code: code.into(),
        message: text,
        response_json: String::new(),
    }
}

impl Host {
    fn new(index: usize, shared: Arc<Shared>) -> Host {
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

    fn hello(&self) -> up::AgentMessage {
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

    fn processes(&self) -> Vec<up::ProcessState> {
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
    fn snapshot<'a>(
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

    fn complete_snapshot(&self) -> up::AgentMessage {
        self.snapshot(true, self.sessions.keys())
    }

    fn partial_snapshot(&mut self) -> up::AgentMessage {
        let dirty = std::mem::take(&mut self.dirty);
        self.snapshot(false, dirty.iter())
    }

    fn status(&self) -> up::AgentMessage {
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

    fn event(
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
    fn on_message(&mut self, m: up::ControlMessage) -> Vec<up::AgentMessage> {
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

    fn command(&mut self, c: up::Command) -> Vec<up::AgentMessage> {
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
    fn create(&mut self, id: String, c: up::CreateGameServerSession) -> Vec<up::AgentMessage> {
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

    fn join(&mut self, id: String, j: up::JoinGameServerSession) -> Vec<up::AgentMessage> {
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
async fn run_agent(
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
        let response = client
            .relay(tokio_stream::wrappers::ReceiverStream::new(rx))
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

// ---------------------------------------------------------------------------------------------
// The API's callers

#[derive(Clone)]
struct Api {
    client: reqwest::Client,
    url: String,
}

impl Api {
    fn new(addr: SocketAddr) -> Api {
        Api {
            client: reqwest::Client::builder()
                .pool_max_idle_per_host(1024)
                .tcp_nodelay(true)
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap(),
            url: format!("http://{addr}/"),
        }
    }

    /// One action; its `Response` or its error's (code, message).
    async fn call(&self, action: &str, body: &Value) -> Result<Value, (String, String)> {
        let sent = self
            .client
            .post(&self.url)
            .header("X-TC-Action", action)
            .header("Content-Type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .map_err(|e| ("Transport".to_string(), e.to_string()))?;
        let bytes = sent
            .bytes()
            .await
            .map_err(|e| ("Transport".to_string(), e.to_string()))?;
        let v: Value = serde_json::from_slice(&bytes)
            .map_err(|e| ("Transport".to_string(), format!("not JSON: {e}")))?;
        let r = v["Response"].clone();
        match r.get("Error") {
            Some(e) => Err((
                e["Code"].as_str().unwrap_or("?").to_string(),
                e["Message"].as_str().unwrap_or_default().to_string(),
            )),
            None => Ok(r),
        }
    }

    async fn create(&self) -> Result<Value, (String, String)> {
        self.call(
            "CreateGameServerSession",
            &json!({"FleetId": FLEET, "MaximumPlayerSessionCount": 10, "Name": "bench"}),
        )
        .await
    }
}

/// One CreateGameServerSession as the caller saw it.
struct Outcome {
    latency: Duration,
    /// The error code, if it failed.
    code: Option<String>,
    /// A LimitExceeded while more processes were free than other calls could take.
    spurious: bool,
    message: String,
}

async fn create_once(api: &Api, shared: &Shared, from: Instant) -> Outcome {
    shared.wanting.fetch_add(1, Ordering::Relaxed);
    let r = api.create().await;
    let latency = from.elapsed();
    // Free processes beyond what every other call under way could still take.
    let others = shared.wanting.fetch_sub(1, Ordering::Relaxed) - 1;
    let spare = shared.idle.load(Ordering::Relaxed) > others;
    match r {
        Ok(_) => Outcome {
            latency,
            code: None,
            spurious: false,
            message: String::new(),
        },
        Err((code, message)) => Outcome {
            latency,
            spurious: code == "LimitExceeded" && spare,
            code: Some(code),
            message,
        },
    }
}

/// `n` creates offered at `rate` per second, at most `in_flight` at once; each latency counts
/// from the call's due time.
async fn open_loop(
    api: &Api,
    shared: &Arc<Shared>,
    n: usize,
    rate: f64,
) -> (Vec<Outcome>, Duration) {
    let gate = Arc::new(Semaphore::new(OPEN_LOOP_IN_FLIGHT));
    let start = Instant::now();
    let mut handles = Vec::with_capacity(n);
    for i in 0..n {
        let due = start + Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(due).await;
        let permit = gate.clone().acquire_owned().await.unwrap();
        let (api, shared) = (api.clone(), shared.clone());
        handles.push(tokio::spawn(async move {
            let o = create_once(&api, &shared, due).await;
            drop(permit);
            o
        }));
    }
    let mut out = Vec::with_capacity(n);
    for h in handles {
        out.push(h.await.unwrap());
    }
    (out, start.elapsed())
}

/// `n` creates, `k` in flight, each sent as soon as the one before it on its worker returned.
async fn closed_loop(
    api: &Api,
    shared: &Arc<Shared>,
    n: usize,
    k: usize,
) -> (Vec<Outcome>, Duration) {
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let workers: Vec<_> = (0..k)
        .map(|_| {
            let (api, shared, next) = (api.clone(), shared.clone(), next.clone());
            tokio::spawn(async move {
                let mut out = Vec::new();
                while next.fetch_add(1, Ordering::Relaxed) < n {
                    out.push(create_once(&api, &shared, Instant::now()).await);
                }
                out
            })
        })
        .collect();
    let mut out = Vec::with_capacity(n);
    for w in workers {
        out.extend(w.await.unwrap());
    }
    (out, start.elapsed())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

/// A phase's creates, summed up.
#[derive(Clone, Default)]
struct Summary {
    calls: usize,
    ok: usize,
    per_s: f64,
    p50: Duration,
    p90: Duration,
    p99: Duration,
    max: Duration,
    /// Failures by code, spurious LimitExceeded apart.
    failures: BTreeMap<String, usize>,
    spurious: usize,
    real_limit: usize,
    first_failure: Option<String>,
}

impl Summary {
    fn of(outcomes: &[Outcome], took: Duration) -> Summary {
        let mut lat: Vec<Duration> = outcomes.iter().map(|o| o.latency).collect();
        lat.sort();
        let mut s = Summary {
            calls: outcomes.len(),
            ok: outcomes.iter().filter(|o| o.code.is_none()).count(),
            per_s: outcomes.len() as f64 / took.as_secs_f64().max(1e-9),
            p50: percentile(&lat, 0.50),
            p90: percentile(&lat, 0.90),
            p99: percentile(&lat, 0.99),
            max: lat.last().copied().unwrap_or_default(),
            ..Default::default()
        };
        for o in outcomes {
            let Some(code) = &o.code else { continue };
            if code == "LimitExceeded" {
                if o.spurious {
                    s.spurious += 1;
                } else {
                    s.real_limit += 1;
                }
            } else {
                *s.failures.entry(code.clone()).or_default() += 1;
            }
            if (code != "LimitExceeded" || o.spurious) && s.first_failure.is_none() {
                s.first_failure = Some(format!("{code}: {}", o.message));
            }
        }
        s
    }

    /// Failures other than real lack of capacity.
    fn bad(&self) -> usize {
        self.failures.values().sum::<usize>() + self.spurious
    }

    fn failures_text(&self) -> String {
        let mut parts: Vec<String> = self
            .failures
            .iter()
            .map(|(c, n)| format!("{c} {n}"))
            .collect();
        if self.spurious > 0 {
            parts.push(format!(
                "LimitExceeded with free processes left {}",
                self.spurious
            ));
        }
        if self.real_limit > 0 {
            parts.push(format!(
                "LimitExceeded, capacity exhausted {}",
                self.real_limit
            ));
        }
        if parts.is_empty() {
            "none".into()
        } else {
            let mut t = parts.join(", ");
            if let Some(f) = &self.first_failure {
                t.push_str(&format!(" (first: {f})"));
            }
            t
        }
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} calls, {} ok, {:.0}/s; latency p50 {} ms, p90 {} ms, p99 {} ms, max {} ms; failures: {}",
            self.calls,
            self.ok,
            self.per_s,
            ms(self.p50),
            ms(self.p90),
            ms(self.p99),
            ms(self.max),
            self.failures_text()
        )
    }
}

/// Starts `m` placements evenly over `over`, each polled until it leaves PENDING; returns
/// (client-seen Start → FULFILLED, other endings by status).
async fn placements(
    api: &Api,
    shared: &Arc<Shared>,
    m: usize,
    over: Duration,
    prefix: &str,
) -> (Vec<Duration>, BTreeMap<String, usize>) {
    let start = Instant::now();
    let gate = Arc::new(Semaphore::new(PLACEMENT_IN_FLIGHT));
    let mut handles = Vec::with_capacity(m);
    for i in 0..m {
        let due = start + over.mul_f64(i as f64 / m.max(1) as f64);
        tokio::time::sleep_until(due).await;
        let (api, shared, gate) = (api.clone(), shared.clone(), gate.clone());
        let id = format!("{prefix}-{i}");
        handles.push(tokio::spawn(async move {
            shared.wanting.fetch_add(1, Ordering::Relaxed);
            let r = place(&api, &gate, &id).await;
            shared.wanting.fetch_sub(1, Ordering::Relaxed);
            r
        }));
    }
    let mut fulfilled = Vec::new();
    let mut other = BTreeMap::new();
    for h in handles {
        match h.await.unwrap() {
            Ok(d) => fulfilled.push(d),
            Err(e) => *other.entry(e).or_default() += 1,
        }
    }
    fulfilled.sort();
    (fulfilled, other)
}

/// One placement, started then described every [`PLACEMENT_POLL`] until it leaves PENDING; each
/// call under `gate`.
async fn place(api: &Api, gate: &Semaphore, id: &str) -> Result<Duration, String> {
    let t = Instant::now();
    let permit = gate.acquire().await.unwrap();
    let started = api
        .call(
            "StartGameServerSessionPlacement",
            &json!({
                "PlacementId": id,
                "GameServerSessionQueueName": "bench",
                "MaximumPlayerSessionCount": 2,
                "DesiredPlayerSessions": [{"PlayerId": format!("player-{id}")}],
            }),
        )
        .await;
    drop(permit);
    if let Err((code, _)) = started {
        return Err(format!("start {code}"));
    }
    let deadline = t + Duration::from_secs(60);
    loop {
        tokio::time::sleep(PLACEMENT_POLL).await;
        let permit = gate.acquire().await.unwrap();
        let d = api
            .call(
                "DescribeGameServerSessionPlacement",
                &json!({"PlacementId": id}),
            )
            .await;
        drop(permit);
        match d {
            Ok(v) => match v["GameServerSessionPlacement"]["Status"].as_str() {
                Some("FULFILLED") => return Ok(t.elapsed()),
                Some("PENDING") => {}
                other => return Err(other.unwrap_or("?").to_string()),
            },
            Err((code, _)) => return Err(format!("describe {code}")),
        }
        if Instant::now() > deadline {
            return Err("still PENDING after 60 s".into());
        }
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
    let control = Control::start(&pg.url);
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
        "SELECT count(*) FROM instances WHERE cardinality(busy) > processes OR idle < 0 OR in_flight <> 0",
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
