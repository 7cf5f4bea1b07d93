//! The command ledger: which control-plane commands this host has applied and what each one
//! answered, kept in the outbox's redb database so it survives restarts.
//!
//! Three tables sit next to the outbox's `events` and `meta`:
//!
//! - `command_results`: command id → its encoded [`up::CommandResult`], written before the
//!   result is sent, so a repeated id always gets the answer the first run gave;
//! - `command_order`: a running number → (unix ms when recorded, command id), the oldest first,
//!   so the bounded history is pruned from the front without scanning every result;
//! - `command_running`: command id → unix ms when it started, written before a command runs and
//!   removed when its result is recorded.
//!
//! An id still in `command_running` when the ledger opens was under way when the agent died (or
//! stopped before the command finished). The ledger cannot know how far it got, so opening turns
//! each such id into a recorded failure ([`interrupted`]) instead of letting a resend run it a
//! second time: a second CreateGameServerSession would start a second match, a second
//! DeployBuild would roll the processes again. The control plane knows what it meant to do; it
//! checks the state and resends with a new id.
//!
//! Time is passed in (unix milliseconds), so every step replays in a test.

use std::sync::Arc;

use prost::Message;
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

use crate::upstream_proto as up;

const RESULTS: TableDefinition<&str, &[u8]> = TableDefinition::new("command_results");
const ORDER: TableDefinition<u64, (u64, &str)> = TableDefinition::new("command_order");
const RUNNING: TableDefinition<&str, u64> = TableDefinition::new("command_running");

/// Why a ledger step failed.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// A database step failed.
    #[error("command ledger: cannot {step}: {source}")]
    Db {
        /// What was being done.
        step: &'static str,
        /// What redb said.
        #[source]
        source: redb::Error,
    },
    /// A stored result does not decode.
    #[error("command ledger: a recorded result does not decode: {0}")]
    Decode(#[source] prost::DecodeError),
}

/// Maps a redb error of `step`.
fn failed(step: &'static str) -> impl FnOnce(redb::Error) -> LedgerError {
    move |source| LedgerError::Db { step, source }
}

/// The result a command gets when the agent restarted while running it.
pub fn interrupted(command_id: &str) -> up::CommandResult {
    super::failure(
        command_id,
        super::INTERNAL_ERROR,
        "the agent restarted while running this command; its outcome is unknown: \
         check the state and resend it with a new id"
            .to_string(),
    )
}

/// The ledger; cheap to clone. Every method does blocking disk I/O: call it from a blocking
/// thread, not from an async worker.
#[derive(Clone)]
pub struct Ledger {
    db: Arc<Database>,
}

impl Ledger {
    /// Creates the ledger's tables in `db` if needed and records every command left running by
    /// a previous run as [`interrupted`] (at `now_ms`).
    pub fn open(db: Arc<Database>, now_ms: u64) -> Result<Self, LedgerError> {
        settle_interrupted(&db, now_ms).map_err(failed("open the tables"))?;
        Ok(Self { db })
    }

    /// The recorded result of `id`, if any.
    pub fn recorded(&self, id: &str) -> Result<Option<up::CommandResult>, LedgerError> {
        let bytes = (|| -> Result<Option<Vec<u8>>, redb::Error> {
            let txn = self.db.begin_read()?;
            let results = txn.open_table(RESULTS)?;
            Ok(results.get(id)?.map(|v| v.value().to_vec()))
        })()
        .map_err(failed("look up a command"))?;
        bytes
            .map(|b| up::CommandResult::decode(b.as_slice()))
            .transpose()
            .map_err(LedgerError::Decode)
    }

    /// Marks `id` as running, durably, before it runs.
    pub fn mark_running(&self, id: &str, now_ms: u64) -> Result<(), LedgerError> {
        (|| -> Result<(), redb::Error> {
            let txn = self.db.begin_write()?;
            txn.open_table(RUNNING)?.insert(id, now_ms)?;
            txn.commit()?;
            Ok(())
        })()
        .map_err(failed("mark a command as running"))
    }

    /// Records `result` for its command id (the first result recorded for an id stays) and
    /// clears the id's running mark, in one transaction.
    pub fn record(&self, result: &up::CommandResult, now_ms: u64) -> Result<(), LedgerError> {
        (|| -> Result<(), redb::Error> {
            let txn = self.db.begin_write()?;
            {
                let mut results = txn.open_table(RESULTS)?;
                let mut order = txn.open_table(ORDER)?;
                insert_result(&mut results, &mut order, result, now_ms)?;
                txn.open_table(RUNNING)?
                    .remove(result.command_id.as_str())?;
            }
            txn.commit()?;
            Ok(())
        })()
        .map_err(failed("record a result"))
    }

    /// Drops the oldest results beyond the newest `keep`, and every result recorded before
    /// `now_ms - max_age_ms`; returns how many went.
    pub fn prune(&self, now_ms: u64, keep: u64, max_age_ms: u64) -> Result<u64, LedgerError> {
        let cutoff = now_ms.saturating_sub(max_age_ms);
        (|| -> Result<u64, redb::Error> {
            let txn = self.db.begin_write()?;
            let doomed = {
                let mut order = txn.open_table(ORDER)?;
                let mut results = txn.open_table(RESULTS)?;
                let total = order.len()?;
                let mut doomed: Vec<(u64, String)> = Vec::new();
                for item in order.iter()? {
                    let (seq, entry) = item?;
                    let (at, id) = entry.value();
                    if total - doomed.len() as u64 <= keep && at >= cutoff {
                        break;
                    }
                    doomed.push((seq.value(), id.to_string()));
                }
                for (seq, id) in &doomed {
                    order.remove(*seq)?;
                    results.remove(id.as_str())?;
                }
                doomed.len() as u64
            };
            if doomed == 0 {
                txn.abort()?;
            } else {
                txn.commit()?;
            }
            Ok(doomed)
        })()
        .map_err(failed("prune old results"))
    }
}

