//! The upstream relay against a reference control plane: order, completeness across faults and
//! restarts, commands, authentication.

use gse_agent::upstream_proto as up;
use serde_json::json;

use crate::helper::control_plane::ControlPlaneFake;
use crate::helper::{Agent, config, entry, wait_for};

pub(crate) fn upstream_yaml(cp: &ControlPlaneFake, extra: &str) -> String {
    format!(
        "timeouts: {{ stop-grace: 200ms, shutdown: 1s }}
health-check: {{ interval: 1h, timeout: 1s, failure-threshold: 3 }}
upstream: {{ endpoint: \"{}\", status-interval: 100ms, reconnect-initial: 50ms, reconnect-max: 200ms{extra} }}",
        cp.endpoint()
    )
}

/// Sequences are 1..=n with no gap.
pub(crate) fn assert_contiguous(events: &[up::Event]) {
    for (i, e) in events.iter().enumerate() {
        assert_eq!(
            e.sequence,
            i as u64 + 1,
            "gap or reorder at {i}: {events:?}"
        );
    }
}

#[test]
fn events_arrive_complete_and_in_order_with_status() {
    let cp = ControlPlaneFake::start(None, true);
    let agent = Agent::start(&config(&entry("", 2), &upstream_yaml(&cp, "")));
    agent.wait_ready(2);
    let ready = wait_for("two READY upstream", || {
        let e = cp.events();
        (e.iter()
            .filter(|e| e.code == "SERVER_PROCESS_READY")
            .count()
            == 2)
            .then_some(e)
    });
    assert_contiguous(&ready);
    let rec = cp.rec.lock().unwrap();
    let (hello, first) = &rec.connections[0];
    assert_eq!(hello.fleet_id, "fleet-test");
    assert_eq!(hello.instance_id, "ins-test");
    assert_eq!(hello.last_acked_sequence, 0);
    // Within one connection events come in sequence order.
    assert!(first.windows(2).all(|w| w[0].sequence < w[1].sequence));
    let started = first
        .iter()
        .find(|e| e.code == "SERVER_PROCESS_STARTED")
        .unwrap();
    assert!(
        started.pid > 0 && started.process_id.starts_with("proc-"),
        "{started:?}"
    );
    drop(rec);
    wait_for("a status report", || {
        cp.rec
            .lock()
            .unwrap()
            .statuses
            .iter()
            .find(|s| s.active_process_cnt == 2)
            .cloned()
    });
}

#[test]
fn crash_events_carry_the_forensics() {
    let cp = ControlPlaneFake::start(None, true);
    let agent = Agent::start(&config(
        &entry(
            "--say famous-last-words --crash-at after-ready --crash-with exit:9",
            1,
        ),
        &upstream_yaml(&cp, ""),
    ));
    agent.wait_event("SERVER_PROCESS_CRASHED");
    let crash = cp.wait_event("SERVER_PROCESS_CRASHED");
    let exit = crash.exit.unwrap();
    assert!(exit.has_exit_code);
    assert_eq!(exit.exit_code, 9);
    assert!(
        exit.output_tail.iter().any(|l| l == "famous-last-words"),
        "{exit:?}"
    );
}

#[test]
fn a_control_plane_restart_loses_nothing() {
    // No acks: everything stays in the outbox and is resent on every connection.
    let mut cp = ControlPlaneFake::start(None, false);
    let agent = Agent::start(&config(&entry("", 1), &upstream_yaml(&cp, "")));
    agent.wait_ready(1);
    cp.wait_event("SERVER_PROCESS_READY");
    cp.kill();
    // Events while the control plane is away.
    let s = agent.create_session(2);
    let id = s["GameServerSessionId"].as_str().unwrap();
    agent.wait_session_status(id, "ACTIVE");
    cp.restart();
    cp.wait_event("GAME_SESSION_ACTIVATED");
    let all = cp.events();
    assert_contiguous(&all);
    let rec = cp.rec.lock().unwrap();
    assert!(rec.connections.len() >= 2, "reconnected");
    // One outbox epoch across connections.
    let epoch = rec.connections[0].0.epoch;
    assert_ne!(epoch, 0);
    assert!(rec.connections.iter().all(|(h, _)| h.epoch == epoch));
    // Each connection starts again right after the last acknowledged event (none here).
    for (hello, events) in &rec.connections {
        assert_eq!(hello.last_acked_sequence, 0);
        if let Some(first) = events.first() {
            assert_eq!(first.sequence, 1);
        }
    }
    drop(rec);
    // The SDK and supervision kept working while upstream was away.
    assert_eq!(agent.session(id)["Status"], "ACTIVE");
}

#[test]
fn acknowledged_events_are_not_resent() {
    let mut cp = ControlPlaneFake::start(None, true);
    let agent = Agent::start(&config(&entry("", 1), &upstream_yaml(&cp, "")));
    agent.wait_ready(1);
    let ready = cp.wait_event("SERVER_PROCESS_READY");
    // Let the ack land, then reconnect. Only a status that arrived after READY counts: it was
    // sent after READY on the same stream, so nothing unacked then means READY was acked (an
    // earlier one may have been queued before READY was committed).
    let after_ready = cp.rec.lock().unwrap().statuses.len();
    wait_for("status shows nothing unacked", || {
        cp.rec.lock().unwrap().statuses[after_ready..]
            .iter()
            .find(|s| s.unacked_events == 0)
            .cloned()
    });
    cp.kill();
    cp.restart();
    let hello = wait_for("second connection", || {
        cp.rec
            .lock()
            .unwrap()
            .connections
            .get(1)
            .map(|c| c.0.clone())
    });
    assert!(hello.last_acked_sequence >= ready.sequence, "{hello:?}");
    let rec = cp.rec.lock().unwrap();
    assert!(
        rec.connections[1]
            .1
            .iter()
            .all(|e| e.sequence > hello.last_acked_sequence)
    );
}

#[test]
fn unacknowledged_events_survive_an_agent_kill() {
    let cp = ControlPlaneFake::start(None, false);
    let yaml = config(&entry("", 1), &upstream_yaml(&cp, ""));
    let mut agent = Agent::start(&yaml);
    let pid = agent.wait_ready(1)[0]["Pid"].as_u64().unwrap() as i32;
    let before = cp.wait_event("SERVER_PROCESS_READY");
    // SIGKILL: no shutdown, no flush.
    agent.signal(nix::sys::signal::Signal::SIGKILL);
    agent.wait_exit();
    let _ = nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    );
    // Same data dir, new agent.
    let endpoints = agent.path("data/endpoints.json");
    let _ = std::fs::remove_file(&endpoints);
    let child = std::process::Command::new(crate::helper::AGENT)
        .args(["run", "--config"])
        .arg(agent.path("agent.yaml"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let _restarted = crate::helper::KillOnDrop(child);
    let hello = wait_for("the restarted agent's hello", || {
        cp.rec
            .lock()
            .unwrap()
            .connections
            .get(1)
            .map(|c| c.0.clone())
    });
    assert_eq!(hello.last_acked_sequence, 0);
    // Everything from before the kill arrives again, and the sequence continues after it.
    wait_for("resent and new events", || {
        let events = cp.events();
        (events.iter().filter(|e| e.code == "AGENT_STARTED").count() == 2).then_some(())
    });
    let all = cp.events();
    assert_contiguous(&all);
    assert!(
        all.iter()
            .any(|e| e.sequence == before.sequence && e.code == before.code)
    );
    let second_start = all
        .iter()
        .filter(|e| e.code == "AGENT_STARTED")
        .nth(1)
        .unwrap();
    assert!(second_start.sequence > before.sequence);
}

#[test]
fn commands_come_through_the_same_door_as_the_control_api() {
    use up::command::Kind;
    let cp = ControlPlaneFake::start(None, true);
    let agent = Agent::start(&config(&entry("", 1), &upstream_yaml(&cp, "")));
    agent.wait_ready(1);
    cp.command(
        "c1",
        Kind::CreateGameServerSession(up::CreateGameServerSession {
            maximum_player_session_count: 3,
            name: "from upstream".into(),
            ..Default::default()
        }),
    );
    let r = cp.result("c1");
    assert!(r.ok, "{r:?}");
    let session: serde_json::Value = serde_json::from_str(&r.response_json).unwrap();
    let id = session["GameServerSessionId"].as_str().unwrap().to_string();
    assert_eq!(session["Name"], "from upstream");
    agent.wait_session_status(&id, "ACTIVE");
    cp.command(
        "c2",
        Kind::JoinGameServerSession(up::JoinGameServerSession {
            game_server_session_id: id.clone(),
            players: vec![up::PlayerToJoin {
                player_id: "p1".into(),
                player_data: String::new(),
            }],
        }),
    );
    assert!(cp.result("c2").ok);
    // Refusals carry Tencent's codes, exactly as the control API reports them.
    cp.command(
        "c3",
        Kind::JoinGameServerSession(up::JoinGameServerSession {
            game_server_session_id: "nope".into(),
            players: vec![up::PlayerToJoin {
                player_id: "p1".into(),
                player_data: String::new(),
            }],
        }),
    );
    let r = cp.result("c3");
    assert!(!r.ok);
    assert_eq!(r.error_code, "ResourceNotFound");
    cp.command(
        "c4",
        Kind::CreateGameServerSession(up::CreateGameServerSession {
            maximum_player_session_count: 1,
            name: "x".repeat(1025),
            ..Default::default()
        }),
    );
    let r = cp.result("c4");
    assert_eq!(
        (r.ok, r.error_code.as_str()),
        (false, "InvalidParameterValue")
    );
    let capi = agent.capi(json!({
        "Action": "CreateGameServerSession", "FleetId": "fleet-test",
        "MaximumPlayerSessionCount": 1, "Name": "x".repeat(1025),
    }));
    assert_eq!(capi["Error"]["Message"].as_str().unwrap(), r.message);
    // Reserve: no new sessions, processes keep running; the status says so.
    cp.command("c5", Kind::SetReserved(up::SetReserved { reserved: true }));
    assert!(cp.result("c5").ok);
    let msg = agent.err(
        json!({"Action": "CreateGameServerSession", "FleetId": "fleet-test", "MaximumPlayerSessionCount": 1}),
        "OperationDenied",
    );
    assert!(msg.contains("reserved"), "{msg}");
    wait_for("a reserved status", || {
        cp.rec
            .lock()
            .unwrap()
            .statuses
            .iter()
            .find(|s| s.reserved)
            .cloned()
    });
    cp.command("c6", Kind::SetReserved(up::SetReserved { reserved: false }));
    assert!(cp.result("c6").ok);
    // Drain: every process is told to terminate (the session's host ends its match and
    // exits), nothing is relaunched; undrain launches again.
    cp.command("c7", Kind::SetDraining(up::SetDraining { draining: true }));
    assert!(cp.result("c7").ok);
    agent.wait_event("SERVER_PROCESS_ENDED");
    wait_for("no process while draining", || {
        agent.processes().is_empty().then_some(())
    });
    assert_eq!(agent.session(&id)["Status"], "TERMINATED");
    cp.command("c8", Kind::SetDraining(up::SetDraining { draining: false }));
    assert!(cp.result("c8").ok);
    agent.wait_ready(1);
}

#[test]
fn bad_credentials_are_reported_and_retried_with_backoff() {
    let cp = ControlPlaneFake::start(Some("right-token-0123456789"), true);
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    crate::helper::write_secret(&token, "wrong-token-0123456789\n");
    let extra = format!(", token-file: \"{}\"", token.display());
    let agent = Agent::start(&config(&entry("", 1), &upstream_yaml(&cp, &extra)));
    agent.wait_ready(1);
    wait_for("a refused attempt", || {
        (cp.rec.lock().unwrap().refused >= 2).then_some(())
    });
    let err = agent.stderr();
    assert!(err.contains("refused the credentials"), "{err}");
    // Supervision and the SDK are unaffected.
    agent.create_session(1);
    // The right token (read at each attempt) gets in.
    crate::helper::write_secret(&token, "right-token-0123456789\n");
    cp.wait_event("AGENT_STARTED");
    let refused = cp.rec.lock().unwrap().refused;
    assert!(refused < 40, "retried with backoff, not spun: {refused}");
}

/// A CA, a server certificate for localhost and a client certificate, as PEM files.
pub(crate) struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    /// A CA, a server certificate for `localhost` and a client certificate, as PEM files.
    pub(crate) fn new() -> Self {
        Self::with_clients(&[])
    }

    /// [`Pki::new`], and a client certificate `client-NAME.pem` (key `client-NAME.key`) for
    /// each of `names`, named by it (its DNS subject alternative name).
    pub(crate) fn with_clients(names: &[&str]) -> Self {
        use rcgen::{
            BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, KeyUsagePurpose,
        };
        let dir = tempfile::tempdir().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let write = |name: &str, text: String| std::fs::write(dir.path().join(name), text).unwrap();
        write("ca.pem", ca.pem());
        let mut certs: Vec<(String, String)> = vec![
            ("server".into(), "localhost".into()),
            ("client".into(), "agent".into()),
        ];
        certs.extend(names.iter().map(|n| (format!("client-{n}"), n.to_string())));
        for (name, san) in certs {
            let key = KeyPair::generate().unwrap();
            let cert = CertificateParams::new(vec![san.clone()])
                .unwrap()
                .signed_by(&key, &ca)
                .unwrap();
            write(&format!("{name}.pem"), cert.pem());
            write(&format!("{name}.key"), key.serialize_pem());
        }
        Self { dir }
    }

    pub(crate) fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.dir.path().join(name)).unwrap()
    }

    fn server(&self, mutual: bool) -> tonic::transport::ServerTlsConfig {
        use tonic::transport::{Certificate, Identity, ServerTlsConfig};
        let mut tls = ServerTlsConfig::new().identity(Identity::from_pem(
            self.read("server.pem"),
            self.read("server.key"),
        ));
        if mutual {
            tls = tls.client_ca_root(Certificate::from_pem(self.read("ca.pem")));
        }
        tls
    }
}

