//! The placement worker: moves PENDING placements on as capacity frees up anywhere, each
//! claimed by one replica at a time; where a placement may go is [`super::choice`]'s pure
//! answer.

use crate::api::ErrorCode;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use super::api::ControlApi;
use super::choice::choose;
use super::now_ms;
use crate::api::CapiError;
use crate::api::placement::{PlacementRequest, Status};
use crate::api::sessions::NewSession;

/// Placements one worker moves on at once at most.
const PASS: i64 = 64;
/// How long a worker's claim on a placement lasts (another replica takes it after): longer
/// than one advance can take (a create waiting on a token, a command, a join).
const CLAIM: Duration = Duration::from_secs(60);
/// A placement no destination had room for is looked at again after this, so the ones
/// behind it get their turn.
const NO_ROOM_BACKOFF: Duration = Duration::from_millis(200);
/// How often the worker looks when nothing wakes it.
const IDLE_POLL: Duration = Duration::from_millis(200);
/// How often it looks while placements wait for a session to become ACTIVE.
const BUSY_POLL: Duration = Duration::from_millis(10);
/// How long a placement's task keeps it while its session activates, before releasing it to
/// the worker's polls (well within [`CLAIM`]).
const HOLD_FOR_ACTIVE: Duration = Duration::from_secs(5);

/// One claimed placement.
struct Claimed {
    id: String,
    queue: String,
    request: PlacementRequest,
    result: Value,
    started_ms: i64,
    deadline_ms: i64,
}

/// Moves PENDING placements on until the process ends. Each claimed placement moves on in a
/// task of its own, so one waiting on a slow create holds up no other; new ones are claimed
/// when `wake` says one started (or a claimed one finished), when `activated` says a session
/// turned ACTIVE while some wait for that, and on a poll (another replica's placements, claims
/// that ran out).
pub async fn work(
    api: ControlApi,
    wake: Arc<tokio::sync::Notify>,
    activated: Arc<tokio::sync::Notify>,
) {
    let mut running: tokio::task::JoinSet<Result<bool, CapiError>> = tokio::task::JoinSet::new();
    // Some placement waits for its session to become ACTIVE.
    let mut waiting = false;
    loop {
        let poll = if waiting { BUSY_POLL } else { IDLE_POLL };
        tokio::select! {
            () = wake.notified() => {}
            () = activated.notified(), if waiting => {}
            () = tokio::time::sleep(poll) => {}
            Some(done) = running.join_next(), if !running.is_empty() => {
                match done {
                    // Released to wait for its session: looked at again when a session turns
                    // ACTIVE or on the poll (taking it back at once would spin on it).
                    Ok(Ok(true)) => {
                        waiting = true;
                        continue;
                    }
                    Ok(Ok(false)) => {}
                    Ok(Err(e)) => tracing::warn!(error = %e.message, "cannot move a placement on"),
                    Err(e) => tracing::error!(error = %e, "a placement task failed"),
                }
                // A slot is free: take what waits, at once.
            }
        }
        let room = PASS - running.len() as i64;
        if room <= 0 {
            continue;
        }
        match claim(&api, room).await {
            Ok(claimed) => {
                // Every claimable one was taken (those waiting for ACTIVE among them): their
                // tasks say again whether they wait.
                if (claimed.len() as i64) < room {
                    waiting = false;
                }
                for c in claimed {
                    let (api, activated) = (api.clone(), activated.clone());
                    running.spawn(async move { advance(&api, c, &activated).await });
                }
            }
            Err(e) => tracing::warn!(error = %e.message, "cannot claim placements"),
        }
    }
}

/// Claims at most `room` PENDING placements no other worker holds.
async fn claim(api: &ControlApi, room: i64) -> Result<Vec<Claimed>, CapiError> {
    let me = api.hub.replica().to_string();
    let db = api.db().await?;
    let rows = db
        .query(
            "UPDATE placements SET claimed_by = $1, claimed_until = now() + $2 * interval '1 millisecond'
             WHERE placement_id IN (
                SELECT placement_id FROM placements
                WHERE status = 'PENDING' AND (claimed_until IS NULL OR claimed_until < now())
                ORDER BY started_ms LIMIT $3 FOR UPDATE SKIP LOCKED)
             RETURNING placement_id, queue_name, request, coalesce(result, '{}'::jsonb), started_ms, deadline_ms",
            &[&me, &(CLAIM.as_millis() as f64), &room],
        )
        .await
        .map_err(super::api::db_error("claiming placements"))?;
    let mut claimed = Vec::new();
    for r in &rows {
        let id: String = r.get(0);
        match serde_json::from_value(r.get(2)) {
            Ok(request) => claimed.push(Claimed {
                id,
                queue: r.get(1),
                request,
                result: r.get(3),
                started_ms: r.get(4),
                deadline_ms: r.get(5),
            }),
            Err(e) => {
                db.execute(
                    "UPDATE placements SET status = 'FAILED', result = $2, ended_ms = $3
                     WHERE placement_id = $1 AND status = 'PENDING'",
                    &[
                        &id,
                        &json!({"Reason": format!("the stored request does not decode: {e}")}),
                        &now_ms(),
                    ],
                )
                .await
                .map_err(super::api::db_error("failing an unreadable placement"))?;
            }
        }
    }
    Ok(claimed)
}