/// Creates the tables and turns every id still marked running into a recorded
/// [`interrupted`] result.
fn settle_interrupted(db: &Database, now_ms: u64) -> Result<(), redb::Error> {
    let txn = db.begin_write()?;
    // Opening a table in a write transaction creates it, so later reads always find it.
    {
        let mut running = txn.open_table(RUNNING)?;
        let mut results = txn.open_table(RESULTS)?;
        let mut order = txn.open_table(ORDER)?;
        let mut left: Vec<String> = Vec::new();
        for item in running.iter()? {
            let (id, _) = item?;
            left.push(id.value().to_string());
        }
        for id in &left {
            tracing::warn!(command.id = %id, "a command was under way when the agent stopped; it is answered as interrupted");
            insert_result(&mut results, &mut order, &interrupted(id), now_ms)?;
            running.remove(id.as_str())?;
        }
    }
    txn.commit()?;
    Ok(())
}

/// Inserts `result` unless its id already has one, with the next running number in `order`.
fn insert_result(
    results: &mut redb::Table<&str, &[u8]>,
    order: &mut redb::Table<u64, (u64, &str)>,
    result: &up::CommandResult,
    now_ms: u64,
) -> Result<(), redb::Error> {
    let id = result.command_id.as_str();
    if results.get(id)?.is_some() {
        return Ok(());
    }
    let next = order.last()?.map(|(k, _)| k.value() + 1).unwrap_or(1);
    results.insert(id, result.encode_to_vec().as_slice())?;
    order.insert(next, (now_ms, id))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db(dir: &tempfile::TempDir) -> Arc<Database> {
        Arc::new(Database::create(dir.path().join("l.redb")).unwrap())
    }

    fn ok(id: &str, json: &str) -> up::CommandResult {
        up::CommandResult {
            command_id: id.into(),
            ok: true,
            response_json: json.into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_recorded_result_is_found_and_the_first_one_stays() {
        let dir = tempfile::tempdir().unwrap();
        let l = Ledger::open(db(&dir), 1).unwrap();
        assert_eq!(l.recorded("a").unwrap(), None);
        l.mark_running("a", 1).unwrap();
        l.record(&ok("a", "first"), 2).unwrap();
        l.record(&ok("a", "second"), 3).unwrap();
        assert_eq!(l.recorded("a").unwrap(), Some(ok("a", "first")));
        assert_eq!(l.recorded("b").unwrap(), None);
    }

    #[test]
    fn results_and_running_marks_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l.redb");
        {
            let l = Ledger::open(Arc::new(Database::create(&path).unwrap()), 1).unwrap();
            l.mark_running("done", 1).unwrap();
            l.record(&ok("done", "{}"), 2).unwrap();
            // The agent dies while this one runs.
            l.mark_running("cut", 3).unwrap();
        }
        let l = Ledger::open(Arc::new(Database::create(&path).unwrap()), 10).unwrap();
        assert_eq!(l.recorded("done").unwrap(), Some(ok("done", "{}")));
        let r = l.recorded("cut").unwrap().unwrap();
        assert_eq!(r, interrupted("cut"));
        assert!(!r.ok);
        assert!(r.message.contains("restarted"), "{}", r.message);
        // A late result of the interrupted run does not replace the recorded answer.
        l.record(&ok("cut", "late"), 11).unwrap();
        assert_eq!(l.recorded("cut").unwrap(), Some(interrupted("cut")));
        // A second reopen finds nothing running any more.
        drop(l);
        let l = Ledger::open(Arc::new(Database::create(&path).unwrap()), 20).unwrap();
        assert_eq!(l.recorded("cut").unwrap(), Some(interrupted("cut")));
    }

    #[test]
    fn pruning_keeps_the_newest_and_drops_the_old() {
        let dir = tempfile::tempdir().unwrap();
        let l = Ledger::open(db(&dir), 0).unwrap();
        for i in 0..10u64 {
            l.record(&ok(&format!("c{i}"), ""), 100 + i).unwrap();
        }
        // By count: the newest 6 stay.
        assert_eq!(l.prune(110, 6, 1_000).unwrap(), 4);
        assert_eq!(l.recorded("c3").unwrap(), None);
        assert!(l.recorded("c4").unwrap().is_some());
        assert_eq!(l.prune(110, 6, 1_000).unwrap(), 0, "nothing more to drop");
        // By age: results recorded before 107 go.
        assert_eq!(l.prune(117, 100, 10).unwrap(), 3);
        assert_eq!(l.recorded("c6").unwrap(), None);
        assert!(l.recorded("c7").unwrap().is_some());
        // A pruned id can be recorded afresh and goes to the back of the line.
        l.record(&ok("c0", "again"), 200).unwrap();
        assert_eq!(l.prune(200, 1, 1_000).unwrap(), 3);
        assert_eq!(l.recorded("c0").unwrap(), Some(ok("c0", "again")));
    }
}
