//! Commands to agents, across replicas. The replica holding an agent's relay stream sends its
//! commands; a command from any other replica goes through the `commands` table and a
//! PostgreSQL `NOTIFY`, and its result comes back the same way, within milliseconds.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deadpool_postgres::Pool;
use futures_util::StreamExt;
use prost::Message;
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::AsyncMessage;

use crate::upstream_proto as up;

/// How long an agent gets to answer a command an API call waits on.
pub const COMMAND_LIMIT: Duration = Duration::from_secs(10);

/// The channel a command's id is announced on.
const COMMAND_CHANNEL: &str = "gse_command";
/// The channel a result's command id is announced on.
const RESULT_CHANNEL: &str = "gse_result";
/// The channel a stream's arrival is announced on (`instance<TAB>stream`): another replica
/// still holding an older stream of that instance drops it.
const MOVED_CHANNEL: &str = "gse_moved";
/// How often the notification connection is checked.
const LISTEN_PING: Duration = Duration::from_secs(15);
/// How long the notification listener waits before connecting again.
const LISTEN_RETRY: Duration = Duration::from_secs(1);

/// Why a command got no result.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// No replica holds the instance's stream.
    #[error("instance {0} is not connected to the control plane")]
    NotConnected(String),
    /// The agent did not answer in time.
    #[error("instance {instance} did not answer the command within {}", humantime::format_duration(*limit))]
    Timeout {
        /// The instance.
        instance: String,
        /// The limit.
        limit: Duration,
    },
    /// The database failed.
    #[error(transparent)]
    Db(#[from] super::db::DbError),
}

/// A relay stream this replica holds.
struct Stream {
    /// Distinguishes a reconnection from the stream it replaced.
    serial: u64,
    /// The stream's id, as the instance's row names it.
    id: String,
    tx: mpsc::Sender<up::ControlMessage>,
    /// Cancelled when the stream is replaced (here or at another replica): its relay task
    /// ends it, so the agent behind it reconnects instead of talking into the void.
    ended: tokio_util::sync::CancellationToken,
}

/// This replica's streams and the commands it waits on.
pub struct Hub {
    replica: String,
    pool: Pool,
    streams: Mutex<HashMap<String, Stream>>,
    waiters: Mutex<HashMap<String, oneshot::Sender<up::CommandResult>>>,
    serial: std::sync::atomic::AtomicU64,
}

impl Hub {
    /// A hub for replica `replica`.
    pub fn new(replica: String, pool: Pool) -> Arc<Self> {
        Arc::new(Self {
            replica,
            pool,
            streams: Mutex::default(),
            waiters: Mutex::default(),
            serial: 0.into(),
        })
    }

    /// This replica's id.
    pub fn replica(&self) -> &str {
        &self.replica
    }

    /// Registers stream `id` of `instance`; returns the serial to detach it with. Commands
    /// other replicas queued for the instance and that no stream took yet are sent on it, and
    /// a replica holding an older stream of the instance is told to drop it.
    pub async fn attach(
        &self,
        instance: &str,
        id: &str,
        tx: mpsc::Sender<up::ControlMessage>,
        ended: tokio_util::sync::CancellationToken,
    ) -> u64 {
        let serial = self
            .serial
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let replaced = self
            .streams
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(
                instance.to_string(),
                Stream {
                    serial,
                    id: id.to_string(),
                    tx: tx.clone(),
                    ended,
                },
            );
        if let Some(old) = replaced {
            tracing::info!(instance.id = %instance, "a new stream of the instance replaces its old one here, which is ended");
            old.ended.cancel();
        }
        if let Err(e) = self.announce_and_resend(instance, id, &tx).await {
            tracing::warn!(instance.id = %instance, error = %e, "cannot resend queued commands to a returning agent");
        }
        serial
    }

    async fn announce_and_resend(
        &self,
        instance: &str,
        id: &str,
        tx: &mpsc::Sender<up::ControlMessage>,
    ) -> Result<(), super::db::DbError> {
        let db = self.pool.get().await?;
        db.execute(
            "SELECT pg_notify($1, $2)",
            &[&MOVED_CHANNEL, &format!("{instance}\t{id}")],
        )
        .await
        .map_err(super::db::DbError::query("announcing a stream"))?;
        let queued = db
            .query(
                "SELECT body FROM commands WHERE instance_id = $1 AND result IS NULL
                   AND created_at > now() - $2 * interval '1 millisecond' ORDER BY created_at",
                &[&instance, &(COMMAND_LIMIT.as_millis() as f64)],
            )
            .await
            .map_err(super::db::DbError::query("reading queued commands"))?;
        for row in queued {
            let body: Vec<u8> = row.get(0);
            if let Ok(command) = up::Command::decode(body.as_slice()) {
                let _ = tx
                    .send(up::ControlMessage {
                        body: Some(up::control_message::Body::Command(command)),
                    })
                    .await;
            }
        }
        Ok(())
    }

