//! The command book: applies each control-plane command once per id, whichever connection it
//! arrives on, and routes every result to the connection that is current when it is ready.
//!
//! Check and claim are one step: [`CommandBook::begin`] looks the id up and, if nobody has it,
//! claims it (in memory, under one lock shared by every connection's worker) before anything
//! runs. Then the claim is made durable in the [`Ledger`] (`command_running`), and only then
//! does the command run. A duplicate that arrives while the id runs is not run again: it is
//! counted, and when the run ends [`CommandBook::finish`] records the result in the ledger
//! *before* releasing the claim and sends one result per copy that arrived. A duplicate of a
//! recorded id gets the recorded result at once, also after a restart; an id that was running
//! when the agent died answers with [`super::ledger::interrupted`] (never run twice).
//!
//! Results go to the connection attached now ([`CommandBook::attach`]); with none, or if it
//! dies, they wait as unsent and go first on the next one. A command with an empty id cannot be
//! deduplicated: it runs every time and is not recorded.
//!
//! [`CommandBook::begin`] and [`CommandBook::finish`] touch the disk: call them from a blocking
//! thread (`spawn_blocking`). The book's lock is never held across disk I/O, so attaching and
//! detaching connections from the async workers never waits on the disk.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::mpsc;

use super::ledger::Ledger;
use crate::upstream_proto as up;

/// Results kept in memory when the ledger could not record them (a failing disk), so that an
/// id is still not applied twice while the agent runs.
const UNRECORDED_KEPT: usize = 10_000;

/// What [`CommandBook::begin`] decided.
#[derive(Debug, PartialEq, Eq)]
pub enum Begin {
    /// The id is claimed: run the command, then call [`CommandBook::finish`].
    Run,
    /// The id is running already; that run answers for this copy too.
    Waiting,
    /// The book answered: the recorded result, or a refusal when the ledger failed.
    Answered,
}

enum Claim {
    /// Running; `copies` more arrived since.
    Running { copies: usize },
    /// Finished, but the ledger could not record it.
    Unrecorded(up::CommandResult),
}

#[derive(Default)]
struct Inner {
    claims: HashMap<String, Claim>,
    /// Ids of [`Claim::Unrecorded`], oldest first, to bound them.
    unrecorded: VecDeque<String>,
    /// Results waiting for a connection, oldest first.
    unsent: Vec<up::CommandResult>,
    /// Where results go now.
    current: Option<mpsc::UnboundedSender<up::CommandResult>>,
}

impl Inner {
    fn deliver(&mut self, r: up::CommandResult) {
        let r = match &self.current {
            Some(tx) => match tx.send(r) {
                Ok(()) => return,
                Err(unsent) => unsent.0,
            },
            None => r,
        };
        self.unsent.push(r);
    }
}

/// The book; one per relay, shared by every connection. Cheap to clone.
#[derive(Clone)]
pub struct CommandBook {
    ledger: Ledger,
    inner: Arc<Mutex<Inner>>,
}

