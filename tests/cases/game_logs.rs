//! Game logs as GSE kept them: a game names its log files in ProcessReady, ends, and its
//! archive is fetched through the links the Tencent Cloud API hands out (by Tencent's own
//! SDK), within bounds, refusing what lies outside the build.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;

use serde_json::{Value, json};

use crate::helper::tencent::Client;
use crate::helper::*;

const ID: &str = "AKIDstudiobackend";
const KEY: &str = "studio-secret-key";

/// A signed agent (as a studio's backend meets it) running `params`.
fn signed_agent(params: &str, extra: &str, prepare: impl FnOnce(&Path)) -> Agent {
    let settings = format!(
        "capi-keys-file: keys
health-check: {{ interval: 1h, timeout: 1s, failure-threshold: 3 }}
timeouts: {{ process-exit: 2s, stop-grace: 200ms, shutdown: 1s }}
{extra}"
    );
    let mut agent = Agent::start_with(&config(&entry(params, 1), &settings), |game| {
        use std::os::unix::fs::PermissionsExt;
        let keys = game.parent().unwrap().join("keys");
        std::fs::write(&keys, format!("{ID} {KEY}\n")).unwrap();
        std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o600)).unwrap();
        prepare(game);
    });
    agent.signing = Some((ID.into(), KEY.into()));
    agent
}

fn sdk(agent: &Agent) -> Client {
    Client {
        endpoint: agent.capi.to_string(),
        secret_id: ID.into(),
        secret_key: KEY.into(),
    }
}

/// A GET of `url` (`http://host:port/path?query`): the status, the headers and the body.
fn get(url: &str) -> (u16, String, Vec<u8>) {
    let rest = url.strip_prefix("http://").expect("an http link");
    let (authority, target) = rest.split_at(rest.find('/').expect("a path"));
    let mut s = TcpStream::connect(authority).expect("connect to the link's host");
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    write!(
        s,
        "GET {target} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let split = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an HTTP response");
    let head = String::from_utf8_lossy(&out[..split]).into_owned();
    let status = head[9..12].parse().unwrap();
    (status, head, out[split + 4..].to_vec())
}

/// The archive's entries: name → text.
fn unzip(bytes: &[u8]) -> std::collections::BTreeMap<String, String> {
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes)).expect("a zip");
    (0..zip.len())
        .map(|i| {
            let mut f = zip.by_index(i).unwrap();
            let mut text = String::new();
            f.read_to_string(&mut text).unwrap();
            (f.name().unwrap().to_string(), text)
        })
        .collect()
}

/// A link's path, without its expiry and signature.
fn path_of(url: &str) -> &str {
    let rest = url.strip_prefix("http://").unwrap();
    let path = &rest[rest.find('/').unwrap()..];
    path.split('?').next().unwrap()
}

/// Waits until GetGameServerSessionLogUrl gives a link for `gss`; returns it.
fn session_link(agent: &Agent, gss: &str) -> String {
    wait_for("the session's log archive", || {
        let r =
            agent.ok(json!({"Action": "GetGameServerSessionLogUrl", "GameServerSessionId": gss}));
        r["PreSignedUrl"].as_str().map(str::to_string)
    })
}

