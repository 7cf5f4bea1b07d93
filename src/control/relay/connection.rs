//! What a relay stream brings with it: its connection (peer address, proof, client
//! certificate) and its first message, the Hello.

use tonic::{Request, Status, Streaming};

use super::{HELLO_WITHIN, Refusal, Refused, credentials};
use crate::upstream_proto as up;

/// The names a relay request's client certificate gives its holder (its DNS subject
/// alternative names and its subject's common name), if it presented one.
pub(super) fn certificate_names<T>(request: &Request<T>) -> Option<Vec<String>> {
    use crate::common::listen::ConnInfo;
    let certs = request
        .extensions()
        .get::<tonic::transport::server::TlsConnectInfo<ConnInfo<()>>>()?
        .peer_certs()?;
    let leaf = certs.first()?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
    let mut names: Vec<String> = cert
        .subject()
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok().map(str::to_string))
        .collect();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(dns) = name {
                names.push(dns.to_string());
            }
        }
    }
    Some(names)
}

/// What the listener knows of a relay request's connection (plain or TLS).
pub(super) fn connection_of<T>(
    request: &Request<T>,
) -> Option<&crate::common::listen::ConnInfo<()>> {
    use crate::common::listen::ConnInfo;
    let ext = request.extensions();
    ext.get::<ConnInfo<()>>().or_else(|| {
        ext.get::<tonic::transport::server::TlsConnectInfo<ConnInfo<()>>>()
            .map(|t| t.get_ref())
    })
}

/// The peer address of a relay request, for logs.
pub(super) fn peer_of<T>(request: &Request<T>) -> String {
    connection_of(request)
        .map(|c| c.peer.to_string())
        .unwrap_or_else(|| "unknown".into())
}

/// The stream's first message, which must be a Hello naming valid ids, within [`HELLO_WITHIN`].
pub(super) async fn read_hello(
    inbound: &mut Streaming<up::AgentMessage>,
) -> Result<up::Hello, Refused> {
    let no_hello = |s| Err(Refusal::NoHello.with(s));
    let hello = match tokio::time::timeout(HELLO_WITHIN, inbound.message()).await {
        Ok(Ok(Some(up::AgentMessage {
            body: Some(up::agent_message::Body::Hello(h)),
        }))) => h,
        Ok(Ok(_)) => return no_hello(Status::invalid_argument("the first message must be Hello")),
        Ok(Err(e)) => return no_hello(e),
        Err(_) => return no_hello(Status::deadline_exceeded("no Hello within 10s")),
    };
    for (what, id) in [
        ("instance_id", &hello.instance_id),
        ("fleet_id", &hello.fleet_id),
    ] {
        if !credentials::valid_id(id) {
            return Err(Refusal::InvalidId.with(Status::invalid_argument(format!(
                "Hello's {what} must be 1 to {} letters, digits, '-', '_' or '.'",
                credentials::MAX_ID_CHARS
            ))));
        }
    }
    Ok(hello)
}
