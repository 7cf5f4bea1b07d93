//! Transitions of the fleet with no process, no network and a paused clock.

use std::path::Path;
use std::time::SystemTime;

use super::*;
use crate::agent::config;
use crate::agent::fleet::api::{
    Control, ControlReply, FleetError, HostStateScope, PlayerQuery, SdkCall, SdkReply,
};
use crate::agent::fleet::clock::Clock;
use crate::agent::process::ExitInfo;
use crate::agent::session::PlayerStatus;
use crate::api::limits::FINISHED_PLAYERS_KEPT;
use crate::api::sessions::{NewPlayer, NewSession, SessionUpdate};

mod chaos;
mod outputs;
mod persist;
mod procs;
mod runtime;
mod sessions;
mod termination;

const CONFIG: &str = "
fleet-id: fleet-test
health-check: { interval: 1s, timeout: 500ms, failure-threshold: 2 }
timeouts: { process-ready: 5s, process-exit: 2s, player-reservation: 3s, stop-grace: 1s, shutdown: 4s }
protection: { policy: NoProtection, no-protection-grace: 10s }
restart: { initial-backoff: 1s, max-backoff: 8s, reset-after: 30s, crash-loop-max: 4, crash-loop-window: 60s, crash-loop-cool-down: 100s }
runtime-configuration:
  ServerProcesses:
    - LaunchPath: /local/game/a
      ConcurrentExecutions: 2
    - LaunchPath: /local/game/b
      ConcurrentExecutions: 1
  MaxConcurrentGameServerSessionActivations: 1
  GameServerSessionActivationTimeoutSeconds: 5
";

struct Harness {
    fleet: Fleet,
    now: Instant,
    next_pid: u32,
    events: Vec<Event>,
    /// The changes no event reports, in order.
    changes: Vec<Change>,
}

impl Harness {
    fn new() -> Self {
        Self::with_config(CONFIG)
    }

    /// A harness over `yaml` instead of [`CONFIG`].
    fn with_config(yaml: &str) -> Self {
        let cfg = config::parse(yaml, "test.yaml", Path::new("/srv")).unwrap();
        let mut fleet = Fleet::new(Arc::new(cfg), Clock::read());
        fleet.start();
        let mut h = Self {
            fleet,
            now: Instant::now(),
            next_pid: 100,
            events: Vec::new(),
            changes: Vec::new(),
        };
        h.settle();
        h
    }

    /// Performs launches like the actor would (every launch succeeds) and collects the other
    /// effects.
    fn settle(&mut self) -> Vec<Effect> {
        let mut others = Vec::new();
        loop {
            let effects = self.fleet.take_effects();
            if effects.is_empty() {
                return others;
            }
            for e in effects {
                match e {
                    Effect::Launch {
                        slot,
                        serial,
                        process_id,
                        ..
                    } => {
                        self.next_pid += 1;
                        let identity = identity(self.next_pid);
                        self.fleet
                            .spawned(slot, serial, process_id, identity, self.now);
                    }
                    Effect::Emit(ev) => self.events.push(*ev),
                    Effect::Changed(c) => self.changes.push(c),
                    other => others.push(other),
                }
            }
        }
    }

    fn advance(&mut self, d: Duration) -> Vec<Effect> {
        self.now += d;
        let wall = self.fleet.clock.to_wall(self.now);
        self.fleet.set_clock(Clock {
            now: self.now,
            wall,
        });
        self.fleet.tick(self.now);
        self.settle()
    }

    fn pids(&self) -> Vec<u32> {
        let mut v = self.fleet.pids();
        v.sort();
        v
    }

    fn ready(&mut self, pid: u32) {
        let r = self.fleet.sdk(
            pid,
            SdkCall::ProcessReady {
                client_port: 7000 + pid as i32,
                grpc_port: 9000 + pid as i32,
                log_paths: vec![],
            },
            self.now,
        );
        assert!(r.is_ok(), "{r:?}");
        self.settle();
    }

    fn exit(&mut self, pid: u32, code: i32) -> Vec<Effect> {
        self.exit_with(
            pid,
            ExitInfo {
                exit_code: Some(code),
                ..Default::default()
            },
        )
    }

