//! The GSE SDK's refusals: calls made by the games themselves (on request, see
//! [`crate::helper::GameCommands`]) and by a stranger that claims to be one. A refusal is a
//! non-OK gRPC status with the reason as its message (a game built on a GSE SDK copy whose
//! `GseResponse` is empty reads nothing else).

use gse_agent::proto::gse_grpc_sdk_service_client::GseGrpcSdkServiceClient;
use gse_agent::proto::{self, GseResponse};
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::helper::{Agent, COMMANDS, config, entry};

const FAST: &str = "
health-check: { interval: 1h, timeout: 1s, failure-threshold: 3 }
timeouts: { process-exit: 1s, stop-grace: 200ms, shutdown: 1s }";

struct Sdk {
    rt: tokio::runtime::Runtime,
    client: GseGrpcSdkServiceClient<Channel>,
}

impl Sdk {
    fn new(agent: &Agent) -> Self {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let client = rt
            .block_on(GseGrpcSdkServiceClient::connect(format!(
                "http://{}",
                agent.sdk
            )))
            .unwrap();
        Self { rt, client }
    }

    fn req<T>(pid: Option<&str>, msg: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        if let Some(pid) = pid {
            r.metadata_mut().insert("pid", pid.parse().unwrap());
        }
        r.metadata_mut()
            .insert("requestid", "test-request".parse().unwrap());
        r
    }

    fn ending(&mut self, pid: Option<&str>) -> Result<GseResponse, Status> {
        let mut c = self.client.clone();
        self.rt
            .block_on(c.process_ending(Self::req(pid, proto::ProcessEndingRequest {})))
            .map(tonic::Response::into_inner)
    }

    /// AcceptPlayerSession of player session `psess-none` in `gss_id`, as `pid`.
    fn accept(&self, pid: &str, gss_id: &str) -> Result<GseResponse, Status> {
        let mut c = self.client.clone();
        self.rt
            .block_on(c.accept_player_session(Self::req(
                Some(pid),
                proto::AcceptPlayerSessionRequest {
                    game_server_session_id: gss_id.to_string(),
                    player_session_id: "psess-none".into(),
                },
            )))
            .map(tonic::Response::into_inner)
    }

    fn ready(&mut self, pid: &str) -> Result<GseResponse, Status> {
        let mut c = self.client.clone();
        let msg = proto::ProcessReadyRequest {
            log_paths_to_upload: vec![],
            client_port: 7000,
            grpc_port: 7001,
        };
        self.rt
            .block_on(c.process_ready(Self::req(Some(pid), msg)))
            .map(tonic::Response::into_inner)
    }
}

fn assert_status(r: &Result<GseResponse, Status>, code: Code, needle: &str) {
    let status = r.as_ref().expect_err("refused with a gRPC status");
    assert_eq!(status.code(), code, "{status:?}");
    assert!(
        status.message().contains(needle),
        "{needle:?} not in {:?}",
        status.message()
    );
}

#[test]
fn calls_without_a_known_pid_are_refused() {
    let agent = Agent::start(&config(&entry("", 1), FAST));
    agent.wait_ready(1);
    let mut sdk = Sdk::new(&agent);
    assert_status(
        &sdk.ending(None),
        Code::InvalidArgument,
        "missing metadata \"pid\"",
    );
    assert_status(
        &sdk.ending(Some("abc")),
        Code::InvalidArgument,
        "not a process id",
    );
    // The test process is no child of the agent (nor are its parents).
    assert_status(
        &sdk.ending(Some(&std::process::id().to_string())),
        Code::NotFound,
        "is not a server process launched by this agent",
    );
}

/// A game's own call (through the fake server's command port) refused with a gRPC status.
fn assert_refused(answer: &serde_json::Value, needle: &str) {
    assert!(
        answer["grpc"].as_str().is_some_and(|code| code != "Ok"),
        "{answer}"
    );
    let message = answer["message"].as_str().unwrap_or_default();
    assert!(message.contains(needle), "{needle:?} not in {message:?}");
}

