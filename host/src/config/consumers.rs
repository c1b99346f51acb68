//! The manifest's `consumers:`: who may call the routes, and how each proves
//! it. Auth plugins resolve a credential to one of them (through the host's
//! `weir.consumer_find`); later plugins key on the consumer's name, groups
//! and limits.
//!
//! Secrets are never kept in the clear: an API key is written as its SHA-256
//! (`sha256:<hex>`, or `env:` a variable holding the key, hashed when the
//! manifest is read), and a password as a bcrypt or argon2 hash.

use std::collections::HashMap;
use std::time::Duration;

use super::admin::{decode_hex, token_digest};
use super::decode::{Decode, Diagnostics, Fields, HumanDuration, Located};
use super::node::Node;

/// The prefixes of the password hashes basic-auth verifies.
const PASSWORD_HASH_PREFIXES: [&str; 6] = [
    "$2a$",
    "$2b$",
    "$2y$",
    "$argon2id$",
    "$argon2i$",
    "$argon2d$",
];

/// One consumer of the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consumer {
    /// Its unique name (forwarded upstream, keyed on by later plugins).
    pub name: String,
    /// The groups it belongs to (`acl` allows or denies by group).
    pub groups: Vec<String>,
    /// SHA-256 digests of its API keys.
    pub api_keys: Vec<[u8; 32]>,
    /// Its basic-auth credential.
    pub basic_auth: Option<BasicAuth>,
    /// The JWT identities that are this consumer.
    pub jwt: Vec<JwtIdentity>,
    /// Its own request limits, which rate limiting keyed on consumers applies
    /// instead of the route's.
    pub limits: Vec<ConsumerLimit>,
}

/// A basic-auth user name and its password hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BasicAuth {
    /// The user name.
    pub username: String,
    /// The password's bcrypt (`$2b$…`) or argon2 (`$argon2id$…`) hash.
    pub password_hash: String,
}

/// A JWT identity: a subject, from any issuer or from one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct JwtIdentity {
    /// The `iss` the token must have; `None`: any issuer the route accepts.
    pub issuer: Option<String>,
    /// The `sub`.
    pub subject: String,
}

/// At most `requests` per `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsumerLimit {
    /// Requests allowed in one window.
    pub requests: u32,
    /// The window.
    pub per: Duration,
}

impl Decode for Located<Consumer> {
    fn decode(node: &Node, diags: &mut Diagnostics) -> Option<Self> {
        let mut f = Fields::of(node, "consumer", diags)?;
        let name: Option<String> = f.required("name", diags);
        let groups = f.or("groups", Vec::new(), diags);
        let api_keys: Vec<ApiKey> = f.or("api_keys", Vec::new(), diags);
        let basic_auth = f.optional("basic_auth", diags).flatten();
        let jwt = f.or("jwt", Vec::new(), diags);
        let limits = f.or("limits", Vec::new(), diags);
        f.finish(diags);
        Some(Located {
            value: Consumer {
                name: name?,
                groups,
                api_keys: api_keys.into_iter().map(|k| k.0).collect(),
                basic_auth,
                jwt,
                limits,
            },
            location: node.location,
        })
    }
}

/// An API key's digest, however it was written.
struct ApiKey([u8; 32]);

impl Decode for ApiKey {
    fn decode(node: &Node, diags: &mut Diagnostics) -> Option<Self> {
        let text = String::decode(node, diags)?;
        if let Some(hex) = text.strip_prefix("sha256:") {
            return decode_hex(hex).map(Self).or_else(|| {
                diags.error(
                    node.location,
                    "an API key's `sha256:` must be followed by 64 hexadecimal digits \
                     (e.g. from `printf %s KEY | sha256sum`)",
                );
                None
            });
        }
        if let Some(var) = text.strip_prefix("env:") {
            return match std::env::var(var) {
                Ok(key) if !key.is_empty() => Some(Self(token_digest(key.as_bytes()))),
                _ => {
                    diags.error(
                        node.location,
                        format!("environment variable `{var}` is not set or empty"),
                    );
                    None
                }
            };
        }
        diags.error(
            node.location,
            "an API key is written as `sha256:<its SHA-256 in hex>` or `env:<variable holding it>`, \
             never in the clear",
        );
        None
    }
}

