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

mod bounds;
mod connection;
mod refusal;

use super::credentials::{self, Credential, TokenFile};
use super::hub::Hub;
use super::metrics::ControlMetrics;
use super::store::{self, Arrival, Batch, Source};
use super::sync;
use super::writer::{Write, Writer};
use crate::upstream_proto as up;
use crate::upstream_proto::control_plane_server::ControlPlane;
pub use bounds::Waiting;
use bounds::oversized;
use connection::{certificate_names, connection_of, peer_of, read_hello};
pub use refusal::{Refusal, Refused};

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
    /// The hosts' credentials (`None`: tokens are not checked).
    pub tokens: Option<Arc<TokenFile>>,
    /// Streams waiting for their Hello, by peer address.
    pub waiting: Arc<Waiting>,
    /// Whether agents must present a client certificate (`relay-tls.client-ca-file`): one that
    /// cannot be read as naming an instance is refused.
    pub certificates: bool,
    /// What the relay counts: streams open, refusals by rule, what could not be stored.
    pub metrics: Arc<ControlMetrics>,
}

/// Why a stream was refused as speaking for a host it may not: said to the agent
/// (`PERMISSION_DENIED`) and logged with the credential's name, never its secret.
fn refuse(peer: &str, credential: &Credential, rule: Refusal, message: String) -> Refused {
    tracing::warn!(client.addr = %peer, credential = %credential.name, instance.id = %credential.instance, error = %message, "agent stream refused: it named a host its credential does not speak for");
    rule.with(Status::permission_denied(message))
}

type Out = Pin<Box<dyn Stream<Item = Result<up::ControlMessage, Status>> + Send>>;

#[tonic::async_trait]
impl ControlPlane for RelayService {
    type RelayStream = Out;

    async fn relay(
        &self,
        request: Request<Streaming<up::AgentMessage>>,
    ) -> Result<Response<Out>, Status> {
        let proof = connection_of(&request).map(|c| c.proof.clone());
        let admitted = self.admit(request).await.map_err(|r| {
            self.metrics.refused(r.rule);
            r.status
        })?;
        // The connection carries a host's stream: it stays, however long it lives.
        if let Some(proof) = proof {
            proof.prove();
        }
        Ok(self.serve(admitted).await)
    }
}

/// A stream whose Hello passed every rule, stored as arrived.
struct Admitted {
    hello: up::Hello,
    inbound: Streaming<up::AgentMessage>,
    credential: Option<(Credential, String)>,
    stream: String,
    known: store::Known,
}

impl RelayService {
    /// Reads the stream's Hello and holds it to every rule: the bounds on waiting streams,
    /// its credential, its ids and what its credential may claim; then records its arrival.
    async fn admit(
        &self,
        request: Request<Streaming<up::AgentMessage>>,
    ) -> Result<Admitted, Refused> {
        let peer = peer_of(&request);
        let certified = certificate_names(&request);
        let waiting = peer
            .parse::<std::net::SocketAddr>()
            .ok()
            .map(|a| self.waiting.admit(a.ip()))
            .transpose()
            .map_err(|s| Refusal::TooManyWaiting.with(s))?;
        let credential = self.bearer_credential(&request, &peer)?;
        let mut inbound = request.into_inner();
        let hello = read_hello(&mut inbound).await?;
        drop(waiting);
        self.check_identity(
            &peer,
            certified.as_deref(),
            credential.as_ref().map(|(c, _)| c),
            &hello,
        )
        .await?;
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
        .map_err(|e| {
            tracing::warn!(instance.id = %hello.instance_id, error = %e, "cannot record an arriving agent");
            Refusal::Database.with(Status::unavailable("the control plane's database cannot be written; try again"))
        })?;
        Ok(Admitted {
            hello,
            inbound,
            credential,
            stream,
            known,
        })
    }

