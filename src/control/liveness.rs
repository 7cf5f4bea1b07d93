//! Who is alive: this replica's heartbeat, the instances whose streams it holds, instances
//! from which nothing was stored for `instance-lost-after` (Lost with no stream, Unresponsive
//! with one: no new sessions either way), roll-outs whose replica stopped, and old bookkeeping.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;

use super::db::DbError;
use super::hub::Hub;

/// A replica silent for this long is taken for dead (its streams, roll-outs and tokens are
/// taken over).
pub const REPLICA_DEAD_AFTER: Duration = Duration::from_secs(10);

/// Records this replica as started.
pub async fn register(pool: &Pool, replica: &str, api: &str, relay: &str) -> Result<(), DbError> {
    let db = pool.get().await?;
    db.execute(
        "INSERT INTO replicas (replica, api_addr, relay_addr) VALUES ($1, $2, $3)
         ON CONFLICT (replica) DO UPDATE SET heartbeat = now()",
        &[&replica, &api, &relay],
    )
    .await
    .map_err(DbError::query("registering the replica"))?;
    Ok(())
}

/// Records this replica as stopped: its streams are gone with it.
pub async fn unregister(pool: &Pool, replica: &str) -> Result<(), DbError> {
    let db = pool.get().await?;
    db.execute(
        "UPDATE instances SET connected = false, replica = NULL, stream = NULL, last_seen = now()
         WHERE replica = $1",
        &[&replica],
    )
    .await
    .map_err(DbError::query("releasing the replica's instances"))?;
    db.execute("DELETE FROM replicas WHERE replica = $1", &[&replica])
        .await
        .map_err(DbError::query("unregistering the replica"))?;
    Ok(())
}

/// Events, finished sessions and their players, and finished placements are kept this long.
pub const RETAIN_DAYS: i32 = 7;

/// An instance that only ever said Hello, and a fleet only such Hellos named, are kept this
/// long after they were last seen.
pub const HELLO_ONLY_KEPT_DAYS: i32 = 1;

/// Beats every `lost_after / 4` (at most 5 s) until the process ends, on `beats` (connections
/// of its own); roll-outs it takes over use `pool`.
pub async fn watch(
    beats: Pool,
    pool: Pool,
    hub: Arc<Hub>,
    lost_after: Duration,
    rollout_batch: usize,
) {
    let tick = (lost_after / 4).clamp(Duration::from_millis(100), Duration::from_secs(5));
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        if let Err(e) = beat(&beats, &pool, &hub, lost_after, rollout_batch).await {
            tracing::warn!(error = %e, "liveness pass failed");
        }
    }
}

async fn beat(
    beats: &Pool,
    pool: &Pool,
    hub: &Arc<Hub>,
    lost_after: Duration,
    rollout_batch: usize,
) -> Result<(), DbError> {
    let me = hub.replica();
    let db = beats.get().await?;
    let lost_ms = lost_after.as_millis() as f64;
    let dead_ms = REPLICA_DEAD_AFTER.as_millis() as f64;
    db.execute(
        "UPDATE replicas SET heartbeat = now() WHERE replica = $1",
        &[&me],
    )
    .await
    .map_err(DbError::query("beating"))?;
    // Streams held by a replica that stopped beating are gone (Lost counts from here or the
    // departure).
    db.execute(
        "UPDATE instances SET connected = false, replica = NULL, stream = NULL, last_seen = now()
         WHERE connected AND (replica IS NULL OR replica NOT IN
            (SELECT replica FROM replicas WHERE heartbeat > now() - $1 * interval '1 millisecond'))",
        &[&dead_ms],
    )
    .await
    .map_err(DbError::query("releasing instances of stopped replicas"))?;
    // Lost: no stream, or a stream that delivered nothing for as long (a hung agent, writes
    // that keep failing): either way, no new sessions, until its next write clears it.
    let lost = db
        .query(
            "UPDATE instances SET lost = true
             WHERE NOT lost AND last_seen < now() - $1 * interval '1 millisecond'
             RETURNING instance_id, fleet_id, connected",
            &[&lost_ms],
        )
        .await
        .map_err(DbError::query("marking lost instances"))?;
    for r in &lost {
        let (instance, fleet) = (r.get::<_, String>(0), r.get::<_, String>(1));
        if r.get::<_, bool>(2) {
            tracing::warn!(instance.id = %instance, fleet.id = %fleet, lost_after = ?lost_after, "instance unresponsive: its relay stream is open but nothing from it was stored for instance-lost-after; it gets no new sessions until something is");
        } else {
            tracing::warn!(instance.id = %instance, fleet.id = %fleet, "instance lost: no relay stream; it gets no new sessions until it returns");
        }
    }
    let orphans = db
        .query(
            "SELECT fleet_id, build_revision FROM fleets
             WHERE rollout_state = 'RUNNING' AND (rollout_owner IS NULL OR rollout_owner NOT IN
                (SELECT replica FROM replicas WHERE heartbeat > now() - $1 * interval '1 millisecond'))",
            &[&dead_ms],
        )
        .await
        .map_err(DbError::query("finding orphaned roll-outs"))?;
    for r in &orphans {
        tokio::spawn(super::rollout::run(
            pool.clone(),
            hub.clone(),
            r.get(0),
            r.get(1),
            rollout_batch,
        ));
    }
    // No create waits longer than the command limit: a count older than that was left by a
    // replica that died mid-call.
    db.execute(
        "UPDATE instances SET in_flight = 0
         WHERE in_flight > 0 AND in_flight_at < now() - $1 * interval '1 millisecond'",
        &[&(2.0 * super::hub::COMMAND_LIMIT.as_millis() as f64)],
    )
    .await
    .map_err(DbError::query("clearing stale in-flight counts"))?;
    db.batch_execute(
        "DELETE FROM commands WHERE created_at < now() - interval '1 hour';
         DELETE FROM idempotency WHERE claimed_at < now() - interval '1 day';
         DELETE FROM replicas WHERE heartbeat < now() - interval '1 day';",
    )
    .await
    .map_err(DbError::query("pruning old bookkeeping"))?;
    prune(&db).await
}

