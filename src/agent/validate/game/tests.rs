//! Which step a failure counts against, whatever the other processes are doing.

use super::*;

fn event(code: EventCode) -> Event {
    Event::new(code, code.as_str())
}

fn code(r: Option<Result<(), Failure>>) -> Option<EventCode> {
    r.map(|r| {
        r.unwrap_err()
            .event
            .expect("the failure names its event")
            .event_code
    })
}

/// Each case: the events seen during a step, in order, and the step where the run fails
/// with which event (`None`: nowhere yet).
#[test]
fn a_failure_fails_the_step_it_belongs_to() {
    use EventCode::*;
    let cases: &[(&str, &[EventCode], &str, Option<EventCode>)] = &[
        // A crash while a neighbour is still launched: the launch happened.
        (
            "launch",
            &[ServerProcessCrashed],
            "process-ready",
            Some(ServerProcessCrashed),
        ),
        ("launch", &[ServerProcessCrashed], "launch", None),
        // A launch failure fails the launch at once.
        (
            "launch",
            &[ServerProcessInvalidPath],
            "launch",
            Some(ServerProcessInvalidPath),
        ),
        // An unhealthy process ahead of its neighbour.
        (
            "process-ready",
            &[ServerProcessUnhealthy],
            "process-ready",
            None,
        ),
        (
            "process-ready",
            &[ServerProcessUnhealthy],
            "health-checks",
            Some(ServerProcessUnhealthy),
        ),
        // A failure of an earlier kind, or of none, fails the step the run is in.
        (
            "game-session",
            &[ServerProcessCrashed],
            "game-session",
            Some(ServerProcessCrashed),
        ),
        (
            "launch",
            &[ServerProcessForceTerminated],
            "launch",
            Some(ServerProcessForceTerminated),
        ),
        // The earliest step's failure is the one kept.
        (
            "launch",
            &[
                ServerProcessUnhealthy,
                ServerProcessCrashed,
                GameSessionActivationTimeout,
            ],
            "health-checks",
            Some(ServerProcessCrashed),
        ),
    ];
    for (during, seen, at, fails) in cases {
        let mut carried = Carried::default();
        let mut failed = None;
        for e in *seen {
            failed = failed.or(code(carried.judge(during, &event(*e))));
        }
        let got = failed
            .filter(|_| during == at)
            .or_else(|| code(carried.due(at)));
        assert_eq!(got, *fails, "{seen:?} during {during}, then {at}");
    }
    let mut carried = Carried::default();
    carried.judge("launch", &event(ServerProcessCrashed));
    assert!(carried.due("process-ready").is_some());
    assert!(
        carried.due("health-checks").is_none(),
        "a carried failure is reported once"
    );
}
