//! `POST /sso/token`: an application redeems its one-time code for the
//! profile, with OAuth 2.0 token-endpoint conventions (RFC 6749 §3.2, §4.1.3,
//! §5.2; PKCE per RFC 7636). The code is taken once, durably, before the
//! profile is handed over; a code presented wrongly (another application,
//! another redirect URI, a wrong verifier) is used up all the same.

use std::collections::HashMap;

use zeroize::Zeroizing;

use super::Broker;
use crate::oidc::rp;
use crate::vault::{App, Redemption, Vault};

/// The form of `/sso/token`, each parameter at most once.
pub type TokenParams = HashMap<String, String>;

/// The application's credentials, from HTTP Basic or the body.
pub struct ClientCredentials {
    pub client_id: String,
    pub client_secret: Zeroizing<String>,
}

impl std::fmt::Debug for ClientCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCredentials")
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

/// An RFC 6749 §5.2 error.
#[derive(Debug, PartialEq, Eq)]
pub struct TokenError {
    /// 400, or 401 for `invalid_client`.
    pub status: u16,
    pub error: &'static str,
    pub description: String,
}

impl TokenError {
    fn new(error: &'static str, description: impl Into<String>) -> Self {
        Self {
            status: if error == "invalid_client" { 401 } else { 400 },
            error,
            description: description.into(),
        }
    }
}

impl Broker {
    /// Authenticate the application (`Ok(None)`: no such client or a wrong secret).
    pub fn client(&self, vault: &Vault, c: &ClientCredentials) -> Result<Option<App>, TokenError> {
        vault
            .authenticate_app(&c.client_id, &c.client_secret)
            .map_err(|e| {
                tracing::error!(error = %e, "sign-in: the application could not be read");
                TokenError {
                    status: 500,
                    error: "server_error",
                    description: "the code could not be redeemed; try again".into(),
                }
            })
    }

    /// Redeem a code for `app`: the profile (JSON) or the error.
    pub async fn redeem(
        &self,
        vault: &Vault,
        app: &App,
        form: &TokenParams,
    ) -> Result<Zeroizing<String>, TokenError> {
        let get = |k: &str| form.get(k).map(String::as_str).filter(|v| !v.is_empty());
        match get("grant_type") {
            Some("authorization_code") => {}
            Some(_) => {
                return Err(TokenError::new(
                    "unsupported_grant_type",
                    "grant_type must be authorization_code",
                ))
            }
            None => return Err(TokenError::new("invalid_request", "grant_type is required")),
        }
        let Some(code) = get("code") else {
            return Err(TokenError::new("invalid_request", "code is required"));
        };
        let Some(redirect_uri) = get("redirect_uri") else {
            return Err(TokenError::new(
                "invalid_request",
                "redirect_uri is required",
            ));
        };
        let verifier = get("code_verifier");
        if verifier.is_some_and(|v| !is_verifier(v)) {
            return Err(TokenError::new(
                "invalid_request",
                "code_verifier must be 43 to 128 characters of [A-Za-z0-9-._~] (RFC 7636)",
            ));
        }
        let redemption = vault
            .redeem_code(code, app.id, |grant| {
                if grant.redirect_uri != redirect_uri {
                    return Err("redirect_uri_mismatch");
                }
                match (&grant.code_challenge, verifier) {
                    (None, None) => Ok(()),
                    (None, Some(_)) => Err("unexpected_code_verifier"),
                    (Some(_), None) => Err("missing_code_verifier"),
                    (Some(challenge), Some(v)) => {
                        let computed = rp::s256_challenge(v);
                        if crate::crypto::sso::same(computed.as_bytes(), challenge.as_bytes()) {
                            Ok(())
                        } else {
                            Err("wrong_code_verifier")
                        }
                    }
                }
            })
            .await
            .map_err(|e| {
                let id = crate::logging::correlation_id();
                tracing::error!(error = %e, correlation_id = %id, "sign-in: the code could not be redeemed");
                TokenError {
                    status: 500,
                    error: "server_error",
                    description: format!("the code could not be redeemed (error id {id})"),
                }
            })?;
        let grant = match redemption {
            Redemption::Granted(g) => g,
            Redemption::Refused(why) => {
                return Err(TokenError::new(
                    "invalid_grant",
                    format!("the code is not valid for this request ({why}); it is used up"),
                ))
            }
            Redemption::Expired => {
                return Err(TokenError::new("invalid_grant", "the code has expired"))
            }
            Redemption::Spent => {
                tracing::warn!(app = app.id, "sign-in: a one-time code was presented again");
                return Err(TokenError::new(
                    "invalid_grant",
                    "the code was already used",
                ));
            }
            Redemption::Unknown => return Err(TokenError::new("invalid_grant", "unknown code")),
        };
        let mut body = Zeroizing::new(String::with_capacity(grant.profile.len() + 16));
        body.push_str("{\"profile\":");
        body.push_str(&grant.profile);
        body.push('}');
        Ok(body)
    }
}

/// RFC 7636 §4.1: 43 to 128 unreserved characters.
fn is_verifier(v: &str) -> bool {
    (43..=128).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifiers_follow_rfc_7636() {
        assert!(is_verifier(&"a".repeat(43)));
        assert!(is_verifier(&"a-._~".repeat(20)));
        assert!(!is_verifier(&"a".repeat(42)));
        assert!(!is_verifier(&"a".repeat(129)));
        assert!(!is_verifier(&format!("{}+", "a".repeat(43))));
    }

    #[test]
    fn invalid_client_is_a_401_and_the_rest_400() {
        assert_eq!(TokenError::new("invalid_client", "x").status, 401);
        assert_eq!(TokenError::new("invalid_grant", "x").status, 400);
    }
}
