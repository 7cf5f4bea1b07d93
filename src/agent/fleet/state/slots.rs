//! Slots: launches, backoff and the crash-loop breaker, runtime configuration updates, drain.

use std::time::Duration;

use tokio::time::Instant;

use super::{Entry, Fleet, LOG_GENERATIONS_KEPT, LaunchState, Slot, TerminateReason};
use crate::agent::config::RuntimeConfiguration;
use crate::agent::event::{Change, Event, EventCode};
use crate::agent::fleet::api::Effect;
use crate::agent::fleet::api::LastExit;
use crate::agent::fleet::restart::backoff;
use crate::agent::fleet::timers::Timer;

impl Fleet {
    /// Adds the entries of `runtime` and their slots (not launched).
    pub(super) fn add_entries(&mut self, runtime: &RuntimeConfiguration) -> Vec<usize> {
        let mut added = Vec::new();
        for spec in &runtime.server_processes {
            let entry = self.entries.len();
            self.entries.push(Entry {
                number: self.next_entry_number,
                spec: spec.clone(),
                ..Entry::default()
            });
            self.next_entry_number += 1;
            for replica in 0..spec.concurrent_executions {
                added.push(self.slots.len());
                self.slots.push(Slot {
                    entry,
                    replica,
                    generation: 0,
                    serial: None,
                    launch: LaunchState::Idle,
                    failures: 0,
                    retiring: false,
                    last_exit: None,
                });
            }
        }
        self.max_activations = runtime.max_concurrent_activations;
        self.activation_timeout = runtime.activation_timeout;
        added
    }

    /// The runtime configuration in force (the entries of non-retiring slots).
    pub(super) fn current_runtime(&self) -> RuntimeConfiguration {
        let mut entries: Vec<usize> = self
            .slots
            .iter()
            .filter(|s| !s.retiring)
            .map(|s| s.entry)
            .collect();
        entries.dedup(); // slots of one entry are contiguous
        let server_processes = entries
            .into_iter()
            .map(|e| self.entries[e].spec.clone())
            .collect();
        RuntimeConfiguration {
            server_processes,
            max_concurrent_activations: self.max_activations,
            activation_timeout: self.activation_timeout,
        }
    }

    /// UpdateRuntimeConfiguration (GSE's rule): new processes start under the new
    /// configuration now; old ones without a game server session are told to terminate; old
    /// ones with a session keep running until it ends and are then retired. The total never
    /// exceeds the new one by more than the retiring processes.
    pub(super) fn update_runtime(&mut self, runtime: RuntimeConfiguration, now: Instant) {
        self.compact_slots();
        let old: Vec<usize> = (0..self.slots.len())
            .filter(|s| !self.slots[*s].retiring)
            .collect();
        for slot in old {
            self.slots[slot].retiring = true;
            if let Some(serial) = self.slots[slot].serial
                && self.live_session_policy(serial).is_none()
            {
                self.terminate(serial, TerminateReason::Retired, now);
            }
        }
        let total = runtime
            .server_processes
            .iter()
            .map(|p| p.concurrent_executions)
            .sum::<u32>();
        self.emit(Event::new(
            EventCode::RuntimeConfigurationUpdated,
            format!("runtime configuration updated: {total} process(es); old processes retire as their sessions end"),
        ));
        for slot in self.add_entries(&runtime) {
            self.launch(slot);
        }
    }

    /// Drops the slots of older runtime configurations whose process has ended, and the
    /// entries no slot uses, renumbering the rest (in processes, timers and breakers): runtime
    /// updates and redeploys add slots, and the table must not grow with their number. The
    /// slots kept are the current ones and retiring ones whose process still runs. Skipped
    /// while a launch is in flight, whose answer names its slot by index.
    pub(super) fn compact_slots(&mut self) {
        if self.slots.iter().any(|s| s.launch == LaunchState::InFlight) {
            return;
        }
        let gone = |s: &Slot| s.retiring && s.serial.is_none();
        if !self.slots.iter().any(gone) {
            return;
        }
        let mut slot_map = vec![None; self.slots.len()];
        let mut entry_map = vec![None; self.entries.len()];
        let (mut slots, mut entries) = (0, 0);
        for (i, s) in self.slots.iter().enumerate() {
            if gone(s) {
                continue;
            }
            slot_map[i] = Some(slots);
            slots += 1;
            if entry_map[s.entry].is_none() {
                entry_map[s.entry] = Some(entries);
                entries += 1;
            }
        }
        // Slots of one entry are contiguous and entries keep their order, so the kept
        // entries are numbered in the order their slots appear.
        self.slots = std::mem::take(&mut self.slots)
            .into_iter()
            .filter(|s| !gone(s))
            .map(|mut s| {
                s.entry = entry_map[s.entry].expect("a kept slot's entry is kept");
                s
            })
            .collect();
        self.entries = std::mem::take(&mut self.entries)
            .into_iter()
            .enumerate()
            .filter(|(i, _)| entry_map[*i].is_some())
            .map(|(_, e)| e)
            .collect();
        for p in self.procs.values_mut() {
            p.slot = slot_map[p.slot].expect("a live process's slot is kept");
        }
        for e in &mut self.entries {
            e.breaker.renumber(|s| slot_map[s]);
        }
        self.timers.remap(|t| match t {
            Timer::Launch { slot } => slot_map[slot].map(|slot| Timer::Launch { slot }),
            Timer::BreakerEnd { entry } => {
                entry_map[entry].map(|entry| Timer::BreakerEnd { entry })
            }
            other => Some(other),
        });
    }

