//! Real processes: group kill, reaping, output files, adoption, the polling fallback.

use std::os::unix::process::CommandExt;
use std::sync::mpsc as std_mpsc;

use nix::errno::Errno;
use nix::sys::signal::killpg;
use nix::unistd::Pid;

use super::proc::Watch;
use super::*;

fn spec(dir: &Path, script: &str) -> LaunchSpec {
    LaunchSpec {
        process_id: "proc-test".into(),
        program: PathBuf::from("/bin/sh"),
        args: vec!["-c".into(), script.into()],
        env: vec![
            ("PATH".into(), "/usr/bin:/bin".into()),
            ("MARK".into(), "m1".into()),
        ],
        cwd: dir.to_path_buf(),
        log_dir: dir.to_path_buf(),
        max_log_bytes: 1 << 20,
        keep_logs: 1,
        tail_lines: 5,
        user: None,
        local_game: None,
    }
}

async fn wait_exit(rx: &std_mpsc::Receiver<(u32, ExitInfo)>) -> (u32, ExitInfo) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(v) = rx.try_recv() {
            return v;
        }
        assert!(std::time::Instant::now() < deadline, "process did not exit");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Whether `pid` is the process that started at `start` and has not exited.
fn running(pid: u32, start: u64) -> bool {
    matches!(identity::read_stat(pid), Ok(Some(s)) if s.start_ticks == start && !s.is_dead())
}

fn poll_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(std::time::Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A `sleep 30` that is the test's own child (not the module's), in its own group: stands in
/// for a game a previous agent started.
struct Stranger(std::process::Child);

impl Stranger {
    fn start() -> Self {
        let child = std::process::Command::new("/bin/sleep")
            .arg("30")
            .process_group(0)
            .spawn()
            .unwrap();
        let me = Stranger(child);
        // Wait for the exec, so the exe link is sleep's.
        poll_until("exec", || {
            std::fs::read_link(format!("/proc/{}/exe", me.pid()))
                .is_ok_and(|e| e.ends_with("sleep"))
        });
        me
    }
    fn pid(&self) -> u32 {
        self.0.id()
    }
    fn alive(&mut self) -> bool {
        self.0.try_wait().unwrap().is_none()
    }
}

impl Drop for Stranger {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn adopt_spec(dir: &Path) -> AdoptSpec {
    AdoptSpec {
        process_id: "proc-adopted".into(),
        log_dir: dir.to_path_buf(),
        max_log_bytes: 1 << 20,
        keep_logs: 1,
        tail_lines: 5,
    }
}

fn group_alive(pgid: u32) -> bool {
    !matches!(killpg(Pid::from_raw(pgid as i32), None), Err(Errno::ESRCH))
}

#[tokio::test]
async fn stop_kills_the_whole_group_even_when_sigterm_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    // The shell ignores SIGTERM and so do its background children.
    let script = "trap '' TERM; sleep 300 & sleep 300 & echo started; wait";
    let (tx, rx) = std_mpsc::channel();
    let h = launch(&spec(dir.path(), script), move |pid, info| {
        tx.send((pid, info)).unwrap();
    })
    .unwrap();
    // Wait until it printed, so the children exist.
    let log = log_path(dir.path(), "proc-test", "stdout");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("started")
    {
        assert!(std::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    h.stop(Duration::from_millis(100));
    let (pid, info) = wait_exit(&rx).await;
    assert_eq!(pid, h.identity.pid);
    assert!(info.killed_by_agent, "{info:?}");
    assert_eq!(info.signal_name().as_deref(), Some("SIGKILL"));
    // Grandchildren are gone too (killed; their zombies belong to init, which may take a moment).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while group_alive(pid) {
        let stat = std::fs::read_dir("/proc").unwrap().filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            let s = std::fs::read_to_string(format!("/proc/{name}/stat")).ok()?;
            let after = &s[s.rfind(')')? + 2..];
            let fields: Vec<&str> = after.split_whitespace().collect();
            (fields.get(2)? == &pid.to_string().as_str()).then(|| fields[0].to_string())
        });
        let states: Vec<String> = stat.collect();
        if states.iter().all(|s| s == "Z") && !states.is_empty() {
            break; // only zombies left, awaiting init's reaping: nothing runs
        }
        assert!(
            std::time::Instant::now() < deadline,
            "group still has {states:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn output_goes_to_log_files_and_the_tail() {
    let dir = tempfile::tempdir().unwrap();
    let script =
        "echo out-$MARK; echo err-line >&2; for i in 1 2 3 4 5 6; do echo line$i; done; exit 7";
    let (tx, rx) = std_mpsc::channel();
    launch(&spec(dir.path(), script), move |pid, info| {
        tx.send((pid, info)).unwrap()
    })
    .unwrap();
    let (_, info) = wait_exit(&rx).await;
    assert_eq!(info.exit_code, Some(7));
    assert!(!info.killed_by_agent);
    assert_eq!(info.output_tail.len(), 5);
    // stdout and stderr are separate files: stdout's lines come first, stderr's last.
    assert!(
        info.output_tail.contains(&"line6".to_string()),
        "{:?}",
        info.output_tail
    );
    assert!(
        !info.output_tail.contains(&"line1".to_string()),
        "{:?}",
        info.output_tail
    );
    let out = std::fs::read_to_string(log_path(dir.path(), "proc-test", "stdout")).unwrap();
    assert!(
        out.starts_with("out-m1\n"),
        "environment is set explicitly: {out}"
    );
    let err = std::fs::read_to_string(log_path(dir.path(), "proc-test", "stderr")).unwrap();
    assert_eq!(err, "err-line\n");
}

#[test]
fn missing_and_non_executable_paths_are_invalid() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    let e = check_executable(&missing).unwrap_err();
    assert!(e.to_string().ends_with("does not exist"), "{e}");
    let plain = dir.path().join("plain");
    std::fs::write(&plain, "#!/bin/sh\n").unwrap();
    let e = check_executable(&plain).unwrap_err();
    assert!(
        e.to_string().contains("is not executable (mode 644)"),
        "{e}"
    );
    let e = check_executable(dir.path()).unwrap_err();
    assert!(e.to_string().contains("not a regular file"), "{e}");
}

