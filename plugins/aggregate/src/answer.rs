//! One call's outcome: its upstream's answer read into the JSON that goes
//! into the document, or why the call failed.

use std::time::Duration;

use serde_json::{Map, Value, json};
use weir_sdk::{CallResponse, Error};

use crate::config::{Call, Merge};
use crate::document;

/// Why a call gave nothing to merge.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    /// The host refused to start it (an upstream group it does not know).
    #[error("the call could not be started: {0}")]
    NotStarted(String),
    /// No answer within the call's timeout.
    #[error("no answer within {}ms", .0.as_millis())]
    TimedOut(Duration),
    /// No answer: the connection was refused or reset.
    #[error("no answer (connection refused or reset)")]
    NoAnswer,
    /// An answer outside 2xx.
    #[error("the upstream answered {0}")]
    Status(u16),
    /// A 2xx answer whose body is not JSON.
    #[error("the upstream's answer is not JSON")]
    NotJson(u16),
    /// A JSON answer that is not an object, for `merge: deep`.
    #[error("the upstream's answer is not a JSON object, which `merge: deep` needs")]
    NotObject(u16),
}

impl Failure {
    /// The failure of a call that got no answer, `elapsed` after it started
    /// with `timeout`: the host does not say whether the connection failed
    /// or the time ran out, so a failure at the timeout or later counts as
    /// a timeout.
    pub fn of_no_answer(elapsed: Duration, timeout: Duration) -> Self {
        if elapsed >= timeout {
            Self::TimedOut(timeout)
        } else {
            Self::NoAnswer
        }
    }

    /// A short code for it, in a partial answer's errors.
    fn code(&self) -> &'static str {
        match self {
            Self::NotStarted(_) => "not_started",
            Self::TimedOut(_) => "timeout",
            Self::NoAnswer => "unavailable",
            Self::Status(_) => "bad_status",
            Self::NotJson(_) => "not_json",
            Self::NotObject(_) => "not_object",
        }
    }

    /// The upstream's status, when it answered.
    fn status(&self) -> Option<u16> {
        match self {
            Self::Status(status) | Self::NotJson(status) | Self::NotObject(status) => Some(*status),
            Self::NotStarted(_) | Self::TimedOut(_) | Self::NoAnswer => None,
        }
    }

    /// Its entry in a partial answer's errors:
    /// `{"error": code, "message": …, "status": N}` (`status` when the
    /// upstream answered).
    pub fn entry(&self) -> Value {
        let mut entry = json!({"error": self.code(), "message": self.to_string()});
        if let (Some(status), Some(entry)) = (self.status(), entry.as_object_mut()) {
            entry.insert("status".into(), status.into());
        }
        entry
    }
}

/// What call `call` gives the document from its host answer `result`,
/// `elapsed` after it started: its selected JSON, ready to merge as an
/// object (`under` applied).
pub fn read(
    call: &Call,
    result: Result<CallResponse, Error>,
    elapsed: Duration,
) -> Result<Map<String, Value>, Failure> {
    let response = result.map_err(|_| Failure::of_no_answer(elapsed, call.timeout))?;
    let status = response.status;
    if !(200..300).contains(&status) {
        return Err(Failure::Status(status));
    }
    let body: Value =
        serde_json::from_slice(&response.body).map_err(|_| Failure::NotJson(status))?;
    let body = if call.select.is_empty() {
        body
    } else {
        document::select(&body, &call.select)
    };
    match (&call.merge, body) {
        (Merge::Under(key), body) => Ok(Map::from_iter([(key.clone(), body)])),
        (Merge::Deep, Value::Object(members)) => Ok(members),
        (Merge::Deep, _) => Err(Failure::NotObject(status)),
    }
}
