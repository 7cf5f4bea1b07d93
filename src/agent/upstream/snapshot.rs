//! Snapshots: what the agent holds (processes, sessions, players), so that a control plane that
//! was down, or lost its database, learns the truth from the host.
//!
//! One complete snapshot follows every Hello. After it, a [`Watcher`] marks what each event
//! and each [`Change`] touches and sends a partial snapshot: every process, plus each touched
//! session with all its player sessions. Snapshots are state, not events: they never go into
//! the outbox, a lost one is made good by the complete one of the next connection, and they are
//! coalesced (at most one per [`COALESCE`] per connection; while the stream is backed up the
//! touched ids accumulate and go in the next one that fits).

use std::collections::BTreeSet;
use std::time::Duration;

use tokio::sync::broadcast::{self, error::RecvError};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::agent::capi::view;
use crate::agent::event::{Change, Event, EventBus};
use crate::agent::fleet::actor::HandleError;
use crate::agent::fleet::{Control, ControlReply, FleetHandle, HostState, HostStateScope};
use crate::upstream_proto as up;

/// Partial snapshots of one connection are at least this far apart.
pub const COALESCE: Duration = Duration::from_millis(20);

/// gRPC's default limit on a received message (tonic, grpc-go, grpc-java): a snapshot larger
/// than this is refused by a control plane that kept the default, so the agent says so.
pub const GRPC_DEFAULT_MAX_MESSAGE: usize = 4 << 20;

/// Why a snapshot could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The fleet actor has stopped (the agent is shutting down): there is nothing to mirror.
    #[error("the fleet supervisor has stopped")]
    Stopped,
    /// The fleet refused the query or answered something else (a bug).
    #[error("the fleet did not describe its state: {0}")]
    Fleet(String),
    /// Rendering on the blocking pool failed.
    #[error("rendering the snapshot failed: {0}")]
    Render(String),
}

/// What changed since the last snapshot was built.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Dirty {
    /// Everything: the next snapshot is complete (a subscription lagged, or the complete
    /// snapshot of the connection could not be built).
    all: bool,
    /// The process list changed.
    processes: bool,
    /// Sessions that changed, or whose player sessions did.
    sessions: BTreeSet<String>,
}

impl Dirty {
    /// Marks what `event` touches: its session, and the process list when it names a process
    /// or a session (a session's process changes with it). Events about neither (the agent,
    /// the instance, the upstream link) touch nothing a snapshot carries.
    pub fn event(&mut self, event: &Event) {
        if let Some(id) = &event.game_server_session_id {
            self.sessions.insert(id.clone());
            self.processes = true;
        }
        if event.process_id.is_some() {
            self.processes = true;
        }
    }

    /// Marks what a change no event reports touches.
    pub fn change(&mut self, change: &Change) {
        match change {
            Change::Session(id) => {
                self.sessions.insert(id.clone());
            }
            Change::Processes => self.processes = true,
        }
    }

    /// Marks everything: the next snapshot is complete.
    pub fn everything(&mut self) {
        self.all = true;
    }

    /// Nothing changed.
    pub fn is_empty(&self) -> bool {
        !self.all && !self.processes && self.sessions.is_empty()
    }

    /// What the next snapshot covers (complete or not), leaving nothing marked.
    pub fn take(&mut self) -> (HostStateScope, bool) {
        let taken = std::mem::take(self);
        if taken.all {
            (HostStateScope::All, true)
        } else {
            (
                HostStateScope::Sessions(taken.sessions.into_iter().collect()),
                false,
            )
        }
    }

    /// Marks again what a snapshot that could not be built or sent covered.
    fn restore(&mut self, scope: HostStateScope, complete: bool) {
        self.processes = true;
        match scope {
            HostStateScope::All => self.all |= complete,
            HostStateScope::Sessions(ids) => self.sessions.extend(ids),
        }
    }
}

/// The snapshot of `state`: processes as DescribeServerProcesses says them, sessions and
/// player sessions as the control API's Tencent JSON.
pub fn render(state: &HostState, complete: bool) -> up::Snapshot {
    up::Snapshot {
        complete,
        processes: state
            .processes
            .iter()
            .map(|p| up::ProcessState {
                process_id: p.process_id.clone(),
                pid: p.pid,
                status: p.status.to_string(),
                healthy: p.healthy,
                game_server_session_id: p.game_server_session_id.clone().unwrap_or_default(),
            })
            .collect(),
        game_server_sessions_json: state
            .sessions
            .iter()
            .map(|s| view::session(&s.session).to_string())
            .collect(),
        player_sessions_json: state
            .sessions
            .iter()
            .flat_map(|s| s.players.iter().map(|p| view::player(p).to_string()))
            .collect(),
    }
}

