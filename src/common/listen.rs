//! Accepting client connections under bounds, for both listeners (the GSE SDK and the control
//! API): no client, however many connections it opens or however slowly it speaks, can take
//! the descriptors a game launch needs or make the agent spin.
//!
//! - **A cap** on live connections per listener ([`Bounds::max_connections`]); a connection over
//!   it is closed at once, after a short refusal where the protocol has one.
//! - **A first-bytes deadline**: a connection that sends nothing within
//!   [`Bounds::first_bytes_within`] is closed (a protocol's header timeout covers the rest).
//! - **An idle deadline** ([`Bounds::idle_after`]): a connection that sends nothing for that
//!   long is closed.
//! - **No busy loop when descriptors run out**: `EMFILE` and its kind back the accept off,
//!   10 ms doubling to 1 s, with one warning per second at most.
//! - **Proof, where a listener asks for it** ([`Acceptor::with_proof`]): connections that have
//!   not yet done what their clients must do first are bounded in number and in time.

mod proof;

pub use proof::{Proof, ProofBounds};

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, Sleep};

use crate::common::telemetry::LogLimit;

/// Descriptors kept free for what the agent itself opens (game launches, logs, the store):
/// the connection caps are cut so clients can never hold these.
pub const RESERVED_DESCRIPTORS: u64 = 512;

/// What one listener allows.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// Live connections at most; more are refused.
    pub max_connections: usize,
    /// A new connection must send its first bytes within this...
    pub first_bytes_within: Duration,
    /// ...this many of them (the HTTP/2 preface is 24 bytes: a client that sends part of it
    /// and stops would hold its place forever, since pings start only after it).
    pub first_bytes: usize,
    /// A connection that sends nothing for this long is closed (`None`: never for that alone).
    pub idle_after: Option<Duration>,
}

impl Bounds {
    /// These bounds with the cap lowered to `share` of what the open-files limit leaves after
    /// [`RESERVED_DESCRIPTORS`] (at least 16).
    pub fn within_open_files(mut self, open_files_limit: u64, share: u64) -> Self {
        let room = open_files_limit.saturating_sub(RESERVED_DESCRIPTORS) / share.max(1);
        self.max_connections = self
            .max_connections
            .min(usize::try_from(room).unwrap_or(usize::MAX).max(16));
        self
    }
}

/// A listener that hands out [`Guarded`] connections within its [`Bounds`]; each carries a
/// fresh `M` that every request on the connection shares (see [`ConnInfo`]).
pub struct Acceptor<M = ()> {
    listener: TcpListener,
    bounds: Bounds,
    what: &'static str,
    /// Written (best effort) to a connection refused over the cap before it is closed.
    refusal: &'static [u8],
    live: Arc<AtomicUsize>,
    /// With [`Acceptor::with_proof`]: its bounds and the count of unproven connections.
    proof: Option<(ProofBounds, Arc<AtomicUsize>)>,
    warnings: LogLimit<&'static str>,
    memo: std::marker::PhantomData<fn() -> M>,
}

/// Accept errors that say nothing about the listener: the next accept may succeed at once.
fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset | Interrupted
    )
}

const BACKOFF_FIRST: Duration = Duration::from_millis(10);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

impl<M: Memo> Acceptor<M> {
    /// Accepts on `listener` for `what` (named in log lines), within `bounds`.
    pub fn new(listener: TcpListener, what: &'static str, bounds: Bounds) -> Self {
        Self {
            listener,
            bounds,
            what,
            refusal: b"",
            live: Arc::new(AtomicUsize::new(0)),
            proof: None,
            warnings: LogLimit::new(1, Duration::from_secs(1)),
            memo: std::marker::PhantomData,
        }
    }

    /// Bytes written to a connection refused over the cap (e.g. an HTTP 503 with a body).
    pub fn with_refusal(mut self, refusal: &'static [u8]) -> Self {
        self.refusal = refusal;
        self
    }

    /// Every connection must prove itself ([`Proof::prove`], through its [`ConnInfo`]) within
    /// `bounds.within`, and at most `bounds.max_unproven` may be unproven at once.
    pub fn with_proof(mut self, bounds: ProofBounds) -> Self {
        self.proof = Some((bounds, Arc::new(AtomicUsize::new(0))));
        self
    }

    /// The address listened on.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Live connections now.
    pub fn live(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }

