//! Group commit: everything a replica records as it happens (each batch an agent's stream
//! brought, the session a create made, the players a join reserved) goes through one writer,
//! which takes whatever is queued and writes it in one transaction of a few array statements,
//! sent without waiting for each other's answers. Under load one commit carries many streams'
//! batches and many creates; idle, a write waits for nobody.
//!
//! Rows are locked in one order, as every other write does it (sessions, players,
//! idempotency tokens, then the hosts' rows, by instance id), and the hosts last, so a choice
//! of host (which skips locked rows) finds them locked only briefly.

mod rows;

use std::sync::Arc;

use deadpool_postgres::Pool;
use serde_json::Value;
use tokio::sync::{Notify, mpsc, oneshot};

use super::db::DbError;
use super::store::{Batch, Source};
use rows::Rows;

/// Writes taken into one transaction at most.
const GROUP: usize = 512;
/// Writes queued before a caller waits for room.
const QUEUE: usize = 8192;

/// One thing to record.
#[derive(Debug)]
pub enum Write {
    /// What arrived on an agent's stream; `current`: the hub still holds that stream (the
    /// instance's row and the snapshot's sessions are written only then; events always).
    Relay {
        /// Where it came from.
        src: Source,
        /// What came (shared, so a failed write is tried again without a copy).
        batch: Arc<Batch>,
        /// Whether the stream is still the instance's own.
        current: bool,
    },
    /// A create sent to `instance` was answered: `session` is what it made (stored unless a
    /// snapshot already did; `None`: nothing was made), `token` its IdempotencyToken, and
    /// `counted` whether the choice of host counted it in flight there.
    Created {
        /// The session's fleet.
        fleet: String,
        /// The host.
        instance: String,
        /// The session made (Tencent JSON).
        session: Option<Value>,
        /// The token to point at the session.
        token: Option<String>,
        /// Whether a create is to be taken off the host's in-flight count.
        counted: bool,
    },
    /// Player sessions a join returned (Tencent JSON), stored unless a snapshot already did.
    Players(Vec<Value>),
}

struct Queued {
    write: Write,
    done: oneshot::Sender<Result<Option<u64>, DbError>>,
}

/// The handle callers write through (cheap to clone).
#[derive(Clone)]
pub struct Writer {
    queue: mpsc::Sender<Queued>,
}

impl Writer {
    /// Starts the writer on `pool`; it stops when the last handle is dropped. `activated` is
    /// told (every waiter, and one permit kept) when a snapshot showing an ACTIVE session was
    /// stored: placements wait for that.
    pub fn start(pool: Pool, activated: Arc<Notify>) -> Self {
        let (queue, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(pool, rx, activated));
        Self { queue }
    }

    /// Records `write` once it is committed; for [`Write::Relay`], returns the highest event
    /// sequence it stored.
    pub async fn write(&self, write: Write) -> Result<Option<u64>, DbError> {
        let (done, answer) = oneshot::channel();
        self.queue
            .send(Queued { write, done })
            .await
            .map_err(|_| DbError::Stopped)?;
        answer.await.map_err(|_| DbError::Stopped)?
    }
}

async fn run(pool: Pool, mut rx: mpsc::Receiver<Queued>, activated: Arc<Notify>) {
    let mut queued = Vec::with_capacity(GROUP);
    while rx.recv_many(&mut queued, GROUP).await > 0 {
        let writes: Vec<&Write> = queued.iter().map(|q| &q.write).collect();
        match commit(&pool, &writes, &activated).await {
            Ok(highest) => {
                for (q, h) in queued.drain(..).zip(highest) {
                    let _ = q.done.send(Ok(h));
                }
            }
            // A statement failed (a deadlock with another replica, a row PostgreSQL refused):
            // each write is tried alone, so one cannot fail the others.
            Err(e @ DbError::Query { .. }) if queued.len() > 1 => {
                tracing::debug!(error = %e, writes = queued.len(), "a group write failed; writing each alone");
                for q in queued.drain(..) {
                    let alone = commit(&pool, &[&q.write], &activated).await.map(|h| h[0]);
                    let _ = q.done.send(alone);
                }
            }
            Err(e) => {
                let message = e.to_string();
                let mut first = Some(e);
                for q in queued.drain(..) {
                    let e = first
                        .take()
                        .unwrap_or_else(|| DbError::Connect(message.clone()));
                    let _ = q.done.send(Err(e));
                }
            }
        }
    }
}

/// Writes `writes` in one transaction; returns each one's highest stored event sequence.
async fn commit(
    pool: &Pool,
    writes: &[&Write],
    activated: &Notify,
) -> Result<Vec<Option<u64>>, DbError> {
    let rows = Rows::of(writes);
    let db = pool.get().await?;
    if let Err(e) = rows.send(&db).await {
        // Whatever was sent ended with COMMIT, which ends a failed transaction as a rollback;
        // this is for a step that failed before anything was sent, so the connection goes
        // back to the pool outside any transaction.
        let _ = db.batch_execute("ROLLBACK").await;
        return Err(e);
    }
    if rows.activates() {
        // Every placement waiting on its session looks; the worker too, when it next waits.
        activated.notify_waiters();
        activated.notify_one();
    }
    Ok(rows.highest)
}