/// Where one step left a placement.
enum Moved {
    /// Its session was created and is not ACTIVE yet.
    WaitsForActive,
    /// It ended, or was released to be looked at again later.
    Done,
}

/// Moves one placement on, keeping it while its new session activates (usually tens of
/// milliseconds: woken by `activated`, else looking every [`BUSY_POLL`]) for up to
/// [`HOLD_FOR_ACTIVE`]; then it is released and the worker comes back to it. Says whether it
/// was released to wait for its session.
async fn advance(
    api: &ControlApi,
    mut c: Claimed,
    activated: &tokio::sync::Notify,
) -> Result<bool, CapiError> {
    let hold_until = tokio::time::Instant::now() + HOLD_FOR_ACTIVE;
    loop {
        // Registered before the session is read, so an activation stored in between is seen.
        let woken = activated.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        match step(api, &mut c).await? {
            Moved::Done => return Ok(false),
            Moved::WaitsForActive if tokio::time::Instant::now() >= hold_until => {
                release(api, &c, Duration::ZERO).await?;
                return Ok(true);
            }
            Moved::WaitsForActive => {
                tokio::select! {
                    () = woken => {}
                    () = tokio::time::sleep(BUSY_POLL) => {}
                }
            }
        }
    }
}

/// One step of a placement: its session's state if it has one, else a create.
async fn step(api: &ControlApi, c: &mut Claimed) -> Result<Moved, CapiError> {
    let now = now_ms();
    if now > c.deadline_ms {
        finish(
            api,
            c,
            Status::TimedOut,
            json!({"Reason": "the queue's timeout passed"}),
        )
        .await?;
        return Ok(Moved::Done);
    }
    if let Some(gss) = c
        .result
        .get("GameServerSessionId")
        .and_then(Value::as_str)
        .map(str::to_string)
    {
        let session = api.session_json(&gss).await?;
        match session.get("Status").and_then(Value::as_str) {
            Some("ACTIVATING") => {
                return Ok(Moved::WaitsForActive);
            }
            Some("ACTIVE") => {
                fulfil(api, c, &gss, &session).await?;
                return Ok(Moved::Done);
            }
            // It failed to activate: try another process.
            _ => {
                let attempt = c.result.get("Attempt").and_then(Value::as_i64).unwrap_or(0) + 1;
                c.result = json!({"Attempt": attempt});
                save_result(api, c).await?;
            }
        }
    }
    let Some(queue) = api.queue(&c.queue).await? else {
        finish(
            api,
            c,
            Status::Failed,
            json!({"Reason": format!("queue {} was deleted", c.queue)}),
        )
        .await?;
        return Ok(Moved::Done);
    };
    let (candidates, first_exists) = api.candidates(&queue.destinations).await?;
    let elapsed = ((now - c.started_ms).max(0) / 1000) as u64;
    let order = choose(
        &candidates,
        &queue.latency_policies,
        &c.request.latencies,
        elapsed,
    );
    let attempt = c.result.get("Attempt").and_then(Value::as_i64).unwrap_or(0);
    let (suffix, token) = session_names(&c.id, attempt);
    let req = NewSession {
        max_players: c.request.max_players,
        name: c.request.name.clone(),
        creator_id: String::new(),
        game_properties: c.request.game_properties.clone(),
        data: c.request.data.clone(),
        custom_id: Some(suffix),
        idempotency_token: None,
    };
    // The queue's first destination, if it names a fleet that exists.
    let first = candidates
        .first()
        .filter(|_| first_exists)
        .map(|d| d.fleet.clone());
    for fleet in &order {
        match api.create_in(fleet, &req, Some(token.clone())).await {
            Ok(session) => {
                if first.as_deref() != Some(fleet.as_str()) {
                    api.count_queue(&c.queue, "first_choice_not_viable").await?;
                }
                let mut result = json!({"Attempt": attempt});
                result["GameServerSessionId"] = session["GameServerSessionId"].clone();
                c.result = result;
                save_result(api, c).await?;
                return Ok(Moved::WaitsForActive);
            }
            Err(e) if e.code == ErrorCode::LimitExceeded => continue,
            Err(e) => {
                finish(api, c, Status::Failed, json!({"Reason": e.message})).await?;
                return Ok(Moved::Done);
            }
        }
    }
    release(api, c, NO_ROOM_BACKOFF).await?;
    Ok(Moved::Done)
}