    fn exit_with(&mut self, pid: u32, info: ExitInfo) -> Vec<Effect> {
        let serial = self.s(pid);
        self.fleet.exited(serial, info, self.now);
        self.settle()
    }

    /// The launch serial of the live process `pid`.
    fn s(&self, pid: u32) -> u64 {
        self.fleet.serial_of(pid).expect("a live pid")
    }

    fn proc(&self, pid: u32) -> &Proc {
        &self.fleet.procs[&self.s(pid)]
    }

    fn codes(&self) -> Vec<EventCode> {
        self.events.iter().map(|e| e.event_code).collect()
    }

    fn count(&self, code: EventCode) -> usize {
        self.events.iter().filter(|e| e.event_code == code).count()
    }

    fn create(&mut self, max_players: i32) -> Result<GameSession, FleetError> {
        let r = self.fleet.control(
            Control::CreateSession(NewSession {
                max_players,
                ..Default::default()
            }),
            self.now,
        );
        self.settle();
        match r {
            Ok(ControlReply::Session(s)) => Ok(*s),
            Ok(other) => panic!("{other:?}"),
            Err(e) => Err(e),
        }
    }

    /// Creates a session (placed on `pid`, the only idle ready process) and activates it.
    fn activated(&mut self, pid: u32, max_players: i32) -> GameSession {
        let s = self.create(max_players).unwrap();
        assert_eq!(s.pid, pid);
        self.sdk(
            pid,
            SdkCall::Activate {
                gss_id: s.id.clone(),
                max_players: 0,
            },
        )
        .unwrap();
        s
    }

    fn join(&mut self, gss: &str, n: usize) -> Result<Vec<PlayerSession>, FleetError> {
        let players = (0..n)
            .map(|i| NewPlayer {
                player_id: format!("player-{i}"),
                player_data: String::new(),
            })
            .collect();
        let r = self.fleet.control(
            Control::Join {
                gss_id: gss.into(),
                players,
            },
            self.now,
        );
        self.settle();
        match r {
            Ok(ControlReply::Players(p, _)) => Ok(p),
            Ok(other) => panic!("{other:?}"),
            Err(e) => Err(e),
        }
    }

    fn sdk(&mut self, pid: u32, call: SdkCall) -> Result<SdkReply, FleetError> {
        let r = self.fleet.sdk(pid, call, self.now);
        self.settle();
        r
    }

    fn session(&self, id: &str) -> GameSession {
        self.fleet.sessions[id].1.clone()
    }
}

fn identity(pid: u32) -> Identity {
    Identity {
        pid,
        start_ticks: u64::from(pid),
        exe: "/srv/gse-data/game/server".into(),
        boot_id: "boot".into(),
    }
}

/// The processes sent OnProcessTerminate among `effects`.
fn terminated(effects: &[Effect]) -> Vec<u64> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Terminate { serial, .. } => Some(*serial),
            _ => None,
        })
        .collect()
}

fn is_stop(e: &Effect, want: u64) -> bool {
    matches!(e, Effect::Stop { serial, .. } if *serial == want)
}

fn status(fleet: &mut Fleet, now: Instant) -> crate::agent::fleet::api::FleetStatus {
    match fleet.control(Control::DescribeStatus, now) {
        Ok(ControlReply::Status(s)) => *s,
        other => panic!("{other:?}"),
    }
}

/// A restart: the fleet as records, rebuilt under the same config.
fn restart(h: &mut Harness) -> Vec<Recorded> {
    let wall = SystemTime::now();
    let records = h.fleet.snapshot(h.now, wall);
    let cfg = h.fleet.cfg.clone();
    h.now += Duration::from_millis(500);
    let (fleet, recorded) = Fleet::restore(cfg, &records, h.now, wall + Duration::from_millis(500))
        .unwrap()
        .expect("records were stored");
    h.fleet = fleet;
    // As the actor does: a new run draws its ids from a new seed.
    h.fleet.set_id_seed(1);
    h.events.clear();
    recorded
}
