//! A group's writes as the columns of its statements: pure, so what is merged and what wins is
//! tested without a database ([`sql`] sends them).

mod sql;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};

use serde_json::{Value, json};

use super::Write;
use crate::control::store::{Batch, Source, text};
use crate::upstream_proto as up;

/// A group's writes as the columns of its statements: pure, so what is merged and what wins
/// is tested without a database.
#[derive(Debug, Default)]
pub(super) struct Rows {
    /// Per write, the highest event sequence it carries.
    pub(super) highest: Vec<Option<u64>>,
    events: Events,
    /// Complete snapshots: the instance and the sessions it listed (the rest ended).
    complete: Vec<(String, Vec<String>)>,
    /// Sessions a snapshot reported (the newest word on them), by id.
    reported: Keyed<SessionRow>,
    /// Sessions a create made (stored unless a snapshot did).
    made: Keyed<SessionRow>,
    /// Sessions a GAME_SESSION_ACTIVATED event reported ACTIVE (the snapshot that says so
    /// comes up to 20 ms later, and placements wait for it).
    activated: Vec<String>,
    /// The instance whose event said so: a host activates only its own sessions.
    activated_by: Vec<String>,
    /// Player sessions a snapshot reported, by id.
    players_reported: Keyed<Value>,
    /// The instance whose snapshot reported each of them: a snapshot speaks only for the
    /// player sessions of its own host's sessions.
    reporters: HashMap<String, String>,
    /// Player sessions a join returned.
    players_joined: Keyed<Value>,
    /// IdempotencyToken → the session it made.
    tokens: Vec<(String, String)>,
    /// Each current stream's word on its host, by instance.
    hosts: BTreeMap<String, HostRow>,
    /// Creates answered, by instance: how many to take off in flight, and the sessions made.
    counts: BTreeMap<String, (i32, Vec<String>)>,
}

#[derive(Debug, Default)]
struct Events {
    instance: Vec<String>,
    epoch: Vec<i64>,
    fleet: Vec<String>,
    sequence: Vec<i64>,
    time: Vec<i64>,
    code: Vec<String>,
    body: Vec<Value>,
}

#[derive(Debug)]
struct SessionRow {
    fleet: String,
    instance: String,
    body: Value,
}

#[derive(Debug)]
struct HostRow {
    epoch: i64,
    acked: Option<i64>,
    status: Option<Value>,
    idle: Option<i32>,
    processes: Option<i32>,
    /// The keys of the sessions busy processes hold, as a PostgreSQL array literal.
    busy: Option<String>,
    replica: String,
    stream: String,
}

/// Rows by id, the last one given winning, in the order first seen.
#[derive(Debug)]
struct Keyed<T> {
    at: HashMap<String, usize>,
    rows: Vec<(String, T)>,
}

impl<T> Default for Keyed<T> {
    fn default() -> Self {
        Self {
            at: HashMap::new(),
            rows: Vec::new(),
        }
    }
}

impl<T> Keyed<T> {
    fn put(&mut self, id: String, row: T) {
        match self.at.get(&id) {
            Some(&i) => self.rows[i].1 = row,
            None => {
                self.at.insert(id.clone(), self.rows.len());
                self.rows.push((id, row));
            }
        }
    }

    fn ids(&self) -> Vec<String> {
        self.rows.iter().map(|(id, _)| id.clone()).collect()
    }
}

impl Rows {
    pub(super) fn of(writes: &[&Write]) -> Self {
        let mut rows = Self::default();
        for w in writes {
            let highest = match w {
                Write::Relay {
                    src,
                    batch,
                    current,
                } => rows.relay(src, batch, *current),
                Write::Created {
                    fleet,
                    instance,
                    session,
                    token,
                    counted,
                } => {
                    let count = rows.counts.entry(instance.clone()).or_default();
                    count.0 += i32::from(*counted);
                    if let Some(s) = session {
                        let gss = text(s, "GameServerSessionId");
                        count.1.push(gss.clone());
                        if let Some(t) = token {
                            rows.tokens.push((t.clone(), gss.clone()));
                        }
                        rows.made.put(
                            gss,
                            SessionRow {
                                fleet: fleet.clone(),
                                instance: instance.clone(),
                                body: s.clone(),
                            },
                        );
                    }
                    None
                }
                Write::Players(list) => {
                    for p in list {
                        rows.players_joined
                            .put(text(p, "PlayerSessionId"), p.clone());
                    }
                    None
                }
            };
            rows.highest.push(highest);
        }
        rows
    }

    /// Whether an event or a snapshot reported an ACTIVE session.
    pub(super) fn activates(&self) -> bool {
        !self.activated.is_empty()
            || self
                .reported
                .rows
                .iter()
                .any(|(_, r)| r.body.get("Status").and_then(Value::as_str) == Some("ACTIVE"))
    }

