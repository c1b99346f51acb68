//! A filter callback's failure, and Weir's JSON error shape.

use crate::status::HostError;

/// Why a filter callback failed. The SDK logs it with the request id and
/// answers the request with a JSON 500 (`plugin_error`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// A host call failed.
    Host(HostError),
    /// The filter's own reason.
    Message(String),
}

impl Error {
    /// A failure with the filter's own reason.
    pub fn msg(message: impl Into<String>) -> Self {
        Self::Message(message.into())
    }
}

impl From<HostError> for Error {
    fn from(error: HostError) -> Self {
        Self::Host(error)
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Host(error) => error.fmt(f),
            Self::Message(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for Error {}

/// The body of every Weir error answer:
/// `{"error": {"status", "code", "message", "request_id"}}`.
pub(crate) fn body(status: u16, code: &str, message: &str, request_id: Option<&str>) -> String {
    serde_json::json!({
        "error": {
            "status": status,
            "code": code,
            "message": message,
            "request_id": request_id.unwrap_or("-"),
        }
    })
    .to_string()
}
