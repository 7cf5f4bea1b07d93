//! Fixtures: the real `gse-agent` binary on a temp dir, driving `gse-fake-server`, observed
//! through the control API. Every wait polls with a deadline; nothing uses a fixed port.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub mod control;
pub mod control_plane;
pub mod examples;
pub mod node;
pub mod postgres;
pub mod tencent;

/// Generous: the machine may be loaded; a passing test never waits this long.
pub const DEADLINE: Duration = Duration::from_secs(30);

pub const AGENT: &str = env!("CARGO_BIN_EXE_gse-agent");
pub const FAKE_SERVER: &str = env!("CARGO_BIN_EXE_gse-fake-server");

/// `target/tmp/<name>`, made once by `make` (under a lock shared by concurrent tests) and
/// reused by later tests and runs while the `.installed` marker `make`'s success leaves in it
/// exists; an unfinished attempt is started over.
pub fn cached_dir(name: &str, make: impl FnOnce(&std::path::Path)) -> PathBuf {
    let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let dir = root.join(name);
    let ready = dir.join(".installed");
    std::fs::create_dir_all(&root).unwrap();
    let lock = std::fs::File::create(root.join(format!("{name}.lock"))).unwrap();
    let _held = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .unwrap_or_else(|e| panic!("lock {}: {e}", dir.display()));
    if ready.exists() {
        return dir;
    }
    let _ = std::fs::remove_dir_all(&dir);
    make(&dir);
    std::fs::write(&ready, "").unwrap();
    dir
}