/// Reads the fleet's state for `scope` (one query to the actor) and renders it off the async
/// workers (a complete snapshot of a busy host holds thousands of player sessions).
pub async fn build(
    fleet: &FleetHandle,
    scope: HostStateScope,
    complete: bool,
) -> Result<up::Snapshot, SnapshotError> {
    let state = match fleet.control(Control::DescribeHostState(scope)).await {
        Ok(ControlReply::HostState(state)) => state,
        Ok(other) => return Err(SnapshotError::Fleet(format!("{other:?}"))),
        Err(HandleError::Stopped) => return Err(SnapshotError::Stopped),
        Err(HandleError::Fleet(e)) => return Err(SnapshotError::Fleet(e.to_string())),
    };
    let snapshot = tokio::task::spawn_blocking(move || render(&state, complete))
        .await
        .map_err(|e| SnapshotError::Render(e.to_string()))?;
    let bytes = prost::Message::encoded_len(&snapshot);
    if bytes > GRPC_DEFAULT_MAX_MESSAGE {
        tracing::warn!(
            snapshot.bytes = bytes,
            snapshot.sessions = snapshot.game_server_sessions_json.len(),
            snapshot.players = snapshot.player_sessions_json.len(),
            "a snapshot is larger than gRPC's default 4 MiB message limit: the control plane must accept larger messages"
        );
    }
    Ok(snapshot)
}

/// Watches one connection's changes and sends its partial snapshots.
pub struct Watcher {
    events: broadcast::Receiver<Event>,
    changes: broadcast::Receiver<Change>,
    dirty: Dirty,
}

impl Watcher {
    /// Subscribes to the bus. Call it before the complete snapshot is read, so that every
    /// change after that read is seen.
    pub fn subscribe(bus: &EventBus) -> Self {
        Self {
            events: bus.subscribe(),
            changes: bus.subscribe_changes(),
            dirty: Dirty::default(),
        }
    }

    /// The complete snapshot of the connection could not be built: the next one is complete.
    pub fn missed_complete(&mut self) {
        self.dirty.everything();
    }

    /// Sends a partial snapshot on `out` (the connection's stream) whenever something changed,
    /// the first no sooner than [`COALESCE`] after `last` (the complete one), each next no
    /// sooner than [`COALESCE`] after the one before. A snapshot is built only once `out` has
    /// room for it, so a backed-up stream delays and coalesces snapshots but never queues
    /// them ahead of events, and never holds up the relay. Ends when `out` closes or the fleet
    /// stops.
    pub async fn run(
        mut self,
        fleet: FleetHandle,
        out: mpsc::Sender<up::AgentMessage>,
        last: Instant,
    ) {
        let mut not_before = last + COALESCE;
        loop {
            let pending = !self.dirty.is_empty();
            let due = pending && Instant::now() >= not_before;
            tokio::select! {
                r = self.events.recv() => match r {
                    Ok(e) => self.dirty.event(&e),
                    Err(RecvError::Lagged(n)) => {
                        tracing::debug!(events.missed = n, "snapshot watcher lagged; the next snapshot is complete");
                        self.dirty.everything();
                    }
                    Err(RecvError::Closed) => return,
                },
                r = self.changes.recv() => match r {
                    Ok(c) => self.dirty.change(&c),
                    Err(RecvError::Lagged(_)) => self.dirty.everything(),
                    Err(RecvError::Closed) => return,
                },
                () = tokio::time::sleep_until(not_before), if pending && !due => {}
                permit = out.reserve(), if due => {
                    let Ok(permit) = permit else { return };
                    let (scope, complete) = self.dirty.take();
                    match build(&fleet, scope.clone(), complete).await {
                        Ok(snapshot) => {
                            tracing::trace!(
                                snapshot.complete = complete,
                                snapshot.sessions = snapshot.game_server_sessions_json.len(),
                                "snapshot sent"
                            );
                            permit.send(up::AgentMessage {
                                body: Some(up::agent_message::Body::Snapshot(snapshot)),
                            });
                        }
                        Err(SnapshotError::Stopped) => return,
                        Err(e) => {
                            // Kept for the next try, after the same pause.
                            tracing::warn!(error = %e, "cannot build a snapshot for the control plane");
                            self.dirty.restore(scope, complete);
                        }
                    }
                    not_before = Instant::now() + COALESCE;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::event::EventCode;

    #[test]
    fn events_mark_their_session_and_the_processes() {
        let mut d = Dirty::default();
        d.event(&Event::new(EventCode::UpstreamConnected, "x"));
        d.event(&Event::new(EventCode::InstanceDraining, "x"));
        assert!(d.is_empty(), "{d:?}");
        d.event(&Event::new(EventCode::ServerProcessStarted, "x").process("proc-0-0-1", Some(7)));
        assert!(!d.is_empty());
        assert_eq!(d.take(), (HostStateScope::Sessions(vec![]), false));
        assert!(d.is_empty());
        for (code, gss) in [
            (EventCode::PlayerSessionReserved, "b"),
            (EventCode::GameSessionCreated, "a"),
            (EventCode::GameSessionActivated, "b"),
        ] {
            d.event(&Event::new(code, "x").session(gss));
        }
        d.change(&Change::Session("c".into()));
        assert_eq!(
            d.take(),
            (
                HostStateScope::Sessions(vec!["a".into(), "b".into(), "c".into()]),
                false
            ),
            "each once, in order"
        );
    }

    #[test]
    fn everything_makes_the_next_snapshot_complete() {
        let mut d = Dirty::default();
        d.change(&Change::Session("a".into()));
        d.everything();
        assert_eq!(d.take(), (HostStateScope::All, true));
        assert!(d.is_empty());
        d.restore(HostStateScope::All, true);
        assert_eq!(d.take(), (HostStateScope::All, true));
        d.restore(HostStateScope::Sessions(vec!["x".into()]), false);
        assert_eq!(
            d.take(),
            (HostStateScope::Sessions(vec!["x".into()]), false)
        );
    }
}
