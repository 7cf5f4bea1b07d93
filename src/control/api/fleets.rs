//! Fleets and instances: the fleet ids agents announced, the hosts that run them, and what the
//! API sets on them (name, runtime configuration, reserve, weight, build roll-outs).

use crate::api::ErrorCode;
use serde_json::{Map, Value, json};
use tokio_postgres::Row;

use super::{ControlApi, db_error};
use crate::api::CapiError;
use crate::api::models::{self, InstanceStatus};
use crate::api::params::Params;
use crate::upstream_proto as up;
use up::command::Kind;

/// The protection policy a fleet shows (agents apply their own agent.yaml's).
const POLICY: &str = "NoProtection";

/// GSE's `Instance` of an instances row.
fn instance(r: &Row) -> Value {
    let created: std::time::SystemTime = r.get("created_at");
    let public_ip: String = r.get("public_ip");
    json!(models::Instance {
        fleet_id: r.get("fleet_id"),
        instance_id: r.get("instance_id"),
        ip_address: public_ip.clone(),
        dns_name: r.get("dns_name"),
        operating_system: "linux".into(),
        status: InstanceStatus::of(r.get("connected"), r.get("lost"))
            .as_str()
            .into(),
        kind: String::new(),
        create_time: humantime::format_rfc3339_seconds(created).to_string(),
        weight: i64::from(r.get::<_, i32>("weight")),
        reserve_value: i64::from(r.get::<_, bool>("reserved")),
        private_ip_address: public_ip,
    })
}

impl ControlApi {
    pub(super) async fn list_fleets(&self, map: Map<String, Value>) -> Result<Value, CapiError> {
        let p = Params::new(map, &["AssetId", "Offset", "Limit", "Filters"])?;
        p.opt_str("AssetId", 128)?;
        let offset = p.opt_int("Offset", 0, i64::MAX)?.unwrap_or(0);
        let limit = p.opt_int("Limit", 1, 100)?.unwrap_or(100);
        let db = self.db().await?;
        let rows = db
            .query(
                "SELECT fleet_id, count(*) OVER () FROM fleets ORDER BY fleet_id OFFSET $1 LIMIT $2",
                &[&offset, &limit],
            )
            .await
            .map_err(db_error("listing fleets"))?;
        let total: i64 = rows.first().map(|r| r.get(1)).unwrap_or(0);
        let ids: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
        Ok(json!({"FleetIds": ids, "TotalCount": total}))
    }

    pub(super) async fn describe_fleet_attributes(
        &self,
        map: Map<String, Value>,
    ) -> Result<Value, CapiError> {
        let p = Params::new(map, &["FleetIds", "Offset", "Limit"])?;
        let ids = p.fleet_ids()?;
        let offset = p.opt_int("Offset", 0, i64::MAX)?.unwrap_or(0);
        let limit = p.opt_int("Limit", 1, 100)?.unwrap_or(100);
        let db = self.db().await?;
        let rows = db
            .query(
                "SELECT fleet_id, name, description, created_at, count(*) OVER ()
                 FROM fleets WHERE ($1::text[] IS NULL OR fleet_id = ANY($1))
                 ORDER BY fleet_id OFFSET $2 LIMIT $3",
                &[&ids, &offset, &limit],
            )
            .await
            .map_err(db_error("reading fleets"))?;
        let total: i64 = rows.first().map(|r| r.get(4)).unwrap_or(0);
        let list: Vec<Value> = rows
            .iter()
            .map(|r| {
                let id: String = r.get(0);
                let name: String = r.get(1);
                let created: std::time::SystemTime = r.get(3);
                json!({
                    "AssetId": "",
                    "CreationTime": humantime::format_rfc3339_seconds(created).to_string(),
                    "Description": r.get::<_, String>(2),
                    "FleetArn": format!("qcs::gse:{}:uin/0:fleet/{id}", super::ARN_REGION),
                    "FleetId": id,
                    "FleetType": "ON_DEMAND",
                    "InstanceType": "",
                    "Name": if name.is_empty() { id.clone() } else { name },
                    "NewGameServerSessionProtectionPolicy": POLICY,
                    "OperatingSystem": "linux",
                    "Status": "ACTIVE",
                    "StoppedActions": [],
                    "TerminationTime": "",
                    "BillingStatus": "",
                })
            })
            .collect();
        Ok(json!({"FleetAttributes": list, "TotalCount": total}))
    }

