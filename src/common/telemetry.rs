//! Tracing setup: structured logs filtered by `RUST_LOG`, to stderr as text (colour only on a
//! terminal) or JSON, or as native journald entries when systemd connected stderr to the
//! journal; a stderr that cannot be written to is ignored.

use std::ffi::OsStr;
use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (coloured on a terminal); under systemd, when stderr is the
    /// journal, native journald entries whose fields are the log line's fields
    /// (`process.id` → `PROCESS_ID`, see [`journald_field`]).
    Text,
    /// One JSON object per line (for log shippers), whatever stderr is.
    Json,
}

/// The environment variable systemd sets to the `device:inode` of the journal stream it
/// connected to a service's stdout/stderr (systemd.exec(5)).
pub const JOURNAL_STREAM: &str = "JOURNAL_STREAM";

/// `device:inode` of a [`JOURNAL_STREAM`] value, both decimal.
pub fn parse_journal_stream(value: &OsStr) -> Option<(u64, u64)> {
    let (dev, ino) = value.to_str()?.split_once(':')?;
    Some((dev.parse().ok()?, ino.parse().ok()?))
}

/// Whether stderr, whose `(device, inode)` is `stderr`, is the journal stream named by
/// `journal_stream` (the [`JOURNAL_STREAM`] value). systemd documents this check: the variable
/// is inherited by children whose stderr was redirected elsewhere, where it must be ignored.
pub fn stderr_is_journal(journal_stream: Option<&OsStr>, stderr: Option<(u64, u64)>) -> bool {
    match (journal_stream.and_then(parse_journal_stream), stderr) {
        (Some(stream), Some(stderr)) => stream == stderr,
        _ => false,
    }
}

/// The `(device, inode)` of this process's stderr, if it is open.
fn stderr_identity() -> Option<(u64, u64)> {
    let st = nix::sys::stat::fstat(std::io::stderr()).ok()?;
    Some((st.st_dev as u64, st.st_ino as u64))
}

/// The journald field a tracing field becomes: what `tracing-journald` sends with no prefix
/// (dots become `_`, other characters than `A-Z0-9_` are dropped, leading `_` too, upper
/// case): `process.id` → `PROCESS_ID`, `gss.id` → `GSS_ID`, `message` → `MESSAGE`. Used to
/// document and test the mapping; the layer does its own.
pub fn journald_field(name: &str) -> String {
    name.bytes()
        .map(|c| if c == b'.' { b'_' } else { c })
        .skip_while(|&c| c == b'_')
        .filter(|&c| c == b'_' || c.is_ascii_alphanumeric())
        .map(|c| char::from(c.to_ascii_uppercase()))
        .collect()
}

/// Installs the global subscriber; `RUST_LOG` overrides the default `info` level.
pub fn init(format: LogFormat) {
    let filter = || EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let journal = format == LogFormat::Text
        && stderr_is_journal(
            std::env::var_os(JOURNAL_STREAM).as_deref(),
            stderr_identity(),
        );
    let mut journald_error = None;
    if journal {
        // No prefix: `journalctl -u gse-agent PROCESS_ID=proc-0-1-1` finds a process's lines.
        match tracing_journald::layer() {
            Ok(layer) => {
                let _ = tracing_subscriber::registry()
                    .with(filter())
                    .with(layer.with_field_prefix(None))
                    .try_init();
                return;
            }
            Err(e) => journald_error = Some(e),
        }
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter())
        .with_writer(std::io::stderr)
        // A closed or full stderr (a pager that quit, `2>/dev/full`) loses log lines, never the
        // agent: tracing-subscriber's own report of a failed write would panic in eprintln!.
        .log_internal_errors(false)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    if let Some(e) = journald_error {
        tracing::warn!(error = %e, "stderr is the journal but journald's socket is not reachable; logging text");
    }
}

/// Longest caller-supplied value written into a log line.
pub const MAX_LOGGED_BYTES: usize = 256;

/// `value` cut to [`MAX_LOGGED_BYTES`] (at a character boundary), saying how much was cut: a
/// caller's 4 MB field costs a few hundred bytes of log, not 4 MB per refusal.
pub fn clip(value: &str) -> std::borrow::Cow<'_, str> {
    clip_to(value, MAX_LOGGED_BYTES)
}

/// `value` cut to `max` bytes (at a character boundary), saying how much was cut.
pub fn clip_to(value: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if value.len() <= max {
        return value.into();
    }
    let mut end = max;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes cut)", &value[..end], value.len() - end).into()
}

