//! A reference control plane: a real tonic server that records what the agent sends (hellos,
//! events, snapshots, status, results), acks (or not), checks the bearer token, sends commands
//! and can be stopped and restarted on its port.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gse_agent::upstream_proto as up;
use gse_agent::upstream_proto::control_plane_server::{ControlPlane, ControlPlaneServer};
use tokio::sync::mpsc;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use super::wait_for;

/// What arrived, per connection.
#[derive(Default, Debug)]
pub struct Recorded {
    /// One entry per accepted connection: its Hello and the events in arrival order.
    pub connections: Vec<(up::Hello, Vec<up::Event>)>,
    pub statuses: Vec<up::InstanceStatus>,
    pub results: Vec<up::CommandResult>,
    /// Connections refused for a bad token.
    pub refused: usize,
    /// Every snapshot, in arrival order, with where it came.
    pub snapshots: Vec<ReceivedSnapshot>,
}

/// One snapshot as it arrived.
#[derive(Debug, Clone)]
pub struct ReceivedSnapshot {
    /// The connection it came on (an index into [`Recorded::connections`]).
    pub connection: usize,
    /// Messages of any kind that came on that connection between its Hello and this snapshot
    /// (0: right after the Hello).
    pub after: usize,
    pub snapshot: up::Snapshot,
}

impl ReceivedSnapshot {
    /// Its sessions, parsed.
    pub fn sessions(&self) -> Vec<serde_json::Value> {
        parse_all(&self.snapshot.game_server_sessions_json)
    }

    /// Its player sessions, parsed.
    pub fn players(&self) -> Vec<serde_json::Value> {
        parse_all(&self.snapshot.player_sessions_json)
    }
}

fn parse_all(json: &[String]) -> Vec<serde_json::Value> {
    json.iter()
        .map(|j| serde_json::from_str(j).unwrap_or_else(|e| panic!("{e}: {j}")))
        .collect()
}

#[derive(Clone)]
struct Service {
    rec: Arc<Mutex<Recorded>>,
    token: Option<String>,
    auto_ack: bool,
    commands: Arc<Mutex<Option<mpsc::UnboundedSender<up::ControlMessage>>>>,
}

type Out = Pin<Box<dyn Stream<Item = Result<up::ControlMessage, Status>> + Send>>;

#[tonic::async_trait]
impl ControlPlane for Service {
    type RelayStream = Out;

    async fn relay(
        &self,
        request: Request<Streaming<up::AgentMessage>>,
    ) -> Result<Response<Out>, Status> {
        if let Some(token) = &self.token {
            let got = request
                .metadata()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if got != format!("Bearer {token}") {
                self.rec.lock().unwrap().refused += 1;
                return Err(Status::unauthenticated("bad token"));
            }
        }
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::unbounded_channel();
        *self.commands.lock().unwrap() = Some(tx.clone());
        let rec = self.rec.clone();
        let auto_ack = self.auto_ack;
        tokio::spawn(async move {
            let mut index = None;
            // Messages since this connection's Hello.
            let mut after = 0;
            while let Some(Ok(m)) = inbound.next().await {
                let mut r = rec.lock().unwrap();
                let hello = matches!(m.body, Some(up::agent_message::Body::Hello(_)));
                match m.body {
                    Some(up::agent_message::Body::Hello(h)) => {
                        r.connections.push((h, Vec::new()));
                        index = Some(r.connections.len() - 1);
                        after = 0;
                    }
                    Some(up::agent_message::Body::Snapshot(snapshot)) => {
                        if let Some(connection) = index {
                            r.snapshots.push(ReceivedSnapshot {
                                connection,
                                after,
                                snapshot,
                            });
                        }
                    }
                    Some(up::agent_message::Body::Event(e)) => {
                        let seq = e.sequence;
                        if let Some(i) = index {
                            r.connections[i].1.push(e);
                        }
                        if auto_ack {
                            let _ = tx.send(up::ControlMessage {
                                body: Some(up::control_message::Body::Ack(up::Ack {
                                    sequence: seq,
                                })),
                            });
                        }
                    }
                    Some(up::agent_message::Body::Status(s)) => r.statuses.push(s),
                    Some(up::agent_message::Body::Result(c)) => r.results.push(c),
                    None => {}
                }
                if !hello {
                    after += 1;
                }
            }
        });
        let out = UnboundedReceiverStream(rx).map(Ok);
        Ok(Response::new(Box::pin(out)))
    }
}

struct UnboundedReceiverStream(mpsc::UnboundedReceiver<up::ControlMessage>);

impl Stream for UnboundedReceiverStream {
    type Item = up::ControlMessage;
    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.0.poll_recv(cx)
    }
}

