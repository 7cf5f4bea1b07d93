//! Group commit: everything a replica records as it happens (each batch an agent's stream
//! brought, the session a create made, the players a join reserved) goes through one writer,
//! which takes whatever is queued and writes it in one transaction of a few array statements,
//! sent without waiting for each other's answers. Under load one commit carries many streams'
//! batches and many creates; idle, a write waits for nobody.
//!
//! Rows are locked in one order, as every other write does it (sessions, players,
//! idempotency tokens, then the hosts' rows, by instance id), and the hosts last, so a choice
//! of host (which skips locked rows) finds them locked only briefly.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use deadpool_postgres::Pool;
use serde_json::{Value, json};
use tokio::sync::{Notify, mpsc, oneshot};

use super::db::DbError;
use super::store::{Batch, Source, millis, text};
use crate::upstream_proto as up;

/// Writes taken into one transaction at most.
const GROUP: usize = 512;
/// Writes queued before a caller waits for room.
const QUEUE: usize = 8192;

/// One thing to record.
#[derive(Debug)]
pub enum Write {
    /// What arrived on an agent's stream; `current`: the hub still holds that stream (the
    /// instance's row and the snapshot's sessions are written only then; events always).
    Relay {
        /// Where it came from.
        src: Source,
        /// What came (shared, so a failed write is tried again without a copy).
        batch: Arc<Batch>,
        /// Whether the stream is still the instance's own.
        current: bool,
    },
    /// A create sent to `instance` was answered: `session` is what it made (stored unless a
    /// snapshot already did; `None`: nothing was made), `token` its IdempotencyToken, and
    /// `counted` whether the choice of host counted it in flight there.
    Created {
        /// The session's fleet.
        fleet: String,
        /// The host.
        instance: String,
        /// The session made (Tencent JSON).
        session: Option<Value>,
        /// The token to point at the session.
        token: Option<String>,
        /// Whether a create is to be taken off the host's in-flight count.
        counted: bool,
    },
    /// Player sessions a join returned (Tencent JSON), stored unless a snapshot already did.
    Players(Vec<Value>),
}

struct Queued {
    write: Write,
    done: oneshot::Sender<Result<Option<u64>, DbError>>,
}

/// The handle callers write through (cheap to clone).
#[derive(Clone)]
pub struct Writer {
    queue: mpsc::Sender<Queued>,
}

impl Writer {
    /// Starts the writer on `pool`; it stops when the last handle is dropped. `activated` is
    /// told (every waiter, and one permit kept) when a snapshot showing an ACTIVE session was
    /// stored: placements wait for that.
    pub fn start(pool: Pool, activated: Arc<Notify>) -> Self {
        let (queue, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(pool, rx, activated));
        Self { queue }
    }

    /// Records `write` once it is committed; for [`Write::Relay`], returns the highest event
    /// sequence it stored.
    pub async fn write(&self, write: Write) -> Result<Option<u64>, DbError> {
        let (done, answer) = oneshot::channel();
        self.queue
            .send(Queued { write, done })
            .await
            .map_err(|_| DbError::Stopped)?;
        answer.await.map_err(|_| DbError::Stopped)?
    }
}

async fn run(pool: Pool, mut rx: mpsc::Receiver<Queued>, activated: Arc<Notify>) {
    let mut queued = Vec::with_capacity(GROUP);
    while rx.recv_many(&mut queued, GROUP).await > 0 {
        let writes: Vec<&Write> = queued.iter().map(|q| &q.write).collect();
        match commit(&pool, &writes, &activated).await {
            Ok(highest) => {
                for (q, h) in queued.drain(..).zip(highest) {
                    let _ = q.done.send(Ok(h));
                }
            }
            // A statement failed (a deadlock with another replica, a row PostgreSQL refused):
            // each write is tried alone, so one cannot fail the others.
            Err(e @ DbError::Query { .. }) if queued.len() > 1 => {
                tracing::debug!(error = %e, writes = queued.len(), "a group write failed; writing each alone");
                for q in queued.drain(..) {
                    let alone = commit(&pool, &[&q.write], &activated).await.map(|h| h[0]);
                    let _ = q.done.send(alone);
                }
            }
            Err(e) => {
                let message = e.to_string();
                let mut first = Some(e);
                for q in queued.drain(..) {
                    let e = first
                        .take()
                        .unwrap_or_else(|| DbError::Connect(message.clone()));
                    let _ = q.done.send(Err(e));
                }
            }
        }
    }
}

