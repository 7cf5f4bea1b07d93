//! Queues and placements across fleets, stored in the database; the placement worker
//! ([`crate::control::placement`]) moves them on.

use crate::api::ErrorCode;
use std::collections::HashMap;

use serde_json::{Map, Value, json};

use super::{ControlApi, db_error};
use crate::api::CapiError;
use crate::api::params::Params;
use crate::api::placement::wire::{placement_request, view as placement_view};
use crate::api::placement::{Placement, PlacementRequest, Status};
use crate::api::queue::wire::{queue_input, queue_params};
use crate::api::queue::{Destination, Queue, arn, destination};
use crate::api::sessions::NewPlayer;
use crate::control::choice::Candidate;
use crate::control::now_ms;

/// Queue figures a user can watch (DescribeGameServerSessionQueueStatistics, an extension).
const STATS: &[(&str, &str)] = &[
    ("started", "PlacementsStarted"),
    ("fulfilled", "PlacementsFulfilled"),
    ("timed_out", "PlacementsTimedOut"),
    ("cancelled", "PlacementsCancelled"),
    ("failed", "PlacementsFailed"),
    ("first_choice_not_viable", "FirstChoiceNotViable"),
];

fn millis_time(ms: i64) -> std::time::SystemTime {
    std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64)
}

fn status_of(s: &str) -> Status {
    match s {
        "FULFILLED" => Status::Fulfilled,
        "CANCELLED" => Status::Cancelled,
        "TIMED_OUT" => Status::TimedOut,
        "FAILED" => Status::Failed,
        _ => Status::Pending,
    }
}

impl ControlApi {
    /// The queue named `name`, if it exists.
    pub(crate) async fn queue(&self, name: &str) -> Result<Option<Queue>, CapiError> {
        let db = self.db().await?;
        let row = db
            .query_opt("SELECT body FROM queues WHERE name = $1", &[&name])
            .await
            .map_err(db_error("reading a queue"))?;
        row.map(|r| {
            serde_json::from_value(r.get(0)).map_err(|e| {
                CapiError::new(
                    ErrorCode::InternalError,
                    format!("a stored queue does not decode: {e}"),
                )
            })
        })
        .transpose()
    }

