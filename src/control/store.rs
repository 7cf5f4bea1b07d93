//! What the relay writes: an agent's arrival and departure, and each batch of what it sent
//! (events, status, snapshots) in one transaction, before any of it is acknowledged.

use deadpool_postgres::Pool;
use serde_json::{Value, json};

use super::db::DbError;
use crate::upstream_proto as up;

/// An instance as it said Hello.
#[derive(Debug, Clone)]
pub struct Arrival {
    /// The Hello.
    pub hello: up::Hello,
    /// The replica holding its stream.
    pub replica: String,
    /// This stream's id (a reconnection gets a new one).
    pub stream: String,
}

/// What the database knew of an instance when it arrived.
#[derive(Debug, Clone, Copy)]
pub struct Known {
    /// The highest event sequence stored in the agent's epoch.
    pub acked: u64,
}

/// Records a Hello: the fleet exists, the instance is connected here and not lost.
pub async fn arrive(pool: &Pool, a: &Arrival) -> Result<Known, DbError> {
    let h = &a.hello;
    let db = pool.get().await?;
    db.execute(
        "INSERT INTO fleets (fleet_id, region) VALUES ($1, $2)
         ON CONFLICT (fleet_id) DO UPDATE SET region = EXCLUDED.region
         WHERE fleets.region <> EXCLUDED.region",
        &[&h.fleet_id, &region(h)],
    )
    .await
    .map_err(DbError::query("recording the fleet of an arriving agent"))?;
    let epoch = h.epoch as i64;
    let row = db
        .query_one(
            "INSERT INTO instances (instance_id, fleet_id, region, public_ip, dns_name, agent_version,
                                    replica, stream, connected, lost, last_seen, epoch, acked)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $9, true, false, now(), $8, 0)
             ON CONFLICT (instance_id) DO UPDATE SET
                fleet_id = EXCLUDED.fleet_id, region = EXCLUDED.region,
                public_ip = EXCLUDED.public_ip, dns_name = EXCLUDED.dns_name,
                agent_version = EXCLUDED.agent_version, replica = EXCLUDED.replica,
                stream = EXCLUDED.stream,
                connected = true, lost = false, last_seen = now(),
                acked = CASE WHEN instances.epoch = EXCLUDED.epoch THEN instances.acked ELSE 0 END,
                epoch = EXCLUDED.epoch
             RETURNING acked",
            &[
                &h.instance_id,
                &h.fleet_id,
                &region(h),
                &h.public_ip,
                &h.dns_name,
                &h.agent_version,
                &a.replica,
                &epoch,
                &a.stream,
            ],
        )
        .await
        .map_err(DbError::query("recording an arriving agent"))?;
    let acked: i64 = row.get(0);
    Ok(Known {
        acked: acked.max(0) as u64,
    })
}

fn region(h: &up::Hello) -> &str {
    if h.region.is_empty() {
        "local"
    } else {
        &h.region
    }
}

/// Stream `stream` of `instance` ended (unless a newer stream replaced it).
pub async fn depart(pool: &Pool, instance: &str, stream: &str) -> Result<(), DbError> {
    let db = pool.get().await?;
    db.execute(
        "UPDATE instances SET connected = false, replica = NULL, stream = NULL, last_seen = now()
         WHERE instance_id = $1 AND stream = $2",
        &[&instance, &stream],
    )
    .await
    .map_err(DbError::query("recording a departed agent"))?;
    Ok(())
}

/// What arrived on one stream since the last write.
#[derive(Debug, Default)]
pub struct Batch {
    /// Events, in order.
    pub events: Vec<up::Event>,
    /// The latest status, if one came.
    pub status: Option<up::InstanceStatus>,
    /// Snapshots, in order.
    pub snapshots: Vec<up::Snapshot>,
}

impl Batch {
    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty() && self.status.is_none() && self.snapshots.is_empty()
    }
}

/// The instance a batch came from.
#[derive(Debug, Clone)]
pub struct Source {
    /// Its id.
    pub instance_id: String,
    /// Its fleet.
    pub fleet_id: String,
    /// Its outbox epoch.
    pub epoch: u64,
    /// The stream it came on.
    pub stream: String,
    /// The replica holding that stream.
    pub replica: String,
}

