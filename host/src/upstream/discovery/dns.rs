//! DNS discovery: A and AAAA records (each address with the configured
//! port) or SRV records (host, port and weight of each record of the lowest
//! priority, the hosts resolved to addresses), re-resolved when the shortest
//! TTL of the answer runs out, at most `interval` and at least
//! `min_interval` apart.

use std::net::{IpAddr, SocketAddr};

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{LookupIpStrategy, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;
use tokio::time::Instant;

use super::{Discovery, DiscoveryError};
use crate::config::model::{DnsDiscovery, DnsRecord};
use crate::upstream::TargetSpec;

/// A DNS name's records as targets.
pub struct DnsSource {
    config: DnsDiscovery,
    resolver: Option<TokioResolver>,
    /// When to resolve again (`None`: at once).
    next_at: Option<Instant>,
}

impl DnsSource {
    pub fn new(config: DnsDiscovery) -> Self {
        Self {
            config,
            resolver: None,
            next_at: None,
        }
    }

    /// The resolver: the configured name server's, or the system's.
    fn resolver(&mut self) -> Result<TokioResolver, DiscoveryError> {
        if let Some(resolver) = &self.resolver {
            return Ok(resolver.clone());
        }
        let provider = TokioRuntimeProvider::default();
        let mut builder = match self.config.nameserver {
            Some(address) => {
                let mut server = NameServerConfig::udp_and_tcp(address.ip());
                for connection in &mut server.connections {
                    connection.port = address.port();
                }
                TokioResolver::builder_with_config(
                    ResolverConfig::from_name_servers(vec![server]),
                    provider,
                )
            }
            None => TokioResolver::builder(provider).map_err(|e| {
                DiscoveryError::Unreachable(format!("the system's DNS settings: {e}"))
            })?,
        };
        let options = builder.options_mut();
        options.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        options.timeout = self.config.timeout;
        let resolver = builder
            .build()
            .map_err(|e| DiscoveryError::Unreachable(format!("DNS resolver: {e}")))?;
        self.resolver = Some(resolver.clone());
        Ok(resolver)
    }

    /// The next resolution's time after an answer valid until `valid_until`.
    fn schedule(&self, valid_until: Instant) -> Instant {
        let now = Instant::now();
        let ttl = valid_until.saturating_duration_since(now);
        now + ttl.clamp(self.config.min_interval, self.config.interval)
    }
}

impl Discovery for DnsSource {
    async fn next(&mut self) -> Result<Vec<TargetSpec>, DiscoveryError> {
        if let Some(at) = self.next_at.take() {
            tokio::time::sleep_until(at).await;
        }
        let resolver = self.resolver()?;
        // Each resolution asks the name server: the schedule follows the TTLs.
        resolver.clear_cache();
        let name = self.config.name.as_str();
        let answer = match self.config.record {
            DnsRecord::Address { port } => addresses(&resolver, name, port).await,
            DnsRecord::Srv => services(&resolver, name).await,
        };
        let (targets, valid_until) = answer?;
        self.next_at = Some(self.schedule(valid_until));
        if targets.is_empty() {
            return Err(DiscoveryError::NoTargets(format!(
                "`{name}` has no records"
            )));
        }
        Ok(targets)
    }
}

/// A and AAAA records of `name`, each with `port`; and until when they hold.
async fn addresses(
    resolver: &TokioResolver,
    name: &str,
    port: u16,
) -> Result<(Vec<TargetSpec>, Instant), DiscoveryError> {
    let lookup = resolver
        .lookup_ip(name)
        .await
        .map_err(|e| failure(name, &e))?;
    let mut targets: Vec<TargetSpec> = lookup.iter().map(|ip| target(ip, port, 1)).collect();
    targets.sort_by(|a, b| a.address.cmp(&b.address));
    Ok((targets, lookup.valid_until().into()))
}

/// SRV records of `name` of the lowest priority, each host resolved (from
/// the answer's additional records, or by its own lookup).
async fn services(
    resolver: &TokioResolver,
    name: &str,
) -> Result<(Vec<TargetSpec>, Instant), DiscoveryError> {
    let lookup = resolver
        .srv_lookup(name)
        .await
        .map_err(|e| failure(name, &e))?;
    let mut valid_until: Instant = lookup.valid_until().into();
    let records: Vec<_> = lookup
        .answers()
        .iter()
        .filter_map(|r| match &r.data {
            RData::SRV(srv) => Some(srv),
            _ => None,
        })
        .collect();
    let Some(priority) = records.iter().map(|srv| srv.priority).min() else {
        return Ok((Vec::new(), valid_until));
    };
    let mut targets = Vec::new();
    for srv in records.iter().filter(|srv| srv.priority == priority) {
        let glued: Vec<IpAddr> = lookup
            .additionals()
            .iter()
            .filter(|r| r.name == srv.target)
            .filter_map(|r| r.data.ip_addr())
            .collect();
        let ips = if glued.is_empty() {
            let host = srv.target.to_string();
            let found = resolver
                .lookup_ip(host.as_str())
                .await
                .map_err(|e| failure(&host, &e))?;
            valid_until = valid_until.min(found.valid_until().into());
            found.iter().collect()
        } else {
            glued
        };
        // SRV weight 0 means "no preference": the smallest share.
        let weight = u32::from(srv.weight);
        targets.extend(ips.into_iter().map(|ip| target(ip, srv.port, weight)));
    }
    targets.sort_by(|a, b| a.address.cmp(&b.address));
    Ok((targets, valid_until))
}

fn target(ip: IpAddr, port: u16, weight: u32) -> TargetSpec {
    TargetSpec {
        address: SocketAddr::new(ip, port).to_string(),
        weight: weight.clamp(1, super::MAX_WEIGHT),
    }
}

fn failure(name: &str, error: &hickory_resolver::net::NetError) -> DiscoveryError {
    if error.is_no_records_found() {
        DiscoveryError::NoTargets(format!("`{name}`: {error}"))
    } else {
        DiscoveryError::Unreachable(format!("resolving `{name}`: {error}"))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn resolves_again_when_the_ttl_runs_out_within_the_bounds() {
        let source = DnsSource::new(DnsDiscovery {
            name: "a.test".to_owned(),
            record: DnsRecord::Address { port: 80 },
            interval: Duration::from_secs(30),
            min_interval: Duration::from_secs(1),
            nameserver: None,
            timeout: Duration::from_secs(1),
        });
        let now = Instant::now();
        let after = |ttl: Duration| source.schedule(now + ttl).duration_since(now);
        let near = |d: Duration, want: Duration| d >= want && d < want + Duration::from_millis(500);
        assert!(near(after(Duration::from_secs(5)), Duration::from_secs(5)));
        assert!(
            near(after(Duration::ZERO), Duration::from_secs(1)),
            "the floor"
        );
        assert!(
            near(after(Duration::from_secs(300)), Duration::from_secs(30)),
            "the interval"
        );
    }
}