/// Writes a secret (a token file) as it must be kept: mode 600.
pub fn write_secret(path: &std::path::Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// Polls `f` until it returns `Some`, or panics with `what` after [`DEADLINE`].
pub fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Settings with millisecond timings; tests override pieces with YAML.
pub fn config(server_processes: &str, extra: &str) -> String {
    format!(
        "fleet-id: fleet-test
instance-id: ins-test
data-dir: data
game-root: game
sdk-listen: 127.0.0.1:0
capi-listen: 127.0.0.1:0
{extra}
runtime-configuration:
  ServerProcesses:
{server_processes}
"
    )
}

/// One ServerProcesses entry running the fake server with `params`.
pub fn entry(params: &str, count: u32) -> String {
    format!(
        "    - LaunchPath: /local/game/server\n      Parameters: \"{params}\"\n      ConcurrentExecutions: {count}\n"
    )
}

/// `gse-fake-server` flag: the game makes SDK calls on request ([`Agent::game`]); the port
/// file goes to `commands/` under the game root (the game's working directory).
pub const COMMANDS: &str = "--command-dir commands";

/// SDK calls made by a game process itself, on request (see the fake server's `commands`).
pub struct GameCommands(std::io::BufReader<TcpStream>);

impl GameCommands {
    /// Sends one command line; returns the game's JSON answer.
    pub fn call(&mut self, command: &str) -> Value {
        use std::io::BufRead;
        let s = self.0.get_mut();
        s.write_all(format!("{command}\n").as_bytes()).unwrap();
        let mut line = String::new();
        self.0.read_line(&mut line).expect("the game answers");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"))
    }
}

pub struct Agent {
    pub dir: tempfile::TempDir,
    pub child: Option<Child>,
    pub capi: SocketAddr,
    pub sdk: SocketAddr,
    /// The key the helper signs control API calls with (an agent with `capi-keys-file`).
    pub signing: Option<(String, String)>,
}

impl Agent {
    /// Writes `yaml` as agent.yaml, links the fake server into the game root and starts the
    /// agent; returns once its endpoints are known.
    pub fn start(yaml: &str) -> Agent {
        Self::start_with(yaml, |_| {})
    }

    /// Like [`Agent::start`], after `prepare` has set up the game root.
    pub fn start_with(yaml: &str, prepare: impl FnOnce(&std::path::Path)) -> Agent {
        let mut agent = Self::prepared(yaml, prepare);
        agent.spawn();
        agent
    }

    /// The directory of [`Agent::start_with`], with no agent started yet (for a test that
    /// starts it its own way and hands it to [`Agent::attach`]).
    pub fn prepared(yaml: &str, prepare: impl FnOnce(&std::path::Path)) -> Agent {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("game")).unwrap();
        std::os::unix::fs::symlink(FAKE_SERVER, dir.path().join("game/server")).unwrap();
        prepare(&dir.path().join("game"));
        std::fs::write(dir.path().join("agent.yaml"), yaml).unwrap();
        Agent {
            dir,
            child: None,
            capi: "127.0.0.1:1".parse().unwrap(),
            sdk: "127.0.0.1:1".parse().unwrap(),
            signing: None,
        }
    }

    /// Starts the agent binary `exe` on this agent's directory (a restart keeps `data/`);
    /// returns once its new endpoints are written.
    pub fn spawn_exe(&mut self, exe: &std::path::Path) {
        assert!(self.child.is_none(), "the agent is still running");
        let _ = std::fs::remove_file(self.path("data/endpoints.json"));
        let log = |name: &str| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.path(name))
                .unwrap()
        };
        let child = Command::new(exe)
            .args(["run", "--config"])
            .arg(self.path("agent.yaml"))
            .env("RUST_LOG", "info")
            .stdout(log("agent.out"))
            .stderr(log("agent.err"))
            .stdin(Stdio::null())
            .spawn()
            .expect("start gse-agent");
        self.attach(child);
    }

    /// Supervises `child`, an agent started on this directory; returns once its endpoints are
    /// written.
    pub fn attach(&mut self, child: Child) {
        self.child = Some(child);
        let endpoints = self.path("data/endpoints.json");
        let v: Value = wait_for("endpoints.json", || {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("agent exited early ({status}): {}", self.stderr());
            }
            serde_json::from_str(&std::fs::read_to_string(&endpoints).ok()?).ok()
        });
        self.capi = v["CapiAddress"].as_str().unwrap().parse().unwrap();
        self.sdk = v["SdkAddress"].as_str().unwrap().parse().unwrap();
    }

    /// Starts the agent (again) on this agent's directory.
    pub fn spawn(&mut self) {
        self.spawn_exe(std::path::Path::new(AGENT));
    }

    /// SIGKILLs the agent and reaps it; its game processes are left to themselves.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("the agent runs");
        let _ = child.kill();
        let _ = child.wait();
    }

    /// The command port of game `pid`, started with [`COMMANDS`].
    pub fn game(&self, pid: u32) -> GameCommands {
        let file = self.path(&format!("game/commands/{pid}"));
        let port: u16 = wait_for("the game's command port", || {
            std::fs::read_to_string(&file).ok()?.trim().parse().ok()
        });
        let s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the game");
        s.set_read_timeout(Some(DEADLINE)).unwrap();
        GameCommands(std::io::BufReader::new(s))
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.path("agent.err")).unwrap_or_default()
    }

    /// One control API call; returns `Response`.
    pub fn capi(&self, body: Value) -> Value {
        self.capi_raw(&body.to_string())
    }

    /// One control API call with a raw body (signed, as the Tencent Cloud API form, when the
    /// agent requires signatures).
    pub fn capi_raw(&self, body: &str) -> Value {
        let Some((id, key)) = &self.signing else {
            return capi_raw_at(self.capi, body);
        };
        let action = serde_json::from_str::<Value>(body)
            .ok()
            .and_then(|v| v.get("Action").and_then(Value::as_str).map(str::to_string));
        signed_request(
            self.capi,
            id,
            key,
            &action.unwrap_or_default(),
            body,
            gse_agent::api::tc3::now_unix(),
        )
    }

    /// A control call that must succeed.
    pub fn ok(&self, body: Value) -> Value {
        let r = self.capi(body.clone());
        assert!(r.get("Error").is_none(), "{body} failed: {r}");
        r
    }

    /// A control call that must fail with `code`; returns the message.
    pub fn err(&self, body: Value, code: &str) -> String {
        let r = self.capi(body.clone());
        assert_eq!(r["Error"]["Code"], code, "{body}: {r}");
        r["Error"]["Message"].as_str().unwrap().to_string()
    }

    /// Every event the agent holds, oldest first.
    pub fn events(&self) -> Vec<Value> {
        let mut all = Vec::new();
        loop {
            let r = self
                .ok(json!({"Action": "DescribeAgentEvents", "Limit": 1000, "Offset": all.len()}));
            let page = r["Events"].as_array().unwrap();
            all.extend(page.iter().cloned());
            if page.is_empty() || all.len() as u64 >= r["TotalCount"].as_u64().unwrap() {
                return all;
            }
        }
    }

    pub fn count(&self, code: &str) -> usize {
        self.events()
            .iter()
            .filter(|e| e["EventCode"] == code)
            .count()
    }

    /// Waits for the first event with `code` and returns it.
    pub fn wait_event(&self, code: &str) -> Value {
        self.wait_events(code, 1).remove(0)
    }

    /// Waits until `n` events with `code` happened; returns them.
    pub fn wait_events(&self, code: &str, n: usize) -> Vec<Value> {
        wait_for(&format!("{n} × {code} (agent log: see below)"), || {
            let hits: Vec<Value> = self
                .events()
                .into_iter()
                .filter(|e| e["EventCode"] == code)
                .collect();
            (hits.len() >= n).then_some(hits)
        })
    }

    pub fn processes(&self) -> Vec<Value> {
        self.ok(json!({"Action": "DescribeServerProcesses"}))["ServerProcesses"]
            .as_array()
            .unwrap()
            .clone()
    }

    /// Waits until `n` processes are ACTIVE and healthy.
    pub fn wait_ready(&self, n: usize) -> Vec<Value> {
        wait_for(&format!("{n} ready processes"), || {
            let ready: Vec<Value> = self
                .processes()
                .into_iter()
                .filter(|p| p["Status"] == "ACTIVE" && p["Healthy"] == true)
                .collect();
            (ready.len() >= n).then_some(ready)
        })
    }

    /// Waits until `n` processes are ready and each got the answer to its ProcessReady, which
    /// the agent sends once the change is saved: only from then on does killing the agent
    /// leave a game that knows it is ready (the fake server exits when ProcessReady fails).
    pub fn wait_ready_answered(&self, n: usize) -> Vec<Value> {
        let ready = self.wait_ready(n);
        for p in &ready {
            wait_for("ProcessReady answered", || {
                self.game_said(p, "ready: clientPort").then_some(())
            });
        }
        ready
    }

    /// Whether the game `process` (a DescribeServerProcesses entry) wrote `text` to stdout.
    pub fn game_said(&self, process: &Value, text: &str) -> bool {
        let log = self.path(&format!(
            "data/logs/{}.stdout.log",
            process["ProcessId"].as_str().unwrap()
        ));
        std::fs::read_to_string(log).is_ok_and(|t| t.contains(text))
    }

    /// Creates a session and returns it.
    pub fn create_session(&self, max_players: u32) -> Value {
        self.ok(json!({
            "Action": "CreateGameServerSession",
            "FleetId": "fleet-test",
            "MaximumPlayerSessionCount": max_players,
        }))["GameServerSession"]
            .clone()
    }

    pub fn session(&self, id: &str) -> Value {
        self.ok(json!({"Action": "DescribeGameServerSessions", "GameServerSessionId": id}))
            ["GameServerSessions"][0]
            .clone()
    }

    pub fn wait_session_status(&self, id: &str, status: &str) -> Value {
        wait_for(&format!("session {status}"), || {
            let s = self.session(id);
            (s["Status"] == status).then_some(s)
        })
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        let pid = self.child.as_ref().unwrap().id() as i32;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig).unwrap();
    }

    /// Waits for the agent to exit.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let child = self.child.as_mut().unwrap();
        let status = wait_for("agent exit", || child.try_wait().unwrap());
        self.child = None;
        status
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(10) {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        // An agent SIGKILLed on purpose leaves its games for the next one to adopt; a test
        // that does not start one must not leave them running on the machine.
        kill_games_under(self.dir.path());
        if std::thread::panicking() {
            eprintln!("---- agent log ----\n{}", self.stderr());
        }
    }
}

