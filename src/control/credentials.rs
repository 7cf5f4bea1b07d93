//! Host credentials on the relay: each agent token speaks for exactly one instance.
//!
//! `agent-tokens-file` holds one line per host, `TOKEN INSTANCE-ID [FLEET-ID]` (`#` comments
//! and blank lines ignored), mode 600. A Hello must name the credential's instance, and its
//! fleet when the line names one; without it, the fleet the instance already has in the
//! database (a Hello cannot move a host to another fleet). The file is read again when it
//! changes: a line removed or changed ends that host's stream within seconds and touches no
//! other. A line of one field, today's shared token, is refused at start with the migration:
//! one shared token let any holder become any host.
//!
//! Why tokens per host rather than an enrolment: the relay already carries a bearer token, a
//! host's token is one line an operator (or the provisioning tool that made the host) writes,
//! and revoking it is deleting that line. A client certificate whose subject alternative name
//! is the instance id is the other way in (`relay-tls.client-ca-file`).

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// The longest instance or fleet id a Hello or a credential may name (GSE's ids are far
/// shorter: `ins-xxxxxxxx`, `fleet-xxxxxxxx-xxxxxxxx`).
pub const MAX_ID_CHARS: usize = 128;

/// Why the tokens file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// It could not be read.
    #[error("cannot read the agent tokens file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Its group or others may read it.
    #[error(
        "the agent tokens file {path} is readable by its group or others (mode {mode:o}): chmod 600 it"
    )]
    Exposed {
        /// The file.
        path: PathBuf,
        /// Its mode.
        mode: u32,
    },
    /// A line breaks a rule.
    #[error("{path}:{line}: {message}")]
    Line {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
}

/// One host's credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    /// The instance it speaks for.
    pub instance: String,
    /// The fleet it must name, if the line says.
    pub fleet: Option<String>,
    /// Where it is written (`agent-tokens-file:LINE`): its name in logs, never the secret.
    pub name: String,
}

/// Every credential, by the SHA-256 of its token (a lookup by digest tells nothing of a token
/// by its timing).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Credentials(HashMap<[u8; 32], Credential>);

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Whether `id` is a usable instance or fleet id: 1 to [`MAX_ID_CHARS`] of letters, digits,
/// `-`, `_`, `.`.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.chars().count() <= MAX_ID_CHARS
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

