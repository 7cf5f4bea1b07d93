//! The keys file: `SecretId SecretKey [POLICY]` per line, `#` comments. It must be readable by
//! its owner alone; it is read again when it changes, so keys and their policies rotate without
//! a restart. A key without a policy has full access.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::policy::Policy;

/// Why the keys file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    /// It cannot be read.
    #[error("cannot read the keys file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// Others than its owner may read it.
    #[error(
        "the keys file {path} is readable by its group or others (mode {mode:o}): chmod 600 it"
    )]
    Exposed {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A line is not `SecretId SecretKey`.
    #[error("{path}:{line}: {message}")]
    Line {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// No key at all.
    #[error("the keys file {0} holds no key")]
    Empty(PathBuf),
}

/// SecretId → SecretKey.
pub type Keys = HashMap<String, String>;

/// The policy of each SecretId that has one ([`super::policy`]); a key without one has full
/// access.
pub type Policies = HashMap<String, Arc<Policy>>;

/// Reads and checks the keys file (its keys; see [`read_all`] for their policies too).
pub fn read(path: &Path) -> Result<Keys, KeysError> {
    read_all(path).map(|(keys, _)| keys)
}

/// Reads and checks the keys file: its keys and their policies.
pub fn read_all(path: &Path) -> Result<(Keys, Policies), KeysError> {
    let meta = std::fs::metadata(path).map_err(|source| KeysError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mode = meta.mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeysError::Exposed {
            path: path.to_path_buf(),
            mode,
        });
    }
    let text = std::fs::read_to_string(path).map_err(|source| KeysError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(path, &text)
}

/// One key per line: `SecretId SecretKey [POLICY]`, where POLICY is `QcloudGSEFullAccess`,
/// `QcloudGSEReadOnlyAccess` or a CAM policy's JSON on the rest of the line; `#` starts a
/// comment (except inside a JSON policy).
fn parse(path: &Path, text: &str) -> Result<(Keys, Policies), KeysError> {
    let mut keys = Keys::new();
    let mut policies = Policies::new();
    for (n, line) in text.lines().enumerate() {
        let bad = |message: &str| KeysError::Line {
            path: path.to_path_buf(),
            line: n + 1,
            message: message.to_string(),
        };
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let word = |s: &'_ str| -> (String, String) {
            let s = s.trim_start();
            let end = s.find(char::is_whitespace).unwrap_or(s.len());
            (s[..end].to_string(), s[end..].trim().to_string())
        };
        let (id, after_id) = word(line);
        let (key, mut rest) = word(&after_id);
        // `id key#note`: the comment starts in the key's word, as it always has.
        let key = match key.split_once('#') {
            Some((key, _)) => {
                rest = String::new();
                key.to_string()
            }
            None => key,
        };
        let (id, key, rest) = (id.as_str(), key.as_str(), rest.as_str());
        let policy = if rest.starts_with('{') {
            rest
        } else {
            rest.split('#').next().unwrap_or_default().trim()
        };
        if key.starts_with('#') || key.is_empty() {
            return Err(bad("expected `SecretId SecretKey [POLICY]`"));
        }
        if !policy.is_empty() {
            if policy.split_whitespace().count() > 1 && !policy.starts_with('{') {
                return Err(bad(
                    "expected `SecretId SecretKey [POLICY]`: a policy is QcloudGSEFullAccess, QcloudGSEReadOnlyAccess or CAM's JSON",
                ));
            }
            let parsed = Policy::parse(policy).map_err(|e| bad(&e.to_string()))?;
            policies.insert(id.to_string(), Arc::new(parsed));
        }
        if keys.insert(id.to_string(), key.to_string()).is_some() {
            return Err(bad(&format!("SecretId {id} is listed twice")));
        }
    }
    if keys.is_empty() {
        return Err(KeysError::Empty(path.to_path_buf()));
    }
    Ok((keys, policies))
}

/// What identifies one version of the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    inode: u64,
    len: u64,
    mtime: i64,
    mtime_ns: i64,
    /// A `chmod` changes only this.
    ctime: i64,
    ctime_ns: i64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp {
        inode: m.ino(),
        len: m.len(),
        mtime: m.mtime(),
        mtime_ns: m.mtime_nsec(),
        ctime: m.ctime(),
        ctime_ns: m.ctime_nsec(),
    })
}

/// The file looked at again at most this often.
const RECHECK: Duration = Duration::from_secs(1);