/// Drops history older than [`RETAIN_DAYS`], a bounded slice per beat.
async fn prune(db: &deadpool_postgres::Object) -> Result<(), DbError> {
    let days = f64::from(RETAIN_DAYS);
    db.execute(
        "DELETE FROM events WHERE (instance_id, epoch, sequence) IN (
            SELECT instance_id, epoch, sequence FROM events
            WHERE time_ms < (extract(epoch FROM now()) * 1000 - $1::float8 * 86400000)::bigint LIMIT 10000)",
        &[&days],
    )
    .await
    .map_err(DbError::query("pruning old events"))?;
    db.execute(
        "WITH gone AS (
            DELETE FROM sessions WHERE gss_id IN (
                SELECT gss_id FROM sessions WHERE status IN ('TERMINATED', 'ERROR')
                  AND updated_at < now() - $1::float8 * interval '1 day' LIMIT 10000)
            RETURNING gss_id)
         DELETE FROM players WHERE gss_id IN (SELECT gss_id FROM gone)",
        &[&days],
    )
    .await
    .map_err(DbError::query("pruning old sessions"))?;
    // What only ever said Hello: an instance that never sent its status (a real agent sends one
    // at once and every status-interval) nor ran a session, gone for a day; then a fleet no API
    // call set anything on, with no instance and no session left.
    db.execute(
        "DELETE FROM instances i WHERE NOT connected AND status = '{}'::jsonb
            AND last_seen < now() - $1::float8 * interval '1 day'
            AND NOT EXISTS (SELECT 1 FROM sessions s WHERE s.instance_id = i.instance_id)",
        &[&f64::from(HELLO_ONLY_KEPT_DAYS)],
    )
    .await
    .map_err(DbError::query("expiring instances that only said Hello"))?;
    db.execute(
        "DELETE FROM fleets f WHERE name = '' AND description = ''
            AND runtime_configuration IS NULL AND build_location IS NULL
            AND created_at < now() - $1::float8 * interval '1 day'
            AND NOT EXISTS (SELECT 1 FROM instances i WHERE i.fleet_id = f.fleet_id)
            AND NOT EXISTS (SELECT 1 FROM sessions s WHERE s.fleet_id = f.fleet_id)",
        &[&f64::from(HELLO_ONLY_KEPT_DAYS)],
    )
    .await
    .map_err(DbError::query("expiring fleets only Hellos named"))?;
    db.execute(
        "DELETE FROM placements WHERE status <> 'PENDING'
           AND ended_ms < (extract(epoch FROM now()) * 1000 - $1::float8 * 86400000)::bigint",
        &[&days],
    )
    .await
    .map_err(DbError::query("pruning old placements"))?;
    db.execute(
        "DELETE FROM audit WHERE id IN (SELECT id FROM audit
           WHERE time_ms < (extract(epoch FROM now()) * 1000 - $1::float8 * 86400000)::bigint LIMIT 10000)",
        &[&days],
    )
    .await
    .map_err(DbError::query("pruning old audit records"))?;
    Ok(())
}