#[test]
fn calls_illegal_in_the_current_state_are_refused() {
    let agent = Agent::start(&config(&entry(COMMANDS, 1), FAST));
    let pid = agent.wait_ready(1)[0]["Pid"].as_u64().unwrap() as u32;
    let mut game = agent.game(pid);
    assert_refused(
        &game.call("ready 7000 7001"),
        "ProcessReady was already called",
    );
    assert_refused(
        &game.call("activate gssess-none 1"),
        "game server session gssess-none does not exist",
    );
    assert_refused(
        &game.call("accept gssess-none psess-none"),
        "does not exist",
    );
    assert_refused(
        &game.call("policy x SOMETIMES"),
        "not ACCEPT_ALL or DENY_ALL",
    );
    assert_refused(&game.call("custom -1 1"), "currentCustomCount");
    let bad_limit = game.call("describe -5");
    assert_eq!(bad_limit["grpc"], "InvalidArgument", "{bad_limit}");
    assert!(
        bad_limit["message"].as_str().unwrap().contains("limit -5"),
        "{bad_limit}"
    );
    assert_eq!(game.call("ending")["status"], 0, "ProcessEnding is legal");
    assert_refused(&game.call("ending"), "ProcessEnding was already called");
}

#[test]
fn a_helper_process_in_the_games_group_speaks_for_the_game() {
    let agent = Agent::start(&config(&entry(COMMANDS, 1), FAST));
    let pid = agent.wait_ready(1)[0]["Pid"].as_u64().unwrap() as u32;
    // The helper calls with its own pid from its own connection: it is the game's.
    assert_refused(
        &agent.game(pid).call("helper-ready"),
        "ProcessReady was already called",
    );
}

/// Every game leads a session of its own, so no process outside it can `setpgid` into its
/// group (a neighbour game, a process of another uid in the agent's session); and a process
/// of another uid inside a game's group speaks for nobody.
#[test]
fn no_process_borrows_a_games_process_group() {
    // Root games, so that one can fork a helper of another user into its own group below.
    let agent = Agent::start(&config(
        &entry(COMMANDS, 2),
        &format!("{FAST}\nrun-as: root"),
    ));
    let ready = agent.wait_ready(2);
    let (victim, neighbour) = (
        ready[0]["Pid"].as_u64().unwrap() as u32,
        ready[1]["Pid"].as_u64().unwrap() as u32,
    );
    let sid = |pid: u32| nix::unistd::getsid(Some(nix::unistd::Pid::from_raw(pid as i32)));
    assert_eq!(
        sid(victim).unwrap().as_raw() as u32,
        victim,
        "its own session"
    );
    let answer = agent.game(neighbour).call(&format!("join-group {victim}"));
    assert!(
        answer["error"]
            .as_str()
            .is_some_and(|e| e.contains("EPERM")),
        "a neighbour game cannot join the game's group: {answer}"
    );
    // A process of another user, started in the agent's session as every test process is.
    let mut stranger = std::process::Command::new("python3");
    stranger.args([
        "-c",
        "import os, sys; os.setpgid(0, int(sys.argv[1]))",
        &victim.to_string(),
    ]);
    if nix::unistd::geteuid().is_root() {
        use std::os::unix::process::CommandExt;
        stranger.uid(65534).gid(65534);
    }
    let out = stranger.output().expect("run python3");
    assert!(
        !out.status.success(),
        "setpgid into the game's group succeeded"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("PermissionError"), "{err}");
    if nix::unistd::geteuid().is_root() {
        // The game (root) forks a helper that runs as nobody: it is in the game's group, but
        // not of the game's user, so the group rule does not map it to the game.
        let answer = agent.game(victim).call("helper-ready 65534");
        assert_refused(&answer, "is not a server process launched by this agent");
    }
    // The same-uid helper still speaks for the game (ProcessReady already made, so refused
    // for that reason, not for being unknown).
    assert_refused(
        &agent.game(victim).call("helper-ready"),
        "ProcessReady was already called",
    );
}

