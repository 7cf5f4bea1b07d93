//! `gse-fake-server`: a GSE game server that misbehaves on request.
//!
//! It speaks the real GSE gRPC SDK (generated stubs): serves `GameServerGrpcSdkService`, calls
//! ProcessReady, activates the sessions it is handed, accepts players on its client port, and
//! ends matches with TerminateGameServerSession and ProcessEnding. Flags make it crash, hang,
//! lie about its health, skip steps, ignore SIGTERM, fork or flood its output, so operators
//! and tests can rehearse every failure the agent handles. `--help` lists them.

#![deny(unsafe_code)]

mod args;
mod commands;
mod load;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use gse_agent::proto::game_server_grpc_sdk_service_server::{
    GameServerGrpcSdkService, GameServerGrpcSdkServiceServer,
};
use gse_agent::proto::gse_grpc_sdk_service_client::GseGrpcSdkServiceClient;
use gse_agent::proto::{self, GseResponse, gse_response};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use args::{Args, CrashAt, CrashWith, Health};

static STAMP: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();

fn stamp(what: &str) {
    if let Some(path) = STAMP.get() {
        let ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let line = format!("{what} {ns}\n");
        let _ = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .and_then(|mut f| std::io::Write::write_all(&mut f, line.as_bytes()));
    }
}

fn crash(how: CrashWith, at: &str) -> ! {
    // Not `eprintln!`: it panics when stderr refuses the line (a full disk), and a panic in
    // a task would not end the process.
    let _ = std::io::Write::write_all(
        &mut std::io::stderr(),
        format!("gse-fake-server: crashing {at} ({how:?})\n").as_bytes(),
    );
    stamp("exit");
    match how {
        CrashWith::Exit(code) => std::process::exit(code),
        CrashWith::Signal(sig) => {
            restore_default_action(sig);
            let _ = nix::sys::signal::raise(sig);
            // A signal whose default action is not fatal: end with its number anyway.
            std::process::exit(128 + sig as i32)
        }
    }
}

/// Rust's runtime handles SIGSEGV/SIGBUS itself (stack-overflow detection); restore the
/// default action so raising the signal really kills the process with it.
#[allow(unsafe_code)]
fn restore_default_action(sig: nix::sys::signal::Signal) {
    use nix::sys::signal::{SigHandler, signal};
    // SAFETY: installing SIG_DFL runs no handler code, so no async-signal-safety rule applies;
    // the process is about to die of this signal anyway.
    let _ = unsafe { signal(sig, SigHandler::SigDfl) };
}

/// The SDK client with the metadata GSE requires on every call.
#[derive(Clone)]
struct Sdk {
    client: GseGrpcSdkServiceClient<Channel>,
}

impl Sdk {
    fn req<T>(msg: T) -> Request<T> {
        Self::req_as(std::process::id(), msg)
    }

    /// A request whose metadata claims `pid`.
    fn req_as<T>(pid: u32, msg: T) -> Request<T> {
        let mut r = Request::new(msg);
        let md = r.metadata_mut();
        md.insert("pid", pid.to_string().parse().expect("digits"));
        md.insert(
            "requestid",
            uuid::Uuid::new_v4()
                .to_string()
                .parse()
                .expect("uuid is ascii"),
        );
        r
    }

    async fn check(what: &str, r: Result<Response<GseResponse>, Status>) -> anyhow::Result<()> {
        let r = r.with_context(|| format!("{what} failed"))?.into_inner();
        if r.status != gse_response::Status::Ok as i32 {
            bail!("{what} refused: {}", r.error_message);
        }
        Ok(())
    }
}

struct Game {
    args: Args,
    sdk: Sdk,
    sdk_address: SocketAddr,
    session: Mutex<Option<String>>,
    health_checks: Mutex<u64>,
}