/// SIGKILLs the process group of every game whose `GSE_GAME_ROOT` lies under `dir`.
pub fn kill_games_under(dir: &std::path::Path) {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return;
    };
    let prefix = format!("GSE_GAME_ROOT={}", dir.display());
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(environ) = std::fs::read(p.path().join("environ")) else {
            continue;
        };
        let ours = environ
            .split(|b| *b == 0)
            .any(|var| var.starts_with(prefix.as_bytes()));
        if ours {
            let pid = nix::unistd::Pid::from_raw(pid);
            let _ = nix::sys::signal::killpg(pid, nix::sys::signal::Signal::SIGKILL);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        }
    }
}

/// Whether any process of the group `pgid` still runs (zombies awaiting init do not count).
pub fn group_running(pgid: u32) -> bool {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return false;
    };
    dir.filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|name| std::fs::read_to_string(format!("/proc/{name}/stat")).ok())
        .any(|stat| {
            let Some(close) = stat.rfind(')') else {
                return false;
            };
            let fields: Vec<&str> = stat[close + 2..].split_whitespace().collect();
            fields.get(2) == Some(&pgid.to_string().as_str()) && fields.first() != Some(&"Z")
        })
}

/// Pids whose parent is `pid`.
pub fn children_of(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().into_string().ok()?.parse::<u32>().ok())
        .filter(|child| {
            std::fs::read_to_string(format!("/proc/{child}/stat"))
                .ok()
                .and_then(|stat| {
                    let close = stat.rfind(')')?;
                    stat[close + 2..]
                        .split_whitespace()
                        .nth(1)?
                        .parse::<u32>()
                        .ok()
                })
                == Some(pid)
        })
        .collect()
}

