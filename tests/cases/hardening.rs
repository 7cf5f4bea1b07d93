//! Nothing on the host knocks the agent over: closed output, a low descriptor limit.

use std::process::{Command, Stdio};

use nix::sys::signal::Signal;

use crate::helper::{AGENT, Agent, config, entry, group_running, wait_for};

/// A reader of the agent's stdout and stderr that went away (a pager that quit, `| head`)
/// costs log lines, never the agent: it keeps supervising and honours SIGTERM.
#[test]
fn a_closed_stdout_and_stderr_do_not_kill_the_agent() {
    let mut agent = Agent::prepared(&config(&entry("", 1), ""), |_| {});
    let mut child = Command::new(AGENT)
        .args(["run", "--config"])
        .arg(agent.path("agent.yaml"))
        .env("RUST_LOG", "debug")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Both readers go away at once.
    drop(child.stdout.take());
    drop(child.stderr.take());
    agent.attach(child);
    let game = wait_for("a ready game, logged all along", || {
        agent
            .processes()
            .into_iter()
            .find(|p| p["Status"] == "ACTIVE")
            .and_then(|p| p["Pid"].as_u64())
    });
    agent.signal(Signal::SIGTERM);
    let status = agent.wait_exit();
    assert!(status.success(), "{status}");
    assert!(!group_running(game as u32), "the game was stopped");
}

/// The soft limit on open files is raised to the hard one at start: clients holding
/// connections cannot take the descriptors a game launch needs as early as 1024 would.
#[test]
fn the_open_files_limit_is_raised_to_the_hard_limit() {
    let mut agent = Agent::prepared(&config(&entry("", 1), ""), |_| {});
    let child = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -Sn 256 && exec {AGENT} run --config {}",
            agent.path("agent.yaml").display()
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    agent.attach(child);
    let pid = agent.child.as_ref().unwrap().id();
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let fields: Vec<&str> = line.split_whitespace().collect();
    let (soft, hard) = (fields[3], fields[4]);
    assert_ne!(soft, "256", "{line}");
    assert_eq!(soft, hard, "{line}");
}

/// Raises this test process's open-files limit to its hard limit (idle clients need many).
fn raise_own_open_files_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).unwrap();
}

/// Whether the agent closed `s` (EOF or reset), waiting up to the test deadline; returns
/// what it sent first.
fn closed_by_agent(s: &mut std::net::TcpStream) -> String {
    use std::io::Read;
    s.set_read_timeout(Some(crate::helper::DEADLINE)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return String::from_utf8_lossy(&got).into_owned(),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return String::from_utf8_lossy(&got).into_owned();
            }
            Err(e) => panic!("the agent did not close the connection: {e}"),
        }
    }
}

/// Thousands of connections that say nothing cannot take the agent: those over the cap are
/// refused at once (the control API says why), the rest are closed after the header
/// timeout, the API answers again, a game keeps calling the SDK, and a crashed game is
/// relaunched while they are held.
#[test]
fn thousands_of_idle_connections_do_not_starve_the_agent() {
    use std::net::TcpStream;
    raise_own_open_files_limit();
    let agent = Agent::start(&config(
        &entry(crate::helper::COMMANDS, 1),
        "connections: { sdk-max: 300, capi-max: 100, header-timeout: 2s, idle-timeout: 2s }
health-check: { interval: 1h, timeout: 1s, failure-threshold: 3 }
restart: { initial-backoff: 10ms }",
    ));
    let game = agent.wait_ready(1)[0]["Pid"].as_u64().unwrap() as u32;
    let mut commands = agent.game(game);
    let (mut sdk_held, mut capi_held) = (Vec::new(), Vec::new());
    for _ in 0..1500 {
        sdk_held.push(TcpStream::connect(agent.sdk).unwrap());
        capi_held.push(TcpStream::connect(agent.capi).unwrap());
    }
    // The game's own connection is served all along.
    assert_eq!(commands.call("custom 1 2")["status"], 0);
    // A crashed game is relaunched while the connections are held (watched from /proc:
    // the control API may well be full now).
    let agent_pid = agent.child.as_ref().unwrap().id();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(game as i32), Signal::SIGKILL).unwrap();
    wait_for("the replacement game", || {
        crate::helper::children_of(agent_pid)
            .into_iter()
            .find(|p| *p != game)
    });
    // Over the cap, the control API said why before closing; the rest were closed for
    // their silence after the header timeout.
    let answers: Vec<String> = capi_held
        .iter_mut()
        .rev()
        .take(200)
        .map(closed_by_agent)
        .collect();
    let refused = answers
        .iter()
        .filter(|a| a.starts_with("HTTP/1.1 503") && a.contains("RequestLimitExceeded"))
        .count();
    assert!(refused > 0, "{:?}", &answers[..3]);
    assert!(
        answers
            .iter()
            .all(|a| a.is_empty() || a.starts_with("HTTP/1.1 503")),
        "{answers:?}"
    );
    for s in sdk_held.iter_mut().take(20) {
        closed_by_agent(s);
    }
    // Part of the HTTP/2 preface and then nothing: closed all the same.
    let mut partial = std::net::TcpStream::connect(agent.sdk).unwrap();
    std::io::Write::write_all(&mut partial, b"PRI * HTTP/2.0").unwrap();
    closed_by_agent(&mut partial);
    drop((sdk_held, capi_held));
    // Everything answers again.
    agent.wait_ready(1);
    let log = agent.stderr();
    assert!(
        log.contains("too many open connections"),
        "the refusals are logged"
    );
    assert!(
        log.matches("too many open connections").count() < 50,
        "and rate-limited"
    );
}