    /// The regions the hosts of `fleets` announced (fleets no host announced are left out).
    pub(crate) async fn regions(
        &self,
        fleets: &[String],
    ) -> Result<HashMap<String, String>, CapiError> {
        let db = self.db().await?;
        let rows = db
            .query(
                "SELECT fleet_id, region FROM fleets WHERE fleet_id = ANY($1)",
                &[&fleets],
            )
            .await
            .map_err(db_error("reading fleet regions"))?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// The destinations of a queue that name existing fleets, in order, with their regions;
    /// and whether the first destination is among them.
    pub(crate) async fn candidates(
        &self,
        destinations: &[String],
    ) -> Result<(Vec<Candidate>, bool), CapiError> {
        let mut fleets = Vec::new();
        for (i, arn) in destinations.iter().enumerate() {
            let fleet = match destination(arn) {
                Ok(Destination::Fleet(f)) => Some(f),
                Ok(Destination::Alias(a)) => self.resolve(&a).await.ok(),
                Err(_) => None,
            };
            if let Some(f) = fleet {
                fleets.push((i, f));
            }
        }
        let names: Vec<String> = fleets.iter().map(|(_, f)| f.clone()).collect();
        let regions = self.regions(&names).await?;
        let first = fleets
            .first()
            .is_some_and(|(i, f)| *i == 0 && regions.contains_key(f));
        let list = fleets
            .into_iter()
            .filter_map(|(_, fleet)| {
                let region = regions.get(&fleet)?.clone();
                Some(Candidate { fleet, region })
            })
            .collect();
        Ok((list, first))
    }

    /// Adds one to a queue's figure `column`.
    pub(crate) async fn count_queue(&self, queue: &str, column: &str) -> Result<(), CapiError> {
        if !STATS.iter().any(|(c, _)| *c == column) {
            return Err(CapiError::new(
                ErrorCode::InternalError,
                format!("no queue figure {column}"),
            ));
        }
        let db = self.db().await?;
        db.execute(
            &format!("UPDATE queues SET {column} = {column} + 1 WHERE name = $1"),
            &[&queue],
        )
        .await
        .map_err(db_error("counting on a queue"))?;
        Ok(())
    }

    /// Adds a fulfilled placement's wait to its queue.
    pub(crate) async fn add_wait(&self, queue: &str, ms: i64) -> Result<(), CapiError> {
        let db = self.db().await?;
        db.execute(
            "UPDATE queues SET wait_ms_total = wait_ms_total + $2 WHERE name = $1",
            &[&queue, &ms.max(0)],
        )
        .await
        .map_err(db_error("adding a wait to a queue"))?;
        Ok(())
    }

    async fn queue_view(&self, q: &Queue) -> Result<Value, CapiError> {
        let (fleets, _) = self.candidates(&q.destinations).await?;
        let destinations: Vec<Value> = q
            .destinations
            .iter()
            .map(|d| {
                let active = match destination(d) {
                    Ok(Destination::Fleet(f)) => fleets.iter().any(|c| c.fleet == f),
                    _ => false,
                };
                json!({"DestinationArn": d, "FleetStatus": if active { "ACTIVE" } else { "" }})
            })
            .collect();
        Ok(json!({
            "Name": q.name,
            "GameServerSessionQueueArn": arn(super::ARN_REGION, &q.name),
            "TimeoutInSeconds": q.timeout_secs,
            "Destinations": destinations,
            "PlayerLatencyPolicies": q.latency_policies.iter().map(|p| json!({
                "MaximumIndividualPlayerLatencyMilliseconds": p.max_millis,
                "PolicyDurationSeconds": p.duration_secs,
            })).collect::<Vec<_>>(),
            "Tags": q.tags.iter().map(|(k, v)| json!({"Key": k, "Value": v})).collect::<Vec<_>>(),
        }))
    }

    pub(super) async fn put_queue(
        &self,
        map: Map<String, Value>,
        create: bool,
    ) -> Result<Value, CapiError> {
        let p = Params::new(map, queue_params(create))?;
        let input = queue_input(&p, create)?;
        let existing = self.queue(&input.name).await?;
        let count: i64 = self
            .db()
            .await?
            .query_one("SELECT count(*) FROM queues", &[])
            .await
            .map_err(db_error("counting queues"))?
            .get(0);
        let queue = crate::api::queue::put(existing, count as usize, input, create)?;
        let body = serde_json::to_value(&queue)
            .map_err(|e| CapiError::new(ErrorCode::InternalError, e.to_string()))?;
        let db = self.db().await?;
        db.execute(
            "INSERT INTO queues (name, body) VALUES ($1, $2)
             ON CONFLICT (name) DO UPDATE SET body = EXCLUDED.body",
            &[&queue.name, &body],
        )
        .await
        .map_err(db_error("storing a queue"))?;
        Ok(json!({"GameServerSessionQueue": self.queue_view(&queue).await?}))
    }

    pub(super) async fn describe_queues(
        &self,
        map: Map<String, Value>,
    ) -> Result<Value, CapiError> {
        let p = Params::new(map, &["Names", "Limit", "Offset", "Filters"])?;
        let names = p.opt_strings("Names", 100)?;
        let limit = p.opt_int("Limit", 1, 100)?.unwrap_or(100);
        let offset = p.opt_int("Offset", 0, i64::MAX)?.unwrap_or(0);
        let db = self.db().await?;
        let rows = db
            .query(
                "SELECT body, count(*) OVER () FROM queues WHERE ($1::text[] IS NULL OR name = ANY($1))
                 ORDER BY name OFFSET $2 LIMIT $3",
                &[&names, &offset, &limit],
            )
            .await
            .map_err(db_error("reading queues"))?;
        let total: i64 = rows.first().map(|r| r.get(1)).unwrap_or(0);
        let mut shown = Vec::new();
        for r in &rows {
            let q: Queue = serde_json::from_value(r.get(0))
                .map_err(|e| CapiError::new(ErrorCode::InternalError, e.to_string()))?;
            shown.push(self.queue_view(&q).await?);
        }
        Ok(json!({"GameServerSessionQueues": shown, "TotalCount": total}))
    }

    /// DescribeGameServerSessionQueueStatistics (an extension): each queue's depth (PENDING
    /// placements), average wait of fulfilled ones, and placement outcome counts.
    pub(super) async fn queue_statistics(
        &self,
        map: Map<String, Value>,
    ) -> Result<Value, CapiError> {
        let p = Params::new(map, &["Names"])?;
        let names = p.opt_strings("Names", 100)?;
        let db = self.db().await?;
        let rows = db
            .query(
                "SELECT q.name, q.started, q.fulfilled, q.timed_out, q.cancelled, q.failed,
                        q.first_choice_not_viable, q.wait_ms_total,
                        (SELECT count(*) FROM placements p WHERE p.queue_name = q.name AND p.status = 'PENDING')
                 FROM queues q WHERE ($1::text[] IS NULL OR q.name = ANY($1)) ORDER BY q.name",
                &[&names],
            )
            .await
            .map_err(db_error("reading queue figures"))?;
        let list: Vec<Value> = rows
            .iter()
            .map(|r| {
                let mut v = json!({"Name": r.get::<_, String>(0)});
                for (i, (_, name)) in STATS.iter().enumerate() {
                    v[*name] = json!(r.get::<_, i64>(i + 1));
                }
                let fulfilled: i64 = r.get(2);
                let wait: i64 = r.get(7);
                v["AverageWaitMilliseconds"] =
                    json!(if fulfilled > 0 { wait / fulfilled } else { 0 });
                v["Depth"] = json!(r.get::<_, i64>(8));
                v
            })
            .collect();
        Ok(json!({"QueueStatistics": list}))
    }

    pub(super) async fn delete_queue(&self, map: Map<String, Value>) -> Result<Value, CapiError> {
        let p = Params::new(map, &["Name"])?;
        let name = p.str("Name", 128)?;
        let db = self.db().await?;
        let n = db
            .execute("DELETE FROM queues WHERE name = $1", &[&name])
            .await
            .map_err(db_error("deleting a queue"))?;
        if n == 0 {
            return Err(CapiError::new(
                ErrorCode::ResourceNotFound,
                format!("queue {name} does not exist"),
            ));
        }
        Ok(json!({}))
    }

    pub(super) async fn start_placement(
        &self,
        map: Map<String, Value>,
    ) -> Result<Value, CapiError> {
        let request = placement_request(map)?;
        request
            .check()
            .map_err(|(param, message)| CapiError::value(param, message))?;
        let queue = self.queue(&request.queue).await?.ok_or_else(|| {
            CapiError::new(
                ErrorCode::ResourceNotFound,
                format!("queue {} does not exist", request.queue),
            )
        })?;
        let start = now_ms();
        let deadline = start + i64::from(queue.timeout_secs) * 1000;
        let body = serde_json::to_value(&request)
            .map_err(|e| CapiError::new(ErrorCode::InternalError, e.to_string()))?;
        let db = self.db().await?;
        let n = db
            .execute(
                "INSERT INTO placements (placement_id, queue_name, status, request, started_ms, deadline_ms)
                 VALUES ($1, $2, 'PENDING', $3, $4, $5) ON CONFLICT DO NOTHING",
                &[&request.id, &request.queue, &body, &start, &deadline],
            )
            .await
            .map_err(db_error("starting a placement"))?;
        if n == 0 {
            return Err(CapiError::new(
                ErrorCode::InvalidParameterValue,
                format!(
                    "the parameter `PlacementId` {:?} is already in use",
                    request.id
                ),
            ));
        }
        drop(db);
        self.count_queue(&request.queue, "started").await?;
        self.placements.notify_one();
        self.placement(&request.id).await
    }

    /// A placement in the SDK's model.
    async fn placement(&self, id: &str) -> Result<Value, CapiError> {
        let db = self.db().await?;
        let row = db
            .query_opt(
                "SELECT request, status, coalesce(result, '{}'::jsonb), started_ms, ended_ms, deadline_ms
                 FROM placements WHERE placement_id = $1",
                &[&id],
            )
            .await
            .map_err(db_error("reading a placement"))?
            .ok_or_else(|| {
                CapiError::new(ErrorCode::ResourceNotFound, format!("placement {id} does not exist"))
            })?;
        let request: PlacementRequest = serde_json::from_value(row.get(0))
            .map_err(|e| CapiError::new(ErrorCode::InternalError, e.to_string()))?;
        let status = status_of(row.get::<_, &str>(1));
        let result: Value = row.get(2);
        let text = |k: &str| {
            result
                .get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let placement = Placement {
            request,
            status,
            reason: text("Reason"),
            start: millis_time(row.get(3)),
            end: row.get::<_, Option<i64>>(4).map(millis_time),
            deadline: millis_time(row.get(5)),
            gss_id: result
                .get("GameServerSessionId")
                .and_then(Value::as_str)
                .map(str::to_string),
            ip_address: text("IpAddress"),
            port: result.get("Port").and_then(Value::as_i64).unwrap_or(0) as i32,
            placed: result
                .get("PlacedPlayerSessions")
                .and_then(Value::as_array)
                .map(|l| {
                    l.iter()
                        .map(|p| {
                            let f = |k: &str| {
                                p.get(k)
                                    .and_then(Value::as_str)
                                    .unwrap_or_default()
                                    .to_string()
                            };
                            (f("PlayerId"), f("PlayerSessionId"))
                        })
                        .collect()
                })
                .unwrap_or_default(),
        };
        let mut v = placement_view(&placement);
        if status == Status::Fulfilled {
            v["GameServerSessionRegion"] = json!(text("Region"));
            v["DnsName"] = json!(text("DnsName"));
        }
        Ok(json!({"GameServerSessionPlacement": v}))
    }

    pub(super) async fn describe_placement(
        &self,
        map: Map<String, Value>,
    ) -> Result<Value, CapiError> {
        let p = Params::new(map, &["PlacementId"])?;
        self.placement(&p.str("PlacementId", 48)?).await
    }

    pub(super) async fn stop_placement(&self, map: Map<String, Value>) -> Result<Value, CapiError> {
        let p = Params::new(map, &["PlacementId"])?;
        let id = p.str("PlacementId", 48)?;
        let db = self.db().await?;
        let row = db
            .query_opt(
                "UPDATE placements SET status = 'CANCELLED', ended_ms = $2
                 WHERE placement_id = $1 AND status = 'PENDING' RETURNING queue_name",
                &[&id, &now_ms()],
            )
            .await
            .map_err(db_error("cancelling a placement"))?;
        drop(db);
        if let Some(r) = row {
            self.count_queue(r.get::<_, &str>(0), "cancelled").await?;
        }
        self.placement(&id).await
    }

    /// Joins players to a session on its host; returns the player sessions JSON list.
    pub(crate) async fn join_players(
        &self,
        gss: &str,
        players: Vec<NewPlayer>,
    ) -> Result<Value, CapiError> {
        self.join_on_host(gss.to_string(), players)
            .await
            .map(Value::Array)
    }
}