/// The placement's session is ACTIVE: its players join, and it is FULFILLED with the
/// session's address (or FAILED when they cannot be placed).
async fn fulfil(
    api: &ControlApi,
    c: &mut Claimed,
    gss: &str,
    session: &Value,
) -> Result<(), CapiError> {
    let players = c.request.new_players();
    let placed = if players.is_empty() {
        Ok(Value::Array(Vec::new()))
    } else {
        api.join_players(gss, players).await
    };
    let mut result = c.result.clone();
    result["IpAddress"] = session["IpAddress"].clone();
    result["DnsName"] = session["DnsName"].clone();
    result["Port"] = session["Port"].clone();
    result["Region"] = json!(region_of(api, session).await?);
    match placed {
        Ok(list) => {
            result["PlacedPlayerSessions"] = json!(
                list.as_array()
                    .map(|l| l
                        .iter()
                        .map(|p| json!({
                            "PlayerId": p["PlayerId"],
                            "PlayerSessionId": p["PlayerSessionId"],
                        }))
                        .collect::<Vec<_>>())
                    .unwrap_or_default()
            );
            finish(api, c, Status::Fulfilled, result).await?;
        }
        Err(e) => {
            result["Reason"] = json!(format!("the players could not be placed: {}", e.message));
            finish(api, c, Status::Failed, result).await?;
        }
    }
    Ok(())
}

/// The session id suffix and idempotency token of a placement's attempt: the placement id
/// itself for the first (as the agent's own placements name it) when it fits, a hash of it
/// otherwise; both within the agent's 48-character limits.
fn session_names(id: &str, attempt: i64) -> (String, String) {
    use sha2::Digest;
    let hash = hex(&sha2::Sha256::digest(id.as_bytes()));
    let suffix = if attempt == 0 {
        id.to_string()
    } else {
        format!("p-{}-{attempt}", &hash[..32])
    };
    (suffix, format!("p-{}-{attempt}", &hash[..32]))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn region_of(api: &ControlApi, session: &Value) -> Result<String, CapiError> {
    let fleet = session
        .get("FleetId")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let regions = api.regions(&[fleet.to_string()]).await?;
    Ok(regions
        .get(fleet)
        .cloned()
        .unwrap_or_else(|| "local".into()))
}

async fn save_result(api: &ControlApi, c: &Claimed) -> Result<(), CapiError> {
    let db = api.db().await?;
    db.execute(
        "UPDATE placements SET result = $2 WHERE placement_id = $1 AND claimed_by = $3",
        &[&c.id, &c.result, &api.hub.replica()],
    )
    .await
    .map_err(super::api::db_error("saving a placement"))?;
    Ok(())
}

/// Lets any worker take the placement again after `after`.
async fn release(api: &ControlApi, c: &Claimed, after: Duration) -> Result<(), CapiError> {
    let db = api.db().await?;
    db.execute(
        "UPDATE placements SET claimed_until = now() + $3 * interval '1 millisecond'
         WHERE placement_id = $1 AND claimed_by = $2",
        &[&c.id, &api.hub.replica(), &(after.as_millis() as f64)],
    )
    .await
    .map_err(super::api::db_error("releasing a placement"))?;
    Ok(())
}

/// Ends a placement once (only from PENDING) and counts it on its queue.
async fn finish(
    api: &ControlApi,
    c: &Claimed,
    status: Status,
    result: Value,
) -> Result<(), CapiError> {
    let now = now_ms();
    let db = api.db().await?;
    let n = db
        .execute(
            "UPDATE placements SET status = $2, result = $3, ended_ms = $4, claimed_until = NULL
             WHERE placement_id = $1 AND status = 'PENDING' AND claimed_by = $5",
            &[&c.id, &status.as_str(), &result, &now, &api.hub.replica()],
        )
        .await
        .map_err(super::api::db_error("ending a placement"))?;
    drop(db);
    if n == 1 {
        let column = match status {
            Status::Fulfilled => "fulfilled",
            Status::TimedOut => "timed_out",
            Status::Cancelled => "cancelled",
            Status::Failed => "failed",
            Status::Pending => return Ok(()),
        };
        api.count_queue(&c.queue, column).await?;
        if status == Status::Fulfilled {
            api.add_wait(&c.queue, now - c.started_ms).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_names_fit_the_agents_limits() {
        let long = "p".repeat(48);
        for attempt in [0, 1, 99] {
            let (suffix, token) = session_names(&long, attempt);
            assert!(suffix.len() <= 48 && token.len() <= 48, "{suffix} {token}");
        }
        assert_eq!(session_names("place-1", 0).0, "place-1");
        assert_ne!(session_names("a", 1).1, session_names("b", 1).1);
    }
}