impl Game {
    async fn activate(self: Arc<Self>, gss_id: String, max_players: i32) {
        if let Some(d) = self.args.activation_delay {
            tokio::time::sleep(d).await;
        }
        if self.args.crash_at == CrashAt::OnActivate {
            crash(self.args.crash_with, "on activation");
        }
        let mut sdk = self.sdk.clone();
        let r = sdk
            .client
            .activate_game_server_session(Sdk::req(proto::ActivateGameServerSessionRequest {
                game_server_session_id: gss_id.clone(),
                max_players,
            }))
            .await;
        match Sdk::check("ActivateGameServerSession", r).await {
            Ok(()) => {
                println!("activated {gss_id}");
                if let Some(d) = self.args.match_duration {
                    let game = self.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(d).await;
                        game.end_match(!game.args.keep_running).await;
                    });
                }
            }
            Err(e) => eprintln!("{e:#}"),
        }
    }

    /// TerminateGameServerSession, then (optionally) ProcessEnding and exit.
    async fn end_match(&self, end_process: bool) {
        let session = self.session.lock().expect("not poisoned").take();
        let mut sdk = self.sdk.clone();
        if let Some(id) = session {
            let r = sdk
                .client
                .terminate_game_server_session(Sdk::req(proto::TerminateGameServerSessionRequest {
                    game_server_session_id: id.clone(),
                }))
                .await;
            match Sdk::check("TerminateGameServerSession", r).await {
                Ok(()) => println!("terminated {id}"),
                Err(e) => eprintln!("{e:#}"),
            }
        }
        if end_process {
            let r = sdk
                .client
                .process_ending(Sdk::req(proto::ProcessEndingRequest {}))
                .await;
            if let Err(e) = Sdk::check("ProcessEnding", r).await {
                eprintln!("{e:#}");
            }
            if self.args.hang_after_ending {
                println!("ProcessEnding called; hanging");
                return;
            }
            println!("ProcessEnding called; exiting");
            std::process::exit(0);
        }
    }
}

#[derive(Clone)]
struct Callbacks(Arc<Game>);

fn ok() -> Response<GseResponse> {
    Response::new(GseResponse {
        status: gse_response::Status::Ok as i32,
        response_data: "SUCCESS".into(),
        error_message: String::new(),
    })
}

#[tonic::async_trait]
impl GameServerGrpcSdkService for Callbacks {
    async fn on_health_check(
        &self,
        _: Request<proto::HealthCheckRequest>,
    ) -> Result<Response<proto::HealthCheckResponse>, Status> {
        let n = {
            let mut n = self.0.health_checks.lock().expect("not poisoned");
            *n += 1;
            *n
        };
        let mode = if n <= self.0.args.healthy_checks {
            Health::Healthy
        } else {
            self.0.args.health
        };
        match mode {
            Health::Healthy => Ok(Response::new(proto::HealthCheckResponse {
                health_status: true,
            })),
            Health::Unhealthy => Ok(Response::new(proto::HealthCheckResponse {
                health_status: false,
            })),
            Health::Hang => std::future::pending().await,
        }
    }

    async fn on_start_game_server_session(
        &self,
        request: Request<proto::StartGameServerSessionRequest>,
    ) -> Result<Response<GseResponse>, Status> {
        let game = &self.0;
        if game.args.crash_at == CrashAt::OnSessionStart {
            crash(game.args.crash_with, "on session start");
        }
        let Some(s) = request.into_inner().game_server_session else {
            return Err(Status::invalid_argument("no gameServerSession"));
        };
        println!(
            "session {} port {} maxPlayers {} properties {}",
            s.game_server_session_id,
            s.port,
            s.max_players,
            s.game_properties.len()
        );
        if game.args.refuse_sessions {
            return Ok(Response::new(GseResponse {
                status: gse_response::Status::Error500 as i32,
                response_data: String::new(),
                error_message: "refused by --refuse-sessions".into(),
            }));
        }
        *game.session.lock().expect("not poisoned") = Some(s.game_server_session_id.clone());
        if !game.args.skip_activation {
            // Like the GSE samples: activate from inside the callback, before answering.
            game.clone()
                .activate(s.game_server_session_id, s.max_players)
                .await;
        }
        Ok(ok())
    }