#[tokio::test]
async fn the_group_dies_with_its_leader() {
    let dir = tempfile::tempdir().unwrap();
    let (tx, rx) = std_mpsc::channel();
    let h = launch(&spec(dir.path(), "sleep 300 & exit 3"), move |pid, info| {
        tx.send((pid, info)).unwrap()
    })
    .unwrap();
    let (pid, info) = wait_exit(&rx).await;
    assert_eq!(info.exit_code, Some(3));
    assert!(info.status_known);
    assert!(!info.killed_by_agent);
    // Killed before the leader was reaped; its zombie goes to init.
    poll_until("group gone", || {
        !group_alive(pid) || only_zombies_in_group(pid)
    });
    // The handle is inert: nothing signals through it any more, whoever gets the pid next.
    h.stop(Duration::ZERO);
    assert_eq!(h.identity.pid, pid);
}

fn only_zombies_in_group(pgid: u32) -> bool {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|p| identity::read_stat(p).ok().flatten())
        .filter(|s| s.pgrp == pgid)
        .all(|s| s.is_dead())
}

#[tokio::test]
async fn the_identity_is_the_started_program_with_its_start_time() {
    let dir = tempfile::tempdir().unwrap();
    let (tx, _rx) = std_mpsc::channel();
    let mut s = spec(dir.path(), "");
    s.program = PathBuf::from("/bin/sleep");
    s.args = vec!["30".into()];
    let h = launch(&s, move |pid, info| {
        let _ = tx.send((pid, info));
    })
    .unwrap();
    let now = Identity::read(h.identity.pid).unwrap();
    assert_eq!(h.identity, now);
    assert_eq!(now.exe, std::fs::canonicalize("/bin/sleep").unwrap());
    h.stop(Duration::ZERO);
}

#[tokio::test]
async fn rotation_copies_and_truncates_while_the_game_writes() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = spec(
        dir.path(),
        "head -c 3000 /dev/zero | tr '\\0' x; echo; \
         i=0; while [ ! -e proc-test.stdout.log.1 ] && [ $i -lt 400 ]; do sleep 0.05; i=$((i+1)); done; \
         echo after-rotation; echo oops >&2",
    );
    s.max_log_bytes = 1000;
    s.keep_logs = 3;
    let (tx, rx) = std_mpsc::channel();
    launch(&s, move |pid, info| tx.send((pid, info)).unwrap()).unwrap();
    let (_, info) = wait_exit(&rx).await;
    assert_eq!(info.exit_code, Some(0));
    let live = std::fs::read_to_string(log_path(dir.path(), "proc-test", "stdout")).unwrap();
    // O_APPEND writes continue at the truncated end.
    assert!(
        live.ends_with("after-rotation\n") && live.len() < 1000,
        "{live}"
    );
    for n in 1..=3 {
        let rotated = std::fs::metadata(dir.path().join(format!("proc-test.stdout.log.{n}")));
        assert!(rotated.unwrap().len() <= 1000);
    }
    // The tail comes from the files: stdout (reaching into .1), then stderr.
    let want: Vec<String> = ["after-rotation", "oops"].map(String::from).into();
    assert_eq!(info.output_tail[info.output_tail.len() - 2..], want[..]);
    assert!(
        info.output_tail[0].starts_with("xxx"),
        "{:?}",
        info.output_tail
    );
}