#[test]
fn tls_with_a_private_ca() {
    let pki = Pki::new();
    let cp = ControlPlaneFake::start_with(None, true, Some(pki.server(false)));
    let extra = format!(", ca-file: \"{}\"", pki.path("ca.pem"));
    let agent = Agent::start(&config(&entry("", 1), &upstream_yaml(&cp, &extra)));
    agent.wait_ready(1);
    cp.wait_event("SERVER_PROCESS_READY");
}

#[test]
fn mutual_tls_needs_the_client_certificate() {
    let pki = Pki::new();
    let cp = ControlPlaneFake::start_with(None, true, Some(pki.server(true)));
    // Without a client certificate the handshake fails; supervision goes on.
    let extra = format!(", ca-file: \"{}\"", pki.path("ca.pem"));
    let without = Agent::start(&config(&entry("", 1), &upstream_yaml(&cp, &extra)));
    without.wait_ready(1);
    wait_for("a failed handshake in the log", || {
        without
            .stderr()
            .contains("upstream connection lost")
            .then_some(())
    });
    assert!(cp.events().is_empty());
    drop(without);
    let extra = format!(
        ", ca-file: \"{}\", client-cert: \"{}\", client-key: \"{}\"",
        pki.path("ca.pem"),
        pki.path("client.pem"),
        pki.path("client.key")
    );
    let with = Agent::start(&config(&entry("", 1), &upstream_yaml(&cp, &extra)));
    with.wait_ready(1);
    cp.wait_event("SERVER_PROCESS_READY");
}

