//! Where an upstream group learns its targets besides its `targets` list,
//! as validated config: DNS, a watched file, etcd, Consul or Eureka, each
//! decoded straight from the manifest with its defaults; and the parsing of
//! the target lists a file or an etcd key holds.

use std::fmt;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::time::Duration;

use super::decode::{Decode, Diagnostics, Fields, HumanDuration, Located, mismatch};
use super::model::Target;
use super::node::{Location, Node, Value};
use super::raw::RawTarget;

/// A discovery source of an upstream group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Discovery {
    /// A DNS name, re-resolved on an interval.
    Dns(DnsDiscovery),
    /// A file of targets, watched for changes.
    File(FileDiscovery),
    /// The keys under a prefix in etcd, watched.
    Etcd(EtcdDiscovery),
    /// A service in Consul's health API, followed by blocking queries.
    Consul(ConsulDiscovery),
    /// An application in a Eureka registry, polled for deltas.
    Eureka(EurekaDiscovery),
}

impl Discovery {
    /// The source's kind, for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Dns(_) => "dns",
            Self::File(_) => "file",
            Self::Etcd(_) => "etcd",
            Self::Consul(_) => "consul",
            Self::Eureka(_) => "eureka",
        }
    }
}

/// Targets from DNS records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsDiscovery {
    /// The name resolved.
    pub name: String,
    /// Which records, and the port for address records.
    pub record: DnsRecord,
    /// The longest time between two resolutions.
    pub interval: Duration,
    /// The shortest time between two resolutions (a floor under short TTLs).
    pub min_interval: Duration,
    /// The name server asked (default: the system's, from `/etc/resolv.conf`).
    pub nameserver: Option<SocketAddr>,
    /// How long one resolution may take.
    pub timeout: Duration,
}

/// The records a DNS source reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnsRecord {
    /// A and AAAA records, each address with this port.
    Address {
        /// The targets' port.
        port: u16,
    },
    /// SRV records: host, port and weight per record (the lowest priority only).
    Srv,
}

/// Targets from a file (YAML or JSON, a list as `targets` is written).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileDiscovery {
    /// The file (resolved against the manifest's directory).
    pub path: PathBuf,
}

/// Targets from the keys under a prefix in etcd (v3 API).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdDiscovery {
    /// The cluster's client endpoints, `host:port` or `http://host:port`.
    pub endpoints: Vec<String>,
    /// The key prefix; each key under it is one target.
    pub prefix: String,
    /// User name and password, when the cluster has authentication on.
    pub credentials: Option<(String, Secret)>,
    /// How long connecting (and each read) may take.
    pub timeout: Duration,
}

/// Targets from Consul's health API (`/v1/health/service/<service>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsulDiscovery {
    /// The agent's HTTP API.
    pub endpoint: HttpEndpoint,
    /// The service's name.
    pub service: String,
    /// Only instances whose checks all pass (`?passing`).
    pub passing_only: bool,
    /// The datacenter asked (default: the agent's).
    pub datacenter: Option<String>,
    /// Only instances with this tag.
    pub tag: Option<String>,
    /// The ACL token sent as `X-Consul-Token`.
    pub token: Option<Secret>,
    /// How long a blocking query waits for a change (`?wait=`).
    pub wait: Duration,
}

/// Targets from a Eureka registry's apps API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EurekaDiscovery {
    /// The registry's service URL (`…/eureka`), under which `apps/` lies.
    pub endpoint: HttpEndpoint,
    /// The application's name (Eureka shows it upper-case).
    pub app: String,
    /// Time between two polls of the registry's delta.
    pub interval: Duration,
}

/// A plain-HTTP API's address: `http://host:port` and an optional base path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpEndpoint {
    /// `host:port`.
    pub authority: String,
    /// The path the API's paths follow, without a trailing `/` (may be empty).
    pub base_path: String,
}

/// A secret setting: compared like text, never shown.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<secret>")
    }
}

/// Resolution intervals allowed.
const DNS_INTERVAL: RangeInclusive<HumanDuration> =
    HumanDuration(Duration::from_millis(100))..=HumanDuration(Duration::from_secs(24 * 3600));
/// Timeouts of one call to a registry.
const CALL_TIMEOUT: RangeInclusive<HumanDuration> =
    HumanDuration(Duration::from_millis(100))..=HumanDuration(Duration::from_secs(300));
