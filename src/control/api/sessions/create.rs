//! CreateGameServerSession across hosts: a host chosen in the database (packing before
//! spreading, honouring reserve and weight), the command sent down its stream, and the
//! idempotency token that makes a retry find the first request's session.

use crate::api::ErrorCode;
use std::time::Duration;

use serde_json::{Map, Value, json};

use super::super::{ControlApi, db_error};
use crate::api::CapiError;
use crate::api::params::Params;
use crate::api::requests::{CREATE_SESSION_PARAMS, new_session};
use crate::api::sessions::NewSession;
use crate::control::writer::Write;
use crate::upstream_proto as up;
use up::command::Kind;

/// Hosts tried for one CreateGameServerSession before it is refused for capacity.
const TRIES: usize = 3;
/// How long a choice of host waits for rows other writes hold, when only they have room...
const PICK_WAIT: Duration = Duration::from_millis(200);
/// ...looking again after this, doubled each time up to [`PICK_RETRY_MAX`] (on a few hosts
/// under load, a fixed short retry had every waiting create spin on the database)...
const PICK_RETRY: Duration = Duration::from_millis(1);
/// ...and at most this.
const PICK_RETRY_MAX: Duration = Duration::from_millis(16);
/// A host's refusals that mean nothing was made there: the next host is tried.
const NEXT_HOST: &[ErrorCode] = &[
    ErrorCode::LimitExceeded,
    ErrorCode::OperationDenied,
    ErrorCode::ResourceUnavailable,
];
/// A retry with the token of a request still under way waits this long for it at most...
const CLAIM_WAIT: Duration = Duration::from_secs(15);
/// ...polling this often.
const CLAIM_POLL: Duration = Duration::from_millis(20);

/// The wire form of a session request.
fn create_command(req: &NewSession, token: &str) -> up::CreateGameServerSession {
    up::CreateGameServerSession {
        maximum_player_session_count: req.max_players,
        name: req.name.clone(),
        creator_id: req.creator_id.clone(),
        game_properties: req
            .game_properties
            .iter()
            .map(|(key, value)| up::GameProperty {
                key: key.clone(),
                value: value.clone(),
            })
            .collect(),
        game_server_session_data: req.data.clone(),
        game_server_session_id: req.custom_id.clone().unwrap_or_default(),
        idempotency_token: token.to_string(),
    }
}

/// What a token's first request left.
enum Claim {
    /// This request owns the token.
    Owned,
    /// The session was created.
    Done(String),
    /// Another request is under way (or died) after sending this command to this instance.
    Sent(String, up::CreateGameServerSession, bool),
    /// Another request is under way and has not sent anything yet.
    Waiting,
}

impl ControlApi {
    pub(in crate::control::api) async fn create_session(
        &self,
        map: Map<String, Value>,
    ) -> Result<Value, CapiError> {
        let p = Params::new(map, CREATE_SESSION_PARAMS)?;
        let fleet = self.fleet(&p, true).await?.expect("required");
        let req = new_session(&p)?;
        req.check()?;
        let session = self
            .create_in(&fleet, &req, req.idempotency_token.clone())
            .await?;
        Ok(json!({ "GameServerSession": session }))
    }

    /// Creates a session in `fleet` on the first host with room, once per `token` across
    /// replicas (a placement passes a token of its own).
    pub(crate) async fn create_in(
        &self,
        fleet: &str,
        req: &NewSession,
        token: Option<String>,
    ) -> Result<Value, CapiError> {
        let Some(token) = token else {
            let token = uuid::Uuid::new_v4().to_string();
            return self.create_on_some_host(fleet, req, &token, false).await;
        };
        let deadline = tokio::time::Instant::now() + CLAIM_WAIT;
        loop {
            match self.claim(&token, fleet).await? {
                Claim::Owned => return self.create_on_some_host(fleet, req, &token, true).await,
                Claim::Done(gss) => return self.session_json(&gss).await,
                // The first request died after sending (and this one took the token over): the
                // agent knows the token and answers with the session it made, so sending again
                // cannot make a second one.
                Claim::Sent(instance, command, true) => {
                    return self
                        .send_create(fleet, &instance, command, Some(&token), false)
                        .await;
                }
                Claim::Sent(_, _, false) | Claim::Waiting => {
                    if tokio::time::Instant::now() > deadline {
                        return Err(CapiError::new(
                            ErrorCode::FailedOperation,
                            format!(
                                "a request with IdempotencyToken {token:?} is still under way; try again"
                            ),
                        ));
                    }
                    tokio::time::sleep(CLAIM_POLL).await;
                }
            }
        }
    }