/// Connects a player to a game's client port and sends its player session id; returns the
/// open connection and the game's answer line.
pub fn connect_player(port: u16, player_session_id: &str) -> (TcpStream, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to game");
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    writeln!(s, "{player_session_id}").unwrap();
    let mut answer = Vec::new();
    let mut byte = [0u8; 1];
    while s.read(&mut byte).unwrap_or(0) == 1 && byte[0] != b'\n' {
        answer.push(byte[0]);
    }
    (s, String::from_utf8_lossy(&answer).into_owned())
}

/// Kills a child process if a test fails before it is waited for.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// One control API call with a raw body to `addr`; returns `Response`.
pub fn capi_raw_at(addr: SocketAddr, body: &str) -> Value {
    raw_request(
        addr,
        "POST /capi HTTP/1.1",
        "Host: localhost\r\nContent-Type: application/json\r\n",
        body,
    )
}

/// A Tencent Cloud API request (`POST /`, `action`) to `addr`, signed with (`id`, `key`) at
/// `timestamp` as the official SDKs sign it; returns `Response`.
pub fn signed_request(
    addr: SocketAddr,
    id: &str,
    key: &str,
    action: &str,
    body: &str,
    timestamp: i64,
) -> Value {
    let host = addr.to_string();
    let headers: String =
        gse_agent::api::tc3::signed_headers(id, key, &host, action, body.as_bytes(), timestamp)
            .iter()
            .map(|(name, value)| format!("{name}: {value}\r\n"))
            .collect();
    raw_request(
        addr,
        "POST / HTTP/1.1",
        &format!("Host: {host}\r\n{headers}"),
        body,
    )
}

/// One raw request to `addr`: `request_line` and `headers` as written (each header ending in
/// CRLF), then the body; returns `Response`.
pub fn raw_request(addr: SocketAddr, request_line: &str, headers: &str, body: &str) -> Value {
    let mut s = TcpStream::connect(addr).expect("connect capi");
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    write!(
        s,
        "{request_line}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").expect("http response");
    assert!(
        head.starts_with("HTTP/1.") && head[8..].starts_with(" 200 "),
        "{head}"
    );
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    v["Response"].clone()
}

/// A tmpfs mounted on a directory for one test, lazily unmounted when dropped (also when the
/// test fails, and while processes still hold files in it).
pub struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (e.g. `16m`) on `dir` (created if needed); `None` when not
    /// root, after saying why the test does not run.
    pub fn mount(dir: &std::path::Path, size: &str) -> Option<Tmpfs> {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: mounting a tmpfs needs root (CI runs the tests as root)");
            return None;
        }
        std::fs::create_dir_all(dir).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .expect("run mount");
        assert!(status.success(), "mount -t tmpfs on {}", dir.display());
        Some(Tmpfs {
            dir: dir.to_path_buf(),
        })
    }

    /// Changes the size of the mounted file system (`64m`: room again).
    pub fn resize(&self, size: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.dir)
            .status()
            .expect("run mount");
        assert!(status.success(), "remount {} to {size}", self.dir.display());
    }

    /// Writes `name` until the file system is full; returns its path.
    pub fn fill(&self, name: &str) -> PathBuf {
        let path = self.dir.join(name);
        let mut f = std::fs::File::create(&path).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        while f.write_all(&chunk).is_ok() {}
        while f.write_all(&chunk[..512]).is_ok() {}
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

/// `gse-agent SUBCOMMAND ARGS…` run to its end, stdin closed.
pub fn agent_command(subcommand: &str, args: &[&std::ffi::OsStr]) -> std::process::Output {
    Command::new(AGENT)
        .arg(subcommand)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run gse-agent {subcommand}: {e}"))
}

/// Text of a command's output.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The stdout of a command that must have exited 0 (both streams shown if it did not).
pub fn succeeded(out: &std::process::Output) -> String {
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout: {}\nstderr: {}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}