/// Consul's blocking wait: Consul caps it at ten minutes.
const CONSUL_WAIT: RangeInclusive<HumanDuration> =
    HumanDuration(Duration::from_millis(100))..=HumanDuration(Duration::from_secs(600));
/// Eureka poll intervals allowed.
const POLL_INTERVAL: RangeInclusive<HumanDuration> =
    HumanDuration(Duration::from_millis(100))..=HumanDuration(Duration::from_secs(3600));

const SOURCES: &str = "`dns`, `file`, `etcd`, `consul` or `eureka`";

impl Decode for Discovery {
    fn decode(node: &Node, diags: &mut Diagnostics) -> Option<Self> {
        let Value::Map(entries) = &node.value else {
            return mismatch(node, &format!("a mapping with one of {SOURCES}"), diags);
        };
        let [(kind, source)] = entries.as_slice() else {
            diags.error(
                node.location,
                format!(
                    "`discovery` takes exactly one source ({SOURCES}), found {}",
                    entries.len()
                ),
            );
            return None;
        };
        match kind.scalar_text().as_str() {
            "dns" => DnsDiscovery::decode(source, diags).map(Self::Dns),
            "file" => FileDiscovery::decode(source, diags).map(Self::File),
            "etcd" => EtcdDiscovery::decode(source, diags).map(Self::Etcd),
            "consul" => ConsulDiscovery::decode(source, diags).map(Self::Consul),
            "eureka" => EurekaDiscovery::decode(source, diags).map(Self::Eureka),
            other => {
                diags.error(
                    kind.location,
                    format!("unknown discovery source `{other}`; expected {SOURCES}"),
                );
                None
            }
        }
    }
}

impl Decode for DnsDiscovery {
    fn decode(node: &Node, diags: &mut Diagnostics) -> Option<Self> {
        let mut f = Fields::of(node, "DNS discovery", diags)?;
        let name: Option<Located<String>> = f.required("name", diags);
        let kind: Option<Located<String>> = f.optional("type", diags).flatten();
        let port: Option<Located<u16>> = f.optional("port", diags).flatten();
        let interval = f.duration("interval", DNS_INTERVAL, Duration::from_secs(30), diags);
        let min_interval = f.duration("min_interval", DNS_INTERVAL, Duration::from_secs(1), diags);
        let nameserver = f.optional("nameserver", diags).flatten();
        let timeout = f.duration("timeout", CALL_TIMEOUT, Duration::from_secs(5), diags);
        f.finish(diags);
        if min_interval > interval {
            diags.error(
                node.location,
                format!(
                    "`min_interval` ({}) is longer than `interval` ({})",
                    HumanDuration(min_interval),
                    HumanDuration(interval)
                ),
            );
        }
        let name = name?;
        if name.value.is_empty() || name.value.contains(|c: char| c.is_whitespace() || c == ':') {
            diags.error(name.location, format!("`{}` is not a DNS name", name.value));
        }
        let record = match kind.as_ref().map_or("a", |k| k.value.as_str()) {
            "a" => match port {
                Some(p) if p.value > 0 => DnsRecord::Address { port: p.value },
                Some(p) => {
                    diags.error(p.location, "the port must be from 1 to 65535");
                    return None;
                }
                None => {
                    diags.error(
                        node.location,
                        "DNS discovery of `type: a` needs the targets' `port`",
                    );
                    return None;
                }
            },
            "srv" => {
                if let Some(p) = &port {
                    diags.error(
                        p.location,
                        "SRV records carry their ports: drop `port` with `type: srv`",
                    );
                }
                DnsRecord::Srv
            }
            other => {
                diags.error(
                    kind.as_ref().map_or(node.location, |k| k.location),
                    format!("a DNS discovery's type is `a` (A and AAAA) or `srv`, found `{other}`"),
                );
                return None;
            }
        };
        Some(Self {
            name: name.value,
            record,
            interval,
            min_interval,
            nameserver,
            timeout,
        })
    }
}

impl Decode for FileDiscovery {
    fn decode(node: &Node, diags: &mut Diagnostics) -> Option<Self> {
        let mut f = Fields::of(node, "file discovery", diags)?;
        let path: Option<Located<String>> = f.required("path", diags);
        f.finish(diags);
        let path = path?;
        if path.value.is_empty() {
            diags.error(path.location, "the file's path is empty");
            return None;
        }
        Some(Self {
            path: PathBuf::from(path.value),
        })
    }
}

