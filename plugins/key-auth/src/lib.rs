//! `key-auth`: a request passes with an API key that belongs to a consumer.
//!
//! The key is read from the first of the configured `sources` that carries
//! one (a header, a query parameter or a cookie) and resolved to a consumer:
//! first among the manifest's consumers (who hold their keys as SHA-256
//! digests), then, when `redis` is set, in Redis under
//! `{prefix}{SHA-256 of the key in hex}` (the value is the consumer's name),
//! with answers remembered on the node for `cache_seconds`. The key is
//! removed from the request before it goes upstream unless `keep_key`.

use std::rc::Rc;
use std::time::Duration;

use serde::Deserialize;
use sha2::{Digest, Sha256};
use weir_sdk::consumers::{self, Auth, Consumer, Credential};
use weir_sdk::params::{without_cookie, without_query_param};
use weir_sdk::{ConfigError, Error, Filter, Flow, Http, Outcome, Plugin, RedisValue, shared};

/// The plugin configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// Where the key may be, tried in order.
    #[serde(default = "default_sources")]
    sources: Vec<Source>,
    /// Forward the key upstream instead of removing it.
    #[serde(default)]
    keep_key: bool,
    /// Keys kept in Redis besides the manifest's.
    #[serde(default)]
    redis: Option<RedisKeys>,
    /// The consumer callers without a valid key are served as.
    #[serde(default)]
    anonymous: Option<String>,
    /// The request header the consumer's name goes upstream in.
    #[serde(default = "default_consumer_header")]
    consumer_header: String,
}

/// One place a key may be.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
enum Source {
    /// A request header.
    Header(String),
    /// A query parameter.
    Query(String),
    /// A cookie.
    Cookie(String),
}

/// Keys looked up in Redis.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RedisKeys {
    /// The manifest's Redis service.
    service: String,
    /// What every Redis key starts with.
    #[serde(default = "default_prefix")]
    prefix: String,
    /// How long a found key is remembered on this node.
    #[serde(default = "default_cache_seconds")]
    cache_seconds: u64,
    /// How long an unknown key is remembered on this node (0: asked every time).
    #[serde(default = "default_negative_cache_seconds")]
    negative_cache_seconds: u64,
}

fn default_sources() -> Vec<Source> {
    vec![Source::Header("x-api-key".into())]
}

fn default_consumer_header() -> String {
    consumers::DEFAULT_HEADER.into()
}

fn default_prefix() -> String {
    "weir:api-key:".into()
}

fn default_cache_seconds() -> u64 {
    30
}

fn default_negative_cache_seconds() -> u64 {
    5
}

/// The shared-data prefix of remembered Redis answers (the value: the
/// consumer's name, empty for a key Redis does not have).
const CACHE_PREFIX: &str = "key-auth/";

/// The challenge a 401 carries.
const CHALLENGE: (&str, &str) = ("www-authenticate", "Key");

struct KeyAuth {
    config: Config,
    auth: Auth,
}

impl Plugin for KeyAuth {
    const NAME: &'static str = "key-auth";
    type Config = Config;
    type Filter = Check;

    fn configure(config: Config) -> Result<Self, ConfigError> {
        if config.sources.is_empty() {
            return Err(ConfigError::at("/sources", "must name at least one place"));
        }
        for (i, source) in config.sources.iter().enumerate() {
            let (Source::Header(name) | Source::Query(name) | Source::Cookie(name)) = source;
            if name.is_empty() {
                return Err(ConfigError::at(
                    format!("/sources/{i}"),
                    "must not be empty",
                ));
            }
        }
        if let Some(redis) = &config.redis
            && redis.service.is_empty()
        {
            return Err(ConfigError::at("/redis/service", "must not be empty"));
        }
        let auth = Auth {
            anonymous: config.anonymous.clone(),
            consumer_header: config.consumer_header.to_ascii_lowercase(),
        };
        auth.check().map_err(|e| ConfigError::at("/anonymous", e))?;
        Ok(Self { config, auth })
    }

    fn filter(self: &Rc<Self>) -> Check {
        Check(self.clone())
    }
}

/// The SHA-256 of `key` in lower-case hex, as keys are stored.
fn digest_hex(key: &str) -> String {
    format!("{:x}", Sha256::digest(key.as_bytes()))
}

struct Check(Rc<KeyAuth>);

impl Check {
    /// The key and where it was found.
    fn key(&self, http: &Http<'_, Self>) -> Result<Option<(String, &Source)>, Error> {
        for source in &self.0.config.sources {
            let found = match source {
                Source::Header(name) => http.request_header(name)?,
                Source::Query(name) => http.query_param(name)?,
                Source::Cookie(name) => http.cookie(name)?,
            };
            if let Some(key) = found.filter(|k| !k.is_empty()) {
                return Ok(Some((key, source)));
            }
        }
        Ok(None)
    }

