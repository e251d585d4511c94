//! Errors, rendered in the OpenAI error shape
//! (`{"error":{"message","type","param","code"}}`).

use bytes::Bytes;
use serde_json::{Value, json};

/// An error that the proxy should answer to the client with
/// [`LlmError::status`] and the body from [`LlmError::to_openai_body`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} (status {status}, type {kind})")]
pub struct LlmError {
    /// HTTP status to answer the client with.
    pub status: u16,
    /// OpenAI error `type`, e.g. `invalid_request_error`.
    pub kind: String,
    /// Human readable message.
    pub message: String,
    /// OpenAI error `param`, when one request field is at fault.
    pub param: Option<String>,
    /// OpenAI error `code` (for upstream errors: the provider's own error type).
    pub code: Option<String>,
}

impl LlmError {
    /// A 400 `invalid_request_error`.
    pub fn invalid_request(message: impl Into<String>) -> Self {
        Self {
            status: 400,
            kind: "invalid_request_error".into(),
            message: message.into(),
            param: None,
            code: None,
        }
    }

    /// A 400 `invalid_request_error` naming the offending parameter.
    pub fn invalid_param(param: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            param: Some(param.into()),
            ..Self::invalid_request(message)
        }
    }

    /// A 500 error inside the gateway (misconfiguration, signing failure).
    pub fn internal(message: impl Into<String>) -> Self {
        Self {
            status: 500,
            kind: "server_error".into(),
            message: message.into(),
            param: None,
            code: None,
        }
    }

    /// A 502 error: the upstream answered something we could not understand.
    pub fn bad_upstream(message: impl Into<String>) -> Self {
        Self {
            status: 502,
            kind: "upstream_error".into(),
            message: message.into(),
            param: None,
            code: None,
        }
    }

    /// The OpenAI error object (`{"error":{...}}`) as a JSON value.
    pub fn to_openai_value(&self) -> Value {
        json!({
            "error": {
                "message": self.message,
                "type": self.kind,
                "param": self.param,
                "code": self.code,
            }
        })
    }

    /// The OpenAI error object serialized, ready to be a response body.
    pub fn to_openai_body(&self) -> Bytes {
        Bytes::from(self.to_openai_value().to_string())
    }
}

/// Maps an upstream HTTP error status to the status the client sees.
///
/// * client mistakes keep their status (400, 404 is *not* one: the model is
///   chosen by the gateway, so an unknown model is a gateway/backend problem);
/// * 401/403 from the provider mean the *gateway's* credentials are wrong, so
///   the client gets 502 rather than a misleading "your key is bad";
/// * 429 stays 429 (clients know to back off), overload (529, 503) is 503,
///   timeouts (408, 504) are 504, anything else in 5xx is 502.
pub fn map_upstream_status(status: u16) -> u16 {
    match status {
        400 | 413 | 422 => 400,
        401 | 403 | 404 => 502,
        408 | 504 => 504,
        429 => 429,
        503 | 529 => 503,
        s if (400..500).contains(&s) => 400,
        _ => 502,
    }
}

/// OpenAI error `type` for a (mapped) client status.
pub fn openai_error_type(mapped_status: u16) -> &'static str {
    match mapped_status {
        400 => "invalid_request_error",
        429 => "rate_limit_error",
        503 => "service_unavailable",
        504 => "timeout",
        _ => "upstream_error",
    }
}

/// Builds the error that an upstream error response is turned into.
pub fn upstream_error(
    upstream_status: u16,
    provider_type: Option<&str>,
    message: &str,
) -> LlmError {
    let status = map_upstream_status(upstream_status);
    LlmError {
        status,
        kind: openai_error_type(status).into(),
        message: message.to_string(),
        param: None,
        code: provider_type.map(str::to_string),
    }
}