/// Writes `batch` in one transaction; returns the highest event sequence now stored.
///
/// Events are stored whatever stream brought them (they are deduplicated). The instance's row,
/// and the sessions a snapshot reports, are written only while this stream is the instance's
/// current one (a stream the agent left must not overwrite what its new one said); a live
/// stream also says again that the instance is connected here, so a row another replica
/// marked gone (after missing this one's heartbeat) comes back.
///
/// `current`: the hub still holds this stream (the row's own stream guard backs it up).
pub async fn write(
    pool: &Pool,
    src: &Source,
    batch: &Batch,
    current: bool,
) -> Result<Option<u64>, DbError> {
    let mut db = pool.get().await?;
    let tx = db
        .transaction()
        .await
        .map_err(DbError::query("starting a relay write"))?;
    let epoch = src.epoch as i64;
    let mut highest = None;
    if !batch.events.is_empty() {
        let mut seqs = Vec::with_capacity(batch.events.len());
        let mut times = Vec::with_capacity(batch.events.len());
        let mut codes = Vec::with_capacity(batch.events.len());
        let mut bodies = Vec::with_capacity(batch.events.len());
        for e in &batch.events {
            seqs.push(e.sequence as i64);
            times.push(e.time_unix_ms);
            codes.push(e.code.clone());
            bodies.push(event_json(e, &src.instance_id));
        }
        let insert = tx
            .prepare_cached(
                "INSERT INTO events (instance_id, epoch, fleet_id, sequence, time_ms, code, body)
                 SELECT $1, $2, $3, s, t, c, b
                 FROM unnest($4::bigint[], $5::bigint[], $6::text[], $7::jsonb[]) AS u(s, t, c, b)
                 ON CONFLICT DO NOTHING",
            )
            .await
            .map_err(DbError::query("preparing to store events"))?;
        tx.execute(
            &insert,
            &[
                &src.instance_id,
                &epoch,
                &src.fleet_id,
                &seqs,
                &times,
                &codes,
                &bodies,
            ],
        )
        .await
        .map_err(DbError::query("storing events"))?;
        highest = batch.events.iter().map(|e| e.sequence).max();
    }
    if current {
        for s in &batch.snapshots {
            apply_snapshot(&tx, src, s).await?;
        }
        let status = batch.status.as_ref().map(status_json);
        // The snapshot's free processes, and the sessions its busy ones host (a created
        // session already among them is not subtracted again).
        let (idle, processes, busy) = match batch.snapshots.last() {
            Some(s) => {
                let idle = s
                    .processes
                    .iter()
                    .filter(|p| {
                        p.status == "ACTIVE" && p.healthy && p.game_server_session_id.is_empty()
                    })
                    .count() as i32;
                let busy: Vec<String> = s
                    .processes
                    .iter()
                    .filter(|p| !p.game_server_session_id.is_empty())
                    .map(|p| p.game_server_session_id.clone())
                    .collect();
                (Some(idle), Some(s.processes.len() as i32), Some(busy))
            }
            None => (None, None, None),
        };
        let acked = highest.map(|h| h as i64);
        // Last, so the row is locked (against the API's choice of host) only briefly.
        let update = tx
            .prepare_cached(
            "UPDATE instances SET
                last_seen = now(), connected = true, lost = false, replica = $8, stream = $9,
                acked = CASE WHEN epoch = $2 THEN greatest(acked, coalesce($3, acked)) ELSE acked END,
                status = coalesce($4, status),
                draining = coalesce(($4::jsonb ->> 'Draining')::boolean, draining),
                reserved = coalesce(($4::jsonb ->> 'Reserved')::boolean, reserved),
                idle = coalesce($5, idle),
                processes = coalesce($6, processes),
                busy = coalesce($7, busy)
             WHERE instance_id = $1 AND (stream IS NULL OR stream = $9)",
            )
            .await
            .map_err(DbError::query("preparing the instance update"))?;
        tx.execute(
            &update,
            &[
                &src.instance_id,
                &epoch,
                &acked,
                &status,
                &idle,
                &processes,
                &busy,
                &src.replica,
                &src.stream,
            ],
        )
        .await
        .map_err(DbError::query("updating an instance"))?;
    }
    tx.commit()
        .await
        .map_err(DbError::query("committing a relay write"))?;
    Ok(highest)
}

/// Upserts a snapshot's sessions and players; a complete one also ends the live sessions of
/// the instance it does not list (the host no longer has them).
async fn apply_snapshot(
    tx: &deadpool_postgres::Transaction<'_>,
    src: &Source,
    s: &up::Snapshot,
) -> Result<(), DbError> {
    let parse = |what: &str, list: &[String]| -> Vec<Value> {
        list.iter()
            .filter_map(|j| match serde_json::from_str(j) {
                Ok(v) => Some(v),
                Err(e) => {
                    tracing::warn!(instance.id = %src.instance_id, error = %e, "a snapshot's {what} is not JSON; skipped");
                    None
                }
            })
            .collect()
    };
    let sessions = parse("session", &s.game_server_sessions_json);
    let players = parse("player session", &s.player_sessions_json);
    upsert_sessions(tx, &src.fleet_id, &src.instance_id, &sessions).await?;
    upsert_players(tx, &players).await?;
    if s.complete {
        let listed: Vec<String> = sessions
            .iter()
            .map(|v| text(v, "GameServerSessionId"))
            .collect();
        tx.execute(
            "UPDATE sessions SET status = 'TERMINATED',
                body = jsonb_set(jsonb_set(body, '{Status}', '\"TERMINATED\"'),
                                 '{StatusReason}', '\"gone from the host\"'),
                updated_at = now()
             WHERE instance_id = $1 AND status IN ('ACTIVATING', 'ACTIVE', 'TERMINATING')
               AND NOT (gss_id = ANY($2))",
            &[&src.instance_id, &listed],
        )
        .await
        .map_err(DbError::query("ending sessions a host no longer has"))?;
    }
    Ok(())
}

