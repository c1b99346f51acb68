//! `basic-auth`: a request passes with `Authorization: Basic` credentials
//! that match a consumer's password hash (bcrypt or argon2).
//!
//! A password hash is slow on purpose, so a verified pair is remembered on
//! the node for `cache_seconds`, under a SHA-256 of the stored hash and the
//! password (never the password itself); a client that sends the same
//! credentials again skips the hash. Changing a consumer's hash makes the
//! remembered pair useless at once, since the stored hash is part of the key.

use std::rc::Rc;
use std::time::Duration;

use base64::Engine;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use weir_sdk::consumers::{self, Auth, Credential};
use weir_sdk::{ConfigError, Filter, Flow, Http, Outcome, Plugin, shared};

/// The plugin configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// The realm the challenge names.
    #[serde(default = "default_realm")]
    realm: String,
    /// How long a verified user name and password are remembered on the node.
    #[serde(default = "default_cache_seconds")]
    cache_seconds: u64,
    /// Forward the `authorization` header upstream instead of removing it.
    #[serde(default)]
    keep_credentials: bool,
    /// The consumer callers without valid credentials are served as.
    #[serde(default)]
    anonymous: Option<String>,
    /// The request header the consumer's name goes upstream in.
    #[serde(default = "default_consumer_header")]
    consumer_header: String,
}

fn default_realm() -> String {
    "weir".into()
}

fn default_cache_seconds() -> u64 {
    300
}

fn default_consumer_header() -> String {
    consumers::DEFAULT_HEADER.into()
}

/// The shared-data prefix of verified pairs.
const CACHE_PREFIX: &str = "basic-auth/";

struct BasicAuth {
    config: Config,
    auth: Auth,
    /// `Basic realm="…"`.
    challenge: String,
}

impl Plugin for BasicAuth {
    const NAME: &'static str = "basic-auth";
    type Config = Config;
    type Filter = Check;

    fn configure(config: Config) -> Result<Self, ConfigError> {
        if config.realm.contains('"') || config.realm.chars().any(char::is_control) {
            return Err(ConfigError::at(
                "/realm",
                "must not contain `\"` or control characters",
            ));
        }
        let auth = Auth {
            anonymous: config.anonymous.clone(),
            consumer_header: config.consumer_header.to_ascii_lowercase(),
        };
        auth.check().map_err(|e| ConfigError::at("/anonymous", e))?;
        let challenge = format!("Basic realm=\"{}\", charset=\"UTF-8\"", config.realm);
        Ok(Self {
            config,
            auth,
            challenge,
        })
    }

    fn filter(self: &Rc<Self>) -> Check {
        Check(self.clone())
    }
}

