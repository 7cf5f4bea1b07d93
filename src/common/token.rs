//! A bearer token file (`metrics-token-file`, `upstream.token-file`): one line, mode 600,
//! read at start, compared in constant time on every request.

use std::path::{Path, PathBuf};

/// Why the token file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Its group or others may read it.
    #[error(
        "the token file {path} is readable by its group or others (mode {mode:o}): chmod 600 it"
    )]
    Exposed {
        /// The file.
        path: PathBuf,
        /// Its mode.
        mode: u32,
    },
    /// The file holds no usable token.
    #[error("{path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: &'static str,
    },
}

/// The shortest token accepted: a guessable one would protect nothing.
pub const MIN_TOKEN_BYTES: usize = 16;

/// Reads the token: the file's text without surrounding whitespace, at least
/// [`MIN_TOKEN_BYTES`] visible ASCII characters, nothing else (Prometheus sends the file's
/// content the same way, trimmed).
pub fn read(path: &Path) -> Result<String, TokenError> {
    use std::os::unix::fs::MetadataExt;
    let read = |source| TokenError::Read {
        path: path.to_path_buf(),
        source,
    };
    let mode = std::fs::metadata(path).map_err(read)?.mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(TokenError::Exposed {
            path: path.to_path_buf(),
            mode,
        });
    }
    let text = std::fs::read_to_string(path).map_err(read)?;
    parse(text.trim()).map_err(|reason| TokenError::Invalid {
        path: path.to_path_buf(),
        reason,
    })
}

fn parse(token: &str) -> Result<String, &'static str> {
    if token.len() < MIN_TOKEN_BYTES {
        return Err("the token must be at least 16 characters (e.g. `openssl rand -hex 32`)");
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("the token must be one line of visible ASCII characters, no spaces");
    }
    Ok(token.to_string())
}

/// Whether an `Authorization` header value carries `token` as a bearer token; the comparison
/// takes the same time wherever the first difference is.
pub fn authorizes(header: Option<&str>, token: &str) -> bool {
    let Some(given) = header.and_then(|h| {
        let (scheme, rest) = h.split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
    }) else {
        return false;
    };
    given.len() == token.len()
        && given
            .bytes()
            .zip(token.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_or_spaced_tokens_are_refused() {
        assert!(parse("short").is_err());
        assert!(parse("with a space inside it").is_err());
        assert_eq!(parse("0123456789abcdef").as_deref(), Ok("0123456789abcdef"));
    }

    #[test]
    fn only_the_exact_bearer_token_authorizes() {
        let t = "0123456789abcdef";
        assert!(authorizes(Some("Bearer 0123456789abcdef"), t));
        assert!(authorizes(Some("bearer 0123456789abcdef"), t));
        assert!(!authorizes(Some("Bearer 0123456789abcdeF"), t));
        assert!(!authorizes(Some("Bearer 0123456789abcde"), t));
        assert!(!authorizes(Some("Basic 0123456789abcdef"), t));
        assert!(!authorizes(Some("0123456789abcdef"), t));
        assert!(!authorizes(None, t));
    }

    #[test]
    fn a_file_is_read_trimmed_and_a_missing_one_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "0123456789abcdef\n").unwrap();
        let err = read(&path).unwrap_err().to_string();
        assert!(
            err.contains("mode 644") && err.contains("chmod 600"),
            "{err}"
        );
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read(&path).unwrap(), "0123456789abcdef");
        let err = read(&dir.path().join("nope")).unwrap_err().to_string();
        assert!(err.contains("cannot read") && err.contains("nope"), "{err}");
    }
}