    /// The next connection within the cap; errors are handled here (backed off, logged).
    pub async fn accept(&mut self) -> Guarded<M> {
        let mut backoff = BACKOFF_FIRST;
        loop {
            let (stream, peer) = match self.listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) if is_connection_error(&e) => continue,
                Err(e) => {
                    // EMFILE, ENFILE, ENOBUFS, ENOMEM: retrying at once would spin.
                    if let Some(suppressed) =
                        self.warnings.admit("accept", std::time::Instant::now())
                    {
                        tracing::warn!(listener = self.what, error = %e, retry.after = ?backoff, warnings.suppressed = suppressed, "cannot accept connections");
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    continue;
                }
            };
            backoff = BACKOFF_FIRST;
            if self.live.fetch_add(1, Ordering::AcqRel) >= self.bounds.max_connections {
                self.live.fetch_sub(1, Ordering::AcqRel);
                let _ = stream.try_write(self.refusal);
                if let Some(suppressed) = self.warnings.admit("cap", std::time::Instant::now()) {
                    tracing::warn!(listener = self.what, client.addr = %peer, connections.max = self.bounds.max_connections, refusals.suppressed = suppressed, "connection refused: too many open connections");
                }
                continue;
            }
            let slot = Slot(self.live.clone());
            let (proof, prove_by) = match &self.proof {
                None => (Proof::default(), None),
                Some((bounds, unproven)) => {
                    if unproven.fetch_add(1, Ordering::AcqRel) >= bounds.max_unproven {
                        unproven.fetch_sub(1, Ordering::AcqRel);
                        if let Some(suppressed) =
                            self.warnings.admit("unproven", std::time::Instant::now())
                        {
                            tracing::warn!(listener = self.what, client.addr = %peer, connections.unproven_max = bounds.max_unproven, refusals.suppressed = suppressed, "connection refused: too many connections have not proved themselves yet");
                        }
                        continue;
                    }
                    (
                        Proof::counted(unproven.clone()),
                        Some(Instant::now() + bounds.within),
                    )
                }
            };
            let _ = stream.set_nodelay(true);
            let local = stream.local_addr().unwrap_or(peer);
            let now = Instant::now();
            return Guarded {
                stream,
                info: ConnInfo {
                    peer,
                    local,
                    memo: M::default(),
                    proof: proof.clone(),
                },
                _slot: slot,
                _unproven: prove_by.map(|_| proof::UnprovenPlace(proof)),
                prove_by,
                deadline: Box::pin(tokio::time::sleep_until(
                    now + self.bounds.first_bytes_within,
                )),
                bounds: self.bounds,
                accepted_at: now,
                last_read: None,
                received: 0,
            };
        }
    }

    /// The connections as a stream (for servers that take one, e.g. tonic's): a task accepts
    /// until the stream is dropped.
    pub fn into_stream(mut self) -> impl tokio_stream::Stream<Item = std::io::Result<Guarded<M>>> {
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tokio::spawn(async move {
            loop {
                let conn = tokio::select! {
                    conn = self.accept() => conn,
                    _ = tx.closed() => return,
                };
                if tx.send(Ok(conn)).await.is_err() {
                    return;
                }
            }
        });
        tokio_stream::wrappers::ReceiverStream::new(rx)
    }
}

/// Per-connection state the requests on one connection share (a verified caller, say).
pub trait Memo: Default + Clone + Send + Sync + Unpin + 'static {}
impl<T: Default + Clone + Send + Sync + Unpin + 'static> Memo for T {}

/// Who is on the other end of one connection; every request on it sees the same one.
#[derive(Debug, Clone)]
pub struct ConnInfo<M> {
    /// The client's address.
    pub peer: SocketAddr,
    /// The address the client connected to.
    pub local: SocketAddr,
    /// What the server has learnt about this connection.
    pub memo: M,
    /// Whether it has proved itself (on a listener that asks, [`Acceptor::with_proof`]).
    pub proof: Proof,
}

