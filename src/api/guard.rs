//! Who may call the control API: programs, not browsers.
//!
//! The API has no authentication yet, so a web page open in a browser on the game host must not
//! reach it. A cross-site form POST (CSRF) carries `Origin` and a non-JSON `Content-Type`; a DNS
//! rebinding page carries its own name in `Host`. Programs using the Tencent SDKs send JSON,
//! no `Origin`, and the address they connected to.

use crate::api::ErrorCode;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use axum::http::header::{CONTENT_TYPE, HOST, ORIGIN};
use axum::http::{HeaderMap, Uri};

use super::CapiError;

/// The one code every refusal carries.
const DENIED: ErrorCode = ErrorCode::OperationDenied;

/// The request checks for one listener.
#[derive(Debug, Clone)]
pub struct Guard {
    bound: SocketAddr,
    allowed_hosts: Vec<String>,
    /// Off when requests are signed: the signature covers `Host`, and a page cannot sign.
    check_host: bool,
}

impl Guard {
    /// Checks for a listener bound to `bound`; `allowed_hosts` are extra `Host` values
    /// (`capi-allowed-hosts`), compared without regard to case.
    pub fn new(bound: SocketAddr, allowed_hosts: &[String]) -> Self {
        Self {
            bound,
            allowed_hosts: allowed_hosts
                .iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
            check_host: true,
        }
    }

    /// The same checks without the `Host` rule, for a listener that requires signed requests
    /// (its clients sign the host they connect to, which may be any name of the host).
    pub fn signed(mut self) -> Self {
        self.check_host = false;
        self
    }

    /// Refuses a request a browser could have sent: with `Origin`, with `Sec-Fetch-Site` other
    /// than `none`, for another `Host`, or without `Content-Type: application/json`.
    pub fn check(&self, headers: &HeaderMap, uri: &Uri) -> Result<(), CapiError> {
        if headers.contains_key(ORIGIN) {
            return Err(CapiError::new(
                DENIED,
                "requests from browsers (Origin header) are refused: the control API is for programs",
            ));
        }
        for site in headers.get_all("sec-fetch-site") {
            if !site.as_bytes().eq_ignore_ascii_case(b"none") {
                return Err(CapiError::new(
                    DENIED,
                    format!(
                        "requests from browsers (Sec-Fetch-Site: {}) are refused: the control API is for programs",
                        String::from_utf8_lossy(site.as_bytes())
                    ),
                ));
            }
        }
        let hosts = headers
            .get_all(HOST)
            .iter()
            .map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned());
        // An absolute-form target (`POST http://name/capi`) names the host too.
        let authority = uri.authority().map(|a| a.as_str().to_string());
        for host in hosts.chain(authority) {
            if self.check_host && !self.host_allowed(&host) {
                return Err(CapiError::new(
                    DENIED,
                    format!(
                        "Host {host:?} is not this API's address ({}); add it to capi-allowed-hosts if a proxy forwards it",
                        self.bound
                    ),
                ));
            }
        }
        let json = headers.get_all(CONTENT_TYPE).iter().count() == 1
            && headers.get(CONTENT_TYPE).is_some_and(|v| {
                let v = String::from_utf8_lossy(v.as_bytes());
                let essence = v.split(';').next().unwrap_or_default().trim();
                essence.eq_ignore_ascii_case("application/json")
            });
        if !json {
            let got = headers
                .get(CONTENT_TYPE)
                .map(|v| format!("not {:?}", String::from_utf8_lossy(v.as_bytes())))
                .unwrap_or_else(|| "none was given".into());
            return Err(CapiError::new(
                DENIED,
                format!("Content-Type must be application/json ({got})"),
            ));
        }
        Ok(())
    }

    /// Whether `host` names this listener: its address, or a loopback name when bound to
    /// loopback, with the bound port if a port is given; or an allowed value.
    fn host_allowed(&self, host: &str) -> bool {
        let host = host.trim().to_ascii_lowercase();
        if self.allowed_hosts.contains(&host) {
            return true;
        }
        let Some((name, port)) = split_host(&host) else {
            return false;
        };
        if port.is_some_and(|p| p != self.bound.port()) {
            return false;
        }
        let bound = self.bound.ip().to_canonical();
        let ip = match name.parse::<IpAddr>() {
            Ok(ip) => ip.to_canonical(),
            Err(_) => return name == "localhost" && bound.is_loopback(),
        };
        ip == bound
            || (bound.is_loopback()
                && (ip == IpAddr::V4(Ipv4Addr::LOCALHOST) || ip == IpAddr::V6(Ipv6Addr::LOCALHOST)))
    }
}