#[test]
fn a_runtime_configuration_change_drains_old_processes() {
    use up::command::Kind;
    let cp = ControlPlaneFake::start(None, true);
    let agent = Agent::start(&config(&entry("", 2), &upstream_yaml(&cp, "")));
    agent.wait_ready(2);
    let s = agent.create_session(2);
    let id = s["GameServerSessionId"].as_str().unwrap().to_string();
    agent.wait_session_status(&id, "ACTIVE");
    let bad = up::UpdateRuntimeConfiguration {
        runtime_configuration_json:
            r#"{"ServerProcesses": [{"LaunchPath": "/usr/bin/x", "ConcurrentExecutions": 1}]}"#
                .into(),
    };
    cp.command("r0", Kind::UpdateRuntimeConfiguration(bad));
    let r = cp.result("r0");
    assert_eq!(
        (r.ok, r.error_code.as_str()),
        (false, "InvalidParameterValue")
    );
    assert!(r.message.contains("outside the game root"), "{}", r.message);
    let json = r#"{"ServerProcesses": [{"LaunchPath": "/local/game/server", "Parameters": "--say v2", "ConcurrentExecutions": 1}]}"#;
    cp.command(
        "r1",
        Kind::UpdateRuntimeConfiguration(up::UpdateRuntimeConfiguration {
            runtime_configuration_json: json.into(),
        }),
    );
    assert!(cp.result("r1").ok);
    // The idle old process ends; the new one comes up; the session's host keeps running.
    let processes = wait_for("one old (hosting) and one new process", || {
        let ps = agent.processes();
        let ids: Vec<String> = ps
            .iter()
            .map(|p| p["ProcessId"].as_str().unwrap().to_string())
            .collect();
        (ps.len() == 2
            && ids.iter().any(|i| i.starts_with("proc-1-"))
            && ps.iter().any(|p| p["GameServerSessionId"] == id.as_str()))
        .then_some(ps)
    });
    assert!(processes.iter().all(|p| p["Restarts"] == 0));
    assert_eq!(
        agent.session(&id)["Status"],
        "ACTIVE",
        "the session was not disturbed"
    );
    // When the session ends, its old process is retired and not replaced.
    agent.ok(json!({"Action": "EndGameServerSessionAndProcess", "GameServerSessionId": id}));
    wait_for("only the new process", || {
        let ps = agent.processes();
        (ps.len() == 1 && ps[0]["ProcessId"].as_str().unwrap().starts_with("proc-1-")).then_some(())
    });
    let instance = &agent.ok(json!({"Action": "DescribeInstancesExtend"}))["Instances"][0];
    assert_eq!(instance["MaxGameSessionCnt"], 1);
}