    fn relay(&mut self, src: &Source, batch: &Batch, current: bool) -> Option<u64> {
        let epoch = src.epoch as i64;
        for e in &batch.events {
            let ev = &mut self.events;
            ev.instance.push(src.instance_id.clone());
            ev.epoch.push(epoch);
            ev.fleet.push(src.fleet_id.clone());
            ev.sequence.push(e.sequence as i64);
            ev.time.push(e.time_unix_ms);
            ev.code.push(e.code.clone());
            ev.body.push(event_json(e, &src.instance_id));
            if e.code == "GAME_SESSION_ACTIVATED" && !e.game_server_session_id.is_empty() {
                self.activated.push(e.game_server_session_id.clone());
                self.activated_by.push(src.instance_id.clone());
            }
        }
        let highest = batch.events.iter().map(|e| e.sequence).max();
        if !current {
            return highest;
        }
        for s in &batch.snapshots {
            let sessions = parse(src, "session", &s.game_server_sessions_json);
            if s.complete {
                let listed = sessions
                    .iter()
                    .map(|v| text(v, "GameServerSessionId"))
                    .collect();
                self.complete.push((src.instance_id.clone(), listed));
            }
            for body in sessions {
                self.reported.put(
                    text(&body, "GameServerSessionId"),
                    SessionRow {
                        fleet: src.fleet_id.clone(),
                        instance: src.instance_id.clone(),
                        body,
                    },
                );
            }
            for p in parse(src, "player session", &s.player_sessions_json) {
                let id = text(&p, "PlayerSessionId");
                self.reporters.insert(id.clone(), src.instance_id.clone());
                self.players_reported.put(id, p);
            }
        }
        // The last snapshot's free processes, and the sessions its busy ones host (a created
        // session already among them is not counted again).
        let last = batch.snapshots.last();
        let idle = last.map(|s| {
            s.processes
                .iter()
                .filter(|p| {
                    p.status == "ACTIVE" && p.healthy && p.game_server_session_id.is_empty()
                })
                .count() as i32
        });
        let busy = last.map(|s| {
            keys(
                s.processes
                    .iter()
                    .filter(|p| !p.game_server_session_id.is_empty())
                    .map(|p| p.game_server_session_id.as_str()),
            )
        });
        self.hosts.insert(
            src.instance_id.clone(),
            HostRow {
                epoch,
                acked: highest.map(|h| h as i64),
                status: batch.status.as_ref().map(status_json),
                idle,
                processes: last.map(|s| s.processes.len() as i32),
                busy,
                replica: src.replica.clone(),
                stream: src.stream.clone(),
            },
        );
        highest
    }
}

/// A session's key among its host's busy ones: 64 bits of FNV-1a over its id (a collision
/// between two sessions of one host, one in 2^64 per pair, would leave one free process
/// uncounted until the host's next snapshot).
fn session_key(gss: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in gss.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h as i64
}

/// Sessions' keys as a PostgreSQL array literal (`{1,-2}`): one text per host, as arrays of
/// arrays of different lengths cannot be sent.
fn keys<'a>(sessions: impl Iterator<Item = &'a str>) -> String {
    let keys: Vec<String> = sessions.map(|g| session_key(g).to_string()).collect();
    format!("{{{}}}", keys.join(","))
}

/// A snapshot's sessions or player sessions; one that is not JSON is skipped with a warning.
fn parse(src: &Source, what: &str, list: &[String]) -> Vec<Value> {
    list.iter()
        .filter_map(|j| match serde_json::from_str(j) {
            Ok(v) => Some(v),
            Err(e) => {
                tracing::warn!(instance.id = %src.instance_id, error = %e, "a snapshot's {what} is not JSON; skipped");
                None
            }
        })
        .collect()
}

/// An event as DescribeFleetEvents renders it, with the instance that sent it.
fn event_json(e: &up::Event, instance: &str) -> Value {
    let time =
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(e.time_unix_ms.max(0) as u64);
    let mut v = json!({
        "EventCode": e.code,
        "EventTime": crate::api::time::format_time_millis(time),
        "Message": e.message,
        "Sequence": e.sequence,
        "InstanceId": instance,
        "ProcessId": e.process_id,
        "Pid": e.pid,
        "GameServerSessionId": e.game_server_session_id,
        "PlayerSessionId": e.player_session_id,
    });
    if let Some(x) = &e.exit {
        v["Exit"] = json!({
            "ExitCode": x.has_exit_code.then_some(x.exit_code),
            "Signal": x.signal,
            "CoreDumped": x.core_dumped,
            "LikelyOomKill": x.likely_oom_kill,
            "RunMillis": x.run_millis,
            "ReadyMillis": x.ready_millis,
            "OutputTail": x.output_tail,
        });
    }
    v
}

/// An InstanceStatus in DescribeInstancesExtend's names.
fn status_json(s: &up::InstanceStatus) -> Value {
    json!({
        "HealthyProcessCnt": s.healthy_process_cnt,
        "ActiveProcessCnt": s.active_process_cnt,
        "GameSessionCnt": s.game_session_cnt,
        "MaxGameSessionCnt": s.max_game_session_cnt,
        "PlayerSessionCnt": s.player_session_cnt,
        "MaxPlayerSessionCnt": s.max_player_session_cnt,
        "Draining": s.draining,
        "Reserved": s.reserved,
        "UnackedEvents": s.unacked_events,
    })
}