/// `name[:port]` or `[v6][:port]` into the name (without brackets) and the port; `None` if
/// malformed (a bare IPv6 address, a bad port).
fn split_host(host: &str) -> Option<(&str, Option<u16>)> {
    let (name, rest) = match host.strip_prefix('[') {
        Some(v6) => {
            let (name, rest) = v6.split_once(']')?;
            name.parse::<Ipv6Addr>().ok()?;
            (name, rest)
        }
        None => match host.find(':') {
            Some(i) => (&host[..i], &host[i..]),
            None => (host, ""),
        },
    };
    if name.is_empty() {
        return None;
    }
    match rest {
        "" => Some((name, None)),
        _ => Some((name, Some(rest.strip_prefix(':')?.parse().ok()?))),
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn check(guard: &Guard, pairs: &[(&'static str, &str)]) -> Result<(), String> {
        let uri = Uri::from_static("/capi");
        guard
            .check(&headers(pairs), &uri)
            .map_err(|e| format!("{}: {}", e.code, e.message))
    }

    const JSON: (&str, &str) = ("content-type", "application/json");

    #[test]
    fn programs_pass() {
        let g = Guard::new("127.0.0.1:8080".parse().unwrap(), &[]);
        for host in [
            "127.0.0.1:8080",
            "localhost:8080",
            "LOCALHOST:8080",
            "[::1]:8080",
            "localhost",
        ] {
            check(&g, &[JSON, ("host", host)]).unwrap_or_else(|e| panic!("{host}: {e}"));
        }
        check(&g, &[("content-type", "Application/JSON; charset=utf-8")]).unwrap();
        check(&g, &[JSON, ("sec-fetch-site", "none")]).unwrap();
    }

    #[test]
    fn browsers_and_foreign_hosts_are_refused() {
        let g = Guard::new("127.0.0.1:8080".parse().unwrap(), &["gse.internal".into()]);
        let cases: &[(&[(&'static str, &str)], &str)] = &[
            (
                &[],
                "Content-Type must be application/json (none was given)",
            ),
            (&[("content-type", "text/plain")], "not \"text/plain\""),
            (
                &[("content-type", "application/jsonx")],
                "Content-Type must be",
            ),
            (&[JSON, ("origin", "null")], "(Origin header)"),
            (&[JSON, ("sec-fetch-site", "cross-site")], "Sec-Fetch-Site"),
            (
                &[JSON, ("host", "evil.example:8080")],
                "Host \"evil.example:8080\"",
            ),
            (
                &[JSON, ("host", "localhost:8081")],
                "is not this API's address",
            ),
            (
                &[JSON, ("host", "10.0.0.1:8080")],
                "is not this API's address",
            ),
            (&[JSON, ("host", "::1")], "is not this API's address"),
            (&[JSON, ("host", "gse.internal:80")], "capi-allowed-hosts"),
        ];
        for (pairs, needle) in cases {
            let e = check(&g, pairs).expect_err(needle);
            assert!(e.starts_with("OperationDenied: "), "{e}");
            assert!(e.contains(needle), "{needle:?} not in {e:?}");
        }
        check(&g, &[JSON, ("host", "GSE.internal")]).unwrap();
    }

    #[test]
    fn an_address_off_loopback_accepts_only_itself() {
        let g = Guard::new("[::1]:9".parse().unwrap(), &[]);
        check(&g, &[JSON, ("host", "[::1]:9")]).unwrap();
        let g = Guard::new("192.0.2.1:9".parse().unwrap(), &[]);
        check(&g, &[JSON, ("host", "192.0.2.1:9")]).unwrap();
        check(&g, &[JSON, ("host", "localhost:9")]).unwrap_err();
        check(&g, &[JSON, ("host", "127.0.0.1:9")]).unwrap_err();
    }

    #[test]
    fn an_absolute_target_names_the_host_too() {
        let g = Guard::new("127.0.0.1:8080".parse().unwrap(), &[]);
        let uri: Uri = "http://evil.example:8080/capi".parse().unwrap();
        let h = headers(&[JSON, ("host", "localhost:8080")]);
        assert!(g.check(&h, &uri).is_err());
    }
}
