//! The relying-party side of OpenID Connect, for the sign-in broker: the
//! authorization request (state, nonce, PKCE S256), the code exchange at the
//! token endpoint (the client secret goes only to its bound origin, through the
//! SSRF-guarded [`Outbound`](crate::outbound::Outbound) client), ID-token
//! validation against the provider's JWKS (cached per `jwks_uri`), userinfo,
//! and the e-mail domain rule.
//!
//! It knows nothing of the vault, the store or the web framework: it takes
//! plain values and returns them. Blocking (outbound HTTP is): async callers
//! use `actix_web::web::block`.
//!
//! JWS verification is not ours: `jsonwebtoken` checks the signature, `iss`
//! and `aud`; this module picks the key, refuses `none` and any algorithm the
//! discovery document does not list (and the symmetric ones: the broker has no
//! shared key with a provider), and checks what the library does not (`azp`,
//! the times against the caller's clock and skew, `nonce` in constant time).
//!
//! Every failure is one [`RpError`] variant with a stable [`RpError::reason`]
//! code (audit detail and metrics label); its Display is for the operator and
//! never carries a secret, token or code.

mod authorize;
mod id_token;
mod jwks;
mod token;

#[cfg(test)]
mod test_support;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::outbound::FetchError;

pub use authorize::{authorization_url, AuthorizeRequest};
pub use id_token::{IdClaims, IdTokenCheck};
pub use jwks::JwksCache;
pub use token::{exchange_code, userinfo, TokenRequest, TokenResponse};

/// 32 random bytes (256 bits) from the OS, base64url without padding (43
/// characters): state, nonce, PKCE verifier, one-time codes, the cookie.
pub fn random_value() -> Zeroizing<String> {
    let mut bytes = Zeroizing::new([0u8; 32]);
    rand::rngs::OsRng.fill_bytes(bytes.as_mut());
    let mut out = Zeroizing::new(String::with_capacity(43));
    URL_SAFE_NO_PAD.encode_string(bytes.as_ref(), &mut out);
    out
}

/// A PKCE pair (RFC 7636, method S256). The verifier stays with the broker.
pub struct Pkce {
    pub verifier: Zeroizing<String>,
    pub challenge: String,
}

impl std::fmt::Debug for Pkce {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkce")
            .field("verifier", &"<redacted>")
            .field("challenge", &self.challenge)
            .finish()
    }
}

/// A new PKCE pair: a 43-character verifier (unreserved characters only, as
/// RFC 7636 §4.1 asks) and its S256 challenge.
pub fn new_pkce() -> Pkce {
    let verifier = random_value();
    let challenge = s256_challenge(&verifier);
    Pkce {
        verifier,
        challenge,
    }
}

/// RFC 7636 §4.2: `BASE64URL(SHA-256(ASCII(verifier)))`, no padding. Also
/// checks an application's `code_verifier` against its `code_challenge`.
pub fn s256_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// Whether `email`'s domain is `domain` or a subdomain of it, ASCII
/// case-insensitively: `a@acme.com` and `a@eu.acme.com` are in `acme.com`,
/// `a@evilacme.com` and `a@acme.com.evil.io` are not.
pub fn email_in_domain(email: &str, domain: &str) -> bool {
    let Some((local, host)) = email.rsplit_once('@') else {
        return false;
    };
    let domain = domain.to_ascii_lowercase();
    let host = host.to_ascii_lowercase();
    if local.is_empty() || domain.is_empty() || domain.starts_with('.') || domain.ends_with('.') {
        return false;
    }
    host == domain
        || host
            .strip_suffix(domain.as_str())
            .and_then(|rest| rest.strip_suffix('.'))
            .is_some_and(|label| !label.is_empty() && !label.ends_with('.'))
}

/// Provider or token text quoted in an error is cut to this many characters.
const QUOTE_MAX: usize = 200;

/// A value from a token or a provider, safe to show: control characters
/// dropped, cut to [`QUOTE_MAX`] characters. Only for values that are not
/// secret (issuers, audiences, algorithm names, key ids).
pub(crate) fn shown(text: &str) -> String {
    text.chars()
        .filter(|c| !c.is_control())
        .take(QUOTE_MAX)
        .collect()
}

