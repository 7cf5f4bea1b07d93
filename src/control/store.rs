//! What the relay records of a stream: an agent's arrival and departure, and the shape of each
//! batch it sent (written by [`super::writer`] before any of it is acknowledged).

use deadpool_postgres::Pool;
use serde_json::Value;

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

/// The fleet `instance` is recorded in, if it is known.
pub async fn fleet_of(pool: &Pool, instance: &str) -> Result<Option<String>, DbError> {
    let db = pool.get().await?;
    let row = db
        .query_opt(
            "SELECT fleet_id FROM instances WHERE instance_id = $1",
            &[&instance],
        )
        .await
        .map_err(DbError::query("reading an arriving agent's fleet"))?;
    Ok(row.map(|r| r.get(0)))
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

    /// This batch with every NUL character (which PostgreSQL's text and JSON cannot store,
    /// and an older agent may still relay: a game's output tail, a player's data) replaced
    /// by U+FFFD, in plain strings and in the JSON ones (`\u0000`).
    pub fn without_nul(&self) -> Batch {
        fn text(s: &str) -> String {
            s.replace('\0', "\u{fffd}")
        }
        fn json(s: &str) -> String {
            text(s).replace("\\u0000", "\\ufffd")
        }
        Batch {
            events: self
                .events
                .iter()
                .map(|e| {
                    let mut e = e.clone();
                    for f in [
                        &mut e.code,
                        &mut e.message,
                        &mut e.process_id,
                        &mut e.game_server_session_id,
                        &mut e.player_session_id,
                    ] {
                        *f = text(f);
                    }
                    if let Some(x) = &mut e.exit {
                        x.signal = text(&x.signal);
                        for line in &mut x.output_tail {
                            *line = text(line);
                        }
                    }
                    e
                })
                .collect(),
            status: self.status,
            snapshots: self
                .snapshots
                .iter()
                .map(|s| up::Snapshot {
                    complete: s.complete,
                    processes: s
                        .processes
                        .iter()
                        .map(|p| up::ProcessState {
                            process_id: text(&p.process_id),
                            status: text(&p.status),
                            game_server_session_id: text(&p.game_server_session_id),
                            ..p.clone()
                        })
                        .collect(),
                    game_server_sessions_json: s
                        .game_server_sessions_json
                        .iter()
                        .map(|j| json(j))
                        .collect(),
                    player_sessions_json: s.player_sessions_json.iter().map(|j| json(j)).collect(),
                })
                .collect(),
        }
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
        .and_then(crate::api::time::parse_millis)
        .unwrap_or(0)
}
