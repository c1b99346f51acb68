//! Client addresses: CIDR blocks, and the client's IP seen through trusted
//! proxies, the one rule IP restrictions and rate-limit keys share.
//!
//! The peer's address (`source.address`) is the client unless the peer is a
//! trusted proxy. Then `x-forwarded-for` is read from the right (each proxy
//! appends the address it got the request from): the first address that is
//! not a trusted proxy is the client. Addresses to its left were written by
//! the client itself and are never believed. When every address is trusted,
//! the leftmost one is the client.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use crate::status::HostResult;
use crate::{Filter, Http};

/// An IPv4 or IPv6 network: `10.0.0.0/8`, `2001:db8::/32`, or one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

/// Why a CIDR block was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CidrError(String);

impl fmt::Display for CidrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CidrError {}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(text: &str) -> Result<Self, CidrError> {
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let network: IpAddr = address
            .parse()
            .map_err(|_| CidrError(format!("`{text}` is not an IP address or CIDR block")))?;
        let bits = if network.is_ipv4() { 32 } else { 128 };
        let prefix =
            match prefix {
                None => bits,
                Some(p) => p.parse::<u8>().ok().filter(|p| *p <= bits).ok_or_else(|| {
                    CidrError(format!("`{text}`: the prefix must be 0 to {bits}"))
                })?,
            };
        let cidr = Self { network, prefix };
        if cidr.masked(network) != network {
            return Err(CidrError(format!(
                "`{text}` has host bits set; the network is `{}/{prefix}`",
                cidr.masked(network)
            )));
        }
        Ok(cidr)
    }
}

impl Cidr {
    /// Whether `address` is in this network (an IPv4-mapped IPv6 address
    /// counts as its IPv4 address).
    pub fn contains(&self, address: IpAddr) -> bool {
        let address = match address {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, IpAddr::V4),
            v4 => v4,
        };
        address.is_ipv4() == self.network.is_ipv4() && self.masked(address) == self.network
    }

    fn masked(&self, address: IpAddr) -> IpAddr {
        match address {
            IpAddr::V4(v4) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V4((u32::from(v4) & mask).into())
            }
            IpAddr::V6(v6) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V6((u128::from(v6) & mask).into())
            }
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// Parses `blocks`; on the first bad one, its index and why (for
/// `ConfigError::at("/field/{index}", …)`).
pub fn parse_cidrs(blocks: &[String]) -> Result<Vec<Cidr>, (usize, CidrError)> {
    blocks
        .iter()
        .enumerate()
        .map(|(i, block)| block.trim().parse().map_err(|e| (i, e)))
        .collect()
}

/// Whether any of `blocks` contains `address`.
pub fn any_contains(blocks: &[Cidr], address: IpAddr) -> bool {
    blocks.iter().any(|block| block.contains(address))
}

/// The client's address: the peer's, or through `trusted` proxies the one
/// `forwarded_for` (the `x-forwarded-for` value) names, as the module says.
pub fn client_ip(peer: IpAddr, forwarded_for: Option<&str>, trusted: &[Cidr]) -> IpAddr {
    if !any_contains(trusted, peer) {
        return peer;
    }
    let Some(chain) = forwarded_for else {
        return peer;
    };
    let mut client = peer;
    for hop in chain.rsplit(',') {
        let Some(address) = parse_hop(hop.trim()) else {
            // A hop that is no address ends what can be believed.
            return client;
        };
        client = address;
        if !any_contains(trusted, address) {
            return address;
        }
    }
    client
}

/// One `x-forwarded-for` entry: an address, possibly with a port or brackets.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    hop.parse()
        .ok()
        .or_else(|| hop.parse::<SocketAddr>().ok().map(|s| s.ip()))
}

impl<F: Filter> Http<'_, F> {
    /// The client's address through `trusted` proxies ([`client_ip`]);
    /// `None` when the host does not say who the peer is.
    pub fn client_ip(&self, trusted: &[Cidr]) -> HostResult<Option<IpAddr>> {
        let Some(source) = self.property(&["source", "address"])? else {
            return Ok(None);
        };
        let Some(peer) = std::str::from_utf8(&source).ok().and_then(parse_hop) else {
            return Ok(None);
        };
        let forwarded = if any_contains(trusted, peer) {
            self.request_header("x-forwarded-for")?
        } else {
            None
        };
        Ok(Some(client_ip(peer, forwarded.as_deref(), trusted)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("an address")
    }

    fn cidrs(blocks: &[&str]) -> Vec<Cidr> {
        let blocks: Vec<String> = blocks.iter().map(|b| (*b).to_owned()).collect();
        parse_cidrs(&blocks).expect("CIDR blocks")
    }

    #[test]
    fn blocks_contain_their_addresses_in_both_families() {
        let v4: Cidr = "10.1.0.0/16".parse().expect("v4");
        assert!(v4.contains(ip("10.1.200.3")));
        assert!(!v4.contains(ip("10.2.0.1")));
        assert!(v4.contains(ip("::ffff:10.1.0.9")), "IPv4-mapped");
        let v6: Cidr = "2001:db8::/32".parse().expect("v6");
        assert!(v6.contains(ip("2001:db8:1::5")));
        assert!(!v6.contains(ip("2001:db9::1")));
        assert!(!v6.contains(ip("10.1.0.1")));
        let all: Cidr = "0.0.0.0/0".parse().expect("everything");
        assert!(all.contains(ip("203.0.113.9")));
        let one: Cidr = "192.0.2.7".parse().expect("one address");
        assert!(one.contains(ip("192.0.2.7")) && !one.contains(ip("192.0.2.8")));
    }

    #[test]
    fn bad_blocks_say_what_is_wrong() {
        let error = |text: &str| text.parse::<Cidr>().expect_err(text).to_string();
        assert_eq!(
            error("10.0.0.0/33"),
            "`10.0.0.0/33`: the prefix must be 0 to 32"
        );
        assert_eq!(
            error("10.0.0.1/8"),
            "`10.0.0.1/8` has host bits set; the network is `10.0.0.0/8`"
        );
        assert_eq!(error("ten"), "`ten` is not an IP address or CIDR block");
        let blocks = vec!["10.0.0.0/8".to_owned(), "x".to_owned()];
        assert_eq!(parse_cidrs(&blocks).expect_err("second").0, 1);
    }

    #[test]
    fn the_client_is_the_first_untrusted_hop_from_the_right() {
        let trusted = cidrs(&["10.0.0.0/8"]);
        let xff = Some("198.51.100.1, 203.0.113.5, 10.0.0.2");
        assert_eq!(client_ip(ip("10.0.0.1"), xff, &trusted), ip("203.0.113.5"));
        // An untrusted peer's header is ignored: it could say anything.
        assert_eq!(client_ip(ip("192.0.2.1"), xff, &trusted), ip("192.0.2.1"));
        // Every hop trusted: the leftmost.
        let inner = Some("10.0.0.7, 10.0.0.2");
        assert_eq!(client_ip(ip("10.0.0.1"), inner, &trusted), ip("10.0.0.7"));
        // Garbage stops the walk at the last address believed.
        let forged = Some("junk, 10.0.0.2");
        assert_eq!(client_ip(ip("10.0.0.1"), forged, &trusted), ip("10.0.0.2"));
        assert_eq!(
            client_ip(ip("10.0.0.1"), Some("[2001:db8::1]:443"), &trusted),
            ip("2001:db8::1")
        );
        assert_eq!(client_ip(ip("10.0.0.1"), None, &trusted), ip("10.0.0.1"));
    }
}
