//! Connections that must prove themselves. A listener whose clients must do something first
//! (the relay's: open a stream whose Hello passes every rule) bounds how many connections
//! have not done it yet, and closes each that has not within a deadline: a silent
//! connection costs its buffers (about 20 KiB in hyper and h2) and would never end by itself.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

/// How many connections may be unproven at once, and for how long each.
#[derive(Debug, Clone, Copy)]
pub struct ProofBounds {
    /// Unproven connections at most; more are closed at once.
    pub max_unproven: usize,
    /// A connection not proven this long after it was accepted is closed.
    pub within: Duration,
}

/// Whether a connection has proved itself; shared by the connection and every request on
/// it (through [`super::ConnInfo`]). The default, on a listener without [`ProofBounds`], is
/// proven from the start.
#[derive(Debug, Clone, Default)]
pub struct Proof(Option<Arc<Unproven>>);

#[derive(Debug)]
struct Unproven {
    proven: AtomicBool,
    /// The listener's count of unproven connections.
    count: Arc<AtomicUsize>,
}

impl Proof {
    /// A connection counted in `count` until it is proven or dropped.
    pub(super) fn counted(count: Arc<AtomicUsize>) -> Self {
        Proof(Some(Arc::new(Unproven {
            proven: AtomicBool::new(false),
            count,
        })))
    }

    /// The connection has proved itself: it no longer counts against the bound, and its
    /// deadline no longer applies.
    pub fn prove(&self) {
        if let Some(u) = &self.0
            && !u.proven.swap(true, Ordering::AcqRel)
        {
            u.count.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Whether it has.
    pub fn is_proven(&self) -> bool {
        self.0
            .as_ref()
            .is_none_or(|u| u.proven.load(Ordering::Acquire))
    }
}

/// Held by the connection itself: gives its place back if it ends unproven.
pub(super) struct UnprovenPlace(pub(super) Proof);

impl Drop for UnprovenPlace {
    fn drop(&mut self) {
        self.0.prove();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_place_is_given_back_once_whether_proven_or_dropped() {
        let count = Arc::new(AtomicUsize::new(2));
        let (a, b) = (Proof::counted(count.clone()), Proof::counted(count.clone()));
        let (held_a, held_b) = (UnprovenPlace(a.clone()), UnprovenPlace(b.clone()));
        assert!(!a.is_proven());
        a.prove();
        a.prove();
        assert!(a.is_proven());
        assert_eq!(count.load(Ordering::Acquire), 1);
        drop(held_a);
        assert_eq!(
            count.load(Ordering::Acquire),
            1,
            "proven: nothing more to give back"
        );
        drop(held_b);
        assert_eq!(count.load(Ordering::Acquire), 0, "dropped unproven");
        assert!(Proof::default().is_proven());
    }

    /// Through a real listener: one unproven connection at most, so a second is closed at
    /// once; a proven one makes room; an unproven one is closed at its deadline.
    #[tokio::test(start_paused = true)]
    async fn a_listener_holds_few_unproven_connections_and_not_for_long() {
        use crate::common::listen::{Acceptor, Bounds};
        use tokio::io::AsyncReadExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let bounds = Bounds {
            max_connections: 16,
            first_bytes_within: Duration::from_secs(3600),
            first_bytes: 1,
            idle_after: None,
        };
        let mut acceptor = Acceptor::<()>::new(listener, "test", bounds).with_proof(ProofBounds {
            max_unproven: 1,
            within: Duration::from_secs(15),
        });
        let _a_client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let a = acceptor.accept().await;
        let mut b_client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let next = tokio::spawn(async move {
            let c = acceptor.accept().await;
            (acceptor, c)
        });
        let mut byte = [0u8; 1];
        assert_eq!(
            b_client.read(&mut byte).await.unwrap(),
            0,
            "over the bound: closed at once"
        );
        a.info().proof.prove();
        let _c_client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (_acceptor, mut c) = next.await.unwrap();
        assert!(!c.info().proof.is_proven());
        let err = c.read(&mut byte).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
        assert_eq!(
            err.to_string(),
            "the connection did not prove itself in time"
        );
        drop(a);
    }
}