    /// Admits `consumer`, the key removed first unless it is kept.
    fn admit(&self, http: &mut Http<'_, Self>, consumer: &Consumer, source: &Source) -> Outcome {
        if !self.0.config.keep_key {
            remove_key(http, source)?;
        }
        self.0.auth.admit(http, consumer)
    }

    /// Answers for a key no consumer holds (`name` from Redis, if any).
    fn resolved(&self, http: &mut Http<'_, Self>, name: Option<&str>, source: &Source) -> Outcome {
        let consumer = match name {
            Some(name) => consumers::find(Credential::Name(name))?,
            None => None,
        };
        match consumer {
            Some(consumer) => self.admit(http, &consumer, source),
            None => self.0.auth.refuse(http, "invalid API key", &[CHALLENGE]),
        }
    }
}

/// Removes the key from where it was found.
fn remove_key(http: &mut Http<'_, Check>, source: &Source) -> Result<(), Error> {
    match source {
        Source::Header(name) => http.remove_request_header(name)?,
        Source::Query(name) => {
            let path = http.path()?.unwrap_or_default();
            http.set_request_header(":path", &without_query_param(&path, name))?;
        }
        Source::Cookie(name) => {
            let header = http.request_header("cookie")?.unwrap_or_default();
            match without_cookie(&header, name) {
                Some(rest) => http.set_request_header("cookie", &rest)?,
                None => http.remove_request_header("cookie")?,
            }
        }
    }
    Ok(())
}

impl Filter for Check {
    fn on_request_headers(&mut self, http: &mut Http<'_, Self>) -> Outcome {
        let plugin = self.0.clone();
        if plugin.auth.already_identified(http)? {
            return Ok(Flow::Continue);
        }
        let Some((key, source)) = self.key(http)? else {
            return plugin.auth.refuse(http, "missing API key", &[CHALLENGE]);
        };
        let source = source.clone();
        if let Some(consumer) = consumers::find(Credential::Key(&key))? {
            return self.admit(http, &consumer, &source);
        }
        let Some(redis) = &plugin.config.redis else {
            return self.resolved(http, None, &source);
        };
        let digest = digest_hex(&key);
        let cached = format!("{CACHE_PREFIX}{digest}");
        if let Some(entry) = shared::get(&cached)? {
            let name = String::from_utf8_lossy(&entry.value).into_owned();
            return self.resolved(http, Some(name.as_str()).filter(|n| !n.is_empty()), &source);
        }
        let redis_key = format!("{}{digest}", redis.prefix);
        let plugin = plugin.clone();
        http.redis(
            &redis.service,
            &["GET", &redis_key],
            move |check, http, reply| {
                let Some(redis) = &plugin.config.redis else {
                    return Err(Error::msg("the Redis lookup lost its configuration"));
                };
                let (name, ttl) = match reply {
                    Ok(RedisValue::Nil) => (None, redis.negative_cache_seconds),
                    Ok(value) => match value.as_str() {
                        Some(name) => (Some(name.to_owned()), redis.cache_seconds),
                        None => {
                            return unavailable(http, &format!("unexpected Redis reply {value:?}"));
                        }
                    },
                    Err(error) => return unavailable(http, &error.to_string()),
                };
                if ttl > 0 {
                    let remembered = name.as_deref().unwrap_or_default().as_bytes();
                    if shared::set(&cached, remembered, None).is_ok() {
                        let _ = shared::set_ttl(&cached, Duration::from_secs(ttl));
                    }
                }
                check.resolved(http, name.as_deref(), &source)
            },
        )?;
        Ok(Flow::Pause)
    }
}

/// Redis cannot say whose key it is: 503, never a guess.
fn unavailable(http: &mut Http<'_, Check>, why: &str) -> Outcome {
    http.warn(&format!("cannot look the API key up in Redis: {why}"));
    http.deny(503, "auth_unavailable", "the API key cannot be checked now")
}

weir_sdk::export!(KeyAuth);

#[cfg(test)]
mod tests {
    use weir_sdk::testing::{Request, TestConsumer, TestKit};

    use super::*;

    fn ada() -> TestConsumer {
        TestConsumer {
            consumer: Consumer {
                name: "ada".into(),
                groups: vec!["staff".into()],
                ..Consumer::default()
            },
            keys: vec!["k-ada".into()],
            ..TestConsumer::default()
        }
    }

    fn guest() -> TestConsumer {
        TestConsumer {
            consumer: Consumer {
                name: "guest".into(),
                ..Consumer::default()
            },
            ..TestConsumer::default()
        }
    }

    fn kit(config: &str) -> TestKit<KeyAuth> {
        TestKit::configure_with(config, vec![ada(), guest()]).expect("a valid config")
    }

