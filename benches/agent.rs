//! `cargo bench --bench agent [-- sdk|footprint|restart|adopt|…]`: the agent's performance figures,
//! measured on the real binaries. Prints one line per figure; the targets are in the README.
//!
//! - sdk: unary `ReportCustomData` calls (ProcessReady-sized) made by a game process (so caller
//!   verification is paid as in production), many in flight over several HTTP/2 connections;
//!   calls/s and latency percentiles, beside a bare tonic server answering the same rpc to
//!   the same client (the ceiling).
//! - tencent-api: signed DescribeGameServerSessions calls on keep-alive connections.
//! - placement: Start → FULFILLED of placements on free processes.
//! - footprint: agent RSS and CPU while supervising 50 idle game processes.
//! - metrics: the sysinfo sampler's cost per sample of 50 games (CPU time, in this process),
//!   and the agent's CPU with 50 games, with metrics off and with them on and scraped every 5 s.
//! - restart: time from a game's exit to its replacement's start (no backoff pending).
//! - adopt: time from a new agent's start to 50 adopted games health-checked (after SIGKILL).
//! - unpack: `gse-agent unpack` against Info-ZIP `unzip` on a 1 GiB build, and its peak memory.
//! - outbox: events per second durably committed through the outbox writer.
//! - backlog: a 600,000-event outbox drained to a loopback control plane by the real agent.
//! - outage: agent RSS while the control plane is unreachable and events pile up on disk.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use gse_agent::proto::gse_grpc_sdk_service_server::{GseGrpcSdkService, GseGrpcSdkServiceServer};
use gse_agent::proto::{self, GseResponse};
use serde_json::Value;

const AGENT: &str = env!("CARGO_BIN_EXE_gse-agent");
const FAKE_SERVER: &str = env!("CARGO_BIN_EXE_gse-fake-server");

struct Running {
    child: Child,
    dir: tempfile::TempDir,
    sdk: String,
    capi: String,
}

impl Drop for Running {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let _ = self.child.wait();
    }
}

fn start(params: &str, count: u32, extra: &str) -> Running {
    start_in(tempfile::tempdir().unwrap(), params, count, extra)
}

/// Starts the agent on `dir` (which may hold prepared data) with the fake server as the game.
fn start_in(dir: tempfile::TempDir, params: &str, count: u32, extra: &str) -> Running {
    std::fs::create_dir_all(dir.path().join("game")).unwrap();
    std::os::unix::fs::symlink(FAKE_SERVER, dir.path().join("game/server")).unwrap();
    let yaml = format!(
        "fleet-id: fleet-bench
data-dir: data
game-root: game
sdk-listen: 127.0.0.1:0
capi-listen: 127.0.0.1:0
{extra}
runtime-configuration:
  ServerProcesses:
    - LaunchPath: /local/game/server
      Parameters: \"{params}\"
      ConcurrentExecutions: {count}
"
    );
    std::fs::write(dir.path().join("agent.yaml"), yaml).unwrap();
    let (child, sdk, capi) = spawn_agent(dir.path());
    Running {
        child,
        sdk,
        capi,
        dir,
    }
}

