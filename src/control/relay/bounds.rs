//! What the relay bounds before memory grows: streams waiting for Hello, per address and in
//! all, and what one snapshot may name.

use std::sync::Arc;

use tonic::Status;

use crate::upstream_proto as up;

/// Streams waiting to say Hello at most, from one address and in all: silent streams past them
/// are refused before they hold any memory beyond their connection.
pub(super) const WAITING_PER_PEER: usize = 16;
/// See [`WAITING_PER_PEER`].
pub(super) const WAITING_IN_ALL: usize = 256;
/// Sessions a snapshot may name beyond its host's processes: the finished ones an agent keeps.
pub(super) const SNAPSHOT_SESSIONS_BEYOND_PROCESSES: usize =
    crate::api::limits::FINISHED_SESSIONS_KEPT;
/// Player sessions a snapshot may name at most per session it names, beyond the finished ones
/// an agent keeps.
pub(super) const SNAPSHOT_PLAYERS_PER_SESSION: usize = 1024;
/// Streams that have not said Hello yet, counted by peer address (at most 16 per address and
/// 256 in all: a working agent's Hello comes with its stream, so only attackers wait).
#[derive(Debug, Default)]
pub struct Waiting(std::sync::Mutex<(usize, std::collections::HashMap<std::net::IpAddr, usize>)>);

/// One waiting stream's place; given back when dropped.
pub(super) struct WaitingPlace(Arc<Waiting>, std::net::IpAddr);

impl Waiting {
    /// A place for a stream from `ip`, or why there is none.
    pub(super) fn admit(self: &Arc<Self>, ip: std::net::IpAddr) -> Result<WaitingPlace, Status> {
        let mut w = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let from_peer = w.1.get(&ip).copied().unwrap_or(0);
        if from_peer >= WAITING_PER_PEER || w.0 >= WAITING_IN_ALL {
            return Err(Status::resource_exhausted(format!(
                "too many relay streams are waiting to say Hello ({from_peer} from {ip}, {} in all; at most {WAITING_PER_PEER} and {WAITING_IN_ALL})",
                w.0
            )));
        }
        w.0 += 1;
        *w.1.entry(ip).or_default() += 1;
        Ok(WaitingPlace(self.clone(), ip))
    }
}

impl Drop for WaitingPlace {
    fn drop(&mut self) {
        let mut w = (self.0).0.lock().unwrap_or_else(|p| p.into_inner());
        w.0 = w.0.saturating_sub(1);
        if let Some(n) = w.1.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                w.1.remove(&self.1);
            }
        }
    }
}

/// Why a snapshot is more than its host could hold, if it is.
pub(super) fn oversized(s: &up::Snapshot) -> Option<String> {
    let sessions = s.game_server_sessions_json.len();
    // The processes are the snapshot's own word: no host runs more than GSE allows.
    let processes = s
        .processes
        .len()
        .min(crate::api::limits::MAX_PROCESSES as usize);
    let max_sessions = processes + SNAPSHOT_SESSIONS_BEYOND_PROCESSES;
    let max_players =
        (sessions + 1) * SNAPSHOT_PLAYERS_PER_SESSION + crate::api::limits::FINISHED_PLAYERS_KEPT;
    if sessions > max_sessions {
        Some(format!(
            "a snapshot names {sessions} sessions; a host of {processes} processes keeps at most {max_sessions}"
        ))
    } else if s.player_sessions_json.len() > max_players {
        Some(format!(
            "a snapshot names {} player sessions; at most {max_players} for {sessions} sessions",
            s.player_sessions_json.len()
        ))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silent_streams_are_bounded_per_address_and_given_back() {
        let waiting = Arc::new(Waiting::default());
        let (a, b): (std::net::IpAddr, std::net::IpAddr) =
            ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let held: Vec<_> = (0..WAITING_PER_PEER)
            .map(|_| waiting.admit(a).unwrap())
            .collect();
        let refused = waiting.admit(a).err().expect("one more from a is refused");
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert!(refused.message().contains("from 10.0.0.1"), "{refused:?}");
        let other = waiting.admit(b).expect("another address still has room");
        drop(held);
        drop(other);
        assert_eq!(waiting.0.lock().unwrap().0, 0);
        assert!(waiting.0.lock().unwrap().1.is_empty());
        waiting
            .admit(a)
            .expect("room again once they said Hello or left");
    }

    #[test]
    fn a_snapshot_is_bounded_by_what_its_host_can_hold() {
        let process = up::ProcessState::default();
        let mut s = up::Snapshot {
            complete: true,
            processes: vec![process; 2],
            game_server_sessions_json: vec!["{}".into(); 2 + SNAPSHOT_SESSIONS_BEYOND_PROCESSES],
            player_sessions_json: vec![],
        };
        assert_eq!(oversized(&s), None);
        s.game_server_sessions_json.push("{}".into());
        assert!(oversized(&s).unwrap().contains("keeps at most"));
        // Padding the processes does not lift the bound past what a host may run.
        s.processes = vec![up::ProcessState::default(); 100_000];
        s.game_server_sessions_json = vec!["{}".into(); 51 + SNAPSHOT_SESSIONS_BEYOND_PROCESSES];
        assert!(oversized(&s).unwrap().contains("a host of 50 processes"));
        s.game_server_sessions_json.truncate(1);
        s.player_sessions_json = vec![
            "{}".into();
            3 * SNAPSHOT_PLAYERS_PER_SESSION
                + crate::api::limits::FINISHED_PLAYERS_KEPT
        ];
        assert!(oversized(&s).unwrap().contains("player sessions"));
    }
}
