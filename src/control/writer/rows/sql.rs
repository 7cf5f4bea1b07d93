//! Sending a group: BEGIN, one array statement per table in the lock order, COMMIT.

use std::collections::BTreeMap;

use serde_json::Value;

use super::{HostRow, Keyed, Rows, SessionRow, keys};
use crate::control::db::DbError;
use crate::control::store::{millis, text};

const INSERT_EVENTS: &str =
    "INSERT INTO events (instance_id, epoch, fleet_id, sequence, time_ms, code, body)
    SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::bigint[],
                         $5::bigint[], $6::text[], $7::jsonb[])
    ON CONFLICT DO NOTHING";

const END_SESSIONS_GONE: &str = "UPDATE sessions SET status = 'TERMINATED',
       body = jsonb_set(jsonb_set(body, '{Status}', '\"TERMINATED\"'),
                        '{StatusReason}', '\"gone from the host\"'),
       updated_at = now()
    WHERE instance_id = $1 AND status IN ('ACTIVATING', 'ACTIVE', 'TERMINATING')
      AND NOT (gss_id = ANY($2))";

/// A snapshot speaks only for its own host: a session another instance (or
/// fleet) holds is left as it is.
const UPSERT_REPORTED_SESSIONS: &str =
    "INSERT INTO sessions (gss_id, fleet_id, instance_id, status, created_ms, body)
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::jsonb[])
    ON CONFLICT (gss_id) DO UPDATE SET status = EXCLUDED.status, body = EXCLUDED.body,
       updated_at = now()
    WHERE sessions.instance_id = EXCLUDED.instance_id
      AND sessions.fleet_id = EXCLUDED.fleet_id";

const INSERT_MADE_SESSIONS: &str =
    "INSERT INTO sessions (gss_id, fleet_id, instance_id, status, created_ms, body)
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::jsonb[])
    ON CONFLICT (gss_id) DO NOTHING";

/// By the session's own host only.
const ACTIVATE_SESSIONS: &str = "UPDATE sessions SET status = 'ACTIVE',
       body = jsonb_set(body, '{Status}', '\"ACTIVE\"'), updated_at = now()
    FROM unnest($1::text[], $2::text[]) AS u(gss, inst)
    WHERE sessions.gss_id = u.gss AND sessions.instance_id = u.inst
      AND sessions.status = 'ACTIVATING'";

/// Only player sessions of the reporter's own sessions, never moved to another.
const UPSERT_REPORTED_PLAYERS: &str =
    "INSERT INTO players (player_session_id, gss_id, player_id, status, created_ms, body)
    SELECT u.p, u.g, u.pl, u.st, u.c, u.b
    FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::jsonb[],
                $7::text[]) AS u(p, g, pl, st, c, b, inst)
    WHERE EXISTS (SELECT 1 FROM sessions s WHERE s.gss_id = u.g AND s.instance_id = u.inst)
    ON CONFLICT (player_session_id) DO UPDATE SET status = EXCLUDED.status, body = EXCLUDED.body
    WHERE players.gss_id = EXCLUDED.gss_id";

const INSERT_JOINED_PLAYERS: &str =
    "INSERT INTO players (player_session_id, gss_id, player_id, status, created_ms, body)
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::jsonb[])
    ON CONFLICT (player_session_id) DO NOTHING";

const RECORD_TOKENS: &str = "UPDATE idempotency SET gss_id = u.gss
    FROM unnest($1::text[], $2::text[]) AS u(token, gss)
    WHERE idempotency.token = u.token";

const UPDATE_INSTANCES: &str = "UPDATE instances i SET
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
    WHERE i.instance_id = u.id AND (i.stream IS NULL OR i.stream = u.stream)";

const COUNT_CREATED: &str = "UPDATE instances i SET
       in_flight = greatest(i.in_flight - u.uncount, 0),
       idle = greatest(i.idle - (SELECT count(*) FROM unnest(u.made::bigint[]) AS m(k)
                                 WHERE NOT (m.k = ANY(i.busy_keys))), 0),
       busy_keys = i.busy_keys || ARRAY(SELECT m.k FROM unnest(u.made::bigint[]) AS m(k)
                                        WHERE NOT (m.k = ANY(i.busy_keys)))
    FROM unnest($1::text[], $2::int[], $3::text[]) AS u(id, uncount, made)
    WHERE i.instance_id = u.id";

impl Rows {
    /// Sends BEGIN, every statement in the lock order, and COMMIT, one after another without
    /// waiting for answers: one round trip for the whole group. The first failure is the
    /// error (the statements after it fail as part of an aborted transaction, and its COMMIT
    /// rolls it back).
    /// Sends BEGIN, every statement in the lock order, and COMMIT, one after another without
    /// waiting for answers: one round trip for the whole group. The first failure is the
    /// error (the statements after it fail as part of an aborted transaction, and its COMMIT
    /// rolls it back).
    pub(in crate::control::writer) async fn send(
        &self,
        tx: &deadpool_postgres::Client,
    ) -> Result<(), DbError> {
        let columns = Columns::of(self);
        let begin = Statement {
            what: "starting a group write",
            sql: "BEGIN",
            params: Vec::new(),
        };
        let commit = Statement {
            what: "committing a group write",
            sql: "COMMIT",
            params: Vec::new(),
        };
        let all = std::iter::once(begin)
            .chain(self.statements(&columns))
            .chain(std::iter::once(commit));
        let mut steps = Vec::new();
        for s in all {
            let statement = tx
                .prepare_cached(s.sql)
                .await
                .map_err(|source| DbError::Prepare {
                    step: s.what,
                    source,
                })?;
            steps.push(async move {
                tx.execute(&statement, &s.params)
                    .await
                    .map_err(DbError::query(s.what))
            });
        }
        futures_util::future::try_join_all(steps).await?;
        Ok(())
    }