/// Starts the agent on `dir`'s agent.yaml; returns it and its SDK and control API addresses.
fn spawn_agent(dir: &std::path::Path) -> (Child, String, String) {
    let endpoints = dir.join("data/endpoints.json");
    let _ = std::fs::remove_file(&endpoints);
    let child = Command::new(AGENT)
        .args(["run", "--config"])
        .arg(dir.join("agent.yaml"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let v: Value = wait("endpoints", || {
        serde_json::from_str(&std::fs::read_to_string(&endpoints).ok()?).ok()
    });
    (
        child,
        v["SdkAddress"].as_str().unwrap().to_string(),
        v["CapiAddress"].as_str().unwrap().to_string(),
    )
}

fn wait<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "timed out: {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn capi(addr: &str, body: &str) -> Value {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "POST /capi HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let body = out.split_once("\r\n\r\n").unwrap().1;
    serde_json::from_str::<Value>(body).unwrap()["Response"].clone()
}

fn ready_pids(r: &Running, n: usize) -> Vec<u64> {
    wait("ready processes", || {
        let v = capi(&r.capi, r#"{"Action":"DescribeServerProcesses"}"#);
        let pids: Vec<u64> = v["ServerProcesses"]
            .as_array()?
            .iter()
            .filter(|p| p["Status"] == "ACTIVE")
            .filter_map(|p| p["Pid"].as_u64())
            .collect();
        (pids.len() >= n).then_some(pids)
    })
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

fn bench_sdk() {
    let r = start("--command-dir commands", 1, "");
    let pid = ready_pids(&r, 1)[0];
    let ceiling = Ceiling::start();
    let port_file = r.dir.path().join(format!("game/commands/{pid}"));
    let port: u16 = wait("the game's command port", || {
        std::fs::read_to_string(&port_file)
            .ok()?
            .trim()
            .parse()
            .ok()
    });
    let mut game =
        std::io::BufReader::new(std::net::TcpStream::connect(("127.0.0.1", port)).unwrap());
    // The agent's SDK port from a dual-stack AF_INET6 socket (`::ffff:127.0.0.1`), as gRPC
    // C-core, Java and .NET games connect: its callers are verified through the other family.
    let dual_stack = format!("[::ffff:127.0.0.1]:{}", r.sdk.rsplit_once(':').unwrap().1);
    for (connections, per_connection) in [(2, 8), (4, 16)] {
        // The same client, in the game process, against each server, in alternating rounds
        // (this machine's speed drifts): medians of five rounds each.
        let (mut bare, mut agent, mut agent6) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..5 {
            bare.push(sdk_load(
                &mut game,
                &ceiling.addr,
                connections,
                per_connection,
            ));
            agent.push(sdk_load(&mut game, &r.sdk, connections, per_connection));
            agent6.push(sdk_load(
                &mut game,
                &dual_stack,
                connections,
                per_connection,
            ));
        }
        let median = |runs: &mut Vec<Value>| {
            runs.sort_by(|a, b| {
                a["calls_per_s"]
                    .as_f64()
                    .unwrap()
                    .total_cmp(&b["calls_per_s"].as_f64().unwrap())
            });
            runs[runs.len() / 2].clone()
        };
        // Paired: each round's agent against the bare server just before it.
        let ratios = |agent: &[Value]| -> (f64, String) {
            let mut ratios: Vec<f64> = agent
                .iter()
                .zip(&bare)
                .map(|(a, b)| {
                    a["calls_per_s"].as_f64().unwrap() / b["calls_per_s"].as_f64().unwrap()
                })
                .collect();
            let per_round: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
            ratios.sort_by(f64::total_cmp);
            (ratios[ratios.len() / 2], per_round.join(" "))
        };
        let ((ratio, per_round), (ratio6, per_round6)) = (ratios(&agent), ratios(&agent6));
        let (agent, agent6, bare) = (median(&mut agent), median(&mut agent6), median(&mut bare));
        println!(
            "sdk: {} in flight: agent (callers verified) AF_INET {:.0} calls/s, p50 {} µs, p99 {} µs | AF_INET6 dual-stack {:.0} calls/s, p50 {} µs, p99 {} µs | bare tonic server {:.0} calls/s, p50 {} µs, p99 {} µs | agent/bare {:.2} and {:.2} (medians of 5 alternating rounds; per round {} and {})",
            connections * per_connection,
            agent["calls_per_s"].as_f64().unwrap(),
            agent["p50_us"],
            agent["p99_us"],
            agent6["calls_per_s"].as_f64().unwrap(),
            agent6["p50_us"],
            agent6["p99_us"],
            bare["calls_per_s"].as_f64().unwrap(),
            bare["p50_us"],
            bare["p99_us"],
            ratio,
            ratio6,
            per_round,
            per_round6,
        );
    }
}

/// Asks the game to run `load` against `target`; returns its figures.
fn sdk_load(
    game: &mut std::io::BufReader<std::net::TcpStream>,
    target: &str,
    connections: usize,
    per_connection: usize,
) -> Value {
    use std::io::{BufRead, Write};
    writeln!(
        game.get_mut(),
        "load {target} {connections} {per_connection} 5"
    )
    .unwrap();
    let mut line = String::new();
    game.read_line(&mut line).unwrap();
    let v: Value = serde_json::from_str(&line).unwrap();
    assert!(v.get("error").is_none(), "{v}");
    v
}

/// A bare tonic server answering the SDK's rpcs with SUCCESS and nothing else: the ceiling
/// of what any server on this machine answers with the same client.
struct Ceiling {
    addr: String,
    _rt: tokio::runtime::Runtime,
}

impl Ceiling {
    fn start() -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        rt.spawn(
            tonic::transport::Server::builder()
                .tcp_nodelay(true)
                .add_service(GseGrpcSdkServiceServer::new(Bare))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        Self { addr, _rt: rt }
    }
}

struct Bare;

fn success() -> Result<tonic::Response<GseResponse>, tonic::Status> {
    Ok(tonic::Response::new(GseResponse {
        status: 0,
        response_data: "SUCCESS".into(),
        error_message: String::new(),
    }))
}

#[tonic::async_trait]
impl GseGrpcSdkService for Bare {
    async fn process_ready(
        &self,
        _: tonic::Request<proto::ProcessReadyRequest>,
    ) -> Result<tonic::Response<GseResponse>, tonic::Status> {
        success()
    }
    async fn activate_game_server_session(
        &self,
        _: tonic::Request<proto::ActivateGameServerSessionRequest>,
    ) -> Result<tonic::Response<GseResponse>, tonic::Status> {
        success()
    }
    async fn accept_player_session(
        &self,
        _: tonic::Request<proto::AcceptPlayerSessionRequest>,
    ) -> Result<tonic::Response<GseResponse>, tonic::Status> {
        success()
    }
    async fn remove_player_session(
        &self,
        _: tonic::Request<proto::RemovePlayerSessionRequest>,
    ) -> Result<tonic::Response<GseResponse>, tonic::Status> {
        success()
    }
    async fn describe_player_sessions(
        &self,
        _: tonic::Request<proto::DescribePlayerSessionsRequest>,
    ) -> Result<tonic::Response<proto::DescribePlayerSessionsResponse>, tonic::Status> {
        Ok(tonic::Response::new(Default::default()))
    }
    async fn update_player_session_creation_policy(
        &self,
        _: tonic::Request<proto::UpdatePlayerSessionCreationPolicyRequest>,
    ) -> Result<tonic::Response<GseResponse>, tonic::Status> {
        success()
    }
    async fn terminate_game_server_session(
        &self,
        _: tonic::Request<proto::TerminateGameServerSessionRequest>,
    ) -> Result<tonic::Response<GseResponse>, tonic::Status> {
        success()
    }
    async fn process_ending(
        &self,
        _: tonic::Request<proto::ProcessEndingRequest>,
    ) -> Result<tonic::Response<GseResponse>, tonic::Status> {
        success()
    }
    async fn report_custom_data(
        &self,
        _: tonic::Request<proto::ReportCustomDataRequest>,
    ) -> Result<tonic::Response<GseResponse>, tonic::Status> {
        success()
    }
}

fn proc_status(pid: u32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    text.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap()
}

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..]
        .split_whitespace()
        .collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

fn bench_footprint() {
    let r = start(
        "",
        50,
        "health-check: { interval: 60s, timeout: 10s, failure-threshold: 3 }",
    );
    ready_pids(&r, 50);
    let pid = r.child.id();
    std::thread::sleep(Duration::from_secs(2));
    let window = Duration::from_secs(20);
    let before = cpu_ticks(pid);
    std::thread::sleep(window);
    let ticks = cpu_ticks(pid) - before;
    let hz = 100.0; // USER_HZ on Linux
    let cpu = ticks as f64 / hz / window.as_secs_f64() * 100.0;
    println!(
        "footprint: 50 idle game processes; agent RSS {} KiB (peak {} KiB); idle CPU {:.2}% of a core over {:?}",
        proc_status(pid, "VmRSS:"),
        proc_status(pid, "VmHWM:"),
        cpu,
        window
    );
}

/// CPU time (user and system) this thread has used.
fn thread_cpu() -> Duration {
    let u = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_THREAD).unwrap();
    let tv = |t: nix::sys::time::TimeVal| {
        Duration::from_secs(t.tv_sec() as u64) + Duration::from_micros(t.tv_usec() as u64)
    };
    tv(u.user_time()) + tv(u.system_time())
}

/// The agent's CPU use in % of a core over `window`, calling `during` every `every`.
fn agent_cpu(r: &Running, window: Duration, every: Duration, mut during: impl FnMut()) -> f64 {
    let pid = r.child.id();
    let before = cpu_ticks(pid);
    let start = Instant::now();
    while start.elapsed() < window {
        during();
        std::thread::sleep(every.min(window.saturating_sub(start.elapsed())));
    }
    let ticks = cpu_ticks(pid) - before;
    ticks as f64 / 100.0 / start.elapsed().as_secs_f64() * 100.0
}

fn bench_metrics() {
    const GAMES: u32 = 50;
    const QUIET: &str = "health-check: { interval: 60s, timeout: 10s, failure-threshold: 3 }";
    let window = Duration::from_secs(30);
    let scrape_every = Duration::from_secs(5);

    // The sampler alone, on the agent's 50 games, in this process.
    let off = start("", GAMES, QUIET);
    let pids: Vec<u32> = ready_pids(&off, GAMES as usize)
        .into_iter()
        .map(|p| p as u32)
        .collect();
    let mut sampler = gse_agent::agent::metrics::Sampler::new();
    assert_eq!(sampler.sample(&pids).len(), pids.len());
    let rounds = 200;
    let (cpu0, wall0) = (thread_cpu(), Instant::now());
    for _ in 0..rounds {
        std::hint::black_box(sampler.sample(&pids));
    }
    let per_sample_cpu = (thread_cpu() - cpu0) / rounds;
    let per_sample_wall = wall0.elapsed() / rounds;
    let period = gse_agent::agent::metrics::SAMPLE_PERIOD;
    println!(
        "metrics: sampler, {GAMES} games: {:?} CPU ({:?} wall) per sample; every {:?}: {:.4}% of a core",
        per_sample_cpu,
        per_sample_wall,
        period,
        per_sample_cpu.as_secs_f64() / period.as_secs_f64() * 100.0
    );
    std::thread::sleep(Duration::from_secs(2));
    let cpu_off = agent_cpu(&off, window, window, || {});
    drop(off);

    // The agent with metrics on, scraped like a (busy) Prometheus would.
    let on = start("", GAMES, &format!("{QUIET}\nmetrics-listen: 127.0.0.1:0"));
    ready_pids(&on, GAMES as usize);
    let endpoints: Value = serde_json::from_str(
        &std::fs::read_to_string(on.dir.path().join("data/endpoints.json")).unwrap(),
    )
    .unwrap();
    let addr = endpoints["MetricsAddress"].as_str().unwrap().to_string();
    let scrape = || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        write!(
            s,
            "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        out
    };
    // Wait for a first sample of every game.
    wait("a sample of every game", || {
        (scrape()
            .matches("gse_agent_process_resident_memory_bytes{")
            .count()
            >= GAMES as usize)
            .then_some(())
    });
    let mut bytes = 0;
    let cpu_on = agent_cpu(&on, window, scrape_every, || bytes = scrape().len());
    println!(
        "metrics: agent with {GAMES} idle games over {window:?}: {cpu_off:.2}% of a core with metrics off, \
         {cpu_on:.2}% with metrics on (sampled every {period:?}, scraped every {scrape_every:?}, {bytes} bytes a scrape)"
    );
}

fn bench_restart() {
    let stamps_dir = tempfile::tempdir().unwrap();
    let stamps = stamps_dir.path().join("stamps");
    let params = format!(
        "--crash-at before-ready --crash-with exit:1 --stamp {}",
        stamps.display()
    );
    let extra = "restart: { initial-backoff: 1s, max-backoff: 1s, reset-after: 0s, crash-loop-max: 100000, crash-loop-window: 1s, crash-loop-cool-down: 1s }";
    let _r = start(&params, 1, extra);
    let samples = 300;
    let lines = wait("restart samples", || {
        let text = std::fs::read_to_string(&stamps).ok()?;
        let lines: Vec<(String, u128)> = text
            .lines()
            .filter_map(|l| {
                let (k, v) = l.split_once(' ')?;
                Some((k.to_string(), v.parse().ok()?))
            })
            .collect();
        (lines.len() > samples * 2 + 2).then_some(lines)
    });
    let mut gaps: Vec<Duration> = lines
        .windows(2)
        .filter(|w| w[0].0 == "exit" && w[1].0 == "start")
        .map(|w| Duration::from_nanos((w[1].1.saturating_sub(w[0].1)) as u64))
        .collect();
    gaps.sort();
    println!(
        "restart: exit → replacement start over {} restarts: p50 {:?} p99 {:?} max {:?} (includes the new process's own start-up to main)",
        gaps.len(),
        percentile(&gaps, 0.50),
        percentile(&gaps, 0.99),
        gaps.last().unwrap()
    );
}

/// SIGKILL of the agent with 50 ready games, then a new agent on the same data: time from its
/// start to every game adopted and health-checked once (the health interval is a minute, so
/// each check counted is the one made at adoption).
fn bench_adopt() {
    let mut r = start(
        "",
        50,
        "health-check: { interval: 60s, timeout: 10s, failure-threshold: 3 }",
    );
    let mut pids = ready_pids(&r, 50);
    pids.sort();
    let mut samples = Vec::new();
    let passed = |r: &Running| -> Option<std::collections::BTreeMap<u64, u64>> {
        let v = capi(&r.capi, r#"{"Action":"DescribeServerProcesses"}"#);
        v["ServerProcesses"]
            .as_array()?
            .iter()
            .map(|p| Some((p["Pid"].as_u64()?, p["HealthChecksPassed"].as_u64()?)))
            .collect()
    };
    for _ in 0..5 {
        // Let the last change reach the disk; a SIGKILL loses at most the last commit.
        std::thread::sleep(Duration::from_millis(500));
        let before = passed(&r).unwrap();
        r.child.kill().unwrap();
        r.child.wait().unwrap();
        let t0 = Instant::now();
        let (child, sdk, capi_addr) = spawn_agent(r.dir.path());
        (r.child, r.sdk, r.capi) = (child, sdk, capi_addr);
        let after = wait("adopted and health-checked", || {
            let now = passed(&r)?;
            (now.len() == 50
                && now
                    .iter()
                    .all(|(pid, n)| before.get(pid).is_some_and(|b| n > b)))
            .then_some(now)
        });
        samples.push(t0.elapsed());
        assert_eq!(
            after.keys().copied().collect::<Vec<_>>(),
            pids,
            "the same 50 games"
        );
    }
    samples.sort();
    println!(
        "adopt: agent start → 50 adopted games health-checked, {} restarts after SIGKILL: p50 {:?} max {:?}",
        samples.len(),
        percentile(&samples, 0.5),
        samples.last().unwrap()
    );
}

/// A 1 GiB build of many files, half incompressible (textures), half text-like; cached under
/// target/ between runs.
fn bench_build() -> std::path::PathBuf {
    use std::io::Write;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-data");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("build-1g.zip");
    if path.exists() {
        return path;
    }
    let tmp = dir.join("build-1g.zip.tmp");
    let mut w = zip::ZipWriter::new(std::io::BufWriter::new(
        std::fs::File::create(&tmp).unwrap(),
    ));
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .unix_permissions(0o644);
    let mut seed: u64 = 0x9e3779b97f4a7c15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let file_size = 512 * 1024;
    for i in 0..2048 {
        w.start_file(format!("assets/dir{:02}/file{i:05}.bin", i % 64), opts)
            .unwrap();
        let mut buf = Vec::with_capacity(file_size);
        if i % 2 == 0 {
            while buf.len() < file_size {
                buf.extend_from_slice(&next().to_le_bytes());
            }
        } else {
            while buf.len() < file_size {
                buf.extend_from_slice(
                    format!(
                        "level {} spawn {} {} {}\n",
                        i,
                        next() % 1000,
                        next() % 1000,
                        next() % 100
                    )
                    .as_bytes(),
                );
            }
        }
        buf.truncate(file_size);
        w.write_all(&buf).unwrap();
    }
    w.finish().unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    path
}

/// Runs `cmd`, returning its wall time and peak RSS (KiB, sampled from /proc).
fn timed(mut cmd: Command) -> (Duration, u64) {
    let t = Instant::now();
    let mut child = cmd.stdout(Stdio::null()).spawn().unwrap();
    let pid = child.id();
    let mut peak = 0;
    loop {
        if let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/status"))
            && let Some(v) = text
                .lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        {
            peak = v;
        }
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "{cmd:?} failed");
            return (t.elapsed(), peak);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn bench_unpack() {
    let zip = bench_build();
    let out = tempfile::tempdir_in(zip.parent().unwrap()).unwrap();
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    let mut peak = 0;
    for round in 0..3 {
        let a = out.path().join(format!("unzip-{round}"));
        let b = out.path().join(format!("agent-{round}"));
        let mut unzip = Command::new("unzip");
        unzip.arg("-q").arg(&zip).arg("-d").arg(&a);
        let mut agent = Command::new(AGENT);
        agent.arg("unpack").arg(&zip).arg(&b);
        // Alternate the order so neither always meets a warmer cache.
        let (t_u, t_a) = if round % 2 == 0 {
            let u = timed(unzip).0;
            let (t, p) = timed(agent);
            peak = peak.max(p);
            (u, t)
        } else {
            let (t, p) = timed(agent);
            peak = peak.max(p);
            (timed(unzip).0, t)
        };
        theirs.push(t_u);
        ours.push(t_a);
        std::fs::remove_dir_all(&a).unwrap();
        std::fs::remove_dir_all(&b).unwrap();
    }
    ours.sort();
    theirs.sort();
    let (o, u) = (ours[1], theirs[1]);
    println!(
        "unpack: 1 GiB / 2048 files: gse-agent {:?}, Info-ZIP unzip {:?} (medians of 3): {:.2}x unzip's speed; peak RSS {} KiB",
        o,
        u,
        u.as_secs_f64() / o.as_secs_f64(),
        peak
    );
    // Many entries: the central directory itself is what costs memory.
    let many = zip.with_file_name("build-200k-entries.zip");
    if !many.exists() {
        use std::io::Write;
        let tmp = many.with_extension("tmp");
        let mut w = zip::ZipWriter::new(std::io::BufWriter::new(
            std::fs::File::create(&tmp).unwrap(),
        ));
        let opts = zip::write::SimpleFileOptions::default();
        for i in 0..200_000 {
            w.start_file(format!("assets/d{:03}/file{i:06}.txt", i % 500), opts)
                .unwrap();
            write!(w, "entry {i}").unwrap();
        }
        w.finish().unwrap();
        std::fs::rename(&tmp, &many).unwrap();
    }
    let b = out.path().join("many");
    let mut agent = Command::new(AGENT);
    agent.arg("unpack").arg(&many).arg(&b);
    let (t, peak) = timed(agent);
    println!("unpack: 200,000 entries (the default limit): gse-agent {t:?}, peak RSS {peak} KiB");
}

/// Events per second written through the outbox writer (group commit, durable).
fn bench_outbox() {
    use gse_agent::agent::event::{Event, EventBus, EventCode};
    use gse_agent::agent::upstream::outbox::Outbox;
    let dir = tempfile::tempdir().unwrap();
    let outbox = Outbox::open(&dir.path().join("outbox.redb"), u64::MAX).unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let bus = EventBus::with_sink(1000, tx);
    let writer = outbox.clone().spawn_writer(rx, bus.without_sink());
    let n = 200_000u64;
    let committed = outbox.committed();
    let t = Instant::now();
    for i in 0..n {
        let mut e = Event::new(
            EventCode::PlayerSessionReserved,
            format!("player {i} reserved"),
        );
        e.player_session_id = Some(format!("psess-{i:08}"));
        e.game_server_session_id =
            Some("qcs::gse:local::gameserversession/fleet-bench/gssess-1".into());
        bus.emit(e);
    }
    while *committed.borrow() < n {
        std::thread::sleep(Duration::from_millis(1));
    }
    let elapsed = t.elapsed();
    drop(bus);
    writer.join().unwrap();
    println!(
        "outbox: {n} events emitted and durably committed in {elapsed:?}: {:.0} events/s",
        n as f64 / elapsed.as_secs_f64()
    );
}

/// A 10-minute outage at 1,000 events/s (600,000 events in the outbox) drained to a loopback
/// control plane by the real agent.
fn bench_backlog() {
    use gse_agent::agent::event::{Event, EventCode};
    use gse_agent::agent::upstream::outbox::Outbox;
    use gse_agent::upstream_proto as up;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use up::control_plane_server::{ControlPlane, ControlPlaneServer};

    #[derive(Clone)]
    struct Acker(Arc<AtomicU64>);
    type Out = std::pin::Pin<
        Box<dyn tokio_stream::Stream<Item = Result<up::ControlMessage, tonic::Status>> + Send>,
    >;
    #[tonic::async_trait]
    impl ControlPlane for Acker {
        type RelayStream = Out;
        async fn relay(
            &self,
            req: tonic::Request<tonic::Streaming<up::AgentMessage>>,
        ) -> Result<tonic::Response<Out>, tonic::Status> {
            let mut inbound = req.into_inner();
            let (tx, rx) = tokio::sync::mpsc::channel(64);
            let seen = self.0.clone();
            tokio::spawn(async move {
                let mut since_ack = 0;
                while let Ok(Some(m)) = inbound.message().await {
                    if let Some(up::agent_message::Body::Event(e)) = m.body {
                        seen.store(e.sequence, Ordering::Relaxed);
                        since_ack += 1;
                        // Cumulative acks, as a control plane batches them.
                        if since_ack == 1000 {
                            since_ack = 0;
                            let ack = up::ControlMessage {
                                body: Some(up::control_message::Body::Ack(up::Ack {
                                    sequence: e.sequence,
                                })),
                            };
                            if tx.send(Ok(ack)).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
            Ok(tonic::Response::new(Box::pin(
                tokio_stream::wrappers::ReceiverStream::new(rx),
            )))
        }
    }

    let backlog = 600_000u64;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    {
        let outbox = Outbox::open(&dir.path().join("data/outbox.redb"), u64::MAX).unwrap();
        let batch: Vec<Event> = (0..1000)
            .map(|i| {
                Event::new(
                    EventCode::PlayerSessionCompleted,
                    format!("player {i} completed"),
                )
            })
            .collect();
        for _ in 0..backlog / 1000 {
            outbox.append(&batch).unwrap();
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(AtomicU64::new(0));
    let svc = ControlPlaneServer::new(Acker(seen.clone()));
    rt.spawn(async move {
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
    });
    let t = Instant::now();
    let agent = start_in(
        dir,
        "",
        1,
        &format!("upstream: {{ endpoint: \"http://{addr}\" }}"),
    );
    let pid = agent.child.id();
    let mut peak = 0;
    while seen.load(Ordering::Relaxed) < backlog {
        peak = peak.max(proc_status(pid, "VmRSS:"));
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "backlog did not drain"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let elapsed = t.elapsed();
    drop(agent);
    println!(
        "backlog: {backlog} events (10 min at 1,000/s) drained to a loopback control plane in {elapsed:?} (agent start included); agent RSS peak {peak} KiB while draining"
    );
}

/// An outage: the control plane is unreachable while the agent emits ~2,000 events/s (players
/// reserved and timing out); agent RSS is sampled each second. Default 60 s;
/// GSE_BENCH_OUTAGE_SECS=600 for the full ten minutes.
fn bench_outage() {
    let secs: u64 = std::env::var("GSE_BENCH_OUTAGE_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    let r = start(
        "",
        1,
        "timeouts: { player-reservation: 1s }\nupstream: { endpoint: \"http://127.0.0.1:1\", reconnect-max: 5s }",
    );
    ready_pids(&r, 1);
    let created = capi(
        &r.capi,
        r#"{"Action":"CreateGameServerSession","FleetId":"fleet-bench","MaximumPlayerSessionCount":2147483647}"#,
    );
    let id = created["GameServerSession"]["GameServerSessionId"]
        .as_str()
        .unwrap()
        .to_string();
    wait("session active", || {
        let v = capi(
            &r.capi,
            &format!(r#"{{"Action":"DescribeGameServerSessions","GameServerSessionId":"{id}"}}"#),
        );
        (v["GameServerSessions"][0]["Status"] == "ACTIVE").then_some(())
    });
    let pid = r.child.id();
    let mut samples = Vec::new();
    let start = Instant::now();
    let mut joined = 0u64;
    let mut next_sample = Instant::now();
    while start.elapsed() < Duration::from_secs(secs) {
        let ids: Vec<String> = (0..25).map(|i| format!("\"p{joined}-{i}\"")).collect();
        let body = format!(
            r#"{{"Action":"JoinGameServerSessionBatch","GameServerSessionId":"{id}","PlayerIds":[{}]}}"#,
            ids.join(",")
        );
        capi(&r.capi, &body);
        joined += 1;
        if Instant::now() >= next_sample {
            samples.push(proc_status(pid, "VmRSS:"));
            next_sample += Duration::from_secs(1);
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    let outbox = std::fs::metadata(r.dir.path().join("data/outbox.redb"))
        .map(|m| m.len())
        .unwrap_or(0);
    let third = samples.len() / 3;
    let early: u64 = samples[..third.max(1)].iter().sum::<u64>() / third.max(1) as u64;
    let late: u64 =
        samples[samples.len() - third.max(1)..].iter().sum::<u64>() / third.max(1) as u64;
    println!(
        "outage: {secs} s unreachable control plane, {} players joined (~{} events/s); agent RSS first third {early} KiB, last third {late} KiB, max {} KiB; outbox {:.1} MiB on disk",
        joined * 25,
        joined * 25 * 2 / secs,
        samples.iter().max().unwrap(),
        outbox as f64 / 1048576.0
    );
}

/// Signed Tencent Cloud API calls (DescribeGameServerSessions, TC3-HMAC-SHA256, as the SDKs
/// send them) on keep-alive connections, 8 in flight; calls/s and latency.
fn bench_tencent_api() {
    let dir = tempfile::tempdir().unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        let keys = dir.path().join("keys");
        // The same calls signed by a key without a policy and by one with a CAM policy (two
        // statements, wildcards, a deny), to price the policy check.
        let policy = r#"{"version":"2.0","statement":[{"effect":"allow","action":["gse:Describe*","gse:Create*"],"resource":["qcs::gse::uin/:fleet/fleet-b*"]},{"effect":"deny","action":"gse:Delete*","resource":"*"}]}"#;
        std::fs::write(
            &keys,
            format!("AKIDbench bench-secret\nAKIDpolicy policy-secret {policy}\n"),
        )
        .unwrap();
        std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let r = start_in(dir, "", 2, "capi-keys-file: keys");
    ready_pids_signed(&r);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (mut plain, mut policed) = (Vec::new(), Vec::new());
    // Alternating rounds (this machine's speed drifts): medians of three each.
    for _ in 0..3 {
        plain.push(signed_load(&rt, &r.capi, "AKIDbench", "bench-secret"));
        policed.push(signed_load(&rt, &r.capi, "AKIDpolicy", "policy-secret"));
    }
    let median = |v: &mut Vec<(f64, Duration, Duration)>| {
        v.sort_by(|a, b| a.0.total_cmp(&b.0));
        v[v.len() / 2]
    };
    let (p, q) = (median(&mut plain), median(&mut policed));
    println!(
        "tencent-api: signed DescribeGameServerSessions, 8 in flight on keep-alive connections: key without a policy {:.0} calls/s, p50 {:?} p99 {:?} | key with a CAM policy {:.0} calls/s, p50 {:?} p99 {:?} | policy/none {:.3} (medians of 3 alternating rounds)",
        p.0,
        p.1,
        p.2,
        q.0,
        q.1,
        q.2,
        q.0 / p.0,
    );
}

/// Five seconds of signed DescribeGameServerSessions as `id`, 8 in flight: calls/s, p50, p99.
fn signed_load(
    rt: &tokio::runtime::Runtime,
    host: &str,
    id: &'static str,
    secret: &'static str,
) -> (f64, Duration, Duration) {
    let host = host.to_string();
    let body = r#"{"FleetId":"fleet-bench","Limit":100}"#;
    let run_for = Duration::from_secs(5);
    let (mut latencies, elapsed) = rt.block_on(async {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(8)
            .build()
            .unwrap();
        let start = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let client = client.clone();
            let host = host.clone();
            tasks.push(tokio::spawn(async move {
                let mut lat = Vec::with_capacity(100_000);
                while start.elapsed() < run_for {
                    let headers = gse_agent::api::tc3::signed_headers(
                        id,
                        secret,
                        &host,
                        "DescribeGameServerSessions",
                        body.as_bytes(),
                        gse_agent::api::tc3::now_unix(),
                    );
                    let t = Instant::now();
                    let mut request = client.post(format!("http://{host}/"));
                    for (name, value) in headers {
                        request = request.header(name, value);
                    }
                    let resp = request
                        .body(body)
                        .send()
                        .await
                        .unwrap()
                        .bytes()
                        .await
                        .unwrap();
                    lat.push(t.elapsed());
                    assert!(!resp.windows(7).any(|w| w == b"\"Error\""), "{resp:?}");
                }
                lat
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        (all, start.elapsed())
    });
    latencies.sort();
    (
        latencies.len() as f64 / elapsed.as_secs_f64(),
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
    )
}

/// Waits for the fleet's processes with signed DescribeServerProcesses calls.
fn ready_pids_signed(r: &Running) {
    wait("ready processes (signed)", || {
        let body = r#"{"Action":"DescribeServerProcesses"}"#;
        let headers: String = gse_agent::api::tc3::signed_headers(
            "AKIDbench",
            "bench-secret",
            &r.capi,
            "DescribeServerProcesses",
            body.as_bytes(),
            gse_agent::api::tc3::now_unix(),
        )
        .iter()
        .map(|(name, value)| format!("{name}: {value}\r\n"))
        .collect();
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(&r.capi).ok()?;
        write!(
            s,
            "POST / HTTP/1.1\r\nHost: {}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            r.capi,
            body.len()
        )
        .ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        (out.matches("\"ACTIVE\"").count() >= 2).then_some(())
    });
}

/// Start → FULFILLED of placements on a queue whose destination is this host, each on a free
/// process (40 processes, 40 placements, one at a time), polled through Describe; the game's
/// own activation (the fake server activates at once) is included.
fn bench_placement() {
    let r = start("", 40, "");
    ready_pids(&r, 40);
    let queue = capi(
        &r.capi,
        r#"{"Action":"CreateGameServerSessionQueue","Name":"bench","Destinations":[{"DestinationArn":"qcs::gse:local:uin/0:fleet/fleet-bench"}]}"#,
    );
    assert!(queue.get("Error").is_none(), "{queue}");
    let mut samples = Vec::new();
    for n in 0..40 {
        let t = Instant::now();
        let started = capi(
            &r.capi,
            &format!(
                r#"{{"Action":"StartGameServerSessionPlacement","PlacementId":"p{n}","GameServerSessionQueueName":"bench","MaximumPlayerSessionCount":2,"DesiredPlayerSessions":[{{"PlayerId":"a"}}]}}"#
            ),
        );
        assert!(started.get("Error").is_none(), "{started}");
        loop {
            let d = capi(
                &r.capi,
                &format!(
                    r#"{{"Action":"DescribeGameServerSessionPlacement","PlacementId":"p{n}"}}"#
                ),
            );
            match d["GameServerSessionPlacement"]["Status"].as_str() {
                Some("FULFILLED") => break,
                Some("PENDING") => {}
                other => panic!("placement {n}: {other:?}: {d}"),
            }
        }
        samples.push(t.elapsed());
    }
    samples.sort();
    println!(
        "placement: Start → FULFILLED on a free process over {} placements: p50 {:?} p99 {:?} max {:?} (the game's activation included)",
        samples.len(),
        percentile(&samples, 0.50),
        percentile(&samples, 0.99),
        samples.last().unwrap()
    );
}

/// Every figure, by the name that selects it on the command line.
const BENCHES: &[(&str, fn())] = &[
    ("sdk", bench_sdk),
    ("tencent-api", bench_tencent_api),
    ("placement", bench_placement),
    ("restart", bench_restart),
    ("adopt", bench_adopt),
    ("footprint", bench_footprint),
    ("metrics", bench_metrics),
    ("unpack", bench_unpack),
    ("outbox", bench_outbox),
    ("backlog", bench_backlog),
    ("outage", bench_outage),
];

fn main() {
    let which: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    for (name, bench) in BENCHES {
        if which.is_empty() || which.iter().any(|w| w == name) {
            bench();
        }
    }
}
