//! `acl`: lets a request through only when the consumer an auth filter
//! identified is in an allowed group (or in none of the denied ones).
//!
//! It runs after the route's auth filters. A request no auth filter
//! identified gets a 401; an anonymous consumer is judged by its own groups,
//! unless `allow_anonymous: false` keeps it out regardless.

use std::rc::Rc;

use serde::Deserialize;
use weir_sdk::{ConfigError, Filter, Flow, Http, Outcome, Plugin};

/// The plugin configuration: `allow` or `deny`, not both.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// Groups let in (a consumer needs one of them).
    #[serde(default)]
    allow: Vec<String>,
    /// Groups kept out (a consumer in any of them is refused).
    #[serde(default)]
    deny: Vec<String>,
    /// Whether anonymous consumers may pass (judged by their groups).
    #[serde(default = "yes")]
    allow_anonymous: bool,
    /// Request header the consumer's groups go upstream in, comma-separated
    /// (empty: not forwarded).
    #[serde(default)]
    groups_header: String,
}

fn yes() -> bool {
    true
}

/// Who may pass.
enum Rule {
    Allow(Vec<String>),
    Deny(Vec<String>),
}

struct Acl {
    rule: Rule,
    allow_anonymous: bool,
    groups_header: String,
}

impl Plugin for Acl {
    const NAME: &'static str = "acl";
    type Config = Config;
    type Filter = Check;

    fn configure(config: Config) -> Result<Self, ConfigError> {
        let rule = match (config.allow.is_empty(), config.deny.is_empty()) {
            (false, true) => Rule::Allow(config.allow),
            (true, false) => Rule::Deny(config.deny),
            (false, false) => {
                return Err(ConfigError::at("/deny", "give `allow` or `deny`, not both"));
            }
            (true, true) => {
                return Err(ConfigError::new("give the groups to `allow` or to `deny`"));
            }
        };
        Ok(Self {
            rule,
            allow_anonymous: config.allow_anonymous,
            groups_header: config.groups_header.to_ascii_lowercase(),
        })
    }

    fn filter(self: &Rc<Self>) -> Check {
        Check(self.clone())
    }
}

struct Check(Rc<Acl>);

impl Filter for Check {
    fn on_request_headers(&mut self, http: &mut Http<'_, Self>) -> Outcome {
        let acl = self.0.clone();
        let Some(consumer) = http.consumer()? else {
            return http.deny_with(
                401,
                "unauthorized",
                "no consumer identified",
                &[("www-authenticate", "Bearer")],
            );
        };
        let in_any = |groups: &[String]| consumer.groups.iter().any(|g| groups.contains(g));
        let allowed = match &acl.rule {
            Rule::Allow(groups) => in_any(groups),
            Rule::Deny(groups) => !in_any(groups),
        };
        if !allowed || (consumer.anonymous && !acl.allow_anonymous) {
            let message = format!("consumer `{}` may not use this route", consumer.name);
            return http.deny(403, "forbidden", &message);
        }
        if !acl.groups_header.is_empty() {
            http.set_request_header(&acl.groups_header, &consumer.groups.join(","))?;
        }
        Ok(Flow::Continue)
    }
}

weir_sdk::export!(Acl);

#[cfg(test)]
mod tests {
    use weir_sdk::consumers::Consumer;
    use weir_sdk::testing::{Request, TestConsumer, TestKit};

    use super::*;

    fn consumer(name: &str, groups: &[&str]) -> TestConsumer {
        TestConsumer {
            consumer: Consumer {
                name: name.into(),
                groups: groups.iter().map(|g| (*g).to_owned()).collect(),
                ..Consumer::default()
            },
            keys: vec![format!("k-{name}")],
            ..TestConsumer::default()
        }
    }

    fn kit(config: &str) -> TestKit<Acl> {
        TestKit::configure_with(
            config,
            vec![
                consumer("ada", &["staff", "ops"]),
                consumer("eve", &["banned"]),
            ],
        )
        .expect("a valid config")
    }

    /// The status the ACL answers `name` with (200: it let the request through).
    fn status(kit: &TestKit<Acl>, name: Option<&str>, anonymous: bool) -> u16 {
        let mut request = kit.request(Request::get("/"));
        if let Some(name) = name {
            request.identify(name, anonymous);
        }
        match request.send_headers() {
            Flow::Continue => 200,
            Flow::Pause => request.local_reply().map_or(0, |r| r.status),
        }
    }

    #[test]
    fn allow_lets_in_members_of_a_listed_group_only() {
        let kit = kit(r#"{"allow": ["ops"]}"#);
        assert_eq!(status(&kit, Some("ada"), false), 200);
        assert_eq!(status(&kit, Some("eve"), false), 403);
        assert_eq!(status(&kit, None, false), 401);
    }

    #[test]
    fn deny_keeps_out_members_of_a_listed_group() {
        let kit = kit(r#"{"deny": ["banned"]}"#);
        assert_eq!(status(&kit, Some("ada"), false), 200);
        assert_eq!(status(&kit, Some("eve"), false), 403);
    }

    #[test]
    fn anonymous_consumers_can_be_kept_out() {
        let open = kit(r#"{"deny": ["banned"]}"#);
        assert_eq!(status(&open, Some("ada"), true), 200);
        let closed = kit(r#"{"deny": ["banned"], "allow_anonymous": false}"#);
        assert_eq!(status(&closed, Some("ada"), true), 403);
    }

    #[test]
    fn groups_can_be_forwarded() {
        let kit = kit(r#"{"allow": ["staff"], "groups_header": "X-Groups"}"#);
        let mut request = kit.request(Request::get("/"));
        request.identify("ada", false);
        assert_eq!(request.send_headers(), Flow::Continue);
        assert_eq!(
            request.request_header("x-groups").as_deref(),
            Some("staff,ops")
        );
    }

    #[test]
    fn a_config_needs_allow_or_deny_but_not_both() {
        let both = TestKit::<Acl>::configure(r#"{"allow": ["a"], "deny": ["b"]}"#);
        assert_eq!(
            both.err().map(|e| e.to_string()).as_deref(),
            Some("/deny: give `allow` or `deny`, not both")
        );
        assert!(TestKit::<Acl>::configure("{}").is_err());
    }
}