/// Gives its place back under the cap when the connection is dropped.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// An accepted connection that closes itself (reads fail with `TimedOut`) when its client
/// misses the first-bytes or idle deadline.
pub struct Guarded<M = ()> {
    stream: TcpStream,
    info: ConnInfo<M>,
    _slot: Slot,
    /// Its place among the unproven, while it is.
    _unproven: Option<proof::UnprovenPlace>,
    /// When it is closed unless proven by then.
    prove_by: Option<Instant>,
    /// Armed at or before the deadline in force; re-armed when it fires early, so a read
    /// costs a clock reading, not a timer update.
    deadline: Pin<Box<Sleep>>,
    bounds: Bounds,
    accepted_at: Instant,
    /// When bytes last arrived (`None`: not yet [`Bounds::first_bytes`] of them).
    last_read: Option<Instant>,
    /// Bytes received, counted up to [`Bounds::first_bytes`].
    received: usize,
}

impl<M> Guarded<M> {
    /// Who is on the other end.
    pub fn info(&self) -> &ConnInfo<M> {
        &self.info
    }

    /// When the connection is to be closed for silence, if ever.
    fn closes_at(&self) -> Option<Instant> {
        let silence = match self.last_read {
            None => Some(self.accepted_at + self.bounds.first_bytes_within),
            Some(at) => self.bounds.idle_after.map(|idle| at + idle),
        };
        match self.unproven_until() {
            Some(by) => Some(silence.map_or(by, |s| s.min(by))),
            None => silence,
        }
    }

    /// The proof deadline, while the connection is unproven.
    fn unproven_until(&self) -> Option<Instant> {
        self.prove_by.filter(|_| !self.info.proof.is_proven())
    }

    /// `Ready(Err)` once the connection's deadline has passed; otherwise `Pending` with the
    /// timer registered.
    fn poll_deadline(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        loop {
            let Some(closes_at) = self.closes_at() else {
                return Poll::Pending;
            };
            if self.deadline.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            if Instant::now() >= closes_at {
                let what = if self.unproven_until().is_some_and(|by| by <= closes_at) {
                    "the connection did not prove itself in time"
                } else if self.last_read.is_none() {
                    "the client sent nothing after connecting"
                } else {
                    "the connection was idle"
                };
                return Poll::Ready(Err(std::io::Error::new(std::io::ErrorKind::TimedOut, what)));
            }
            self.deadline.as_mut().reset(closes_at);
        }
    }
}

impl<M: Unpin> AsyncRead for Guarded<M> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let got = buf.filled().len() - before;
                if got > 0 {
                    this.received = this.received.saturating_add(got);
                    if this.received >= this.bounds.first_bytes {
                        this.last_read = Some(Instant::now());
                    }
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => this.poll_deadline(cx),
        }
    }
}

impl<M: Unpin> AsyncWrite for Guarded<M> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

impl<M: Memo> tonic::transport::server::Connected for Guarded<M> {
    type ConnectInfo = ConnInfo<M>;

    fn connect_info(&self) -> ConnInfo<M> {
        self.info.clone()
    }
}

/// The client address of the connection a request came on (an extension every request served
/// by [`serve_http1`] carries).
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

/// Serves `app` over HTTP/1 on every connection `acceptor` hands out until `shutdown`, then
/// lets open connections finish for up to `drain`; a request head must arrive within
/// `header_timeout` and fit `max_head` bytes. Returns how many connections were still open
/// when `drain` ran out (0: all finished).
pub async fn serve_http1(
    mut acceptor: Acceptor<()>,
    app: axum::Router,
    header_timeout: Duration,
    max_head: usize,
    shutdown: tokio_util::sync::CancellationToken,
    drain: Duration,
) -> usize {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_buf_size(max_head);
    let connections = tokio_util::task::TaskTracker::new();
    loop {
        let conn = tokio::select! {
            conn = acceptor.accept() => conn,
            _ = shutdown.cancelled() => break,
        };
        // Handlers see who is on the other end (the API's audit records it).
        let peer = tonic::transport::server::Connected::connect_info(&conn).peer;
        let served = http.serve_connection(
            hyper_util::rt::TokioIo::new(conn),
            hyper_util::service::TowerToHyperService::new(
                app.clone().layer(axum::Extension(Peer(peer))),
            ),
        );
        let stop = shutdown.clone();
        connections.spawn(async move {
            let mut served = std::pin::pin!(served);
            tokio::select! {
                _ = served.as_mut() => return,
                _ = stop.cancelled() => served.as_mut().graceful_shutdown(),
            }
            let _ = served.await;
        });
    }
    connections.close();
    match tokio::time::timeout(drain, connections.wait()).await {
        Ok(()) => 0,
        Err(_) => connections.len(),
    }
}
