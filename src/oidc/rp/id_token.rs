//! ID-token validation (OIDC Core §3.1.3.7). `jsonwebtoken` verifies the
//! signature and checks `iss` and `aud`; the rest is here: the algorithm
//! (never `none`, never a symmetric one, only those the discovery document
//! lists), the key (by `kid`, fitting the algorithm), `azp`, the times against
//! the caller's clock with its skew (the library would read the system clock
//! itself), and the nonce, compared in constant time.

use std::str::FromStr;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde_json::{Map, Value};
use subtle::ConstantTimeEq;

use super::jwks::{fetch_jwks, FetchJwks, JwksCache};
use super::{shown, RpError};
use crate::outbound::Outbound;

/// An ID token longer than this is refused unread.
const TOKEN_MAX_BYTES: usize = 64 * 1024;

/// What an ID token must satisfy for one sign-in.
#[derive(Debug, Clone, Copy)]
pub struct IdTokenCheck<'a> {
    /// The provider's issuer, from its discovery document (compared exactly).
    pub issuer: &'a str,
    pub client_id: &'a str,
    /// The nonce sent with this sign-in's authorization request.
    pub nonce: &'a str,
    /// The discovery document's `id_token_signing_alg_values_supported`;
    /// empty means RS256 (Discovery 1.0). `none` and HS* are never accepted.
    pub algs: &'a [String],
    pub skew_secs: u64,
    pub now_secs: i64,
}

/// The verified claims of an ID token.
#[derive(Debug, Clone, PartialEq)]
pub struct IdClaims {
    pub sub: String,
    pub email: Option<String>,
    pub email_verified: Option<bool>,
    pub name: Option<String>,
    pub given_name: Option<String>,
    pub family_name: Option<String>,
    /// Every claim of the ID token.
    pub claims: Map<String, Value>,
}

impl JwksCache {
    /// Validate an ID token against the provider's keys at `jwks_uri`
    /// (fetched through `out` when not cached, or for an unknown `kid`).
    pub fn validate(
        &self,
        out: &Outbound,
        jwks_uri: &str,
        id_token: &str,
        c: &IdTokenCheck,
    ) -> Result<IdClaims, RpError> {
        self.validate_with(&|uri| fetch_jwks(out, uri), jwks_uri, id_token, c)
    }

    /// [`JwksCache::validate`] with the JWKS fetch given (tests).
    pub(super) fn validate_with(
        &self,
        fetch: &FetchJwks<'_>,
        jwks_uri: &str,
        id_token: &str,
        c: &IdTokenCheck,
    ) -> Result<IdClaims, RpError> {
        let malformed = |why: &str| RpError::MalformedIdToken(why.to_owned());
        if id_token.len() > TOKEN_MAX_BYTES {
            return Err(malformed("longer than 64 KiB"));
        }
        let alg = header_alg(id_token)?;
        let allowed = allowed_algs(c.algs);
        let not_allowed = || RpError::AlgNotAllowed {
            alg: shown(&alg),
            allowed: allowed.join(", "),
        };
        if !allowed.contains(&alg.as_str()) {
            return Err(not_allowed());
        }
        let algorithm = Algorithm::from_str(&alg).map_err(|_| not_allowed())?;
        let header =
            jsonwebtoken::decode_header(id_token).map_err(|_| malformed("unreadable header"))?;
        if header.crit.is_some() {
            return Err(malformed(
                "critical header extensions (crit) are not supported",
            ));
        }
        let keys = self.keys_for(jwks_uri, fetch, header.kid.as_deref(), &alg)?;

        let mut v = Validation::new(algorithm);
        v.set_issuer(&[c.issuer]);
        v.set_audience(&[c.client_id]);
        v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        // The times are checked below against the caller's clock.
        v.validate_exp = false;
        v.validate_nbf = false;
        v.leeway = c.skew_secs;
        let mut last = RpError::BadSignature;
        for key in &keys {
            match jsonwebtoken::decode::<Map<String, Value>>(id_token, key, &v) {
                Ok(data) => return check_claims(data.claims, c),
                Err(e) if *e.kind() == ErrorKind::InvalidSignature => {}
                Err(e) => {
                    last = library_error(e.kind(), id_token, c, &alg);
                    break;
                }
            }
        }
        Err(last)
    }
}

/// The algorithms accepted: the discovery list (RS256 when it is empty),
/// without `none` and the symmetric HS* (the broker shares no key with a
/// provider).
fn allowed_algs(algs: &[String]) -> Vec<&str> {
    let listed: Vec<&str> = if algs.is_empty() {
        vec!["RS256"]
    } else {
        algs.iter().map(String::as_str).collect()
    };
    listed
        .into_iter()
        .filter(|a| !a.eq_ignore_ascii_case("none") && !a.starts_with("HS"))
        .collect()
}

/// The header's `alg`, read before anything else (the library has no `none`
/// to name). A JWE (five parts) or anything but a compact JWS is malformed.
fn header_alg(token: &str) -> Result<String, RpError> {
    let malformed = |why: &str| RpError::MalformedIdToken(why.to_owned());
    let parts: Vec<&str> = token.split('.').collect();
    match parts.len() {
        3 => {}
        5 => return Err(malformed("encrypted ID tokens (JWE) are not supported")),
        _ => return Err(malformed("not a compact JWS (three dot-separated parts)")),
    }
    let bytes = URL_SAFE_NO_PAD
        .decode(parts[0])
        .map_err(|_| malformed("header is not base64url"))?;
    let header: Map<String, Value> =
        serde_json::from_slice(&bytes).map_err(|_| malformed("header is not a JSON object"))?;
    let alg = header
        .get("alg")
        .and_then(Value::as_str)
        .ok_or_else(|| malformed("header has no alg"))?;
    if alg.eq_ignore_ascii_case("none") {
        return Err(RpError::AlgNone);
    }
    Ok(alg.to_owned())
}

