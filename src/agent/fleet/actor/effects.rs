//! Performing the state's effects: launches on the blocking pool, stops and signals, the
//! callbacks into the game, log archives and events.

use std::time::Duration;

use tonic::transport::Endpoint;
use tracing::Instrument;

use super::{Actor, Client, Report, START_CALL_SLACK, callbacks};
use crate::agent::fleet::api::Effect;
use crate::agent::process::{self, LaunchSpec};
use crate::proto::game_server_grpc_sdk_service_client::GameServerGrpcSdkServiceClient;

impl Actor {
    /// Runs queued effects until none are left.
    pub(super) fn perform(&mut self) {
        loop {
            let effects = self.fleet.take_effects();
            if effects.is_empty() {
                return;
            }
            self.touch();
            for effect in effects {
                self.effect(effect);
            }
        }
    }

    fn effect(&mut self, effect: Effect) {
        match effect {
            Effect::Launch {
                slot,
                serial,
                process_id,
                retire_logs_of,
            } => self.launch(slot, serial, process_id, retire_logs_of),
            Effect::Stop { serial, grace } => {
                if let Some(h) = self.handles.get(&serial) {
                    h.stop(grace);
                }
            }
            Effect::Signal {
                serial,
                signal,
                group,
            } => {
                if let Some(h) = self.handles.get(&serial) {
                    tracing::info!(
                        process.serial = serial,
                        signal = signal.as_str(),
                        group,
                        "crash rehearsal: signalling"
                    );
                    h.signal(signal, group);
                }
            }
            Effect::HealthCheck { serial, grpc_port } => {
                let client = self.client(serial, grpc_port);
                let limit = self.cfg.health_check.timeout.get();
                let tx = self.report_tx.clone();
                let span = tracing::debug_span!("health_check", process.serial = serial);
                tokio::spawn(
                    async move {
                        let (healthy, detail) = callbacks::health_check(client, limit).await;
                        let _ = tx.send(Report::Health {
                            serial,
                            healthy,
                            detail,
                        });
                    }
                    .instrument(span),
                );
            }
            Effect::StartSession {
                serial,
                grpc_port,
                session,
                fault,
            } => {
                let client = self.client(serial, grpc_port);
                let limit = self.cfg.runtime.activation_timeout + START_CALL_SLACK;
                let tx = self.report_tx.clone();
                let gss_id = session.game_server_session_id.clone();
                let span =
                    tracing::info_span!("start_session", gss.id = %gss_id, process.serial = serial);
                tokio::spawn(
                    async move {
                        // No answer in time: the activation timer decides.
                        if let Some(result) =
                            callbacks::start_session(client, limit, session, fault).await
                        {
                            let _ = tx.send(Report::StartResult {
                                serial,
                                gss_id,
                                result,
                            });
                        }
                    }
                    .instrument(span),
                );
            }
            Effect::Terminate {
                serial,
                grpc_port,
                termination_time,
            } => {
                let client = self.client(serial, grpc_port);
                let span = tracing::info_span!("process_terminate", process.serial = serial);
                tokio::spawn(
                    callbacks::process_terminate(client, termination_time).instrument(span),
                );
            }
            Effect::Forget { serial } => {
                self.clients.remove(&serial);
            }
            Effect::ArchiveLogs { serial, mut job } => {
                job.build = self.builds.remove(&serial);
                self.log_jobs.submit(*job);
            }
            Effect::Emit(event) => self.bus.emit(*event),
            Effect::Changed(change) => self.bus.changed(change),
        }
    }

    fn client(&mut self, serial: u64, grpc_port: u16) -> Client {
        self.clients
            .entry(serial)
            .or_insert_with(|| {
                let endpoint = Endpoint::from_shared(format!("http://127.0.0.1:{grpc_port}"))
                    .expect("a loopback URI with a numeric port is valid")
                    .connect_timeout(Duration::from_secs(5));
                GameServerGrpcSdkServiceClient::new(endpoint.connect_lazy())
            })
            .clone()
    }

    /// Starts a launch on the blocking pool; its result comes back as [`Report::Launched`].
    fn launch(
        &mut self,
        slot: usize,
        serial: u64,
        process_id: String,
        retire_logs_of: Option<String>,
    ) {
        let log_dir = self.cfg.data_dir.join("logs");
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
            max_log_bytes: self.cfg.logs.max_file_bytes.get(),
            keep_logs: self.cfg.logs.keep_files,
            tail_lines: self.cfg.logs.tail_lines,
            user: self.user,
            local_game: Some(self.cfg.game_root.clone()),
        };
        let keep_logs = self.cfg.logs.keep_files;
        // Behind the old process's archive, which takes its output first; removed here only
        // when the archiver cannot take it.
        let retire_logs_of = retire_logs_of.filter(|old| !self.log_jobs.retire(old.clone()));
        let on_exit = self.on_exit(serial);
        let tx = self.report_tx.clone();
        self.launching.insert(serial, None);
        tokio::task::spawn_blocking(move || {
            // A panic must still be reported: the slot would stay in flight for good, and
            // the actor would never end.
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                process::launch(&launch, on_exit)
            }))
            .unwrap_or_else(|_| {
                Err(process::SpawnError::Spawn {
                    path: launch.program.clone(),
                    source: std::io::Error::other("the launch panicked"),
                })
            });
            // Read as close to the spawn as can be: a DeployBuild moves the link, not the
            // process.
            let build = std::fs::canonicalize(&launch.cwd).ok();
            // The actor ends only once no launch is under way, so this is received.
            let _ = tx.send(Report::Launched {
                slot,
                serial,
                process_id,
                result,
                build,
            });
            // Not on the way to the new process.
            if let Some(old) = retire_logs_of {
                process::remove_output_files(&launch.log_dir, &old, keep_logs);
            }
        });
    }
}
