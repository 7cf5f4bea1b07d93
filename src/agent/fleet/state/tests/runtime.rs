//! Runtime configuration updates: new processes start, old ones retire as their sessions end.

use super::*;

#[tokio::test(start_paused = true)]
async fn a_runtime_update_starts_new_processes_and_retires_old_ones_as_sessions_end() {
    let mut h = Harness::new();
    let old = h.pids();
    for pid in &old {
        h.ready(*pid);
    }
    let s = h.activated(old[0], 2);
    let runtime = config::parse_runtime(
        r#"{"ServerProcesses": [{"LaunchPath": "/local/game/v2", "ConcurrentExecutions": 2}],
            "GameServerSessionActivationTimeoutSeconds": 9}"#,
        Path::new("/srv/gse-data/game"),
    )
    .unwrap();
    h.fleet
        .control(Control::UpdateRuntime(Box::new(runtime)), h.now)
        .unwrap();
    let effects = h.settle();
    // Idle old processes are told to terminate; the one hosting a session is not.
    let told = terminated(&effects);
    assert_eq!(told.len(), 2, "{effects:?}");
    assert!(!told.contains(&h.s(old[0])));
    assert!(h.codes().contains(&EventCode::RuntimeConfigurationUpdated));
    // Two new processes under the new LaunchPath: 3 old + 2 new while the old ones drain.
    assert_eq!(h.pids().len(), 5);
    let new: Vec<u32> = h.pids().into_iter().filter(|p| !old.contains(p)).collect();
    for pid in &new {
        assert_eq!(
            h.fleet.spec(h.proc(*pid).slot).launch_path,
            "/local/game/v2"
        );
    }
    assert_eq!(h.fleet.counters().max_game_session_cnt, 2);
    // The retired idle ones end and are not replaced.
    for serial in &told {
        let pid = h.fleet.procs[serial].identity.pid;
        h.exit(pid, 0);
    }
    assert_eq!(h.pids().len(), 3);
    // The session ends: its old process is retired then.
    h.fleet
        .sdk(
            old[0],
            SdkCall::TerminateSession {
                gss_id: s.id.clone(),
            },
            h.now,
        )
        .unwrap();
    let effects = h.settle();
    assert!(
        effects
            .iter()
            .any(|e| matches!(e, Effect::Terminate { serial, .. } if *serial == h.s(old[0]))),
        "{effects:?}"
    );
    h.exit(old[0], 0);
    let mut left = h.pids();
    left.sort();
    let mut want = new.clone();
    want.sort();
    assert_eq!(left, want, "only the new processes remain");
    assert_eq!(h.fleet.activation_timeout, Duration::from_secs(9));
}

/// Runtime updates and redeploys add slots; the ones whose process ended are compacted away,
/// so the table stays the size of what runs, process ids are never reused, and a retiring
/// process that still hosts a session keeps its place through the renumbering.
#[tokio::test(start_paused = true)]
async fn slots_of_old_configurations_are_compacted_and_ids_stay_unique() {
    let mut h = Harness::new();
    let first = h.pids();
    for pid in &first {
        h.ready(*pid);
    }
    // One old process keeps a session through every update.
    let kept = first[0];
    let s = h.activated(kept, 2);
    let mut ids = std::collections::HashSet::new();
    for update in 0..30 {
        let runtime = config::parse_runtime(
            &format!(
                r#"{{"ServerProcesses": [{{"LaunchPath": "/local/game/v{update}", "ConcurrentExecutions": 2}}]}}"#
            ),
            Path::new("/srv/gse-data/game"),
        )
        .unwrap();
        h.fleet
            .control(Control::UpdateRuntime(Box::new(runtime)), h.now)
            .unwrap();
        let effects = h.settle();
        for serial in terminated(&effects) {
            let pid = h.fleet.procs[&serial].identity.pid;
            h.exit(pid, 0);
        }
        for pid in h.pids() {
            if h.proc(pid).phase == Phase::Launching {
                h.ready(pid);
            }
        }
        for p in h.fleet.procs.values() {
            ids.insert(p.id.clone());
        }
        assert!(
            h.fleet.slots.len() <= 2 + 2 + 1,
            "update {update}: {} slots",
            h.fleet.slots.len()
        );
    }
    assert!(ids.len() >= 60, "{} distinct process ids", ids.len());
    // The session's process is where it was, still serving; its slot is retiring.
    let p = h.proc(kept);
    assert!(h.fleet.slots[p.slot].retiring);
    assert_eq!(h.fleet.slots[p.slot].serial, Some(h.s(kept)));
    h.fleet
        .sdk(
            kept,
            SdkCall::TerminateSession {
                gss_id: s.id.clone(),
            },
            h.now,
        )
        .unwrap();
    let effects = h.settle();
    assert!(terminated(&effects).contains(&h.s(kept)), "{effects:?}");
    h.exit(kept, 0);
    assert_eq!(h.pids().len(), 2, "only the current processes run");
    assert!(
        h.fleet
            .current_runtime()
            .server_processes
            .iter()
            .all(|e| e.launch_path.ends_with("/v29")),
        "the runtime in force is the last one"
    );
    // Entry numbers survive a restart: ids stay unique after it.
    let numbers: Vec<usize> = h.fleet.entries.iter().map(|e| e.number).collect();
    let next = h.fleet.next_entry_number;
    restart(&mut h);
    let restored: Vec<usize> = h.fleet.entries.iter().map(|e| e.number).collect();
    assert_eq!((restored, h.fleet.next_entry_number), (numbers, next));
}

#[tokio::test(start_paused = true)]
async fn a_process_launched_under_the_old_configuration_is_stopped_at_once() {
    let mut h = Harness::new();
    let pid = h.pids()[0];
    // A crash queues an immediate relaunch; the runtime update lands before it is spawned.
    h.fleet.exited(h.s(pid), ExitInfo::default(), h.now);
    let launch = h
        .fleet
        .take_effects()
        .into_iter()
        .find_map(|e| match e {
            Effect::Launch {
                slot,
                serial,
                process_id,
                ..
            } => Some((slot, serial, process_id)),
            _ => None,
        })
        .expect("an immediate relaunch");
    let runtime = config::parse_runtime(
        r#"{"ServerProcesses": [{"LaunchPath": "/local/game/v2", "ConcurrentExecutions": 1}]}"#,
        Path::new("/srv/gse-data/game"),
    )
    .unwrap();
    h.fleet
        .control(Control::UpdateRuntime(Box::new(runtime)), h.now)
        .unwrap();
    h.settle();
    h.fleet
        .spawned(launch.0, launch.1, launch.2, identity(999), h.now);
    let effects = h.settle();
    assert!(effects.iter().any(|e| is_stop(e, h.s(999))), "{effects:?}");
    h.exit_with(
        999,
        ExitInfo {
            signal: Some(15),
            ..Default::default()
        },
    );
    assert_eq!(
        h.fleet.slots[launch.0].failures, 0,
        "stopping it is not its failure"
    );
}
