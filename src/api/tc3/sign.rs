//! The signature itself: canonical request, string to sign, derived key (Tencent Cloud API
//! 3.0, `TC3-HMAC-SHA256`). Pure functions over bytes; no clock, no keys file.

use hmac::{KeyInit, Mac};
use sha2::{Digest, Sha256};

type HmacSha256 = hmac::Hmac<Sha256>;

/// The only algorithm Tencent Cloud API 3.0 defines.
pub const ALGORITHM: &str = "TC3-HMAC-SHA256";

/// The payload hash of a request whose body is not signed (`X-TC-Content-SHA256`).
pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";

/// What a signature covers.
#[derive(Debug, Clone, Copy)]
pub struct Signed<'a> {
    /// `POST` or `GET`.
    pub method: &'a str,
    /// The path, `/` for the API.
    pub uri: &'a str,
    /// The query string (empty for POST).
    pub query: &'a str,
    /// The signed headers in the order of `SignedHeaders`: lowercase name and value as sent.
    pub headers: &'a [(&'a str, &'a str)],
    /// The body as received, or `None` for an unsigned payload.
    pub body: Option<&'a [u8]>,
    /// `X-TC-Timestamp` as sent.
    pub timestamp: &'a str,
    /// The credential scope's date (`YYYY-MM-DD`).
    pub date: &'a str,
    /// The credential scope's service (`gse`).
    pub service: &'a str,
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hmac(key: &[u8], msg: &[u8]) -> Vec<u8> {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(msg);
    mac.finalize().into_bytes().to_vec()
}

impl Signed<'_> {
    /// The canonical request.
    pub fn canonical_request(&self) -> String {
        let mut names = Vec::with_capacity(self.headers.len());
        let mut canonical_headers = String::new();
        for (name, value) in self.headers {
            canonical_headers.push_str(name);
            canonical_headers.push(':');
            canonical_headers.push_str(value.trim());
            canonical_headers.push('\n');
            names.push(*name);
        }
        let payload_hash = match self.body {
            Some(body) => hex(&Sha256::digest(body)),
            None => hex(&Sha256::digest(UNSIGNED_PAYLOAD.as_bytes())),
        };
        format!(
            "{}\n{}\n{}\n{}\n{}\n{}",
            self.method,
            self.uri,
            self.query,
            canonical_headers,
            names.join(";"),
            payload_hash
        )
    }

    /// The string to sign.
    pub fn string_to_sign(&self) -> String {
        format!(
            "{ALGORITHM}\n{}\n{}/{}/tc3_request\n{}",
            self.timestamp,
            self.date,
            self.service,
            hex(&Sha256::digest(self.canonical_request().as_bytes()))
        )
    }

    fn mac(&self, secret_key: &str) -> HmacSha256 {
        let date = hmac(format!("TC3{secret_key}").as_bytes(), self.date.as_bytes());
        let service = hmac(&date, self.service.as_bytes());
        let signing = hmac(&service, b"tc3_request");
        let mut mac = HmacSha256::new_from_slice(&signing).expect("HMAC takes any key length");
        mac.update(self.string_to_sign().as_bytes());
        mac
    }

    /// The signature (lowercase hex) made with `secret_key`.
    pub fn signature(&self, secret_key: &str) -> String {
        hex(&self.mac(secret_key).finalize().into_bytes())
    }

    /// Whether `signature` (hex) is the one `secret_key` makes, compared in constant time.
    pub fn verify(&self, secret_key: &str, signature: &str) -> bool {
        let Some(given) = unhex(signature) else {
            return false;
        };
        self.mac(secret_key).verify_slice(&given).is_ok()
    }
}

pub(crate) fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The UTC date (`YYYY-MM-DD`) of a Unix time in seconds.
pub fn utc_date(unix: i64) -> String {
    // Days to civil date (Howard Hinnant's algorithm).
    let z = unix.div_euclid(86_400) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tencent's published example (API 3.0 "signature v3", CVM DescribeInstances): the
    /// intermediate hashes and the signature are the ones its documentation prints.
    #[test]
    fn tencents_published_example() {
        let body = br#"{"Limit": 1, "Filters": [{"Values": ["\u672a\u547d\u540d"], "Name": "instance-name"}]}"#;
        let signed = Signed {
            method: "POST",
            uri: "/",
            query: "",
            headers: &[
                ("content-type", "application/json; charset=utf-8"),
                ("host", "cvm.tencentcloudapi.com"),
            ],
            body: Some(body),
            timestamp: "1551113065",
            date: "2019-02-25",
            service: "cvm",
        };
        assert!(
            signed
                .canonical_request()
                .ends_with("35e9c5b0e3ae67532d3c9f17ead6c90222632e5b1ff7f6e89887f1398934f064")
        );
        assert!(
            signed
                .string_to_sign()
                .ends_with("5ffe6a04c0664d6b969fab9a13bdab201d63ee709638e2749d62a09ca18d7031")
        );
        let key = "Gu5t9xGARNpq86cd98joQYCN3*******";
        let want = "2230eefd229f582d8b1b891af7107b91597240707d778ab3738f756258d7652c";
        assert_eq!(signed.signature(key), want);
        assert!(signed.verify(key, want));
        assert!(!signed.verify(key, &want.replace('2', "3")));
        assert!(!signed.verify("another key", want));
        assert!(!signed.verify(key, "not hex"));
        let other_body = Signed {
            body: Some(b"{}"),
            ..signed
        };
        assert!(!other_body.verify(key, want), "the body is signed");
    }

    #[test]
    fn utc_dates() {
        assert_eq!(utc_date(0), "1970-01-01");
        assert_eq!(utc_date(1_551_113_065), "2019-02-25");
        assert_eq!(utc_date(951_782_400), "2000-02-29");
        assert_eq!(utc_date(1_795_651_199), "2026-11-25");
    }
}