/// A build zip in `dir`: a `srv` script that runs the fake server, marked with `marker`.
pub(crate) fn make_build(dir: &std::path::Path, name: &str, marker: &str) -> std::path::PathBuf {
    use std::io::Write;
    let path = dir.join(name);
    let mut w = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
    let opts = zip::write::SimpleFileOptions::default().unix_permissions(0o755);
    w.start_file("srv", opts).unwrap();
    write!(
        w,
        "#!/bin/sh\n# {marker}\nexec {} \"$@\"\n",
        crate::helper::FAKE_SERVER
    )
    .unwrap();
    w.finish().unwrap();
    path
}

/// An agent installed from the build `v1` (one `srv` process), relaying to `cp`.
fn agent_on_build(cp: &ControlPlaneFake, v1: &std::path::Path) -> Agent {
    let extra = format!("build: {}\n{}", v1.display(), upstream_yaml(cp, ""));
    Agent::start_with(
        &config(
            &entry("", 1).replace("/local/game/server", "/local/game/srv"),
            &extra,
        ),
        |game| std::fs::remove_dir_all(game).unwrap(),
    )
}

#[test]
fn deploy_build_installs_and_rolls_the_processes() {
    use up::command::Kind;
    let dir = tempfile::tempdir().unwrap();
    let make = |name: &str, marker: &str| make_build(dir.path(), name, marker);
    let v1 = make("v1.zip", "v1");
    let v2 = make("v2.zip", "v2");
    let cp = ControlPlaneFake::start(None, true);
    let agent = agent_on_build(&cp, &v1);
    agent.wait_ready(1);
    let deploy = |id: &str, location: String, sha256: String| {
        cp.command(id, Kind::DeployBuild(up::DeployBuild { location, sha256 }));
        cp.result(id)
    };
    let r = deploy("d0", format!("{}", v2.display()), "00".repeat(32));
    assert_eq!(
        (r.ok, r.error_code.as_str()),
        (false, "InvalidParameterValue"),
        "{r:?}"
    );
    let r = deploy("d1", "ftp://example.com/v2.zip".into(), "00".into());
    assert_eq!(r.error_code, "UnsupportedOperation");
    let hash = gse_agent::agent::package::content_hash(&v2).unwrap();
    let r = deploy("d2", format!("file://{}", v2.display()), hash.clone());
    assert!(r.ok, "{r:?}");
    let live = std::fs::read_link(agent.path("game")).unwrap();
    assert!(live.ends_with(&hash), "{}", live.display());
    assert!(
        std::fs::read_to_string(agent.path("game/srv"))
            .unwrap()
            .contains("# v2")
    );
    // Over HTTP, checked against its sha256 while streaming.
    let v3 = make("v3.zip", "v3");
    let r = deploy(
        "d3",
        serve_once(std::fs::read(&v3).unwrap()),
        "ab".repeat(32),
    );
    assert_eq!(
        (r.ok, r.error_code.as_str()),
        (false, "InvalidParameterValue"),
        "{r:?}"
    );
    let v3_hash = gse_agent::agent::package::content_hash(&v3).unwrap();
    let r = deploy("d4", serve_once(std::fs::read(&v3).unwrap()), v3_hash);
    assert!(r.ok, "{r:?}");
    assert!(
        std::fs::read_to_string(agent.path("game/srv"))
            .unwrap()
            .contains("# v3")
    );
    wait_for("only the new build's process", || {
        let ps = agent.processes();
        (ps.len() == 1
            && ps[0]["ProcessId"].as_str().unwrap().starts_with("proc-2-")
            && ps[0]["Status"] == "ACTIVE")
            .then_some(())
    });
}

