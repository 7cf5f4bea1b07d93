//! One connection of the relay: Hello and the complete snapshot, the Relay call, then events
//! in order, acknowledgements, commands, results and status until the stream ends.

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{AbortOnDrop, BATCH, READ_RETRY, RelayError, channel, read, within};
use crate::agent::config::{Config, UpstreamConfig};
use crate::agent::event::{Event, EventBus, EventCode};
use crate::agent::fleet::{Control, ControlReply, FleetHandle, HostStateScope};
use crate::agent::upstream::book::{Begin, CommandBook};
use crate::agent::upstream::commands;
use crate::agent::upstream::outbox::Outbox;
use crate::agent::upstream::snapshot;
use crate::api::time::now_ms;
use crate::upstream_proto as up;
use crate::upstream_proto::control_plane_client::ControlPlaneClient;

/// One connection to `url`, until it ends: `Ok` at shutdown, the reason otherwise.
/// `connected` says whether the stream was ever open (for the backoff).
#[allow(clippy::too_many_arguments)]
pub(super) async fn session(
    cfg: &UpstreamConfig,
    url: &str,
    agent: &Arc<Config>,
    outbox: &Outbox,
    fleet: &FleetHandle,
    bus: &EventBus,
    book: &CommandBook,
    shutdown: &CancellationToken,
    connected: &mut bool,
) -> Result<(), RelayError> {
    let Opened {
        tx,
        mut inbound,
        acked,
        epoch,
        _snapshots,
    } = open(cfg, url, agent, outbox, fleet, bus).await?;
    *connected = true;
    bus.emit(Event::new(
        EventCode::UpstreamConnected,
        format!("connected to {url}; resending after sequence {acked}"),
    ));
    tracing::info!(upstream.endpoint = %url, upstream.acked = acked, "connected to the control plane");

    let mut committed = outbox.committed();
    let mut sent = acked;
    let mut pending: VecDeque<up::Event> = VecDeque::new();
    let mut status = tokio::time::interval(cfg.status_interval.get());
    status.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Results go to this connection from now on; those a previous one could not deliver go
    // first. Whatever this one cannot send is kept for the next when it ends.
    let mut results = Attached::new(book.clone());
    let commands_tx = spawn_command_worker(fleet, agent, book);
    // Acks are coalesced: only the latest is pruned, off the runtime's threads, one at a time.
    let (ack_tx, _pruner) = spawn_pruner(outbox, epoch, acked);
    // After a refused read: when to read again.
    let mut read_again: Option<tokio::time::Instant> = None;
    let mut read_failing = false;
    loop {
        if outbox.epoch() != epoch {
            return Err(RelayError::NewEpoch {
                old: epoch,
                new: outbox.epoch(),
            });
        }
        // An acknowledgement beyond what this connection sent (a control plane that remembers
        // more): do not resend below it.
        sent = sent.max(*ack_tx.borrow());
        if pending.is_empty() && sent < *committed.borrow() && read_again.is_none() {
            match outbox.read_after(sent, BATCH) {
                Ok(events) => {
                    if std::mem::take(&mut read_failing) {
                        tracing::info!("events are read from the outbox again");
                    }
                    pending.extend(events);
                }
                Err(e) => {
                    // Said once per outage: the outbox's writer says the rest.
                    if !std::mem::replace(&mut read_failing, true) {
                        tracing::warn!(error = %e, "cannot read events from the outbox; trying again every second");
                    }
                    read_again = Some(tokio::time::Instant::now() + READ_RETRY);
                }
            }
        }
        tokio::select! {
            () = tokio::time::sleep_until(read_again.unwrap_or_else(tokio::time::Instant::now)), if read_again.is_some() => {
                read_again = None;
            }
            () = shutdown.cancelled() => return Ok(()),
            m = inbound.message() => match m.map_err(status_error)? {
                None => return Err(RelayError::Closed),
                Some(up::ControlMessage { body: Some(up::control_message::Body::Ack(a)) }) => {
                    let committed_now = *committed.borrow();
                    ack_tx.send_if_modified(|v| {
                        let a = a.sequence.min(committed_now);
                        if a > *v {
                            *v = a;
                            true
                        } else {
                            false
                        }
                    });
                }
                Some(up::ControlMessage { body: Some(up::control_message::Body::Command(c)) }) => {
                    let _ = commands_tx.send(c);
                }
                Some(_) => {}
            },
            r = results.rx.recv() => {
                if let Some(r) = r
                    && let Err(e) = tx.send(msg(up::agent_message::Body::Result(r))).await
                {
                    if let Some(up::agent_message::Body::Result(r)) = e.0.body {
                        results.undelivered.push(r);
                    }
                    return Err(RelayError::Closed);
                }
            }
            permit = tx.reserve(), if !pending.is_empty() => {
                let permit = permit.map_err(|_| RelayError::Closed)?;
                let e = pending.pop_front().expect("not empty");
                sent = e.sequence;
                permit.send(msg(up::agent_message::Body::Event(e)));
            }
            _ = committed.changed(), if pending.is_empty() && sent >= *committed.borrow() => {}
            _ = status.tick() => {
                if let Some(s) = instance_status(fleet, outbox).await {
                    // Status is coalesced: if the stream is backed up, this one is skipped.
                    let _ = tx.try_send(msg(up::agent_message::Body::Status(s)));
                }
            }
        }
    }
}

