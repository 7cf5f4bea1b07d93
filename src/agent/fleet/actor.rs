//! The fleet actor: owns [`Fleet`], performs its effects, feeds results back.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tracing::Instrument;

use super::api::{Control, ControlReply, FleetError, SdkCall, SdkReply};
use super::clock::Clock;
use super::state::{Fleet, Recorded};
use crate::agent::config::Config;
use crate::agent::event::{Event, EventBus, EventCode};
use crate::agent::package::RunAs;
use crate::agent::process::{self, ExitInfo, ProcessHandle};
use crate::agent::store::{EVENT_SEQUENCE_KEY, Records, StateWriter, value_record};
use crate::proto::game_server_grpc_sdk_service_client::GameServerGrpcSdkServiceClient;

/// OnStartGameServerSession may run this much past the activation timeout before it is
/// abandoned (the activation timer has decided by then).
const START_CALL_SLACK: Duration = Duration::from_secs(5);
/// Requests handled in one turn of the actor at most (timers fire between turns).
const REQUEST_BATCH: usize = 64;
/// Requests queued for the actor before callers wait.
const REQUEST_QUEUE: usize = 1024;

mod callbacks;
mod effects;

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

/// Results of the actor's own work, keyed by launch serial.
enum Report {
    Exited {
        serial: u64,
        info: ExitInfo,
    },
    Health {
        serial: u64,
        healthy: bool,
        detail: String,
    },
    StartResult {
        serial: u64,
        gss_id: String,
        result: Result<(), String>,
    },
    /// A launch done off the actor (file checks, log files, fork and exec can block).
    Launched {
        slot: usize,
        serial: u64,
        process_id: String,
        result: Result<ProcessHandle, process::SpawnError>,
        /// The build the game root led to at the launch (what the process runs in).
        build: Option<std::path::PathBuf>,
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

/// How the fleet actor is asked to end.
#[derive(Clone, Default)]
pub struct Stops {
    /// Graceful stop: OnProcessTerminate, bounded wait, then kill.
    pub shutdown: CancellationToken,
    /// Stop every process at once.
    pub force: CancellationToken,
    /// Leave every process running and end (an upgrade of the agent): the state is saved and
    /// the next agent adopts them.
    pub detach: CancellationToken,
}

/// What the fleet is restored from and saved to.
pub struct Persistence {
    /// The fleet as the last agent left it, with the processes it recorded as running.
    pub restored: Option<(Fleet, Vec<Recorded>)>,
    /// Where every change is saved.
    pub writer: StateWriter,
    /// Records the agent adds beside the fleet's own (the SDK address, event ids).
    pub extra: Records,
}

/// Events numbered ahead of what is saved: a restart continues above this many, so event ids
/// are never reused as long as fewer events than this happen between two saves.
pub const EVENT_SEQUENCE_RESERVE: u64 = 1 << 20;
/// An answer held until its change is saved.
type Answer = Box<dyn FnOnce() + Send>;

/// How long a failed save waits before it is tried again.
const SAVE_RETRY: Duration = Duration::from_secs(1);
/// A change is saved this long after it was made, with every change made meanwhile: a burst of
/// SDK calls costs one commit, and the commit does not compete with the launch that caused it.
/// (A launch made in this window before a SIGKILL is found by its tag and stopped at the next
/// start: see `process::kill_strays`.)
const SAVE_DELAY: Duration = Duration::from_millis(10);

/// Starts the fleet actor; the task ends when every process is gone (or, on `stops.detach`,
/// once the state is saved with every process left running).
pub fn spawn_fleet(
    cfg: Arc<Config>,
    run_as: Option<RunAs>,
    sdk_addr: SocketAddr,
    bus: EventBus,
    persistence: Persistence,
    log_jobs: crate::agent::logarchive::LogJobs,
    stops: Stops,
) -> (FleetHandle, JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(REQUEST_QUEUE);
    let (report_tx, report_rx) = mpsc::unbounded_channel();
    let (fleet, recorded) = match persistence.restored {
        Some((fleet, recorded)) => (fleet, recorded),
        None => (Fleet::new(cfg.clone(), Clock::read()), Vec::new()),
    };
    let actor = Actor {
        fleet,
        base_env: cfg.game_env(sdk_addr),
        user: run_as.map(|r| (r.uid, r.gid)),
        cfg,
        bus,
        handles: HashMap::new(),
        launching: HashMap::new(),
        early_calls: Vec::new(),
        clients: HashMap::new(),
        builds: HashMap::new(),
        report_tx,
        store: Store {
            writer: persistence.writer,
            extra: persistence.extra,
            due: Some(Instant::now()),
            unsaved: Vec::new(),
            saving: Vec::new(),
            writer_gone: false,
        },
        log_jobs,
    };
    let span = tracing::info_span!("fleet");
    let task = tokio::spawn(actor.run(rx, report_rx, recorded, stops).instrument(span));
    (FleetHandle { tx }, task)
}

struct Actor {
    fleet: Fleet,
    cfg: Arc<Config>,
    base_env: Vec<(String, String)>,
    user: Option<(u32, u32)>,
    bus: EventBus,
    /// Process handles by launch serial.
    handles: HashMap<u64, ProcessHandle>,
    /// Launches under way, with the exit of a process that ended before its launch was
    /// reported (both reports race on the channel).
    launching: HashMap<u64, Option<ExitInfo>>,
    /// SDK calls from a pid the fleet does not know, made while launches were under way: a
    /// game can call before its launch is reported. Each waits for the launches in flight
    /// when it came, then is answered as any call.
    early_calls: Vec<EarlyCall>,
    /// Callback clients by launch serial.
    clients: HashMap<u64, Client>,
    /// The build each live process runs in, by launch serial (for its log archive).
    builds: HashMap<u64, std::path::PathBuf>,
    report_tx: mpsc::UnboundedSender<Report>,
    store: Store,
    /// Where ended processes' logs are archived.
    log_jobs: crate::agent::logarchive::LogJobs,
}

/// The actor's side of saving: a snapshot is offered only when the writer is idle, so the
/// changes made during one commit go into the next.
struct Store {
    writer: StateWriter,
    extra: Records,
    /// Something may have changed since the last snapshot: save it at this time (later after
    /// a failed save).
    due: Option<Instant>,
    /// Answers to send once the changes they report are saved: not yet in a snapshot...
    unsaved: Vec<Answer>,
    /// ...and in the snapshot being written.
    saving: Vec<Answer>,
    /// The writer thread is gone (said once).
    writer_gone: bool,
}

impl Actor {
    async fn run(
        mut self,
        mut rx: mpsc::Receiver<Request>,
        mut reports: mpsc::UnboundedReceiver<Report>,
        recorded: Vec<Recorded>,
        stops: Stops,
    ) {
        // What the last agent left running is adopted before anything new is launched, so
        // only the missing slots start.
        self.fleet.set_id_seed(uuid::Uuid::new_v4().as_u128());
        let now = self.now();
        self.adopt(recorded, now);
        self.fleet.start();
        self.perform();
        let mut hard_deadline: Option<Instant> = None;
        let mut forced = false;
        let (shutdown, force, detach) = (&stops.shutdown, &stops.force, &stops.detach);
        while !self.fleet.is_stopped() {
            let next = self.fleet.next_deadline();
            let saving = self.store.writer.busy();
            let save_at = self.store.due.filter(|_| !saving);
            tokio::select! {
                biased;
                Some(report) = reports.recv() => self.report(report),
                () = detach.cancelled() => {
                    self.detach();
                    return;
                }
                () = shutdown.cancelled(), if hard_deadline.is_none() => {
                    let now = self.now();
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
                Some(ok) = self.store.writer.committed(), if saving => {
                    if !ok {
                        // Answered all the same: the agent stays available while the disk
                        // refuses; the change is saved when it accepts again.
                        self.store.due = Some(Instant::now() + SAVE_RETRY);
                    }
                    for answer in self.store.saving.drain(..) {
                        answer();
                    }
                }
                Some(req) = rx.recv() => {
                    self.request(req);
                    // Take what else is queued in the same turn: one pass of timers, effects
                    // and the save check per batch, not per call.
                    for _ in 1..REQUEST_BATCH {
                        match rx.try_recv() {
                            Ok(req) => self.request(req),
                            Err(_) => break,
                        }
                    }
                }
                () = sleep_until(next.unwrap_or_else(Instant::now)), if next.is_some() => {}
                () = sleep_until(save_at.unwrap_or_else(Instant::now)), if save_at.is_some() => {}
            }
            // Due timers fire on every turn, so a busy request queue cannot delay them.
            let now = self.now();
            self.fleet.tick(now);
            self.perform();
            self.save(now, false);
        }
        self.save(Instant::now(), true);
        tracing::info!("every server process has ended");
    }

    /// Offers a snapshot to the writer when something changed and it is idle; `last` waits
    /// until the final state is written.
    fn save(&mut self, now: Instant, last: bool) {
        let store = &mut self.store;
        if !last && (store.writer.busy() || store.due.is_none_or(|at| Instant::now() < at)) {
            return;
        }
        let mut records = self.fleet.snapshot(now, SystemTime::now());
        records.extend(store.extra.clone());
        let next_event = self.bus.next_sequence() + EVENT_SEQUENCE_RESERVE;
        records.insert(EVENT_SEQUENCE_KEY.into(), value_record(next_event));
        store.due = None;
        let unsaved = std::mem::take(&mut store.unsaved);
        store.saving.extend(unsaved);
        if last {
            store.writer.finish(records);
            for answer in store.saving.drain(..) {
                answer();
            }
        } else if !store.writer.send(records) {
            if !store.writer_gone {
                tracing::error!(
                    "the state writer has stopped: changes are no longer saved, and a restart of the agent will not know them"
                );
                store.writer_gone = true;
            }
            for answer in store.saving.drain(..) {
                answer();
            }
        }
    }

    /// Reads the clocks for the input about to be handled and hands them to the fleet.
    fn now(&mut self) -> Instant {
        let clock = Clock::read();
        self.fleet.set_clock(clock);
        clock.now
    }

    /// Sends an answer now, or once the change it reports is saved (`when_saved`): a caller
    /// told "done" never meets an agent that forgot it after a SIGKILL. Such answers are
    /// saved at once, many in one commit. A commit the disk refuses releases them all the
    /// same (the agent stays available and retries the save).
    fn answer(&mut self, when_saved: bool, send: impl FnOnce() + Send + 'static) {
        if when_saved {
            self.store.unsaved.push(Box::new(send));
            self.store.due = Some(Instant::now());
        } else {
            send();
        }
    }

    /// Marks the state changed (everything but a pure query may change it).
    fn touch(&mut self) {
        self.store
            .due
            .get_or_insert_with(|| Instant::now() + SAVE_DELAY);
    }

    /// Ends the actor leaving every process running, with the state saved for the next agent.
    fn detach(&mut self) {
        self.bus.emit(Event::new(
            EventCode::AgentStopping,
            format!(
                "leaving {} game process(es) running for the next agent (upgrade)",
                self.handles.len()
            ),
        ));
        self.touch();
        self.save(Instant::now(), true);
        // A rehearsed hang is not saved: the next agent would never continue the group.
        for serial in self.fleet.hung() {
            if let Some(h) = self.handles.get(&serial) {
                h.signal_group_now(nix::sys::signal::Signal::SIGCONT);
            }
        }
        for (_, handle) in self.handles.drain() {
            handle.detach();
        }
    }

    /// Adopts each recorded process that is still the same process; the others are accounted
    /// for as exits of unknown status (and replaced).
    fn adopt(&mut self, recorded: Vec<Recorded>, now: Instant) {
        let log_dir = self.cfg.data_dir.join("logs");
        for r in recorded {
            let spec = process::AdoptSpec {
                process_id: r.process_id.clone(),
                log_dir: log_dir.clone(),
                max_log_bytes: self.cfg.logs.max_file_bytes.get(),
                keep_logs: self.cfg.logs.keep_files,
                tail_lines: self.cfg.logs.tail_lines,
            };
            let serial = r.serial;
            match process::adopt(&spec, &r.identity, self.on_exit(serial)) {
                Ok(handle) => {
                    self.handles.insert(serial, handle);
                    self.fleet.adopted(serial);
                }
                Err(e) => {
                    tracing::info!(process.id = %r.process_id, process.pid = r.identity.pid, error = %e, "not adopted");
                    self.fleet.lost(serial, &e.to_string(), now);
                    // Its escaped descendants (and the game itself, if it runs but could not
                    // be verified) carry its id: nothing of it runs unsupervised.
                    let owner = self.cfg.owner_tag();
                    let since = r.identity.start_ticks;
                    tokio::task::spawn_blocking(move || {
                        let owner: Vec<(&str, &str)> =
                            owner.iter().map(|(k, v)| (*k, v.as_str())).collect();
                        process::kill_remains(&owner, &r.process_id, since)
                    });
                }
            }
        }
        self.touch();
    }

    fn on_exit(&self, serial: u64) -> impl FnOnce(u32, ExitInfo) + Send + 'static {
        let tx = self.report_tx.clone();
        move |_pid, info| {
            let _ = tx.send(Report::Exited { serial, info });
        }
    }

    fn kill_everything(&mut self) {
        self.fleet.stop_all();
        for handle in self.handles.values() {
            handle.stop(Duration::ZERO);
        }
    }

    fn request(&mut self, req: Request) {
        let now = self.now();
        match req {
            Request::Sdk { pid, call, reply } => {
                if self.fleet.serial_of(pid).is_none()
                    && !self.launching.is_empty()
                    && self.early_calls.len() < MAX_EARLY_CALLS
                {
                    self.early_calls.push(EarlyCall {
                        waits_for: self.launching.keys().copied().collect(),
                        pid,
                        call,
                        reply,
                    });
                    return;
                }
                self.sdk_call(pid, call, reply, now);
            }
            Request::Control { cmd, reply } => {
                let query = cmd.is_query();
                if !query {
                    self.touch();
                }
                let result = self.fleet.control(cmd, now);
                self.answer(!query && result.is_ok(), move || {
                    let _ = reply.send(result);
                });
            }
        }
    }

    fn report(&mut self, report: Report) {
        let now = self.now();
        self.touch();
        match report {
            Report::Exited { serial, info } => {
                if let Some(early) = self.launching.get_mut(&serial) {
                    *early = Some(info);
                    return;
                }
                self.handles.remove(&serial);
                self.fleet.exited(serial, info, now);
            }
            Report::Launched {
                slot,
                serial,
                process_id,
                result,
                build,
            } => {
                let early_exit = self.launching.remove(&serial).flatten();
                match result {
                    Ok(handle) => {
                        if let Some(build) = build {
                            self.builds.insert(serial, build);
                        }
                        let identity = handle.identity.clone();
                        self.handles.insert(serial, handle);
                        self.fleet.spawned(slot, serial, process_id, identity, now);
                        if let Some(info) = early_exit {
                            self.handles.remove(&serial);
                            self.fleet.exited(serial, info, now);
                        }
                    }
                    Err(e) => {
                        let invalid = matches!(e, process::SpawnError::InvalidPath { .. });
                        self.fleet
                            .spawn_failed(slot, process_id, invalid, e.to_string(), now);
                    }
                }
                self.answer_early_calls_after(serial, now);
            }
            Report::Health {
                serial,
                healthy,
                detail,
            } => self.fleet.health_result(serial, healthy, &detail, now),
            Report::StartResult {
                serial,
                gss_id,
                result,
            } => self
                .fleet
                .start_session_result(serial, &gss_id, result, now),
        }
    }

    /// Once `launched` is accounted for (after this report is handled), answers the held SDK
    /// calls that waited for nothing else.
    fn answer_early_calls_after(&mut self, launched: u64, now: Instant) {
        for c in &mut self.early_calls {
            c.waits_for.retain(|s| *s != launched);
        }
        let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.early_calls)
            .into_iter()
            .partition(|c| c.waits_for.is_empty());
        self.early_calls = waiting;
        for c in ready {
            self.sdk_call(c.pid, c.call, c.reply, now);
        }
    }

    /// Answers one SDK call (once saved, for lifecycle calls).
    fn sdk_call(
        &mut self,
        pid: u32,
        call: SdkCall,
        reply: oneshot::Sender<Result<SdkReply, FleetError>>,
        now: Instant,
    ) {
        if !call.is_query() {
            self.touch();
        }
        let when_saved = call.answered_when_saved();
        let result = self.fleet.sdk(pid, call, now);
        self.answer(when_saved && result.is_ok(), move || {
            let _ = reply.send(result);
        });
    }
}

/// SDK calls held while launches are reported, at most.
const MAX_EARLY_CALLS: usize = 1024;

/// An SDK call held until the launches in flight when it came are reported.
struct EarlyCall {
    waits_for: Vec<u64>,
    pid: u32,
    call: SdkCall,
    reply: oneshot::Sender<Result<SdkReply, FleetError>>,
}
