//! The two clocks the fleet needs, read once per input by the actor and passed in, so the pure
//! core never reads a clock or draws a random id itself: every transition replays in a test.

use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
use std::time::SystemTime;

use tokio::time::Instant;

/// One reading of the monotonic and the wall clock, taken together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Clock {
    /// Monotonic time: timers and durations.
    pub now: Instant,
    /// Wall-clock time at `now`: what users and the protocol see.
    pub wall: SystemTime,
}

impl Clock {
    /// Both clocks read now (the actor's edge; the core only receives readings).
    pub fn read() -> Self {
        Self {
            now: Instant::now(),
            wall: SystemTime::now(),
        }
    }

    /// The wall-clock time of the instant `t`.
    pub fn to_wall(self, t: Instant) -> SystemTime {
        if t >= self.now {
            self.wall + (t - self.now)
        } else {
            self.wall
                .checked_sub(self.now - t)
                .unwrap_or(SystemTime::UNIX_EPOCH)
        }
    }

    /// The instant of the wall-clock time `t`.
    pub fn to_instant(self, t: SystemTime) -> Instant {
        match t.duration_since(self.wall) {
            Ok(ahead) => self.now + ahead,
            Err(e) => self.now.checked_sub(e.duration()).unwrap_or(self.now),
        }
    }
}

/// Version-4-shaped UUIDs derived from a seed and a counter: unique for a random seed, and the
/// same sequence for the same seed (tests).
#[derive(Debug, Clone, Default)]
pub struct Ids {
    seed: u128,
    next: u64,
}

impl Ids {
    /// Ids from `seed` (the actor draws it at random once per run).
    pub fn new(seed: u128) -> Self {
        Self { seed, next: 0 }
    }

    /// The next id.
    pub fn next_uuid(&mut self) -> uuid::Uuid {
        self.next += 1;
        let hash = |salt: u64| {
            BuildHasherDefault::<DefaultHasher>::default().hash_one((self.seed, self.next, salt))
        };
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&hash(1).to_le_bytes());
        bytes[8..].copy_from_slice(&hash(2).to_le_bytes());
        uuid::Builder::from_random_bytes(bytes).into_uuid()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_v4_and_follow_the_seed() {
        let mut a = Ids::new(7);
        let mut b = Ids::new(7);
        let mut c = Ids::new(8);
        let xs: Vec<_> = (0..1000).map(|_| a.next_uuid()).collect();
        let ys: Vec<_> = (0..1000).map(|_| b.next_uuid()).collect();
        assert_eq!(xs, ys);
        assert_ne!(xs[0], c.next_uuid());
        let unique: std::collections::HashSet<_> = xs.iter().collect();
        assert_eq!(unique.len(), xs.len());
        assert_eq!(xs[0].get_version_num(), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn clocks_convert_both_ways() {
        let c = Clock::read();
        let later = c.now + std::time::Duration::from_secs(5);
        assert_eq!(c.to_instant(c.to_wall(later)), later);
        let wall = c.wall - std::time::Duration::from_secs(3);
        assert_eq!(c.to_wall(c.to_instant(wall)), wall);
    }
}
