//! Restart pacing: capped exponential backoff per slot and a windowed crash-loop breaker per
//! ServerProcesses entry. Pure; time is passed in.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

use crate::agent::config::RestartPolicy;

/// The delay before relaunch after `failures` consecutive failures of one slot: the first
/// relaunch is immediate, then `initial`, doubling, capped at `max`.
pub fn backoff(policy: &RestartPolicy, failures: u32) -> Duration {
    if failures <= 1 {
        return Duration::ZERO;
    }
    let doublings = (failures - 2).min(32);
    policy
        .initial_backoff
        .get()
        .saturating_mul(1u32 << doublings.min(31))
        .min(policy.max_backoff.get())
}

/// Counts the failures of one entry's slots in a sliding window.
///
/// Only repeated failures count: the breaker trips when the failures within the window of
/// the slots that failed at least twice in it reach `crash-loop-max`. One event that ends many
/// games at once (an OOM killer, an operator's `kill -9`) fails each slot once, counts nothing
/// and relaunches every slot; a crash loop (the same slots failing over and over) trips it as
/// before: one slot failing `crash-loop-max` times, or several failing again and again.
#[derive(Debug, Default)]
pub struct Breaker {
    /// The failures within the window, oldest first, with the slot that failed.
    failures: VecDeque<(Instant, usize)>,
    /// While set, the entry launches nothing before this time.
    pub paused_until: Option<Instant>,
}

/// What tripped a [`Breaker`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trip {
    /// The failures within the window of the slots that failed repeatedly.
    pub failures: usize,
    /// How many slots failed repeatedly.
    pub slots: usize,
}

impl Breaker {
    /// Renames the slots it remembers (`map` gives a slot's new index, `None` if it is gone).
    pub fn renumber(&mut self, map: impl Fn(usize) -> Option<usize>) {
        self.failures = std::mem::take(&mut self.failures)
            .into_iter()
            .filter_map(|(t, s)| map(s).map(|s| (t, s)))
            .collect();
    }

    /// Records a failure of `slot` at `now`; returns what tripped the breaker if this failure
    /// does (it then stays paused for the cool-down and starts counting afresh). A trip is
    /// always on a repeated failure: a slot's first failure in the window adds nothing.
    pub fn record(&mut self, policy: &RestartPolicy, slot: usize, now: Instant) -> Option<Trip> {
        let window = policy.crash_loop_window.get();
        while self
            .failures
            .front()
            .is_some_and(|(t, _)| now.saturating_duration_since(*t) > window)
        {
            self.failures.pop_front();
        }
        self.failures.push_back((now, slot));
        if self.paused_until.is_some() {
            return None;
        }
        let mut per_slot: HashMap<usize, usize> = HashMap::new();
        for (_, s) in &self.failures {
            *per_slot.entry(*s).or_default() += 1;
        }
        let trip = per_slot.values().filter(|n| **n >= 2).fold(
            Trip {
                failures: 0,
                slots: 0,
            },
            |t, n| Trip {
                failures: t.failures + n,
                slots: t.slots + 1,
            },
        );
        if trip.failures >= policy.crash_loop_max as usize {
            self.failures.clear();
            self.paused_until = Some(now + policy.crash_loop_cool_down.get());
            return Some(trip);
        }
        None
    }

    /// Whether the entry is paused at `now`.
    pub fn is_paused(&self, now: Instant) -> bool {
        self.paused_until.is_some_and(|t| now < t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RestartPolicy {
        RestartPolicy {
            initial_backoff: Duration::from_millis(100).into(),
            max_backoff: Duration::from_secs(1).into(),
            reset_after: Duration::from_secs(5).into(),
            crash_loop_max: 3,
            crash_loop_window: Duration::from_secs(10).into(),
            crash_loop_cool_down: Duration::from_secs(30).into(),
        }
    }

    #[test]
    fn backoff_is_immediate_then_doubles_to_the_cap() {
        let p = policy();
        let got: Vec<u64> = (0..8).map(|n| backoff(&p, n).as_millis() as u64).collect();
        assert_eq!(got, [0, 0, 100, 200, 400, 800, 1000, 1000]);
        assert_eq!(backoff(&p, u32::MAX), Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn breaker_trips_once_per_window_and_cools_down() {
        let p = policy();
        let mut b = Breaker::default();
        let t0 = Instant::now();
        let at = |s| t0 + Duration::from_secs(s);
        assert_eq!(b.record(&p, 0, t0), None);
        assert_eq!(b.record(&p, 0, at(11)), None, "first fell out");
        assert_eq!(b.record(&p, 0, at(12)), None);
        assert_eq!(
            b.record(&p, 0, at(13)),
            Some(Trip {
                failures: 3,
                slots: 1
            })
        );
        assert!(b.is_paused(at(42)));
        assert!(!b.is_paused(at(43)));
        // Crashes while paused do not raise a second event.
        assert_eq!(b.record(&p, 0, at(14)), None);
        assert_eq!(b.record(&p, 0, at(15)), None);
        assert_eq!(b.record(&p, 0, at(16)), None);
    }

    #[tokio::test(start_paused = true)]
    async fn slots_failing_once_each_never_trip_the_breaker() {
        let p = policy();
        let mut b = Breaker::default();
        let t0 = Instant::now();
        for slot in 0..50 {
            assert_eq!(b.record(&p, slot, t0), None, "slot {slot}");
        }
        assert!(!b.is_paused(t0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_does_not_add_to_a_flaky_slot() {
        let p = policy();
        let mut b = Breaker::default();
        let t0 = Instant::now();
        // Slot 0 failed twice (2 repeated failures, crash-loop-max is 3), then a burst.
        assert_eq!(b.record(&p, 0, t0), None);
        assert_eq!(b.record(&p, 0, t0), None);
        for slot in 1..50 {
            assert_eq!(b.record(&p, slot, t0), None, "slot {slot}");
        }
        // Slot 0 failing once more is its third failure in the window.
        assert_eq!(
            b.record(&p, 0, t0 + Duration::from_secs(1)),
            Some(Trip {
                failures: 3,
                slots: 1
            })
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_few_slots_failing_again_trip_the_breaker() {
        let p = policy();
        let mut b = Breaker::default();
        let t0 = Instant::now();
        for slot in 0..3 {
            assert_eq!(b.record(&p, slot, t0), None);
        }
        // Slot 0's second failure makes 2 repeated failures; slot 1's makes 4.
        assert_eq!(b.record(&p, 0, t0 + Duration::from_secs(1)), None);
        assert_eq!(
            b.record(&p, 1, t0 + Duration::from_secs(1)),
            Some(Trip {
                failures: 4,
                slots: 2
            })
        );
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// The delay never shrinks as failures grow, never passes the cap, and the first
        /// relaunch is always immediate.
        #[test]
        fn backoff_is_monotonic_and_capped(initial_ms in 1u64..10_000, cap_ms in 1u64..600_000, n in 0u32..200) {
            let policy = RestartPolicy {
                initial_backoff: Duration::from_millis(initial_ms).into(),
                max_backoff: Duration::from_millis(cap_ms.max(initial_ms)).into(),
                ..RestartPolicy::default()
            };
            let (a, b) = (backoff(&policy, n), backoff(&policy, n + 1));
            prop_assert!(a <= b);
            prop_assert!(b <= policy.max_backoff.get());
            prop_assert_eq!(backoff(&policy, 1), Duration::ZERO);
        }
    }
}
