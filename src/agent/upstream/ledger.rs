//! The command ledger: which control-plane commands this host has applied and what each one
//! answered, kept in the outbox's redb file so it survives restarts. It takes the database
//! from the outbox's [`SharedDb`] for each step: after a disk fault the outbox's writer opens
//! the file again, and until then a step fails with [`LedgerError::Unavailable`] (the book
//! refuses the command, which the control plane may resend). A step that meets a fault first
//! reports it. If the outbox file was corrupt and replaced, the ledger starts empty.
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

use crate::agent::dbfile::{self, SharedDb};

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
    /// The file is closed after a disk fault, until the outbox's writer opens it again.
    #[error("command ledger: the file is closed after a disk fault; it is being reopened")]
    Unavailable,
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
    file: Arc<SharedDb>,
}

impl Ledger {
    /// Creates the ledger's tables in `file` if needed and records every command left running
    /// by a previous run as [`interrupted`] (at `now_ms`).
    pub fn open(file: Arc<SharedDb>, now_ms: u64) -> Result<Self, LedgerError> {
        let ledger = Self { file };
        ledger.step("open the tables", |db| settle_interrupted(db, now_ms))?;
        Ok(ledger)
    }

    /// Runs one step on the current database; a fault it meets is reported, so that the file
    /// is opened again.
    fn step<T>(
        &self,
        step: &'static str,
        f: impl FnOnce(&Database) -> Result<T, redb::Error>,
    ) -> Result<T, LedgerError> {
        let db = self.file.get().ok_or(LedgerError::Unavailable)?;
        let result = match dbfile::guarded(|| f(&db)) {
            Ok(r) => r,
            Err(panic) => Err(redb::Error::Corrupted(panic)),
        };
        result.map_err(|source| {
            if dbfile::is_fault(&source) {
                self.file.report_fault();
            }
            LedgerError::Db { step, source }
        })
    }

    /// The recorded result of `id`, if any.
    pub fn recorded(&self, id: &str) -> Result<Option<up::CommandResult>, LedgerError> {
        let bytes = self.step("look up a command", |db| {
            let txn = db.begin_read()?;
            let results = match txn.open_table(RESULTS) {
                Ok(t) => t,
                // A new outbox file (the old one was corrupt) has no tables until a write.
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
                Err(e) => return Err(e.into()),
            };
            Ok(results.get(id)?.map(|v| v.value().to_vec()))
        })?;
        bytes
            .map(|b| up::CommandResult::decode(b.as_slice()))
            .transpose()
            .map_err(LedgerError::Decode)
    }

    /// Marks `id` as running, durably, before it runs.
    pub fn mark_running(&self, id: &str, now_ms: u64) -> Result<(), LedgerError> {
        self.step("mark a command as running", |db| {
            let txn = dbfile::write_txn(db)?;
            txn.open_table(RUNNING)?.insert(id, now_ms)?;
            txn.commit()?;
            Ok(())
        })
    }

    /// Records `result` for its command id (the first result recorded for an id stays) and
    /// clears the id's running mark, in one transaction.
    pub fn record(&self, result: &up::CommandResult, now_ms: u64) -> Result<(), LedgerError> {
        self.step("record a result", |db| {
            let txn = dbfile::write_txn(db)?;
            {
                let mut results = txn.open_table(RESULTS)?;
                let mut order = txn.open_table(ORDER)?;
                insert_result(&mut results, &mut order, result, now_ms)?;
                txn.open_table(RUNNING)?
                    .remove(result.command_id.as_str())?;
            }
            txn.commit()?;
            Ok(())
        })
    }

    /// Drops the oldest results beyond the newest `keep`, and every result recorded before
    /// `now_ms - max_age_ms`; returns how many went.
    pub fn prune(&self, now_ms: u64, keep: u64, max_age_ms: u64) -> Result<u64, LedgerError> {
        let cutoff = now_ms.saturating_sub(max_age_ms);
        self.step("prune old results", |db| {
            let txn = dbfile::write_txn(db)?;
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
        })
    }
}

/// Creates the tables and turns every id still marked running into a recorded
/// [`interrupted`] result.
fn settle_interrupted(db: &Database, now_ms: u64) -> Result<(), redb::Error> {
    let txn = dbfile::write_txn(db)?;
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

    fn db(dir: &tempfile::TempDir) -> Arc<SharedDb> {
        open(&dir.path().join("l.redb"))
    }

    fn open(path: &std::path::Path) -> Arc<SharedDb> {
        SharedDb::open(path, 1 << 20).unwrap()
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
            let l = Ledger::open(open(&path), 1).unwrap();
            l.mark_running("done", 1).unwrap();
            l.record(&ok("done", "{}"), 2).unwrap();
            // The agent dies while this one runs.
            l.mark_running("cut", 3).unwrap();
        }
        let l = Ledger::open(open(&path), 10).unwrap();
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
        let l = Ledger::open(open(&path), 20).unwrap();
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
