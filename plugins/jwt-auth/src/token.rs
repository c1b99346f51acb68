//! A token's header read before any key is chosen, its signature and claims
//! verified with the chosen keys, and its time window checked on the host's
//! clock.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde::Deserialize;

use crate::keys::Key;
use crate::refusal::Refusal;

/// What the header says about how to verify the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Its `alg`.
    pub alg: Algorithm,
    /// Its `kid`, if any.
    pub kid: Option<String>,
}

/// The header fields read; others (`typ`, `jku`, `x5u`, an embedded `jwk`)
/// are ignored: keys come from the configuration only.
#[derive(Deserialize)]
struct RawHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    crit: Option<Vec<String>>,
}

/// Reads the header of compact JWS `token`. `alg: none` and every algorithm
/// jwt-auth does not verify are refused here; so are tokens that name
/// critical extensions (`crit`), none of which jwt-auth understands.
pub fn header(token: &str) -> Result<Header, Refusal> {
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Refusal::Malformed);
    };
    let bytes = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| Refusal::Malformed)?;
    let raw: RawHeader = serde_json::from_slice(&bytes).map_err(|_| Refusal::Malformed)?;
    if raw.crit.is_some() {
        return Err(Refusal::Critical);
    }
    let alg = raw
        .alg
        .parse::<Algorithm>()
        .map_err(|_| Refusal::Algorithm(raw.alg.clone()))?;
    Ok(Header { alg, kid: raw.kid })
}

/// The claims of `token`, verified with the first of `keys` whose signature
/// matches, and checked against `validation` (`iss`, `aud`; not the time
/// window: see [`Window::check`]).
pub fn verify(
    token: &str,
    keys: &[&Key],
    validation: &Validation,
) -> Result<serde_json::Map<String, serde_json::Value>, Refusal> {
    for key in keys {
        match jsonwebtoken::decode::<serde_json::Value>(token, &key.decoding, validation) {
            Ok(data) => {
                return match data.claims {
                    serde_json::Value::Object(claims) => Ok(claims),
                    _ => Err(Refusal::Malformed),
                };
            }
            Err(error) => match error.kind() {
                // Another key of the same `kid` (or without one) may match.
                ErrorKind::InvalidSignature
                | ErrorKind::InvalidEcdsaKey
                | ErrorKind::InvalidEddsaKey
                | ErrorKind::InvalidRsaKey(_)
                | ErrorKind::InvalidKeyFormat => {}
                _ => return Err(refusal(&error)),
            },
        }
    }
    Err(Refusal::Signature)
}

/// Why the library refused a token whose signature matched (or whose shape
/// is wrong), in words a client can act on.
fn refusal(error: &jsonwebtoken::errors::Error) -> Refusal {
    match error.kind() {
        ErrorKind::InvalidIssuer => Refusal::Issuer,
        ErrorKind::InvalidAudience => Refusal::Audience,
        ErrorKind::MissingRequiredClaim(claim) if claim == "iss" => Refusal::Issuer,
        ErrorKind::MissingRequiredClaim(claim) if claim == "aud" => Refusal::Audience,
        ErrorKind::MissingRequiredClaim(claim) => Refusal::MissingClaim(claim.clone()),
        ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => {
            Refusal::Algorithm(String::new())
        }
        _ => Refusal::Malformed,
    }
}

/// The `iss`/`aud` checks for tokens signed with `alg`.
pub fn validation(alg: Algorithm, issuer: Option<&str>, audiences: &[String]) -> Validation {
    let mut validation = Validation::new(alg);
    // The time window is checked on the host's clock (`Window::check`).
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.required_spec_claims.clear();
    if let Some(issuer) = issuer {
        validation.set_issuer(&[issuer]);
        validation.required_spec_claims.insert("iss".into());
    }
    if audiences.is_empty() {
        validation.validate_aud = false;
    } else {
        validation.set_audience(audiences);
        validation.required_spec_claims.insert("aud".into());
    }
    validation
}

/// A token's `exp` and `nbf`, in whole seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// `exp`, if the token has one.
    pub exp: Option<u64>,
    /// `nbf`, if the token has one.
    pub nbf: Option<u64>,
}

impl Window {
    /// The window of `claims`; a non-numeric `exp` or `nbf` is malformed.
    pub fn of(claims: &serde_json::Map<String, serde_json::Value>) -> Result<Self, Refusal> {
        let seconds = |name: &str| match claims.get(name) {
            None => Ok(None),
            Some(value) => value
                .as_f64()
                .filter(|s| s.is_finite() && *s >= 0.0)
                .map(|s| Some(s as u64))
                .ok_or(Refusal::Malformed),
        };
        Ok(Self {
            exp: seconds("exp")?,
            nbf: seconds("nbf")?,
        })
    }

    /// Whether the token is valid at `now` (seconds), allowing `leeway`
    /// seconds of clock skew either way.
    pub fn check(&self, now: u64, leeway: u64, require_exp: bool) -> Result<(), Refusal> {
        match self.exp {
            Some(exp) if now > exp.saturating_add(leeway) => return Err(Refusal::Expired),
            None if require_exp => return Err(Refusal::MissingClaim("exp".into())),
            _ => {}
        }
        match self.nbf {
            Some(nbf) if now.saturating_add(leeway) < nbf => Err(Refusal::Early),
            _ => Ok(()),
        }
    }
}
