//! Conformance: every example game of `examples/` (one per language GSE taught, each on its
//! own gRPC stack) runs the whole GSE lifecycle under `gse-agent run` with the default
//! config, caller verification on: ProcessReady, health checks, a session created through the
//! control API and activated from inside OnStartGameServerSession, a player reserved, connected
//! over the client port and accepted (and a made-up player refused, which the game must read
//! as a failure whichever copy of the protos it was built on), the session ended,
//! OnProcessTerminate answered with TerminateGameServerSession and ProcessEnding, and the exit
//! classified as ended. A stranger claiming the game's pid, over either socket family, is
//! refused while the game itself is not.

use gse_agent::proto;
use gse_agent::proto::gse_grpc_sdk_service_client::GseGrpcSdkServiceClient;
use serde_json::{Value, json};

use crate::helper::examples::{Protos, copy_build};
use crate::helper::{Agent, connect_player, wait_for};

/// One example game and how the agent launches it (as its README says).
struct Example {
    name: &'static str,
    protos: Protos,
    launch_path: &'static str,
    parameters: &'static str,
}

#[test]
fn the_cpp_game_on_grpc_c_core() {
    lifecycle(&Example {
        name: "cpp",
        protos: Protos::Documented,
        launch_path: "/local/game/game-server",
        parameters: "",
    });
}

#[test]
fn the_java_game_on_grpc_java() {
    lifecycle(&Example {
        name: "java",
        protos: Protos::Documented,
        launch_path: "/local/game/java",
        parameters: "-cp /local/game/game-server.jar:/local/game/lib/* GameServer",
    });
}

#[test]
fn the_go_game_on_grpc_go() {
    lifecycle(&Example {
        name: "go",
        protos: Protos::Documented,
        launch_path: "/local/game/game-server",
        parameters: "",
    });
}

#[test]
fn the_python_game_on_grpcio() {
    lifecycle(&Example {
        name: "python",
        protos: Protos::Documented,
        launch_path: "/local/game/python3",
        parameters: "game_server.py",
    });
}

/// Built on the SDK copy whose `GseResponse` is empty: it reads only the RPC's status, and
/// still sees the made-up player refused.
#[test]
fn the_python_game_built_on_the_empty_gse_response() {
    lifecycle(&Example {
        name: "python",
        protos: Protos::EmptyResponse,
        launch_path: "/local/game/python3",
        parameters: "game_server.py",
    });
}

#[test]
fn the_node_game_on_grpc_js() {
    lifecycle(&Example {
        name: "node",
        protos: Protos::Documented,
        launch_path: "/local/game/node",
        parameters: "game_server.js",
    });
}

