//! The agent's own log: a crash line says what to look at; under systemd, native journald
//! entries with the line's fields.

use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::helper::*;

const FAST: &str = "
restart: { initial-backoff: 50ms, max-backoff: 200ms, reset-after: 1m, crash-loop-max: 20, crash-loop-window: 1m, crash-loop-cool-down: 1h }";

/// The crash event's process id, last output line and log file; checks the file holds the line.
fn crash_facts(crash: &serde_json::Value, agent: &Agent) -> (String, String, String) {
    let process = crash["ProcessId"].as_str().unwrap().to_string();
    let last = crash["Exit"]["OutputTail"]
        .as_array()
        .and_then(|t| t.last())
        .and_then(|l| l.as_str())
        .unwrap_or_else(|| panic!("the crash has an output tail: {crash}"))
        .to_string();
    let file = crash["Exit"]["LogFile"]
        .as_str()
        .unwrap_or_else(|| panic!("the crash names its log file: {crash}"))
        .to_string();
    let logs = agent.path("data/logs");
    assert!(
        [".stdout.log", ".stderr.log"]
            .iter()
            .any(|s| std::path::Path::new(&file) == logs.join(format!("{process}{s}"))),
        "{file} is one of {process}'s output files"
    );
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.lines().any(|l| l == last), "{file} holds {last:?}");
    (process, last, file)
}

#[test]
fn a_crash_line_names_the_exit_the_last_output_line_and_the_log_file() {
    let agent = Agent::start(&config(
        &entry(
            "--say last-words --crash-at after-ready --crash-with exit:3",
            1,
        ),
        FAST,
    ));
    let crash = agent.wait_event("SERVER_PROCESS_CRASHED");
    let (process, last, file) = crash_facts(&crash, &agent);
    // The fake server says why it crashes on stderr, after --say's words.
    assert!(last.contains("crashing after ProcessReady"), "{last}");
    let line = wait_for("the crash line in the agent's log", || {
        agent
            .stderr()
            .lines()
            .find(|l| l.contains("process crashed") && l.contains(&process))
            .map(str::to_string)
    });
    for part in [
        "process crashed (exit code 3)".to_string(),
        format!("last output: {last:?}"),
        format!("log: {file}"),
        // A field, too (a `log.` prefix would be hidden: tracing-log reserves it).
        format!("output.path={file:?}"),
    ] {
        assert!(line.contains(&part), "{part:?} in {line:?}");
    }
    // stderr is a file here, not a terminal: no colour codes.
    assert!(!agent.stderr().contains('\x1b'), "{}", agent.stderr());
}

/// One native journal entry (the datagram form of systemd's native protocol): `KEY=value`
/// lines, or `KEY\n` + 64-bit little-endian length + value + `\n` for values with newlines.
fn parse_entry(mut data: &[u8]) -> Vec<(String, String)> {
    let mut fields = Vec::new();
    while !data.is_empty() {
        let end = data.iter().position(|&b| b == b'\n').expect("a field ends");
        let line = &data[..end];
        data = &data[end + 1..];
        if let Some(eq) = line.iter().position(|&b| b == b'=') {
            fields.push((
                String::from_utf8_lossy(&line[..eq]).into_owned(),
                String::from_utf8_lossy(&line[eq + 1..]).into_owned(),
            ));
        } else {
            let len = u64::from_le_bytes(data[..8].try_into().unwrap()) as usize;
            let value = &data[8..8 + len];
            assert_eq!(data[8 + len], b'\n', "a binary field ends with a newline");
            fields.push((
                String::from_utf8_lossy(line).into_owned(),
                String::from_utf8_lossy(value).into_owned(),
            ));
            data = &data[8 + len + 1..];
        }
    }
    fields
}

/// The agent started as systemd starts it (stderr is the journal stream named by
/// JOURNAL_STREAM) sends native entries whose fields are the log line's, so
/// `journalctl PROCESS_ID=…` finds a process's lines. journald is stood in for by a socket of
/// the test's, bind-mounted at /run/systemd/journal in a private mount namespace of the agent
/// (the path tracing-journald writes to), so the host's journal, if any, is not touched.
#[test]
fn under_systemd_log_lines_are_journald_entries_with_their_fields() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: a private mount namespace needs root (CI runs the tests as root)");
        return;
    }
    let mut agent = Agent::prepared(
        &config(
            &entry(
                "--say last-words --crash-at after-ready --crash-with exit:3",
                1,
            ),
            FAST,
        ),
        |_| {},
    );
    let journal = agent.path("journal");
    std::fs::create_dir(&journal).unwrap();
    let socket = UnixDatagram::bind(journal.join("socket")).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    // systemd's stream: stderr is a file here; JOURNAL_STREAM names its device and inode.
    let stderr = std::fs::File::create(agent.path("agent.err")).unwrap();
    let meta = stderr.metadata().unwrap();
    let child = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(
            r#"mount -t tmpfs tmpfs /run && mkdir -p /run/systemd/journal &&
               mount --bind "$1" /run/systemd/journal && shift && exec "$@""#,
        )
        .arg("sh")
        .arg(&journal)
        .arg(AGENT)
        .args(["run", "--config"])
        .arg(agent.path("agent.yaml"))
        .env("RUST_LOG", "info")
        .env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("start unshare");
    agent.attach(child);
    let crash = agent.wait_event("SERVER_PROCESS_CRASHED");
    let (process, last, file) = crash_facts(&crash, &agent);
    let pid = crash["Pid"].as_u64().unwrap().to_string();
    let mut entries = Vec::new();
    let entry = wait_for("the crash entry at the journal socket", || {
        let mut buf = vec![0u8; 64 * 1024];
        let n = socket.recv(&mut buf).ok()?;
        let fields = parse_entry(&buf[..n]);
        entries.push(fields.clone());
        let get = |k: &str| fields.iter().find(|(key, _)| key == k).map(|(_, v)| v);
        (get("EVENT_CODE").map(String::as_str) == Some("SERVER_PROCESS_CRASHED")).then_some(fields)
    });
    let get = |k: &str| {
        entry
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("{k} in {entry:?}"))
    };
    // The mapping README documents: dots to underscores, upper case, no prefix.
    use gse_agent::common::telemetry::journald_field;
    assert_eq!(get(&journald_field("process.id")), process);
    assert_eq!(get(&journald_field("process.pid")), pid);
    assert_eq!(get(&journald_field("exit.code")), "3");
    assert_eq!(get(&journald_field("output.path")), file);
    assert_eq!(get("PRIORITY"), "4", "a crash is a warning");
    assert_eq!(get("SYSLOG_IDENTIFIER"), "gse-agent");
    let message = get("MESSAGE");
    assert!(
        message.contains("process crashed (exit code 3)")
            && message.contains(&format!("last output: {last:?}"))
            && message.contains(&format!("log: {file}")),
        "{message}"
    );
    // Nothing went to stderr as text while the journal took the lines.
    assert!(
        !agent.stderr().contains("process crashed"),
        "{}",
        agent.stderr()
    );
    assert!(entries.len() > 1, "the start-up lines came too");
}
