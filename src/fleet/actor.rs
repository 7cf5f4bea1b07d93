//! The fleet actor: owns [`Fleet`], performs its effects, feeds results back.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep_until, timeout};
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};
use tracing::Instrument;

use super::api::{Control, ControlReply, Effect, FleetError, SdkCall, SdkReply};
use super::state::Fleet;
use crate::config::Config;
use crate::event::EventBus;
use crate::package::RunAs;
use crate::process::{self, ExitInfo, LaunchSpec, ProcessHandle};
use crate::proto::game_server_grpc_sdk_service_client::GameServerGrpcSdkServiceClient;
use crate::proto::{self, gse_response};

/// How long OnProcessTerminate may take before it is given up (the deadline still applies).
const TERMINATE_CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// OnStartGameServerSession may run this much past the activation timeout before it is
/// abandoned (the activation timer has decided by then).
const START_CALL_SLACK: Duration = Duration::from_secs(5);
/// Requests queued for the actor before callers wait.
const REQUEST_QUEUE: usize = 1024;

type Client = GameServerGrpcSdkServiceClient<Channel>;

enum Request {
    Sdk {
        pid: u32,
        call: SdkCall,
        reply: oneshot::Sender<Result<SdkReply, FleetError>>,
    },
    Control {
        cmd: Control,
        reply: oneshot::Sender<Result<ControlReply, FleetError>>,
    },
}

enum Report {
    Exited {
        pid: u32,
        process_id: String,
        info: ExitInfo,
    },
    Health {
        pid: u32,
        healthy: bool,
        detail: String,
    },
    StartResult {
        pid: u32,
        gss_id: String,
        result: Result<(), String>,
    },
}

/// Why a request did not reach the fleet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandleError {
    /// The fleet actor has stopped (agent shutting down).
    #[error("the fleet supervisor has stopped")]
    Stopped,
    /// The fleet refused the request.
    #[error(transparent)]
    Fleet(#[from] FleetError),
}

/// The typed door into the fleet actor; cheap to clone. SDK and control handlers hold only this.
#[derive(Clone)]
pub struct FleetHandle {
    tx: mpsc::Sender<Request>,
}

impl FleetHandle {
    /// An SDK call by `pid`.
    pub async fn sdk(&self, pid: u32, call: SdkCall) -> Result<SdkReply, HandleError> {
        let permit = self.tx.reserve().await.map_err(|_| HandleError::Stopped)?;
        let (reply, rx) = oneshot::channel();
        permit.send(Request::Sdk { pid, call, reply });
        Ok(rx.await.map_err(|_| HandleError::Stopped)??)
    }

    /// A control command.
    pub async fn control(&self, cmd: Control) -> Result<ControlReply, HandleError> {
        let permit = self.tx.reserve().await.map_err(|_| HandleError::Stopped)?;
        let (reply, rx) = oneshot::channel();
        permit.send(Request::Control { cmd, reply });
        Ok(rx.await.map_err(|_| HandleError::Stopped)??)
    }
}

/// Starts the fleet actor. `shutdown` begins the graceful stop (OnProcessTerminate, bounded
/// wait, kill); `force` stops every process at once. The task ends when every process is gone.
pub fn spawn_fleet(
    cfg: Arc<Config>,
    run_as: Option<RunAs>,
    sdk_addr: SocketAddr,
    bus: EventBus,
    shutdown: CancellationToken,
    force: CancellationToken,
) -> (FleetHandle, JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(REQUEST_QUEUE);
    let (report_tx, report_rx) = mpsc::unbounded_channel();
    let actor = Actor {
        fleet: Fleet::new(cfg.clone()),
        base_env: base_env(&cfg, sdk_addr),
        user: run_as.map(|r| (r.uid, r.gid)),
        cfg,
        bus,
        handles: HashMap::new(),
        clients: HashMap::new(),
        report_tx,
    };
    let span = tracing::info_span!("fleet");
    let task = tokio::spawn(actor.run(rx, report_rx, shutdown, force).instrument(span));
    (FleetHandle { tx }, task)
}

/// The environment every game process gets (documented in the README).
pub fn base_env(cfg: &Config, sdk_addr: SocketAddr) -> Vec<(String, String)> {
    let mut env = vec![
        (
            "PATH".to_string(),
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
        ),
        ("HOME".into(), cfg.game_root.display().to_string()),
        ("LANG".into(), "C.UTF-8".into()),
        ("GSE_SDK_ADDRESS".into(), sdk_addr.to_string()),
        ("GSE_FLEET_ID".into(), cfg.fleet_id.clone()),
        ("GSE_INSTANCE_ID".into(), cfg.instance_id.clone()),
        ("GSE_GAME_ROOT".into(), cfg.game_root.display().to_string()),
    ];
    for (k, v) in &cfg.environment {
        env.retain(|(name, _)| name != k);
        env.push((k.clone(), v.clone()));
    }
    env
}