    /// Claims `token` for this replica, or says what its first request left. A stale claim
    /// (its replica stopped beating, or it is older than any request could take) is taken
    /// over by exactly one retry: the takeover compares and sets the claim.
    async fn claim(&self, token: &str, fleet: &str) -> Result<Claim, CapiError> {
        let db = self.db().await?;
        let me = self.hub.replica();
        let inserted = db
            .execute(
                "INSERT INTO idempotency (token, fleet_id, claimed_by) VALUES ($1, $2, $3)
                 ON CONFLICT DO NOTHING",
                &[&token, &fleet, &me],
            )
            .await
            .map_err(db_error("claiming an idempotency token"))?;
        if inserted == 1 {
            return Ok(Claim::Owned);
        }
        let row = db
            .query_one(
                "SELECT i.gss_id, i.instance_id, i.command, i.claimed_by, i.claimed_at,
                        (r.replica IS NULL OR r.heartbeat < now() - interval '10 seconds'
                         OR i.claimed_at < now() - interval '30 seconds') AS stale
                 FROM idempotency i LEFT JOIN replicas r ON r.replica = i.claimed_by
                 WHERE i.token = $1",
                &[&token],
            )
            .await
            .map_err(db_error("reading an idempotency token"))?;
        let gss: Option<String> = row.get(0);
        let instance: Option<String> = row.get(1);
        let command: Option<Vec<u8>> = row.get(2);
        let owner: String = row.get(3);
        let claimed_at: std::time::SystemTime = row.get(4);
        let stale: bool = row.get(5);
        if let Some(gss) = gss {
            return Ok(Claim::Done(gss));
        }
        let taken = stale
            && db
                .execute(
                    "UPDATE idempotency SET claimed_by = $2, claimed_at = now()
                     WHERE token = $1 AND claimed_by = $3 AND claimed_at = $4 AND gss_id IS NULL",
                    &[&token, &me, &owner, &claimed_at],
                )
                .await
                .map_err(db_error("taking over an idempotency token"))?
                == 1;
        Ok(match (instance, command) {
            (Some(instance), Some(command)) => {
                let command = prost::Message::decode(command.as_slice()).map_err(|e| {
                    CapiError::new(
                        ErrorCode::InternalError,
                        format!("a stored command does not decode: {e}"),
                    )
                })?;
                Claim::Sent(instance, command, taken)
            }
            _ if taken => Claim::Owned,
            _ => Claim::Waiting,
        })
    }

    /// Picks hosts until one makes the session.
    async fn create_on_some_host(
        &self,
        fleet: &str,
        req: &NewSession,
        token: &str,
        recorded: bool,
    ) -> Result<Value, CapiError> {
        let me = self.hub.replica();
        let mut tried: Vec<String> = Vec::new();
        let mut last = None;
        for _ in 0..TRIES {
            let Some(instance) = self.pick(fleet, &tried).await? else {
                break;
            };
            let command = create_command(req, token);
            if recorded {
                let db = self.db().await?;
                let still_ours = db
                    .execute(
                        "UPDATE idempotency SET instance_id = $2, command = $3
                         WHERE token = $1 AND claimed_by = $4 AND gss_id IS NULL",
                        &[
                            &token,
                            &instance,
                            &prost::Message::encode_to_vec(&command),
                            &me,
                        ],
                    )
                    .await
                    .map_err(db_error("recording where a session is created"))?;
                if still_ours == 0 {
                    self.uncount(&instance).await;
                    return Err(CapiError::new(
                        ErrorCode::FailedOperation,
                        format!(
                            "another request took IdempotencyToken {token:?} over; retry to get its session"
                        ),
                    ));
                }
            }
            match self
                .send_create(fleet, &instance, command, recorded.then_some(token), true)
                .await
            {
                Ok(v) => return Ok(v),
                // The host had no room after all (its counts were behind), is reserved or
                // draining, or its stream is gone: nothing was made there; try the next.
                Err(e) if NEXT_HOST.contains(&e.code) => {
                    tracing::debug!(instance.id = %instance, code = e.code.as_str(), error = %e.message, "host refused a session; trying the next");
                    if recorded {
                        let db = self.db().await?;
                        db.execute(
                            "UPDATE idempotency SET instance_id = NULL, command = NULL
                             WHERE token = $1 AND claimed_by = $2",
                            &[&token, &me],
                        )
                        .await
                        .map_err(db_error("releasing an idempotency token"))?;
                    }
                    tried.push(instance);
                    last = Some(e);
                }
                Err(e) => {
                    // FailedOperation: the outcome is unknown (the host may have made it): the
                    // token stays with the host and command, so a retry gets that session.
                    // Anything else was refused for a reason a retry meets again.
                    if recorded && e.code != ErrorCode::FailedOperation {
                        self.release_token(token).await;
                    }
                    return Err(e);
                }
            }
        }
        if recorded {
            self.release_token(token).await;
        }
        Err(match last {
            Some(e) => CapiError::new(
                ErrorCode::LimitExceeded,
                format!(
                    "no host of fleet {fleet} could take the session (last: {})",
                    e.message
                ),
            ),
            None => CapiError::new(
                ErrorCode::LimitExceeded,
                format!(
                    "no host of fleet {fleet} has a free, healthy server process (connected, not lost, reserved or draining)"
                ),
            ),
        })
    }

