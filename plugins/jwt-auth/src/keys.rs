//! Verification keys: each with the algorithms it may verify, read from JWKs
//! (RFC 7517), PEM public keys or an HMAC secret, and picked for a token by
//! its `kid` and `alg`.
//!
//! A key's type fixes its algorithms, so a token cannot choose how its key
//! is used: an RSA key verifies RS*/PS* only (never HS256 with the public key
//! as the secret), a P-256 key ES256 only, and so on. A JWK's own `alg`
//! narrows that to one algorithm.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyOperations, PublicKeyUse};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};

/// The smallest RSA modulus accepted (RFC 7518 §3.3).
const MIN_RSA_BITS: usize = 2048;

/// One verification key.
pub struct Key {
    /// Its `kid`; a key without one matches a token with any `kid`.
    pub kid: Option<String>,
    /// The algorithms it may verify (never empty).
    pub algorithms: Vec<Algorithm>,
    /// The key itself.
    pub decoding: DecodingKey,
}

/// Where a JWK comes from: symmetric keys are taken only from the
/// configuration, never from a fetched JWKS (which anyone may read).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The filter's configuration.
    Inline,
    /// A JWKS fetched from an upstream.
    Remote,
}

impl Key {
    /// The key a JWK describes (a JSON object), or why it is unusable.
    pub fn from_jwk(value: &serde_json::Value, origin: Origin) -> Result<Self, String> {
        let jwk: Jwk = serde_json::from_value(value.clone())
            .map_err(|e| format!("is not a JSON Web Key: {e}"))?;
        let common = &jwk.common;
        if common
            .public_key_use
            .as_ref()
            .is_some_and(|u| *u != PublicKeyUse::Signature)
        {
            return Err("is not a signing key (`use` is not `sig`)".into());
        }
        if common
            .key_operations
            .as_ref()
            .is_some_and(|ops| !ops.contains(&KeyOperations::Verify))
        {
            return Err("does not allow `verify` (`key_ops`)".into());
        }
        let (decoding, family_algorithms) = match &jwk.algorithm {
            AlgorithmParameters::RSA(rsa) => {
                let bits = modulus_bits(&rsa.n)?;
                if bits < MIN_RSA_BITS {
                    return Err(format!(
                        "is an RSA key of {bits} bits (at least {MIN_RSA_BITS} are needed)"
                    ));
                }
                let key = DecodingKey::from_rsa_components(&rsa.n, &rsa.e)
                    .map_err(|e| format!("is not a valid RSA key: {e}"))?;
                (key, AlgorithmFamily::Rsa.algorithms().to_vec())
            }
            AlgorithmParameters::EllipticCurve(ec) => {
                let (algorithm, size) = match ec.curve {
                    EllipticCurve::P256 => (Algorithm::ES256, 32),
                    EllipticCurve::P384 => (Algorithm::ES384, 48),
                    _ => return Err("is on a curve jwt-auth does not verify".into()),
                };
                if decoded_len(&ec.x)? != size || decoded_len(&ec.y)? != size {
                    return Err("has coordinates of the wrong size for its curve".into());
                }
                let key = DecodingKey::from_ec_components(&ec.x, &ec.y)
                    .map_err(|e| format!("is not a valid EC key: {e}"))?;
                (key, vec![algorithm])
            }
            AlgorithmParameters::OctetKeyPair(okp) => {
                if okp.curve != EllipticCurve::Ed25519 {
                    return Err("is an OKP key on a curve other than Ed25519".into());
                }
                if decoded_len(&okp.x)? != 32 {
                    return Err("is an Ed25519 key of the wrong size".into());
                }
                let key = DecodingKey::from_ed_components(&okp.x)
                    .map_err(|e| format!("is not a valid Ed25519 key: {e}"))?;
                (key, vec![Algorithm::EdDSA])
            }
            AlgorithmParameters::OctetKey(_) if origin == Origin::Remote => {
                return Err(
                    "is a symmetric key: those are taken only from the configuration".into(),
                );
            }
            AlgorithmParameters::OctetKey(_) => {
                let key = DecodingKey::from_jwk(&jwk)
                    .map_err(|e| format!("is not a valid symmetric key: {e}"))?;
                (key, AlgorithmFamily::Hmac.algorithms().to_vec())
            }
            _ => return Err("has a key type jwt-auth does not verify with".into()),
        };
        let algorithms = match common.key_algorithm {
            None => family_algorithms,
            Some(alg) => {
                let alg = Algorithm::try_from(alg)
                    .map_err(|_| format!("names algorithm `{alg}`, which is not for signatures"))?;
                if !family_algorithms.contains(&alg) {
                    return Err(format!(
                        "names algorithm `{alg:?}`, which its key type cannot verify"
                    ));
                }
                vec![alg]
            }
        };
        Ok(Self {
            kid: common.key_id.clone(),
            algorithms,
            decoding,
        })
    }

