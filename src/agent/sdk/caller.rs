//! Who is calling: the `pid` and `requestId` metadata of an SDK call.

use tonic::metadata::MetadataMap;

/// The identity a game process claims on an SDK call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The `pid` metadata.
    pub pid: u32,
    /// The `requestId` metadata (empty when absent).
    pub request_id: String,
}

/// Why the metadata does not identify a caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallerError {
    /// No `pid` metadata.
    #[error("missing metadata \"pid\": every GSE SDK call must carry the caller's process id")]
    MissingPid,
    /// `pid` is not a positive decimal number.
    #[error("metadata \"pid\" is {0:?}, not a process id")]
    BadPid(String),
}

impl Caller {
    /// Reads `pid` and `requestId`. gRPC metadata keys are lowercase on the wire, so
    /// `requestId` arrives as `requestid`; both are matched without regard to case.
    pub fn from_metadata(meta: &MetadataMap) -> Result<Self, CallerError> {
        let get = |name: &str| {
            meta.iter().find_map(|kv| match kv {
                tonic::metadata::KeyAndValueRef::Ascii(k, v)
                    if k.as_str().eq_ignore_ascii_case(name) =>
                {
                    Some(v.to_str().unwrap_or_default().to_string())
                }
                _ => None,
            })
        };
        let raw = get("pid").ok_or(CallerError::MissingPid)?;
        let pid = raw
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| CallerError::BadPid(raw.clone()))?;
        Ok(Self {
            pid,
            request_id: get("requestid").unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_pid_and_request_id() {
        let mut m = MetadataMap::new();
        m.insert("pid", "4242".parse().unwrap());
        m.insert("requestid", "abc".parse().unwrap());
        assert_eq!(
            Caller::from_metadata(&m).unwrap(),
            Caller {
                pid: 4242,
                request_id: "abc".into()
            }
        );
    }

    #[test]
    fn rejects_missing_and_bad_pids() {
        let m = MetadataMap::new();
        assert_eq!(Caller::from_metadata(&m), Err(CallerError::MissingPid));
        for bad in ["x", "-1", "0", ""] {
            let mut m = MetadataMap::new();
            m.insert("pid", bad.parse().unwrap());
            assert!(
                matches!(Caller::from_metadata(&m), Err(CallerError::BadPid(_))),
                "{bad}"
            );
        }
    }
}
