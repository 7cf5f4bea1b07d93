//! Pre-signed links to archives: `/game-logs/<name>?Expires=<unix>&Signature=<hex>`, the
//! signature an HMAC-SHA256 over the path and the expiry with the agent's own key
//! (`data-dir/log-url.key`, made once, mode 600). A link is fetched without TC3 signing, so it
//! carries its own authority: anyone holding it may fetch that one archive until it expires,
//! and nobody without the key can make or change one.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use hmac::{KeyInit, Mac};

use super::ArchiveError;
use crate::api::tc3::sign::{hex, unhex};

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// The path archives are served under.
pub const PREFIX: &str = "/game-logs/";

/// Why a link is refused (answered 403, with this text).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// `Expires` or `Signature` is missing or malformed.
    #[error(
        "this log link is malformed ({0}): ask GetGameServerSessionLogUrl or GetGameServerInstanceLogUrl for a link"
    )]
    Malformed(&'static str),
    /// The signature is not the one the agent's key makes for this path and expiry.
    #[error(
        "this log link's signature does not match: it was not made by this agent, was changed, or the agent's key (data-dir/log-url.key) was replaced since"
    )]
    Forged,
    /// Signed, but past its expiry.
    #[error(
        "this log link expired at {0}: ask GetGameServerSessionLogUrl or GetGameServerInstanceLogUrl for a new one"
    )]
    Expired(String),
}

/// The agent's link key.
pub struct Signer {
    key: [u8; 32],
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer(..)")
    }
}

impl Signer {
    /// A signer with this key (tests).
    pub fn with_key(key: [u8; 32]) -> Self {
        Self { key }
    }