/// Stores sessions (Tencent JSON) a snapshot of `instance` reported: they replace what is
/// stored (a snapshot is the newest word on them).
pub async fn upsert_sessions(
    tx: &impl deadpool_postgres::GenericClient,
    fleet: &str,
    instance: &str,
    sessions: &[Value],
) -> Result<(), DbError> {
    put_sessions(tx, fleet, instance, sessions, true).await
}

/// Stores sessions a command result returned, unless a snapshot already did (it may be newer).
pub async fn insert_sessions(
    tx: &impl deadpool_postgres::GenericClient,
    fleet: &str,
    instance: &str,
    sessions: &[Value],
) -> Result<(), DbError> {
    put_sessions(tx, fleet, instance, sessions, false).await
}

async fn put_sessions(
    tx: &impl deadpool_postgres::GenericClient,
    fleet: &str,
    instance: &str,
    sessions: &[Value],
    replace: bool,
) -> Result<(), DbError> {
    if sessions.is_empty() {
        return Ok(());
    }
    let ids: Vec<String> = sessions
        .iter()
        .map(|v| text(v, "GameServerSessionId"))
        .collect();
    let statuses: Vec<String> = sessions.iter().map(|v| text(v, "Status")).collect();
    let created: Vec<i64> = sessions.iter().map(|v| millis(v, "CreationTime")).collect();
    let put = tx
        .prepare_cached(if replace {
            "INSERT INTO sessions (gss_id, fleet_id, instance_id, status, created_ms, body)
             SELECT i, $1, $2, s, c, b FROM unnest($3::text[], $4::text[], $5::bigint[], $6::jsonb[]) AS u(i, s, c, b)
             ON CONFLICT (gss_id) DO UPDATE SET status = EXCLUDED.status, body = EXCLUDED.body,
                instance_id = EXCLUDED.instance_id, updated_at = now()"
        } else {
            "INSERT INTO sessions (gss_id, fleet_id, instance_id, status, created_ms, body)
             SELECT i, $1, $2, s, c, b FROM unnest($3::text[], $4::text[], $5::bigint[], $6::jsonb[]) AS u(i, s, c, b)
             ON CONFLICT (gss_id) DO NOTHING"
        })
        .await
        .map_err(DbError::query("preparing to store game server sessions"))?;
    tx.execute(
        &put,
        &[&fleet, &instance, &ids, &statuses, &created, &sessions],
    )
    .await
    .map_err(DbError::query("storing game server sessions"))?;
    Ok(())
}

/// Stores player sessions (Tencent JSON) a snapshot reported, replacing what is stored.
pub async fn upsert_players(
    tx: &impl deadpool_postgres::GenericClient,
    players: &[Value],
) -> Result<(), DbError> {
    put_players(tx, players, true).await
}

/// Stores player sessions a command result returned, unless a snapshot already did.
pub async fn insert_players(
    tx: &impl deadpool_postgres::GenericClient,
    players: &[Value],
) -> Result<(), DbError> {
    put_players(tx, players, false).await
}

async fn put_players(
    tx: &impl deadpool_postgres::GenericClient,
    players: &[Value],
    replace: bool,
) -> Result<(), DbError> {
    if players.is_empty() {
        return Ok(());
    }
    let ids: Vec<String> = players.iter().map(|v| text(v, "PlayerSessionId")).collect();
    let gss: Vec<String> = players
        .iter()
        .map(|v| text(v, "GameServerSessionId"))
        .collect();
    let who: Vec<String> = players.iter().map(|v| text(v, "PlayerId")).collect();
    let statuses: Vec<String> = players.iter().map(|v| text(v, "Status")).collect();
    let created: Vec<i64> = players.iter().map(|v| millis(v, "CreationTime")).collect();
    tx.execute(
        if replace {
            "INSERT INTO players (player_session_id, gss_id, player_id, status, created_ms, body)
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::jsonb[])
             ON CONFLICT (player_session_id) DO UPDATE SET status = EXCLUDED.status, body = EXCLUDED.body"
        } else {
            "INSERT INTO players (player_session_id, gss_id, player_id, status, created_ms, body)
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::jsonb[])
             ON CONFLICT (player_session_id) DO NOTHING"
        },
        &[&ids, &gss, &who, &statuses, &created, &players],
    )
    .await
    .map_err(DbError::query("storing player sessions"))?;
    Ok(())
}

/// A string field of a JSON object ("" when absent).
pub fn text(v: &Value, key: &str) -> String {
    v.get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// An RFC 3339 time field of a JSON object as Unix milliseconds (0 when absent).
pub fn millis(v: &Value, key: &str) -> i64 {
    v.get(key)
        .and_then(Value::as_str)
        .and_then(|t| humantime::parse_rfc3339_weak(t).ok())
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// An event as DescribeAgentEvents renders it, with the instance that sent it.
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