impl Decode for EtcdDiscovery {
    fn decode(node: &Node, diags: &mut Diagnostics) -> Option<Self> {
        let mut f = Fields::of(node, "etcd discovery", diags)?;
        let endpoints_node = f.node("endpoints");
        let endpoints: Option<Vec<Located<String>>> = f.required("endpoints", diags);
        let prefix: Option<Located<String>> = f.required("prefix", diags);
        let username: Option<Located<String>> = f.optional("username", diags).flatten();
        let password: Option<Located<String>> = f.optional("password", diags).flatten();
        let timeout = f.duration("timeout", CALL_TIMEOUT, Duration::from_secs(5), diags);
        f.finish(diags);
        let endpoints = endpoints?;
        if endpoints.is_empty() {
            diags.error(
                endpoints_node.map_or(node.location, |n| n.location),
                "etcd discovery needs at least one endpoint",
            );
        }
        for endpoint in &endpoints {
            let text = endpoint.value.as_str();
            let bare = text.strip_prefix("http://").unwrap_or(text);
            if bare.parse::<http::uri::Authority>().is_err() || bare.rsplit_once(':').is_none() {
                diags.error(
                    endpoint.location,
                    format!("etcd endpoint `{text}` must be `host:port` or `http://host:port`"),
                );
            }
        }
        let prefix = prefix?;
        if prefix.value.is_empty() {
            diags.error(
                prefix.location,
                "the prefix is empty (it would take every key of the cluster)",
            );
        }
        let credentials = match (username, password) {
            (Some(user), Some(password)) => Some((user.value, Secret(password.value))),
            (None, None) => None,
            _ => {
                diags.error(
                    node.location,
                    "etcd authentication needs both `username` and `password`",
                );
                None
            }
        };
        Some(Self {
            endpoints: endpoints.into_iter().map(|e| e.value).collect(),
            prefix: prefix.value,
            credentials,
            timeout,
        })
    }
}

impl Decode for ConsulDiscovery {
    fn decode(node: &Node, diags: &mut Diagnostics) -> Option<Self> {
        let mut f = Fields::of(node, "Consul discovery", diags)?;
        let address: Option<Located<String>> = f.optional("address", diags).flatten();
        let service: Option<Located<String>> = f.required("service", diags);
        let passing_only = f.or("passing_only", true, diags);
        let datacenter = f.optional::<String>("datacenter", diags).flatten();
        let tag = f.optional::<String>("tag", diags).flatten();
        let token = f.optional::<String>("token", diags).flatten().map(Secret);
        let wait = f.duration("wait", CONSUL_WAIT, Duration::from_secs(300), diags);
        f.finish(diags);
        let endpoint = match address {
            Some(address) => HttpEndpoint::parse(&address, diags),
            None => Some(HttpEndpoint {
                authority: "127.0.0.1:8500".to_owned(),
                base_path: String::new(),
            }),
        };
        let service = service.and_then(|s| path_segment(s, "service name", diags));
        Some(Self {
            endpoint: endpoint?,
            service: service?,
            passing_only,
            datacenter,
            tag,
            token,
            wait,
        })
    }
}

impl Decode for EurekaDiscovery {
    fn decode(node: &Node, diags: &mut Diagnostics) -> Option<Self> {
        let mut f = Fields::of(node, "Eureka discovery", diags)?;
        let address: Option<Located<String>> = f.required("address", diags);
        let app: Option<Located<String>> = f.required("app", diags);
        let interval = f.duration("interval", POLL_INTERVAL, Duration::from_secs(30), diags);
        f.finish(diags);
        let endpoint = address.and_then(|a| HttpEndpoint::parse(&a, diags));
        let app = app.and_then(|a| path_segment(a, "application name", diags));
        Some(Self {
            endpoint: endpoint?,
            app: app?.to_ascii_uppercase(),
            interval,
        })
    }
}

/// `value` when it can stand in a URL path as one segment.
fn path_segment(value: Located<String>, what: &str, diags: &mut Diagnostics) -> Option<String> {
    let fits = !value.value.is_empty()
        && value
            .value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if fits {
        return Some(value.value);
    }
    diags.error(
        value.location,
        format!(
            "`{}` is not a {what} (letters, digits, `-`, `_` and `.`)",
            value.value
        ),
    );
    None
}