    async fn on_process_terminate(
        &self,
        request: Request<proto::ProcessTerminateRequest>,
    ) -> Result<Response<GseResponse>, Status> {
        let t = request.into_inner().termination_time;
        println!("OnProcessTerminate terminationTime {t}");
        if !self.0.args.ignore_terminate {
            let game = self.0.clone();
            tokio::spawn(async move { game.end_match(true).await });
        }
        Ok(ok())
    }
}

async fn serve_players(listener: TcpListener, game: Arc<Game>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let game = game.clone();
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut lines = BufReader::new(read).lines();
            let Ok(Some(ps_id)) = lines.next_line().await else {
                return;
            };
            let ps_id = ps_id.trim().to_string();
            let Some(gss_id) = game.session.lock().expect("not poisoned").clone() else {
                let _ = write.write_all(b"ERR no game server session\n").await;
                return;
            };
            let mut sdk = game.sdk.clone();
            let r = sdk
                .client
                .accept_player_session(Sdk::req(proto::AcceptPlayerSessionRequest {
                    game_server_session_id: gss_id.clone(),
                    player_session_id: ps_id.clone(),
                }))
                .await;
            if let Err(e) = Sdk::check("AcceptPlayerSession", r).await {
                let _ = write.write_all(format!("ERR {e:#}\n").as_bytes()).await;
                return;
            }
            let _ = write.write_all(b"OK\n").await;
            // The player stays until the client hangs up.
            while let Ok(Some(_)) = lines.next_line().await {}
            let r = sdk
                .client
                .remove_player_session(Sdk::req(proto::RemovePlayerSessionRequest {
                    game_server_session_id: gss_id,
                    player_session_id: ps_id,
                }))
                .await;
            if let Err(e) = Sdk::check("RemovePlayerSession", r).await {
                eprintln!("{e:#}");
            }
        });
    }
}

fn grandchild(ignore_sigterm: bool) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        if ignore_sigterm {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
            loop {
                term.recv().await;
            }
        }
        std::future::pending::<()>().await;
        anyhow::Ok(())
    })
}