/// The server, on its own runtime thread.
pub struct ControlPlaneFake {
    pub addr: SocketAddr,
    pub rec: Arc<Mutex<Recorded>>,
    service: Service,
    /// Its own runtime: dropping it kills the server and every connection at once.
    rt: Option<tokio::runtime::Runtime>,
    tls: Option<tonic::transport::ServerTlsConfig>,
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

impl ControlPlaneFake {
    pub fn start(token: Option<&str>, auto_ack: bool) -> Self {
        Self::start_with(token, auto_ack, None)
    }

    /// With TLS (and mTLS when the config names a client CA).
    pub fn start_with(
        token: Option<&str>,
        auto_ack: bool,
        tls: Option<tonic::transport::ServerTlsConfig>,
    ) -> Self {
        let rt = runtime();
        let service = Service {
            rec: Arc::default(),
            token: token.map(str::to_string),
            auto_ack,
            commands: Arc::default(),
        };
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let cp = Self {
            addr,
            rec: service.rec.clone(),
            service,
            rt: Some(rt),
            tls,
        };
        cp.serve(listener);
        cp
    }

    fn serve(&self, listener: tokio::net::TcpListener) {
        let svc = ControlPlaneServer::new(self.service.clone());
        let mut builder = tonic::transport::Server::builder();
        if let Some(tls) = &self.tls {
            builder = builder.tls_config(tls.clone()).expect("a valid TLS config");
        }
        self.rt.as_ref().expect("running").spawn(async move {
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
            let _ = builder.add_service(svc).serve_with_incoming(incoming).await;
        });
    }

    /// The endpoint the agent dials.
    pub fn endpoint(&self) -> String {
        match self.tls {
            Some(_) => format!("https://localhost:{}", self.addr.port()),
            None => format!("http://{}", self.addr),
        }
    }

    /// Kills the server and every open stream.
    pub fn kill(&mut self) {
        *self.service.commands.lock().unwrap() = None;
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(5));
        }
    }

    /// Serves again on the same port.
    pub fn restart(&mut self) {
        let rt = runtime();
        let addr = self.addr;
        let listener = wait_for("the port to bind again", || {
            rt.block_on(tokio::net::TcpListener::bind(addr)).ok()
        });
        self.rt = Some(rt);
        self.serve(listener);
    }

    /// Sends a command on the current stream (`None`: a command with no kind).
    pub fn command(&self, id: &str, kind: impl Into<Option<up::command::Kind>>) {
        let kind = kind.into();
        let tx = wait_for("an open stream", || {
            self.service.commands.lock().unwrap().clone()
        });
        tx.send(up::ControlMessage {
            body: Some(up::control_message::Body::Command(up::Command {
                id: id.to_string(),
                kind,
            })),
        })
        .unwrap();
    }

    /// Waits for the result of command `id`.
    pub fn result(&self, id: &str) -> up::CommandResult {
        self.results(id, 1).swap_remove(0)
    }

    /// Waits until `n` results of command `id` arrived (over any connection); returns them in
    /// arrival order.
    pub fn results(&self, id: &str, n: usize) -> Vec<up::CommandResult> {
        wait_for(&format!("{n} results of {id}"), || {
            let rec = self.rec.lock().unwrap();
            let got: Vec<_> = rec
                .results
                .iter()
                .filter(|r| r.command_id == id)
                .cloned()
                .collect();
            (got.len() >= n).then_some(got)
        })
    }

    /// Waits until `n` connections have said Hello; commands go to the newest from then on.
    pub fn wait_connections(&self, n: usize) {
        wait_for(&format!("{n} connections"), || {
            (self.rec.lock().unwrap().connections.len() >= n).then_some(())
        })
    }

    /// The Hello of every connection, oldest first.
    pub fn hellos(&self) -> Vec<up::Hello> {
        let rec = self.rec.lock().unwrap();
        rec.connections.iter().map(|(h, _)| h.clone()).collect()
    }

    /// Waits for a snapshot that `matches`; returns the first that does, in arrival order.
    pub fn wait_snapshot(
        &self,
        what: &str,
        matches: impl Fn(&ReceivedSnapshot) -> bool,
    ) -> ReceivedSnapshot {
        wait_for(&format!("a snapshot: {what}"), || {
            let rec = self.rec.lock().unwrap();
            rec.snapshots.iter().find(|s| matches(s)).cloned()
        })
    }

    /// Every event received, deduplicated by sequence, in sequence order.
    pub fn events(&self) -> Vec<up::Event> {
        let rec = self.rec.lock().unwrap();
        let mut all: Vec<up::Event> = rec
            .connections
            .iter()
            .flat_map(|(_, e)| e.iter().cloned())
            .collect();
        all.sort_by_key(|e| e.sequence);
        all.dedup_by_key(|e| e.sequence);
        all
    }

    /// Waits for an event with `code`.
    pub fn wait_event(&self, code: &str) -> up::Event {
        wait_for(&format!("{code} upstream"), || {
            self.events().into_iter().find(|e| e.code == code)
        })
    }
}
