//! SDK calls on request: a test connects to the port written to `--command-dir` and sends one
//! command per line; the game makes the call *from its own process* (so the agent's caller
//! verification sees the real game) and answers with one JSON line.
//!
//! Commands (a leading `as:PID ` claims another pid in the metadata):
//! `ready CLIENT_PORT GRPC_PORT`, `activate GSS MAX_PLAYERS`, `accept GSS PLAYER_SESSION`,
//! `policy GSS POLICY`, `custom CURRENT MAX`, `terminate GSS`, `ending`, `describe LIMIT`,
//! `load ADDRESS CONNECTIONS IN_FLIGHT SECONDS` (see `load`), `helper-ready [UID]`: a helper
//! process in the game's process group (running as `UID` when given; the game must be root for
//! that) calls ProcessReady with its own pid, and `join-group PGID`: the game tries to move
//! itself into process group `PGID` (`setpgid`), answering `{"joined": true}` or
//! `{"error": "..."}`, and `read PATH`: the game tries to read a file, answering
//! `{"bytes": N}` or `{"error": "..."}`. Answers: `{"status": 0|1, "message": "..."}` for GseResponse calls,
//! `{"players": N}` for describe, `{"grpc": "CODE", "message": "..."}` when the call failed.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use gse_agent::proto::{self, GseResponse};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tonic::{Response, Status};

use crate::{Game, Sdk};

/// Listens on a free loopback port, writes it to `dir/<pid>` and serves commands.
pub async fn start(dir: &Path, game: Arc<Game>) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).context("cannot create the command directory")?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let pid = std::process::id();
    let tmp = dir.join(format!(".{pid}.tmp"));
    std::fs::write(&tmp, port.to_string()).context("cannot write the command port")?;
    std::fs::rename(&tmp, dir.join(pid.to_string())).context("cannot publish the command port")?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let game = game.clone();
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut lines = BufReader::new(read).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    let answer = run(&game, line.trim()).await;
                    if write
                        .write_all(format!("{answer}\n").as_bytes())
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    Ok(())
}

fn answer(r: Result<Response<GseResponse>, Status>) -> Value {
    match r {
        Ok(r) => {
            let r = r.into_inner();
            json!({"status": r.status, "message": r.error_message})
        }
        Err(s) => json!({"grpc": format!("{:?}", s.code()), "message": s.message()}),
    }
}

async fn run(game: &Game, line: &str) -> Value {
    let (pid, line) = match line.strip_prefix("as:").and_then(|r| r.split_once(' ')) {
        Some((pid, rest)) => match pid.parse::<u32>() {
            Ok(pid) => (pid, rest),
            Err(_) => return json!({"error": format!("bad pid {pid:?}")}),
        },
        None => (std::process::id(), line),
    };
    let words: Vec<&str> = line.split(' ').collect();
    if let Some(answer) = sdk_command(game, pid, &words).await {
        return answer;
    }
    let arg = |i: usize| words.get(i).copied().unwrap_or_default().to_string();
    match words[0] {
        "helper-ready" => {
            let uid = match words.get(1).map(|u| u.parse::<u32>()) {
                None => None,
                Some(Ok(uid)) => Some(uid),
                Some(Err(e)) => return json!({"error": format!("bad uid {:?}: {e}", arg(1))}),
            };
            helper_ready(&game.sdk_address, uid).await
        }
        "join-group" => match arg(1).parse::<i32>() {
            Ok(pgid) => match nix::unistd::setpgid(
                nix::unistd::Pid::from_raw(0),
                nix::unistd::Pid::from_raw(pgid),
            ) {
                Ok(()) => json!({"joined": true}),
                Err(e) => json!({"error": format!("setpgid(0, {pgid}): {e}")}),
            },
            Err(e) => json!({"error": format!("bad process group {:?}: {e}", arg(1))}),
        },
        "read" => match std::fs::read(words[1..].join(" ")) {
            Ok(bytes) => json!({"bytes": bytes.len()}),
            Err(e) => json!({"error": e.to_string()}),
        },
        "load" => match crate::load::Load::parse(&words[1..]) {
            // Its own runtime on its own thread: the game's stays free to answer.
            Ok(load) => tokio::task::spawn_blocking(move || load.run())
                .await
                .unwrap_or_else(|e| json!({"error": e.to_string()})),
            Err(e) => json!({"error": e}),
        },
        other => json!({"error": format!("unknown command {other:?}")}),
    }
}