/// Item 1 of the hardening issue: the `pid` metadata is a claim; the kernel says who holds
/// the connection. A stranger (this test process) and a neighbour game cannot act for a game,
/// not even for one still loading, and the refusals name no other game.
#[test]
fn no_stranger_or_neighbour_can_speak_for_a_game() {
    let agent = Agent::start(&config(
        &format!(
            "{}{}",
            entry(COMMANDS, 1),
            entry(&format!("{COMMANDS} --no-ready"), 1)
        ),
        FAST,
    ));
    let ready = agent.wait_ready(1)[0]["Pid"].as_u64().unwrap() as u32;
    let loading = crate::helper::wait_for("the loading game", || {
        agent
            .processes()
            .iter()
            .filter_map(|p| p["Pid"].as_u64())
            .map(|p| p as u32)
            .find(|p| *p != ready)
    });
    let mut sdk = Sdk::new(&agent);
    let loading_pid = loading.to_string();
    // The stranger claims the loading game's pid: its ProcessReady would win the next session.
    let denied = Code::PermissionDenied;
    assert_status(&sdk.ready(&loading_pid), denied, "not held by that process");
    assert_status(
        &sdk.ending(Some(&loading_pid)),
        denied,
        "not held by that process",
    );
    assert_status(
        &sdk.accept(&loading_pid, "gssess-x"),
        denied,
        "not held by that process",
    );
    // The refusal is logged once for the connection, not per call.
    let log = agent.stderr();
    assert_eq!(
        log.matches("the caller is not the process it names")
            .count(),
        1,
        "{log}"
    );
    // A neighbour game claims the loading game's pid.
    let mut neighbour = agent.game(ready);
    let answer = neighbour.call(&format!("as:{loading} ready 7000 7001"));
    assert_refused(&answer, "not held by that process");
    assert!(
        !answer["message"]
            .as_str()
            .unwrap()
            .contains(&ready.to_string()),
        "{answer}"
    );
    // The real game is not harmed: its ProcessReady is accepted.
    assert_eq!(
        agent.game(loading).call("ready 7000 7001")["status"],
        0,
        "the real game's ProcessReady"
    );
    agent.wait_ready(2);
    // Session refusals do not say which process hosts a session.
    let id = agent.create_session(1)["GameServerSessionId"]
        .as_str()
        .unwrap()
        .to_string();
    let (mut a, mut b) = (agent.game(ready), agent.game(loading));
    let a_answer = a.call(&format!("terminate {id}"));
    let (refused, host) = if a_answer["grpc"].is_string() {
        (a_answer, loading)
    } else {
        (b.call(&format!("terminate {id}")), ready)
    };
    assert_refused(&refused, "not hosted by the calling process");
    assert!(
        !refused["message"]
            .as_str()
            .unwrap()
            .contains(&host.to_string()),
        "the host's pid {host} is not named: {refused}"
    );
}

/// A caller cannot use the agent's log as a weapon: refused values are cut and refusals are
/// rate-limited per claimed pid, with a count of what was left out.
#[test]
fn a_flood_of_huge_refused_calls_costs_little_log() {
    let agent = Agent::start(&config(&entry(COMMANDS, 1), FAST));
    let pid = agent.wait_ready(1)[0]["Pid"].as_u64().unwrap() as u32;
    let mut game = agent.game(pid);
    // Just under the SDK's request limit (larger ones are refused before they are read).
    let huge = "x".repeat(60 << 10);
    let before = agent.stderr().len();
    for _ in 0..30 {
        assert_refused(
            &game.call(&format!("accept {huge} psess-none")),
            "does not exist",
        );
    }
    // One more after the window would say how many were suppressed; within it, at most ten
    // lines of a few hundred bytes each were written for 1.8 MB of refused values.
    let log = agent.stderr();
    let grown = log.len() - before;
    assert!(grown < 64 * 1024, "{grown} bytes of log");
    assert!(log.contains("bytes cut"), "values are cut and say so");
    let refusals = log.matches("sdk call refused").count();
    assert!(refusals <= 10, "{refusals} refusal lines");
}