    #[test]
    fn a_known_key_identifies_its_consumer_and_is_not_forwarded() {
        let kit = kit("{}");
        let mut request = kit.request(Request::get("/").header("x-api-key", "k-ada"));
        assert_eq!(request.send_headers(), Flow::Continue);
        assert_eq!(request.consumer().map(|c| c.name).as_deref(), Some("ada"));
        assert_eq!(
            request.request_header("x-consumer-name").as_deref(),
            Some("ada")
        );
        assert_eq!(request.request_header("x-api-key"), None);
    }

    #[test]
    fn a_missing_or_unknown_key_gets_a_401_challenge() {
        let kit = kit("{}");
        let mut missing = kit.request(Request::get("/"));
        assert_eq!(missing.send_headers(), Flow::Pause);
        let reply = missing.local_reply().expect("a 401");
        assert_eq!(reply.status, 401);
        assert_eq!(reply.header("www-authenticate"), Some("Key"));
        assert_eq!(reply.json()["error"]["message"], "missing API key");
        let mut unknown = kit.request(Request::get("/").header("x-api-key", "nope"));
        assert_eq!(unknown.send_headers(), Flow::Pause);
        let reply = unknown.local_reply().expect("a 401");
        assert_eq!(reply.json()["error"]["message"], "invalid API key");
    }

    #[test]
    fn keys_from_queries_and_cookies_are_removed_alone() {
        let kit = kit(r#"{"sources": [{"query": "api_key"}, {"cookie": "key"}]}"#);
        let mut query = kit.request(Request::get("/items?page=2&api_key=k-ada"));
        assert_eq!(query.send_headers(), Flow::Continue);
        assert_eq!(
            query.request_header(":path").as_deref(),
            Some("/items?page=2")
        );
        let mut cookie = kit.request(Request::get("/").header("cookie", "theme=dark; key=k-ada"));
        assert_eq!(cookie.send_headers(), Flow::Continue);
        assert_eq!(
            cookie.request_header("cookie").as_deref(),
            Some("theme=dark")
        );
        let kept = TestKit::<KeyAuth>::configure_with(
            r#"{"sources": [{"query": "api_key"}], "keep_key": true}"#,
            vec![ada()],
        )
        .expect("a valid config");
        let mut request = kept.request(Request::get("/items?api_key=k-ada"));
        assert_eq!(request.send_headers(), Flow::Continue);
        assert_eq!(
            request.request_header(":path").as_deref(),
            Some("/items?api_key=k-ada")
        );
    }

    #[test]
    fn anonymous_callers_pass_as_the_anonymous_consumer() {
        let kit = kit(r#"{"anonymous": "guest"}"#);
        let mut request = kit.request(Request::get("/").header("x-api-key", "nope"));
        assert_eq!(request.send_headers(), Flow::Continue);
        let consumer = request.consumer().expect("identified");
        assert_eq!(
            (consumer.name.as_str(), consumer.anonymous),
            ("guest", true)
        );
        let unknown = TestKit::<KeyAuth>::configure_with(r#"{"anonymous": "nobody"}"#, vec![]);
        let error = unknown.err().expect("refused").to_string();
        assert!(
            error.contains("/anonymous") && error.contains("no consumer is named `nobody`"),
            "{error}"
        );
    }

    #[test]
    fn keys_in_redis_are_looked_up_once_then_remembered() {
        let kit = kit(r#"{"redis": {"service": "keys"}}"#);
        let mut first = kit.request(Request::get("/").header("x-api-key", "k-redis"));
        assert_eq!(first.send_headers(), Flow::Pause);
        let calls = first.redis_calls();
        let expected = format!("weir:api-key:{}", digest_hex("k-redis"));
        let query = String::from_utf8_lossy(&calls[0].query).into_owned();
        assert!(query.contains(&expected), "{query}");
        first.answer_redis(calls[0].token, &RedisValue::Bulk(b"ada".to_vec()));
        assert!(first.resumed());
        assert_eq!(first.consumer().map(|c| c.name).as_deref(), Some("ada"));
        let mut second = kit.request(Request::get("/").header("x-api-key", "k-redis"));
        assert_eq!(second.send_headers(), Flow::Continue, "remembered");
        assert_eq!(second.redis_calls().len(), 1, "Redis was asked once in all");
    }

    #[test]
    fn redis_failures_answer_503_and_unknown_keys_401() {
        let kit = kit(r#"{"redis": {"service": "keys"}}"#);
        let mut failed = kit.request(Request::get("/").header("x-api-key", "k1"));
        failed.send_headers();
        let token = failed.redis_calls()[0].token;
        failed.fail_redis(token);
        assert_eq!(failed.local_reply().expect("a 503").status, 503);
        let mut unknown = kit.request(Request::get("/").header("x-api-key", "k2"));
        unknown.send_headers();
        let token = unknown.redis_calls().last().expect("a call").token;
        unknown.answer_redis(token, &RedisValue::Nil);
        assert_eq!(unknown.local_reply().expect("a 401").status, 401);
    }
}
