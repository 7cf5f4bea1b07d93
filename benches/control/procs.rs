//! The processes under test (gse-control, PostgreSQL) and what they cost, read from /proc.

use super::*;

/// A gse-control replica on a temp dir; SIGTERM (then SIGKILL) when dropped.
pub(crate) struct Control {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) child: Option<Child>,
    pub(crate) api: SocketAddr,
    pub(crate) relay: SocketAddr,
    /// Its `/metrics`.
    pub(crate) metrics: SocketAddr,
}

impl Control {
    /// A replica on `database`; with `agents`, it takes only those simulated hosts, each with
    /// its own credential for its own instance of the bench fleet (`agent-tokens-file`).
    pub(crate) fn start(database: &str, agents: Option<usize>) -> Control {
        let dir = tempfile::tempdir().unwrap();
        let mut yaml = format!(
            "database: {database}\napi-listen: 127.0.0.1:0\nrelay-listen: 127.0.0.1:0\nmetrics-listen: 127.0.0.1:0\n"
        );
        if let Some(agents) = agents {
            let tokens = dir.path().join("agent-tokens");
            let lines: String = (0..agents)
                .map(|i| {
                    let instance = format!("ins-{i}");
                    format!("{} {instance} {FLEET}\n", host_token(&instance))
                })
                .collect();
            std::fs::write(&tokens, lines).unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&tokens, std::fs::Permissions::from_mode(0o600)).unwrap();
            yaml.push_str(&format!("agent-tokens-file: {}\n", tokens.display()));
        }
        std::fs::write(dir.path().join("control.yaml"), yaml).unwrap();
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
            metrics: "127.0.0.1:1".parse().unwrap(),
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
        c.metrics = v["metrics"].as_str().unwrap().parse().unwrap();
        c
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// The last lines of its log, and how many lines were warnings or errors.
    pub(crate) fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("control.err")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Log lines at WARN or ERROR, and the first few of them.
    pub(crate) fn warnings(&self) -> (usize, Vec<String>) {
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
pub(crate) fn stat_fields(pid: u32) -> Option<Vec<u64>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    Some(
        rest.split_whitespace()
            .map(|f| f.parse::<u64>().unwrap_or(0))
            .collect(),
    )
}

/// utime+stime, plus the reaped children's when `children`.
pub(crate) fn ticks(pid: u32, children: bool) -> u64 {
    stat_fields(pid)
        .map(|f| f[11] + f[12] + if children { f[13] + f[14] } else { 0 })
        .unwrap_or(0)
}

pub(crate) fn status_kib(pid: u32, field: &str) -> u64 {
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

pub(crate) fn pss_kib(pid: u32) -> u64 {
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
pub(crate) fn pg_pids(postmaster: u32) -> Vec<u32> {
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
pub(crate) struct Cpu {
    pub(crate) control: u64,
    pub(crate) pg: u64,
    pub(crate) bench: u64,
    /// Every CPU's busy ticks (/proc/stat), to tell what other programs took.
    pub(crate) machine: u64,
    pub(crate) at: std::time::Instant,
}

/// Busy ticks of every CPU that processes are charged with: user, nice, system, steal (not
/// irq and softirq time, which is the kernel's, e.g. loopback TCP, and no process's).
pub(crate) fn machine_ticks() -> u64 {
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
    pub(crate) fn now(control: u32, postmaster: u32) -> Cpu {
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
    pub(crate) fn since(&self, before: &Cpu) -> Spent {
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
pub(crate) struct Spent {
    pub(crate) control: f64,
    pub(crate) pg: f64,
    pub(crate) bench: f64,
    /// Other programs on the machine (and the kernel's own threads).
    pub(crate) other: f64,
    pub(crate) wall: f64,
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
pub(crate) struct RssSampler {
    pub(crate) peak: Arc<AtomicU64>,
    pub(crate) stop: Arc<AtomicBool>,
    pub(crate) thread: Option<std::thread::JoinHandle<()>>,
}

impl RssSampler {
    pub(crate) fn start(pid: u32) -> RssSampler {
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
    pub(crate) fn take(&self) -> u64 {
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

pub(crate) fn raise_open_files() -> u64 {
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
pub(crate) fn enable_pg_stat_statements(pg: &postgres::Postgres) {
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
pub(crate) fn log_lock_waits(pg: &postgres::Postgres) {
    pg.query("ALTER SYSTEM SET log_lock_waits = on");
    pg.query("SELECT pg_reload_conf()");
}

/// PostgreSQL's errors and long lock waits during the run, from its server log (the helper
/// writes it beside the data directory), counted by message.
pub(crate) fn print_pg_log(pg: &postgres::Postgres, n: usize) {
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

pub(crate) fn postmaster_pid(pg: &postgres::Postgres) -> u32 {
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