/// An open stream: the sender of what goes up, what comes down, and where resending starts.
struct Opened {
    tx: mpsc::Sender<up::AgentMessage>,
    inbound: tonic::Streaming<up::ControlMessage>,
    acked: u64,
    epoch: u64,
    /// The snapshot watcher, sending partial snapshots on `tx` while the connection lives.
    _snapshots: AbortOnDrop,
}

/// Dials `url`, sends the Hello and the complete snapshot, and makes the Relay call.
async fn open(
    cfg: &UpstreamConfig,
    url: &str,
    agent: &Config,
    outbox: &Outbox,
    fleet: &FleetHandle,
    bus: &EventBus,
) -> Result<Opened, RelayError> {
    let channel = within(
        "connecting (TCP, TLS and HTTP/2)",
        cfg.connect_timeout.get(),
        channel(cfg, url),
    )
    .await??;
    let token = match &cfg.token_file {
        Some(p) => Some(String::from_utf8_lossy(&read(p)?).trim().to_string()),
        None => None,
    };
    let mut client = ControlPlaneClient::new(channel);
    let (tx, rx) = mpsc::channel::<up::AgentMessage>(256);
    let acked = outbox.acked();
    let epoch = outbox.epoch();
    // Subscribed before the complete snapshot is read: every change after the read is seen.
    let mut watcher = snapshot::Watcher::subscribe(bus);
    let complete = snapshot::build(fleet, HostStateScope::All, true).await;
    tx.send(msg(up::agent_message::Body::Hello(up::Hello {
        fleet_id: agent.fleet_id.clone(),
        instance_id: agent.instance_id.clone(),
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
        last_acked_sequence: acked,
        epoch,
        region: agent.region.clone(),
        public_ip: agent.public_ip.map(|ip| ip.to_string()).unwrap_or_default(),
        dns_name: agent.client_dns_name().to_string(),
    })))
    .await
    .map_err(|_| RelayError::Closed)?;
    // Right after the Hello, before any event: the whole state, for the control plane to
    // reconcile from.
    match complete {
        Ok(s) => tx
            .send(msg(up::agent_message::Body::Snapshot(s)))
            .await
            .map_err(|_| RelayError::Closed)?,
        // Shutting down: the fleet is gone, only its last events are left to relay.
        Err(e @ snapshot::SnapshotError::Stopped) => {
            tracing::debug!(error = %e, "no complete snapshot on this connection");
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot build the complete snapshot; it follows when the fleet answers");
            watcher.missed_complete();
        }
    }
    let _snapshots = AbortOnDrop(tokio::spawn(
        watcher
            .run(fleet.clone(), tx.clone(), tokio::time::Instant::now())
            .instrument(tracing::Span::current()),
    ));
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    if let Some(token) = token {
        let value = format!("Bearer {token}").parse().map_err(|_| {
            RelayError::Auth("the token has characters a header cannot carry".into())
        })?;
        request.metadata_mut().insert("authorization", value);
    }
    let response = within(
        "the control plane's answer to the Relay call",
        cfg.response_timeout.get(),
        client.relay(request),
    )
    .await?
    .map_err(status_error)?;
    Ok(Opened {
        tx,
        inbound: response.into_inner(),
        acked,
        epoch,
        _snapshots,
    })
}

