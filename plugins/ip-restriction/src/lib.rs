//! `ip-restriction`: lets a request through by its client's address.
//!
//! The client is the peer, or, when the peer is one of `trusted_proxies`, the
//! address `x-forwarded-for` names (the rule `rate-limit` keys on too; see
//! `weir_sdk::net`). A client in `deny` is refused; with `allow` set, so is
//! any client outside it. Deny wins over allow.

use std::rc::Rc;

use serde::Deserialize;
use weir_sdk::net::{Cidr, any_contains, parse_cidrs};
use weir_sdk::{ConfigError, Filter, Flow, Http, Outcome, Plugin};

/// The plugin configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// Blocks of clients let in (empty: every client not denied).
    #[serde(default)]
    allow: Vec<String>,
    /// Blocks of clients kept out.
    #[serde(default)]
    deny: Vec<String>,
    /// Proxies whose `x-forwarded-for` is believed.
    #[serde(default)]
    trusted_proxies: Vec<String>,
    /// The status refused clients get.
    #[serde(default = "default_status")]
    status: u16,
}

fn default_status() -> u16 {
    403
}

struct IpRestriction {
    allow: Vec<Cidr>,
    deny: Vec<Cidr>,
    trusted: Vec<Cidr>,
    status: u16,
}

/// `blocks` parsed, a bad one reported at `/{field}/{index}`.
fn blocks(field: &str, blocks: &[String]) -> Result<Vec<Cidr>, ConfigError> {
    parse_cidrs(blocks).map_err(|(i, e)| ConfigError::at(format!("/{field}/{i}"), e.to_string()))
}

impl Plugin for IpRestriction {
    const NAME: &'static str = "ip-restriction";
    type Config = Config;
    type Filter = Check;

    fn configure(config: Config) -> Result<Self, ConfigError> {
        if config.allow.is_empty() && config.deny.is_empty() {
            return Err(ConfigError::new(
                "give the blocks to `allow`, to `deny`, or both",
            ));
        }
        if !(400..=599).contains(&config.status) {
            return Err(ConfigError::at("/status", "must be from 400 to 599"));
        }
        Ok(Self {
            allow: blocks("allow", &config.allow)?,
            deny: blocks("deny", &config.deny)?,
            trusted: blocks("trusted_proxies", &config.trusted_proxies)?,
            status: config.status,
        })
    }

    fn filter(self: &Rc<Self>) -> Check {
        Check(self.clone())
    }
}

struct Check(Rc<IpRestriction>);

impl Filter for Check {
    fn on_request_headers(&mut self, http: &mut Http<'_, Self>) -> Outcome {
        let rules = self.0.clone();
        let Some(client) = http.client_ip(&rules.trusted)? else {
            // No address to judge: refused, never waved through.
            return http.deny(
                rules.status,
                "ip_forbidden",
                "the client's address is unknown",
            );
        };
        let denied = any_contains(&rules.deny, client)
            || (!rules.allow.is_empty() && !any_contains(&rules.allow, client));
        if denied {
            let message = format!("client {client} may not use this route");
            return http.deny(rules.status, "ip_forbidden", &message);
        }
        Ok(Flow::Continue)
    }
}

weir_sdk::export!(IpRestriction);

#[cfg(test)]
mod tests {
    use weir_sdk::testing::{Request, TestKit};

    use super::*;

    /// The status for a request from `peer` with `x-forwarded-for` `forwarded` (200: through).
    fn status(kit: &TestKit<IpRestriction>, peer: &str, forwarded: Option<&str>) -> u16 {
        kit.set_property(&["source", "address"], peer.as_bytes());
        let mut request = Request::get("/");
        if let Some(forwarded) = forwarded {
            request = request.header("x-forwarded-for", forwarded);
        }
        let mut exchange = kit.request(request);
        match exchange.send_headers() {
            Flow::Continue => 200,
            Flow::Pause => exchange.local_reply().map_or(0, |r| r.status),
        }
    }

    #[test]
    fn allow_and_deny_lists_judge_both_families() {
        let kit = TestKit::<IpRestriction>::configure(
            r#"{"allow": ["10.0.0.0/8", "2001:db8::/32"], "deny": ["10.9.0.0/16"]}"#,
        )
        .expect("a valid config");
        assert_eq!(status(&kit, "10.1.2.3:5000", None), 200);
        assert_eq!(status(&kit, "10.9.2.3:5000", None), 403, "deny wins");
        assert_eq!(status(&kit, "192.0.2.1:5000", None), 403, "outside allow");
        assert_eq!(status(&kit, "[2001:db8::7]:443", None), 200);
        assert_eq!(status(&kit, "[2001:db9::7]:443", None), 403);
    }

    #[test]
    fn forwarded_addresses_count_only_through_trusted_proxies() {
        let kit = TestKit::<IpRestriction>::configure(
            r#"{"deny": ["203.0.113.0/24"], "trusted_proxies": ["10.0.0.0/8"], "status": 451}"#,
        )
        .expect("a valid config");
        assert_eq!(status(&kit, "10.0.0.1:1", Some("203.0.113.9")), 451);
        assert_eq!(status(&kit, "10.0.0.1:1", Some("198.51.100.1")), 200);
        // An untrusted peer cannot hide behind a header it wrote.
        assert_eq!(status(&kit, "203.0.113.9:1", Some("198.51.100.1")), 451);
    }

    #[test]
    fn a_bad_block_is_reported_at_its_place() {
        let error =
            TestKit::<IpRestriction>::configure(r#"{"allow": ["10.0.0.0/8", "10.0.0.1/8"]}"#)
                .err()
                .map(|e| e.to_string());
        assert_eq!(
            error.as_deref(),
            Some("/allow/1: `10.0.0.1/8` has host bits set; the network is `10.0.0.0/8`")
        );
    }
}