#[tokio::test]
async fn an_own_child_is_noticed_by_polling_too() {
    let dir = tempfile::tempdir().unwrap();
    let (tx, rx) = std_mpsc::channel();
    let h = launch_with(
        &spec(dir.path(), "exit 5"),
        Watch::Poll,
        move |pid, info| tx.send((pid, info)).unwrap(),
    )
    .unwrap();
    let (pid, info) = wait_exit(&rx).await;
    assert_eq!((pid, info.exit_code), (h.identity.pid, Some(5)));
}

#[tokio::test]
async fn adopting_a_live_process_supervises_it_with_status_unknown() {
    let dir = tempfile::tempdir().unwrap();
    let mut game = Stranger::start();
    let identity = Identity::read(game.pid()).unwrap();
    let (tx, rx) = std_mpsc::channel();
    let h = adopt(&adopt_spec(dir.path()), &identity, move |pid, info| {
        tx.send((pid, info)).unwrap()
    })
    .unwrap();
    assert_eq!((h.identity.pid, &h.identity), (game.pid(), &identity));
    assert!(game.alive());
    h.stop(Duration::from_millis(50));
    let (pid, info) = wait_exit(&rx).await;
    assert_eq!(pid, game.pid());
    assert!(!info.status_known);
    assert_eq!((info.exit_code, info.signal), (None, None));
    assert_eq!(
        info.describe(),
        "exit status unknown (it outlived an agent restart, so it was not the agent's child)"
    );
    // SIGTERM ended it (the status only its parent, the test, sees).
    let status = game.0.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(15)
    );
}

#[tokio::test]
async fn an_adopted_exit_is_noticed_with_pidfds_and_by_polling() {
    for watch in [Watch::Pidfd, Watch::Poll] {
        let dir = tempfile::tempdir().unwrap();
        let mut game = Stranger::start();
        let identity = Identity::read(game.pid()).unwrap();
        let (tx, rx) = std_mpsc::channel();
        adopt_with(
            &adopt_spec(dir.path()),
            &identity,
            watch,
            move |pid, info| tx.send((pid, info)).unwrap(),
        )
        .unwrap();
        std::fs::write(
            log_path(dir.path(), "proc-adopted", "stderr"),
            "last words\n",
        )
        .unwrap();
        // It dies on its own (here: killed by its real parent, the test).
        game.0.kill().unwrap();
        let (_, info) = wait_exit(&rx).await;
        assert!(!info.status_known, "{watch:?}");
        assert!(!info.killed_by_agent, "{watch:?}");
        assert_eq!(info.output_tail, ["last words"], "{watch:?}");
    }
}

#[tokio::test]
async fn a_reused_pid_is_a_stranger_and_is_never_signalled() {
    let dir = tempfile::tempdir().unwrap();
    let mut game = Stranger::start();
    let mut identity = Identity::read(game.pid()).unwrap();
    identity.start_ticks -= 1;
    let e = adopt(&adopt_spec(dir.path()), &identity, |_, _| {}).unwrap_err();
    assert!(matches!(e, AdoptError::Stranger { .. }), "{e}");
    let mut other = Identity::read(game.pid()).unwrap();
    other.boot_id = "an-earlier-boot".into();
    let e = adopt(&adopt_spec(dir.path()), &other, |_, _| {}).unwrap_err();
    assert!(matches!(e, AdoptError::Stranger { .. }), "{e}");
    // No task was started, so nothing can signal it later; and nothing was sent: no signal is
    // pending, and it runs.
    let status = std::fs::read_to_string(format!("/proc/{}/status", game.pid())).unwrap();
    for field in ["SigPnd:", "ShdPnd:"] {
        let line = status.lines().find(|l| l.starts_with(field)).unwrap();
        assert!(line.ends_with("0000000000000000"), "{line}");
    }
    assert!(game.alive());
    assert!(running(
        game.pid(),
        Identity::read(game.pid()).unwrap().start_ticks
    ));
}