/// A claim of the (signature-verified) payload, to name it in an error.
fn claim_shown(token: &str, name: &str) -> String {
    jsonwebtoken::dangerous::insecure_decode_claims::<Map<String, Value>>(token)
        .ok()
        .and_then(|m| m.get(name).cloned())
        .map_or_else(|| "(none)".to_owned(), |v| shown(&v.to_string()))
}

/// The library's refusal, once the signature verified.
fn library_error(kind: &ErrorKind, token: &str, c: &IdTokenCheck, alg: &str) -> RpError {
    let wrong_issuer = || RpError::WrongIssuer {
        got: claim_shown(token, "iss"),
        expected: shown(c.issuer),
    };
    match kind {
        ErrorKind::InvalidIssuer => wrong_issuer(),
        ErrorKind::MissingRequiredClaim(n) if n == "iss" => wrong_issuer(),
        ErrorKind::InvalidAudience => RpError::WrongAudience {
            got: claim_shown(token, "aud"),
            expected: shown(c.client_id),
        },
        ErrorKind::MissingRequiredClaim(n) if n == "aud" => RpError::WrongAudience {
            got: "(none)".into(),
            expected: shown(c.client_id),
        },
        ErrorKind::MissingRequiredClaim(n) => {
            RpError::MalformedIdToken(format!("no {} claim", shown(n)))
        }
        ErrorKind::InvalidClaimFormat(n) => {
            RpError::MalformedIdToken(format!("the {} claim has the wrong type", shown(n)))
        }
        ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => RpError::AlgNotAllowed {
            alg: shown(alg),
            allowed: "(the library refused it)".into(),
        },
        ErrorKind::InvalidSignature => RpError::BadSignature,
        _ => RpError::MalformedIdToken("the payload is not a JSON object of claims".into()),
    }
}

/// A NumericDate claim (seconds, integer or not), when present and a number.
fn seconds(claims: &Map<String, Value>, name: &str) -> Result<Option<i64>, RpError> {
    match claims.get(name) {
        None => Ok(None),
        Some(v) => v
            .as_i64()
            .or_else(|| {
                v.as_f64()
                    .filter(|f| f.is_finite())
                    .map(|f| f.floor() as i64)
            })
            .map(Some)
            .ok_or_else(|| RpError::MalformedIdToken(format!("{name} is not a number"))),
    }
}

fn string(claims: &Map<String, Value>, name: &str) -> Option<String> {
    claims.get(name).and_then(Value::as_str).map(str::to_owned)
}

/// What the library does not check, on a verified token.
fn check_claims(claims: Map<String, Value>, c: &IdTokenCheck) -> Result<IdClaims, RpError> {
    let malformed = |why: &str| RpError::MalformedIdToken(why.to_owned());
    // The library also accepts an array of issuers; OIDC's is one string.
    if claims.get("iss").and_then(Value::as_str) != Some(c.issuer) {
        return Err(RpError::WrongIssuer {
            got: claims
                .get("iss")
                .map_or("(none)".into(), |v| shown(&v.to_string())),
            expected: shown(c.issuer),
        });
    }
    let audiences: Vec<&str> = match claims.get("aud") {
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    let azp = claims.get("azp");
    let several = audiences.iter().any(|a| *a != c.client_id);
    // OIDC Core §3.1.3.7 (4, 5): with several audiences, azp must be there;
    // when it is there, it must be this client.
    if (azp.is_some() || several) && azp.and_then(Value::as_str) != Some(c.client_id) {
        return Err(RpError::WrongAzp {
            got: azp.map_or("(none)".into(), |v| shown(&v.to_string())),
            expected: shown(c.client_id),
        });
    }
    let (now, skew) = (c.now_secs, c.skew_secs);
    let skew_i = i64::try_from(skew).unwrap_or(i64::MAX);
    let exp = seconds(&claims, "exp")?.ok_or_else(|| malformed("no exp claim"))?;
    if now >= exp.saturating_add(skew_i) {
        return Err(RpError::Expired { exp, now, skew });
    }
    if let Some(nbf) = seconds(&claims, "nbf")? {
        if nbf > now.saturating_add(skew_i) {
            return Err(RpError::NotYetValid { nbf, now, skew });
        }
    }
    let iat = seconds(&claims, "iat")?.ok_or_else(|| malformed("no iat claim"))?;
    if iat > now.saturating_add(skew_i) {
        return Err(RpError::IssuedInFuture { iat, now, skew });
    }
    let nonce = claims.get("nonce").and_then(Value::as_str).unwrap_or("");
    let nonce_ok: bool = nonce.as_bytes().ct_eq(c.nonce.as_bytes()).into();
    if !nonce_ok || c.nonce.is_empty() {
        return Err(RpError::WrongNonce);
    }
    let sub = string(&claims, "sub")
        .filter(|s| !s.is_empty() && s.len() <= 255)
        .ok_or_else(|| malformed("sub is not a string of 1 to 255 characters"))?;
    let email_verified = match claims.get("email_verified") {
        Some(Value::Bool(b)) => Some(*b),
        // Some providers send it as a string.
        Some(Value::String(s)) if s == "true" => Some(true),
        Some(Value::String(s)) if s == "false" => Some(false),
        _ => None,
    };
    Ok(IdClaims {
        sub,
        email: string(&claims, "email"),
        email_verified,
        name: string(&claims, "name"),
        given_name: string(&claims, "given_name"),
        family_name: string(&claims, "family_name"),
        claims,
    })
}

#[cfg(test)]
#[path = "id_token_tests.rs"]
mod tests;
