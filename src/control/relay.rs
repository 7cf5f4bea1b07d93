//! The agents' side of the control plane: terminates each agent's Relay stream, stores what it
//! sends before acknowledging it, and carries commands down to it.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use deadpool_postgres::Pool;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use super::hub::Hub;
use super::store::{self, Arrival, Batch, Source};
use super::sync;
use super::writer::{Write, Writer};
use crate::upstream_proto as up;
use crate::upstream_proto::control_plane_server::ControlPlane;

/// How long a new stream has to say Hello.
const HELLO_WITHIN: Duration = Duration::from_secs(10);
/// Messages taken from a stream per database write at most.
const BATCH: usize = 1024;
/// Messages buffered per stream between the network and the writer.
const BUFFER: usize = 4096;
/// How long a failed write waits before it is tried again (the agent resends what is not
/// acknowledged anyway, but a stream is not dropped for one failed write).
const WRITE_RETRY: Duration = Duration::from_millis(500);
/// An unchanged status is still written this often: each write says again that the stream
/// is live (a row another replica marked gone comes back).
const STATUS_REFRESH: Duration = Duration::from_secs(15);

/// The Relay service of one replica.
#[derive(Clone)]
pub struct RelayService {
    /// The database.
    pub pool: Pool,
    /// Commands in and out.
    pub hub: Arc<Hub>,
    /// Where batches are written.
    pub writer: Writer,
    /// Accepted bearer tokens (`None`: tokens are not checked).
    pub tokens: Option<Arc<Vec<String>>>,
}

type Out = Pin<Box<dyn Stream<Item = Result<up::ControlMessage, Status>> + Send>>;

#[tonic::async_trait]
impl ControlPlane for RelayService {
    type RelayStream = Out;

    async fn relay(
        &self,
        request: Request<Streaming<up::AgentMessage>>,
    ) -> Result<Response<Out>, Status> {
        if let Some(tokens) = &self.tokens {
            let presented = request
                .metadata()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .unwrap_or("");
            if !tokens.iter().any(|t| constant_eq(t, presented)) {
                return Err(Status::unauthenticated(
                    "the agent's bearer token is not in agent-tokens-file",
                ));
            }
        }
        let mut inbound = request.into_inner();
        let hello = match tokio::time::timeout(HELLO_WITHIN, inbound.message()).await {
            Ok(Ok(Some(up::AgentMessage {
                body: Some(up::agent_message::Body::Hello(h)),
            }))) => h,
            Ok(Ok(_)) => return Err(Status::invalid_argument("the first message must be Hello")),
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(Status::deadline_exceeded("no Hello within 10s")),
        };
        if hello.instance_id.is_empty() || hello.fleet_id.is_empty() {
            return Err(Status::invalid_argument(
                "Hello must name the fleet_id and instance_id",
            ));
        }
        let stream = uuid::Uuid::new_v4().to_string();
        let known = store::arrive(
            &self.pool,
            &Arrival {
                hello: hello.clone(),
                replica: self.hub.replica().to_string(),
                stream: stream.clone(),
            },
        )
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
        let (tx, rx) = mpsc::channel(BUFFER);
        // The database may know more than the agent: do not make it resend that.
        if known.acked > hello.last_acked_sequence {
            let _ = tx.try_send(ack(known.acked));
        }
        let serial = self
            .hub
            .attach(&hello.instance_id, &stream, tx.clone())
            .await;
        tracing::info!(instance.id = %hello.instance_id, fleet.id = %hello.fleet_id, upstream.epoch = hello.epoch, upstream.acked = hello.last_acked_sequence, "agent connected");
        let service = self.clone();
        tokio::spawn(async move {
            let src = Source {
                instance_id: hello.instance_id.clone(),
                fleet_id: hello.fleet_id.clone(),
                epoch: hello.epoch,
                stream: stream.clone(),
                replica: service.hub.replica().to_string(),
            };
            tokio::spawn(sync::catch_up(
                service.pool.clone(),
                service.hub.clone(),
                hello.fleet_id.clone(),
                hello.instance_id.clone(),
            ));
            let ended = service.pump(&src, serial, inbound, &tx).await;
            service.hub.detach(&src.instance_id, serial);
            if let Err(e) = store::depart(&service.pool, &src.instance_id, &stream).await {
                tracing::warn!(instance.id = %src.instance_id, error = %e, "cannot record a departed agent");
            }
            tracing::info!(instance.id = %src.instance_id, reason = %ended, "agent disconnected");
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx).map(Ok))))
    }
}

