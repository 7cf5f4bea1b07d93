//! The writer's hold: events taken from the queue and not yet committed, bounded while the
//! disk refuses writes.

use std::collections::VecDeque;

use crate::agent::event::Event;

/// The size an event takes in memory, roughly.
pub(super) fn held_size(e: &Event) -> u64 {
    let ids = [
        &e.process_id,
        &e.game_server_session_id,
        &e.player_session_id,
    ]
    .iter()
    .map(|s| s.as_ref().map_or(0, String::len))
    .sum::<usize>();
    let exit = e.exit.as_ref().map_or(0, |x| {
        x.output_tail.iter().map(|l| l.len() + 24).sum::<usize>()
            + x.signal.as_ref().map_or(0, String::len)
    });
    (std::mem::size_of::<Event>() + e.message.len() + ids + exit) as u64
}

/// Events taken from the queue and not yet committed, oldest first, bounded while the disk
/// refuses writes.
pub(super) struct Hold {
    events: VecDeque<Event>,
    bytes: u64,
    pub(super) max_bytes: u64,
    /// Dropped past the bound since the last UPSTREAM_EVENTS_LOST.
    pub(super) dropped: u64,
    /// Their size.
    pub(super) dropped_bytes: u64,
}

impl Hold {
    pub(super) fn new(max_bytes: u64) -> Self {
        Self {
            events: VecDeque::new(),
            bytes: 0,
            max_bytes,
            dropped: 0,
            dropped_bytes: 0,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.events.len()
    }

    /// Whether more events fit under the bound.
    pub(super) fn has_room(&self) -> bool {
        self.bytes < self.max_bytes
    }

    pub(super) fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Keeps `e`; when `bounded` and the hold is full, drops and counts it instead.
    pub(super) fn push(&mut self, e: Event, bounded: bool) {
        let size = held_size(&e);
        if bounded && self.bytes + size > self.max_bytes {
            self.dropped += 1;
            self.dropped_bytes += size;
            return;
        }
        self.bytes += size;
        self.events.push_back(e);
    }

    /// Puts `e` first, whatever the bound (the agent's own notices).
    pub(super) fn push_front(&mut self, e: Event) {
        self.bytes += held_size(&e);
        self.events.push_front(e);
    }

    /// The first `n` events, in order.
    pub(super) fn front(&mut self, n: usize) -> &[Event] {
        let n = n.min(self.events.len());
        &self.events.make_contiguous()[..n]
    }

    pub(super) fn pop_front(&mut self, n: usize) {
        for _ in 0..n.min(self.events.len()) {
            if let Some(e) = self.events.pop_front() {
                self.bytes = self.bytes.saturating_sub(held_size(&e));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::event::EventCode;

    fn ev(n: u64) -> Event {
        Event::new(EventCode::ServerProcessStarted, format!("event {n}"))
    }

    #[test]
    fn the_hold_is_bounded_and_counts_what_it_drops() {
        let e = ev(0);
        let size = held_size(&e);
        let mut hold = Hold::new(size * 3);
        for _ in 0..5 {
            hold.push(ev(0), true);
        }
        assert_eq!(
            (hold.len(), hold.dropped, hold.dropped_bytes),
            (3, 2, size * 2)
        );
        // Unbounded while the disk takes writes.
        hold.push(ev(0), false);
        hold.push_front(ev(0));
        assert_eq!(hold.len(), 5);
        hold.pop_front(4);
        assert_eq!((hold.len(), hold.bytes), (1, size));
    }
}