#[tokio::test]
async fn a_dead_pid_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let mut game = Stranger::start();
    let identity = Identity::read(game.pid()).unwrap();
    game.0.kill().unwrap();
    // A zombie has exited: gone, whether or not it was reaped yet.
    poll_until("zombie", || !running(identity.pid, identity.start_ticks));
    let e = adopt(&adopt_spec(dir.path()), &identity, |_, _| {}).unwrap_err();
    assert!(matches!(e, AdoptError::Gone { .. }), "{e}");
    game.0.wait().unwrap();
    let e = adopt(&adopt_spec(dir.path()), &identity, |_, _| {}).unwrap_err();
    assert!(matches!(e, AdoptError::Gone { .. }), "{e}");
}

#[tokio::test]
async fn descendants_that_left_the_group_are_killed_by_their_tag() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = spec(
        dir.path(),
        // Waits until the escapee has its own session (so the group kill cannot catch it).
        "setsid sleep 300 & p=$!; i=0; \
         while [ \"$(cut -d' ' -f6 /proc/$p/stat)\" != $p ] && [ $i -lt 2000 ]; do sleep 0.01; i=$((i+1)); done; \
         [ \"$(cut -d' ' -f6 /proc/$p/stat)\" = $p ] || exit 9; \
         echo escaped $p; sleep 300 & exit 0",
    );
    s.env.extend([
        ("GSE_PROCESS_ID".into(), "proc-escape".into()),
        ("GSE_FLEET_ID".into(), "fleet-unit".into()),
        (
            "GSE_INSTANCE_ID".into(),
            format!("ins-{}", std::process::id()),
        ),
    ]);
    let (tx, rx) = std_mpsc::channel();
    launch(&s, move |pid, info| tx.send((pid, info)).unwrap()).unwrap();
    let (_, info) = wait_exit(&rx).await;
    assert_eq!(
        info.exit_code,
        Some(0),
        "the sleep left the group: {info:?}"
    );
    let line = info
        .output_tail
        .iter()
        .find_map(|l| l.strip_prefix("escaped "))
        .expect("the pid of the escaped sleep")
        .to_string();
    let escaped: u32 = line.parse().unwrap();
    // Its start time is read before the sweep can have run (or it is already gone).
    poll_until(
        "escaped sleep killed",
        || !matches!(identity::read_stat(escaped), Ok(Some(s)) if !s.is_dead()),
    );
}

/// Launches `sleep 30` on a runtime of its own and drops the runtime (the agent going away)
/// after `before_drop`; returns the pid and its start time.
fn launch_and_drop_runtime(dir: &Path, before_drop: impl FnOnce(&ProcessHandle)) -> (u32, u64) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let h = rt.block_on(async {
        let mut s = spec(dir, "");
        s.program = PathBuf::from("/bin/sleep");
        s.args = vec!["30".into()];
        launch(&s, |_, _| {}).unwrap()
    });
    before_drop(&h);
    drop(rt);
    (h.identity.pid, h.identity.start_ticks)
}

#[test]
fn dropping_the_task_kills_the_game_unless_it_was_detached() {
    let dir = tempfile::tempdir().unwrap();
    let (pid, start) = launch_and_drop_runtime(dir.path(), |_| {});
    poll_until("killed on drop", || !running(pid, start));

    let (pid, start) = launch_and_drop_runtime(dir.path(), ProcessHandle::detach);
    assert!(running(pid, start), "a detached game survives its task");
    // Clean up: it is still the test process's child.
    let raw = Pid::from_raw(pid as i32);
    nix::sys::signal::kill(raw, nix::sys::signal::Signal::SIGKILL).unwrap();
    nix::sys::wait::waitpid(raw, None).unwrap();
}

#[tokio::test]
async fn a_reaped_process_is_never_signalled_even_when_its_pid_is_reused() {
    // The pid of a reaped process, now reused by someone else (simulated: a live stranger).
    let mut stranger = Stranger::start();
    // The real sequence: an own child exits and is reaped.
    let (pid, pidfd) = spawn_own(&mut std::process::Command::new("true"), Watch::Pidfd).unwrap();
    let mut gone = Proc::own(pid, pidfd, 0);
    gone.exited().await;
    assert!(gone.finish().is_some_and(|s| s.is_ok()), "reaped");
    // Its pid now names someone else.
    gone.pretend_pid(stranger.pid());
    gone.signal_group(Signal::SIGKILL);
    assert!(gone.finish().is_none(), "nothing left to reap");
    drop(gone); // no kill-on-drop either
    let status = std::fs::read_to_string(format!("/proc/{}/status", stranger.pid())).unwrap();
    let pending = status.lines().find(|l| l.starts_with("ShdPnd:")).unwrap();
    assert!(pending.ends_with("0000000000000000"), "{pending}");
    assert!(stranger.alive());
}
