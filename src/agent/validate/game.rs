//! The steps that run the game: launch → ProcessReady → health checks → game session → player
//! session → OnProcessTerminate → stop, each judged by the agent's own events.
//!
//! Processes move through the steps at their own pace, so a failure is judged by what it says,
//! not by when it arrives: when one process crashes before ProcessReady while its neighbour is
//! still being launched, the launch did happen and the crash fails process-ready ([`Carried`]).

use std::time::{Duration, Instant};

use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::{Failure, HEALTH_CHECKS, Run, STEPS, Status};
use crate::agent::config::Config;
use crate::agent::event::{Event, EventCode};
use crate::agent::fleet::{Control, ControlReply};
use crate::api::sessions::{NewPlayer, NewSession};

/// Failure events that end a step.
fn fatal(e: &Event) -> bool {
    matches!(
        e.event_code,
        EventCode::ServerProcessCrashed
            | EventCode::ServerProcessInvalidPath
            | EventCode::ServerProcessPullFailed
            | EventCode::ServerProcessProcessReadyTimeout
            | EventCode::ServerProcessUnhealthy
            | EventCode::ServerProcessTerminatedUnhealthy
            | EventCode::ServerProcessForceTerminated
            | EventCode::ServerProcessProcessExitTimeout
            | EventCode::ServerProcessCrashLoop
            | EventCode::GameSessionActivationTimeout
            | EventCode::GameSessionError
    )
}

/// Interrupted by Ctrl-C.
pub(super) struct Interrupted;

/// Runs `work` until it decides, `within` passes (then `late` says the failure) or Ctrl-C.
async fn bounded<T>(
    run: &mut Run<'_>,
    within: Duration,
    late: impl FnOnce() -> Failure,
    work: impl std::future::Future<Output = Result<T, Failure>>,
) -> Result<Result<T, Failure>, Interrupted> {
    tokio::select! {
        () = run.interrupted.cancelled() => {
            run.was_interrupted = true;
            Err(Interrupted)
        }
        () = tokio::time::sleep(within) => Ok(Err(late())),
        r = work => Ok(r),
    }
}

