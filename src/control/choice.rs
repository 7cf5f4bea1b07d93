//! Where a placement may go now, by GSE's latency rules: a pure function of the queue's
//! destinations, its latency policies, the players' latencies and how long it has waited.
//!
//! GSE's rules: latency policies apply from the lowest cap upward, each for its window; when no
//! destination meets the current cap the next policy applies at once (after the last one, any
//! destination); when one meets it but has no free process the placement waits within that
//! policy's window. Latency goes before destination order; without latency data destination
//! order decides.

use crate::api::queue::LatencyPolicy;

/// A destination as the choice sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The fleet (an alias destination resolved).
    pub fleet: String,
    /// The region its hosts are in.
    pub region: String,
}

/// The fleets a placement may try now, best first. `elapsed_secs` is how long it has waited.
pub fn choose(
    destinations: &[Candidate],
    policies: &[LatencyPolicy],
    latencies: &[crate::api::placement::Latency],
    elapsed_secs: u64,
) -> Vec<String> {
    // A destination's latency: the worst of the players who reported its region.
    let worst = |d: &Candidate| {
        latencies
            .iter()
            .filter(|l| l.region == d.region)
            .map(|l| l.millis)
            .max()
    };
    let by_latency = |list: Vec<&Candidate>| {
        let mut list: Vec<(usize, &Candidate)> = list.into_iter().enumerate().collect();
        // Stable: destination order breaks ties and orders those without data.
        list.sort_by_key(|(i, d)| (worst(d).unwrap_or(u32::MAX), *i));
        list.into_iter()
            .map(|(_, d)| d.fleet.clone())
            .collect::<Vec<_>>()
    };
    if latencies.is_empty() || policies.is_empty() {
        return destinations.iter().map(|d| d.fleet.clone()).collect();
    }
    let mut sorted: Vec<&LatencyPolicy> = policies.iter().collect();
    sorted.sort_by_key(|p| p.max_millis);
    // The policy whose window holds `elapsed`; one of duration 0 holds the rest of the wait.
    let mut start = 0u64;
    let mut current = sorted.len();
    for (i, p) in sorted.iter().enumerate() {
        if p.duration_secs == 0 || elapsed_secs < start + u64::from(p.duration_secs) {
            current = i;
            break;
        }
        start += u64::from(p.duration_secs);
    }
    for p in &sorted[current.min(sorted.len())..] {
        let meets: Vec<&Candidate> = destinations
            .iter()
            .filter(|d| worst(d).is_some_and(|w| w <= p.max_millis))
            .collect();
        if !meets.is_empty() {
            return by_latency(meets);
        }
    }
    by_latency(destinations.iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::placement::Latency;

    fn dest(fleet: &str, region: &str) -> Candidate {
        Candidate {
            fleet: fleet.into(),
            region: region.into(),
        }
    }

    fn lat(region: &str, millis: u32) -> Latency {
        Latency {
            player_id: "p".into(),
            region: region.into(),
            millis,
        }
    }

    fn policy(max_millis: u32, duration_secs: u32) -> LatencyPolicy {
        LatencyPolicy {
            max_millis,
            duration_secs,
        }
    }

    #[test]
    fn without_latency_data_destination_order_decides() {
        let d = [dest("fleet-a", "r1"), dest("fleet-b", "r2")];
        assert_eq!(
            choose(&d, &[policy(50, 10)], &[], 0),
            ["fleet-a", "fleet-b"]
        );
        assert_eq!(choose(&d, &[], &[lat("r2", 5)], 0), ["fleet-a", "fleet-b"]);
    }

    #[test]
    fn latency_goes_before_destination_order() {
        let d = [dest("fleet-a", "r1"), dest("fleet-b", "r2")];
        let l = [lat("r1", 80), lat("r2", 20)];
        assert_eq!(choose(&d, &[policy(100, 0)], &l, 0), ["fleet-b", "fleet-a"]);
    }

    #[test]
    fn policies_apply_from_the_lowest_cap_within_their_windows() {
        let d = [dest("fleet-a", "r1"), dest("fleet-b", "r2")];
        let l = [lat("r1", 40), lat("r2", 90)];
        let p = [policy(200, 0), policy(50, 10)];
        // 0–10 s: cap 50 admits only fleet-a.
        assert_eq!(choose(&d, &p, &l, 3), ["fleet-a"]);
        // After: cap 200 admits both, by latency.
        assert_eq!(choose(&d, &p, &l, 11), ["fleet-a", "fleet-b"]);
    }

    #[test]
    fn a_cap_no_destination_meets_gives_way_to_the_next_at_once() {
        let d = [dest("fleet-a", "r1")];
        let l = [lat("r1", 120)];
        let p = [policy(50, 30), policy(150, 30)];
        assert_eq!(choose(&d, &p, &l, 0), ["fleet-a"]);
        // No policy admits it: after every window, anything goes.
        let strict = [policy(50, 30)];
        assert_eq!(choose(&d, &strict, &l, 0), ["fleet-a"]);
        assert_eq!(choose(&d, &strict, &l, 31), ["fleet-a"]);
    }

    #[test]
    fn the_worst_player_decides_a_destination() {
        let d = [dest("fleet-a", "r1"), dest("fleet-b", "r2")];
        let l = [lat("r1", 10), lat("r1", 70), lat("r2", 60)];
        assert_eq!(choose(&d, &[policy(65, 0)], &l, 0), ["fleet-b"]);
    }
}