    /// Reads the key at `path`, or makes it (32 bytes from the kernel's random source, in hex,
    /// mode 600) if there is none. A key others may read is refused: it would let them make
    /// links.
    pub fn load_or_create(path: &Path) -> Result<Self, ArchiveError> {
        let fail = |why: String| ArchiveError::Key {
            path: path.to_path_buf(),
            why,
        };
        // An empty file is what a crash between creating and writing the key left (an agent
        // of the version that wrote it in place): made again.
        if std::fs::metadata(path).is_ok_and(|m| m.len() == 0) {
            let _ = std::fs::remove_file(path);
        }
        // Written whole under a temporary name, then linked into place: a crash leaves no key
        // or the whole key, and a second agent racing for it gets the first one's.
        let made = (|| {
            let dir = path.parent().unwrap_or(Path::new("."));
            let mut tmp = tempfile::Builder::new()
                .prefix(".tmp-log-url.key")
                .permissions(std::fs::Permissions::from_mode(0o600))
                .tempfile_in(dir)?;
            let mut key = [0u8; 32];
            std::fs::File::open("/dev/urandom")?.read_exact(&mut key)?;
            tmp.write_all(format!("{}\n", hex(&key)).as_bytes())?;
            tmp.as_file().sync_all()?;
            tmp.persist_noclobber(path).map_err(|e| e.error)?;
            std::fs::File::open(dir)?.sync_all()?;
            Ok::<_, std::io::Error>(key)
        })();
        match made {
            Ok(key) => Ok(Self { key }),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let meta = std::fs::metadata(path).map_err(|e| fail(e.to_string()))?;
                if meta.permissions().mode() & 0o077 != 0 {
                    return Err(fail(format!(
                        "is readable by others (mode {:o}): chmod 600 it, or delete it to have a new one made (links given out stop working)",
                        meta.permissions().mode() & 0o777
                    )));
                }
                let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
                let key: [u8; 32] = unhex(text.trim())
                    .and_then(|k| k.try_into().ok())
                    .ok_or_else(|| {
                        fail("is not 64 hex digits: delete it to have a new one made (links given out stop working)".into())
                    })?;
                Ok(Self { key })
            }
            Err(e) => Err(fail(format!("cannot create it: {e}"))),
        }
    }

    fn mac(&self, path: &str, expires: i64) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(format!("GET\n{path}\n{expires}").as_bytes());
        mac
    }

    /// The link to the archive `name`, valid until `expires` (Unix seconds), under `base`
    /// (`http://host:port`).
    pub fn link(&self, base: &str, name: &str, expires: i64) -> String {
        let path = format!("{PREFIX}{name}");
        let signature = hex(&self.mac(&path, expires).finalize().into_bytes());
        format!("{base}{path}?Expires={expires}&Signature={signature}")
    }

    /// Checks a link's query for the archive `name` at `now` (Unix seconds): the signature
    /// first (compared in constant time), then the expiry.
    pub fn check(&self, name: &str, query: Option<&str>, now: i64) -> Result<(), LinkError> {
        let (mut expires, mut signature) = (None, None);
        for pair in query.unwrap_or_default().split('&') {
            match pair.split_once('=') {
                Some(("Expires", v)) if expires.is_none() => expires = Some(v),
                Some(("Signature", v)) if signature.is_none() => signature = Some(v),
                Some(("Expires" | "Signature", _)) => {
                    return Err(LinkError::Malformed("a parameter is repeated"));
                }
                _ => {}
            }
        }
        let expires: i64 = expires
            .ok_or(LinkError::Malformed("no Expires"))?
            .parse()
            .map_err(|_| LinkError::Malformed("Expires is not a number"))?;
        let signature = unhex(signature.ok_or(LinkError::Malformed("no Signature"))?)
            .ok_or(LinkError::Malformed("Signature is not hex"))?;
        self.mac(&format!("{PREFIX}{name}"), expires)
            .verify_slice(&signature)
            .map_err(|_| LinkError::Forged)?;
        if now > expires {
            let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(expires.max(0) as u64);
            return Err(LinkError::Expired(crate::api::time::format_time(at)));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(link: &str) -> &str {
        link.split_once('?').unwrap().1
    }

    #[test]
    fn a_link_passes_until_it_expires_and_a_changed_one_never() {
        let s = Signer::with_key([7; 32]);
        let link = s.link("http://h:1", "proc-0-0-1.zip", 1000);
        assert!(link.starts_with("http://h:1/game-logs/proc-0-0-1.zip?Expires=1000&Signature="));
        let q = query(&link);
        assert_eq!(s.check("proc-0-0-1.zip", Some(q), 1000), Ok(()));
        assert!(matches!(
            s.check("proc-0-0-1.zip", Some(q), 1001),
            Err(LinkError::Expired(at)) if at == "1970-01-01T00:16:40Z"
        ));
        // Another archive, a later expiry, another key: forged.
        assert_eq!(
            s.check("proc-0-0-2.zip", Some(q), 0),
            Err(LinkError::Forged)
        );
        let later = q.replace("Expires=1000", "Expires=9999");
        assert_eq!(
            s.check("proc-0-0-1.zip", Some(&later), 0),
            Err(LinkError::Forged)
        );
        let other = Signer::with_key([8; 32]);
        assert_eq!(
            other.check("proc-0-0-1.zip", Some(q), 0),
            Err(LinkError::Forged)
        );
        // A forged link that is also expired says forged.
        assert_eq!(
            other.check("proc-0-0-1.zip", Some(q), 5000),
            Err(LinkError::Forged)
        );
        for bad in [
            None,
            Some(""),
            Some("Expires=1000"),
            Some("Expires=x&Signature=00"),
        ] {
            assert!(
                matches!(
                    s.check("proc-0-0-1.zip", bad, 0),
                    Err(LinkError::Malformed(_))
                ),
                "{bad:?}"
            );
        }
        let twice = format!("{q}&Expires=2000");
        assert!(matches!(
            s.check("proc-0-0-1.zip", Some(&twice), 0),
            Err(LinkError::Malformed(_))
        ));
    }

    #[test]
    fn the_key_is_made_once_private_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log-url.key");
        let a = Signer::load_or_create(&path).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let b = Signer::load_or_create(&path).unwrap();
        assert_eq!(a.key, b.key);
        assert_ne!(a.key, [0; 32]);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = Signer::load_or_create(&path).unwrap_err().to_string();
        assert!(e.contains("readable by others"), "{e}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(&path, "short\n").unwrap();
        let e = Signer::load_or_create(&path).unwrap_err().to_string();
        assert!(e.contains("64 hex digits"), "{e}");
        // What a crash between creating and writing it would leave: a new key is made.
        std::fs::write(&path, "").unwrap();
        let c = Signer::load_or_create(&path).unwrap();
        assert_ne!(c.key, a.key);
        assert_eq!(Signer::load_or_create(&path).unwrap().key, c.key);
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(left, ["log-url.key"], "no temporary file is left");
    }
}
