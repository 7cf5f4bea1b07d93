//! Build roll-outs: `UpdateFleetAttributes` with `BuildLocation` and `BuildSha256` deploys
//! that build to every connected host of the fleet, a few at a time, and stops at the first
//! failure. Its state is in the fleet's row, so another replica takes over a roll-out whose
//! replica stopped, and `DescribeFleetRollout` shows it.

use std::sync::Arc;

use deadpool_postgres::Pool;

use super::db::DbError;
use super::hub::Hub;
use super::sync::{DEPLOY_LIMIT, send};
use crate::upstream_proto as up;

/// Drives roll-out `revision` of `fleet`, `batch` hosts at a time, unless a newer one replaced
/// it or another live replica drives it.
pub async fn run(pool: Pool, hub: Arc<Hub>, fleet: String, revision: i64, batch: usize) {
    if let Err(e) = drive(&pool, &hub, &fleet, revision, batch).await {
        tracing::warn!(fleet.id = %fleet, error = %e, "build roll-out interrupted; another replica resumes it");
    }
}

async fn drive(
    pool: &Pool,
    hub: &Hub,
    fleet: &str,
    revision: i64,
    batch: usize,
) -> Result<(), DbError> {
    let me = hub.replica();
    loop {
        let db = pool.get().await?;
        let claimed = db
            .query_opt(
                "UPDATE fleets SET rollout_owner = $3
                 WHERE fleet_id = $1 AND build_revision = $2 AND rollout_state = 'RUNNING'
                   AND (rollout_owner IS NULL OR rollout_owner = $3 OR rollout_owner NOT IN
                        (SELECT replica FROM replicas WHERE heartbeat > now() - interval '10 seconds'))
                 RETURNING build_location, build_sha256",
                &[&fleet, &revision, &me],
            )
            .await
            .map_err(DbError::query("claiming a roll-out"))?;
        let Some(row) = claimed else {
            return Ok(());
        };
        let (location, sha256): (String, String) = (row.get(0), row.get(1));
        let hosts: Vec<String> = db
            .query(
                "SELECT instance_id FROM instances
                 WHERE fleet_id = $1 AND connected AND build_revision < $2
                 ORDER BY instance_id LIMIT $3",
                &[&fleet, &revision, &(batch as i64)],
            )
            .await
            .map_err(DbError::query("choosing hosts to deploy to"))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        if hosts.is_empty() {
            db.execute(
                "UPDATE fleets SET rollout_state = 'DONE', rollout_message = 'every connected host runs the build'
                 WHERE fleet_id = $1 AND build_revision = $2",
                &[&fleet, &revision],
            )
            .await
            .map_err(DbError::query("finishing a roll-out"))?;
            tracing::info!(fleet.id = %fleet, rollout.revision = revision, "build roll-out done");
            return Ok(());
        }
        drop(db);
        tracing::info!(fleet.id = %fleet, rollout.revision = revision, hosts = ?hosts, "deploying a build");
        let deployed = futures_util::future::join_all(hosts.iter().map(|h| {
            let kind = up::command::Kind::DeployBuild(up::DeployBuild {
                location: location.clone(),
                sha256: sha256.clone(),
            });
            send(pool, hub, h, kind, DEPLOY_LIMIT, "build_revision", revision)
        }))
        .await;
        let failed: Vec<&String> = hosts
            .iter()
            .zip(&deployed)
            .filter(|(_, ok)| !matches!(ok, Ok(true)))
            .map(|(h, _)| h)
            .collect();
        if let Some(first) = failed.first() {
            let db = pool.get().await?;
            db.execute(
                "UPDATE fleets SET rollout_state = 'FAILED', rollout_message = $3
                 WHERE fleet_id = $1 AND build_revision = $2",
                &[
                    &fleet,
                    &revision,
                    &format!(
                        "instance {first} did not install the build (see its DescribeFleetEvents); the roll-out stopped"
                    ),
                ],
            )
            .await
            .map_err(DbError::query("recording a failed roll-out"))?;
            tracing::warn!(fleet.id = %fleet, instance.id = %first, "build roll-out stopped at a failure");
            return Ok(());
        }
    }
}
