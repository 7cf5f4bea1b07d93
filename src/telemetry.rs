//! Tracing setup: structured logs to stderr, text or JSON, filtered by `RUST_LOG`; colour only
//! on a terminal; a stderr that cannot be written to is ignored.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line (for journald/log shippers).
    Json,
}

/// Installs the global subscriber; `RUST_LOG` overrides the default `info` level.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // A closed or full stderr (a pager that quit, `2>/dev/full`) loses log lines, never the
        // agent: tracing-subscriber's own report of a failed write would panic in eprintln!.
        .log_internal_errors(false)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// Longest caller-supplied value written into a log line.
pub const MAX_LOGGED_BYTES: usize = 256;

/// `value` cut to [`MAX_LOGGED_BYTES`] (at a character boundary), saying how much was cut: a
/// caller's 4 MB field costs a few hundred bytes of log, not 4 MB per refusal.
pub fn clip(value: &str) -> std::borrow::Cow<'_, str> {
    if value.len() <= MAX_LOGGED_BYTES {
        return value.into();
    }
    let mut end = MAX_LOGGED_BYTES;
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
