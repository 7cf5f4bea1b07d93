//! Bringing a host up to what its fleet was told while it was away: the runtime configuration
//! last set through the API, and the fleet's build once a roll-out finished.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;

use super::hub::Hub;
use crate::upstream_proto as up;
use up::command::Kind;

/// How long a host gets to take a runtime configuration.
const RUNTIME_LIMIT: Duration = Duration::from_secs(30);
/// How long a host gets to install a build (download, unpack, install.sh).
pub const DEPLOY_LIMIT: Duration = Duration::from_secs(30 * 60);

/// Sends `instance` what its fleet has and it lacks; says whether it took everything.
pub async fn catch_up(pool: Pool, hub: Arc<Hub>, fleet: String, instance: String) -> bool {
    match catch_up_inner(&pool, &hub, &fleet, &instance).await {
        Ok(ok) => ok,
        Err(e) => {
            tracing::warn!(instance.id = %instance, error = %e, "cannot bring a host up to its fleet");
            false
        }
    }
}

async fn catch_up_inner(
    pool: &Pool,
    hub: &Hub,
    fleet: &str,
    instance: &str,
) -> Result<bool, super::db::DbError> {
    let db = pool.get().await?;
    let row = db
        .query_opt(
            "SELECT f.runtime_configuration, f.runtime_revision, i.runtime_revision,
                    f.build_location, f.build_sha256, f.build_revision, i.build_revision, f.rollout_state
             FROM fleets f JOIN instances i ON i.fleet_id = f.fleet_id
             WHERE f.fleet_id = $1 AND i.instance_id = $2",
            &[&fleet, &instance],
        )
        .await
        .map_err(super::db::DbError::query("reading what a host lacks"))?;
    drop(db);
    let Some(row) = row else { return Ok(true) };
    let mut ok = true;
    let runtime: Option<String> = row.get(0);
    let (want, has): (i64, i64) = (row.get(1), row.get(2));
    if let Some(rc) = runtime
        && want > has
    {
        let kind = Kind::UpdateRuntimeConfiguration(up::UpdateRuntimeConfiguration {
            runtime_configuration_json: rc,
        });
        ok &= send(
            pool,
            hub,
            instance,
            kind,
            RUNTIME_LIMIT,
            "runtime_revision",
            want,
        )
        .await?;
    }
    let location: Option<String> = row.get(3);
    let sha: Option<String> = row.get(4);
    let (want, has): (i64, i64) = (row.get(5), row.get(6));
    let finished = row.get::<_, String>(7) == "DONE";
    if let (Some(location), Some(sha256)) = (location, sha)
        && want > has
        && finished
    {
        let kind = Kind::DeployBuild(up::DeployBuild { location, sha256 });
        ok &= send(
            pool,
            hub,
            instance,
            kind,
            DEPLOY_LIMIT,
            "build_revision",
            want,
        )
        .await?;
    }
    Ok(ok)
}

/// Sends one command; on success records that `instance` reached `revision` of `column`.
pub async fn send(
    pool: &Pool,
    hub: &Hub,
    instance: &str,
    kind: Kind,
    limit: Duration,
    column: &'static str,
    revision: i64,
) -> Result<bool, super::db::DbError> {
    match hub.command(instance, kind, limit).await {
        Ok(r) if r.ok => {
            let db = pool.get().await?;
            db.execute(
                &format!(
                    "UPDATE instances SET {column} = greatest({column}, $2) WHERE instance_id = $1"
                ),
                &[&instance, &revision],
            )
            .await
            .map_err(super::db::DbError::query("recording what a host took"))?;
            Ok(true)
        }
        Ok(r) => {
            tracing::warn!(instance.id = %instance, code = %r.error_code, error = %r.message, "a host refused a fleet change");
            Ok(false)
        }
        Err(e) => {
            tracing::warn!(instance.id = %instance, error = %e, "a host did not take a fleet change");
            Ok(false)
        }
    }
}