/// Writes `writes` in one transaction; returns each one's highest stored event sequence.
async fn commit(
    pool: &Pool,
    writes: &[&Write],
    activated: &Notify,
) -> Result<Vec<Option<u64>>, DbError> {
    let rows = Rows::of(writes);
    let db = pool.get().await?;
    if let Err(e) = rows.send(&db).await {
        // Whatever was sent ended with COMMIT, which ends a failed transaction as a rollback;
        // this is for a step that failed before anything was sent, so the connection goes
        // back to the pool outside any transaction.
        let _ = db.batch_execute("ROLLBACK").await;
        return Err(e);
    }
    if rows.activates() {
        // Every placement waiting on its session looks; the worker too, when it next waits.
        activated.notify_waiters();
        activated.notify_one();
    }
    Ok(rows.highest)
}

/// A group's writes as the columns of its statements: pure, so what is merged and what wins
/// is tested without a database.
#[derive(Debug, Default)]
struct Rows {
    /// Per write, the highest event sequence it carries.
    highest: Vec<Option<u64>>,
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
    /// Player sessions a snapshot reported, by id.
    players_reported: Keyed<Value>,
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
    fn of(writes: &[&Write]) -> Self {
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
    fn activates(&self) -> bool {
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
                self.players_reported.put(text(&p, "PlayerSessionId"), p);
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

    /// Sends BEGIN, every statement in the lock order, and COMMIT, one after another without
    /// waiting for answers: one round trip for the whole group. The first failure is the
    /// error (the statements after it fail as part of an aborted transaction, and its COMMIT
    /// rolls it back).
    async fn send(&self, tx: &deadpool_postgres::Client) -> Result<(), DbError> {
        type Step<'a> = Pin<Box<dyn Future<Output = Result<u64, DbError>> + Send + 'a>>;
        let reported = SessionColumns::of(&self.reported);
        let made = SessionColumns::of(&self.made);
        let players_reported = PlayerColumns::of(&self.players_reported);
        let players_joined = PlayerColumns::of(&self.players_joined);
        let (tokens, token_gss): (Vec<String>, Vec<String>) = self.tokens.iter().cloned().unzip();
        let hosts = HostColumns::of(&self.hosts);
        let count_ids: Vec<String> = self.counts.keys().cloned().collect();
        let uncount: Vec<i32> = self.counts.values().map(|c| c.0).collect();
        let sessions_made: Vec<String> = self
            .counts
            .values()
            .map(|c| keys(c.1.iter().map(String::as_str)))
            .collect();
        let mut steps: Vec<Step<'_>> = Vec::new();
        macro_rules! step {
            ($what:literal, $sql:expr) => {
                step!($what, $sql, &[])
            };
            ($what:literal, $sql:expr, $params:expr) => {{
                let statement = tx
                    .prepare_cached($sql)
                    .await
                    .map_err(DbError::query(concat!("preparing: ", $what)))?;
                steps.push(Box::pin(async move {
                    tx.execute(&statement, $params)
                        .await
                        .map_err(DbError::query($what))
                }));
            }};
        }
        step!("starting a group write", "BEGIN");
        let ev = &self.events;
        if !ev.sequence.is_empty() {
            step!(
                "storing events",
                "INSERT INTO events (instance_id, epoch, fleet_id, sequence, time_ms, code, body)
                 SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::bigint[],
                                      $5::bigint[], $6::text[], $7::jsonb[])
                 ON CONFLICT DO NOTHING",
                &[
                    &ev.instance,
                    &ev.epoch,
                    &ev.fleet,
                    &ev.sequence,
                    &ev.time,
                    &ev.code,
                    &ev.body,
                ]
            );
        }
        for (instance, listed) in &self.complete {
            step!(
                "ending sessions a host no longer has",
                "UPDATE sessions SET status = 'TERMINATED',
                    body = jsonb_set(jsonb_set(body, '{Status}', '\"TERMINATED\"'),
                                     '{StatusReason}', '\"gone from the host\"'),
                    updated_at = now()
                 WHERE instance_id = $1 AND status IN ('ACTIVATING', 'ACTIVE', 'TERMINATING')
                   AND NOT (gss_id = ANY($2))",
                &[instance, listed]
            );
        }
        if !reported.ids.is_empty() {
            step!(
                "storing the sessions snapshots reported",
                "INSERT INTO sessions (gss_id, fleet_id, instance_id, status, created_ms, body)
                 SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::jsonb[])
                 ON CONFLICT (gss_id) DO UPDATE SET status = EXCLUDED.status, body = EXCLUDED.body,
                    instance_id = EXCLUDED.instance_id, updated_at = now()",
                &reported.params()
            );
        }
        if !made.ids.is_empty() {
            step!(
                "storing the sessions creates made",
                "INSERT INTO sessions (gss_id, fleet_id, instance_id, status, created_ms, body)
                 SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::jsonb[])
                 ON CONFLICT (gss_id) DO NOTHING",
                &made.params()
            );
        }
        if !self.activated.is_empty() {
            // Only from ACTIVATING: an activation never revives a session that ended.
            step!(
                "recording activated sessions",
                "UPDATE sessions SET status = 'ACTIVE',
                    body = jsonb_set(body, '{Status}', '\"ACTIVE\"'), updated_at = now()
                 WHERE gss_id = ANY($1) AND status = 'ACTIVATING'",
                &[&self.activated]
            );
        }
        if !players_reported.ids.is_empty() {
            step!(
                "storing the player sessions snapshots reported",
                "INSERT INTO players (player_session_id, gss_id, player_id, status, created_ms, body)
                 SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::jsonb[])
                 ON CONFLICT (player_session_id) DO UPDATE SET status = EXCLUDED.status, body = EXCLUDED.body",
                &players_reported.params()
            );
        }
        if !players_joined.ids.is_empty() {
            step!(
                "storing the player sessions joins reserved",
                "INSERT INTO players (player_session_id, gss_id, player_id, status, created_ms, body)
                 SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::jsonb[])
                 ON CONFLICT (player_session_id) DO NOTHING",
                &players_joined.params()
            );
        }
        if !tokens.is_empty() {
            step!(
                "recording idempotent sessions",
                "UPDATE idempotency SET gss_id = u.gss
                 FROM unnest($1::text[], $2::text[]) AS u(token, gss)
                 WHERE idempotency.token = u.token",
                &[&tokens, &token_gss]
            );
        }
        if !hosts.ids.is_empty() {
            step!(
                "updating instances",
                "UPDATE instances i SET
                    last_seen = now(), connected = true, lost = false,
                    replica = u.replica, stream = u.stream,
                    acked = CASE WHEN i.epoch = u.epoch THEN greatest(i.acked, coalesce(u.acked, i.acked))
                            ELSE i.acked END,
                    status = coalesce(u.status, i.status),
                    draining = coalesce((u.status ->> 'Draining')::boolean, i.draining),
                    reserved = coalesce((u.status ->> 'Reserved')::boolean, i.reserved),
                    idle = coalesce(u.idle, i.idle),
                    processes = coalesce(u.processes, i.processes),
                    busy_keys = coalesce(u.busy::bigint[], i.busy_keys)
                 FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::jsonb[], $5::int[],
                             $6::int[], $7::text[], $8::text[], $9::text[])
                      AS u(id, epoch, acked, status, idle, processes, busy, replica, stream)
                 WHERE i.instance_id = u.id AND (i.stream IS NULL OR i.stream = u.stream)",
                &[
                    &hosts.ids,
                    &hosts.epoch,
                    &hosts.acked,
                    &hosts.status,
                    &hosts.idle,
                    &hosts.processes,
                    &hosts.busy,
                    &hosts.replica,
                    &hosts.stream,
                ]
            );
        }
        if !count_ids.is_empty() {
            // After the snapshots' word on the same hosts: a session a snapshot already
            // showed busy is not taken off the free count twice.
            step!(
                "counting created sessions",
                "UPDATE instances i SET
                    in_flight = greatest(i.in_flight - u.uncount, 0),
                    idle = greatest(i.idle - (SELECT count(*) FROM unnest(u.made::bigint[]) AS m(k)
                                              WHERE NOT (m.k = ANY(i.busy_keys))), 0),
                    busy_keys = i.busy_keys || ARRAY(SELECT m.k FROM unnest(u.made::bigint[]) AS m(k)
                                                     WHERE NOT (m.k = ANY(i.busy_keys)))
                 FROM unnest($1::text[], $2::int[], $3::text[]) AS u(id, uncount, made)
                 WHERE i.instance_id = u.id",
                &[&count_ids, &uncount, &sessions_made]
            );
        }
        step!("committing a group write", "COMMIT");
        futures_util::future::try_join_all(steps).await?;
        Ok(())
    }
}

