//! How the Tencent Cloud API writes times.

use std::time::SystemTime;

/// ISO 8601 UTC with seconds, as Tencent Cloud API writes times.
pub fn format_time(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}