    /// The group's statements in the lock order, each only when it has rows.
    fn statements<'a>(&'a self, c: &'a Columns) -> Vec<Statement<'a>> {
        let mut out = Vec::new();
        let mut add = |rows: bool, what, sql, params: Vec<Param<'a>>| {
            if rows {
                out.push(Statement { what, sql, params });
            }
        };
        let ev = &self.events;
        add(
            !ev.sequence.is_empty(),
            "storing events",
            INSERT_EVENTS,
            vec![
                &ev.instance,
                &ev.epoch,
                &ev.fleet,
                &ev.sequence,
                &ev.time,
                &ev.code,
                &ev.body,
            ],
        );
        for (instance, listed) in &self.complete {
            add(
                true,
                "ending sessions a host no longer has",
                END_SESSIONS_GONE,
                vec![instance, listed],
            );
        }
        add(
            !c.reported.ids.is_empty(),
            "storing the sessions snapshots reported",
            UPSERT_REPORTED_SESSIONS,
            c.reported.params().to_vec(),
        );
        add(
            !c.made.ids.is_empty(),
            "storing the sessions creates made",
            INSERT_MADE_SESSIONS,
            c.made.params().to_vec(),
        );
        // Only from ACTIVATING: an activation never revives a session that ended.
        add(
            !self.activated.is_empty(),
            "recording activated sessions",
            ACTIVATE_SESSIONS,
            vec![&self.activated, &self.activated_by],
        );
        add(
            !c.players_reported.ids.is_empty(),
            "storing the player sessions snapshots reported",
            UPSERT_REPORTED_PLAYERS,
            vec![
                &c.players_reported.ids,
                &c.players_reported.gss,
                &c.players_reported.players,
                &c.players_reported.statuses,
                &c.players_reported.created,
                &c.players_reported.bodies,
                &c.reporters,
            ],
        );
        add(
            !c.players_joined.ids.is_empty(),
            "storing the player sessions joins reserved",
            INSERT_JOINED_PLAYERS,
            c.players_joined.params().to_vec(),
        );
        add(
            !c.tokens.is_empty(),
            "recording idempotent sessions",
            RECORD_TOKENS,
            vec![&c.tokens, &c.token_gss],
        );
        add(
            !c.hosts.ids.is_empty(),
            "updating instances",
            UPDATE_INSTANCES,
            vec![
                &c.hosts.ids,
                &c.hosts.epoch,
                &c.hosts.acked,
                &c.hosts.status,
                &c.hosts.idle,
                &c.hosts.processes,
                &c.hosts.busy,
                &c.hosts.replica,
                &c.hosts.stream,
            ],
        );
        // After the snapshots' word on the same c.hosts: a session a snapshot already
        // showed busy is not taken off the free count twice.
        add(
            !c.count_ids.is_empty(),
            "counting created sessions",
            COUNT_CREATED,
            vec![&c.count_ids, &c.uncount, &c.sessions_made],
        );
        out
    }
}

/// One parameter of a statement.
type Param<'a> = &'a (dyn tokio_postgres::types::ToSql + Sync);

/// A statement to send, named by what it does (the error says it).
struct Statement<'a> {
    what: &'static str,
    sql: &'static str,
    params: Vec<Param<'a>>,
}

/// The group's rows as the statements' array parameters.
struct Columns {
    reported: SessionColumns,
    made: SessionColumns,
    players_reported: PlayerColumns,
    players_joined: PlayerColumns,
    /// The instance that reported each of `players_reported`.
    reporters: Vec<String>,
    tokens: Vec<String>,
    token_gss: Vec<String>,
    hosts: HostColumns,
    count_ids: Vec<String>,
    uncount: Vec<i32>,
    sessions_made: Vec<String>,
}

impl Columns {
    fn of(rows: &Rows) -> Self {
        let reported = SessionColumns::of(&rows.reported);
        let made = SessionColumns::of(&rows.made);
        let players_reported = PlayerColumns::of(&rows.players_reported);
        let players_joined = PlayerColumns::of(&rows.players_joined);
        let reporters: Vec<String> = players_reported
            .ids
            .iter()
            .map(|id| rows.reporters.get(id).cloned().unwrap_or_default())
            .collect();
        let (tokens, token_gss): (Vec<String>, Vec<String>) = rows.tokens.iter().cloned().unzip();
        let hosts = HostColumns::of(&rows.hosts);
        let count_ids: Vec<String> = rows.counts.keys().cloned().collect();
        let uncount: Vec<i32> = rows.counts.values().map(|c| c.0).collect();
        let sessions_made: Vec<String> = rows
            .counts
            .values()
            .map(|c| keys(c.1.iter().map(String::as_str)))
            .collect();
        Self {
            reported,
            made,
            players_reported,
            players_joined,
            reporters,
            tokens,
            token_gss,
            hosts,
            count_ids,
            uncount,
            sessions_made,
        }
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
