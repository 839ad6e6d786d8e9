//! What an application receives for a signed-in user (the contract's
//! profile): the verified identity, the enterprise domain, and the ID token's
//! claims (without the ones that only served the broker's checks).

use serde::Serialize;
use zeroize::Zeroizing;

use crate::crypto::sso::user_id;
use crate::oidc::rp::IdClaims;
use crate::time::format_micros;
use crate::vault::Domain;

/// Claims that served the broker's own checks and mean nothing to the application.
const INTERNAL_CLAIMS: [&str; 4] = ["nonce", "at_hash", "c_hash", "s_hash"];

#[derive(Serialize)]
struct Profile<'a> {
    id: String,
    enterprise_domain: u64,
    domain: &'a str,
    issuer: &'a str,
    sub: &'a str,
    email: Option<&'a str>,
    email_verified: Option<bool>,
    name: Option<&'a str>,
    given_name: Option<&'a str>,
    family_name: Option<&'a str>,
    claims: serde_json::Map<String, serde_json::Value>,
    authenticated_at: String,
}

/// The profile as JSON (in a wiped buffer: it holds personal data).
pub(crate) fn profile_json(
    domain: &Domain,
    issuer: &str,
    claims: &IdClaims,
    at: i64,
) -> Result<Zeroizing<String>, serde_json::Error> {
    let mut all = claims.claims.clone();
    for c in INTERNAL_CLAIMS {
        all.remove(c);
    }
    let p = Profile {
        id: user_id(issuer, &claims.sub),
        enterprise_domain: domain.id,
        domain: &domain.name,
        issuer,
        sub: &claims.sub,
        email: claims.email.as_deref(),
        email_verified: claims.email_verified,
        name: claims.name.as_deref(),
        given_name: claims.given_name.as_deref(),
        family_name: claims.family_name.as_deref(),
        claims: all,
        authenticated_at: format_micros(at),
    };
    serde_json::to_string(&p).map(Zeroizing::new)
}