/// Resident memory of process `pid`, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap();
    kb * 1024
}

/// A flood of huge requests (1 MiB SDK messages, many in flight; 2 MiB control API bodies) is
/// refused from its length, with a clear error, and leaves the agent's memory as it was.
#[test]
fn a_flood_of_huge_requests_is_refused_and_leaves_no_memory_behind() {
    use gse_agent::proto::gse_grpc_sdk_service_client::GseGrpcSdkServiceClient;
    let agent = Agent::start(&config(&entry("", 1), ""));
    agent.wait_ready(1);
    let pid = agent.child.as_ref().unwrap().id();
    let before = rss(pid);
    // Under tonic's default limit (4 MiB), far over the SDK's.
    let huge = "x".repeat(1 << 20);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let codes = rt.block_on(async {
        let client = GseGrpcSdkServiceClient::connect(format!("http://{}", agent.sdk))
            .await
            .unwrap()
            .max_encoding_message_size(8 << 20);
        let mut codes = Vec::new();
        for _ in 0..5 {
            let mut calls = tokio::task::JoinSet::new();
            for _ in 0..8 {
                let mut c = client.clone();
                let mut req = tonic::Request::new(gse_agent::proto::AcceptPlayerSessionRequest {
                    game_server_session_id: huge.clone(),
                    player_session_id: "psess-x".into(),
                });
                req.metadata_mut()
                    .insert("pid", std::process::id().to_string().parse().unwrap());
                calls.spawn(async move { c.accept_player_session(req).await.map(|_| ()) });
            }
            for r in calls.join_all().await {
                codes.push(r.unwrap_err().code());
            }
        }
        codes
    });
    assert!(
        codes.iter().all(|c| *c == tonic::Code::OutOfRange),
        "{codes:?}"
    );
    for _ in 0..10 {
        let answer = oversized_capi_request(agent.capi, 2 * huge.len());
        assert!(
            answer.contains(r#""Code":"InvalidParameter""#) && answer.contains("at most"),
            "{answer}"
        );
    }
    let after = rss(pid);
    assert!(
        after < before + (24 << 20),
        "RSS grew from {before} to {after} bytes"
    );
}

/// Sends a control API request with a body of `len` bytes (from a thread: the agent answers
/// from the length alone and closes, so the rest of the write may fail); returns the answer.
fn oversized_capi_request(addr: std::net::SocketAddr, len: usize) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(crate::helper::DEADLINE)).unwrap();
    let mut writer = s.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        let head = format!(
            "POST /capi HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {len}\r\n\r\n"
        );
        let _ = writer.write_all(head.as_bytes());
        let _ = writer.write_all(&vec![b'x'; len]);
    });
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buf[..n]);
        if answer.ends_with(b"}}") {
            break;
        }
    }
    drop(s);
    let _ = sender.join();
    String::from_utf8_lossy(&answer).into_owned()
}

/// Whether the process `pid` holds a descriptor open on `path`.
fn holds_open(pid: u32, path: &std::path::Path) -> bool {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|p| p == path))
}

#[test]
fn games_do_not_inherit_what_the_agent_inherited() {
    let marker = tempfile::NamedTempFile::new().unwrap();
    let path = marker.path().canonicalize().unwrap();
    let file = std::fs::File::open(&path).unwrap();
    // Without close-on-exec, as a lock or a pipe of whoever starts the agent often is.
    let inherited = nix::unistd::dup(&file).unwrap();
    let agent = Agent::start(&config(&entry("", 1), ""));
    let game = agent.wait_ready(1)[0]["Pid"].as_u64().unwrap() as u32;
    let agent_pid = agent.child.as_ref().unwrap().id();
    assert!(
        holds_open(agent_pid, &path),
        "the agent inherits it (the premise)"
    );
    assert!(
        !holds_open(game, &path),
        "the game {game} inherited the agent's descriptor on {}",
        path.display()
    );
    drop(inherited);
}

/// A zip bomb (an entry of zeros, about 1,032:1) is stopped within its first megabytes by the
/// real binary, named, and leaves no destination behind.
#[test]
fn a_zip_bomb_is_stopped_as_it_streams() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let zip_path = dir.path().join("bomb.zip");
    let mut w = zip::ZipWriter::new(std::fs::File::create(&zip_path).unwrap());
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .compression_level(Some(9));
    w.start_file("server", opts).unwrap();
    w.write_all(b"#!/bin/sh\n").unwrap();
    w.start_file("data/zeros.pak", opts).unwrap();
    let chunk = vec![0u8; 1 << 20];
    for _ in 0..64 {
        w.write_all(&chunk).unwrap();
    }
    w.finish().unwrap();
    let dest = dir.path().join("out");
    let out = crate::helper::agent_command("unpack", &[zip_path.as_os_str(), dest.as_os_str()]);
    let err = crate::helper::text(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("\"data/zeros.pak\"") && err.contains("zip bomb"),
        "{err}"
    );
    let written: u64 = err
        .split(" bytes from ")
        .next()
        .and_then(|head| head.rsplit('(').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("the bytes written are said: {err}"));
    assert!(written < 16 << 20, "stopped after {written} bytes: {err}");
    assert!(!dest.exists(), "nothing half-written at the destination");
}