    /// Serves an admitted stream: commands go down it through the hub, what it sends is
    /// stored and acknowledged, until it ends, is replaced or its credential is revoked.
    async fn serve(&self, admitted: Admitted) -> Response<Out> {
        let Admitted {
            hello,
            inbound,
            credential,
            stream,
            known,
        } = admitted;
        let (tx, rx) = mpsc::channel(BUFFER);
        // The database may know more than the agent: do not make it resend that.
        if known.acked > hello.last_acked_sequence {
            let _ = tx.try_send(ack(known.acked));
        }
        let ended = tokio_util::sync::CancellationToken::new();
        let serial = self
            .hub
            .attach(&hello.instance_id, &stream, tx.clone(), ended.clone())
            .await;
        if let (Some(tokens), Some((c, presented))) = (&self.tokens, credential) {
            tokio::spawn(watch_revocation(
                tokens.clone(),
                c,
                presented,
                ended.clone(),
            ));
        }
        tracing::info!(instance.id = %hello.instance_id, fleet.id = %hello.fleet_id, upstream.epoch = hello.epoch, upstream.acked = hello.last_acked_sequence, "agent connected");
        let service = self.clone();
        let open = self.metrics.accepted();
        tokio::spawn(async move {
            let _open = open;
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
            let why = service.pump(&src, serial, inbound, &tx, &ended).await;
            ended.cancel();
            service.hub.detach(&src.instance_id, serial);
            if let Err(e) = store::depart(&service.pool, &src.instance_id, &stream).await {
                tracing::warn!(instance.id = %src.instance_id, error = %e, "cannot record a departed agent");
            }
            tracing::info!(instance.id = %src.instance_id, reason = %why, "agent disconnected");
        });
        Response::new(Box::pin(ReceiverStream::new(rx).map(Ok)))
    }
}

/// Ends a stream (through `ended`) once its credential is revoked or changed in the tokens
/// file, or the stream has ended by itself.
async fn watch_revocation(
    tokens: Arc<TokenFile>,
    credential: Credential,
    presented: String,
    ended: tokio_util::sync::CancellationToken,
) {
    loop {
        tokio::select! {
            _ = ended.cancelled() => return,
            _ = tokio::time::sleep(credentials::RECHECK) => {}
        }
        let now = tokens.credentials();
        let same = now
            .find(&presented)
            .is_some_and(|c| c.instance == credential.instance && c.fleet == credential.fleet);
        if !same {
            tracing::warn!(credential = %credential.name, instance.id = %credential.instance, "agent stream ended: its credential was revoked or changed");
            ended.cancel();
            return;
        }
    }
}

impl RelayService {
    /// The credential the stream's bearer token names, when agent-tokens-file is set; an
    /// unknown token is refused.
    fn bearer_credential(
        &self,
        request: &Request<Streaming<up::AgentMessage>>,
        peer: &str,
    ) -> Result<Option<(Credential, String)>, Refused> {
        Ok(match &self.tokens {
            Some(tokens) => {
                let presented = request
                    .metadata()
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "))
                    .unwrap_or("")
                    .to_string();
                match tokens.credentials().find(&presented) {
                    Some(c) => Some((c.clone(), presented)),
                    None => {
                        tracing::warn!(client.addr = %peer, "agent stream refused: its bearer token is not in agent-tokens-file");
                        return Err(Refusal::UnknownToken.with(Status::unauthenticated(
                            "the agent's bearer token is not in agent-tokens-file",
                        )));
                    }
                }
            }
            None => None,
        })
    }

    /// A client certificate speaks for the instance it names, and a credential for what it is
    /// granted; refused otherwise.
    async fn check_identity(
        &self,
        peer: &str,
        certified: Option<&[String]>,
        credential: Option<&Credential>,
        hello: &up::Hello,
    ) -> Result<(), Refused> {
        if self.certificates && certified.is_none() {
            tracing::warn!(client.addr = %peer, "agent stream refused: its client certificate names no instance that can be read");
            return Err(Refusal::UnreadableCertificate.with(Status::permission_denied(
                "the client certificate cannot be read as naming an instance (name it as a DNS subject alternative name)",
            )));
        }
        // A client certificate speaks for the instance it names, and no other.
        if let Some(names) = certified
            && !names.contains(&hello.instance_id)
        {
            tracing::warn!(client.addr = %peer, certificate.names = %names.join(","), instance.id = %hello.instance_id, "agent stream refused: its certificate does not name the instance it claims");
            return Err(Refusal::CertificateInstance.with(Status::permission_denied(format!(
                "the client certificate names {} (its DNS subject alternative names and common name), not instance {}",
                if names.is_empty() {
                    "nothing".to_string()
                } else {
                    names.join(", ")
                },
                hello.instance_id
            ))));
        }
        if let Some(c) = credential {
            self.check_claim(peer, c, hello).await?;
        } else if certified.is_some() {
            // A certificate pins no fleet: the instance keeps the one it has.
            let c = Credential {
                instance: hello.instance_id.clone(),
                fleet: None,
                name: "its client certificate".into(),
            };
            self.check_claim(peer, &c, hello).await?;
        }
        Ok(())
    }

