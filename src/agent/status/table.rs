//! The text `gse-agent status` prints: a DescribeAgentStatus answer as aligned tables. Pure:
//! the answer and the time to measure ages against are passed in.

use std::time::{Duration, SystemTime};

use serde::Deserialize;
use serde_json::Value;

/// The parts of a DescribeAgentStatus answer the table shows.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Answer {
    #[serde(rename = "Instance")]
    instance: Instance,
    server_processes: Vec<Process>,
    #[serde(default)]
    entries: Vec<Entry>,
    #[serde(default)]
    events: Vec<Event>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Instance {
    #[serde(rename = "Instance")]
    host: Host,
    process_cnt: u64,
    desired_process_cnt: u64,
    healthy_process_cnt: u64,
    game_session_cnt: u64,
    max_game_session_cnt: u64,
    player_session_cnt: u64,
    launch_failure_cnt: u64,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Host {
    fleet_id: String,
    instance_id: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Process {
    process_id: String,
    pid: u64,
    status: String,
    healthy: bool,
    start_time: String,
    cpu_seconds: Option<f64>,
    rss_bytes: Option<u64>,
    game_server_session_id: Option<String>,
    current_player_session_count: i64,
    restarts: u64,
    last_exit: Option<LastExit>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct LastExit {
    event_code: String,
    reason: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Entry {
    entry_number: u64,
    launch_path: String,
    desired_process_cnt: u64,
    process_cnt: u64,
    launch_failure_cnt: u64,
    last_launch_error: Option<String>,
    paused_until: Option<String>,
    last_exit: Option<LastExit>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Event {
    event_time: String,
    event_code: String,
    #[serde(default)]
    process_id: Option<String>,
    message: String,
}

/// The widest a free-text cell (exit reasons, messages) is printed; the JSON has it whole.
const TEXT_WIDTH: usize = 72;

/// Renders a DescribeAgentStatus answer (the `Response` object) as of `now`; `Err` names what
/// the answer lacks.
pub fn render(answer: &Value, now: SystemTime) -> Result<String, String> {
    let a = Answer::deserialize(answer).map_err(|e| e.to_string())?;
    let i = &a.instance;
    let mut out = format!(
        "{} {}: {} of {} processes running ({} healthy), {} of {} game server sessions, {} players, {} failed launches\n",
        i.host.fleet_id,
        i.host.instance_id,
        i.process_cnt,
        i.desired_process_cnt,
        i.healthy_process_cnt,
        i.game_session_cnt,
        i.max_game_session_cnt,
        i.player_session_cnt,
        i.launch_failure_cnt,
    );

    out.push('\n');
    if a.server_processes.is_empty() {
        out.push_str("no processes\n");
    } else {
        let mut t = Table::new(&[
            "PROCESS",
            "STATE",
            "PID",
            "UPTIME",
            "CPU",
            "RSS",
            "SESSION",
            "PLAYERS",
            "RESTARTS",
            "LAST EXIT",
        ]);
        for p in &a.server_processes {
            let state = if p.status == "ACTIVE" && !p.healthy {
                "ACTIVE/unhealthy".to_string()
            } else {
                p.status.clone()
            };
            t.row(vec![
                p.process_id.clone(),
                state,
                p.pid.to_string(),
                age(&p.start_time, now),
                p.cpu_seconds
                    .map(|s| duration(Duration::from_secs_f64(s.max(0.0)), true))
                    .unwrap_or_else(|| "-".into()),
                p.rss_bytes.map(bytes).unwrap_or_else(|| "-".into()),
                p.game_server_session_id
                    .as_deref()
                    .map(short_session)
                    .unwrap_or_else(|| "-".into()),
                p.current_player_session_count.to_string(),
                p.restarts.to_string(),
                p.last_exit
                    .as_ref()
                    .map(exit_text)
                    .unwrap_or_else(|| "-".into()),
            ]);
        }
        out.push_str(&t.render());
    }

    if !a.entries.is_empty() {
        out.push('\n');
        let mut t = Table::new(&[
            "ENTRY",
            "LAUNCH PATH",
            "RUNNING",
            "FAILED LAUNCHES",
            "PAUSED UNTIL",
            "LAST",
        ]);
        for e in &a.entries {
            let last = match (&e.last_launch_error, &e.last_exit) {
                (Some(error), _) => clip(error),
                (None, Some(x)) => exit_text(x),
                (None, None) => "-".into(),
            };
            t.row(vec![
                e.entry_number.to_string(),
                e.launch_path.clone(),
                format!("{}/{}", e.process_cnt, e.desired_process_cnt),
                e.launch_failure_cnt.to_string(),
                e.paused_until
                    .as_deref()
                    .map(|t| format!("{t} (in {})", until(t, now)))
                    .unwrap_or_else(|| "-".into()),
                last,
            ]);
        }
        out.push_str(&t.render());
    }

    if !a.events.is_empty() {
        out.push_str("\nLAST EVENTS\n");
        let mut t = Table::new(&["TIME", "EVENT", "PROCESS", "MESSAGE"]);
        for e in &a.events {
            t.row(vec![
                e.event_time.clone(),
                e.event_code.clone(),
                e.process_id.clone().unwrap_or_else(|| "-".into()),
                clip(&e.message),
            ]);
        }
        out.push_str(&t.render());
    }
    Ok(out)
}

/// `CODE: reason`, clipped.
fn exit_text(x: &LastExit) -> String {
    clip(&format!("{}: {}", x.event_code, x.reason))
}

/// The text on one line, at most [`TEXT_WIDTH`] characters.
fn clip(s: &str) -> String {
    let one_line: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if one_line.chars().count() <= TEXT_WIDTH {
        return one_line;
    }
    let mut cut: String = one_line.chars().take(TEXT_WIDTH - 1).collect();
    cut.push('…');
    cut
}

/// A session id's last part (`gssess-…`), shortened: the full id is long.
fn short_session(id: &str) -> String {
    let tail = id.rsplit('/').next().unwrap_or(id);
    if tail.chars().count() > 18 {
        let mut s: String = tail.chars().take(17).collect();
        s.push('…');
        s
    } else {
        tail.to_string()
    }
}

/// Time from the RFC 3339 `since` to `now`.
fn age(since: &str, now: SystemTime) -> String {
    match humantime::parse_rfc3339_weak(since) {
        Ok(t) => duration(now.duration_since(t).unwrap_or_default(), false),
        Err(_) => "?".into(),
    }
}

/// Time from `now` to the RFC 3339 `at` (0s once passed).
fn until(at: &str, now: SystemTime) -> String {
    match humantime::parse_rfc3339_weak(at) {
        Ok(t) => duration(t.duration_since(now).unwrap_or_default(), false),
        Err(_) => "?".into(),
    }
}

/// A short duration: `45s`, `3m05s`, `2h07m`, `3d04h`; with `fraction`, under a minute to the
/// hundredth (`0.12s`, CPU time).
pub fn duration(d: Duration, fraction: bool) -> String {
    let s = d.as_secs();
    match s {
        0..60 if fraction => format!("{:.2}s", d.as_secs_f64()),
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86400, s % 86400 / 3600),
    }
}

/// Bytes in binary units: `512B`, `12.3MiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n}B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1}{}", UNITS[unit])
}

/// Columns padded to their widest cell, two spaces apart; the last column is not padded.
struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    fn new(header: &[&str]) -> Self {
        Self {
            rows: vec![header.iter().map(|h| h.to_string()).collect()],
        }
    }

    fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    fn render(&self) -> String {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let width = |c: usize| {
            self.rows
                .iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        };
        let widths: Vec<usize> = (0..columns).map(width).collect();
        let mut out = String::new();
        for r in &self.rows {
            let mut line = String::new();
            for (c, cell) in r.iter().enumerate() {
                if c > 0 {
                    line.push_str("  ");
                }
                line.push_str(cell);
                if c + 1 < r.len() {
                    let pad = widths[c] - cell.chars().count();
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}
