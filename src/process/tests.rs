//! Real processes: group kill, reaping, output capture.

use std::sync::mpsc as std_mpsc;

use nix::errno::Errno;
use nix::sys::signal::killpg;
use nix::unistd::Pid;

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
    assert_eq!(pid, h.pid);
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
    // stdout and stderr are separate pipes: their relative order is not defined.
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