#[test]
fn a_games_own_log_and_its_output_are_fetched_through_the_sessions_log_url() {
    let agent = signed_agent(
        "--say said-on-stdout --write-file logs/game.log=the-game-wrote-this \
         --log-path /local/game/logs/game.log --log-path /etc/passwd --log-path /local/game/escape \
         --match-duration 200ms",
        "",
        |game| std::os::unix::fs::symlink("/etc", game.join("escape")).unwrap(),
    );
    let ready = agent.wait_ready(1);
    let process_id = ready[0]["ProcessId"].as_str().unwrap().to_string();
    let client = sdk(&agent);
    let created = client.ok(
        "CreateGameServerSession",
        json!({"FleetId": "fleet-test", "MaximumPlayerSessionCount": 2}),
    );
    let gss = created["GameServerSession"]["GameServerSessionId"]
        .as_str()
        .unwrap()
        .to_string();
    agent.wait_session_status(&gss, "TERMINATED");
    session_link(&agent, &gss);
    // The same answer through Tencent's SDK and its model.
    let answer = client.ok(
        "GetGameServerSessionLogUrl",
        json!({"GameServerSessionId": gss}),
    );
    let url = answer["PreSignedUrl"].as_str().unwrap().to_string();
    // The archive of that launch: its process id and start time name it.
    let name = path_of(&url)
        .strip_prefix("/game-logs/")
        .unwrap_or_else(|| panic!("{url}"))
        .to_string();
    assert!(
        name.starts_with(&format!("{process_id}.")) && name.ends_with(".zip"),
        "{url}"
    );
    assert!(url.starts_with(&format!("http://{}/", agent.capi)), "{url}");

    let (status, head, body) = get(&url);
    assert_eq!(status, 200, "{head}\n{}", String::from_utf8_lossy(&body));
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/zip"),
        "{head}"
    );
    let files = unzip(&body);
    // The relaunched game appends to the same file: this launch wrote the first line.
    assert!(
        files["files/logs/game.log"].starts_with("the-game-wrote-this\n"),
        "{files:?}"
    );
    assert!(
        files[&format!("output/{process_id}.stdout.log")].contains("said-on-stdout"),
        "{files:?}"
    );
    assert!(files.contains_key(&format!("output/{process_id}.stderr.log")));
    let manifest: Value = serde_json::from_str(&files["MANIFEST.json"]).unwrap();
    assert_eq!(manifest["ProcessId"], process_id.as_str());
    assert_eq!(manifest["GameServerSessionIds"], json!([gss]));
    assert_eq!(manifest["EventCode"], "SERVER_PROCESS_ENDED");
    let reason = |p: &str| -> String {
        manifest["Skipped"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["Path"] == p)
            .unwrap_or_else(|| panic!("{p} is in the manifest: {manifest}"))["Reason"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert!(reason("/etc/passwd").contains("outside the build"));
    assert!(reason("/local/game/escape").contains("symbolic link to /etc outside the build"));
    assert!(
        !files.values().any(|t| t.contains("root:x:0:0")),
        "nothing outside is read"
    );
    assert!(
        agent.stderr().contains("log path not archived"),
        "refusals are logged"
    );

    // The host's listing has it, and so has the process's end in the fleet's events.
    let listed = client.ok(
        "GetGameServerInstanceLogUrl",
        json!({"FleetId": "fleet-test", "InstanceId": "ins-test", "Offset": 0, "Size": 10}),
    );
    let paths: Vec<&str> = listed["PresignedUrls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| path_of(u.as_str().unwrap()))
        .collect();
    assert!(paths.contains(&path_of(&url)), "{listed}");
    assert_eq!(
        listed["Total"].as_u64().unwrap() as usize,
        paths.len(),
        "{listed}"
    );
    assert_eq!(listed["HasNext"], false);
    let events = client.ok(
        "DescribeFleetEvents",
        json!({"FleetId": "fleet-test", "Limit": 100}),
    );
    let ended = events["Events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["EventCode"] == "SERVER_PROCESS_ENDED")
        .unwrap_or_else(|| panic!("{events}"));
    assert_eq!(
        path_of(ended["PreSignedLogUrl"].as_str().unwrap()),
        path_of(&url),
        "{ended}"
    );
    let started = events["Events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["EventCode"] == "SERVER_PROCESS_STARTED")
        .unwrap();
    assert_eq!(
        started["PreSignedLogUrl"], "",
        "only a process's end has logs"
    );

    // A changed link, one signed with another key, and an expired one are refused.
    let forged = if url.ends_with('0') {
        format!("{}1", &url[..url.len() - 1])
    } else {
        format!("{}0", &url[..url.len() - 1])
    };
    let (status, _, body) = get(&forged);
    assert_eq!(status, 403);
    assert!(String::from_utf8_lossy(&body).contains("signature does not match"));
    let key_hex = std::fs::read_to_string(agent.path("data/log-url.key")).unwrap();
    let key: Vec<u8> = (0..64)
        .step_by(2)
        .map(|i| u8::from_str_radix(&key_hex[i..i + 2], 16).unwrap())
        .collect();
    let ours = gse_agent::agent::logarchive::Signer::with_key(key.try_into().unwrap());
    let base = format!("http://{}", agent.capi);
    let now = gse_agent::api::tc3::now_unix();
    let (status, _, body) = get(&ours.link(&base, &name, now - 10));
    assert_eq!(status, 403);
    assert!(
        String::from_utf8_lossy(&body).contains("expired"),
        "{}",
        String::from_utf8_lossy(&body)
    );
    let stranger = gse_agent::agent::logarchive::Signer::with_key([1; 32]);
    let (status, _, _) = get(&stranger.link(&base, &name, now + 600));
    assert_eq!(status, 403);
    // The agent's own key, a link of its own making, is honoured.
    let (status, _, _) = get(&ours.link(&base, &name, now + 600));
    assert_eq!(status, 200);
    let (status, _, body) = get(&format!("{base}/game-logs/{name}"));
    assert_eq!(status, 403, "no signature, no archive");
    assert!(String::from_utf8_lossy(&body).contains("malformed"));

    // A session nobody knows is not found.
    let message = agent.err(
        json!({"Action": "GetGameServerSessionLogUrl", "GameServerSessionId": "gssess-nobody"}),
        "ResourceNotFound",
    );
    assert!(message.contains("gssess-nobody"), "{message}");
}

const CRASHING: &str = "
restart: { initial-backoff: 50ms, max-backoff: 100ms, reset-after: 1h, crash-loop-max: 1000, crash-loop-window: 1m, crash-loop-cool-down: 1h }";

/// The log link of the first crash, once its archive is written.
fn crash_link(agent: &Agent) -> String {
    let crash = agent.wait_event("SERVER_PROCESS_CRASHED");
    let process_id = crash["ProcessId"].as_str().unwrap().to_string();
    wait_for("the crash's log link", || {
        agent
            .events()
            .into_iter()
            .find(|e| {
                e["ProcessId"] == process_id.as_str() && e["EventCode"] == "SERVER_PROCESS_CRASHED"
            })
            .and_then(|e| {
                e["PreSignedLogUrl"]
                    .as_str()
                    .filter(|u| !u.is_empty())
                    .map(str::to_string)
            })
    })
}

/// The archives in the folder: their file names by process id.
fn archives(agent: &Agent) -> BTreeMap<String, String> {
    std::fs::read_dir(agent.path("data/log-archives"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| {
                    let name = e.file_name().to_str()?.to_string();
                    let process_id = name
                        .strip_suffix(".zip")
                        .filter(|n| !n.starts_with('.'))?
                        .split('.')
                        .next()?
                        .to_string();
                    Some((process_id, name))
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_huge_file_is_cut_to_the_archives_bound_and_links_out_of_the_build_are_refused() {
    let agent = signed_agent(
        "--log-path logs --log-path /local/game/big.log --log-path /local/game/up/secret \
         --crash-at after-ready",
        &format!("log-archives: {{ max-bytes: 64KiB }}{CRASHING}"),
        |game| {
            let mut big = "x".repeat(1 << 20);
            big.push_str("\nthe last line\n");
            std::fs::write(game.join("big.log"), big).unwrap();
            std::os::unix::fs::symlink("..", game.join("up")).unwrap();
            std::fs::write(game.parent().unwrap().join("secret"), "secret").unwrap();
            std::fs::create_dir(game.join("logs")).unwrap();
            std::fs::write(game.join("logs/a.log"), "a\n").unwrap();
            std::os::unix::fs::symlink("../../secret", game.join("logs/b.log")).unwrap();
        },
    );
    let url = crash_link(&agent);
    let (status, _, body) = get(&url);
    assert_eq!(status, 200);
    let files = unzip(&body);
    let total: usize = files
        .iter()
        .filter(|(n, _)| *n != "MANIFEST.json")
        .map(|(_, t)| t.len())
        .sum();
    assert_eq!(
        total,
        64 << 10,
        "the files fill the bound exactly: {:?}",
        files.keys()
    );
    assert!(
        files["files/big.log"].ends_with("\nthe last line\n"),
        "its end is kept"
    );
    assert_eq!(files["files/logs/a.log"], "a\n");
    let manifest: Value = serde_json::from_str(&files["MANIFEST.json"]).unwrap();
    let big = manifest["Files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["Name"] == "files/big.log")
        .unwrap();
    assert_eq!(big["SourceBytes"], (1 << 20) + 15);
    assert!(
        big["Truncated"].as_str().unwrap().contains("max-bytes"),
        "{big}"
    );
    let skipped = manifest["Skipped"].to_string();
    assert!(skipped.contains("climbs out of the build"), "{skipped}");
    assert!(
        skipped.contains("links inside a folder are not followed"),
        "{skipped}"
    );
    assert!(!files.values().any(|t| t == "secret"));
}

#[test]
fn the_oldest_archives_go_first_past_the_folders_bounds() {
    // Every crash leaves an archive of about a kilobyte; 8 KiB hold a few of them. The
    // crash-loop breaker ends the run after 12.
    let agent = signed_agent(
        "--say a-crash --crash-at after-ready",
        "log-archives: { max-bytes: 4KiB, max-total-bytes: 8KiB }
restart: { initial-backoff: 20ms, max-backoff: 50ms, reset-after: 1h, crash-loop-max: 12, crash-loop-window: 10m, crash-loop-cool-down: 1h }",
        |_| {},
    );
    agent.wait_event("SERVER_PROCESS_CRASH_LOOP");
    let crashes = agent.wait_events("SERVER_PROCESS_CRASHED", 12);
    let last = crashes.last().unwrap()["ProcessId"]
        .as_str()
        .unwrap()
        .to_string();
    let generation = |id: &str| -> u64 { id.rsplit('-').next().unwrap().parse().unwrap() };
    let size = |name: &String| {
        std::fs::metadata(agent.path(&format!("data/log-archives/{name}")))
            .map(|m| m.len())
            .unwrap_or(0)
    };
    // Between writing an archive and removing the oldest the folder is over its bound for a
    // moment: wait for the last archive and the bound kept.
    let kept = wait_for("the last crash archived within the bound", || {
        let kept = archives(&agent);
        let bytes: u64 = kept.values().map(size).sum();
        (kept.contains_key(&last) && bytes <= 8 << 10).then_some(kept)
    });
    // What is kept is the newest: a run of launches ending with the latest archived.
    let mut gens: Vec<u64> = kept.keys().map(|id| generation(id)).collect();
    gens.sort();
    assert!(gens[0] > 1, "the first archives are gone: {kept:?}");
    assert!(gens.windows(2).all(|w| w[1] == w[0] + 1), "{kept:?}");
    assert!(*gens.last().unwrap() >= generation(&last), "{kept:?}");
    let listed = agent.ok(json!({
        "Action": "GetGameServerInstanceLogUrl", "FleetId": "fleet-test", "InstanceId": "ins-test",
        "Size": 2
    }));
    assert_eq!(listed["PresignedUrls"].as_array().unwrap().len(), 2);
    assert_eq!(listed["HasNext"], true, "{listed}");
}

#[test]
fn archives_older_than_the_age_bound_are_removed() {
    let agent = signed_agent(
        "--crash-at after-ready",
        "log-archives: { max-age: 2s }
restart: { initial-backoff: 1h, max-backoff: 1h, reset-after: 1h, crash-loop-max: 1000, crash-loop-window: 1m, crash-loop-cool-down: 1h }",
        |_| {},
    );
    let first = agent.wait_event("SERVER_PROCESS_CRASHED")["ProcessId"]
        .as_str()
        .unwrap()
        .to_string();
    wait_for("the archive written", || {
        archives(&agent).contains_key(&first).then_some(())
    });
    wait_for("the archive aged out", || {
        (!archives(&agent).contains_key(&first)).then_some(())
    });
    let link = agent.ok(json!({
        "Action": "GetGameServerInstanceLogUrl", "FleetId": "fleet-test", "InstanceId": "ins-test"
    }));
    assert!(
        !link["PresignedUrls"].to_string().contains(&first),
        "{link}"
    );
}

#[test]
fn a_session_whose_process_still_runs_has_no_log_url_yet() {
    let agent = signed_agent("--accept-players", "", |_| {});
    agent.wait_ready(1);
    let gss = agent.create_session(2)["GameServerSessionId"]
        .as_str()
        .unwrap()
        .to_string();
    agent.wait_session_status(&gss, "ACTIVE");
    let answer = sdk(&agent).ok(
        "GetGameServerSessionLogUrl",
        json!({"GameServerSessionId": gss}),
    );
    assert_eq!(answer["PreSignedUrl"], Value::Null, "{answer}");
    let listed = agent.ok(json!({
        "Action": "GetGameServerInstanceLogUrl", "FleetId": "fleet-test", "InstanceId": "ins-test"
    }));
    assert_eq!(listed["PresignedUrls"], json!([]), "{listed}");
    assert_eq!(listed["Total"], 0);
    let message = agent.err(
        json!({"Action": "GetGameServerInstanceLogUrl", "FleetId": "fleet-test", "InstanceId": "ins-other"}),
        "ResourceNotFound",
    );
    assert!(message.contains("ins-other"), "{message}");
}

/// A game names a folder whose files it named itself to hurt whoever unzips the archive (a
/// backslash path that climbs on Windows, an ESC sequence for a terminal): they are skipped and
/// said, the plain one beside them is archived.
#[test]
fn names_an_unzip_could_be_hurt_by_are_skipped_and_said() {
    let agent = signed_agent("--log-path logs --crash-at after-ready", CRASHING, |game| {
        std::fs::create_dir(game.join("logs")).unwrap();
        std::fs::write(game.join("logs/plain.log"), "plain\n").unwrap();
        std::fs::write(game.join("logs/..\\..\\..\\x.txt"), "climbs\n").unwrap();
        std::fs::write(game.join("logs/\u{1b}[2J\u{1b}]0;owned\u{7}.log"), "esc\n").unwrap();
    });
    let url = crash_link(&agent);
    let (status, _, body) = get(&url);
    assert_eq!(status, 200);
    let files = unzip(&body);
    let names: Vec<&String> = files.keys().collect();
    assert!(
        names
            .iter()
            .all(|n| !n.contains('\\') && !n.chars().any(char::is_control)),
        "{names:?}"
    );
    assert_eq!(files["files/logs/plain.log"], "plain\n");
    let manifest: Value = serde_json::from_str(&files["MANIFEST.json"]).unwrap();
    let skipped = manifest["Skipped"].to_string();
    assert!(skipped.contains("backslash"), "{skipped}");
    assert!(skipped.contains("control character"), "{skipped}");
}