/// A command that is one SDK call (`ready`, `activate`, `accept`, `policy`, `custom`,
/// `terminate`, `ending`, `describe`) made as `pid`, answered; `None` for any other word.
async fn sdk_command(game: &Game, pid: u32, words: &[&str]) -> Option<Value> {
    let arg = |i: usize| words.get(i).copied().unwrap_or_default().to_string();
    let num = |i: usize| arg(i).parse::<i32>().unwrap_or_default();
    let mut c = game.sdk.client.clone();
    Some(match words[0] {
        "ready" => answer(
            c.process_ready(Sdk::req_as(
                pid,
                proto::ProcessReadyRequest {
                    log_paths_to_upload: vec![],
                    client_port: num(1),
                    grpc_port: num(2),
                },
            ))
            .await,
        ),
        "activate" => answer(
            c.activate_game_server_session(Sdk::req_as(
                pid,
                proto::ActivateGameServerSessionRequest {
                    game_server_session_id: arg(1),
                    max_players: num(2),
                },
            ))
            .await,
        ),
        "accept" => answer(
            c.accept_player_session(Sdk::req_as(
                pid,
                proto::AcceptPlayerSessionRequest {
                    game_server_session_id: arg(1),
                    player_session_id: arg(2),
                },
            ))
            .await,
        ),
        "policy" => answer(
            c.update_player_session_creation_policy(Sdk::req_as(
                pid,
                proto::UpdatePlayerSessionCreationPolicyRequest {
                    game_server_session_id: arg(1),
                    new_player_session_creation_policy: arg(2),
                },
            ))
            .await,
        ),
        "custom" => answer(
            c.report_custom_data(Sdk::req_as(
                pid,
                proto::ReportCustomDataRequest {
                    current_custom_count: num(1),
                    max_custom_count: num(2),
                },
            ))
            .await,
        ),
        "terminate" => answer(
            c.terminate_game_server_session(Sdk::req_as(
                pid,
                proto::TerminateGameServerSessionRequest {
                    game_server_session_id: arg(1),
                },
            ))
            .await,
        ),
        "ending" => answer(
            c.process_ending(Sdk::req_as(pid, proto::ProcessEndingRequest {}))
                .await,
        ),
        "describe" => match c
            .describe_player_sessions(Sdk::req_as(
                pid,
                proto::DescribePlayerSessionsRequest {
                    limit: num(1),
                    ..Default::default()
                },
            ))
            .await
        {
            Ok(r) => json!({"players": r.into_inner().player_sessions.len()}),
            Err(s) => json!({"grpc": format!("{:?}", s.code()), "message": s.message()}),
        },
        _ => return None,
    })
}

/// Runs a helper (this program, `--helper-ready`) in the game's process group, as `uid` when
/// given, and returns the answer it printed.
async fn helper_ready(sdk_address: &std::net::SocketAddr, uid: Option<u32>) -> Value {
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => return json!({"error": e.to_string()}),
    };
    let address = sdk_address.to_string();
    let out = tokio::task::spawn_blocking(move || {
        let mut helper = std::process::Command::new(exe);
        helper.args(["--helper-ready", "--sdk-address", &address]);
        if let Some(uid) = uid {
            use std::os::unix::process::CommandExt;
            helper.uid(uid);
        }
        helper.output()
    })
    .await;
    match out.unwrap_or_else(|e| Err(std::io::Error::other(e))) {
        Ok(out) => serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|_| json!({"error": String::from_utf8_lossy(&out.stderr).to_string()})),
        Err(e) => json!({"error": e.to_string()}),
    }
}

/// The helper's side of `helper-ready`: ProcessReady with this process's pid, answer printed.
pub async fn be_helper(sdk_address: std::net::SocketAddr) -> anyhow::Result<()> {
    let mut c = proto::gse_grpc_sdk_service_client::GseGrpcSdkServiceClient::connect(format!(
        "http://{sdk_address}"
    ))
    .await?;
    let r = c
        .process_ready(Sdk::req(proto::ProcessReadyRequest {
            log_paths_to_upload: vec![],
            client_port: 7000,
            grpc_port: 7001,
        }))
        .await;
    println!("{}", answer(r));
    Ok(())
}
