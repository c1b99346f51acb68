//! The running manifest's consumers, indexed by every credential, for the
//! auth plugins' `weir.consumer_find`; and the `weir.consumer` property of
//! a request identified as one of them (`weir.consumer_set`).
//!
//! A build stages the new list ([`Consumers::stage`]), which filters starting
//! in it see when they check their configuration (an `anonymous` consumer
//! that the same change adds), and publishes it whole once the build is
//! swapped in ([`Consumers::publish`]): a request sees the old list or the
//! new one, never a mix, and no filter restarts.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::json;

use crate::config::model::Consumer;
use crate::config::token_digest;

/// The consumers of the running manifest, and of the one being built.
#[derive(Default)]
pub struct Consumers {
    index: ArcSwap<Index>,
    staged: ArcSwap<Index>,
}

/// Every consumer by each of its credentials.
#[derive(Default)]
struct Index {
    by_name: HashMap<String, Arc<Entry>>,
    by_key: HashMap<[u8; 32], Arc<Entry>>,
    by_username: HashMap<String, Arc<Entry>>,
    /// By (issuer, subject); `None` for identities valid from any issuer.
    by_subject: HashMap<(Option<String>, String), Arc<Entry>>,
}

/// One consumer and what plugins are told about it.
struct Entry {
    consumer: Consumer,
    /// `{"name", "groups", "limits": [{"requests", "per_ms"}]}`: no secrets.
    view: serde_json::Value,
}

/// What a plugin asks `weir.consumer_find`: one credential.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum Query {
    /// By name (an `anonymous` consumer, a name a Redis lookup returned).
    Name(String),
    /// By API key (in the clear; hashed here).
    Key(String),
    /// By basic-auth user name; the answer carries the password hash.
    Username(String),
    /// By JWT subject, and issuer when the token has one.
    Subject {
        /// The token's `iss`.
        #[serde(default)]
        issuer: Option<String>,
        /// The token's `sub`.
        subject: String,
    },
}

impl Consumers {
    /// Makes `consumers` the list that configure-time lookups answer from.
    pub fn stage(&self, consumers: &[Consumer]) {
        let mut index = Index::default();
        for consumer in consumers {
            let entry = Arc::new(Entry {
                view: view(consumer),
                consumer: consumer.clone(),
            });
            index.by_name.insert(consumer.name.clone(), entry.clone());
            for key in &consumer.api_keys {
                index.by_key.insert(*key, entry.clone());
            }
            if let Some(basic) = &consumer.basic_auth {
                index
                    .by_username
                    .insert(basic.username.clone(), entry.clone());
            }
            for identity in &consumer.jwt {
                let at = (identity.issuer.clone(), identity.subject.clone());
                index.by_subject.insert(at, entry.clone());
            }
        }
        self.staged.store(Arc::new(index));
    }

    /// Makes the staged list the one requests see.
    pub fn publish(&self) {
        self.index.store(self.staged.load_full());
    }

    /// The consumer `query` names, as the JSON a plugin reads (from the
    /// staged list while `configuring`); `None` when no consumer has that
    /// credential.
    pub fn find(&self, query: &Query, configuring: bool) -> Option<Vec<u8>> {
        let index = if configuring {
            self.staged.load()
        } else {
            self.index.load()
        };
        let entry = match query {
            Query::Name(name) => index.by_name.get(name),
            Query::Key(key) => index.by_key.get(&token_digest(key.as_bytes())),
            Query::Username(username) => index.by_username.get(username),
            Query::Subject { issuer, subject } => issuer
                .as_ref()
                .and_then(|issuer| {
                    index
                        .by_subject
                        .get(&(Some(issuer.clone()), subject.clone()))
                })
                .or_else(|| index.by_subject.get(&(None, subject.clone()))),
        }?;
        let mut answer = entry.view.clone();
        if let (Query::Username(_), Some(basic)) = (query, &entry.consumer.basic_auth) {
            answer["password_hash"] = basic.password_hash.clone().into();
        }
        Some(answer.to_string().into_bytes())
    }