    /// A Hello may name only the credential's instance, and its fleet: the one the line
    /// names, else the one the instance already has (a Hello does not move a host).
    async fn check_claim(
        &self,
        peer: &str,
        c: &Credential,
        hello: &up::Hello,
    ) -> Result<(), Refused> {
        if hello.instance_id != c.instance {
            return Err(refuse(
                peer,
                c,
                Refusal::CredentialInstance,
                format!(
                    "this credential ({}) speaks for instance {}, not {}",
                    c.name, c.instance, hello.instance_id
                ),
            ));
        }
        match &c.fleet {
            Some(f) if *f != hello.fleet_id => Err(refuse(
                peer,
                c,
                Refusal::Fleet,
                format!(
                    "instance {} is assigned to {f} ({}), not {}",
                    c.instance, c.name, hello.fleet_id
                ),
            )),
            Some(_) => Ok(()),
            None => match store::fleet_of(&self.pool, &c.instance).await {
                Ok(Some(f)) if f != hello.fleet_id => Err(refuse(
                    peer,
                    c,
                    Refusal::Fleet,
                    format!(
                        "instance {} is in {f}; a Hello cannot move it to {} (name the fleet on its line of agent-tokens-file to move it)",
                        c.instance, hello.fleet_id
                    ),
                )),
                Ok(_) => Ok(()),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read an arriving agent's fleet");
                    Err(Refusal::Database.with(Status::unavailable(
                        "the control plane's database cannot be read",
                    )))
                }
            },
        }
    }

    /// Reads the stream until it ends or `ended` is cancelled (the stream was replaced or its
    /// credential revoked): batches what arrives, writes each batch, then acknowledges its
    /// events. Returns why it ended.
    async fn pump(
        &self,
        src: &Source,
        serial: u64,
        mut inbound: Streaming<up::AgentMessage>,
        tx: &mpsc::Sender<up::ControlMessage>,
        ended: &tokio_util::sync::CancellationToken,
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
            let first = tokio::select! {
                m = msg_rx.recv() => m,
                _ = ended.cancelled() => {
                    reader.abort();
                    return "the stream was replaced or its credential revoked".into();
                }
            };
            let Some(first) = first else {
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
                        if let Some(why) = oversized(&s) {
                            tracing::warn!(instance.id = %src.instance_id, reason = %why, "agent stream ended: a snapshot more than its host could hold");
                            self.metrics.refused(Refusal::OversizedSnapshot);
                            reader.abort();
                            return why;
                        }
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
        let mut batch = Arc::new(batch);
        let mut cleaned = false;
        let highest = loop {
            let write = Write::Relay {
                src: src.clone(),
                batch: batch.clone(),
                current: self.hub.holds(&src.instance_id, serial),
            };
            match self.writer.write(write).await {
                Ok(h) => break h,
                // A value PostgreSQL cannot store would fail this write forever and freeze the
                // host's stream: it is stored with its NUL characters replaced instead.
                Err(e) if e.is_bad_data() && !cleaned => {
                    tracing::warn!(instance.id = %src.instance_id, error = %e, "an agent sent a value the database cannot store; it is stored with NUL characters replaced by U+FFFD");
                    self.metrics.value_replaced();
                    batch = Arc::new(batch.without_nul());
                    cleaned = true;
                }
                // Still refused: said once and passed over, so the stream moves on.
                Err(e) if e.is_bad_data() => {
                    self.metrics.batch_passed_over();
                    tracing::error!(instance.id = %src.instance_id, error = %e, events = batch.events.len(), snapshots = batch.snapshots.len(), "an agent's batch cannot be stored even with NUL characters replaced; it is passed over");
                    break batch.events.iter().map(|e| e.sequence).max();
                }
                Err(e) => {
                    tracing::warn!(instance.id = %src.instance_id, error = %e, "cannot store what an agent sent; trying again");
                    self.metrics.write_retried();
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
