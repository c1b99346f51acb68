//! Consumers: the callers the manifest's `consumers:` names, found by a
//! credential, and the identity an auth filter gives a request.
//!
//! The usual shape of an auth filter:
//!
//! ```ignore
//! if auth.already_identified(http)? {
//!     return Ok(Flow::Continue); // an earlier auth filter succeeded
//! }
//! match consumers::find(Credential::Key(&key))? {
//!     Some(consumer) => auth.admit(http, &consumer),
//!     None => auth.refuse(http, "unknown API key", &[]),
//! }
//! ```
//!
//! Several auth filters on one route: the first that identifies the caller
//! wins and the later ones let the request through. A filter with an
//! `anonymous` consumer admits callers without a valid credential as that
//! consumer (marked anonymous), and a later auth filter may still identify
//! them; without one, it answers 401.

use serde::{Deserialize, Serialize};

use crate::host;
use crate::status::{HostError, HostResult};
use crate::{Filter, Flow, Http, Outcome};

/// The property a request's consumer is read from (`weir.consumer`).
const PROPERTY: [&str; 2] = ["weir", "consumer"];

/// The header the consumer's name goes upstream in, unless configured.
pub const DEFAULT_HEADER: &str = "x-consumer-name";

/// A consumer as Weir describes it to plugins (no secrets, except the
/// password hash of a [`Credential::Username`] lookup).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Consumer {
    /// Its name.
    pub name: String,
    /// The groups it belongs to.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Its own request limits.
    #[serde(default)]
    pub limits: Vec<Limit>,
    /// Whether the request carried no valid credential and is served as
    /// this (anonymous) consumer.
    #[serde(default)]
    pub anonymous: bool,
    /// The bcrypt or argon2 hash of its password (user name lookups only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_hash: Option<String>,
}

/// At most `requests` per `per_ms` milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limit {
    /// Requests allowed in one window.
    pub requests: u32,
    /// The window, in milliseconds.
    pub per_ms: u64,
}

/// One credential to look a consumer up by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential<'a> {
    /// The consumer's name.
    Name(&'a str),
    /// An API key, as the client sent it (the host compares digests).
    Key(&'a str),
    /// A basic-auth user name.
    Username(&'a str),
    /// A JWT's `sub`, and its `iss` when it has one.
    Subject {
        /// The token's `iss`.
        issuer: Option<&'a str>,
        /// The token's `sub`.
        subject: &'a str,
    },
}

/// The consumer that holds `credential`, if any.
pub fn find(credential: Credential<'_>) -> HostResult<Option<Consumer>> {
    let query = match credential {
        Credential::Name(name) => serde_json::json!({ "name": name }),
        Credential::Key(key) => serde_json::json!({ "key": key }),
        Credential::Username(username) => serde_json::json!({ "username": username }),
        Credential::Subject { issuer, subject } => {
            serde_json::json!({ "subject": { "issuer": issuer, "subject": subject } })
        }
    };
    match host::call_foreign_function("weir.consumer_find", query.to_string().as_bytes()) {
        Ok(answer) => serde_json::from_slice(&answer)
            .map(Some)
            .map_err(|_| HostError::ParseFailure),
        Err(HostError::NotFound) => Ok(None),
        Err(error) => Err(error),
    }
}

/// How an auth filter treats callers: whom it admits callers with no valid
/// credential as, and which header names the consumer upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Auth {
    /// The consumer callers without a valid credential are served as;
    /// `None`: they get a 401.
    pub anonymous: Option<String>,
    /// The request header the consumer's name is forwarded in (empty: none).
    pub consumer_header: String,
}

impl Default for Auth {
    fn default() -> Self {
        Self {
            anonymous: None,
            consumer_header: DEFAULT_HEADER.to_owned(),
        }
    }
}

impl Auth {
    /// Checks at configure time that the `anonymous` consumer exists;
    /// the message for the configuration error when it does not.
    pub fn check(&self) -> Result<(), String> {
        match &self.anonymous {
            Some(name) => match find(Credential::Name(name)) {
                Ok(Some(_)) => Ok(()),
                Ok(None) => Err(format!("no consumer is named `{name}`")),
                Err(error) => Err(format!("cannot look consumer `{name}` up: {error}")),
            },
            None => Ok(()),
        }
    }

    /// Whether an earlier auth filter identified the caller with a credential
    /// (then this one lets the request through untouched).
    pub fn already_identified<F: Filter>(&self, http: &Http<'_, F>) -> HostResult<bool> {
        Ok(http.consumer()?.is_some_and(|c| !c.anonymous))
    }

    /// Identifies the request as `consumer` and lets it through.
    pub fn admit<F: Filter>(&self, http: &mut Http<'_, F>, consumer: &Consumer) -> Outcome {
        self.identify(http, &consumer.name, false)?;
        Ok(Flow::Continue)
    }

    /// A valid credential that names no consumer: the request goes on
    /// without one, and a consumer header the client sent is dropped, so it
    /// cannot pass for an identity (unless an earlier filter served the
    /// request as its anonymous consumer, whose name stands).
    pub fn admit_without_consumer<F: Filter>(&self, http: &mut Http<'_, F>) -> HostResult<()> {
        if !self.consumer_header.is_empty() && http.consumer()?.is_none() {
            http.remove_request_header(&self.consumer_header)?;
        }
        Ok(())
    }

    /// The caller has no valid credential (`reason` says why): served as the
    /// anonymous consumer when there is one, else answered 401 with
    /// `headers` (a `www-authenticate` challenge).
    pub fn refuse<F: Filter>(
        &self,
        http: &mut Http<'_, F>,
        reason: &str,
        headers: &[(&str, &str)],
    ) -> Outcome {
        let Some(anonymous) = &self.anonymous else {
            return http.deny_with(401, "unauthorized", reason, headers);
        };
        // An earlier filter's anonymous identity stands.
        if http.consumer()?.is_none() {
            self.identify(http, anonymous, true)?;
        }
        Ok(Flow::Continue)
    }

    fn identify<F: Filter>(
        &self,
        http: &mut Http<'_, F>,
        name: &str,
        anonymous: bool,
    ) -> HostResult<()> {
        let args = serde_json::json!({ "name": name, "anonymous": anonymous });
        host::call_foreign_function("weir.consumer_set", args.to_string().as_bytes())?;
        if !self.consumer_header.is_empty() {
            http.set_request_header(&self.consumer_header, name)?;
        }
        Ok(())
    }
}

impl<F: Filter> Http<'_, F> {
    /// The consumer an auth filter identified the request as, if any.
    pub fn consumer(&self) -> HostResult<Option<Consumer>> {
        match self.property(&PROPERTY)? {
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|_| HostError::ParseFailure),
            None => Ok(None),
        }
    }
}