impl Decode for BasicAuth {
    fn decode(node: &Node, diags: &mut Diagnostics) -> Option<Self> {
        let mut f = Fields::of(node, "basic-auth credential", diags)?;
        let username: Option<String> = f.required("username", diags);
        let hash: Option<Located<String>> = f.required("password_hash", diags);
        f.finish(diags);
        let hash = hash?;
        if !PASSWORD_HASH_PREFIXES
            .iter()
            .any(|prefix| hash.value.starts_with(prefix))
        {
            diags.error(
                hash.location,
                "`password_hash` must be a bcrypt (`$2b$…`, e.g. from `htpasswd -nbB user pass`) \
                 or argon2 (`$argon2id$…`) hash",
            );
            return None;
        }
        let username = username?;
        if username.is_empty() || username.contains(':') {
            diags.error(
                node.location,
                "a basic-auth `username` must not be empty or contain `:`",
            );
            return None;
        }
        Some(Self {
            username,
            password_hash: hash.value,
        })
    }
}

impl Decode for JwtIdentity {
    fn decode(node: &Node, diags: &mut Diagnostics) -> Option<Self> {
        let mut f = Fields::of(node, "JWT identity", diags)?;
        let issuer = f.optional("issuer", diags).flatten();
        let subject = f.required("subject", diags);
        f.finish(diags);
        Some(Self {
            issuer,
            subject: subject?,
        })
    }
}

impl Decode for ConsumerLimit {
    fn decode(node: &Node, diags: &mut Diagnostics) -> Option<Self> {
        let mut f = Fields::of(node, "consumer limit", diags)?;
        let requests: Option<Located<u32>> = f.required("requests", diags);
        let per: Option<Located<HumanDuration>> = f.required("per", diags);
        f.finish(diags);
        let (requests, per) = (requests?, per?);
        if requests.value == 0 {
            diags.error(requests.location, "`requests` must be at least 1");
            return None;
        }
        if per.value.0.is_zero() {
            diags.error(per.location, "`per` must be longer than 0s");
            return None;
        }
        Some(Self {
            requests: requests.value,
            per: per.value.0,
        })
    }
}

/// Checks that no two consumers share a name, an API key, a user name or a
/// JWT identity: each credential must resolve to one consumer.
pub fn check_unique(consumers: &[Located<Consumer>], diags: &mut Diagnostics) {
    let mut names = HashMap::new();
    let mut keys = HashMap::new();
    let mut usernames = HashMap::new();
    let mut identities = HashMap::new();
    for consumer in consumers {
        let Located { value, location } = consumer;
        if value.name.is_empty() {
            diags.error(*location, "a consumer name must not be empty");
        }
        let mut seen = |kind: &str, first: Option<&String>| {
            if let Some(first) = first {
                diags.error(
                    *location,
                    format!(
                        "consumer `{}` has the same {kind} as consumer `{first}`",
                        value.name
                    ),
                );
            }
        };
        seen(
            "name",
            names
                .insert(value.name.clone(), value.name.clone())
                .as_ref(),
        );
        for key in &value.api_keys {
            seen("API key", keys.insert(*key, value.name.clone()).as_ref());
        }
        if let Some(basic) = &value.basic_auth {
            let first = usernames.insert(basic.username.clone(), value.name.clone());
            seen("basic-auth username", first.as_ref());
        }
        for identity in &value.jwt {
            let first = identities.insert(identity.clone(), value.name.clone());
            seen("JWT identity", first.as_ref());
        }
    }
}
