//! The relay: one long-lived bidirectional stream to the control plane, dialled out (to each
//! configured endpoint in turn), resumed after every fault with jittered exponential backoff. On
//! each connection: a Hello with the last acknowledged sequence, a complete snapshot of the
//! host's state, then every outbox event after that sequence, in order, then new ones as they
//! are committed; partial snapshots as sessions change ([`super::snapshot`]); periodic instance
//! status (only the latest, never queued); one result per command. Acknowledgements prune the
//! outbox.
//!
//! Commands are applied once per id across connections and restarts; [`super::book`] says
//! how (claim before running, record before answering, interrupted ids answered, not re-run),
//! [`super::ledger`] where it is kept.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tracing::Instrument;

use super::book::{Begin, CommandBook};
use super::commands;
use super::cut::LinkCut;
use super::ledger::Ledger;
use super::outbox::Outbox;
use super::snapshot;
use crate::api::time::now_ms;
use std::sync::Arc;

use crate::agent::config::{Config, UpstreamConfig};
use crate::agent::event::{Event, EventBus, EventCode};
use crate::agent::fleet::{Control, ControlReply, FleetHandle, HostStateScope};
use crate::upstream_proto as up;
use crate::upstream_proto::control_plane_client::ControlPlaneClient;

/// Events read from the outbox per batch.
const BATCH: usize = 512;
/// How long the relay waits before reading again after the outbox refused a read (its file
/// is being reopened after a disk fault); the connection stays up meanwhile.
const READ_RETRY: Duration = Duration::from_secs(1);
/// Command results remembered for repeated ids: at most this many...
const RESULTS_KEPT: u64 = 10_000;
/// ...and none older than this.
const RESULTS_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
/// How often old command results are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Why one connection ended.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The endpoint or TLS settings are unusable.
    #[error("upstream endpoint {endpoint}: {message}")]
    Endpoint {
        /// The endpoint.
        endpoint: String,
        /// What is wrong.
        message: String,
    },
    /// A TLS or token file could not be read.
    #[error("cannot read {path}: {source}")]
    File {
        /// The file.
        path: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Connecting failed.
    #[error("cannot connect to {endpoint}: {source}")]
    Connect {
        /// The endpoint.
        endpoint: String,
        /// The error.
        #[source]
        source: tonic::transport::Error,
    },
    /// The control plane refused our credentials.
    #[error("the control plane refused the agent's credentials: {0}")]
    Auth(String),
    /// The stream failed.
    #[error("the stream to the control plane failed: {0}")]
    Stream(String),
    /// The control plane closed the stream.
    #[error("the control plane closed the stream")]
    Closed,
    /// A step took longer than its limit (a peer that accepts TCP and then says nothing).
    #[error("{step} did not finish within {}", humantime::format_duration(*limit))]
    Timeout {
        /// What was waited for.
        step: &'static str,
        /// Its limit.
        limit: Duration,
    },
    /// Crash rehearsal cut the link (`chaos: enabled`).
    #[error("crash rehearsal cut the link to the control plane for {}", humantime::format_duration(*remaining))]
    Cut {
        /// How long the cut lasts from when the connection was dropped.
        remaining: Duration,
    },
    /// The outbox file was corrupt and replaced: its new epoch needs a new Hello.
    #[error("the outbox was replaced (epoch {old} → {new}); reconnecting under the new epoch")]
    NewEpoch {
        /// The epoch this connection said Hello with.
        old: u64,
        /// The outbox's epoch now.
        new: u64,
    },
}

fn read(path: &std::path::Path) -> Result<Vec<u8>, RelayError> {
    std::fs::read(path).map_err(|source| RelayError::File {
        path: path.display().to_string(),
        source,
    })
}

async fn channel(cfg: &UpstreamConfig, url: &str) -> Result<Channel, RelayError> {
    let bad = |message: String| RelayError::Endpoint {
        endpoint: url.to_string(),
        message,
    };
    let mut endpoint = Endpoint::from_shared(url.to_string())
        .map_err(|e| bad(e.to_string()))?
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10));
    if url.starts_with("https://") {
        let mut tls = ClientTlsConfig::new();
        if let Some(ca) = &cfg.ca_file {
            tls = tls.ca_certificate(Certificate::from_pem(read(ca)?));
        } else {
            tls = tls.with_enabled_roots();
        }
        if let (Some(cert), Some(key)) = (&cfg.client_cert, &cfg.client_key) {
            tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
        }
        endpoint = endpoint.tls_config(tls).map_err(|e| bad(e.to_string()))?;
    }
    endpoint
        .connect()
        .await
        .map_err(|source| RelayError::Connect {
            endpoint: url.to_string(),
            source,
        })
}