/// The sessions statements' columns.
struct SessionColumns {
    ids: Vec<String>,
    fleets: Vec<String>,
    instances: Vec<String>,
    statuses: Vec<String>,
    created: Vec<i64>,
    bodies: Vec<Value>,
}

impl SessionColumns {
    fn of(rows: &Keyed<SessionRow>) -> Self {
        Self {
            ids: rows.ids(),
            fleets: rows.rows.iter().map(|(_, r)| r.fleet.clone()).collect(),
            instances: rows.rows.iter().map(|(_, r)| r.instance.clone()).collect(),
            statuses: rows
                .rows
                .iter()
                .map(|(_, r)| text(&r.body, "Status"))
                .collect(),
            created: rows
                .rows
                .iter()
                .map(|(_, r)| millis(&r.body, "CreationTime"))
                .collect(),
            bodies: rows.rows.iter().map(|(_, r)| r.body.clone()).collect(),
        }
    }

    fn params(&self) -> [&(dyn tokio_postgres::types::ToSql + Sync); 6] {
        [
            &self.ids,
            &self.fleets,
            &self.instances,
            &self.statuses,
            &self.created,
            &self.bodies,
        ]
    }
}

/// The player sessions statements' columns.
struct PlayerColumns {
    ids: Vec<String>,
    gss: Vec<String>,
    players: Vec<String>,
    statuses: Vec<String>,
    created: Vec<i64>,
    bodies: Vec<Value>,
}