    /// Another replica took stream `id` of `instance`: an older one held here is dead.
    fn moved(&self, instance: &str, id: &str) {
        let mut streams = self
            .streams
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if streams.get(instance).is_some_and(|s| s.id != id)
            && let Some(old) = streams.remove(instance)
        {
            old.ended.cancel();
            tracing::info!(instance.id = %instance, "the agent reconnected elsewhere; its old stream here is ended");
        }
    }

    /// Removes the stream of `instance` unless a newer one replaced it.
    pub fn detach(&self, instance: &str, serial: u64) {
        let mut streams = self
            .streams
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if streams.get(instance).is_some_and(|s| s.serial == serial) {
            streams.remove(instance);
        }
    }

    /// Whether the stream registered as `serial` is still `instance`'s stream here (a
    /// reconnection, here or at another replica, replaces it).
    pub fn holds(&self, instance: &str, serial: u64) -> bool {
        self.streams
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(instance)
            .is_some_and(|s| s.serial == serial)
    }

    fn local(&self, instance: &str) -> Option<mpsc::Sender<up::ControlMessage>> {
        self.streams
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(instance)
            .map(|s| s.tx.clone())
    }

    /// Sends `kind` to `instance` and waits for its result, at most `limit`.
    pub async fn command(
        &self,
        instance: &str,
        kind: up::command::Kind,
        limit: Duration,
    ) -> Result<up::CommandResult, HubError> {
        let id = uuid::Uuid::new_v4().to_string();
        let command = up::Command {
            id: id.clone(),
            kind: Some(kind),
        };
        let (tx, rx) = oneshot::channel();
        self.waiters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(id.clone(), tx);
        let _forget = Forget(self, &id);
        match self.local(instance) {
            Some(stream) => {
                let message = up::ControlMessage {
                    body: Some(up::control_message::Body::Command(command)),
                };
                stream
                    .send(message)
                    .await
                    .map_err(|_| HubError::NotConnected(instance.to_string()))?;
            }
            None => {
                // Queued only for an instance some replica holds; the notification names it,
                // so only that replica reads the command.
                let db = self.pool.get().await.map_err(super::db::DbError::from)?;
                let queued = db
                    .query(
                        "WITH c AS (
                            INSERT INTO commands (id, instance_id, body, origin)
                            SELECT $1, $2, $3, $4 WHERE EXISTS
                                (SELECT 1 FROM instances WHERE instance_id = $2 AND connected)
                            RETURNING id)
                         SELECT pg_notify($5, $2 || E'\t' || $1) FROM c",
                        &[
                            &id,
                            &instance,
                            &command.encode_to_vec(),
                            &self.replica,
                            &COMMAND_CHANNEL,
                        ],
                    )
                    .await
                    .map_err(super::db::DbError::query(
                        "queueing a command for another replica",
                    ))?;
                if queued.is_empty() {
                    return Err(HubError::NotConnected(instance.to_string()));
                }
            }
        }
        match tokio::time::timeout(limit, rx).await {
            Ok(Ok(result)) => Ok(result),
            Ok(Err(_)) | Err(_) => Err(HubError::Timeout {
                instance: instance.to_string(),
                limit,
            }),
        }
    }

    /// A result arrived on one of this replica's streams.
    pub async fn deliver(&self, result: up::CommandResult) {
        let waiter = self
            .waiters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&result.command_id);
        if let Some(w) = waiter {
            let _ = w.send(result);
            return;
        }
        // Another replica asked (through the table, or on a stream the agent has left since):
        // hand the result back through the database.
        let stored = async {
            let db = self.pool.get().await.map_err(super::db::DbError::from)?;
            db.execute(
                "WITH c AS (
                    INSERT INTO commands (id, instance_id, body, origin, result)
                    VALUES ($1, '', ''::bytea, '', $2)
                    ON CONFLICT (id) DO UPDATE SET result = EXCLUDED.result)
                 SELECT pg_notify($3, $1)",
                &[&result.command_id, &result.encode_to_vec(), &RESULT_CHANNEL],
            )
            .await
            .map_err(super::db::DbError::query("returning a command result"))
        };
        if let Err(e) = stored.await {
            tracing::warn!(command.id = %result.command_id, error = %e, "cannot return a command result to the replica that asked");
        }
    }

    /// Listens for commands and results announced by other replicas, until the process ends.
    pub async fn listen(self: Arc<Self>, url: String) {
        loop {
            if let Err(e) = self.listen_once(&url).await {
                tracing::warn!(error = %e, "the command notification listener failed; connecting again");
            }
            tokio::time::sleep(LISTEN_RETRY).await;
        }
    }

    async fn listen_once(self: &Arc<Self>, url: &str) -> Result<(), tokio_postgres::Error> {
        let (client, mut connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
        let (tx, mut rx) = mpsc::unbounded_channel();
        let driver = tokio::spawn(async move {
            let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(m) = messages.next().await {
                match m {
                    Ok(AsyncMessage::Notification(n)) => {
                        let _ = tx.send((n.channel().to_string(), n.payload().to_string()));
                    }
                    Ok(_) => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        });
        client
            .batch_execute(&format!(
                "LISTEN {COMMAND_CHANNEL}; LISTEN {RESULT_CHANNEL}; LISTEN {MOVED_CHANNEL}"
            ))
            .await?;
        tracing::debug!("listening for commands from other replicas");
        let mut ping = tokio::time::interval(LISTEN_PING);
        loop {
            let (channel, payload) = tokio::select! {
                n = rx.recv() => match n {
                    Some(n) => n,
                    None => break,
                },
                _ = ping.tick() => {
                    // A connection that died silently would stop every notification.
                    match tokio::time::timeout(super::db::WAIT, client.simple_query("SELECT 1")).await {
                        Ok(Ok(_)) => continue,
                        Ok(Err(e)) => {
                            driver.abort();
                            return Err(e);
                        }
                        Err(_) => {
                            tracing::warn!("the notification connection did not answer a ping; connecting again");
                            break;
                        }
                    }
                }
            };
            if channel == MOVED_CHANNEL {
                if let Some((instance, stream)) = payload.split_once('\t') {
                    self.moved(instance, stream);
                }
                continue;
            }
            let hub = self.clone();
            tokio::spawn(async move {
                let handled = if channel == COMMAND_CHANNEL {
                    match payload.split_once('\t') {
                        Some((instance, id)) if hub.local(instance).is_some() => {
                            hub.forward(id).await
                        }
                        _ => Ok(()),
                    }
                } else {
                    hub.collect(&payload).await
                };
                if let Err(e) = handled {
                    tracing::warn!(command.id = %payload, error = %e, "cannot pass a command between replicas");
                }
            });
        }
        driver.abort();
        Ok(())
    }

    /// Another replica queued command `id`: send it if this replica holds the stream.
    async fn forward(&self, id: &str) -> Result<(), super::db::DbError> {
        let db = self.pool.get().await?;
        let Some(row) = db
            .query_opt(
                "SELECT instance_id, body FROM commands WHERE id = $1",
                &[&id],
            )
            .await
            .map_err(super::db::DbError::query("reading a queued command"))?
        else {
            return Ok(());
        };
        let instance: String = row.get(0);
        let Some(stream) = self.local(&instance) else {
            return Ok(());
        };
        let body: Vec<u8> = row.get(1);
        match up::Command::decode(body.as_slice()) {
            Ok(command) => {
                let _ = stream
                    .send(up::ControlMessage {
                        body: Some(up::control_message::Body::Command(command)),
                    })
                    .await;
            }
            Err(e) => {
                tracing::warn!(command.id = %id, error = %e, "a queued command does not decode")
            }
        }
        Ok(())
    }

    /// The result of command `id` is stored: hand it to the waiter here, if any.
    async fn collect(&self, id: &str) -> Result<(), super::db::DbError> {
        if !self
            .waiters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains_key(id)
        {
            return Ok(());
        }
        let db = self.pool.get().await?;
        let row = db
            .query_opt(
                "DELETE FROM commands WHERE id = $1 AND result IS NOT NULL RETURNING result",
                &[&id],
            )
            .await
            .map_err(super::db::DbError::query("collecting a command result"))?;
        if let Some(row) = row {
            let body: Vec<u8> = row.get(0);
            if let Ok(result) = up::CommandResult::decode(body.as_slice())
                && let Some(w) = self
                    .waiters
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .remove(id)
            {
                let _ = w.send(result);
            }
        }
        Ok(())
    }
}

/// Drops a command's waiter however the wait ends.
struct Forget<'a>(&'a Hub, &'a str);

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.0
            .waiters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(self.1);
    }
}
