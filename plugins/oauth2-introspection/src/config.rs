//! The configuration as written ([`Config`]) and validated once into the
//! [`Policy`] the filter reads; nothing else sees the raw form.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine as _;
use serde::Deserialize;
use weir_sdk::consumers::{self, Auth};
use weir_sdk::{ConfigError, duration};

/// The longest an introspection call may be given.
const MAX_TIMEOUT: Duration = Duration::from_secs(60);

/// The plugin configuration, as the manifest writes it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The manifest upstream group of the authorization server.
    upstream: String,
    /// The introspection endpoint's path on it.
    #[serde(default = "default_path")]
    path: String,
    /// The gateway's client id at the authorization server.
    client_id: String,
    /// Its client secret.
    client_secret: String,
    /// How long one introspection may take.
    #[serde(default = "default_timeout")]
    timeout: String,
    /// The `token_type_hint` sent with each token.
    #[serde(default)]
    token_type_hint: Option<String>,
    /// Scopes the token must all have.
    #[serde(default)]
    required_scopes: Vec<String>,
    /// How long answers are kept.
    #[serde(default)]
    cache: CacheConfig,
    /// The member of the answer that names the consumer.
    #[serde(default)]
    consumer_by: ConsumerBy,
    /// Whether an active token must also belong to a consumer.
    #[serde(default)]
    consumer_required: bool,
    /// The consumer callers without a valid token are served as.
    #[serde(default)]
    anonymous: Option<String>,
    /// The request header the consumer's name goes upstream in.
    #[serde(default = "default_consumer_header")]
    consumer_header: String,
    /// Members of the answer forwarded upstream: member → request header.
    #[serde(default)]
    forward: BTreeMap<String, String>,
}

/// The `cache` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct CacheConfig {
    /// The longest an active answer is kept (`0s`: not kept).
    #[serde(default = "default_max_ttl")]
    max_ttl: String,
    /// How long an inactive answer is kept (`0s`: not kept).
    #[serde(default = "default_inactive_ttl")]
    inactive_ttl: String,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            max_ttl: default_max_ttl(),
            inactive_ttl: default_inactive_ttl(),
        }
    }
}

fn default_path() -> String {
    "/introspect".into()
}

fn default_timeout() -> String {
    "2s".into()
}

fn default_max_ttl() -> String {
    "1m".into()
}

fn default_inactive_ttl() -> String {
    "10s".into()
}

fn default_consumer_header() -> String {
    consumers::DEFAULT_HEADER.into()
}

/// Which member of an active answer names the caller's consumer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsumerBy {
    /// `sub` (with `iss`), matched against the consumers' `jwt` identities.
    #[default]
    Sub,
    /// `client_id`, matched against the consumers' names.
    ClientId,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Policy {
    /// The upstream group called.
    pub upstream: String,
    /// The introspection path.
    pub path: String,
    /// The client id (part of the cache key: answers are per client).
    pub client_id: String,
    /// `Basic base64(urlencode(id):urlencode(secret))` (RFC 6749 §2.3.1).
    pub authorization: String,
    /// The call's timeout.
    pub timeout: Duration,
    /// The `token_type_hint` sent, if any.
    pub token_type_hint: Option<String>,
    /// Scopes required, all of them.
    pub required_scopes: Vec<String>,
    /// The longest an active answer is cached (zero: not cached).
    pub max_ttl: Duration,
    /// How long an inactive answer is cached (zero: not cached).
    pub inactive_ttl: Duration,
    /// The member that names the consumer.
    pub consumer_by: ConsumerBy,
    /// Whether a token with no consumer is refused.
    pub consumer_required: bool,
    /// Anonymous consumer and consumer header.
    pub auth: Auth,
    /// (member, request header), header names lower-cased.
    pub forward: Vec<(String, String)>,
}