    /// What every input leaves done: retiring processes whose sessions ended are retired,
    /// and pending placements move on.
    pub(super) fn after_input(&mut self, now: Instant) {
        self.retire_pending(now);
        self.advance_placements(now);
    }

    /// Retires the processes whose sessions ended while their slot was retiring.
    fn retire_pending(&mut self, now: Instant) {
        for serial in std::mem::take(&mut self.retire_later) {
            self.terminate(serial, TerminateReason::Retired, now);
        }
    }

    pub(super) fn launch(&mut self, slot: usize) {
        let serial = self.seq();
        let number = self.entries[self.slots[slot].entry].number;
        let s = &mut self.slots[slot];
        s.generation += 1;
        s.launch = LaunchState::InFlight;
        let id = |generation| format!("proc-{number}-{}-{generation}", s.replica);
        let process_id = id(s.generation);
        let retire_logs_of = s
            .generation
            .checked_sub(LOG_GENERATIONS_KEPT)
            .filter(|g| *g > 0)
            .map(id);
        self.effects.push(Effect::Launch {
            slot,
            serial,
            process_id,
            retire_logs_of,
        });
    }

    /// The launch of `slot` failed; `invalid_path` when the LaunchPath is missing or not
    /// executable. Either way the failure is counted on its entry and the slot is retried with
    /// the restart backoff (a deploy may bring the file), through the crash-loop breaker; an
    /// invalid path is reported once per entry until a launch succeeds.
    pub fn spawn_failed(
        &mut self,
        slot: usize,
        process_id: String,
        invalid_path: bool,
        message: String,
        now: Instant,
    ) {
        self.slots[slot].launch = LaunchState::Idle;
        let entry = self.slots[slot].entry;
        let code = if invalid_path {
            EventCode::ServerProcessInvalidPath
        } else {
            EventCode::ServerProcessPullFailed
        };
        let e = &mut self.entries[entry];
        e.launch_failures += 1;
        e.last_launch_error = Some(message.clone());
        let repeat = invalid_path && e.invalid_path_reported;
        if invalid_path {
            e.invalid_path_reported = true;
        }
        self.slots[slot].last_exit = Some(LastExit {
            process_id: process_id.clone(),
            event_code: code.as_str(),
            reason: message.clone(),
            at: self.clock.to_wall(now),
        });
        if !repeat {
            self.emit(Event::new(code, message).process(&process_id, None));
        } else {
            // Not an event (one per entry is enough), but the counts changed.
            self.changed(Change::Processes);
        }
        self.after_failure(slot, now, Duration::ZERO);
    }

    /// Counts a failure of `slot` toward its backoff and its entry's crash-loop breaker (which
    /// trips only on slots failing repeatedly, see `Breaker`) and
    /// schedules its relaunch.
    pub(super) fn after_failure(&mut self, slot: usize, now: Instant, ran: Duration) {
        let policy = &self.cfg.restart;
        let s = &mut self.slots[slot];
        if ran >= policy.reset_after.get() {
            s.failures = 0;
        }
        s.failures = s.failures.saturating_add(1);
        let delay = backoff(policy, s.failures);
        let entry = s.entry;
        if let Some(trip) = self.entries[entry].breaker.record(policy, slot, now) {
            let until = self.cfg.restart.crash_loop_cool_down.get();
            let launch_path = self.entries[entry].spec.launch_path.clone();
            self.emit(Event::new(
                EventCode::ServerProcessCrashLoop,
                format!(
                    "{launch_path}: {} failures of {} repeatedly failing slot(s) within {}; launches paused for {}",
                    trip.failures,
                    trip.slots,
                    humantime::format_duration(self.cfg.restart.crash_loop_window.get()),
                    humantime::format_duration(until)
                ),
            ));
            self.timers.add(now + until, Timer::BreakerEnd { entry });
        }
        self.schedule_launch(slot, now, delay);
    }

    pub(super) fn schedule_launch(&mut self, slot: usize, now: Instant, delay: Duration) {
        if self.shutting_down || self.draining || self.slots[slot].retiring {
            self.slots[slot].launch = LaunchState::Idle;
            return;
        }
        let entry = self.slots[slot].entry;
        let mut at = now + delay;
        if let Some(until) = self.entries[entry].breaker.paused_until {
            at = at.max(until);
        }
        if at <= now {
            self.launch(slot);
        } else {
            self.slots[slot].launch = LaunchState::Scheduled;
            self.timers.add(at, Timer::Launch { slot });
        }
    }

    /// Scale-in under the protection policy, as GSE did it: no new sessions, every process is
    /// told to terminate (those hosting a session get the protection deadline), nothing is
    /// relaunched.
    pub(super) fn drain(&mut self, now: Instant) {
        self.emit(Event::new(
            EventCode::InstanceDraining,
            format!(
                "draining {} process(es) under {}",
                self.procs.len(),
                self.cfg.protection.policy.as_str()
            ),
        ));
        for serial in self.serials() {
            self.terminate(serial, TerminateReason::Requested, now);
        }
    }

    /// Ends a drain: every current slot without a process launches again.
    pub(super) fn undrain(&mut self) {
        self.emit(Event::new(
            EventCode::InstanceUndrained,
            "no longer draining",
        ));
        for slot in 0..self.slots.len() {
            let s = &self.slots[slot];
            if !s.retiring && s.serial.is_none() && s.launch == LaunchState::Idle {
                self.launch(slot);
            }
        }
    }
}