/// Waits for events until `f` decides, the deadline passes, or Ctrl-C.
async fn wait_events(
    run: &mut Run<'_>,
    events: &mut broadcast::Receiver<Event>,
    deadline: Duration,
    what: &str,
    mut f: impl FnMut(&Event) -> Option<Result<(), Failure>>,
) -> Result<Result<(), Failure>, Interrupted> {
    let late = || {
        Failure::from(format!(
            "{what} did not happen within {}",
            humantime::format_duration(deadline)
        ))
    };
    bounded(run, deadline, late, async {
        loop {
            match events.recv().await {
                Ok(e) => {
                    if let Some(r) = f(&e) {
                        return r;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => {
                    return Err(Failure::from("the agent stopped".to_string()));
                }
            }
        }
    })
    .await
}

/// The step an event fails by what it says; `None` for an event that fails whichever step the
/// run is in (a kill at a deadline, say).
fn step_of(code: EventCode) -> Option<&'static str> {
    match code {
        EventCode::ServerProcessInvalidPath | EventCode::ServerProcessPullFailed => Some("launch"),
        EventCode::ServerProcessCrashed
        | EventCode::ServerProcessProcessReadyTimeout
        | EventCode::ServerProcessCrashLoop => Some("process-ready"),
        EventCode::ServerProcessUnhealthy | EventCode::ServerProcessTerminatedUnhealthy => {
            Some("health-checks")
        }
        EventCode::GameSessionActivationTimeout | EventCode::GameSessionError => {
            Some("game-session")
        }
        _ => None,
    }
}

fn position(step: &str) -> usize {
    STEPS.iter().position(|s| *s == step).unwrap_or(usize::MAX)
}

/// A failure seen before the run reached the step it belongs to, kept for that step.
#[derive(Default)]
struct Carried {
    event: Option<(usize, Event)>,
}

impl Carried {
    /// Judges a fatal event seen during `step`: the step's failure, or `None` when the event
    /// belongs to a later step and is carried there (the earliest such step's event is kept).
    fn judge(&mut self, step: &str, e: &Event) -> Option<Result<(), Failure>> {
        let now = position(step);
        let due = step_of(e.event_code).map_or(now, position).max(now);
        if due == now {
            return Some(failed_by(e));
        }
        if self.event.as_ref().is_none_or(|(at, _)| due < *at) {
            self.event = Some((due, e.clone()));
        }
        None
    }

    /// The failure carried into `step`, when one is due there or earlier.
    fn due(&mut self, step: &str) -> Option<Result<(), Failure>> {
        match &self.event {
            Some((at, e)) if *at <= position(step) => {
                let r = failed_by(e);
                self.event = None;
                Some(r)
            }
            _ => None,
        }
    }
}

/// [`wait_events`] for a step of the game's way up: a failure carried here fails the step at
/// once, and a fatal event is judged by [`Carried`] before `f` sees the rest.
async fn wait_step(
    run: &mut Run<'_>,
    events: &mut broadcast::Receiver<Event>,
    carried: &mut Carried,
    step: &'static str,
    deadline: Duration,
    what: &str,
    mut f: impl FnMut(&Event) -> Option<Result<(), Failure>>,
) -> Result<Result<(), Failure>, Interrupted> {
    if let Some(r) = carried.due(step) {
        return Ok(r);
    }
    wait_events(run, events, deadline, what, |e| {
        if fatal(e) {
            carried.judge(step, e)
        } else {
            f(e)
        }
    })
    .await
}

fn failed_by(e: &Event) -> Result<(), Failure> {
    Err(Failure::by(e.message.clone(), e))
}

macro_rules! step {
    ($run:expr, $name:expr, $body:expr) => {{
        $run.ui.begin($name);
        let t0 = Instant::now();
        match $body {
            Err(Interrupted) => {
                $run.record($name, t0, Err(Failure::from("interrupted".to_string())));
                return Err(Interrupted);
            }
            Ok(r) => {
                if !$run.record($name, t0, r) {
                    return Ok(Default::default());
                }
            }
        }
    }};
}

/// Runs the game's steps, the first failure ending the run.
pub(super) async fn drive(
    run: &mut Run<'_>,
    cfg: &Config,
    fleet: &crate::agent::fleet::FleetHandle,
    events: &mut broadcast::Receiver<Event>,
    shutdown: &CancellationToken,
) -> Result<(), Interrupted> {
    let mut carried = Carried::default();
    let Some(ready) = come_up(run, cfg, fleet, events, &mut carried).await? else {
        return Ok(());
    };
    let Some((gss_id, host_pid)) = host_a_session(run, cfg, fleet, events, &mut carried).await?
    else {
        return Ok(());
    };
    end(
        run,
        cfg,
        fleet,
        events,
        shutdown,
        (&gss_id, host_pid),
        &ready,
    )
    .await
}

/// launch → ProcessReady → health checks; the pids that called ProcessReady.
async fn come_up(
    run: &mut Run<'_>,
    cfg: &Config,
    fleet: &crate::agent::fleet::FleetHandle,
    events: &mut broadcast::Receiver<Event>,
    carried: &mut Carried,
) -> Result<Option<Vec<u32>>, Interrupted> {
    let total = cfg.total_processes() as usize;
    let t = &cfg.timeouts;
    // launch. A process ahead of its neighbours may call ProcessReady before they have all
    // started: that call is counted here for the next step.
    let mut started = 0;
    let mut ready = Vec::new();
    step!(
        run,
        "launch",
        wait_step(
            run,
            events,
            carried,
            "launch",
            Duration::from_secs(30),
            "every launch",
            |e| {
                match e.event_code {
                    EventCode::ServerProcessStarted => started += 1,
                    EventCode::ServerProcessReady => ready.push(e.pid.unwrap_or_default()),
                    _ => {}
                }
                (started == total).then_some(Ok(()))
            }
        )
        .await
        .map(|r| r.map(|()| (Status::Passed, format!("{total} process(es) started"))))
    );

    // ProcessReady
    step!(
        run,
        "process-ready",
        match carried.due("process-ready") {
            Some(r) => Ok(r),
            None if ready.len() >= total => Ok(Ok(())),
            None => {
                wait_step(
                    run,
                    events,
                    carried,
                    "process-ready",
                    t.process_ready.get() + Duration::from_secs(5),
                    "ProcessReady of every process",
                    |e| {
                        if e.event_code == EventCode::ServerProcessReady {
                            ready.push(e.pid.unwrap_or_default());
                        }
                        (ready.len() == total).then_some(Ok(()))
                    },
                )
                .await
            }
        }
        .map(|r| r.map(|()| (
            Status::Passed,
            format!("{total} process(es) called ProcessReady")
        )))
    );

    // health checks
    let hc = &cfg.health_check;
    let rounds = (HEALTH_CHECKS as u32)
        .saturating_add(hc.failure_threshold)
        .saturating_add(1);
    let budget = (hc.interval.get() + hc.timeout.get()).saturating_mul(rounds);
    step!(
        run,
        "health-checks",
        health_checks(run, fleet, events, carried, budget).await
    );
    Ok(Some(ready))
}

/// A game server session created and activated, a player reserved in it; the session and
/// the pid of the process that hosts it.
async fn host_a_session(
    run: &mut Run<'_>,
    cfg: &Config,
    fleet: &crate::agent::fleet::FleetHandle,
    events: &mut broadcast::Receiver<Event>,
    carried: &mut Carried,
) -> Result<Option<(String, u32)>, Interrupted> {
    // game server session
    let created = fleet
        .control(Control::CreateSession(NewSession {
            max_players: 4,
            name: "gse-agent validate".into(),
            ..Default::default()
        }))
        .await;
    let (gss_id, host_pid) = match created {
        Ok(ControlReply::Session(s)) => (s.id.clone(), s.pid),
        other => {
            run.ui.begin("game-session");
            run.record(
                "game-session",
                Instant::now(),
                Err(Failure::from(format!(
                    "CreateGameServerSession failed: {other:?}"
                ))),
            );
            return Ok(None);
        }
    };
    let activation = cfg.runtime.activation_timeout + Duration::from_secs(5);
    let id = gss_id.clone();
    step!(
        run,
        "game-session",
        wait_step(
            run,
            events,
            carried,
            "game-session",
            activation,
            "ActivateGameServerSession",
            |e| {
                (e.event_code == EventCode::GameSessionActivated
                    && e.game_server_session_id.as_deref() == Some(id.as_str()))
                .then_some(Ok(()))
            }
        )
        .await
        .map(|r| r.map(|()| (
            Status::Passed,
            "OnStartGameServerSession answered; session ACTIVE".into()
        )))
    );

    // player session
    run.ui.begin("player-session");
    let t0 = Instant::now();
    let joined = fleet
        .control(Control::Join {
            gss_id: gss_id.clone(),
            players: vec![NewPlayer {
                player_id: "validate-player".into(),
                player_data: String::new(),
            }],
        })
        .await;
    let r = match joined {
        Ok(ControlReply::Players(p, _))
            if p.first()
                .is_some_and(|p| p.status == crate::agent::session::PlayerStatus::Reserved) =>
        {
            Ok((
                Status::Passed,
                format!("player session {} RESERVED", p[0].id),
            ))
        }
        other => Err(Failure::from(format!(
            "JoinGameServerSession failed: {other:?}"
        ))),
    };
    if !run.record("player-session", t0, r) {
        return Ok(None);
    }
    Ok(Some((gss_id, host_pid)))
}

/// OnProcessTerminate answered with ProcessEnding and an exit by the session's process, then a
/// clean stop of the others.
async fn end(
    run: &mut Run<'_>,
    cfg: &Config,
    fleet: &crate::agent::fleet::FleetHandle,
    events: &mut broadcast::Receiver<Event>,
    shutdown: &CancellationToken,
    (gss_id, host_pid): (&str, u32),
    ready: &[u32],
) -> Result<(), Interrupted> {
    let t = &cfg.timeouts;
    // OnProcessTerminate → ProcessEnding → exit
    let _ = fleet
        .control(Control::EndSessionAndProcess {
            gss_id: gss_id.to_string(),
        })
        .await;
    let deadline = cfg
        .protection
        .no_protection_grace
        .max(cfg.protection.time_limit.min(Duration::from_secs(60)))
        + t.process_exit.get()
        + t.stop_grace.get()
        + Duration::from_secs(5);
    let mut ending = false;
    step!(run, "terminate", wait_events(run, events, deadline, "ProcessEnding and exit after OnProcessTerminate", |e| {
        if e.pid != Some(host_pid) {
            return fatal(e).then(|| failed_by(e));
        }
        match e.event_code {
            EventCode::ServerProcessEnding => {
                ending = true;
                None
            }
            EventCode::ServerProcessEnded => Some(if ending {
                Ok(())
            } else {
                Err(Failure::by("the process exited after OnProcessTerminate without calling ProcessEnding", e))
            }),
            EventCode::ServerProcessForceTerminated => Some(Err(Failure::by(
                "the process ignored OnProcessTerminate and was killed at the deadline",
                e,
            ))),
            _ if fatal(e) => Some(failed_by(e)),
            _ => None,
        }
    }).await.map(|r| r.map(|()| (Status::Passed, "ProcessEnding called, process exited".into()))));

    // stop the rest
    shutdown.cancel();
    let others: Vec<u32> = ready.iter().copied().filter(|p| *p != host_pid).collect();
    let mut left = others.clone();
    let deadline = t.shutdown.get() + t.stop_grace.get() + Duration::from_secs(5);
    step!(
        run,
        "stop",
        wait_events(run, events, deadline, "a clean end of every process", |e| {
            let pid = e.pid?;
            if !others.contains(&pid) {
                return None;
            }
            match e.event_code {
                EventCode::ServerProcessEnded => {
                    left.retain(|p| *p != pid);
                    left.is_empty().then_some(Ok(()))
                }
                EventCode::ServerProcessForceTerminated
                | EventCode::ServerProcessProcessExitTimeout
                | EventCode::ServerProcessCrashed => {
                    Some(Err(Failure::by(format!("on shutdown: {}", e.message), e)))
                }
                _ => None,
            }
        })
        .await
        .map(|r| if others.is_empty() {
            Ok((Status::Passed, "no other process".into()))
        } else {
            r.map(|()| {
                (
                    Status::Passed,
                    format!("{} other process(es) ended cleanly", others.len()),
                )
            })
        })
    );
    Ok(())
}

async fn health_checks(
    run: &mut Run<'_>,
    fleet: &crate::agent::fleet::FleetHandle,
    events: &mut broadcast::Receiver<Event>,
    carried: &mut Carried,
    budget: Duration,
) -> Result<Result<(Status, String), Failure>, Interrupted> {
    let passed = |r: Result<(), Failure>| r.map(|()| (Status::Passed, String::new()));
    if let Some(r) = carried.due("health-checks") {
        return Ok(passed(r));
    }
    let mut poll = tokio::time::interval(Duration::from_millis(100));
    let late = || {
        Failure::from(format!(
            "not every process passed {HEALTH_CHECKS} health checks within {}",
            humantime::format_duration(budget)
        ))
    };
    bounded(run, budget, late, async {
        loop {
            tokio::select! {
                e = events.recv() => {
                    if let Ok(e) = e
                        && fatal(&e)
                        && let Some(r) = carried.judge("health-checks", &e)
                    {
                        return passed(r);
                    }
                }
                _ = poll.tick() => {
                    if let Ok(ControlReply::Processes(ps)) = fleet.control(Control::DescribeProcesses).await
                        && !ps.is_empty()
                        && ps.iter().all(|p| p.health_checks_passed >= HEALTH_CHECKS)
                    {
                        return Ok((Status::Passed, format!("every process passed {HEALTH_CHECKS} OnHealthCheck calls")));
                    }
                }
            }
        }
    })
    .await
}

#[cfg(test)]
mod tests;
