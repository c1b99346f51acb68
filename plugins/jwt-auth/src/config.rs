//! The filter's configuration as written (serde), checked once into the
//! [`Settings`] the filter runs with; a refusal names the offending field.

use std::collections::BTreeMap;
use std::time::Duration;

use jsonwebtoken::{Algorithm, AlgorithmFamily};
use serde::Deserialize;
use weir_sdk::ConfigError;
use weir_sdk::consumers::{self, Auth};

use crate::jwks::Source;
use crate::keys::{Key, KeySet, Origin};
use crate::policy::{Accepted, ClaimPath, Requirements};

/// The plugin configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// An HMAC secret (HS256 unless `algorithms` names other HS*).
    #[serde(default)]
    secret: Option<String>,
    /// Keys given inline: JWKs, or `{ pem, kid }` public keys.
    #[serde(default)]
    keys: Vec<serde_json::Value>,
    /// A JWKS fetched from an upstream group.
    #[serde(default)]
    jwks: Option<JwksConfig>,
    /// The algorithms accepted (default: every one the keys can verify).
    #[serde(default)]
    algorithms: Vec<String>,
    /// Header carrying the token.
    #[serde(default = "default_header")]
    header: String,
    /// Required `iss`.
    #[serde(default)]
    issuer: Option<String>,
    /// Accepted `aud` values (any one).
    #[serde(default)]
    audiences: Vec<String>,
    /// Clock skew allowed for `exp` / `nbf`.
    #[serde(default = "default_leeway")]
    leeway_seconds: u64,
    /// Whether a token must have `exp`.
    #[serde(default)]
    require_exp: bool,
    /// Scopes a token must all have.
    #[serde(default)]
    required_scopes: Vec<String>,
    /// Claims a token must have, with the values accepted.
    #[serde(default)]
    required_claims: BTreeMap<String, serde_json::Value>,
    /// Claims forwarded upstream, claim → header.
    #[serde(default)]
    forward_claims: BTreeMap<String, String>,
    /// Header the verified `sub` is forwarded in (empty: not forwarded).
    #[serde(default = "default_subject_header")]
    subject_header: String,
    /// Verified tokens remembered per VM (0: verify every request in full).
    #[serde(default = "default_cache_size")]
    cache_size: usize,
    /// The consumer requests without a valid token are served as.
    #[serde(default)]
    anonymous: Option<String>,
    /// Header the consumer's name is forwarded in (empty: not forwarded).
    #[serde(default = "default_consumer_header")]
    consumer_header: String,
    /// Whether a valid token must belong to a consumer.
    #[serde(default)]
    consumer_required: bool,
}

/// Where the JWKS is and how often it is fetched.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct JwksConfig {
    /// The upstream group serving it.
    upstream: String,
    /// Its path.
    #[serde(default = "default_jwks_path")]
    path: String,
    /// The `:authority` (Host) of the call.
    #[serde(default)]
    authority: Option<String>,
    /// Keys older than this are refreshed.
    #[serde(default = "default_refresh")]
    refresh_interval: String,
    /// At most one fetch per this long (unknown `kid`s included).
    #[serde(default = "default_min_refresh")]
    min_refresh_interval: String,
    /// How long one fetch may take.
    #[serde(default = "default_timeout")]
    timeout: String,
}

fn default_header() -> String {
    "authorization".into()
}

fn default_leeway() -> u64 {
    30
}

fn default_subject_header() -> String {
    "x-jwt-sub".into()
}

fn default_cache_size() -> usize {
    1024
}

fn default_consumer_header() -> String {
    consumers::DEFAULT_HEADER.into()
}

fn default_jwks_path() -> String {
    "/.well-known/jwks.json".into()
}

fn default_refresh() -> String {
    "5m".into()
}

fn default_min_refresh() -> String {
    "30s".into()
}

fn default_timeout() -> String {
    "5s".into()
}

/// The longest a JWKS fetch may take.
const MAX_TIMEOUT: Duration = Duration::from_secs(60);
/// The shortest `min_refresh_interval`: it bounds the fetches that tokens
/// naming unknown keys cause.
const MIN_REFRESH: Duration = Duration::from_secs(1);

/// The configuration, checked.
pub struct Settings {
    /// Header carrying the token (lower case).
    pub header: String,
    /// Inline keys (the secret's included).
    pub inline: KeySet,
    /// The remote JWKS, if any.
    pub jwks: Option<Source>,
    /// Algorithms accepted.
    pub algorithms: Vec<Algorithm>,
    /// Required `iss`.
    pub issuer: Option<String>,
    /// Accepted `aud` values.
    pub audiences: Vec<String>,
    /// Clock skew allowed, in seconds.
    pub leeway: u64,
    /// Whether `exp` is required.
    pub require_exp: bool,
    /// Scopes and claims required.
    pub requirements: Requirements,
    /// Claims forwarded upstream, with their headers (`sub` first when
    /// `subject_header` is set).
    pub forward: Vec<(ClaimPath, String)>,
    /// Verified tokens remembered per VM.
    pub cache_size: usize,
    /// Anonymous consumer and consumer header.
    pub auth: Auth,
    /// Whether a valid token must belong to a consumer.
    pub consumer_required: bool,
}

