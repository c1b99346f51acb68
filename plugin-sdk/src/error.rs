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
/// `{"error": {"status", "code", "message", "request_id"}}`, members in the
/// order Weir writes them.
pub(crate) fn body(status: u16, code: &str, message: &str, request_id: Option<&str>) -> String {
    body_with(status, code, message, request_id, &NoDetails {})
}

/// Nothing beyond Weir's own members.
#[derive(serde::Serialize)]
pub(crate) struct NoDetails {}

/// [`body`] with the members of `details` (a struct or map) after Weir's own
/// in the `error` object.
pub(crate) fn body_with<D: serde::Serialize + ?Sized>(
    status: u16,
    code: &str,
    message: &str,
    request_id: Option<&str>,
    details: &D,
) -> String {
    #[derive(serde::Serialize)]
    struct Body<'a, D: ?Sized> {
        error: Detail<'a, D>,
    }
    #[derive(serde::Serialize)]
    struct Detail<'a, D: ?Sized> {
        status: u16,
        code: &'a str,
        message: &'a str,
        request_id: &'a str,
        #[serde(flatten)]
        details: &'a D,
    }
    let body = Body {
        error: Detail {
            status,
            code,
            message,
            request_id: request_id.unwrap_or("-"),
            details,
        },
    };
    serde_json::to_string(&body).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_error_body_has_weirs_member_order_and_escapes_strings() {
        assert_eq!(
            super::body(403, "forbidden", "no \"x\"", Some("r1")),
            r#"{"error":{"status":403,"code":"forbidden","message":"no \"x\"","request_id":"r1"}}"#
        );
    }

    #[test]
    fn details_follow_weirs_members() {
        #[derive(serde::Serialize)]
        struct Details {
            violations: Vec<&'static str>,
        }
        let details = Details {
            violations: vec!["a", "b"],
        };
        assert_eq!(
            super::body_with(400, "bad", "m", None, &details),
            r#"{"error":{"status":400,"code":"bad","message":"m","request_id":"-","violations":["a","b"]}}"#
        );
    }
}