struct Actor {
    fleet: Fleet,
    cfg: Arc<Config>,
    base_env: Vec<(String, String)>,
    user: Option<(u32, u32)>,
    bus: EventBus,
    handles: HashMap<u32, ProcessHandle>,
    clients: HashMap<u32, Client>,
    report_tx: mpsc::UnboundedSender<Report>,
}

impl Actor {
    async fn run(
        mut self,
        mut rx: mpsc::Receiver<Request>,
        mut reports: mpsc::UnboundedReceiver<Report>,
        shutdown: CancellationToken,
        force: CancellationToken,
    ) {
        self.fleet.start();
        self.perform(Instant::now());
        let mut hard_deadline: Option<Instant> = None;
        let mut forced = false;
        while !self.fleet.is_stopped() {
            let next = self.fleet.next_deadline();
            tokio::select! {
                biased;
                Some(report) = reports.recv() => self.report(report),
                () = shutdown.cancelled(), if hard_deadline.is_none() => {
                    let now = Instant::now();
                    self.fleet.begin_shutdown(now);
                    let t = &self.cfg.timeouts;
                    hard_deadline = Some(now + t.shutdown.get() + t.stop_grace.get() + Duration::from_secs(1));
                }
                () = force.cancelled(), if !forced => {
                    forced = true;
                    self.kill_everything();
                }
                () = sleep_until(hard_deadline.unwrap_or_else(Instant::now)), if hard_deadline.is_some() && !forced => {
                    tracing::warn!("shutdown deadline passed; killing the remaining processes");
                    forced = true;
                    self.kill_everything();
                }
                Some(req) = rx.recv() => self.request(req),
                () = sleep_until(next.unwrap_or_else(Instant::now)), if next.is_some() => {}
            }
            // Due timers fire on every turn, so a busy request queue cannot delay them.
            let now = Instant::now();
            self.fleet.tick(now);
            self.perform(now);
        }
        tracing::info!("every server process has ended");
    }

    fn kill_everything(&mut self) {
        self.fleet.stop_all();
        for handle in self.handles.values() {
            handle.stop(Duration::ZERO);
        }
    }

    fn request(&mut self, req: Request) {
        let now = Instant::now();
        match req {
            Request::Sdk { pid, call, reply } => {
                let _ = reply.send(self.fleet.sdk(pid, call, now));
            }
            Request::Control { cmd, reply } => {
                let _ = reply.send(self.fleet.control(cmd, now));
            }
        }
    }

    fn report(&mut self, report: Report) {
        let now = Instant::now();
        match report {
            Report::Exited {
                pid,
                process_id,
                info,
            } => {
                if self
                    .handles
                    .get(&pid)
                    .is_some_and(|h| h.process_id == process_id)
                {
                    self.handles.remove(&pid);
                }
                self.fleet.exited(pid, &process_id, info, now);
            }
            Report::Health {
                pid,
                healthy,
                detail,
            } => self.fleet.health_result(pid, healthy, &detail, now),
            Report::StartResult {
                pid,
                gss_id,
                result,
            } => self.fleet.start_session_result(pid, &gss_id, result, now),
        }
    }

    /// Runs queued effects until none are left (a launch's answer may queue more).
    fn perform(&mut self, now: Instant) {
        loop {
            let effects = self.fleet.take_effects();
            if effects.is_empty() {
                return;
            }
            for effect in effects {
                self.effect(effect, now);
            }
        }
    }