/// The worker that applies commands one at a time, in the order they came, each id once (the
/// book decides). It is not aborted with the connection: a command under way completes and its
/// result goes to the connection current then.
fn spawn_command_worker(
    fleet: &FleetHandle,
    agent: &Arc<Config>,
    book: &CommandBook,
) -> mpsc::UnboundedSender<up::Command> {
    let (commands_tx, mut commands_rx) = mpsc::unbounded_channel::<up::Command>();
    let fleet = fleet.clone();
    let agent = agent.clone();
    let book = book.clone();
    tokio::spawn(async move {
        while let Some(c) = commands_rx.recv().await {
            apply_once(&book, &fleet, &agent, c).await;
        }
    });
    commands_tx
}

/// Acks are coalesced: only the latest is pruned, off the runtime's threads, one at a time.
/// Returns where the acks go and the pruner, which ends with the connection.
fn spawn_pruner(
    outbox: &Outbox,
    epoch: u64,
    acked: u64,
) -> (tokio::sync::watch::Sender<u64>, AbortOnDrop) {
    let (ack_tx, mut ack_rx) = tokio::sync::watch::channel(acked);
    let outbox = outbox.clone();
    let pruner = tokio::spawn(async move {
        while ack_rx.changed().await.is_ok() {
            let upto = *ack_rx.borrow_and_update();
            let o = outbox.clone();
            match tokio::task::spawn_blocking(move || o.ack(epoch, upto)).await {
                Ok(Err(e)) => tracing::warn!(error = %e, "cannot prune the outbox"),
                Err(e) => tracing::warn!(error = %e, "outbox pruning failed"),
                Ok(Ok(())) => {}
            }
        }
    });
    (ack_tx, AbortOnDrop(pruner))
}

/// The host's periodic status, when the fleet answers.
async fn instance_status(fleet: &FleetHandle, outbox: &Outbox) -> Option<up::InstanceStatus> {
    let Ok(ControlReply::Instance(c)) = fleet.control(Control::DescribeInstance).await else {
        return None;
    };
    Some(up::InstanceStatus {
        healthy_process_cnt: c.healthy_process_cnt,
        active_process_cnt: c.active_process_cnt,
        game_session_cnt: c.game_session_cnt,
        max_game_session_cnt: c.max_game_session_cnt,
        player_session_cnt: c.player_session_cnt,
        max_player_session_cnt: c.max_player_session_cnt,
        draining: c.draining,
        reserved: c.reserved,
        unacked_events: outbox.unacked(),
    })
}

/// Applies one command unless its id ran or runs already; the book answers for those.
async fn apply_once(book: &CommandBook, fleet: &FleetHandle, agent: &Config, c: up::Command) {
    let id = c.id.clone();
    let b = book.clone();
    let begin = tokio::task::spawn_blocking(move || b.begin(&id, now_ms())).await;
    match begin {
        Ok(Begin::Run) => {}
        Ok(Begin::Waiting | Begin::Answered) => return,
        Err(e) => {
            tracing::error!(command.id = %c.id, error = %e, "command bookkeeping failed; the command was not run");
            return;
        }
    }
    let id = c.id.clone();
    let result = commands::handle(fleet, agent, c).await;
    let b = book.clone();
    if let Err(e) = tokio::task::spawn_blocking(move || b.finish(result, now_ms())).await {
        tracing::error!(command.id = %id, error = %e, "cannot record or send a command result");
    }
}

fn msg(body: up::agent_message::Body) -> up::AgentMessage {
    up::AgentMessage { body: Some(body) }
}

fn status_error(s: tonic::Status) -> RelayError {
    match s.code() {
        tonic::Code::Unauthenticated | tonic::Code::PermissionDenied => {
            RelayError::Auth(format!("{}: {}", s.code(), s.message()))
        }
        _ => RelayError::Stream(format!("{}: {}", s.code(), s.message())),
    }
}

/// This connection's end of the book's result routing; detaches on drop, however the
/// connection ends, keeping what it had not sent.
struct Attached {
    book: CommandBook,
    tx: mpsc::UnboundedSender<up::CommandResult>,
    rx: mpsc::UnboundedReceiver<up::CommandResult>,
    /// Taken from `rx` but refused by the stream.
    undelivered: Vec<up::CommandResult>,
}

impl Attached {
    fn new(book: CommandBook) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        book.attach(tx.clone());
        Self {
            book,
            tx,
            rx,
            undelivered: Vec::new(),
        }
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        let undelivered = std::mem::take(&mut self.undelivered);
        self.book.detach(&self.tx, &mut self.rx, undelivered);
    }
}
