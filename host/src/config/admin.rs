//! The manifest's `admin:` section: where the admin API listens, whether it
//! speaks TLS (and asks clients for certificates), and who may call it.
//! Tokens are kept only as SHA-256 digests; a token given through an
//! environment variable is hashed when the manifest is read.

use std::net::SocketAddr;
use std::path::PathBuf;

use aws_lc_rs::digest::{SHA256, digest};

use super::decode::{Decode, Diagnostics, Fields, Located, mismatch};
use super::node::{Node, Value};

/// The admin API's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admin {
    /// The address it listens on.
    pub address: SocketAddr,
    /// Who may call it; empty = anyone who can connect (loopback, or
    /// holders of a certificate the `tls.client_ca` issued).
    pub tokens: Vec<AdminToken>,
    /// TLS on the admin listener, when set.
    pub tls: Option<AdminTls>,
}

/// TLS on the admin listener; with `client_ca`, mutual TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminTls {
    /// The server's certificate chain, PEM.
    pub cert: PathBuf,
    /// Its private key, PEM.
    pub key: PathBuf,
    /// CA certificates (PEM) that issue client certificates; when set, a
    /// client without a certificate they issued cannot connect.
    pub client_ca: Option<PathBuf>,
}

/// The `admin:` section as written: TLS file paths not yet resolved.
#[derive(Debug)]
pub struct RawAdmin {
    address: SocketAddr,
    tokens: Vec<AdminToken>,
    tls: Option<RawAdminTls>,
}

/// `admin.tls` as written.
#[derive(Debug)]
struct RawAdminTls {
    cert: Located<String>,
    key: Located<String>,
    client_ca: Option<Located<String>>,
}

impl RawAdmin {
    /// The settings, with each TLS file resolved (and checked) by `file(path, kind)`.
    pub fn resolve(self, mut file: impl FnMut(&Located<String>, &str) -> PathBuf) -> Admin {
        Admin {
            address: self.address,
            tokens: self.tokens,
            tls: self.tls.map(|tls| AdminTls {
                cert: file(&tls.cert, "certificate"),
                key: file(&tls.key, "key"),
                client_ca: tls.client_ca.as_ref().map(|ca| file(ca, "client CA")),
            }),
        }
    }
}

/// One bearer token of the admin API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminToken {
    /// Its name, for logs.
    pub name: String,
    /// What it may do.
    pub role: AdminRole,
    /// SHA-256 of the token.
    pub sha256: [u8; 32],
}

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminRole {
    /// Read and change everything.
    Admin,
    /// Read only.
    ReadOnly,
}

/// The SHA-256 of `token`, as tokens are stored.
pub fn token_digest(token: &[u8]) -> [u8; 32] {
    let mut out = [0; 32];
    out.copy_from_slice(digest(&SHA256, token).as_ref());
    out
}

impl Decode for RawAdmin {
    fn decode(node: &Node, diags: &mut Diagnostics) -> Option<Self> {
        let mut f = Fields::of(node, "admin", diags)?;
        let address: Option<Located<SocketAddr>> = f.required("address", diags);
        // Judged on what is written: tokens that fail to decode are reported on their own.
        let tokens_written = f
            .node("tokens")
            .is_some_and(|n| matches!(&n.value, Value::Seq(items) if !items.is_empty()));
        let tokens: Vec<AdminToken> = f.or("tokens", Vec::new(), diags);
        let client_certificates = f.node("tls").is_some_and(|n| {
            matches!(&n.value, Value::Map(entries)
                if entries.iter().any(|(key, _)| matches!(&key.value, Value::Str(k) if k == "client_ca")))
        });
        let tls: Option<RawAdminTls> = f.optional("tls", diags).flatten();
        f.finish(diags);
        let address = address?;
        if !tokens_written && !client_certificates && !address.value.ip().is_loopback() {
            diags.error(
                address.location,
                format!(
                    "the admin API on {} would be open to the network: give it `tokens` \
                     or `tls.client_ca`, or listen on a loopback address such as 127.0.0.1",
                    address.value
                ),
            );
            return None;
        }
        Some(Self {
            address: address.value,
            tokens,
            tls,
        })
    }
}

impl Decode for RawAdminTls {
    fn decode(node: &Node, diags: &mut Diagnostics) -> Option<Self> {
        let mut f = Fields::of(node, "admin TLS settings", diags)?;
        let cert = f.required("cert", diags);
        let key = f.required("key", diags);
        let client_ca = f.optional("client_ca", diags).flatten();
        f.finish(diags);
        Some(Self {
            cert: cert?,
            key: key?,
            client_ca,
        })
    }
}

impl Decode for AdminToken {
    fn decode(node: &Node, diags: &mut Diagnostics) -> Option<Self> {
        let mut f = Fields::of(node, "admin token", diags)?;
        let name: Option<String> = f.required("name", diags);
        let role = f.required("role", diags);
        let sha256: Option<Located<String>> = f.optional("sha256", diags).flatten();
        let env: Option<Located<String>> = f.optional("env", diags).flatten();
        f.finish(diags);
        let digest = match (sha256, env) {
            (Some(hex), None) => decode_hex(&hex.value).or_else(|| {
                diags.error(
                    hex.location,
                    "`sha256` must be 64 hexadecimal digits (e.g. from `printf %s TOKEN | sha256sum`)",
                );
                None
            }),
            (None, Some(var)) => match std::env::var(&var.value) {
                Ok(token) if !token.is_empty() => Some(token_digest(token.as_bytes())),
                _ => {
                    diags.error(
                        var.location,
                        format!("environment variable `{}` is not set or empty", var.value),
                    );
                    None
                }
            },
            _ => {
                diags.error(
                    node.location,
                    "an admin token needs exactly one of `sha256` (the token's digest) or `env` \
                     (a variable holding the token)",
                );
                None
            }
        };
        Some(Self {
            name: name?,
            role: role?,
            sha256: digest?,
        })
    }
}

impl Decode for AdminRole {
    fn decode(node: &Node, diags: &mut Diagnostics) -> Option<Self> {
        match &node.value {
            Value::Str(s) if s == "admin" => Some(Self::Admin),
            Value::Str(s) if s == "read-only" => Some(Self::ReadOnly),
            _ => mismatch(node, "`admin` or `read-only`", diags),
        }
    }
}

/// 64 hex digits as 32 bytes.
pub(super) fn decode_hex(text: &str) -> Option<[u8; 32]> {
    let bytes = text.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0; 32];
    for (byte, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        let pair = std::str::from_utf8(pair).ok()?;
        *byte = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_digests_decode_and_anything_else_is_refused() {
        let hex = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
        assert_eq!(decode_hex(hex), Some(token_digest(b"test")));
        assert_eq!(decode_hex(&hex[1..]), None);
        assert_eq!(decode_hex(&hex.replace('9', "g")), None);
    }
}
