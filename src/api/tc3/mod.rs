//! Tencent Cloud API 3.0 authentication (`TC3-HMAC-SHA256`), as the official SDKs sign:
//! `Authorization: TC3-HMAC-SHA256 Credential=ID/DATE/gse/tc3_request, SignedHeaders=…,
//! Signature=…` over the method, path, query, the signed headers and the body's SHA-256, with
//! `X-TC-Timestamp` within five minutes of the server's clock. Refusals carry Tencent's codes.
//! Shared by the agent's API and the control plane's.

pub mod keys;
pub mod policy;
pub mod sign;

use crate::api::ErrorCode;
use sign::Signed;

/// The service name in the credential scope.
pub const SERVICE: &str = "gse";
/// How far `X-TC-Timestamp` may be from the server's clock, in seconds.
pub const MAX_SKEW_SECS: i64 = 300;
/// The API version the Tencent SDKs send for GSE (`X-TC-Version`).
pub const API_VERSION: &str = "2019-11-12";

/// The clock a timestamp is checked against and signed with: Unix seconds.
pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Why a request is not authenticated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// `Authorization` (or a header it needs) is missing or malformed.
    #[error("{0}")]
    InvalidAuthorization(String),
    /// The SecretId is not in the keys file.
    #[error("SecretId {0:?} is not known to this server")]
    SecretIdNotFound(String),
    /// The signature is not the one the key makes for this request.
    #[error(
        "the signature does not match the request: sign the exact body sent, with the Host and Content-Type sent (SignedHeaders {0})"
    )]
    SignatureFailure(String),
    /// `X-TC-Timestamp` is too far from the server's clock.
    #[error(
        "X-TC-Timestamp {timestamp} is {skew} s from this server's clock (at most {MAX_SKEW_SECS} s): check the client's clock"
    )]
    SignatureExpire {
        /// The timestamp sent.
        timestamp: i64,
        /// Its distance from now, in seconds.
        skew: i64,
    },
}

impl AuthError {
    /// Tencent's error code.
    pub fn code(&self) -> crate::api::ErrorCode {
        match self {
            Self::InvalidAuthorization(_) => ErrorCode::AuthFailureInvalidAuthorization,
            Self::SecretIdNotFound(_) => ErrorCode::AuthFailureSecretIdNotFound,
            Self::SignatureFailure(_) => ErrorCode::AuthFailureSignatureFailure,
            Self::SignatureExpire { .. } => ErrorCode::AuthFailureSignatureExpire,
        }
    }
}

/// A request as received: its header values by lowercase name, and its body.
pub struct Received<'a, H: Fn(&str) -> Option<&'a str>> {
    /// The method.
    pub method: &'a str,
    /// The path.
    pub uri: &'a str,
    /// The query string.
    pub query: &'a str,
    /// A header's value (one value; `None` if absent or not text).
    pub header: H,
    /// The body, exactly as received.
    pub body: &'a [u8],
}

/// The parts of an `Authorization` header.
struct Authorization<'a> {
    secret_id: &'a str,
    date: &'a str,
    service: &'a str,
    signed_headers: Vec<&'a str>,
    signature: &'a str,
}

fn invalid(message: impl Into<String>) -> AuthError {
    AuthError::InvalidAuthorization(message.into())
}

fn parse_authorization(value: &str) -> Result<Authorization<'_>, AuthError> {
    let (algorithm, rest) = value
        .trim()
        .split_once(char::is_whitespace)
        .ok_or_else(|| {
            invalid(
                "Authorization is not `TC3-HMAC-SHA256 Credential=…, SignedHeaders=…, Signature=…`",
            )
        })?;
    if algorithm != sign::ALGORITHM {
        return Err(invalid(format!(
            "Authorization algorithm {algorithm:?} is not {}",
            sign::ALGORITHM
        )));
    }
    let (mut credential, mut signed, mut signature) = (None, None, None);
    for part in rest.split(',') {
        let (k, v) = part.trim().split_once('=').ok_or_else(|| {
            invalid(format!(
                "Authorization part {:?} is not key=value",
                part.trim()
            ))
        })?;
        match k {
            "Credential" => credential = Some(v),
            "SignedHeaders" => signed = Some(v),
            "Signature" => signature = Some(v),
            _ => {}
        }
    }
    let credential = credential.ok_or_else(|| invalid("Authorization has no Credential"))?;
    let mut scope = credential.split('/');
    let (Some(secret_id), Some(date), Some(service), Some("tc3_request"), None) = (
        scope.next(),
        scope.next(),
        scope.next(),
        scope.next(),
        scope.next(),
    ) else {
        return Err(invalid(format!(
            "Credential {credential:?} is not SecretId/YYYY-MM-DD/service/tc3_request"
        )));
    };
    let signed_headers: Vec<&str> = signed
        .ok_or_else(|| invalid("Authorization has no SignedHeaders"))?
        .split(';')
        .collect();
    for needed in ["content-type", "host"] {
        if !signed_headers.contains(&needed) {
            return Err(invalid(format!("SignedHeaders must include {needed}")));
        }
    }
    Ok(Authorization {
        secret_id,
        date,
        service,
        signed_headers,
        signature: signature.ok_or_else(|| invalid("Authorization has no Signature"))?,
    })
}