    /// The public key in `pem` (SubjectPublicKeyInfo, or PKCS#1 for RSA).
    pub fn from_pem(pem: &str, kid: Option<String>) -> Result<Self, String> {
        if pem.contains("PRIVATE KEY") {
            return Err("is a private key: give the public key".into());
        }
        let bytes = pem.as_bytes();
        let (decoding, algorithms) = if let Ok(key) = DecodingKey::from_rsa_pem(bytes) {
            let bits = match jsonwebtoken::jwk::Jwk::from_decoding_key(&key, None)
                .map(|jwk| jwk.algorithm)
            {
                Ok(AlgorithmParameters::RSA(rsa)) => modulus_bits(&rsa.n)?,
                _ => return Err("is not a valid RSA public key".into()),
            };
            if bits < MIN_RSA_BITS {
                return Err(format!(
                    "is an RSA key of {bits} bits (at least {MIN_RSA_BITS} are needed)"
                ));
            }
            (key, AlgorithmFamily::Rsa.algorithms().to_vec())
        } else if let Ok(key) = DecodingKey::from_ec_pem(bytes) {
            let algorithm = match key.try_get_as_bytes().map(<[u8]>::len) {
                Ok(65) => Algorithm::ES256,
                Ok(97) => Algorithm::ES384,
                _ => return Err("is an EC key on a curve jwt-auth does not verify".into()),
            };
            (key, vec![algorithm])
        } else if let Ok(key) = DecodingKey::from_ed_pem(bytes) {
            if key.try_get_as_bytes().map(<[u8]>::len) != Ok(32) {
                return Err("is not an Ed25519 public key".into());
            }
            (key, vec![Algorithm::EdDSA])
        } else {
            return Err("is not a PEM public key (RSA, EC P-256/P-384 or Ed25519)".into());
        };
        Ok(Self {
            kid,
            algorithms,
            decoding,
        })
    }

    /// An HMAC secret for `algorithms` (HS*).
    pub fn from_secret(secret: &[u8], algorithms: Vec<Algorithm>) -> Self {
        Self {
            kid: None,
            algorithms,
            decoding: DecodingKey::from_secret(secret),
        }
    }

    /// Whether this key is the one a token naming `kid` means.
    fn answers_to(&self, kid: Option<&str>) -> bool {
        match (&self.kid, kid) {
            (Some(own), Some(kid)) => own == kid,
            _ => true,
        }
    }
}

/// The bits of a base64url big-endian RSA modulus.
fn modulus_bits(n: &str) -> Result<usize, String> {
    let bytes = URL_SAFE_NO_PAD
        .decode(n.trim_end_matches('='))
        .map_err(|_| "has an `n` that is not base64url".to_owned())?;
    let Some(first) = bytes.iter().position(|b| *b != 0) else {
        return Ok(0);
    };
    Ok((bytes.len() - first) * 8 - bytes[first].leading_zeros() as usize)
}

/// The decoded length of a base64url coordinate.
fn decoded_len(text: &str) -> Result<usize, String> {
    URL_SAFE_NO_PAD
        .decode(text.trim_end_matches('='))
        .map(|b| b.len())
        .map_err(|_| "has a coordinate that is not base64url".to_owned())
}

/// What a key set holds for one token.
pub enum Pick<'a> {
    /// The keys that may verify it, most specific first.
    Keys(Vec<&'a Key>),
    /// No key answers to the token's `kid`.
    UnknownKid,
    /// A key answers to its `kid`, but not for its `alg`.
    Algorithm,
}

/// The keys of a configuration or of a JWKS.
#[derive(Default)]
pub struct KeySet {
    keys: Vec<Key>,
}

impl KeySet {
    /// A set of `keys`.
    pub fn new(keys: Vec<Key>) -> Self {
        Self { keys }
    }

    /// The usable keys of JWKS document `text`, and a line for each key
    /// left out (unusable or not for signatures); an error when the document
    /// is not a JWKS.
    pub fn from_jwks(text: &[u8], origin: Origin) -> Result<(Self, Vec<String>), String> {
        #[derive(serde::Deserialize)]
        struct Document {
            keys: Vec<serde_json::Value>,
        }
        let document: Document = serde_json::from_slice(text)
            .map_err(|e| format!("is not a JWKS (`{{\"keys\": [...]}}`): {e}"))?;
        let mut keys = Vec::new();
        let mut skipped = Vec::new();
        for (index, value) in document.keys.iter().enumerate() {
            match Key::from_jwk(value, origin) {
                Ok(key) => keys.push(key),
                Err(why) => {
                    let kid = value.get("kid").and_then(|k| k.as_str()).unwrap_or("-");
                    skipped.push(format!("key {index} (kid {kid}) {why}"));
                }
            }
        }
        Ok((Self { keys }, skipped))
    }

    /// Whether the set has no key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// How many keys the set has.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Every algorithm some key may verify.
    pub fn algorithms(&self) -> impl Iterator<Item = Algorithm> + '_ {
        self.keys.iter().flat_map(|k| k.algorithms.iter().copied())
    }

    /// Whether some key answers to `kid` (any key, for a token without one).
    pub fn knows(&self, kid: Option<&str>) -> bool {
        self.keys.iter().any(|k| k.answers_to(kid))
    }

    /// The keys for a token with `kid` and `alg`: those with that `kid`
    /// first, then those without a `kid`.
    pub fn pick(&self, kid: Option<&str>, alg: Algorithm) -> Pick<'_> {
        let named = self
            .keys
            .iter()
            .filter(|k| kid.is_some() && k.kid.as_deref() == kid);
        let unnamed = self
            .keys
            .iter()
            .filter(|k| kid.is_none() || k.kid.is_none());
        let answering: Vec<&Key> = named.chain(unnamed).collect();
        if answering.is_empty() {
            return Pick::UnknownKid;
        }
        let usable: Vec<&Key> = answering
            .into_iter()
            .filter(|k| k.algorithms.contains(&alg))
            .collect();
        if usable.is_empty() {
            Pick::Algorithm
        } else {
            Pick::Keys(usable)
        }
    }
}