    pub(super) async fn update_fleet_name(
        &self,
        map: Map<String, Value>,
    ) -> Result<Value, CapiError> {
        let p = Params::new(map, &["FleetId", "Name"])?;
        let fleet = self.fleet(&p, true).await?.expect("required");
        let name = p.str("Name", 50)?;
        let db = self.db().await?;
        db.execute(
            "UPDATE fleets SET name = $2 WHERE fleet_id = $1",
            &[&fleet, &name],
        )
        .await
        .map_err(db_error("renaming a fleet"))?;
        Ok(json!({}))
    }

    /// UpdateFleetAttributes: `Name` and `Description`; the extension `BuildLocation` (with
    /// `BuildSha256`) starts a roll-out of that build to every host of the fleet.
    pub(super) async fn update_fleet_attributes(
        &self,
        map: Map<String, Value>,
    ) -> Result<Value, CapiError> {
        let p = Params::new(
            map,
            &[
                "FleetId",
                "Name",
                "Description",
                "NewGameServerSessionProtectionPolicy",
                "GameServerSessionProtectionTimeLimit",
                "BuildLocation",
                "BuildSha256",
            ],
        )?;
        let fleet = self.fleet(&p, true).await?.expect("required");
        if p.raw("NewGameServerSessionProtectionPolicy").is_some()
            || p.raw("GameServerSessionProtectionTimeLimit").is_some()
        {
            return Err(CapiError::new(
                ErrorCode::UnsupportedOperation,
                "the protection policy is each host's agent.yaml `protection`; set it there",
            ));
        }
        let name = p.opt_str("Name", 50)?;
        let description = p.opt_str("Description", 100)?;
        let build = p.opt_str("BuildLocation", 4096)?;
        let sha = p.opt_str("BuildSha256", 64)?;
        if build.is_some() != sha.is_some() {
            return Err(CapiError::missing(if build.is_some() {
                "BuildSha256"
            } else {
                "BuildLocation"
            }));
        }
        let db = self.db().await?;
        db.execute(
            "UPDATE fleets SET name = coalesce($2, name), description = coalesce($3, description)
             WHERE fleet_id = $1",
            &[&fleet, &name, &description],
        )
        .await
        .map_err(db_error("updating a fleet"))?;
        if let (Some(location), Some(sha)) = (build, sha) {
            let revision: i64 = db
                .query_one(
                    "UPDATE fleets SET build_location = $2, build_sha256 = $3,
                        build_revision = build_revision + 1, rollout_state = 'RUNNING',
                        rollout_message = 'starting', rollout_owner = $4
                     WHERE fleet_id = $1 RETURNING build_revision",
                    &[&fleet, &location, &sha, &self.hub.replica()],
                )
                .await
                .map_err(db_error("starting a build roll-out"))?
                .get(0);
            tokio::spawn(crate::control::rollout::run(
                self.pool.clone(),
                self.hub.clone(),
                fleet.clone(),
                revision,
                self.rollout_batch,
            ));
        }
        Ok(json!({}))
    }

    /// DescribeFleetRollout (an extension): the fleet's last build roll-out and how far it got.
    pub(super) async fn describe_rollout(
        &self,
        map: Map<String, Value>,
    ) -> Result<Value, CapiError> {
        let p = Params::new(map, &["FleetId"])?;
        let fleet = self.fleet(&p, true).await?.expect("required");
        let db = self.db().await?;
        let r = db
            .query_one(
                "SELECT build_location, build_sha256, build_revision, rollout_state, rollout_message,
                    (SELECT count(*) FROM instances i WHERE i.fleet_id = f.fleet_id AND i.build_revision >= f.build_revision),
                    (SELECT count(*) FROM instances i WHERE i.fleet_id = f.fleet_id AND NOT i.lost)
                 FROM fleets f WHERE fleet_id = $1",
                &[&fleet],
            )
            .await
            .map_err(db_error("reading a roll-out"))?;
        Ok(json!({
            "FleetId": fleet,
            "BuildLocation": r.get::<_, Option<String>>(0),
            "BuildSha256": r.get::<_, Option<String>>(1),
            "Revision": r.get::<_, i64>(2),
            "State": r.get::<_, String>(3),
            "Message": r.get::<_, String>(4),
            "InstancesDone": r.get::<_, i64>(5),
            "Instances": r.get::<_, i64>(6),
        }))
    }