/// Runs until `shutdown`, reconnecting as needed: the endpoints are dialled in order, and a
/// failed or lost connection moves on to the next (replicas of one control plane). A jittered
/// backoff separates every two attempts; it doubles after each full lap of failures (with one
/// endpoint: after each failure), up to `reconnect-max`, and starts again from
/// `reconnect-initial` once a connection has lived longer than that. While `cut` is in force
/// (crash rehearsal), the link stays down.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    cfg: UpstreamConfig,
    agent: Arc<Config>,
    outbox: Outbox,
    ledger: Ledger,
    fleet: FleetHandle,
    bus: EventBus,
    cut: LinkCut,
    shutdown: CancellationToken,
) {
    let mut rotation = Rotation::new(
        cfg.endpoints.len(),
        cfg.reconnect_initial.get(),
        cfg.reconnect_max.get(),
    );
    let mut connected_before = false;
    let book = CommandBook::new(ledger.clone());
    let _prune = AbortOnDrop(tokio::spawn(prune_ledger(ledger)));
    loop {
        // A link cut by crash rehearsal stays down until the cut is over.
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = cut.over() => {}
        }
        let index = rotation.current();
        // Validation guarantees at least one endpoint.
        let url = cfg.endpoints.get(index).map(String::as_str).unwrap_or("");
        tracing::debug!(upstream.endpoint = %url, upstream.index = index, "dialling the control plane");
        let started = tokio::time::Instant::now();
        let result = tokio::select! {
            () = shutdown.cancelled() => return,
            until = cut.started() => Err(RelayError::Cut {
                remaining: until.saturating_duration_since(tokio::time::Instant::now()),
            }),
            r = session(&cfg, url, &agent, &outbox, &fleet, &bus, &book, &shutdown, &mut connected_before) => r,
        };
        if shutdown.is_cancelled() {
            return;
        }
        match &result {
            Ok(()) => {}
            Err(RelayError::Auth(m)) => {
                tracing::error!(upstream.endpoint = %url, error = %m, "control plane refused the credentials; check upstream.token-file");
            }
            Err(e) => {
                tracing::warn!(upstream.endpoint = %url, error = %e, "upstream connection lost")
            }
        }
        if connected_before {
            connected_before = false;
            bus.emit(Event::new(
                EventCode::UpstreamDisconnected,
                match &result {
                    Ok(()) => "control plane connection ended".to_string(),
                    Err(e) => e.to_string(),
                },
            ));
        }
        if matches!(result, Err(RelayError::Cut { .. })) {
            // Not the endpoint's fault: dial the same one again once the cut is over.
            continue;
        }
        let delay = jitter(rotation.ended(started.elapsed()));
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
    }
}

/// Which endpoint is dialled next, and the backoff before it: every failed or lost connection
/// moves on to the next endpoint; the backoff doubles after each full lap of them (with one
/// endpoint, after each attempt, as it always did), up to the cap, and starts again from the
/// initial value after a connection that lived longer than the cap.
#[derive(Debug)]
struct Rotation {
    endpoints: usize,
    /// The endpoint dialled next.
    next: usize,
    /// Attempts made at the current backoff.
    lap: usize,
    backoff: Duration,
    initial: Duration,
    max: Duration,
}

impl Rotation {
    fn new(endpoints: usize, initial: Duration, max: Duration) -> Self {
        Self {
            endpoints: endpoints.max(1),
            next: 0,
            lap: 0,
            backoff: initial,
            initial,
            max,
        }
    }

    /// The index of the endpoint to dial now.
    fn current(&self) -> usize {
        self.next
    }

    /// The attempt on the current endpoint ended after `lived`: moves to the next endpoint and
    /// returns the backoff (before jitter) to wait first.
    fn ended(&mut self, lived: Duration) -> Duration {
        // A connection that lived a while resets the backoff.
        if lived > self.max {
            self.backoff = self.initial;
            self.lap = 0;
        }
        self.next = (self.next + 1) % self.endpoints;
        self.lap += 1;
        let delay = self.backoff;
        // Every endpoint was tried once at this backoff: wait longer on the next lap.
        if self.lap >= self.endpoints {
            self.lap = 0;
            self.backoff = (self.backoff * 2).min(self.max);
        }
        delay
    }
}

/// `step` given up after `limit` (a peer that accepts TCP and then says nothing).
async fn within<T>(
    step: &'static str,
    limit: Duration,
    f: impl std::future::Future<Output = T>,
) -> Result<T, RelayError> {
    tokio::time::timeout(limit, f)
        .await
        .map_err(|_| RelayError::Timeout { step, limit })
}