fn lifecycle(example: &Example) {
    if !nix::unistd::geteuid().is_root() {
        // install.sh links the runtime into /local/game, which is the build's own only in the
        // private mount namespace a root agent makes (CI runs the tests as root).
        eprintln!("skipped: the example games need a root agent for /local/game");
        return;
    }
    let entry = format!(
        "    - LaunchPath: {}\n      Parameters: \"{}\"\n      ConcurrentExecutions: 1\n",
        example.launch_path, example.parameters
    );
    // The default config but for short health checks and a bounded stop.
    let yaml = crate::helper::config(
        &entry,
        "build: build
health-check: { interval: 300ms, timeout: 5s, failure-threshold: 3 }
timeouts: { process-ready: 2m, process-exit: 10s, stop-grace: 5s, shutdown: 10s }",
    );
    assert!(
        !yaml.contains("sdk-verify-callers"),
        "verification stays on"
    );
    let mut agent = Agent::prepared(&yaml, |game| std::fs::remove_dir_all(game).unwrap());
    copy_build(example.name, example.protos, &agent.path("build"));
    agent.spawn();
    let what = format!("examples/{} ({:?} protos)", example.name, example.protos);

    // ProcessReady, answered; then health checks.
    let process = wait_for(&format!("{what}: ProcessReady"), || {
        let p = agent.processes().into_iter().next()?;
        (p["Status"] == "ACTIVE" && agent.game_said(&p, "ready: clientPort")).then_some(p)
    });
    let pid = process["Pid"].as_u64().unwrap() as u32;
    strangers_are_refused(&agent, pid, &what);
    wait_for(&format!("{what}: health checks"), || {
        let p = agent.processes().into_iter().next()?;
        (p["HealthChecksPassed"].as_u64()? >= 2 && p["Healthy"] == true).then_some(())
    });

    // A session, activated from inside the callback.
    let session = agent.create_session(4);
    let id = session["GameServerSessionId"].as_str().unwrap().to_string();
    let active = agent.wait_session_status(&id, "ACTIVE");
    wait_for(
        &format!("{what}: the game's word that it activated"),
        || {
            agent
                .game_said(&process, &format!("activated: {id}"))
                .then_some(())
        },
    );
    let port = active["Port"].as_u64().unwrap() as u16;

    // A player reserved, connected and accepted; a made-up one refused.
    let player = agent.ok(json!({
        "Action": "JoinGameServerSession",
        "GameServerSessionId": id,
        "PlayerId": "alice",
    }))["PlayerSession"]
        .clone();
    let psid = player["PlayerSessionId"].as_str().unwrap();
    assert_eq!(player["Status"], "RESERVED", "{what}: {player}");
    let (_conn, answer) = connect_player(port, psid);
    assert_eq!(answer, format!("welcome {psid}"), "{what}");
    assert_eq!(player_status(&agent, psid), "ACTIVE", "{what}");
    let (_conn, answer) = connect_player(port, "psess-made-up");
    assert!(
        answer.starts_with("refused: ") && answer.contains("psess-made-up"),
        "{what}: the game reads a refusal as a failure: {answer:?}"
    );

    // The session and the process end, as GSE's tutorials end them.
    agent.ok(json!({"Action": "EndGameServerSessionAndProcess", "GameServerSessionId": id}));
    let ended = agent.wait_event("SERVER_PROCESS_ENDED");
    for line in [
        "terminate: ".to_string(),
        format!("session terminated: {id}"),
        "ending".to_string(),
    ] {
        assert!(agent.game_said(&process, &line), "{what}: {line:?}");
    }
    assert_eq!(agent.count("SERVER_PROCESS_ENDING"), 1, "{what}");
    assert_eq!(agent.count("SERVER_PROCESS_CRASHED"), 0, "{what}: {ended}");
    assert_eq!(agent.session(&id)["Status"], "TERMINATED", "{what}");
    assert_eq!(player_status(&agent, psid), "COMPLETED", "{what}");
}

fn player_status(agent: &Agent, psid: &str) -> Value {
    agent.ok(json!({"Action": "DescribePlayerSessions", "PlayerSessionId": psid}))["PlayerSessions"]
        [0]["Status"]
        .clone()
}

/// This test process claims the game's pid from an AF_INET socket and from a dual-stack
/// AF_INET6 one (`::ffff:127.0.0.1`): both are refused, naming the rule.
fn strangers_are_refused(agent: &Agent, pid: u32, what: &str) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let port = agent.sdk.port();
    for target in [
        format!("http://127.0.0.1:{port}"),
        format!("http://[::ffff:127.0.0.1]:{port}"),
    ] {
        let refused = rt.block_on(async {
            let mut client = GseGrpcSdkServiceClient::connect(target.clone())
                .await
                .unwrap_or_else(|e| panic!("{what}: connect to {target}: {e}"));
            let mut request = tonic::Request::new(proto::ProcessReadyRequest {
                log_paths_to_upload: vec![],
                client_port: 7000,
                grpc_port: 7001,
            });
            request
                .metadata_mut()
                .insert("pid", pid.to_string().parse().unwrap());
            request
                .metadata_mut()
                .insert("requestid", "stranger".parse().unwrap());
            client.process_ready(request).await
        });
        let status = refused.expect_err("a stranger is refused");
        assert_eq!(
            status.code(),
            tonic::Code::PermissionDenied,
            "{what} via {target}: {status:?}"
        );
        assert!(
            status.message().contains("not held by that process"),
            "{what} via {target}: {status:?}"
        );
    }
}