/// Why a sign-in step with the provider failed. Messages are for the operator
/// (audit, logs) and never carry a secret, token, code or nonce; the
/// provider's own `error`/`error_description` are quoted scrubbed and cut.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RpError {
    /// The client secret is not bound to the token endpoint's origin: nothing sent.
    #[error("{0}")]
    NotBound(String),
    /// Neither client_secret_basic nor client_secret_post is supported: nothing sent.
    #[error(
        "the provider supports neither client_secret_basic nor client_secret_post (it lists: \
         {0}); a client secret cannot authenticate this client"
    )]
    UnsupportedAuthMethod(String),
    /// The authorization endpoint is not a URL a browser can be sent to.
    #[error("the authorization endpoint cannot be used: {0}")]
    BadAuthorizationEndpoint(String),
    /// The token endpoint could not be reached (refused by the guard, DNS,
    /// connection, TLS, or the outbound slots all busy).
    #[error("the token endpoint could not be reached: {0}")]
    TokenEndpointUnreachable(FetchError),
    #[error("the token endpoint did not answer in time: {0}")]
    TokenEndpointTimeout(FetchError),
    /// Every outbound slot stayed taken for [`SLOT_WAIT`]: nothing was sent.
    #[error("{0}")]
    OutboundBusy(FetchError),
    /// The token endpoint answered with an error (or a redirect, never followed).
    #[error("the token endpoint answered HTTP {status}{}{}",
        error.as_ref().map(|e| format!(": {e}")).unwrap_or_default(),
        error_description.as_ref().map(|d| format!(" ({d})")).unwrap_or_default())]
    TokenEndpointError {
        status: u16,
        /// The provider's `error` (scrubbed, cut), or our note (a redirect, no JSON).
        error: Option<String>,
        error_description: Option<String>,
    },
    #[error("the token endpoint's answer has no ID token: {0}")]
    NoIdToken(String),
    #[error("the ID token is malformed: {0}")]
    MalformedIdToken(String),
    #[error("the ID token is unsigned (alg \"none\")")]
    AlgNone,
    #[error("the ID token is signed with {alg}, which is not allowed (allowed: {allowed})")]
    AlgNotAllowed { alg: String, allowed: String },
    #[error(
        "no key of the provider's JWKS ({jwks_uri}) matches the ID token (kid {kid}, alg {alg})"
    )]
    UnknownKid {
        jwks_uri: String,
        kid: String,
        alg: String,
    },
    #[error("the provider's JWKS could not be loaded: {0}")]
    JwksUnavailable(String),
    #[error("the ID token's signature does not verify with the provider's key")]
    BadSignature,
    #[error("the ID token's issuer {got} is not {expected}")]
    WrongIssuer { got: String, expected: String },
    #[error("the ID token's audience {got} does not include this client ({expected})")]
    WrongAudience { got: String, expected: String },
    #[error(
        "the ID token has several audiences and its azp {got} is not this client ({expected})"
    )]
    WrongAzp { got: String, expected: String },
    #[error("the ID token expired at {exp} (now {now}, skew {skew} s)")]
    Expired { exp: i64, now: i64, skew: u64 },
    #[error("the ID token is not valid before {nbf} (now {now}, skew {skew} s)")]
    NotYetValid { nbf: i64, now: i64, skew: u64 },
    #[error("the ID token was issued in the future ({iat}; now {now}, skew {skew} s)")]
    IssuedInFuture { iat: i64, now: i64, skew: u64 },
    #[error("the ID token's nonce is missing or not the one sent with this sign-in")]
    WrongNonce,
    #[error("the userinfo request failed: {detail}")]
    UserinfoFailed { detail: String, temporary: bool },
    /// For the caller: userinfo's `sub` is not the ID token's.
    #[error("the userinfo answer is about another subject than the ID token")]
    UserinfoSubMismatch,
}

impl RpError {
    /// A stable snake_case code for audit details and metric labels.
    pub fn reason(&self) -> &'static str {
        match self {
            RpError::NotBound(_) => "not_bound",
            RpError::UnsupportedAuthMethod(_) => "unsupported_auth_method",
            RpError::BadAuthorizationEndpoint(_) => "bad_authorization_endpoint",
            RpError::TokenEndpointUnreachable(_) => "token_endpoint_unreachable",
            RpError::TokenEndpointTimeout(_) => "token_endpoint_timeout",
            RpError::OutboundBusy(_) => "outbound_busy",
            RpError::TokenEndpointError { .. } => "token_endpoint_error",
            RpError::NoIdToken(_) => "no_id_token",
            RpError::MalformedIdToken(_) => "malformed_id_token",
            RpError::AlgNone => "alg_none",
            RpError::AlgNotAllowed { .. } => "alg_not_allowed",
            RpError::UnknownKid { .. } => "unknown_kid",
            RpError::JwksUnavailable(_) => "jwks_unavailable",
            RpError::BadSignature => "bad_signature",
            RpError::WrongIssuer { .. } => "wrong_issuer",
            RpError::WrongAudience { .. } => "wrong_audience",
            RpError::WrongAzp { .. } => "wrong_azp",
            RpError::Expired { .. } => "expired",
            RpError::NotYetValid { .. } => "not_yet_valid",
            RpError::IssuedInFuture { .. } => "issued_in_future",
            RpError::WrongNonce => "wrong_nonce",
            RpError::UserinfoFailed { .. } => "userinfo_failed",
            RpError::UserinfoSubMismatch => "userinfo_sub_mismatch",
        }
    }

    /// Whether trying again later may succeed (the provider or the path to it
    /// is down or slow): the application then gets `temporarily_unavailable`.
    pub fn is_temporary(&self) -> bool {
        match self {
            RpError::TokenEndpointUnreachable(e) => fetch_is_temporary(e),
            RpError::TokenEndpointTimeout(_)
            | RpError::JwksUnavailable(_)
            | RpError::OutboundBusy(_) => true,
            RpError::TokenEndpointError { status, .. } => (500..600).contains(status),
            RpError::UserinfoFailed { temporary, .. } => *temporary,
            _ => false,
        }
    }
}

