//! A refused request, as the Tencent Cloud API says it.

use serde_json::Value;

/// The Tencent Cloud API error codes this API answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// `AuthFailure`: the request's credentials were refused.
    AuthFailure,
    /// `AuthFailure.InvalidAuthorization`: the Authorization header cannot be read.
    AuthFailureInvalidAuthorization,
    /// `AuthFailure.SecretIdNotFound`: no key has this SecretId.
    AuthFailureSecretIdNotFound,
    /// `AuthFailure.SignatureExpire`: the request's time is outside the allowed skew.
    AuthFailureSignatureExpire,
    /// `AuthFailure.SignatureFailure`: the signature does not match.
    AuthFailureSignatureFailure,
    /// `FailedOperation`: the operation failed, or its outcome is unknown.
    FailedOperation,
    /// `InternalError`: a fault of the server's own.
    InternalError,
    /// `InvalidAction`: no such action.
    InvalidAction,
    /// `InvalidParameter`: a parameter has the wrong type or form.
    InvalidParameter,
    /// `InvalidParameterValue`: a parameter's value is refused.
    InvalidParameterValue,
    /// `LimitExceeded`: a limit is reached (capacity, counts).
    LimitExceeded,
    /// `MissingParameter`: a required parameter is missing.
    MissingParameter,
    /// `OperationDenied`: the current state does not allow it.
    OperationDenied,
    /// `ResourceInUse`: the resource is occupied (a name that is taken).
    ResourceInUse,
    /// `ResourceNotFound`: no such resource.
    ResourceNotFound,
    /// `ResourceUnavailable`: the resource cannot be reached now (a host not connected).
    ResourceUnavailable,
    /// `UnauthorizedOperation`: the key's policy does not allow it.
    UnauthorizedOperation,
    /// `UnknownParameter`: a parameter the action does not take.
    UnknownParameter,
    /// `UnsupportedOperation`: an action this server does not serve.
    UnsupportedOperation,
}

impl ErrorCode {
    /// Every code.
    pub const ALL: &[ErrorCode] = &[
        Self::AuthFailure,
        Self::AuthFailureInvalidAuthorization,
        Self::AuthFailureSecretIdNotFound,
        Self::AuthFailureSignatureExpire,
        Self::AuthFailureSignatureFailure,
        Self::FailedOperation,
        Self::InternalError,
        Self::InvalidAction,
        Self::InvalidParameter,
        Self::InvalidParameterValue,
        Self::LimitExceeded,
        Self::MissingParameter,
        Self::OperationDenied,
        Self::ResourceInUse,
        Self::ResourceNotFound,
        Self::ResourceUnavailable,
        Self::UnauthorizedOperation,
        Self::UnknownParameter,
        Self::UnsupportedOperation,
    ];

    /// The wire value, e.g. `AuthFailure.SignatureFailure`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AuthFailure => "AuthFailure",
            Self::AuthFailureInvalidAuthorization => "AuthFailure.InvalidAuthorization",
            Self::AuthFailureSecretIdNotFound => "AuthFailure.SecretIdNotFound",
            Self::AuthFailureSignatureExpire => "AuthFailure.SignatureExpire",
            Self::AuthFailureSignatureFailure => "AuthFailure.SignatureFailure",
            Self::FailedOperation => "FailedOperation",
            Self::InternalError => "InternalError",
            Self::InvalidAction => "InvalidAction",
            Self::InvalidParameter => "InvalidParameter",
            Self::InvalidParameterValue => "InvalidParameterValue",
            Self::LimitExceeded => "LimitExceeded",
            Self::MissingParameter => "MissingParameter",
            Self::OperationDenied => "OperationDenied",
            Self::ResourceInUse => "ResourceInUse",
            Self::ResourceNotFound => "ResourceNotFound",
            Self::ResourceUnavailable => "ResourceUnavailable",
            Self::UnauthorizedOperation => "UnauthorizedOperation",
            Self::UnknownParameter => "UnknownParameter",
            Self::UnsupportedOperation => "UnsupportedOperation",
        }
    }

    /// The code whose wire value is `s`.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|c| c.as_str() == s)
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// A refused request: a Tencent Cloud error code and a message naming what was wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapiError {
    /// E.g. `InvalidParameterValue`.
    pub code: ErrorCode,
    /// What was wrong.
    pub message: String,
}

impl CapiError {
    /// A refusal with `code` and `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
    /// `MissingParameter`: the parameter `name` is required.
    pub fn missing(name: &str) -> Self {
        Self::new(
            ErrorCode::MissingParameter,
            format!("the parameter `{name}` is required"),
        )
    }
    /// `InvalidParameterValue`: the parameter `name` and why its value is refused.
    pub fn value(name: &str, why: impl std::fmt::Display) -> Self {
        Self::new(
            ErrorCode::InvalidParameterValue,
            format!("the parameter `{name}` {why}"),
        )
    }
    /// `InvalidParameter`: the parameter `name` must be `want`, not what `got` is.
    pub fn type_of(name: &str, want: &str, got: &Value) -> Self {
        let kind = match got {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Number(_) => "a number",
            Value::String(_) => "a string",
            Value::Array(_) => "an array",
            Value::Object(_) => "an object",
        };
        Self::new(
            ErrorCode::InvalidParameter,
            format!("the parameter `{name}` must be {want}, not {kind}"),
        )
    }
}