    /// Lets `token` be tried afresh.
    async fn release_token(&self, token: &str) {
        let released = async {
            let db = self.db().await?;
            db.execute(
                "DELETE FROM idempotency WHERE token = $1 AND claimed_by = $2 AND gss_id IS NULL",
                &[&token, &self.hub.replica()],
            )
            .await
            .map_err(db_error("releasing an idempotency token"))
        };
        if let Err(e) = released.await {
            tracing::warn!(error = %e.message, "cannot release an idempotency token; it is taken over once stale");
        }
    }

    /// The host for the next session of `fleet`: among those connected, not lost, reserved or
    /// draining, with a free process, the highest weight, then the fullest (pack before
    /// spreading, so idle hosts can be scaled in), a host with a create already under way
    /// after one without (concurrent creates spread over the fullest hosts instead of queueing
    /// on one row). The free count is taken in the same statement, so two replicas never count
    /// the same process. A host whose row a concurrent write holds is skipped, never waited on
    /// (waiting could deadlock): when only such hosts have room, the choice is tried again
    /// shortly.
    pub(crate) async fn pick(
        &self,
        fleet: &str,
        tried: &[String],
    ) -> Result<Option<String>, CapiError> {
        let db = self.db().await?;
        let choose = db
            .prepare_cached(
                "UPDATE instances SET in_flight = in_flight + 1, in_flight_at = now()
                 WHERE instance_id = (
                    SELECT instance_id FROM instances
                    WHERE fleet_id = $1 AND connected AND NOT lost AND NOT reserved
                      AND NOT draining AND idle > in_flight AND NOT (instance_id = ANY($2))
                    ORDER BY weight DESC, (in_flight > 0), idle - in_flight, instance_id
                    LIMIT 1 FOR UPDATE SKIP LOCKED)
                 RETURNING instance_id",
            )
            .await
            .map_err(db_error("preparing the choice of host"))?;
        let any_room = db
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM instances
                    WHERE fleet_id = $1 AND connected AND NOT lost AND NOT reserved
                      AND NOT draining AND idle > in_flight AND NOT (instance_id = ANY($2)))",
            )
            .await
            .map_err(db_error("preparing the choice of host"))?;
        let deadline = tokio::time::Instant::now() + PICK_WAIT;
        let mut retry = PICK_RETRY;
        loop {
            let row = db
                .query_opt(&choose, &[&fleet, &tried])
                .await
                .map_err(db_error("choosing a host"))?;
            if let Some(r) = row {
                return Ok(Some(r.get(0)));
            }
            let locked_with_room: bool = db
                .query_one(&any_room, &[&fleet, &tried])
                .await
                .map_err(db_error("choosing a host"))?
                .get(0);
            if !locked_with_room || tokio::time::Instant::now() > deadline {
                return Ok(None);
            }
            tokio::time::sleep(retry).await;
            retry = (retry * 2).min(PICK_RETRY_MAX);
        }
    }

    /// Takes back a create counted in flight on `instance` that was never sent.
    async fn uncount(&self, instance: &str) {
        if let Ok(db) = self.db().await {
            let _ = db
                .execute(
                    "UPDATE instances SET in_flight = greatest(in_flight - 1, 0) WHERE instance_id = $1",
                    &[&instance],
                )
                .await;
        }
    }

    /// Sends a create to `instance` and stores what it made; `counted`: [`Self::pick`]
    /// counted it in flight there. Once the host answered, a failure to record the session is
    /// `FailedOperation` (the session exists; a retry with the token gets it).
    async fn send_create(
        &self,
        fleet: &str,
        instance: &str,
        command: up::CreateGameServerSession,
        token: Option<&str>,
        counted: bool,
    ) -> Result<Value, CapiError> {
        let result = self
            .command(instance, Kind::CreateGameServerSession(command))
            .await;
        let recorded = self
            .writer
            .write(Write::Created {
                fleet: fleet.to_string(),
                instance: instance.to_string(),
                session: result.as_ref().ok().cloned(),
                token: token.map(str::to_string),
                counted,
            })
            .await;
        if let Err(e) = recorded {
            tracing::error!(instance.id = %instance, error = %e, "a created session could not be recorded");
            if counted {
                self.uncount(instance).await;
            }
            if result.is_ok() {
                return Err(CapiError::new(
                    ErrorCode::FailedOperation,
                    format!(
                        "the session was created on instance {instance} but could not be recorded (the replica's log says why); retry with the same IdempotencyToken"
                    ),
                ));
            }
        }
        result
    }
}