    /// The `weir.consumer` property of a request identified as consumer
    /// `name` (its view with `anonymous`), if there is such a consumer.
    pub fn identify(&self, name: &str, anonymous: bool) -> Option<Bytes> {
        let index = self.index.load();
        let entry = index.by_name.get(name)?;
        let mut property = entry.view.clone();
        property["anonymous"] = anonymous.into();
        Some(Bytes::from(property.to_string()))
    }
}

/// What plugins are told about `consumer`.
fn view(consumer: &Consumer) -> serde_json::Value {
    let limits: Vec<_> = consumer
        .limits
        .iter()
        .map(|l| json!({ "requests": l.requests, "per_ms": l.per.as_millis() as u64 }))
        .collect();
    json!({ "name": consumer.name, "groups": consumer.groups, "limits": limits })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::model::{BasicAuth, ConsumerLimit, JwtIdentity};

    fn consumers() -> Consumers {
        let all = Consumers::default();
        all.stage(&[
            Consumer {
                name: "ada".into(),
                groups: vec!["staff".into()],
                api_keys: vec![token_digest(b"k-ada")],
                basic_auth: Some(BasicAuth {
                    username: "ada".into(),
                    password_hash: "$2b$04$hash".into(),
                }),
                jwt: vec![JwtIdentity {
                    issuer: Some("https://idp".into()),
                    subject: "42".into(),
                }],
                limits: vec![ConsumerLimit {
                    requests: 10,
                    per: Duration::from_secs(1),
                }],
            },
            Consumer {
                name: "bob".into(),
                groups: vec![],
                api_keys: vec![],
                basic_auth: None,
                jwt: vec![JwtIdentity {
                    issuer: None,
                    subject: "42".into(),
                }],
                limits: vec![],
            },
        ]);
        all.publish();
        all
    }

    fn found(all: &Consumers, query: &str) -> Option<serde_json::Value> {
        let query: Query = serde_json::from_str(query).expect("a query");
        all.find(&query, false)
            .map(|bytes| serde_json::from_slice(&bytes).expect("JSON"))
    }

    #[test]
    fn finds_a_consumer_by_each_credential_and_hides_secrets() {
        let all = consumers();
        let by_key = found(&all, r#"{"key":"k-ada"}"#).expect("by key");
        assert_eq!(
            by_key,
            json!({"name": "ada", "groups": ["staff"], "limits": [{"requests": 10, "per_ms": 1000}]})
        );
        assert_eq!(found(&all, r#"{"key":"k-nobody"}"#), None);
        let by_user = found(&all, r#"{"username":"ada"}"#).expect("by user name");
        assert_eq!(by_user["password_hash"], "$2b$04$hash");
        assert_eq!(
            found(&all, r#"{"name":"bob"}"#).expect("by name")["name"],
            "bob"
        );
    }

    #[test]
    fn a_subject_from_its_own_issuer_wins_over_one_from_any_issuer() {
        let all = consumers();
        let query = r#"{"subject":{"issuer":"https://idp","subject":"42"}}"#;
        assert_eq!(
            found(&all, query).expect("issuer and subject")["name"],
            "ada"
        );
        let other = r#"{"subject":{"issuer":"https://other","subject":"42"}}"#;
        assert_eq!(found(&all, other).expect("any issuer")["name"], "bob");
        let none = r#"{"subject":{"subject":"42"}}"#;
        assert_eq!(found(&all, none).expect("no issuer")["name"], "bob");
    }

    #[test]
    fn a_staged_list_is_seen_at_configure_time_until_it_is_published() {
        let all = consumers();
        all.stage(&[]);
        let ada: Query = serde_json::from_str(r#"{"name":"ada"}"#).expect("a query");
        assert!(
            all.find(&ada, true).is_none(),
            "the build sees the new list"
        );
        assert!(
            all.find(&ada, false).is_some(),
            "requests still see the old one"
        );
        all.publish();
        assert!(all.find(&ada, false).is_none());
        assert!(all.identify("ada", false).is_none());
    }
}