impl PlayerColumns {
    fn of(rows: &Keyed<Value>) -> Self {
        let each =
            |key: &str| -> Vec<String> { rows.rows.iter().map(|(_, p)| text(p, key)).collect() };
        Self {
            ids: rows.ids(),
            gss: each("GameServerSessionId"),
            players: each("PlayerId"),
            statuses: each("Status"),
            created: rows
                .rows
                .iter()
                .map(|(_, p)| millis(p, "CreationTime"))
                .collect(),
            bodies: rows.rows.iter().map(|(_, p)| p.clone()).collect(),
        }
    }

    fn params(&self) -> [&(dyn tokio_postgres::types::ToSql + Sync); 6] {
        [
            &self.ids,
            &self.gss,
            &self.players,
            &self.statuses,
            &self.created,
            &self.bodies,
        ]
    }
}

/// The hosts' update's columns, in instance id order (the lock order).
struct HostColumns {
    ids: Vec<String>,
    epoch: Vec<i64>,
    acked: Vec<Option<i64>>,
    status: Vec<Option<Value>>,
    idle: Vec<Option<i32>>,
    processes: Vec<Option<i32>>,
    busy: Vec<Option<String>>,
    replica: Vec<String>,
    stream: Vec<String>,
}

impl HostColumns {
    fn of(hosts: &BTreeMap<String, HostRow>) -> Self {
        let h = || hosts.values();
        Self {
            ids: hosts.keys().cloned().collect(),
            epoch: h().map(|r| r.epoch).collect(),
            acked: h().map(|r| r.acked).collect(),
            status: h().map(|r| r.status.clone()).collect(),
            idle: h().map(|r| r.idle).collect(),
            processes: h().map(|r| r.processes).collect(),
            busy: h().map(|r| r.busy.clone()).collect(),
            replica: h().map(|r| r.replica.clone()).collect(),
            stream: h().map(|r| r.stream.clone()).collect(),
        }
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
        "EventTime": humantime::format_rfc3339_millis(time).to_string(),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn src(instance: &str, stream: &str) -> Source {
        Source {
            instance_id: instance.into(),
            fleet_id: "fleet-1".into(),
            epoch: 7,
            stream: stream.into(),
            replica: "replica-a".into(),
        }
    }

    fn event(sequence: u64) -> up::Event {
        up::Event {
            sequence,
            code: "GAME_SESSION_CREATED".into(),
            ..Default::default()
        }
    }

    fn session(id: &str, status: &str) -> Value {
        json!({"GameServerSessionId": id, "Status": status})
    }

    fn snapshot(sessions: &[Value], processes: &[(&str, bool)], complete: bool) -> up::Snapshot {
        up::Snapshot {
            complete,
            game_server_sessions_json: sessions.iter().map(Value::to_string).collect(),
            processes: processes
                .iter()
                .map(|(gss, healthy)| up::ProcessState {
                    status: "ACTIVE".into(),
                    healthy: *healthy,
                    game_server_session_id: (*gss).into(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn each_write_gets_its_own_highest_sequence() {
        let a = Write::Relay {
            src: src("ins-a", "s1"),
            batch: Arc::new(Batch {
                events: vec![event(3), event(5), event(4)],
                ..Default::default()
            }),
            current: true,
        };
        let made = Write::Created {
            fleet: "fleet-1".into(),
            instance: "ins-a".into(),
            session: None,
            token: None,
            counted: true,
        };
        let stale = Write::Relay {
            src: src("ins-b", "old"),
            batch: Arc::new(Batch {
                events: vec![event(9)],
                ..Default::default()
            }),
            current: false,
        };
        let rows = Rows::of(&[&a, &made, &stale]);
        assert_eq!(rows.highest, vec![Some(5), None, Some(9)]);
        assert!(!rows.activates());
        assert_eq!(rows.events.sequence, vec![3, 5, 4, 9]);
        // A stream the hub no longer holds stores its events and nothing of the host.
        assert_eq!(rows.hosts.keys().collect::<Vec<_>>(), vec!["ins-a"]);
    }

    #[test]
    fn the_latest_snapshot_wins_and_sets_the_free_count() {
        let first = Write::Relay {
            src: src("ins-a", "s1"),
            batch: Arc::new(Batch {
                snapshots: vec![
                    snapshot(
                        &[session("g1", "ACTIVATING")],
                        &[("g1", true), ("", true)],
                        false,
                    ),
                    snapshot(
                        &[session("g1", "ACTIVE")],
                        &[("g1", true), ("", true), ("", false)],
                        false,
                    ),
                ],
                ..Default::default()
            }),
            current: true,
        };
        let rows = Rows::of(&[&first]);
        assert_eq!(rows.reported.rows.len(), 1);
        assert_eq!(rows.reported.rows[0].1.body["Status"], "ACTIVE");
        assert!(rows.activates());
        let host = &rows.hosts["ins-a"];
        // One idle healthy process (the unhealthy one is not free), three in all.
        assert_eq!(host.idle, Some(1));
        assert_eq!(host.processes, Some(3));
        assert_eq!(host.busy, Some(format!("{{{}}}", session_key("g1"))));
        assert!(rows.complete.is_empty());
    }

    #[test]
    fn an_activation_event_marks_its_session_active() {
        let mut activated = event(4);
        activated.code = "GAME_SESSION_ACTIVATED".into();
        activated.game_server_session_id = "g1".into();
        let w = Write::Relay {
            src: src("ins-a", "s1"),
            batch: Arc::new(Batch {
                events: vec![event(3), activated],
                ..Default::default()
            }),
            current: true,
        };
        let rows = Rows::of(&[&w]);
        assert_eq!(rows.activated, vec!["g1".to_string()]);
        assert!(rows.activates());
    }

    #[test]
    fn session_keys_are_stable_and_distinct() {
        // FNV-1a's published value for "a": the key does not change between builds.
        assert_eq!(session_key("a") as u64, 0xaf63_dc4c_8601_ec8c);
        assert_ne!(session_key("gss-1"), session_key("gss-2"));
        assert_eq!(
            keys(["a", "b"].into_iter()),
            format!("{{{},{}}}", session_key("a"), session_key("b"))
        );
        assert_eq!(keys(std::iter::empty()), "{}");
    }

    #[test]
    fn creates_on_one_host_are_counted_together() {
        let create = |gss: Option<&str>, token: Option<&str>, counted| Write::Created {
            fleet: "fleet-1".into(),
            instance: "ins-a".into(),
            session: gss.map(|g| session(g, "ACTIVATING")),
            token: token.map(Into::into),
            counted,
        };
        let rows = Rows::of(&[
            &create(Some("g1"), Some("t1"), true),
            &create(Some("g2"), None, false),
            &create(None, None, true),
        ]);
        assert_eq!(rows.counts["ins-a"], (2, vec!["g1".into(), "g2".into()]));
        assert_eq!(rows.tokens, vec![("t1".into(), "g1".into())]);
        assert_eq!(rows.made.ids(), vec!["g1".to_string(), "g2".to_string()]);
    }

    #[test]
    fn a_complete_snapshot_lists_what_the_host_still_has() {
        let w = Write::Relay {
            src: src("ins-a", "s1"),
            batch: Arc::new(Batch {
                snapshots: vec![snapshot(&[session("g1", "ACTIVE")], &[("g1", true)], true)],
                ..Default::default()
            }),
            current: true,
        };
        let rows = Rows::of(&[&w]);
        assert_eq!(rows.complete, vec![("ins-a".into(), vec!["g1".into()])]);
    }

    #[test]
    fn players_joined_and_reported_stay_apart() {
        let p = json!({"PlayerSessionId": "p1", "GameServerSessionId": "g1", "Status": "RESERVED"});
        let joined = Write::Players(vec![p.clone(), p.clone()]);
        let mut s = snapshot(&[], &[], false);
        s.player_sessions_json = vec![p.to_string()];
        let reported = Write::Relay {
            src: src("ins-a", "s1"),
            batch: Arc::new(Batch {
                snapshots: vec![s],
                ..Default::default()
            }),
            current: true,
        };
        let rows = Rows::of(&[&joined, &reported]);
        assert_eq!(rows.players_joined.ids(), vec!["p1".to_string()]);
        assert_eq!(rows.players_reported.ids(), vec!["p1".to_string()]);
    }
}