#[test]
fn a_full_outbox_raises_one_alarm_and_keeps_every_lifecycle_event() {
    let cp = ControlPlaneFake::start(None, false);
    let agent = Agent::start(&config(
        &entry("", 2),
        &upstream_yaml(&cp, ", outbox-max-bytes: 200"),
    ));
    agent.wait_ready(2);
    let alarm = agent.wait_event("UPSTREAM_OUTBOX_FULL");
    assert!(
        alarm["Message"]
            .as_str()
            .unwrap()
            .contains("lifecycle events are kept")
    );
    // Supervision and the control API are unaffected.
    let id = agent.create_session(1)["GameServerSessionId"]
        .as_str()
        .unwrap()
        .to_string();
    agent.wait_session_status(&id, "ACTIVE");
    cp.wait_event("GAME_SESSION_ACTIVATED");
    let all = cp.events();
    assert_contiguous(&all);
    assert_eq!(
        all.iter()
            .filter(|e| e.code == "UPSTREAM_OUTBOX_FULL")
            .count(),
        1
    );
    assert_eq!(agent.count("UPSTREAM_OUTBOX_FULL"), 1);
}

/// Serves `body` once over HTTP/1.1 on a free port; returns its URL.
fn serve_once(body: Vec<u8>) -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/build.zip", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        if let Ok((mut s, _)) = listener.accept() {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: application/zip\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(head.as_bytes());
            let _ = s.write_all(&body);
        }
    });
    url
}

#[test]
fn a_repeated_command_id_is_applied_once_and_answered_again() {
    use up::command::Kind;
    let cp = ControlPlaneFake::start(None, true);
    let agent = Agent::start(&config(&entry("", 2), &upstream_yaml(&cp, "")));
    agent.wait_ready(2);
    let create = || {
        Kind::CreateGameServerSession(up::CreateGameServerSession {
            maximum_player_session_count: 1,
            ..Default::default()
        })
    };
    cp.command("once", create());
    cp.command("once", create());
    let results = cp.results("once", 2);
    assert!(results[0].ok);
    assert_eq!(
        results[0], results[1],
        "the same result, not a second session"
    );
    let sessions =
        agent.ok(json!({"Action": "DescribeGameServerSessions", "FleetId": "fleet-test"}));
    assert_eq!(sessions["GameServerSessions"].as_array().unwrap().len(), 1);
}

/// An HTTP server that counts requests and holds every response until released.
struct HeldServer {
    url: String,
    requests: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    released: std::sync::Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>,
}

impl HeldServer {
    /// Serves `body` to every request, once released.
    fn start(body: Vec<u8>) -> Self {
        use std::io::{Read, Write};
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/build.zip", listener.local_addr().unwrap());
        let requests = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let released =
            std::sync::Arc::new((std::sync::Mutex::new(false), std::sync::Condvar::new()));
        let (count, gate) = (requests.clone(), released.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut s) = stream else { continue };
                let (body, gate) = (body.clone(), gate.clone());
                count.fetch_add(1, Ordering::SeqCst);
                std::thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    let _ = s.read(&mut buf);
                    let (lock, cvar) = &*gate;
                    let mut open = lock.lock().unwrap();
                    while !*open {
                        open = cvar.wait(open).unwrap();
                    }
                    drop(open);
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: application/zip\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = s.write_all(head.as_bytes());
                    let _ = s.write_all(&body);
                });
            }
        });
        Self {
            url,
            requests,
            released,
        }
    }

    fn requests(&self) -> usize {
        self.requests.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Waits until a download has started.
    fn wait_request(&self) {
        wait_for("the download to start", || {
            (self.requests() >= 1).then_some(())
        });
    }

    fn release(&self) {
        let (lock, cvar) = &*self.released;
        *lock.lock().unwrap() = true;
        cvar.notify_all();
    }
}