/// Writes `rate` bytes a second to stdout in numbered lines, 100 writes a second, and never
/// stops; failed writes are counted, not retried.
fn spew_forever(rate: u64) {
    let stdout = std::io::stdout();
    let mut line = 0u64;
    let mut failed = 0u64;
    loop {
        let mut chunk = String::new();
        while (chunk.len() as u64) < (rate / 100).max(1) {
            line += 1;
            chunk.push_str(&format!(
                "spew line {line:010} (failed writes so far: {failed})\n"
            ));
        }
        if nix::unistd::write(&stdout, chunk.as_bytes()).is_err() {
            failed += 1;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(path) = &args.stamp {
        let _ = STAMP.set(path.clone());
        stamp("start");
    }
    if args.grandchild {
        if args.setsid {
            nix::unistd::setsid().context("setsid")?;
        }
        return grandchild(args.ignore_sigterm);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(run(args))
}

fn sdk_address(args: &Args) -> SocketAddr {
    match args.sdk_address {
        Some(a) => a,
        None => std::env::var("GSE_SDK_ADDRESS")
            .ok()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 5758))),
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    if args.helper_ready {
        return commands::be_helper(sdk_address(&args)).await;
    }
    act_at_start(&args)?;
    on_sigterm(args.ignore_sigterm)?;
    if let CrashAt::After(d) = args.crash_at {
        let how = args.crash_with;
        tokio::spawn(async move {
            tokio::time::sleep(d).await;
            crash(how, "on timer");
        });
    }
    if args.crash_at == CrashAt::BeforeReady {
        crash(args.crash_with, "before ProcessReady");
    }

    let sdk_address = sdk_address(&args);
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{sdk_address}"))?.connect_lazy();
    let sdk = Sdk {
        client: GseGrpcSdkServiceClient::new(channel),
    };
    let game = Arc::new(Game {
        args: args.clone(),
        sdk: sdk.clone(),
        sdk_address,
        session: Mutex::new(None),
        health_checks: Mutex::new(0),
    });

    let grpc = TcpListener::bind("127.0.0.1:0").await?;
    let grpc_port = grpc.local_addr()?.port();
    let callbacks = GameServerGrpcSdkServiceServer::new(Callbacks(game.clone()));
    tokio::spawn(async move {
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(grpc);
        if let Err(e) = tonic::transport::Server::builder()
            .add_service(callbacks)
            .serve_with_incoming(incoming)
            .await
        {
            eprintln!("callback server failed: {e}");
        }
    });
    if let Some(dir) = &args.command_dir {
        commands::start(dir, game.clone()).await?;
    }
    let client_port = if args.accept_players {
        let players = TcpListener::bind(("0.0.0.0", args.client_port)).await?;
        let port = players.local_addr()?.port();
        tokio::spawn(serve_players(players, game.clone()));
        port
    } else if args.client_port == 0 {
        7777
    } else {
        args.client_port
    };

    if !args.no_ready {
        let mut client = sdk.client.clone();
        let r = client
            .process_ready(Sdk::req(proto::ProcessReadyRequest {
                log_paths_to_upload: args.log_path.clone(),
                client_port: i32::from(client_port),
                grpc_port: i32::from(grpc_port),
            }))
            .await;
        Sdk::check("ProcessReady", r).await?;
        println!("ready: clientPort {client_port} grpcPort {grpc_port}");
        if args.crash_at == CrashAt::AfterReady {
            crash(args.crash_with, "after ProcessReady");
        }
    }
    std::future::pending::<()>().await;
    Ok(())
}

/// What the flags ask for before the SDK: say, write files, spew output, fork grandchildren.
fn act_at_start(args: &Args) -> anyhow::Result<()> {
    if let Some(text) = &args.say {
        println!("{text}");
        eprintln!("{text}");
    }
    for (path, text) in &args.write_file {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("cannot write {}", path.display()))?;
        std::io::Write::write_all(&mut f, format!("{text}\n").as_bytes())?;
    }
    if args.spew_bytes > 0 {
        let line = "spew spew spew spew spew spew spew spew spew spew spew spew spew spew spew\n";
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        let mut written = 0;
        while written < args.spew_bytes {
            std::io::Write::write_all(&mut out, line.as_bytes())?;
            written += line.len() as u64;
        }
        std::io::Write::flush(&mut out)?;
        eprintln!("spewed {written} bytes");
    }
    if args.spew_rate > 0 {
        let rate = args.spew_rate;
        std::thread::spawn(move || spew_forever(rate));
    }
    for _ in 0..args.fork {
        let mut cmd = std::process::Command::new(std::env::current_exe()?);
        cmd.arg("--grandchild");
        if args.ignore_sigterm {
            cmd.arg("--ignore-sigterm");
        }
        cmd.spawn().context("cannot fork a grandchild")?;
    }
    for _ in 0..args.fork_setsid {
        let child = std::process::Command::new(std::env::current_exe()?)
            .args(["--grandchild", "--setsid"])
            .spawn()
            .context("cannot fork a setsid grandchild")?;
        println!("setsid-child: {}", child.id());
    }
    Ok(())
}

/// A handler replaces SIGTERM's default action: exit, or ignore.
fn on_sigterm(ignore_sigterm: bool) -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::spawn(async move {
        loop {
            term.recv().await;
            if ignore_sigterm {
                println!("SIGTERM ignored");
            } else {
                println!("SIGTERM: exiting");
                std::process::exit(0);
            }
        }
    });
    Ok(())
}
