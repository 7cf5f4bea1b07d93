//! Restart pacing: capped exponential backoff per slot and a windowed crash-loop breaker per
//! ServerProcesses entry. Pure; time is passed in.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::RestartPolicy;

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

/// Counts crashes of one entry in a sliding window.
#[derive(Debug, Default)]
pub struct Breaker {
    crashes: VecDeque<Instant>,
    /// While set, the entry launches nothing before this time.
    pub paused_until: Option<Instant>,
}

impl Breaker {
    /// Records a crash at `now`; returns the number of crashes in the window if this one trips
    /// the breaker (it then stays paused for the cool-down and starts counting afresh).
    pub fn record(&mut self, policy: &RestartPolicy, now: Instant) -> Option<usize> {
        let window = policy.crash_loop_window.get();
        while self
            .crashes
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) > window)
        {
            self.crashes.pop_front();
        }
        self.crashes.push_back(now);
        if self.paused_until.is_none() && self.crashes.len() >= policy.crash_loop_max as usize {
            let count = self.crashes.len();
            self.crashes.clear();
            self.paused_until = Some(now + policy.crash_loop_cool_down.get());
            return Some(count);
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
        assert_eq!(b.record(&p, t0), None);
        assert_eq!(
            b.record(&p, t0 + Duration::from_secs(11)),
            None,
            "first fell out"
        );
        assert_eq!(b.record(&p, t0 + Duration::from_secs(12)), None);
        assert_eq!(b.record(&p, t0 + Duration::from_secs(13)), Some(3));
        assert!(b.is_paused(t0 + Duration::from_secs(42)));
        assert!(!b.is_paused(t0 + Duration::from_secs(43)));
        // Crashes while paused do not raise a second event.
        assert_eq!(b.record(&p, t0 + Duration::from_secs(14)), None);
        assert_eq!(b.record(&p, t0 + Duration::from_secs(15)), None);
        assert_eq!(b.record(&p, t0 + Duration::from_secs(16)), None);
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