impl HttpEndpoint {
    /// Reads `http://host:port[/path]`.
    fn parse(address: &Located<String>, diags: &mut Diagnostics) -> Option<Self> {
        let text = address.value.as_str();
        let uri = text.parse::<http::Uri>().ok().filter(|uri| {
            uri.scheme_str() == Some("http")
                && uri.port_u16().is_some()
                && uri.query().is_none()
                && uri.host().is_some_and(|h| !h.is_empty())
        });
        let Some(uri) = uri else {
            diags.error(
                address.location,
                format!(
                    "`{text}` must be an `http://host:port` URL, with a path if the API has one"
                ),
            );
            return None;
        };
        Some(Self {
            authority: uri.authority().map(|a| a.as_str().to_owned())?,
            base_path: uri.path().trim_end_matches('/').to_owned(),
        })
    }
}

/// Why a list of targets (a file's, an etcd value) cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadTargets(String);

/// Reads a list of targets written as `targets` is in a manifest (YAML or
/// JSON: `host:port` strings or `{ address, weight }`). An empty text is an
/// error (a file caught half-written); `[]` is an empty list.
pub fn parse_target_list(text: &str) -> Result<Vec<Target>, BadTargets> {
    let node = super::yaml::parse(text).map_err(|d| located(&d.location, &d.message))?;
    match &node.value {
        Value::Null => return Err(BadTargets("it holds no list of targets".to_owned())),
        Value::Seq(_) => {}
        _ => return Err(located(&node.location, "expected a list of targets")),
    }
    let mut diags = Diagnostics::default();
    let targets = Vec::<RawTarget>::decode(&node, &mut diags).unwrap_or_default();
    match diags.into_sorted().first() {
        Some(first) => Err(located(&first.location, &first.message)),
        None => Ok(targets.into_iter().map(RawTarget::into_target).collect()),
    }
}

/// Reads one target: `host:port`, or a JSON object `{"address": …, "weight": …}`.
pub fn parse_target(text: &str) -> Result<Target, BadTargets> {
    let text = text.trim();
    let node = if text.starts_with('{') {
        super::yaml::parse(text).map_err(|d| BadTargets(d.message))?
    } else {
        Node {
            value: Value::Str(text.to_owned()),
            location: Location::default(),
        }
    };
    let mut diags = Diagnostics::default();
    match RawTarget::decode(&node, &mut diags) {
        Some(target) if diags.is_empty() => Ok(target.into_target()),
        _ => Err(BadTargets(
            diags
                .into_sorted()
                .into_iter()
                .map(|d| d.message)
                .next()
                .unwrap_or_else(|| "not a target".to_owned()),
        )),
    }
}

fn located(at: &Location, message: &str) -> BadTargets {
    BadTargets(format!("{}:{}: {message}", at.line, at.column))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(address: &str, weight: u32) -> Target {
        Target {
            address: address.to_owned(),
            weight,
        }
    }

    #[test]
    fn reads_target_lists_in_yaml_and_json() {
        assert_eq!(
            parse_target_list("- 127.0.0.1:1\n- { address: \"[::1]:2\", weight: 3 }\n"),
            Ok(vec![target("127.0.0.1:1", 1), target("[::1]:2", 3)])
        );
        assert_eq!(
            parse_target_list(r#"["a.internal:80", {"address": "b:81"}]"#),
            Ok(vec![target("a.internal:80", 1), target("b:81", 1)])
        );
        assert_eq!(parse_target_list("[]"), Ok(vec![]));
    }

    #[test]
    fn refuses_empty_and_broken_target_lists_with_their_place() {
        assert!(parse_target_list("").is_err());
        assert_eq!(
            parse_target_list("- 127.0.0.1:1\n- nowhere\n"),
            Err(BadTargets(
                "2:3: target `nowhere` must be `host:port` (like `127.0.0.1:3001`): it has no `:port`"
                    .to_owned()
            ))
        );
        assert!(parse_target_list("address: a:1").is_err());
        assert!(parse_target_list("[a:1").is_err());
    }

    #[test]
    fn reads_one_target_bare_or_as_json() {
        assert_eq!(parse_target(" 10.0.0.1:80\n"), Ok(target("10.0.0.1:80", 1)));
        assert_eq!(
            parse_target(r#"{"address": "10.0.0.2:80", "weight": 5}"#),
            Ok(target("10.0.0.2:80", 5))
        );
        assert!(parse_target("10.0.0.3").is_err());
        assert!(parse_target(r#"{"address": "10.0.0.4:80", "weight": 0}"#).is_err());
    }
}
