//! Crash rehearsal's cut of the upstream link: the relay drops its connection and dials again
//! only once the cut is over. Events meanwhile wait in the outbox, as in a real outage.

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

/// The switch between the control API (which cuts) and the relay (which obeys); cheap to clone.
#[derive(Debug, Clone)]
pub struct LinkCut {
    /// Until when the link is cut (`None`: never cut).
    until: watch::Sender<Option<Instant>>,
}

impl Default for LinkCut {
    fn default() -> Self {
        Self {
            until: watch::Sender::new(None),
        }
    }
}

impl LinkCut {
    /// Cuts the link from now for `duration` (a later cut replaces an earlier one).
    pub fn cut_for(&self, duration: Duration) {
        self.until.send_replace(Some(Instant::now() + duration));
    }

    /// Until when the link is cut, if it is now.
    fn cut_until(&self) -> Option<Instant> {
        self.until.borrow().filter(|t| *t > Instant::now())
    }

    /// Resolves when a cut starts (at once if one is in force), with its end.
    pub async fn started(&self) -> Instant {
        let mut rx = self.until.subscribe();
        loop {
            if let Some(t) = self.cut_until() {
                return t;
            }
            // The sender lives in `self`: `changed` fails only if it is dropped.
            if rx.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
    }

    /// Resolves once no cut is in force (at once if none is).
    pub async fn over(&self) {
        let mut rx = self.until.subscribe();
        while let Some(t) = self.cut_until() {
            // A new, longer cut made while waiting is waited out too.
            tokio::select! {
                () = tokio::time::sleep_until(t) => {}
                _ = rx.changed() => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_cut_starts_at_once_and_is_over_when_its_time_is_up() {
        let cut = LinkCut::default();
        // Never cut: over at once; started never.
        cut.over().await;
        let waiting = tokio::spawn({
            let cut = cut.clone();
            async move { cut.started().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        let begun = Instant::now();
        cut.cut_for(Duration::from_secs(30));
        let until = waiting.await.unwrap();
        assert_eq!(until, begun + Duration::from_secs(30));
        // A longer cut made meanwhile is waited out too.
        let over = tokio::spawn({
            let cut = cut.clone();
            async move {
                cut.over().await;
                Instant::now()
            }
        });
        tokio::time::sleep(Duration::from_secs(10)).await;
        cut.cut_for(Duration::from_secs(60));
        let ended = over.await.unwrap();
        assert_eq!(ended, begun + Duration::from_secs(70));
    }
}