impl Drop for HeldServer {
    fn drop(&mut self) {
        // Held responses end (to nobody, if the agent is gone).
        self.release();
    }
}

/// SIGKILLs the agent and its game processes' groups (the new agent starts its own).
fn kill9_with_games(agent: &mut Agent) {
    let pids: Vec<i32> = agent
        .processes()
        .iter()
        .filter_map(|p| p["Pid"].as_i64())
        .map(|p| p as i32)
        .collect();
    agent.kill9();
    for pid in pids {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// An agent on build v1 for `cp`, a server that holds the v2 download until released, and the
/// DeployBuild command of v2 from it (the temp dir holds both builds).
fn held_deploy(cp: &ControlPlaneFake) -> (tempfile::TempDir, Agent, HeldServer, up::command::Kind) {
    let dir = tempfile::tempdir().unwrap();
    let v1 = make_build(dir.path(), "v1.zip", "v1");
    let v2 = make_build(dir.path(), "v2.zip", "v2");
    let agent = agent_on_build(cp, &v1);
    agent.wait_ready(1);
    let held = HeldServer::start(std::fs::read(&v2).unwrap());
    let deploy = up::command::Kind::DeployBuild(up::DeployBuild {
        location: held.url.clone(),
        sha256: gse_agent::agent::package::content_hash(&v2).unwrap(),
    });
    (dir, agent, held, deploy)
}

#[test]
fn a_command_resent_on_a_new_connection_while_it_runs_is_applied_once() {
    let mut cp = ControlPlaneFake::start(None, true);
    let (_builds, agent, held, deploy) = held_deploy(&cp);
    cp.command("slow", deploy.clone());
    held.wait_request();
    // The connection drops while the download is held; the control plane resends the id on
    // the next one.
    cp.kill();
    cp.restart();
    cp.wait_connections(2);
    cp.command("slow", deploy.clone());
    // Commands on one connection are taken in order: a probe's answer means the copy was taken
    // (and did not run: the worker is free while the first run still holds the download).
    cp.command("probe", None);
    assert_eq!(cp.result("probe").error_code, "MissingParameter");
    assert!(
        cp.rec
            .lock()
            .unwrap()
            .results
            .iter()
            .all(|r| r.command_id != "slow"),
        "nothing answered before the run ends"
    );
    held.release();
    // One result per copy sent, both from the one run, on the connection current now.
    let results = cp.results("slow", 2);
    assert!(results[0].ok, "{results:?}");
    assert_eq!(results[0], results[1]);
    assert_eq!(held.requests(), 1, "downloaded once");
    // Deployed once: the processes rolled to the second runtime, not a third.
    wait_for("the new build's process", || {
        let ps = agent.processes();
        (ps.len() == 1
            && ps[0]["ProcessId"].as_str().unwrap().starts_with("proc-1-")
            && ps[0]["Status"] == "ACTIVE")
            .then_some(())
    });
    assert!(
        std::fs::read_to_string(agent.path("game/srv"))
            .unwrap()
            .contains("# v2")
    );
}

#[test]
fn a_command_id_repeated_after_a_restart_gets_its_recorded_result() {
    use up::command::Kind;
    let cp = ControlPlaneFake::start(None, true);
    let mut agent = Agent::start(&config(&entry("", 1), &upstream_yaml(&cp, "")));
    agent.wait_ready(1);
    let create = || {
        Kind::CreateGameServerSession(up::CreateGameServerSession {
            maximum_player_session_count: 2,
            name: "once".into(),
            ..Default::default()
        })
    };
    cp.command("c1", create());
    let first = cp.result("c1");
    assert!(first.ok, "{first:?}");
    // Each agent run keeps its own event history: a repeat that ran again would create a
    // session there.
    let created = |agent: &Agent| agent.count("GAME_SESSION_CREATED");
    assert_eq!(created(&agent), 1);
    // SIGKILL, then the same id again: the recorded answer, and no new session.
    kill9_with_games(&mut agent);
    agent.spawn();
    cp.wait_connections(2);
    agent.wait_ready(1);
    cp.command("c1", create());
    let results = cp.results("c1", 2);
    assert_eq!(results[1], first);
    assert_eq!(created(&agent), 0, "not run again");
    // A graceful restart keeps it too.
    agent.signal(nix::sys::signal::Signal::SIGTERM);
    agent.wait_exit();
    agent.spawn();
    cp.wait_connections(3);
    agent.wait_ready(1);
    cp.command("c1", create());
    let results = cp.results("c1", 3);
    assert_eq!(results[2], first);
    assert_eq!(created(&agent), 0, "not run again");
    // A new id runs.
    cp.command("c2", create());
    assert!(cp.result("c2").ok);
    assert_eq!(created(&agent), 1);
}

#[test]
fn a_command_cut_short_by_an_agent_kill_is_answered_not_run_again() {
    let cp = ControlPlaneFake::start(None, true);
    let (_builds, mut agent, held, deploy) = held_deploy(&cp);
    cp.command("cut", deploy.clone());
    held.wait_request();
    kill9_with_games(&mut agent);
    held.release();
    agent.spawn();
    cp.wait_connections(2);
    cp.command("cut", deploy.clone());
    let r = cp.result("cut");
    assert_eq!(
        (r.ok, r.error_code.as_str()),
        (false, "InternalError"),
        "{r:?}"
    );
    assert!(
        r.message.contains("restarted") && r.message.contains("new id"),
        "{}",
        r.message
    );
    assert_eq!(held.requests(), 1, "not downloaded again");
    assert!(
        std::fs::read_to_string(agent.path("game/srv"))
            .unwrap()
            .contains("# v1"),
        "the old build stays live"
    );
}

/// A peer that accepts TCP connections and never says a word; counts them.
struct SilentPeer {
    addr: std::net::SocketAddr,
    accepted: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl SilentPeer {
    fn start() -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = accepted.clone();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for stream in listener.incoming().flatten() {
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                held.push(stream); // open, silent
            }
        });
        Self { addr, accepted }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// The relay never hangs: a peer that never finishes TLS, or never answers the Relay call, is
/// given up on within the configured limits, said so in the log, and retried.
#[test]
fn a_silent_control_plane_is_given_up_and_retried() {
    for scheme in ["https", "http"] {
        let peer = SilentPeer::start();
        let yaml = config(
            &entry("", 1),
            &format!(
                "upstream: {{ endpoint: \"{scheme}://{}\", reconnect-initial: 50ms, reconnect-max: 100ms, connect-timeout: 300ms, response-timeout: 300ms }}",
                peer.addr
            ),
        );
        let agent = Agent::start(&yaml);
        wait_for("three attempts at the silent peer", || {
            (peer.accepted() >= 3).then_some(())
        });
        let log = wait_for("the timeout in the log", || {
            let log = agent.stderr();
            log.contains("did not finish within 300ms").then_some(log)
        });
        let step = if scheme == "https" {
            "connecting (TCP, TLS and HTTP/2)"
        } else {
            "the control plane's answer to the Relay call"
        };
        assert!(log.contains(step), "{scheme}: {log}");
        // Supervision is not held up meanwhile.
        agent.wait_ready(1);
    }
}

/// The address and region settings for a host in ap-shanghai at 203.0.113.7.
const ADDRESSED: &str =
    "region: ap-shanghai\npublic-ip: 203.0.113.7\ndns-name: game-1.example.com\n";

#[test]
fn hello_and_sessions_carry_the_region_and_public_address() {
    let cp = ControlPlaneFake::start(None, true);
    let agent = Agent::start(&config(
        &entry("", 1),
        &format!("{ADDRESSED}{}", upstream_yaml(&cp, "")),
    ));
    cp.wait_connections(1);
    let hello = &cp.hellos()[0];
    assert_eq!(
        (
            hello.region.as_str(),
            hello.public_ip.as_str(),
            hello.dns_name.as_str()
        ),
        ("ap-shanghai", "203.0.113.7", "game-1.example.com")
    );
    agent.wait_ready(1);
    let s = agent.create_session(2);
    let id = s["GameServerSessionId"].as_str().unwrap().to_string();
    assert!(
        id.starts_with("qcs::gse:ap-shanghai::gameserversession/fleet-test/"),
        "{id}"
    );
    assert_eq!(s["IpAddress"], "203.0.113.7");
    assert_eq!(s["DnsName"], "game-1.example.com");
    agent.wait_session_status(&id, "ACTIVE");
    let joined = agent.ok(json!({
        "Action": "JoinGameServerSession", "GameServerSessionId": id, "PlayerId": "alice",
    }))["PlayerSession"]
        .clone();
    assert_eq!(joined["IpAddress"], "203.0.113.7");
    assert_eq!(joined["DnsName"], "game-1.example.com");
    let instance = &agent.ok(json!({"Action": "DescribeInstancesExtend"}))["Instances"][0];
    assert_eq!(instance["Instance"]["IpAddress"], "203.0.113.7");
    assert_eq!(instance["Instance"]["DnsName"], "game-1.example.com");
    let fleet = agent.ok(json!({"Action": "DescribeFleetAttributes"}));
    assert_eq!(
        fleet["FleetAttributes"][0]["FleetArn"],
        "qcs::gse:ap-shanghai:uin/0:fleet/fleet-test"
    );
    // Unset, the Hello says nothing of an address and the region is `local`.
    let plain = ControlPlaneFake::start(None, true);
    let _agent = Agent::start(&config(&entry("", 1), &upstream_yaml(&plain, "")));
    plain.wait_connections(1);
    let hello = &plain.hellos()[0];
    assert_eq!(
        (
            hello.region.as_str(),
            hello.public_ip.as_str(),
            hello.dns_name.as_str()
        ),
        ("local", "", "")
    );
}

#[test]
fn snapshots_follow_the_hello_and_every_session_change() {
    let mut cp = ControlPlaneFake::start(None, true);
    let agent = Agent::start(&config(&entry("", 2), &upstream_yaml(&cp, "")));
    // Every connection starts with a complete snapshot, right after its Hello.
    let first = cp.wait_snapshot("the first connection's", |s| s.connection == 0);
    assert!(first.snapshot.complete && first.after == 0, "{first:?}");
    let ready = agent.wait_ready(2);
    // A new connection once the processes run: its complete snapshot lists them as they are.
    cp.kill();
    cp.restart();
    cp.wait_connections(2);
    let complete = cp.wait_snapshot("the second connection's", |s| s.connection == 1);
    assert!(
        complete.snapshot.complete && complete.after == 0,
        "{complete:?}"
    );
    let mut listed: Vec<(String, u32, String, bool)> = complete
        .snapshot
        .processes
        .iter()
        .map(|p| (p.process_id.clone(), p.pid, p.status.clone(), p.healthy))
        .collect();
    listed.sort();
    let mut want: Vec<(String, u32, String, bool)> = ready
        .iter()
        .map(|p| {
            (
                p["ProcessId"].as_str().unwrap().to_string(),
                p["Pid"].as_u64().unwrap() as u32,
                "ACTIVE".to_string(),
                true,
            )
        })
        .collect();
    want.sort();
    assert_eq!(listed, want);
    assert!(complete.snapshot.game_server_sessions_json.is_empty());
    // A session and a player: a partial snapshot with the session's and the player's JSON, as
    // the control API renders them.
    let s = agent.create_session(4);
    let id = s["GameServerSessionId"].as_str().unwrap().to_string();
    agent.wait_session_status(&id, "ACTIVE");
    let player = agent.ok(json!({
        "Action": "JoinGameServerSession", "GameServerSessionId": id, "PlayerId": "alice",
    }))["PlayerSession"]
        .clone();
    let player_id = player["PlayerSessionId"].as_str().unwrap().to_string();
    let partial = cp.wait_snapshot("the joined player", |s| {
        s.players()
            .iter()
            .any(|p| p["PlayerSessionId"] == player_id.as_str())
    });
    assert!(!partial.snapshot.complete);
    assert_eq!(partial.connection, 1);
    let sessions = partial.sessions();
    assert_eq!(sessions.len(), 1, "only the session that changed");
    assert_eq!(sessions[0]["GameServerSessionId"], id.as_str());
    assert_eq!(sessions[0]["Status"], "ACTIVE");
    assert_eq!(sessions[0]["CurrentPlayerSessionCount"], 1);
    let players = partial.players();
    assert_eq!(players, [player], "the control API's own JSON");
    let host = partial
        .snapshot
        .processes
        .iter()
        .find(|p| p.game_server_session_id == id)
        .expect("the session's process");
    assert_eq!(host.status, "ACTIVE");
    assert_eq!(partial.snapshot.processes.len(), 2, "every process, always");
    // A change no event reports (UpdateGameServerSession) reaches the control plane too.
    agent.ok(json!({
        "Action": "UpdateGameServerSession", "GameServerSessionId": id, "Name": "finals",
    }));
    let renamed = cp.wait_snapshot("the renamed session", |s| {
        s.sessions().iter().any(|g| g["Name"] == "finals")
    });
    assert!(!renamed.snapshot.complete);
    assert_eq!(renamed.players().len(), 1, "with all its player sessions");
    // Snapshots are state, not events: none is stored or sequenced.
    assert_contiguous(&cp.events());
}

#[test]
fn a_lost_control_plane_fails_over_to_the_next_endpoint_with_nothing_lost() {
    // No acks from the first: everything it received stays unacknowledged.
    let mut first = ControlPlaneFake::start(None, false);
    let second = ControlPlaneFake::start(None, true);
    let yaml = format!(
        "timeouts: {{ stop-grace: 200ms, shutdown: 1s }}
health-check: {{ interval: 1h, timeout: 1s, failure-threshold: 3 }}
upstream:
  endpoint: [\"{}\", \"{}\"]
  status-interval: 100ms
  reconnect-initial: 50ms
  reconnect-max: 200ms
",
        first.endpoint(),
        second.endpoint()
    );
    let agent = Agent::start(&config(&entry("", 1), &yaml));
    agent.wait_ready(1);
    let ready = first.wait_event("SERVER_PROCESS_READY");
    assert!(
        second.hellos().is_empty(),
        "the first endpoint is dialled first"
    );
    first.kill();
    // Events while moving over.
    let s = agent.create_session(2);
    let id = s["GameServerSessionId"].as_str().unwrap().to_string();
    agent.wait_session_status(&id, "ACTIVE");
    second.wait_event("GAME_SESSION_ACTIVATED");
    // The second got everything, from sequence 1: what the first had and never acknowledged
    // included.
    let all = second.events();
    assert_contiguous(&all);
    assert!(
        all.iter()
            .any(|e| e.sequence == ready.sequence && e.code == ready.code)
    );
    let hello = &second.hellos()[0];
    assert_eq!(hello.last_acked_sequence, 0);
    // It reconciles from the start: a complete snapshot right after its Hello.
    let complete = second.wait_snapshot("the complete one", |s| s.connection == 0);
    assert!(complete.snapshot.complete && complete.after == 0);
    // The log says which endpoint is in use.
    let log = agent.stderr();
    assert!(
        log.lines().any(|l| l.contains("connected to the control plane")
            && l.contains(&second.endpoint())),
        "{log}"
    );
}