/// The keys in force, read again when the file changes. A change that cannot be used (an
/// exposed file, a bad line) is logged and the keys in force are kept.
#[derive(Debug)]
pub struct KeyFile {
    path: PathBuf,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    stamp: Option<Stamp>,
    checked: Instant,
    keys: Arc<Keys>,
    policies: Arc<Policies>,
}

impl KeyFile {
    /// Reads `path` (an error if it cannot be used now).
    pub fn open(path: &Path) -> Result<Self, KeysError> {
        let (keys, policies) = read_all(path)?;
        Ok(Self {
            path: path.to_path_buf(),
            state: Mutex::new(State {
                stamp: stamp(path),
                checked: Instant::now(),
                keys: Arc::new(keys),
                policies: Arc::new(policies),
            }),
        })
    }

    /// The keys in force.
    pub fn keys(&self) -> Arc<Keys> {
        self.current().0
    }

    /// The keys in force and their policies.
    pub fn current(&self) -> (Arc<Keys>, Arc<Policies>) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.checked.elapsed() >= RECHECK {
            state.checked = Instant::now();
            let now = stamp(&self.path);
            if now != state.stamp {
                state.stamp = now;
                match read_all(&self.path) {
                    Ok((keys, policies)) => {
                        tracing::info!(keys.file = %self.path.display(), keys = keys.len(), policies = policies.len(), "API keys read again");
                        state.keys = Arc::new(keys);
                        state.policies = Arc::new(policies);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "the changed keys file cannot be used; the keys read before stay in force");
                    }
                }
            }
        }
        (state.keys.clone(), state.policies.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn write(dir: &Path, text: &str, mode: u32) -> PathBuf {
        write_as(dir, "keys", text, mode)
    }

    fn write_as(dir: &Path, name: &str, text: &str, mode: u32) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn lines_comments_and_mistakes() {
        let dir = tempfile::tempdir().unwrap();
        let keys = read(&write(
            dir.path(),
            "# studio backend\nAKIDone  secret1\n\nAKIDtwo secret2 # ci\nAKIDthree secret3#note\n",
            0o600,
        ))
        .unwrap();
        assert_eq!(keys.len(), 3);
        assert_eq!(keys["AKIDthree"], "secret3");
        assert_eq!(keys["AKIDtwo"], "secret2");
        let (_, policies) = read_all(&write(
            dir.path(),
            "AKIDro s1 QcloudGSEReadOnlyAccess # matchmaker\nAKIDjson s2 {\"version\":\"2.0\",\"statement\":[{\"effect\":\"allow\",\"action\":\"gse:*\",\"resource\":\"qcs::gse:::fleet/fleet-#1\"}]}\nAKIDall s3\n",
            0o600,
        ))
        .unwrap();
        assert_eq!(
            policies.len(),
            2,
            "a key without a policy has none (full access)"
        );
        assert!(policies["AKIDro"].decide("CreateAlias", &[]).is_err());
        for (text, want) in [
            ("AKIDone\n", ":1: expected"),
            ("a b\nx y z\n", ":2: the policy is not a CAM policy"),
            ("a b Qcloud\n", ":1: the policy is not a CAM policy"),
            ("a b\na c\n", "listed twice"),
            ("# nothing\n", "holds no key"),
        ] {
            let e = read(&write(dir.path(), text, 0o600))
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{text:?}: {e}");
        }
        let e = read(&write(dir.path(), "a b\n", 0o640))
            .unwrap_err()
            .to_string();
        assert!(e.contains("mode 640") && e.contains("chmod 600"), "{e}");
    }

    #[test]
    fn a_changed_file_is_read_again_and_a_bad_change_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "old k1\n", 0o600);
        let file = KeyFile::open(&path).unwrap();
        assert!(file.keys().contains_key("old"));
        let rotate = |text: &str, mode| {
            // A new file renamed into place, as key rotation does.
            let tmp = write_as(dir.path(), "keys.new", text, mode);
            std::fs::rename(&tmp, &path).unwrap();
            file.state.lock().unwrap().checked -= RECHECK;
        };
        rotate("new k2\n", 0o600);
        let keys = file.keys();
        assert!(keys.contains_key("new") && !keys.contains_key("old"));
        rotate("exposed k3\n", 0o644);
        assert!(file.keys().contains_key("new"), "the last good keys stay");
    }
}