    pub(super) async fn describe_utilization(
        &self,
        map: Map<String, Value>,
    ) -> Result<Value, CapiError> {
        let p = Params::new(map, &["FleetIds"])?;
        let ids = p.fleet_ids()?;
        let db = self.db().await?;
        let rows = db
            .query(
                "SELECT f.fleet_id,
                    coalesce(sum((i.status ->> 'ActiveProcessCnt')::bigint), 0)::bigint,
                    coalesce(sum((i.status ->> 'GameSessionCnt')::bigint), 0)::bigint,
                    coalesce(sum((i.status ->> 'PlayerSessionCnt')::bigint), 0)::bigint,
                    coalesce(sum((i.status ->> 'MaxPlayerSessionCnt')::bigint), 0)::bigint
                 FROM fleets f LEFT JOIN instances i ON i.fleet_id = f.fleet_id AND NOT i.lost
                 WHERE ($1::text[] IS NULL OR f.fleet_id = ANY($1))
                 GROUP BY f.fleet_id ORDER BY f.fleet_id",
                &[&ids],
            )
            .await
            .map_err(db_error("summing fleet utilization"))?;
        let list: Vec<Value> = rows
            .iter()
            .map(|r| {
                json!({
                    "FleetId": r.get::<_, String>(0),
                    "ActiveServerProcessCount": r.get::<_, i64>(1),
                    "ActiveGameServerSessionCount": r.get::<_, i64>(2),
                    "CurrentPlayerSessionCount": r.get::<_, i64>(3),
                    "MaximumPlayerSessionCount": r.get::<_, i64>(4),
                })
            })
            .collect();
        let total = list.len();
        Ok(json!({"FleetUtilization": list, "TotalCount": total}))
    }

    /// DescribeFleetEvents: every host's events, newest first, in the SDK's model (plus the
    /// instance that sent each).
    pub(super) async fn describe_events(
        &self,
        map: Map<String, Value>,
    ) -> Result<Value, CapiError> {
        let p = Params::new(map, &["FleetId", "Limit", "Offset"])?;
        let fleet = self.fleet(&p, false).await?;
        let limit = p.opt_int("Limit", 1, 1000)?.unwrap_or(100);
        let offset = p.opt_int("Offset", 0, i64::MAX)?.unwrap_or(0);
        let db = self.db().await?;
        let total: i64 = db
            .query_one(
                "SELECT count(*) FROM events WHERE ($1::text IS NULL OR fleet_id = $1)",
                &[&fleet],
            )
            .await
            .map_err(db_error("counting events"))?
            .get(0);
        let rows = db
            .query(
                "SELECT id, fleet_id, body FROM events WHERE ($1::text IS NULL OR fleet_id = $1)
                 ORDER BY id DESC OFFSET $2 LIMIT $3",
                &[&fleet, &offset, &limit],
            )
            .await
            .map_err(db_error("reading events"))?;
        let events: Vec<Value> = rows
            .iter()
            .map(|r| {
                let body: Value = r.get(2);
                let text = |k: &str| body[k].as_str().unwrap_or_default().to_string();
                json!(models::Event {
                    event_code: text("EventCode"),
                    event_id: format!("event-{}", r.get::<_, i64>(0)),
                    event_time: text("EventTime"),
                    message: text("Message"),
                    pre_signed_log_url: String::new(),
                    resource_id: r.get(1),
                })
            })
            .collect();
        Ok(json!({"Events": events, "TotalCount": total}))
    }

