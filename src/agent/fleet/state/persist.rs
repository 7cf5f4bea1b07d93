//! What a restarted agent needs of the fleet: [`Fleet::snapshot`] turns the tables into
//! records (one key each, so the store rewrites only what changed) and [`Fleet::restore`]
//! builds a fleet from them. Times are stored as wall-clock times, since a monotonic instant
//! means nothing to the next process; both functions take the clocks as arguments.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::{Entry, Fleet, LaunchState, Phase, Proc, Slot, TerminateReason};
use crate::agent::config::{Config, ProcessSpec, RuntimeConfiguration};
use crate::agent::fleet::api::StopReason;
use crate::agent::fleet::clock::Clock;
use crate::agent::fleet::timers::Timer;
use crate::agent::process::Identity;
use crate::agent::session::{GameSession, GssStatus, PlayerSession, PlayerStatus};
use crate::agent::store::Records;

/// The record layout; a store written by a newer layout is refused, never guessed at.
pub const RECORD_VERSION: u32 = 1;

const META: &str = "meta";
const PROC: &str = "proc/";
const SESSION: &str = "gss/";
const PLAYER: &str = "player/";
const TOKEN: &str = "token/";
const ALIAS: &str = "alias/";
const QUEUE: &str = "queue/";
const PLACEMENT: &str = "placement/";

/// Why stored records could not be restored.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// A record does not parse.
    #[error("stored record {key} is unreadable: {source}")]
    Parse {
        /// Its key.
        key: String,
        /// What serde said.
        #[source]
        source: serde_json::Error,
    },
    /// Written by an agent with a newer record layout.
    #[error(
        "the state was written by a newer gse-agent (record version {found}, this one reads {RECORD_VERSION}); run that version or remove the state to start afresh"
    )]
    Version {
        /// The stored version.
        found: u32,
    },
    /// The state belongs to another fleet or instance than the config names.
    #[error(
        "the state in this data-dir belongs to fleet {fleet_id}, instance {instance_id}, whose games may still run: start the agent with that config (and stop it gracefully) or give this config another data-dir"
    )]
    OtherFleet {
        /// The stored fleet id.
        fleet_id: String,
        /// The stored instance id.
        instance_id: String,
    },
    /// The records contradict each other.
    #[error("stored state is inconsistent: {0}")]
    Inconsistent(String),
}

/// Fleet-wide facts.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Meta {
    version: u32,
    fleet_id: String,
    instance_id: String,
    /// The last serial drawn (launches, sessions and players share the counter).
    next_seq: u64,
    /// The runtime configuration of the config file the fleet was last started with: an
    /// update through the API survives a restart unless the file changed since.
    file_runtime: RuntimeConfiguration,
    entries: Vec<ProcessSpec>,
    /// Each entry's number in process ids (absent before compaction existed: the index).
    #[serde(default)]
    entry_numbers: Vec<usize>,
    /// The number the next entry gets (absent: the number of entries).
    #[serde(default)]
    next_entry_number: Option<usize>,
    max_activations: u32,
    activation_timeout: Duration,
    slots: Vec<SlotRecord>,
    draining: bool,
    reserved: bool,
    /// SetServerWeight's weight (absent before it existed).
    #[serde(default)]
    weight: u8,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct SlotRecord {
    entry: usize,
    replica: u32,
    generation: u64,
    failures: u32,
    retiring: bool,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct ProcRecord {
    serial: u64,
    slot: usize,
    id: String,
    identity: Identity,
    started: SystemTime,
    ready_at: Option<SystemTime>,
    deadline: Option<SystemTime>,
    phase: Phase,
    told_to_terminate: Option<TerminateReason>,
    stop: Option<StopReason>,
    client_port: u16,
    grpc_port: u16,
    healthy: bool,
    health_checks_passed: u64,
    session: Option<String>,
    log_paths: Vec<String>,
    custom: (i32, i32),
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct SessionRecord {
    order: u64,
    session: GameSession,
}

/// A process of the stored fleet that may still run: adopt it, or report it gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    /// Its launch serial.
    pub serial: u64,
    /// Its agent id.
    pub process_id: String,
    /// Which process it was.
    pub identity: Identity,
}

/// A record as JSON. The records are plain data with string keys and lossy paths, so this
/// cannot fail; should it ever, the record is left out (and logged) rather than the agent
/// stopped.
fn json<T: serde::Serialize>(key: &str, v: &T) -> Option<Vec<u8>> {
    serde_json::to_vec(v)
        .inspect_err(|e| tracing::error!(state.key = key, error = %e, "cannot encode a state record; not saved"))
        .ok()
}

fn parse<T: serde::de::DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, RestoreError> {
    serde_json::from_slice(bytes).map_err(|source| RestoreError::Parse {
        key: key.to_string(),
        source,
    })
}

/// The records whose keys start with `prefix`, in key order.
fn with_prefix<'a>(
    records: &'a Records,
    prefix: &'a str,
) -> impl Iterator<Item = (&'a String, &'a Vec<u8>)> {
    records
        .range(prefix.to_string()..)
        .take_while(move |(key, _)| key.starts_with(prefix))
}