impl CommandBook {
    /// A book over `ledger`.
    pub fn new(ledger: Ledger) -> Self {
        Self {
            ledger,
            inner: Arc::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Decides what to do with command `id`, which just arrived (at `now_ms`); claims it if
    /// it is new, and marks it running in the ledger before saying [`Begin::Run`].
    pub fn begin(&self, id: &str, now_ms: u64) -> Begin {
        if id.is_empty() {
            return Begin::Run;
        }
        {
            let mut inner = self.lock();
            match inner.claims.get_mut(id) {
                Some(Claim::Running { copies }) => {
                    *copies += 1;
                    tracing::info!(command.id = %id, "command already running; its result will answer this copy too");
                    return Begin::Waiting;
                }
                Some(Claim::Unrecorded(r)) => {
                    let r = r.clone();
                    inner.deliver(r);
                    return Begin::Answered;
                }
                None => {}
            }
            // Claimed before the disk is read: the lock is never held across I/O (attach and
            // detach take it on the async workers), and copies arriving meanwhile wait.
            inner
                .claims
                .insert(id.to_string(), Claim::Running { copies: 0 });
        }
        let answer = match self.ledger.recorded(id) {
            Ok(None) => None,
            Ok(Some(r)) => {
                tracing::info!(command.id = %id, "command already applied; sending its recorded result");
                Some(r)
            }
            Err(e) => {
                tracing::error!(command.id = %id, error = %e, "cannot tell whether a command already ran; refusing it");
                Some(refusal(id, "cannot read the agent's command record"))
            }
        };
        if let Some(r) = answer {
            self.release(id, r);
            return Begin::Answered;
        }
        // The claim keeps every other copy out while the mark is written.
        if let Err(e) = self.ledger.mark_running(id, now_ms) {
            tracing::error!(command.id = %id, error = %e, "cannot mark a command as running; refusing it");
            self.release(id, refusal(id, "cannot write the agent's command record"));
            return Begin::Answered;
        }
        Begin::Run
    }

    /// Drops the claim on `id` without a run and answers it with `r`, once for the copy that
    /// claimed it and once for every copy that arrived meanwhile.
    fn release(&self, id: &str, r: up::CommandResult) {
        let mut inner = self.lock();
        let copies = match inner.claims.remove(id) {
            Some(Claim::Running { copies }) => copies,
            _ => 0,
        };
        for _ in 0..=copies {
            inner.deliver(r.clone());
        }
    }

    /// Records the result of a command [`CommandBook::begin`] said to run (at `now_ms`), then
    /// releases its claim and sends it once for every copy that arrived.
    pub fn finish(&self, result: up::CommandResult, now_ms: u64) {
        let id = result.command_id.clone();
        if id.is_empty() {
            self.lock().deliver(result);
            return;
        }
        // Recorded before the claim goes: a copy arriving in between waits, one arriving after
        // finds the record.
        let recorded = match self.ledger.record(&result, now_ms) {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(command.id = %id, error = %e, "cannot record a command result; it is kept in memory only");
                false
            }
        };
        let mut inner = self.lock();
        let copies = match inner.claims.remove(&id) {
            Some(Claim::Running { copies }) => copies,
            _ => 0,
        };
        if !recorded {
            inner
                .claims
                .insert(id.clone(), Claim::Unrecorded(result.clone()));
            inner.unrecorded.push_back(id);
            while inner.unrecorded.len() > UNRECORDED_KEPT {
                if let Some(old) = inner.unrecorded.pop_front() {
                    inner.claims.remove(&old);
                }
            }
        }
        for _ in 0..copies {
            inner.deliver(result.clone());
        }
        inner.deliver(result);
    }

    /// Makes `tx` the connection results go to, after sending it every result still unsent.
    pub fn attach(&self, tx: mpsc::UnboundedSender<up::CommandResult>) {
        let mut inner = self.lock();
        let unsent = std::mem::take(&mut inner.unsent);
        inner.current = Some(tx);
        for r in unsent {
            inner.deliver(r);
        }
    }

    /// Detaches the connection attached as `tx` (if it is still the current one) and keeps
    /// whatever it had not sent for the next connection: first the results in `undelivered`,
    /// then those still in `rx`, its receiving end.
    pub fn detach(
        &self,
        tx: &mpsc::UnboundedSender<up::CommandResult>,
        rx: &mut mpsc::UnboundedReceiver<up::CommandResult>,
        undelivered: Vec<up::CommandResult>,
    ) {
        let mut inner = self.lock();
        if inner
            .current
            .as_ref()
            .is_some_and(|current| current.same_channel(tx))
        {
            inner.current = None;
        }
        rx.close();
        inner.unsent.extend(undelivered);
        while let Ok(r) = rx.try_recv() {
            inner.unsent.push(r);
        }
    }
}

/// A refusal that leaves the id unclaimed: nothing ran, the control plane may resend it.
fn refusal(id: &str, why: &str) -> up::CommandResult {
    super::failure(
        id,
        super::INTERNAL_ERROR,
        format!("{why}; the command was not run: resend it"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn book(path: &std::path::Path) -> CommandBook {
        let file = crate::agent::dbfile::SharedDb::open(path, 1 << 20).unwrap();
        CommandBook::new(Ledger::open(file, 0).unwrap())
    }

    fn result(id: &str, json: &str) -> up::CommandResult {
        up::CommandResult {
            command_id: id.into(),
            ok: true,
            response_json: json.into(),
            ..Default::default()
        }
    }

    fn drain(rx: &mut mpsc::UnboundedReceiver<up::CommandResult>) -> Vec<up::CommandResult> {
        std::iter::from_fn(|| rx.try_recv().ok()).collect()
    }

    #[test]
    fn a_copy_that_arrives_while_running_waits_for_the_one_run() {
        let dir = tempfile::tempdir().unwrap();
        let b = book(&dir.path().join("b.redb"));
        let (tx, mut rx) = mpsc::unbounded_channel();
        b.attach(tx);
        assert_eq!(b.begin("c", 1), Begin::Run);
        assert_eq!(b.begin("c", 2), Begin::Waiting);
        assert!(
            drain(&mut rx).is_empty(),
            "nothing is answered before the run ends"
        );
        b.finish(result("c", "one"), 3);
        assert_eq!(drain(&mut rx), [result("c", "one"), result("c", "one")]);
        // Later copies get the recorded result at once.
        assert_eq!(b.begin("c", 4), Begin::Answered);
        assert_eq!(drain(&mut rx), [result("c", "one")]);
    }

    #[test]
    fn results_go_to_the_connection_current_when_they_are_ready() {
        let dir = tempfile::tempdir().unwrap();
        let b = book(&dir.path().join("b.redb"));
        let (tx1, mut rx1) = mpsc::unbounded_channel();
        b.attach(tx1.clone());
        assert_eq!(b.begin("slow", 1), Begin::Run);
        // The first connection dies with one result it could not send.
        b.detach(&tx1, &mut rx1, vec![result("old", "")]);
        let (tx2, mut rx2) = mpsc::unbounded_channel();
        b.attach(tx2);
        assert_eq!(
            drain(&mut rx2),
            [result("old", "")],
            "unsent results go first"
        );
        assert_eq!(b.begin("slow", 2), Begin::Waiting);
        b.finish(result("slow", "done"), 3);
        assert_eq!(
            drain(&mut rx2),
            [result("slow", "done"), result("slow", "done")]
        );
        // A connection detached late (another is current) does not steal the current one.
        b.detach(&tx1, &mut rx1, vec![]);
        b.finish(result("", "no id"), 4);
        assert_eq!(drain(&mut rx2), [result("", "no id")]);
    }

    #[test]
    fn results_without_a_connection_wait_for_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let b = book(&dir.path().join("b.redb"));
        assert_eq!(b.begin("c", 1), Begin::Run);
        b.finish(result("c", ""), 2);
        let (tx, mut rx) = mpsc::unbounded_channel();
        b.attach(tx);
        assert_eq!(drain(&mut rx), [result("c", "")]);
    }

    #[test]
    fn a_restart_answers_from_the_record_and_refuses_to_rerun_the_interrupted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.redb");
        {
            let b = book(&path);
            assert_eq!(b.begin("done", 1), Begin::Run);
            b.finish(result("done", "{}"), 2);
            // The agent dies while this one runs.
            assert_eq!(b.begin("cut", 3), Begin::Run);
        }
        let b = book(&path);
        let (tx, mut rx) = mpsc::unbounded_channel();
        b.attach(tx);
        assert_eq!(b.begin("done", 4), Begin::Answered);
        assert_eq!(b.begin("cut", 5), Begin::Answered);
        let got = drain(&mut rx);
        assert_eq!(got[0], result("done", "{}"));
        assert_eq!(got[1], super::super::ledger::interrupted("cut"));
    }

    #[test]
    fn empty_ids_run_every_time() {
        let dir = tempfile::tempdir().unwrap();
        let b = book(&dir.path().join("b.redb"));
        assert_eq!(b.begin("", 1), Begin::Run);
        assert_eq!(b.begin("", 1), Begin::Run);
    }
}
