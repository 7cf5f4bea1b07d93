//! The rules a relay stream can break before or while it is served: each refusal names one,
//! and [`crate::control::metrics`] counts them by it, so an attack on the relay (a credential
//! claiming another host, a flood of silent streams, forged ids) shows on a dashboard and not
//! only in the log.

use tonic::Status;

/// A rule a relay stream broke.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// Too many streams were waiting to say Hello, from its address or in all.
    TooManyWaiting,
    /// Its bearer token is not in `agent-tokens-file`.
    UnknownToken,
    /// Its first message was not a Hello, or none came in time.
    NoHello,
    /// Its Hello named an instance or fleet id that is not a GSE id.
    InvalidId,
    /// Its client certificate names no instance that can be read.
    UnreadableCertificate,
    /// Its client certificate names another instance.
    CertificateInstance,
    /// Its credential speaks for another instance.
    CredentialInstance,
    /// Its Hello named a fleet its instance is not assigned to.
    Fleet,
    /// It sent a snapshot of more than its host could hold (the stream is ended).
    OversizedSnapshot,
    /// The database could not be read or written to admit it (not the agent's fault; it
    /// retries).
    Database,
}

impl Refusal {
    /// Every rule, for metrics that show each one from zero.
    pub const ALL: [Refusal; 10] = [
        Refusal::TooManyWaiting,
        Refusal::UnknownToken,
        Refusal::NoHello,
        Refusal::InvalidId,
        Refusal::UnreadableCertificate,
        Refusal::CertificateInstance,
        Refusal::CredentialInstance,
        Refusal::Fleet,
        Refusal::OversizedSnapshot,
        Refusal::Database,
    ];

    /// The rule's name in metrics (`rule="…"`).
    pub fn label(self) -> &'static str {
        match self {
            Refusal::TooManyWaiting => "too_many_waiting",
            Refusal::UnknownToken => "unknown_token",
            Refusal::NoHello => "no_hello",
            Refusal::InvalidId => "invalid_id",
            Refusal::UnreadableCertificate => "unreadable_certificate",
            Refusal::CertificateInstance => "certificate_instance",
            Refusal::CredentialInstance => "credential_instance",
            Refusal::Fleet => "fleet",
            Refusal::OversizedSnapshot => "oversized_snapshot",
            Refusal::Database => "database",
        }
    }
}

/// A stream refused: the rule it broke and what its agent is told.
#[derive(Debug)]
pub struct Refused {
    /// The rule.
    pub rule: Refusal,
    /// The gRPC status the agent gets.
    pub status: Status,
}

impl Refusal {
    /// This rule, refused with `status`.
    pub fn with(self, status: Status) -> Refused {
        Refused { rule: self, status }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rule_has_its_own_metric_label() {
        let labels: std::collections::BTreeSet<_> =
            Refusal::ALL.iter().map(|r| r.label()).collect();
        assert_eq!(labels.len(), Refusal::ALL.len());
        assert!(
            labels
                .iter()
                .all(|l| l.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')),
            "{labels:?}"
        );
    }
}