    pub(super) async fn describe_instances(
        &self,
        map: Map<String, Value>,
        extend: bool,
    ) -> Result<Value, CapiError> {
        let p = Params::new(
            map,
            &["FleetId", "InstanceId", "Offset", "Limit", "IpAddress"],
        )?;
        let fleet = self.fleet(&p, extend).await?;
        let instance_id = p.opt_str("InstanceId", 128)?;
        let ip = p.opt_str("IpAddress", 64)?;
        let offset = p.opt_int("Offset", 0, i64::MAX)?.unwrap_or(0);
        let limit = p.opt_int("Limit", 1, 100)?.unwrap_or(100);
        let db = self.db().await?;
        let rows = db
            .query(
                "SELECT *, count(*) OVER () AS total FROM instances
                 WHERE ($1::text IS NULL OR fleet_id = $1) AND ($2::text IS NULL OR instance_id = $2)
                   AND ($3::text IS NULL OR public_ip = $3)
                 ORDER BY instance_id OFFSET $4 LIMIT $5",
                &[&fleet, &instance_id, &ip, &offset, &limit],
            )
            .await
            .map_err(db_error("reading instances"))?;
        let total: i64 = rows.first().map(|r| r.get("total")).unwrap_or(0);
        let list: Vec<Value> = rows
            .iter()
            .map(|r| {
                if !extend {
                    return instance(r);
                }
                let status: Value = r.get("status");
                let count = |k: &str| status.get(k).and_then(Value::as_u64).unwrap_or(0);
                json!({
                    "Instance": instance(r),
                    "State": instance(r)["Status"],
                    "HealthyProcessCnt": count("HealthyProcessCnt"),
                    "ActiveProcessCnt": count("ActiveProcessCnt"),
                    "GameSessionCnt": count("GameSessionCnt"),
                    "MaxGameSessionCnt": count("MaxGameSessionCnt"),
                    "PlayerSessionCnt": count("PlayerSessionCnt"),
                    "MaxPlayerSessionCnt": count("MaxPlayerSessionCnt"),
                })
            })
            .collect();
        Ok(json!({"Instances": list, "TotalCount": total}))
    }

    /// `FleetId` and `InstanceId` of an instance of that fleet.
    async fn fleet_instance(&self, p: &crate::api::params::Params) -> Result<String, CapiError> {
        let fleet = self.fleet(p, true).await?.expect("required");
        let instance = p.str("InstanceId", 128)?;
        let db = self.db().await?;
        let found = db
            .query_opt(
                "SELECT 1 FROM instances WHERE instance_id = $1 AND fleet_id = $2",
                &[&instance, &fleet],
            )
            .await
            .map_err(db_error("reading an instance"))?;
        if found.is_none() {
            return Err(CapiError::new(
                ErrorCode::ResourceNotFound,
                format!("instance {instance} is not a host of fleet {fleet}"),
            ));
        }
        Ok(instance)
    }

    pub(super) async fn set_reserved(&self, map: Map<String, Value>) -> Result<Value, CapiError> {
        let p = Params::new(map, &["FleetId", "InstanceId", "ReserveValue"])?;
        let instance = self.fleet_instance(&p).await?;
        let reserved = p.int("ReserveValue", 0, 1)? == 1;
        self.command(&instance, Kind::SetReserved(up::SetReserved { reserved }))
            .await?;
        let db = self.db().await?;
        db.execute(
            "UPDATE instances SET reserved = $2 WHERE instance_id = $1",
            &[&instance, &reserved],
        )
        .await
        .map_err(db_error("recording a reserve"))?;
        Ok(json!({}))
    }