/// A delay in [d/2, d].
fn jitter(d: Duration) -> Duration {
    let r = (uuid::Uuid::new_v4().as_u128() % 1000) as u32;
    d / 2 + d / 2 * r / 1000
}

#[allow(clippy::too_many_arguments)]
async fn session(
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
    let mut inbound = response.into_inner();
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
    // Commands run one at a time, in the order they came, each id applied once across
    // connections and restarts (the book decides). The worker is not aborted with the
    // connection: a command under way completes and its result goes to the connection current
    // then.
    let (commands_tx, mut commands_rx) = mpsc::unbounded_channel::<up::Command>();
    {
        let fleet = fleet.clone();
        let agent = agent.clone();
        let book = book.clone();
        tokio::spawn(async move {
            while let Some(c) = commands_rx.recv().await {
                apply_once(&book, &fleet, &agent, c).await;
            }
        });
    }
    // Acks are coalesced: only the latest is pruned, off the runtime's threads, one at a time.
    let (ack_tx, mut ack_rx) = tokio::sync::watch::channel(acked);
    let pruner = {
        let outbox = outbox.clone();
        tokio::spawn(async move {
            while ack_rx.changed().await.is_ok() {
                let upto = *ack_rx.borrow_and_update();
                let o = outbox.clone();
                match tokio::task::spawn_blocking(move || o.ack(epoch, upto)).await {
                    Ok(Err(e)) => tracing::warn!(error = %e, "cannot prune the outbox"),
                    Err(e) => tracing::warn!(error = %e, "outbox pruning failed"),
                    Ok(Ok(())) => {}
                }
            }
        })
    };
    let _pruner = AbortOnDrop(pruner);
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
                if let Ok(ControlReply::Instance(c)) = fleet.control(Control::DescribeInstance).await {
                    let s = up::InstanceStatus {
                        healthy_process_cnt: c.healthy_process_cnt,
                        active_process_cnt: c.active_process_cnt,
                        game_session_cnt: c.game_session_cnt,
                        max_game_session_cnt: c.max_game_session_cnt,
                        player_session_cnt: c.player_session_cnt,
                        max_player_session_cnt: c.max_player_session_cnt,
                        draining: c.draining,
                        reserved: c.reserved,
                        unacked_events: outbox.unacked(),
                    };
                    // Status is coalesced: if the stream is backed up, this one is skipped.
                    let _ = tx.try_send(msg(up::agent_message::Body::Status(s)));
                }
            }
        }
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

/// Prunes the command ledger now and every [`PRUNE_EVERY`], off the command path.
async fn prune_ledger(ledger: Ledger) {
    let mut tick = tokio::time::interval(PRUNE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let l = ledger.clone();
        let pruned = tokio::task::spawn_blocking(move || {
            l.prune(now_ms(), RESULTS_KEPT, RESULTS_MAX_AGE.as_millis() as u64)
        })
        .await;
        match pruned {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => tracing::debug!(ledger.pruned = n, "old command results pruned"),
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot prune the command ledger"),
            Err(e) => tracing::warn!(error = %e, "command ledger pruning failed"),
        }
    }
}

/// Aborts a helper task when the connection ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
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

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    /// (endpoint dialled, backoff after it) for `n` attempts that each fail at once.
    fn failures(r: &mut Rotation, n: usize) -> Vec<(usize, u64)> {
        (0..n)
            .map(|_| {
                let at = r.current();
                (at, r.ended(Duration::ZERO).as_secs())
            })
            .collect()
    }

    #[test]
    fn one_endpoint_doubles_after_every_failure() {
        let mut r = Rotation::new(1, S, 8 * S);
        assert_eq!(
            failures(&mut r, 6),
            [(0, 1), (0, 2), (0, 4), (0, 8), (0, 8), (0, 8)]
        );
    }

    #[test]
    fn several_endpoints_take_turns_and_double_per_lap() {
        let mut r = Rotation::new(3, S, 8 * S);
        assert_eq!(
            failures(&mut r, 9),
            [
                (0, 1),
                (1, 1),
                (2, 1),
                (0, 2),
                (1, 2),
                (2, 2),
                (0, 4),
                (1, 4),
                (2, 4)
            ]
        );
    }

    #[test]
    fn a_long_lived_connection_resets_the_backoff_and_moves_on() {
        let mut r = Rotation::new(2, S, 8 * S);
        failures(&mut r, 6);
        assert_eq!(r.current(), 0);
        // Connected to endpoint 0 for a while, then lost: the next endpoint, at once.
        assert_eq!(r.ended(9 * S), S);
        assert_eq!(r.current(), 1);
        assert_eq!(failures(&mut r, 3), [(1, 1), (0, 2), (1, 2)]);
    }
}