/// The user name and password of an `Authorization: Basic …` value.
fn credentials(header: &str) -> Option<(String, String)> {
    let (scheme, encoded) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

/// Whether `password` matches `hash` (bcrypt `$2a$/$2b$/$2y$` or argon2).
fn verify(password: &str, hash: &str) -> bool {
    if hash.starts_with("$argon2") {
        use argon2::password_hash::{PasswordHash, PasswordVerifier};
        return PasswordHash::new(hash).is_ok_and(|parsed| {
            argon2::Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        });
    }
    bcrypt::verify(password, hash).unwrap_or(false)
}

/// The shared-data key remembering that `password` matched `hash`.
fn cache_key(hash: &str, password: &str) -> String {
    let mut digest = Sha256::new();
    digest.update(hash.as_bytes());
    digest.update([0]);
    digest.update(password.as_bytes());
    format!("{CACHE_PREFIX}{:x}", digest.finalize())
}

struct Check(Rc<BasicAuth>);

impl Check {
    /// Whether `password` is the one `hash` stands for, remembered or verified.
    fn matches(&self, hash: &str, password: &str) -> bool {
        let key = cache_key(hash, password);
        if matches!(shared::get(&key), Ok(Some(_))) {
            return true;
        }
        if !verify(password, hash) {
            return false;
        }
        let ttl = self.0.config.cache_seconds;
        if ttl > 0 && shared::set(&key, b"1", None).is_ok() {
            let _ = shared::set_ttl(&key, Duration::from_secs(ttl));
        }
        true
    }
}

impl Filter for Check {
    fn on_request_headers(&mut self, http: &mut Http<'_, Self>) -> Outcome {
        let plugin = self.0.clone();
        if plugin.auth.already_identified(http)? {
            return Ok(Flow::Continue);
        }
        let challenge = [("www-authenticate", plugin.challenge.as_str())];
        let header = http.request_header("authorization")?;
        let Some((user, password)) = header.as_deref().and_then(credentials) else {
            return plugin
                .auth
                .refuse(http, "missing basic-auth credentials", &challenge);
        };
        let consumer = consumers::find(Credential::Username(&user))?;
        let verified = consumer.as_ref().is_some_and(|c| {
            c.password_hash
                .as_deref()
                .is_some_and(|hash| self.matches(hash, &password))
        });
        match consumer {
            Some(consumer) if verified => {
                if !plugin.config.keep_credentials {
                    http.remove_request_header("authorization")?;
                }
                plugin.auth.admit(http, &consumer)
            }
            _ => plugin
                .auth
                .refuse(http, "invalid user name or password", &challenge),
        }
    }
}

weir_sdk::export!(BasicAuth);

#[cfg(test)]
mod tests {
    use weir_sdk::consumers::Consumer;
    use weir_sdk::testing::{Request, TestConsumer, TestKit};

    use super::*;

    fn basic(user: &str, password: &str) -> String {
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        format!("Basic {encoded}")
    }

    fn user(name: &str, hash: String) -> TestConsumer {
        TestConsumer {
            consumer: Consumer {
                name: name.into(),
                password_hash: Some(hash),
                ..Consumer::default()
            },
            username: Some(name.into()),
            ..TestConsumer::default()
        }
    }

    fn argon2_hash(password: &str) -> String {
        use argon2::password_hash::{PasswordHasher, SaltString};
        let salt = SaltString::encode_b64(b"weir-test-salt!!").expect("a salt");
        argon2::Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .expect("a hash")
            .to_string()
    }

    fn kit(config: &str) -> TestKit<BasicAuth> {
        let bcrypt = bcrypt::hash("open sesame", 4).expect("a bcrypt hash");
        TestKit::configure_with(
            config,
            vec![user("ada", bcrypt), user("bob", argon2_hash("hunter2"))],
        )
        .expect("a valid config")
    }

    #[test]
    fn bcrypt_and_argon2_passwords_identify_their_consumer() {
        let kit = kit("{}");
        for (name, password) in [("ada", "open sesame"), ("bob", "hunter2")] {
            let mut request =
                kit.request(Request::get("/").header("authorization", &basic(name, password)));
            assert_eq!(request.send_headers(), Flow::Continue, "{name}");
            assert_eq!(request.consumer().map(|c| c.name).as_deref(), Some(name));
            assert_eq!(
                request.request_header("authorization"),
                None,
                "not forwarded"
            );
            assert_eq!(
                request.request_header("x-consumer-name").as_deref(),
                Some(name)
            );
        }
    }

    #[test]
    fn wrong_missing_or_malformed_credentials_get_a_401_challenge() {
        let kit = kit(r#"{"realm": "api"}"#);
        for header in [
            Some(basic("ada", "wrong")),
            Some(basic("nobody", "open sesame")),
            Some("Basic !!!".to_owned()),
            Some("Bearer abc".to_owned()),
            None,
        ] {
            let mut request = Request::get("/");
            if let Some(header) = &header {
                request = request.header("authorization", header);
            }
            let mut exchange = kit.request(request);
            assert_eq!(exchange.send_headers(), Flow::Pause, "{header:?}");
            let reply = exchange.local_reply().expect("a 401");
            assert_eq!(reply.status, 401);
            assert_eq!(
                reply.header("www-authenticate"),
                Some("Basic realm=\"api\", charset=\"UTF-8\"")
            );
            assert_eq!(reply.json()["error"]["code"], "unauthorized");
        }
    }

    #[test]
    fn a_verified_pair_is_remembered_under_a_digest_not_the_password() {
        let kit = kit("{}");
        let mut request =
            kit.request(Request::get("/").header("authorization", &basic("bob", "hunter2")));
        assert_eq!(request.send_headers(), Flow::Continue);
        let hash = argon2_hash("hunter2");
        assert_eq!(
            kit.shared(&cache_key(&hash, "hunter2")),
            Some(b"1".to_vec())
        );
        assert!(!cache_key(&hash, "hunter2").contains("hunter2"));
    }

    #[test]
    fn a_password_with_a_colon_is_read_whole() {
        assert_eq!(
            credentials(&basic("ada", "a:b")),
            Some(("ada".to_owned(), "a:b".to_owned()))
        );
    }
}