impl RelayService {
    /// Reads the stream until it ends: batches what arrives, writes each batch, then
    /// acknowledges its events. Returns why it ended.
    async fn pump(
        &self,
        src: &Source,
        serial: u64,
        mut inbound: Streaming<up::AgentMessage>,
        tx: &mpsc::Sender<up::ControlMessage>,
    ) -> String {
        let (msg_tx, mut msg_rx) = mpsc::channel::<up::AgentMessage>(BUFFER);
        // Snapshots and statuses handed to the writer side and not yet stored: while there
        // are none, a result goes to its caller straight from the stream (it must not wait
        // for the events ahead of it); otherwise it queues behind them.
        let unstored = Arc::new(AtomicUsize::new(0));
        let hub = self.hub.clone();
        let counted = unstored.clone();
        let reader = tokio::spawn(async move {
            loop {
                match inbound.message().await {
                    Ok(Some(up::AgentMessage {
                        body: Some(up::agent_message::Body::Result(r)),
                    })) if counted.load(Ordering::Acquire) == 0 => hub.deliver(r).await,
                    Ok(Some(m)) => {
                        if matches!(
                            m.body,
                            Some(
                                up::agent_message::Body::Snapshot(_)
                                    | up::agent_message::Body::Status(_)
                            )
                        ) {
                            counted.fetch_add(1, Ordering::AcqRel);
                        }
                        if msg_tx.send(m).await.is_err() {
                            return "the writer stopped".to_string();
                        }
                    }
                    Ok(None) => return "the agent closed the stream".to_string(),
                    Err(e) => return format!("the stream failed: {e}"),
                }
            }
        });
        let mut status = StatusFilter::default();
        loop {
            let Some(first) = msg_rx.recv().await else {
                break;
            };
            let mut batch = Batch::default();
            // Snapshots and statuses in `batch`.
            let mut words = 0;
            let mut next = Some(first);
            let mut taken = 0;
            while let Some(m) = next.take() {
                taken += 1;
                match m.body {
                    Some(up::agent_message::Body::Event(e)) => batch.events.push(e),
                    Some(up::agent_message::Body::Status(s)) => {
                        batch.status = Some(s);
                        words += 1;
                    }
                    Some(up::agent_message::Body::Snapshot(s)) => {
                        batch.snapshots.push(s);
                        words += 1;
                    }
                    // A result that came behind a snapshot or status is handed over once that
                    // is stored, so a create's caller counts from the host's latest word.
                    Some(up::agent_message::Body::Result(r)) => {
                        if words > 0 {
                            let before = std::mem::take(&mut batch);
                            if let Err(why) = self.store(src, serial, before, &mut status, tx).await
                            {
                                reader.abort();
                                return why;
                            }
                            unstored.fetch_sub(std::mem::take(&mut words), Ordering::AcqRel);
                        }
                        self.hub.deliver(r).await;
                    }
                    Some(up::agent_message::Body::Hello(_)) | None => {}
                }
                if taken < BATCH {
                    next = msg_rx.try_recv().ok();
                }
            }
            if let Err(why) = self.store(src, serial, batch, &mut status, tx).await {
                reader.abort();
                return why;
            }
            unstored.fetch_sub(words, Ordering::AcqRel);
        }
        match reader.await {
            Ok(why) => why,
            Err(_) => "the stream reader stopped".into(),
        }
    }

    /// Writes `batch` (trying again while the database fails and the agent is still there),
    /// then acknowledges its events; `Err` says why the stream is to end.
    async fn store(
        &self,
        src: &Source,
        serial: u64,
        mut batch: Batch,
        status: &mut StatusFilter,
        tx: &mpsc::Sender<up::ControlMessage>,
    ) -> Result<(), String> {
        status.pass(&mut batch);
        if batch.is_empty() {
            return Ok(());
        }
        let batch = Arc::new(batch);
        let highest = loop {
            let write = Write::Relay {
                src: src.clone(),
                batch: batch.clone(),
                current: self.hub.holds(&src.instance_id, serial),
            };
            match self.writer.write(write).await {
                Ok(h) => break h,
                Err(e) => {
                    tracing::warn!(instance.id = %src.instance_id, error = %e, "cannot store what an agent sent; trying again");
                    if tx.is_closed() {
                        return Err("the stream closed while the database failed".into());
                    }
                    tokio::time::sleep(WRITE_RETRY).await;
                }
            }
        };
        match highest {
            Some(h) if tx.send(ack(h)).await.is_err() => Err("the agent left".into()),
            _ => Ok(()),
        }
    }
}

/// Drops a status equal to the last one written, for a while: it says nothing new.
#[derive(Default)]
struct StatusFilter {
    last: Option<up::InstanceStatus>,
    written_at: Option<tokio::time::Instant>,
}

impl StatusFilter {
    fn pass(&mut self, batch: &mut Batch) {
        if batch.status.is_some() {
            let fresh = self
                .written_at
                .is_some_and(|t| t.elapsed() < STATUS_REFRESH);
            if batch.status == self.last && fresh {
                batch.status = None;
            } else {
                self.last = batch.status;
            }
        }
        if !batch.is_empty() {
            self.written_at = Some(tokio::time::Instant::now());
        }
    }
}

fn ack(sequence: u64) -> up::ControlMessage {
    up::ControlMessage {
        body: Some(up::control_message::Body::Ack(up::Ack { sequence })),
    }
}

/// Compares without stopping at the first difference, so timing says nothing of a token.
fn constant_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}