/// One record, or `None` (logged) when it does not parse: one bad record costs what it
/// holds, never the start of the agent (the meta record alone is required).
fn parse_or_skip<T: serde::de::DeserializeOwned>(key: &str, bytes: &[u8]) -> Option<T> {
    parse(key, bytes)
        .inspect_err(|e| tracing::error!(error = %e, "skipping a stored record"))
        .ok()
}

/// The meta record: what the fleet is, its entries and slots, its settings.
fn meta_record(fleet: &Fleet) -> Meta {
    Meta {
        version: RECORD_VERSION,
        fleet_id: fleet.cfg.fleet_id.clone(),
        instance_id: fleet.cfg.instance_id.clone(),
        next_seq: fleet.next_seq,
        file_runtime: fleet.cfg.runtime.clone(),
        entries: fleet.entries.iter().map(|e| e.spec.clone()).collect(),
        entry_numbers: fleet.entries.iter().map(|e| e.number).collect(),
        next_entry_number: Some(fleet.next_entry_number),
        max_activations: fleet.max_activations,
        activation_timeout: fleet.activation_timeout,
        slots: fleet
            .slots
            .iter()
            .map(|s| SlotRecord {
                entry: s.entry,
                replica: s.replica,
                generation: s.generation,
                failures: s.failures,
                retiring: s.retiring,
            })
            .collect(),
        draining: fleet.draining,
        reserved: fleet.reserved,
        weight: fleet.weight,
    }
}

