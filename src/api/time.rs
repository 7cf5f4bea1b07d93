//! How the Tencent Cloud API writes times, and Unix milliseconds, the one way both halves
//! stamp a time as a number.

use std::time::SystemTime;

/// ISO 8601 UTC with seconds, as Tencent Cloud API writes times.
pub fn format_time(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// `t` in RFC 3339 with milliseconds, as events and audit records show their time.
pub fn format_time_millis(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// The Unix milliseconds an RFC 3339 time `text` names; `None` when it is not one (or is
/// before 1970).
pub fn parse_millis(text: &str) -> Option<i64> {
    let t = humantime::parse_rfc3339_weak(text).ok()?;
    let d = t.duration_since(std::time::UNIX_EPOCH).ok()?;
    i64::try_from(d.as_millis()).ok()
}

/// Unix milliseconds of `t` (0 before 1970).
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Unix milliseconds now.
pub fn now_ms() -> u64 {
    unix_ms(SystemTime::now())
}