/// Checks the request's signature against `keys` at `now` (Unix seconds); returns the
/// SecretId that signed it.
pub fn verify<'a, H: Fn(&str) -> Option<&'a str>>(
    keys: &keys::Keys,
    request: &Received<'a, H>,
    now: i64,
) -> Result<String, AuthError> {
    let header = &request.header;
    let auth = parse_authorization(header("authorization").ok_or_else(|| {
        invalid("the request is not signed: no Authorization header (TC3-HMAC-SHA256)")
    })?)?;
    if auth.service != SERVICE {
        return Err(invalid(format!(
            "the credential's service is {:?}, not {SERVICE:?}",
            auth.service
        )));
    }
    let secret_key = keys
        .get(auth.secret_id)
        .ok_or_else(|| AuthError::SecretIdNotFound(auth.secret_id.to_string()))?;
    let raw_timestamp =
        header("x-tc-timestamp").ok_or_else(|| invalid("X-TC-Timestamp is missing"))?;
    let timestamp: i64 = raw_timestamp.trim().parse().map_err(|_| {
        invalid(format!(
            "X-TC-Timestamp {raw_timestamp:?} is not Unix seconds"
        ))
    })?;
    let skew = i64::try_from(now.abs_diff(timestamp)).unwrap_or(i64::MAX);
    if skew > MAX_SKEW_SECS {
        return Err(AuthError::SignatureExpire { timestamp, skew });
    }
    let failure = || AuthError::SignatureFailure(auth.signed_headers.join(";"));
    if auth.date != sign::utc_date(timestamp) {
        return Err(failure());
    }
    let mut values = Vec::with_capacity(auth.signed_headers.len());
    for name in &auth.signed_headers {
        let value = header(name)
            .ok_or_else(|| invalid(format!("signed header {name} is missing from the request")))?;
        values.push((*name, value));
    }
    let unsigned = header("x-tc-content-sha256") == Some(sign::UNSIGNED_PAYLOAD);
    let signed = Signed {
        method: request.method,
        uri: request.uri,
        query: request.query,
        headers: &values,
        body: (!unsigned).then_some(request.body),
        timestamp: raw_timestamp,
        date: auth.date,
        service: auth.service,
    };
    if signed.verify(secret_key, auth.signature) {
        return Ok(auth.secret_id.to_string());
    }
    // The SDKs sign header values as sent; Tencent's documentation lowercases them.
    let lower: Vec<(&str, String)> = values
        .iter()
        .map(|(n, v)| (*n, v.to_ascii_lowercase()))
        .collect();
    if lower.iter().zip(&values).any(|(l, v)| l.1 != v.1) {
        let lower: Vec<(&str, &str)> = lower.iter().map(|(n, v)| (*n, v.as_str())).collect();
        if (Signed {
            headers: &lower,
            ..signed
        })
        .verify(secret_key, auth.signature)
        {
            return Ok(auth.secret_id.to_string());
        }
    }
    Err(failure())
}

/// The `Authorization` header value for a POST of `body` to `host` at `timestamp`, signed with
/// (`secret_id`, `secret_key`) as the official SDKs sign (for clients, tests and benchmarks).
pub fn authorization(
    secret_id: &str,
    secret_key: &str,
    host: &str,
    content_type: &str,
    body: &[u8],
    timestamp: i64,
) -> String {
    let date = sign::utc_date(timestamp);
    let ts = timestamp.to_string();
    let signed = Signed {
        method: "POST",
        uri: "/",
        query: "",
        headers: &[("content-type", content_type), ("host", host)],
        body: Some(body),
        timestamp: &ts,
        date: &date,
        service: SERVICE,
    };
    format!(
        "{} Credential={secret_id}/{date}/{SERVICE}/tc3_request, SignedHeaders=content-type;host, Signature={}",
        sign::ALGORITHM,
        signed.signature(secret_key)
    )
}