impl Fleet {
    /// The fleet as records: one key per process, live session, live player session and
    /// idempotency token of a live session, so a save costs what runs now, not the history.
    pub fn snapshot(&self, now: Instant, wall: SystemTime) -> Records {
        let clocks = Clock { now, wall };
        let mut out = Records::new();
        let mut put = |key: String, bytes: Option<Vec<u8>>| {
            if let Some(bytes) = bytes {
                out.insert(key, bytes);
            }
        };
        put(META.into(), json(META, &meta_record(self)));
        for p in self.procs.values() {
            let r = proc_record(p, clocks);
            let key = format!("{PROC}{:020}", p.serial);
            let bytes = json(&key, &r);
            put(key, bytes);
        }
        // Live sessions and their live players only: finished ones are history (the events
        // keep it), and leaving them out bounds every save by what runs now.
        let live = |id: &str| {
            self.sessions
                .get(id)
                .is_some_and(|(_, s)| !s.status.is_final())
        };
        for (id, (order, session)) in &self.sessions {
            if session.status.is_final() {
                continue;
            }
            let r = SessionRecord {
                order: *order,
                session: session.clone(),
            };
            let key = format!("{SESSION}{id}");
            let bytes = json(&key, &r);
            put(key, bytes);
        }
        for (gss_id, ns) in &self.session_players {
            if !live(gss_id) {
                continue;
            }
            for n in ns {
                if let Some(player) = self.players.get(n)
                    && player.status.holds_slot()
                {
                    let key = format!("{PLAYER}{n:020}");
                    let bytes = json(&key, player);
                    put(key, bytes);
                }
            }
        }
        for (token, id) in &self.idempotency {
            if live(id) {
                let key = format!("{TOKEN}{token}");
                let bytes = json(&key, id);
                put(key, bytes);
            }
        }
        for (id, alias) in &self.aliases {
            let key = format!("{ALIAS}{id}");
            let bytes = json(&key, alias);
            put(key, bytes);
        }
        for (name, queue) in &self.queues {
            let key = format!("{QUEUE}{name}");
            let bytes = json(&key, queue);
            put(key, bytes);
        }
        // Placements in the order they started (the key keeps it, and stays the same).
        for id in &self.placement_order {
            if let Some(p) = self.placements.get(id) {
                let started = p
                    .start
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis())
                    .unwrap_or(0);
                let key = format!("{PLACEMENT}{started:015}/{id}");
                let bytes = json(&key, p);
                put(key, bytes);
            }
        }
        out
    }

    /// A fleet rebuilt from `records` (see [`Fleet::snapshot`]) under `cfg`, plus the processes
    /// it recorded as running, to adopt or report gone. `None` when nothing was stored. Timers
    /// are re-armed from the stored deadlines; a ready process is health-checked at once. If
    /// the config file's runtime configuration changed since the records were written, it is
    /// applied as a runtime update (old processes retire as their sessions end).
    pub fn restore(
        cfg: Arc<Config>,
        records: &Records,
        now: Instant,
        wall: SystemTime,
    ) -> Result<Option<(Fleet, Vec<Recorded>)>, RestoreError> {
        let clocks = Clock { now, wall };
        let Some(meta) = records.get(META) else {
            return Ok(None);
        };
        let meta: Meta = parse(META, meta)?;
        if meta.version > RECORD_VERSION {
            return Err(RestoreError::Version {
                found: meta.version,
            });
        }
        if (meta.fleet_id.as_str(), meta.instance_id.as_str())
            != (cfg.fleet_id.as_str(), cfg.instance_id.as_str())
        {
            return Err(RestoreError::OtherFleet {
                fleet_id: meta.fleet_id,
                instance_id: meta.instance_id,
            });
        }
        let file_runtime_changed = cfg.runtime != meta.file_runtime;
        let mut fleet = Fleet::from_meta(cfg, meta, clocks)?;
        let recorded = fleet.restore_processes(records, clocks)?;
        fleet.restore_sessions(records, clocks);
        fleet.restore_players(records, clocks)?;
        fleet.restore_api_resources(records, clocks);
        // Applied by `start`, once the recorded processes are adopted or known to be gone.
        fleet.file_runtime_changed = file_runtime_changed;
        Ok(Some((fleet, recorded)))
    }

    /// The fleet's entries, slots and settings as the meta record has them.
    fn from_meta(cfg: Arc<Config>, meta: Meta, clocks: Clock) -> Result<Fleet, RestoreError> {
        let mut fleet = Fleet::new(cfg, clocks);
        let entries = meta.entries.len();
        fleet.entries = meta
            .entries
            .into_iter()
            .enumerate()
            .map(|(i, spec)| Entry {
                number: meta.entry_numbers.get(i).copied().unwrap_or(i),
                spec,
                ..Entry::default()
            })
            .collect();
        fleet.next_entry_number = meta.next_entry_number.unwrap_or(entries).max(
            fleet
                .entries
                .iter()
                .map(|e| e.number + 1)
                .max()
                .unwrap_or(0),
        );
        fleet.slots = meta
            .slots
            .into_iter()
            .map(|s| Slot {
                entry: s.entry,
                replica: s.replica,
                generation: s.generation,
                serial: None,
                launch: LaunchState::Idle,
                failures: s.failures,
                retiring: s.retiring,
                last_exit: None,
            })
            .collect();
        if let Some(bad) = fleet.slots.iter().find(|s| s.entry >= fleet.entries.len()) {
            return Err(RestoreError::Inconsistent(format!(
                "a slot names entry {} of {}",
                bad.entry,
                fleet.entries.len()
            )));
        }
        fleet.next_seq = meta.next_seq;
        fleet.max_activations = meta.max_activations;
        fleet.activation_timeout = meta.activation_timeout;
        fleet.draining = meta.draining;
        fleet.reserved = meta.reserved;
        fleet.weight = meta.weight;

        Ok(fleet)
    }

    /// The recorded processes, their timers re-armed; they are to adopt or report gone.
    fn restore_processes(
        &mut self,
        records: &Records,
        clocks: Clock,
    ) -> Result<Vec<Recorded>, RestoreError> {
        let now = clocks.now;
        let mut recorded = Vec::new();
        for (key, bytes) in with_prefix(records, PROC) {
            let Some(r) = parse_or_skip::<ProcRecord>(key, bytes) else {
                continue; // its process carries the tag: the start's stray sweep stops it
            };
            let Some(slot) = self.slots.get_mut(r.slot) else {
                return Err(RestoreError::Inconsistent(format!(
                    "{key} names slot {} of {}",
                    r.slot,
                    self.slots.len()
                )));
            };
            slot.serial = Some(r.serial);
            self.next_seq = self.next_seq.max(r.serial);
            let deadline = r.deadline.map(|t| clocks.to_instant(t));
            let serial = r.serial;
            match (r.phase, deadline) {
                (Phase::Launching, Some(at)) => self.timers.add(at, Timer::ReadyTimeout { serial }),
                (Phase::Active, _) => self.timers.add(now, Timer::HealthCheck { serial }),
                (Phase::Terminating(_), Some(at)) => {
                    self.timers.add(at, Timer::TerminateDeadline { serial })
                }
                (Phase::Ending, Some(at)) => self.timers.add(at, Timer::ExitTimeout { serial }),
                _ => {}
            }
            recorded.push(Recorded {
                serial,
                process_id: r.id.clone(),
                identity: r.identity.clone(),
            });
            self.by_pid.insert(r.identity.pid, serial);
            self.procs.insert(
                serial,
                Proc {
                    id: r.id,
                    identity: r.identity,
                    deadline,
                    serial,
                    slot: r.slot,
                    started: clocks.to_instant(r.started),
                    ready_at: r.ready_at.map(|t| clocks.to_instant(t)),
                    phase: r.phase,
                    client_port: r.client_port,
                    grpc_port: r.grpc_port,
                    healthy: r.healthy,
                    health_failures: 0,
                    health_checks_passed: r.health_checks_passed,
                    health_in_flight: false,
                    session: r.session,
                    log_paths: r.log_paths,
                    custom: r.custom,
                    told_to_terminate: r.told_to_terminate,
                    stop: r.stop,
                    // Crash rehearsal's faults are not saved: a restart ends them.
                    faults: super::chaos::ProcFaults::default(),
                },
            );
        }

        Ok(recorded)
    }

    /// The sessions in their order, finished ones kept for DescribeGameServerSessions.
    fn restore_sessions(&mut self, records: &Records, clocks: Clock) {
        let mut finished: Vec<(u64, String)> = Vec::new();
        for (key, bytes) in with_prefix(records, SESSION) {
            let Some(r) = parse_or_skip::<SessionRecord>(key, bytes) else {
                continue;
            };
            let id = r.session.id.clone();
            if r.session.status.is_final() {
                finished.push((r.order, id.clone()));
            } else if r.session.status == GssStatus::Activating {
                let at = clocks.to_instant(r.session.creation_time) + self.activation_timeout;
                self.timers
                    .add(at, Timer::ActivationTimeout { gss_id: id.clone() });
            }
            self.next_seq = self.next_seq.max(r.order);
            self.session_order.insert(r.order, id.clone());
            self.sessions.insert(id, (r.order, r.session));
        }
        finished.sort();
        self.finished_sessions = finished
            .into_iter()
            .map(|(_, id)| id)
            .collect::<VecDeque<_>>();
    }

    /// The player sessions, a reservation's timer re-armed.
    fn restore_players(&mut self, records: &Records, clocks: Clock) -> Result<(), RestoreError> {
        let reservation = self.cfg.timeouts.player_reservation.get();
        for (key, bytes) in with_prefix(records, PLAYER) {
            let n: u64 = key[PLAYER.len()..]
                .parse()
                .map_err(|_| RestoreError::Inconsistent(format!("{key}: not a player key")))?;
            let Some(player) = parse_or_skip::<PlayerSession>(key, bytes) else {
                continue;
            };
            if player.status == PlayerStatus::Reserved {
                let at = clocks.to_instant(player.creation_time) + reservation;
                self.timers.add(
                    at,
                    Timer::Reservation {
                        player_session_id: player.id.clone(),
                    },
                );
            }
            self.next_seq = self.next_seq.max(n);
            self.player_index.insert(player.id.clone(), n);
            self.session_players
                .entry(player.gss_id.clone())
                .or_default()
                .push(n);
            self.players.insert(n, player);
        }
        Ok(())
    }

    /// Idempotency tokens, aliases, queues and placements (a pending one's timer re-armed).
    fn restore_api_resources(&mut self, records: &Records, clocks: Clock) {
        let mut tokens = HashMap::new();
        for (key, bytes) in with_prefix(records, TOKEN) {
            if let Some(id) = parse_or_skip::<String>(key, bytes) {
                tokens.insert(key[TOKEN.len()..].to_string(), id);
            }
        }
        self.idempotency = tokens;
        for (key, bytes) in with_prefix(records, ALIAS) {
            if let Some(alias) = parse_or_skip::<crate::api::alias::Alias>(key, bytes) {
                self.aliases.insert(alias.id.clone(), alias);
            }
        }
        for (key, bytes) in with_prefix(records, QUEUE) {
            if let Some(queue) = parse_or_skip::<crate::api::queue::Queue>(key, bytes) {
                self.queues.insert(queue.name.clone(), queue);
            }
        }
        for (key, bytes) in with_prefix(records, PLACEMENT) {
            if let Some(p) = parse_or_skip::<crate::api::placement::Placement>(key, bytes) {
                let id = p.request.id.clone();
                if p.status == crate::api::placement::Status::Pending {
                    self.timers.add(
                        clocks.to_instant(p.deadline),
                        Timer::PlacementTimeout { id: id.clone() },
                    );
                }
                self.placement_order.push_back(id.clone());
                if p.status == crate::api::placement::Status::Pending {
                    self.pending_placements.push_back(id.clone());
                }
                self.placements.insert(id, p);
            }
        }
    }
}

/// A process's record, its times on the wall clock.
fn proc_record(p: &Proc, clocks: Clock) -> ProcRecord {
    ProcRecord {
        serial: p.serial,
        slot: p.slot,
        id: p.id.clone(),
        identity: p.identity.clone(),
        started: clocks.to_wall(p.started),
        ready_at: p.ready_at.map(|t| clocks.to_wall(t)),
        deadline: p.deadline.map(|t| clocks.to_wall(t)),
        phase: p.phase,
        told_to_terminate: p.told_to_terminate,
        stop: p.stop,
        client_port: p.client_port,
        grpc_port: p.grpc_port,
        healthy: p.healthy,
        health_checks_passed: p.health_checks_passed,
        session: p.session.clone(),
        log_paths: p.log_paths.clone(),
        custom: p.custom,
    }
}