    /// RemoveInstance (an extension): forgets a host that is not connected (one that will not
    /// come back); its sessions that were live end as TERMINATED. A host that connects again
    /// later is simply new.
    pub(super) async fn remove_instance(
        &self,
        map: Map<String, Value>,
    ) -> Result<Value, CapiError> {
        let p = Params::new(map, &["FleetId", "InstanceId"])?;
        let instance = self.fleet_instance(&p).await?;
        let mut db = self.db().await?;
        let tx = db
            .transaction()
            .await
            .map_err(db_error("starting to remove an instance"))?;
        let removed = tx
            .execute(
                "DELETE FROM instances WHERE instance_id = $1 AND NOT connected",
                &[&instance],
            )
            .await
            .map_err(db_error("removing an instance"))?;
        if removed == 0 {
            return Err(CapiError::new(
                ErrorCode::OperationDenied,
                format!("instance {instance} is connected: stop its agent first"),
            ));
        }
        tx.execute(
            "UPDATE sessions SET status = 'TERMINATED',
                body = jsonb_set(jsonb_set(body, '{Status}', '\"TERMINATED\"'),
                                 '{StatusReason}', '\"the host was removed\"'),
                updated_at = now()
             WHERE instance_id = $1 AND status IN ('ACTIVATING', 'ACTIVE', 'TERMINATING')",
            &[&instance],
        )
        .await
        .map_err(db_error("ending a removed host's sessions"))?;
        tx.commit()
            .await
            .map_err(db_error("removing an instance"))?;
        Ok(json!({}))
    }

    /// SetServerWeight: hosts of higher weight get new sessions first.
    pub(super) async fn set_weight(&self, map: Map<String, Value>) -> Result<Value, CapiError> {
        let p = Params::new(map, &["FleetId", "InstanceId", "Weight"])?;
        let instance = self.fleet_instance(&p).await?;
        let weight = p.int("Weight", 1, 10)? as i32;
        let db = self.db().await?;
        db.execute(
            "UPDATE instances SET weight = $2 WHERE instance_id = $1",
            &[&instance, &weight],
        )
        .await
        .map_err(db_error("recording a weight"))?;
        Ok(json!({}))
    }

    /// UpdateRuntimeConfiguration: checked by the agent's rules, stored (a host that joins
    /// later gets it), and sent to every connected host of the fleet.
    pub(super) async fn update_runtime(&self, map: Map<String, Value>) -> Result<Value, CapiError> {
        let p = Params::new(map, &["FleetId", "RuntimeConfiguration"])?;
        let fleet = self.fleet(&p, true).await?.expect("required");
        let rc = p.object("RuntimeConfiguration")?.clone();
        let text = rc.to_string();
        crate::api::runtime::parse(&text, std::path::Path::new("/local/game"))
            .map_err(|e| CapiError::value("RuntimeConfiguration", format!("is refused: {e}")))?;
        let db = self.db().await?;
        db.execute(
            "UPDATE fleets SET runtime_configuration = $2, runtime_revision = runtime_revision + 1
             WHERE fleet_id = $1",
            &[&fleet, &text],
        )
        .await
        .map_err(db_error("storing a runtime configuration"))?;
        let instances: Vec<String> = db
            .query(
                "SELECT instance_id FROM instances WHERE fleet_id = $1 AND connected",
                &[&fleet],
            )
            .await
            .map_err(db_error("listing a fleet's hosts"))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        drop(db);
        let sent = futures_util::future::join_all(instances.iter().map(|i| {
            crate::control::sync::catch_up(
                self.pool.clone(),
                self.hub.clone(),
                fleet.clone(),
                i.clone(),
            )
        }))
        .await;
        let failed = sent.iter().filter(|ok| !**ok).count();
        if failed > 0 {
            tracing::warn!(fleet.id = %fleet, failed, "some hosts did not take the runtime configuration; they get it when they reconnect");
        }
        Ok(json!({"RuntimeConfiguration": rc}))
    }

    pub(super) async fn describe_runtime(
        &self,
        map: Map<String, Value>,
    ) -> Result<Value, CapiError> {
        let p = Params::new(map, &["FleetId"])?;
        let fleet = self.fleet(&p, true).await?.expect("required");
        let db = self.db().await?;
        let stored: Option<String> = db
            .query_one(
                "SELECT runtime_configuration FROM fleets WHERE fleet_id = $1",
                &[&fleet],
            )
            .await
            .map_err(db_error("reading a runtime configuration"))?
            .get(0);
        let Some(text) = stored else {
            return Err(CapiError::new(
                ErrorCode::ResourceNotFound,
                format!(
                    "no runtime configuration was set for fleet {fleet} through gse-control; each host runs its agent.yaml's (DescribeRuntimeConfiguration on a host's agent shows it)"
                ),
            ));
        };
        let rc: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        Ok(json!({"RuntimeConfiguration": rc}))
    }
}