/// How long a sign-in's request to its provider waits for an outbound slot
/// ([`Outbound::patiently`](crate::outbound::Outbound::patiently)) before it is refused as `outbound_busy`.
pub const SLOT_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// Whether a failed fetch may succeed later: not when the guard refused it
/// or the answer was too large (configuration), yes otherwise.
pub(crate) fn fetch_is_temporary(e: &FetchError) -> bool {
    !matches!(
        e,
        FetchError::Refused { .. } | FetchError::TooLarge { .. } | FetchError::Redirect { .. }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_values_are_256_bits_of_base64url() {
        let a = random_value();
        let b = random_value();
        assert_eq!(a.len(), 43);
        assert_ne!(a.as_str(), b.as_str());
        assert!(a
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
        assert_eq!(URL_SAFE_NO_PAD.decode(a.as_bytes()).unwrap().len(), 32);
    }

    #[test]
    fn pkce_s256_matches_rfc_7636_appendix_b() {
        assert_eq!(
            s256_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
        let p = new_pkce();
        assert_eq!(p.challenge, s256_challenge(&p.verifier));
        assert!(!format!("{p:?}").contains(p.verifier.as_str()));
    }

    #[test]
    fn email_domains() {
        for (email, domain) in [
            ("ann@acme.com", "acme.com"),
            ("ann@ACME.com", "acme.com"),
            ("ann@acme.com", "Acme.COM"),
            ("ann@eu.acme.com", "acme.com"),
            ("ann@a.b.acme.com", "acme.com"),
            ("\"a@b\"@acme.com", "acme.com"),
        ] {
            assert!(email_in_domain(email, domain), "{email} in {domain}");
        }
        for (email, domain) in [
            ("ann@evilacme.com", "acme.com"),
            ("ann@acme.com.evil.io", "acme.com"),
            ("ann@acme.co", "acme.com"),
            ("ann@.acme.com", "acme.com"),
            ("ann@x..acme.com", "acme.com"),
            ("ann@acme.com.", "acme.com"),
            ("acme.com", "acme.com"),
            ("@acme.com", "acme.com"),
            ("ann@", "acme.com"),
            ("ann@acme.com", ""),
            ("ann@acme.com", ".com"),
            ("ann@acme.com@evil.io", "acme.com"),
        ] {
            assert!(!email_in_domain(email, domain), "{email} not in {domain}");
        }
    }

    #[test]
    fn reasons_are_stable_and_temporary_ones_marked() {
        let timeout = FetchError::Timeout {
            url: "https://idp/t".into(),
            after: std::time::Duration::from_secs(1),
        };
        let refused = FetchError::Refused {
            url: "https://idp/t".into(),
            reason: crate::outbound::Refused::Disabled,
        };
        let connect = FetchError::Connect {
            url: "https://idp/t".into(),
            error: "refused".into(),
        };
        let err = |status| RpError::TokenEndpointError {
            status,
            error: None,
            error_description: None,
        };
        let cases = [
            (
                RpError::TokenEndpointTimeout(timeout),
                "token_endpoint_timeout",
                true,
            ),
            (
                RpError::TokenEndpointUnreachable(connect),
                "token_endpoint_unreachable",
                true,
            ),
            (
                RpError::TokenEndpointUnreachable(refused),
                "token_endpoint_unreachable",
                false,
            ),
            (err(503), "token_endpoint_error", true),
            (err(400), "token_endpoint_error", false),
            (err(302), "token_endpoint_error", false),
            (
                RpError::JwksUnavailable("x".into()),
                "jwks_unavailable",
                true,
            ),
            (RpError::BadSignature, "bad_signature", false),
            (RpError::WrongNonce, "wrong_nonce", false),
            (RpError::AlgNone, "alg_none", false),
        ];
        for (e, reason, temporary) in cases {
            assert_eq!(e.reason(), reason, "{e}");
            assert_eq!(e.is_temporary(), temporary, "{e}");
        }
    }
}