impl Policy {
    /// Checks `config` into a policy; the error points at the offending field.
    pub fn from_config(config: Config) -> Result<Self, ConfigError> {
        if config.upstream.is_empty() {
            return Err(ConfigError::at(
                "/upstream",
                "must name an upstream group of the manifest",
            ));
        }
        if !config.path.starts_with('/') || config.path.chars().any(char::is_whitespace) {
            return Err(ConfigError::at(
                "/path",
                format!("`{}` is not a path like /introspect", config.path),
            ));
        }
        if config.client_id.is_empty() {
            return Err(ConfigError::at("/client_id", "must not be empty"));
        }
        if config.client_secret.is_empty() {
            return Err(ConfigError::at("/client_secret", "must not be empty"));
        }
        let timeout = duration_at("/timeout", &config.timeout)?;
        if timeout.is_zero() || timeout > MAX_TIMEOUT {
            return Err(ConfigError::at(
                "/timeout",
                "must be more than 0s and at most 1m",
            ));
        }
        if config.token_type_hint.as_deref() == Some("") {
            return Err(ConfigError::at(
                "/token_type_hint",
                "must not be empty (leave it out to send none)",
            ));
        }
        for (i, scope) in config.required_scopes.iter().enumerate() {
            if scope.is_empty() || scope.chars().any(|c| c.is_whitespace() || c == '"') {
                return Err(ConfigError::at(
                    format!("/required_scopes/{i}"),
                    format!("`{scope}` is not a scope (no spaces or quotes)"),
                ));
            }
        }
        let max_ttl = duration_at("/cache/max_ttl", &config.cache.max_ttl)?;
        let inactive_ttl = duration_at("/cache/inactive_ttl", &config.cache.inactive_ttl)?;
        let consumer_header = config.consumer_header.to_ascii_lowercase();
        if !consumer_header.is_empty() && !is_header_name(&consumer_header) {
            return Err(ConfigError::at(
                "/consumer_header",
                format!("`{consumer_header}` is not a header name"),
            ));
        }
        let mut forward = Vec::with_capacity(config.forward.len());
        for (member, header) in &config.forward {
            let at = format!("/forward/{}", member.replace('~', "~0").replace('/', "~1"));
            let header = header.to_ascii_lowercase();
            if !is_header_name(&header) {
                return Err(ConfigError::at(
                    at,
                    format!("`{header}` is not a header name"),
                ));
            }
            if header == consumer_header {
                return Err(ConfigError::at(
                    at,
                    format!("`{header}` is the consumer header already"),
                ));
            }
            if forward.iter().any(|(_, h)| *h == header) {
                return Err(ConfigError::at(
                    at,
                    format!("`{header}` is forwarded for another member already"),
                ));
            }
            forward.push((member.clone(), header));
        }
        let auth = Auth {
            anonymous: config.anonymous,
            consumer_header,
        };
        auth.check().map_err(|e| ConfigError::at("/anonymous", e))?;
        Ok(Self {
            authorization: basic_authorization(&config.client_id, &config.client_secret),
            upstream: config.upstream,
            path: config.path,
            client_id: config.client_id,
            timeout,
            token_type_hint: config.token_type_hint,
            required_scopes: config.required_scopes,
            max_ttl,
            inactive_ttl,
            consumer_by: config.consumer_by,
            consumer_required: config.consumer_required,
            auth,
            forward,
        })
    }

    /// The members of an answer the policy reads: the consumer's, the
    /// scopes, and the forwarded ones. Others are not kept.
    pub fn members(&self) -> impl Iterator<Item = &str> {
        ["sub", "iss", "client_id", "scope"]
            .into_iter()
            .chain(self.forward.iter().map(|(member, _)| member.as_str()))
    }
}

/// The duration `text` at `pointer`.
fn duration_at(pointer: &str, text: &str) -> Result<Duration, ConfigError> {
    duration::parse(text).ok_or_else(|| {
        ConfigError::at(
            pointer,
            format!("`{text}` is not a duration like 500ms, 2s, 5m or 1h"),
        )
    })
}

/// Whether `name` is an HTTP field name (RFC 9110 `token`), lower case.
fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b"!#$%&'*+-.^_`|~".contains(&b)
        })
}

/// HTTP Basic client authentication as RFC 6749 §2.3.1 has it: id and
/// secret each form-url-encoded, then joined by `:` and base64-encoded.
fn basic_authorization(client_id: &str, client_secret: &str) -> String {
    let encode = |text: &str| form_urlencoded::byte_serialize(text.as_bytes()).collect::<String>();
    let pair = format!("{}:{}", encode(client_id), encode(client_secret));
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_credentials_are_form_encoded_before_base64() {
        // RFC 6749 §2.3.1: `:` in the id and `+` in the secret are escaped.
        let header = basic_authorization("gw:1", "s3+cr et");
        let encoded = header.strip_prefix("Basic ").expect("the Basic scheme");
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .expect("base64");
        assert_eq!(decoded, b"gw%3A1:s3%2Bcr+et");
    }

    #[test]
    fn header_names_are_tokens() {
        assert!(is_header_name("x-user-sub"));
        assert!(!is_header_name("x user"));
        assert!(!is_header_name(":path"));
        assert!(!is_header_name(""));
    }
}