impl Credentials {
    /// Parses the text of a tokens file; `path` names it in errors.
    pub fn parse(path: &Path, text: &str) -> Result<Self, CredentialsError> {
        let mut out = HashMap::new();
        let mut instances: HashMap<String, usize> = HashMap::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let err = |message: String| CredentialsError::Line {
                path: path.to_path_buf(),
                line,
                message,
            };
            let l = raw.trim();
            if l.is_empty() || l.starts_with('#') {
                continue;
            }
            let fields: Vec<&str> = l.split_whitespace().collect();
            let (token, instance, fleet) = match fields[..] {
                [_] => return Err(err(
                    "a token must name the one instance it speaks for: `TOKEN INSTANCE-ID [FLEET-ID]` \
                     (a token shared by many hosts let any holder become any of them; give each \
                     host its own token and write its instance id beside it)"
                        .into(),
                )),
                [t, i] => (t, i, None),
                [t, i, f] => (t, i, Some(f)),
                _ => {
                    return Err(err(format!(
                        "{} fields; a line is `TOKEN INSTANCE-ID [FLEET-ID]`",
                        fields.len()
                    )));
                }
            };
            if token.len() < 16 {
                return Err(err(format!(
                    "the token is {} characters; at least 16 are needed",
                    token.len()
                )));
            }
            for (what, id) in [("instance id", Some(instance)), ("fleet id", fleet)] {
                if let Some(id) = id
                    && !valid_id(id)
                {
                    return Err(err(format!(
                        "{what} {:?} is not 1 to {MAX_ID_CHARS} letters, digits, '-', '_' or '.'",
                        crate::common::telemetry::clip(id)
                    )));
                }
            }
            if let Some(first) = instances.insert(instance.to_string(), line) {
                return Err(err(format!(
                    "{instance} has a credential on line {first} already: one credential per instance"
                )));
            }
            let credential = Credential {
                instance: instance.to_string(),
                fleet: fleet.map(str::to_string),
                name: format!("agent-tokens-file:{line}"),
            };
            if out.insert(digest(token), credential).is_some() {
                return Err(err("this token is on another line already".into()));
            }
        }
        Ok(Self(out))
    }

    /// Reads `path`, refusing a file others may read.
    pub fn read(path: &Path) -> Result<Self, CredentialsError> {
        let read = |source| CredentialsError::Read {
            path: path.to_path_buf(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(read)?;
        let mode = meta.mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(CredentialsError::Exposed {
                path: path.to_path_buf(),
                mode,
            });
        }
        let text = std::fs::read_to_string(path).map_err(read)?;
        Self::parse(path, &text)
    }

    /// The credential of a presented token.
    pub fn find(&self, token: &str) -> Option<&Credential> {
        self.0.get(&digest(token))
    }

    /// How many hosts have one.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The file looked at again at most this often (a revoked host is cut off within it and a
/// stream's next look).
pub const RECHECK: Duration = Duration::from_secs(1);

/// The credentials in force, read again when the file changes. A change that cannot be used
/// is logged and the credentials in force are kept.
#[derive(Debug)]
pub struct TokenFile {
    path: PathBuf,
    state: Mutex<(Option<Stamp>, Instant, Arc<Credentials>)>,
}

/// What identifies one version of the file: its inode, length, change and modification times
/// (a `chmod` changes only the change time).
type Stamp = (u64, u64, i64, i64, i64, i64);

fn stamp(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    Some((
        m.ino(),
        m.len(),
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec(),
    ))
}

impl TokenFile {
    /// Reads `path` (an error if it cannot be used now).
    pub fn open(path: &Path) -> Result<Self, CredentialsError> {
        let credentials = Credentials::read(path)?;
        Ok(Self {
            path: path.to_path_buf(),
            state: Mutex::new((stamp(path), Instant::now(), Arc::new(credentials))),
        })
    }

    /// The credentials in force.
    pub fn credentials(&self) -> Arc<Credentials> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.1.elapsed() >= RECHECK {
            state.1 = Instant::now();
            let now = stamp(&self.path);
            if now != state.0 {
                state.0 = now;
                match Credentials::read(&self.path) {
                    Ok(c) => {
                        tracing::info!(tokens.file = %self.path.display(), hosts = c.len(), "agent tokens read again");
                        state.2 = Arc::new(c);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "the changed agent tokens file cannot be used; the credentials read before stay in force");
                    }
                }
            }
        }
        state.2.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Credentials, String> {
        Credentials::parse(Path::new("tokens"), text).map_err(|e| e.to_string())
    }

    #[test]
    fn each_token_names_one_instance() {
        let c = parse("# hosts\n0123456789abcdef-a ins-a\n\n0123456789abcdef-b ins-b fleet-f1\n")
            .unwrap();
        assert_eq!(c.len(), 2);
        let a = c.find("0123456789abcdef-a").unwrap();
        assert_eq!((a.instance.as_str(), a.fleet.as_deref()), ("ins-a", None));
        assert_eq!(a.name, "agent-tokens-file:2");
        let b = c.find("0123456789abcdef-b").unwrap();
        assert_eq!(b.fleet.as_deref(), Some("fleet-f1"));
        assert!(c.find("0123456789abcdef-c").is_none());
    }

    #[test]
    fn a_shared_token_and_other_mistakes_are_refused_with_their_line() {
        for (text, said) in [
            (
                "shared-token-for-all-hosts\n",
                "tokens:1: a token must name the one instance",
            ),
            ("short ins-a\n", "at least 16"),
            ("0123456789abcdef ins-a fleet-f extra\n", "4 fields"),
            ("0123456789abcdef ins/a\n", "instance id \"ins/a\""),
            (
                "0123456789abcdef-1 ins-a\n0123456789abcdef-2 ins-a\n",
                "tokens:2: ins-a has a credential on line 1 already",
            ),
            (
                "0123456789abcdef-1 ins-a\n0123456789abcdef-1 ins-b\n",
                "on another line already",
            ),
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.contains(said), "{text:?}: {e}");
        }
        let long = format!("0123456789abcdef {}\n", "i".repeat(MAX_ID_CHARS + 1));
        assert!(parse(&long).unwrap_err().contains("1 to 128"));
    }

    #[test]
    fn an_exposed_file_is_refused_and_a_change_is_read_again() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        std::fs::write(&path, "0123456789abcdef-a ins-a\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = TokenFile::open(&path).unwrap_err().to_string();
        assert!(e.contains("mode 644") && e.contains("chmod 600"), "{e}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let file = TokenFile::open(&path).unwrap();
        assert!(file.credentials().find("0123456789abcdef-a").is_some());
        // Revoked by rewriting the file (a new inode, as editors and `mv` make).
        let new = dir.path().join("tokens.new");
        std::fs::write(&new, "0123456789abcdef-b ins-b\n").unwrap();
        std::fs::set_permissions(&new, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::rename(&new, &path).unwrap();
        file.state.lock().unwrap().1 -= RECHECK;
        let now = file.credentials();
        assert!(now.find("0123456789abcdef-a").is_none());
        assert!(now.find("0123456789abcdef-b").is_some());
    }
}