    fn effect(&mut self, effect: Effect, now: Instant) {
        match effect {
            Effect::Launch {
                slot,
                process_id,
                retire_logs_of,
            } => self.launch(slot, process_id, retire_logs_of, now),
            Effect::Stop { pid, grace } => {
                if let Some(h) = self.handles.get(&pid) {
                    h.stop(grace);
                }
            }
            Effect::HealthCheck { pid, grpc_port } => {
                let mut client = self.client(pid, grpc_port);
                let limit = self.cfg.health_check.timeout.get();
                let tx = self.report_tx.clone();
                let span = tracing::debug_span!("health_check", process.pid = pid);
                tokio::spawn(
                    async move {
                        let (healthy, detail) = match timeout(
                            limit,
                            client.on_health_check(proto::HealthCheckRequest {}),
                        )
                        .await
                        {
                            Ok(Ok(r)) if r.get_ref().health_status => (true, "healthy".into()),
                            Ok(Ok(_)) => (false, "healthStatus false".into()),
                            Ok(Err(status)) => (false, format!("rpc error: {}", status.message())),
                            Err(_) => (
                                false,
                                format!("no answer within {}", humantime::format_duration(limit)),
                            ),
                        };
                        let _ = tx.send(Report::Health {
                            pid,
                            healthy,
                            detail,
                        });
                    }
                    .instrument(span),
                );
            }
            Effect::StartSession {
                pid,
                grpc_port,
                session,
            } => {
                let mut client = self.client(pid, grpc_port);
                let limit = self.cfg.runtime.activation_timeout + START_CALL_SLACK;
                let tx = self.report_tx.clone();
                let gss_id = session.game_server_session_id.clone();
                let span =
                    tracing::info_span!("start_session", gss.id = %gss_id, process.pid = pid);
                tokio::spawn(
                    async move {
                        let req = proto::StartGameServerSessionRequest {
                            game_server_session: Some(session),
                        };
                        let result =
                            match timeout(limit, client.on_start_game_server_session(req)).await {
                                Ok(Ok(r)) => gse_result(r.get_ref()),
                                Ok(Err(status)) => Err(format!("rpc error: {}", status.message())),
                                // The activation timer decides; a slow answer is no refusal.
                                Err(_) => return,
                            };
                        let _ = tx.send(Report::StartResult {
                            pid,
                            gss_id,
                            result,
                        });
                    }
                    .instrument(span),
                );
            }
            Effect::Terminate {
                pid,
                grpc_port,
                termination_time,
            } => {
                let mut client = self.client(pid, grpc_port);
                let span = tracing::info_span!("process_terminate", process.pid = pid);
                tokio::spawn(async move {
                    let req = proto::ProcessTerminateRequest { termination_time };
                    match timeout(TERMINATE_CALL_TIMEOUT, client.on_process_terminate(req)).await {
                        Ok(Ok(r)) => {
                            if let Err(e) = gse_result(r.get_ref()) {
                                tracing::warn!(process.pid = pid, error = %e, "OnProcessTerminate answered with an error");
                            }
                        }
                        Ok(Err(status)) => {
                            tracing::warn!(process.pid = pid, error = %status.message(), "OnProcessTerminate failed")
                        }
                        Err(_) => {
                            tracing::warn!(process.pid = pid, "OnProcessTerminate did not answer")
                        }
                    }
                }.instrument(span));
            }
            Effect::Forget { pid } => {
                self.clients.remove(&pid);
            }
            Effect::Emit(event) => self.bus.emit(*event),
        }
    }

    fn client(&mut self, pid: u32, grpc_port: u16) -> Client {
        self.clients
            .entry(pid)
            .or_insert_with(|| {
                let endpoint = Endpoint::from_shared(format!("http://127.0.0.1:{grpc_port}"))
                    .expect("a loopback URI with a numeric port is valid")
                    .connect_timeout(Duration::from_secs(5));
                GameServerGrpcSdkServiceClient::new(endpoint.connect_lazy())
            })
            .clone()
    }

    fn launch(
        &mut self,
        slot: usize,
        process_id: String,
        retire_logs_of: Option<String>,
        now: Instant,
    ) {
        let log_dir = self.cfg.data_dir.join("logs");
        if let Some(old) = retire_logs_of {
            for stream in ["stdout", "stderr"] {
                let path = process::log_path(&log_dir, &old, stream);
                for n in 0..=self.cfg.logs.keep_files {
                    let p = if n == 0 {
                        path.clone()
                    } else {
                        format!("{}.{n}", path.display()).into()
                    };
                    let _ = std::fs::remove_file(p);
                }
            }
        }
        let spec = self.fleet.spec(slot);
        let mut env = self.base_env.clone();
        env.push(("GSE_PROCESS_ID".into(), process_id.clone()));
        let launch = LaunchSpec {
            process_id: process_id.clone(),
            program: spec.program.clone(),
            args: spec.args.clone(),
            env,
            cwd: self.cfg.game_root.clone(),
            log_dir,
            max_log_bytes: self.cfg.logs.max_file_bytes,
            keep_logs: self.cfg.logs.keep_files,
            tail_lines: self.cfg.logs.tail_lines,
            user: self.user,
        };
        let tx = self.report_tx.clone();
        let exited_id = process_id.clone();
        let on_exit = move |pid, info| {
            let _ = tx.send(Report::Exited {
                pid,
                process_id: exited_id,
                info,
            });
        };
        match process::launch(&launch, on_exit) {
            Ok(handle) => {
                let pid = handle.pid;
                self.handles.insert(pid, handle);
                self.fleet.spawned(slot, process_id, pid, now);
            }
            Err(e) => {
                let invalid = matches!(e, process::SpawnError::InvalidPath { .. });
                self.fleet
                    .spawn_failed(slot, process_id, invalid, e.to_string(), now);
            }
        }
    }
}

fn gse_result(r: &proto::GseResponse) -> Result<(), String> {
    if r.status == gse_response::Status::Ok as i32 {
        Ok(())
    } else {
        Err(format!(
            "status {}: {}",
            gse_response::Status::try_from(r.status)
                .map(|s| s.as_str_name())
                .unwrap_or("unknown"),
            r.error_message
        ))
    }
}