/// Caller-driven log lines (refusals) allowed per source (a claimed pid, say) and window; the
/// rest are counted and the count is said in the next line that is written.
#[derive(Debug)]
pub struct LogLimit<K> {
    per_window: u32,
    window: std::time::Duration,
    /// Per source: window start, lines written in it, lines suppressed since the last one.
    sources: std::sync::Mutex<std::collections::HashMap<K, (std::time::Instant, u32, u64)>>,
}

/// Sources remembered at most (a flood of distinct sources resets the table).
const LOG_LIMIT_SOURCES: usize = 4096;

impl<K: Eq + std::hash::Hash> LogLimit<K> {
    /// At most `per_window` lines per source every `window`.
    pub fn new(per_window: u32, window: std::time::Duration) -> Self {
        Self {
            per_window,
            window,
            sources: Default::default(),
        }
    }

    /// Whether a line from `source` may be written at `now`; when it may, how many lines of
    /// that source were suppressed since the last one written.
    pub fn admit(&self, source: K, now: std::time::Instant) -> Option<u64> {
        let mut sources = self.sources.lock().unwrap_or_else(|p| p.into_inner());
        if sources.len() >= LOG_LIMIT_SOURCES && !sources.contains_key(&source) {
            sources.clear();
        }
        let (start, written, suppressed) = sources.entry(source).or_insert((now, 0, 0));
        if now.duration_since(*start) >= self.window {
            *start = now;
            *written = 0;
        }
        if *written < self.per_window {
            *written += 1;
            Some(std::mem::take(suppressed))
        } else {
            *suppressed += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn the_journal_stream_is_device_colon_inode() {
        assert_eq!(parse_journal_stream(OsStr::new("8:1234")), Some((8, 1234)));
        for bad in ["", "8", "8:", ":1", "8:x", "-1:2", "8:1:2"] {
            assert_eq!(parse_journal_stream(OsStr::new(bad)), None, "{bad}");
        }
    }

    #[test]
    fn stderr_is_the_journal_only_when_its_device_and_inode_match() {
        let stream = Some(OsStr::new("8:1234"));
        assert!(stderr_is_journal(stream, Some((8, 1234))));
        // Inherited by a child whose stderr went elsewhere (a pipe, a file): not the journal.
        assert!(!stderr_is_journal(stream, Some((8, 1235))));
        assert!(!stderr_is_journal(stream, Some((9, 1234))));
        assert!(!stderr_is_journal(stream, None));
        assert!(!stderr_is_journal(None, Some((8, 1234))));
    }

    #[test]
    fn this_process_stderr_is_matched_by_its_own_identity() {
        let (dev, ino) = stderr_identity().expect("the test runner has a stderr");
        let value = format!("{dev}:{ino}");
        assert!(stderr_is_journal(
            Some(OsStr::new(&value)),
            stderr_identity()
        ));
    }

    #[test]
    fn log_fields_become_journald_field_names() {
        for (field, journald) in [
            ("process.id", "PROCESS_ID"),
            ("process.pid", "PROCESS_PID"),
            ("gss.id", "GSS_ID"),
            ("psess.id", "PSESS_ID"),
            ("event.code", "EVENT_CODE"),
            ("exit.code", "EXIT_CODE"),
            ("output.path", "OUTPUT_PATH"),
            ("sdk.verify_callers", "SDK_VERIFY_CALLERS"),
            ("message", "MESSAGE"),
            ("_trusted", "TRUSTED"),
            ("r#type", "RTYPE"),
        ] {
            assert_eq!(journald_field(field), journald, "{field}");
        }
    }

    #[test]
    fn long_values_are_cut_at_a_character_boundary() {
        assert_eq!(clip("short"), "short");
        let long = "é".repeat(1000);
        let cut = clip(&long);
        assert!(cut.len() < MAX_LOGGED_BYTES + 40, "{cut}");
        assert!(cut.ends_with("… (1744 bytes cut)"), "{cut}");
    }

    #[test]
    fn a_flood_from_one_source_is_counted_not_written() {
        let limit = LogLimit::new(3, Duration::from_secs(10));
        let t0 = Instant::now();
        let admitted = (0..100).filter(|_| limit.admit(7, t0).is_some()).count();
        assert_eq!(admitted, 3);
        // Another source is not held up by the first.
        assert_eq!(limit.admit(8, t0), Some(0));
        // The next window says how many were suppressed.
        assert_eq!(limit.admit(7, t0 + Duration::from_secs(10)), Some(97));
    }
}