/// `key` escaped as one JSON Pointer segment.
fn segment(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// Whether `name` is an HTTP header name (RFC 9110 token), lower case.
fn header_name(name: &str, at: &str) -> Result<String, ConfigError> {
    let ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if ok {
        Ok(name.to_ascii_lowercase())
    } else {
        Err(ConfigError::at(
            at,
            format!("`{name}` is not a header name"),
        ))
    }
}

/// A header name, or empty for none.
fn optional_header(name: &str, at: &str) -> Result<String, ConfigError> {
    if name.is_empty() {
        Ok(String::new())
    } else {
        header_name(name, at)
    }
}

/// Every algorithm a JWKS may bring (no HMAC: symmetric keys stay inline).
fn asymmetric() -> Vec<Algorithm> {
    [
        AlgorithmFamily::Rsa,
        AlgorithmFamily::Ec,
        AlgorithmFamily::Ed,
    ]
    .iter()
    .flat_map(|f| f.algorithms().iter().copied())
    .collect()
}

impl Config {
    /// Checks the configuration.
    pub fn check(self) -> Result<Settings, ConfigError> {
        if self.secret.is_none() && self.keys.is_empty() && self.jwks.is_none() {
            return Err(ConfigError::new(
                "needs keys: `secret`, `keys` or `jwks` (or several)",
            ));
        }
        let explicit = self.algorithms()?;
        let mut keys = Vec::new();
        for (index, value) in self.keys.iter().enumerate() {
            keys.push(inline_key(value).map_err(|e| ConfigError::at(format!("/keys/{index}"), e))?);
        }
        if let Some(secret) = &self.secret {
            if secret.is_empty() {
                return Err(ConfigError::at("/secret", "must not be empty"));
            }
            let hmac = AlgorithmFamily::Hmac.algorithms();
            let algorithms = match &explicit {
                Some(accepted) => hmac
                    .iter()
                    .copied()
                    .filter(|a| accepted.contains(a))
                    .collect(),
                None => vec![Algorithm::HS256],
            };
            if algorithms.is_empty() {
                return Err(ConfigError::at(
                    "/algorithms",
                    "names no HS algorithm, so `secret` would verify nothing",
                ));
            }
            keys.push(Key::from_secret(secret.as_bytes(), algorithms));
        }
        let inline = KeySet::new(keys);
        let jwks = self.jwks.as_ref().map(JwksConfig::check).transpose()?;
        let algorithms = match explicit {
            Some(accepted) => accepted,
            None => {
                let mut all: Vec<Algorithm> = inline.algorithms().collect();
                if jwks.is_some() {
                    all.extend(asymmetric());
                }
                let mut unique = Vec::new();
                for alg in all {
                    if !unique.contains(&alg) {
                        unique.push(alg);
                    }
                }
                unique
            }
        };
        if self.issuer.as_deref() == Some("") {
            return Err(ConfigError::at(
                "/issuer",
                "must not be empty (leave it out instead)",
            ));
        }
        let auth = Auth {
            anonymous: self.anonymous.clone(),
            consumer_header: optional_header(&self.consumer_header, "/consumer_header")?,
        };
        auth.check().map_err(|e| ConfigError::at("/anonymous", e))?;
        Ok(Settings {
            header: header_name(&self.header, "/header")?,
            inline,
            jwks,
            algorithms,
            issuer: self.issuer,
            audiences: self.audiences,
            leeway: self.leeway_seconds,
            require_exp: self.require_exp,
            requirements: requirements(&self.required_scopes, &self.required_claims)?,
            forward: forward(&self.subject_header, &self.forward_claims)?,
            cache_size: self.cache_size,
            auth,
            consumer_required: self.consumer_required,
        })
    }

    /// The algorithms named in `algorithms`, if any are.
    fn algorithms(&self) -> Result<Option<Vec<Algorithm>>, ConfigError> {
        if self.algorithms.is_empty() {
            return Ok(None);
        }
        let mut all = Vec::new();
        for (index, name) in self.algorithms.iter().enumerate() {
            let at = format!("/algorithms/{index}");
            if name.eq_ignore_ascii_case("none") {
                return Err(ConfigError::at(
                    at,
                    "unsigned tokens (`none`) are never accepted",
                ));
            }
            let alg = name.parse::<Algorithm>().map_err(|_| {
                ConfigError::at(
                    &at,
                    format!(
                        "`{name}` is not one of HS256, HS384, HS512, RS256, RS384, RS512, \
                         PS256, PS384, PS512, ES256, ES384, EdDSA"
                    ),
                )
            })?;
            if !all.contains(&alg) {
                all.push(alg);
            }
        }
        Ok(Some(all))
    }
}

impl JwksConfig {
    fn check(&self) -> Result<Source, ConfigError> {
        if self.upstream.is_empty() {
            return Err(ConfigError::at(
                "/jwks/upstream",
                "must name an upstream group",
            ));
        }
        if !self.path.starts_with('/') {
            return Err(ConfigError::at("/jwks/path", "must start with `/`"));
        }
        let refresh = duration(&self.refresh_interval, "/jwks/refresh_interval")?;
        let min_refresh = duration(&self.min_refresh_interval, "/jwks/min_refresh_interval")?;
        let timeout = duration(&self.timeout, "/jwks/timeout")?;
        if min_refresh < MIN_REFRESH {
            return Err(ConfigError::at(
                "/jwks/min_refresh_interval",
                "must be at least 1s (it bounds the fetches tokens with unknown keys cause)",
            ));
        }
        if min_refresh > refresh {
            return Err(ConfigError::at(
                "/jwks/min_refresh_interval",
                "must not exceed `refresh_interval`",
            ));
        }
        if timeout.is_zero() || timeout > MAX_TIMEOUT {
            return Err(ConfigError::at(
                "/jwks/timeout",
                "must be above 0 and at most 1m",
            ));
        }
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Ok(Source {
            upstream: self.upstream.clone(),
            path: self.path.clone(),
            authority: self.authority.clone(),
            refresh_ms: ms(refresh),
            min_refresh_ms: ms(min_refresh),
            timeout,
        })
    }
}

/// The duration `text` (`30s`, `5m`) at `at`.
fn duration(text: &str, at: &str) -> Result<Duration, ConfigError> {
    weir_sdk::duration::parse(text).ok_or_else(|| {
        ConfigError::at(
            at,
            format!("`{text}` is not a duration (`<digits><unit>`, unit `ms`, `s`, `m` or `h`)"),
        )
    })
}

/// One entry of `keys`: `{ pem, kid }` or a JWK.
fn inline_key(value: &serde_json::Value) -> Result<Key, String> {
    let Some(object) = value.as_object() else {
        return Err("must be a JWK or `{ pem: ..., kid: ... }`".into());
    };
    let Some(pem) = object.get("pem") else {
        return Key::from_jwk(value, Origin::Inline);
    };
    if let Some(other) = object.keys().find(|k| *k != "pem" && *k != "kid") {
        return Err(format!(
            "a PEM key takes `pem` and `kid` only, not `{other}`"
        ));
    }
    let pem = pem.as_str().ok_or("`pem` must be a string")?;
    let kid = match object.get("kid") {
        None => None,
        Some(kid) => Some(kid.as_str().ok_or("`kid` must be a string")?.to_owned()),
    };
    Key::from_pem(pem, kid)
}

fn requirements(
    scopes: &[String],
    claims: &BTreeMap<String, serde_json::Value>,
) -> Result<Requirements, ConfigError> {
    for (index, scope) in scopes.iter().enumerate() {
        // RFC 6749 §3.3 scope-token.
        let ok = !scope.is_empty()
            && scope
                .bytes()
                .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b));
        if !ok {
            return Err(ConfigError::at(
                format!("/required_scopes/{index}"),
                format!("`{scope}` is not a scope (printable ASCII, no space, `\"` or `\\`)"),
            ));
        }
    }
    let mut required = Vec::new();
    for (name, value) in claims {
        let at = format!("/required_claims/{}", segment(name));
        let path = ClaimPath::parse(name).map_err(|e| ConfigError::at(&at, e))?;
        let accepted = Accepted::parse(value).map_err(|e| ConfigError::at(&at, e))?;
        required.push((path, accepted));
    }
    Ok(Requirements {
        scopes: scopes.to_vec(),
        claims: required,
    })
}

fn forward(
    subject_header: &str,
    claims: &BTreeMap<String, String>,
) -> Result<Vec<(ClaimPath, String)>, ConfigError> {
    let mut forward = Vec::new();
    let subject = optional_header(subject_header, "/subject_header")?;
    if !subject.is_empty() {
        forward.push((ClaimPath::parse("sub").map_err(ConfigError::new)?, subject));
    }
    for (name, header) in claims {
        let at = format!("/forward_claims/{}", segment(name));
        let path = ClaimPath::parse(name).map_err(|e| ConfigError::at(&at, e))?;
        let header = header_name(header, &at)?;
        if forward.iter().any(|(_, h)| *h == header) {
            return Err(ConfigError::at(
                at,
                format!("header `{header}` already carries a claim"),
            ));
        }
        forward.push((path, header));
    }
    Ok(forward)
}