/// The headers of a GSE action sent as the official SDKs send it (`POST /` to `host` with a
/// JSON `body`), signed with (`secret_id`, `secret_key`) at `timestamp`; `Host` itself is the
/// caller's to send. For clients, tests and benchmarks.
pub fn signed_headers(
    secret_id: &str,
    secret_key: &str,
    host: &str,
    action: &str,
    body: &[u8],
    timestamp: i64,
) -> [(&'static str, String); 5] {
    let content_type = "application/json";
    [
        ("Content-Type", content_type.to_string()),
        ("X-TC-Action", action.to_string()),
        ("X-TC-Version", API_VERSION.to_string()),
        ("X-TC-Timestamp", timestamp.to_string()),
        (
            "Authorization",
            authorization(secret_id, secret_key, host, content_type, body, timestamp),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_795_600_000;

    fn keys() -> keys::Keys {
        [("AKIDtest".to_string(), "secret".to_string())].into()
    }

    fn check(headers: &[(&str, &str)], body: &[u8], now: i64) -> Result<String, AuthError> {
        let lookup = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| *v)
        };
        verify(
            &keys(),
            &Received {
                method: "POST",
                uri: "/",
                query: "",
                header: lookup,
                body,
            },
            now,
        )
    }

    #[test]
    fn a_signed_request_passes_and_every_kind_of_wrong_one_gets_its_code() {
        let body = br#"{"FleetId":"fleet-1"}"#;
        let ts = NOW.to_string();
        let auth = authorization(
            "AKIDtest",
            "secret",
            "127.0.0.1:8080",
            "application/json",
            body,
            NOW,
        );
        let headers = |auth: &str, ts: &str| {
            vec![
                ("Authorization", auth.to_string()),
                ("Content-Type", "application/json".to_string()),
                ("Host", "127.0.0.1:8080".to_string()),
                ("X-TC-Timestamp", ts.to_string()),
            ]
        };
        let run = |h: Vec<(&str, String)>, body: &[u8], now| {
            let h: Vec<(&str, &str)> = h.iter().map(|(n, v)| (*n, v.as_str())).collect();
            check(&h, body, now)
        };
        assert_eq!(run(headers(&auth, &ts), body, NOW).unwrap(), "AKIDtest");
        assert_eq!(
            run(headers(&auth, &ts), body, NOW + 299).unwrap(),
            "AKIDtest"
        );
        let code = |r: Result<String, AuthError>| r.unwrap_err().code();
        assert_eq!(
            code(run(headers(&auth, &ts), b"{}", NOW)),
            ErrorCode::AuthFailureSignatureFailure
        );
        assert_eq!(
            code(run(headers(&auth, &ts), body, NOW + 301)),
            ErrorCode::AuthFailureSignatureExpire
        );
        assert_eq!(
            code(run(
                headers(&auth.replace("AKIDtest", "AKIDother"), &ts),
                body,
                NOW
            )),
            ErrorCode::AuthFailureSecretIdNotFound
        );
        for bad in [
            "",
            "Basic abc",
            "TC3-HMAC-SHA256 Credential=AKIDtest/2026-11-25/gse, SignedHeaders=content-type;host, Signature=00",
            "TC3-HMAC-SHA256 Credential=AKIDtest/2026-11-25/cvm/tc3_request, SignedHeaders=content-type;host, Signature=00",
            "TC3-HMAC-SHA256 Credential=AKIDtest/2026-11-25/gse/tc3_request, SignedHeaders=host, Signature=00",
        ] {
            let mut h = headers(bad, &ts);
            if bad.is_empty() {
                h.remove(0);
            }
            assert_eq!(
                code(run(h, body, NOW)),
                ErrorCode::AuthFailureInvalidAuthorization,
                "{bad:?}"
            );
        }
        // Another host than the one signed.
        let mut h = headers(&auth, &ts);
        h[2].1 = "127.0.0.1:9090".into();
        assert_eq!(
            code(run(h, body, NOW)),
            ErrorCode::AuthFailureSignatureFailure
        );
    }
}
