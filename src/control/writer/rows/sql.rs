//! Sending a group: BEGIN, one array statement per table in the lock order, COMMIT.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;

use serde_json::Value;

use super::{HostRow, Keyed, Rows, SessionRow, keys};
use crate::control::db::DbError;
use crate::control::store::{millis, text};

impl Rows {
    /// Sends BEGIN, every statement in the lock order, and COMMIT, one after another without
    /// waiting for answers: one round trip for the whole group. The first failure is the
    /// error (the statements after it fail as part of an aborted transaction, and its COMMIT
    /// rolls it back).
    pub(in crate::control::writer) async fn send(
        &self,
        tx: &deadpool_postgres::Client,
    ) -> Result<(), DbError> {
        type Step<'a> = Pin<Box<dyn Future<Output = Result<u64, DbError>> + Send + 'a>>;
        let reported = SessionColumns::of(&self.reported);
        let made = SessionColumns::of(&self.made);
        let players_reported = PlayerColumns::of(&self.players_reported);
        let players_joined = PlayerColumns::of(&self.players_joined);
        let reporters: Vec<String> = players_reported
            .ids
            .iter()
            .map(|id| self.reporters.get(id).cloned().unwrap_or_default())
            .collect();
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
                // A snapshot speaks only for its own host: a session another instance (or
                // fleet) holds is left as it is.
                "INSERT INTO sessions (gss_id, fleet_id, instance_id, status, created_ms, body)
                 SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::jsonb[])
                 ON CONFLICT (gss_id) DO UPDATE SET status = EXCLUDED.status, body = EXCLUDED.body,
                    updated_at = now()
                 WHERE sessions.instance_id = EXCLUDED.instance_id
                   AND sessions.fleet_id = EXCLUDED.fleet_id",
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
                // By the session's own host only.
                "UPDATE sessions SET status = 'ACTIVE',
                    body = jsonb_set(body, '{Status}', '\"ACTIVE\"'), updated_at = now()
                 FROM unnest($1::text[], $2::text[]) AS u(gss, inst)
                 WHERE sessions.gss_id = u.gss AND sessions.instance_id = u.inst
                   AND sessions.status = 'ACTIVATING'",
                &[&self.activated, &self.activated_by]
            );
        }
        if !players_reported.ids.is_empty() {
            step!(
                "storing the player sessions snapshots reported",
                // Only player sessions of the reporter's own sessions, never moved to another.
                "INSERT INTO players (player_session_id, gss_id, player_id, status, created_ms, body)
                 SELECT u.p, u.g, u.pl, u.st, u.c, u.b
                 FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::jsonb[],
                             $7::text[]) AS u(p, g, pl, st, c, b, inst)
                 WHERE EXISTS (SELECT 1 FROM sessions s WHERE s.gss_id = u.g AND s.instance_id = u.inst)
                 ON CONFLICT (player_session_id) DO UPDATE SET status = EXCLUDED.status, body = EXCLUDED.body
                 WHERE players.gss_id = EXCLUDED.gss_id",
                &[
                    &players_reported.ids,
                    &players_reported.gss,
                    &players_reported.players,
                    &players_reported.statuses,
                    &players_reported.created,
                    &players_reported.bodies,
                    &reporters,
                ]
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
