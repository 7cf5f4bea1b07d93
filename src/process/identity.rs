//! Placeholder replaced by the process layer's Identity at merge.

/// Which process a pid names.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Identity {
    /// OS pid.
    pub pid: u32,
    /// Start time in clock ticks after boot.
    pub start_ticks: u64,
    /// The executable.
    pub exe: std::path::PathBuf,
}

impl Identity {
    /// Reads the identity of `pid` from /proc.
    pub fn read(pid: u32) -> std::io::Result<Identity> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        let close = stat.rfind(')').ok_or(std::io::ErrorKind::InvalidData)?;
        let start_ticks = stat[close + 2..]
            .split_whitespace()
            .nth(19)
            .and_then(|f| f.parse().ok())
            .ok_or(std::io::ErrorKind::InvalidData)?;
        let exe = std::fs::read_link(format!("/proc/{pid}/exe"))?;
        Ok(Identity {
            pid,
            start_ticks,
            exe,
        })
    }
}

/// Placeholder.
#[derive(Debug, Clone)]
pub struct AdoptSpec {
    /// Agent id.
    pub process_id: String,
    /// Logs.
    pub log_dir: std::path::PathBuf,
    /// Rotation.
    pub max_log_bytes: u64,
    /// Rotated files kept.
    pub keep_logs: u32,
    /// Tail lines.
    pub tail_lines: usize,
}

/// Placeholder.
#[derive(Debug, thiserror::Error)]
pub enum AdoptError {
    /// Gone.
    #[error("process {0} is gone")]
    Gone(u32),
}

/// Placeholder.
pub fn adopt(
    _spec: &AdoptSpec,
    identity: &Identity,
    _on_exit: impl FnOnce(u32, super::ExitInfo) + Send + 'static,
) -> Result<super::ProcessHandle, AdoptError> {
    Err(AdoptError::Gone(identity.pid))
}

impl super::ProcessHandle {
    /// Placeholder.
    pub fn detach(self) {}
}
