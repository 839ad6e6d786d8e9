//! `/sso/authorize` (and the admin page's "Try sign-in"): check the
//! application and its redirect URI first (an error before that is a page,
//! never a redirect: no open redirector), find the enterprise domain, keep a
//! login transaction bound to the browser, and send the browser to the IdP.
//! No outbound request is made here: an anonymous caller cannot make the
//! appliance fetch anything.

use std::collections::HashMap;
use std::net::IpAddr;

use zeroize::Zeroizing;

use super::{binding_hash, well_formed_binding, with_query, Broker, MAX_STATE_BYTES};
use crate::oidc::rp::{self, AuthorizeRequest};
use crate::time::now_micros;
use crate::vault::{normalize_domain_name, Domain, LoginPurpose, LoginTransaction, Vault};

/// The query of `/sso/authorize`, each parameter at most once.
pub type AuthorizeParams = HashMap<String, String>;

/// A sign-in under way: send the browser to `location`, with the binding cookie.
#[derive(Debug)]
pub struct Started {
    /// The IdP's authorization URL.
    pub location: String,
    /// The browser-binding cookie's value (the browser's own, or a new one).
    pub binding: Zeroizing<String>,
}

/// Why a "Try sign-in" did not start.
#[derive(Debug)]
pub enum TestNotStarted {
    /// Nothing a retry would change (no `public_url`, no config, ...): why.
    Refused(String),
    /// Too many sign-ins under way.
    Busy,
    /// A failure of the appliance (logged with its cause).
    Internal,
}

/// The error code of a failure of the appliance itself (logged); the
/// application sees `server_error`.
const INTERNAL: &str = "internal";

/// Why a sign-in did not start.
#[derive(Debug)]
pub enum NotStarted {
    /// Before the application's redirect URI is known good: an error page.
    Page { status: u16, message: String },
    /// After: back to the application with an OAuth error.
    Redirect {
        redirect_uri: String,
        state: Option<String>,
        error: &'static str,
        description: String,
    },
}

impl NotStarted {
    /// For [`NotStarted::Redirect`]: the application's redirect URI with the
    /// error and its state (built like every other redirect to it); `None`
    /// for a page, or a URI that does not parse.
    pub fn location(&self) -> Option<String> {
        let NotStarted::Redirect {
            redirect_uri,
            state,
            error,
            description,
        } = self
        else {
            return None;
        };
        let mut pairs = vec![
            ("error", *error),
            ("error_description", description.as_str()),
        ];
        if let Some(s) = state.as_deref() {
            pairs.push(("state", s));
        }
        with_query(redirect_uri, &pairs)
    }
}

impl Broker {
    /// Start an application's sign-in.
    pub fn authorize(
        &self,
        vault: &Vault,
        params: &AuthorizeParams,
        cookie: Option<&str>,
        ip: Option<IpAddr>,
    ) -> Result<Started, NotStarted> {
        let page = |status, message: &str| NotStarted::Page {
            status,
            message: message.to_owned(),
        };
        let get = |k: &str| params.get(k).map(String::as_str).filter(|v| !v.is_empty());
        let Some(client_id) = get("client_id") else {
            return Err(page(400, "The request names no application (client_id)."));
        };
        let app = match vault.app_by_client_id(client_id) {
            Ok(Some(app)) => app,
            Ok(None) => return Err(page(400, "Unknown application (client_id).")),
            Err(e) => {
                tracing::error!(error = %e, "sign-in: the application could not be read");
                return Err(page(500, "The sign-in could not start; try again later."));
            }
        };
        let Some(redirect_uri) = get("redirect_uri") else {
            return Err(page(400, "The request has no redirect_uri."));
        };
        if !app.redirect_uris.iter().any(|r| r == redirect_uri) {
            return Err(page(
                400,
                "The redirect_uri is not one registered for this application (exact match).",
            ));
        }
        // From here on, errors go back to the application.
        let state = get("state").map(str::to_owned);
        let fail = |error: &'static str, description: String| NotStarted::Redirect {
            redirect_uri: redirect_uri.to_owned(),
            state: state.clone(),
            error,
            description,
        };
        if state.as_ref().is_some_and(|s| s.len() > MAX_STATE_BYTES) {
            return Err(NotStarted::Redirect {
                redirect_uri: redirect_uri.to_owned(),
                state: None,
                error: "invalid_request",
                description: format!("state is longer than {MAX_STATE_BYTES} bytes"),
            });
        }
        if get("response_type").is_some_and(|t| t != "code") {
            return Err(fail(
                "invalid_request",
                "response_type must be code (the authorization code flow)".into(),
            ));
        }
        let code_challenge = match (get("code_challenge"), get("code_challenge_method")) {
            (None, None) => None,
            (Some(c), Some("S256")) if is_s256_challenge(c) => Some(c.to_owned()),
            (Some(_), Some("S256")) => {
                return Err(fail(
                    "invalid_request",
                    "code_challenge must be 43 base64url characters (S256)".into(),
                ))
            }
            _ => {
                return Err(fail(
                    "invalid_request",
                    "PKCE: send code_challenge with code_challenge_method=S256 (plain is not \
                     accepted)"
                        .into(),
                ))
            }
        };
        let login_hint = get("login_hint");
        let named =
            get("domain").or_else(|| login_hint.and_then(|h| h.rsplit_once('@')).map(|(_, d)| d));
        let Some(named) = named else {
            return Err(fail(
                "invalid_request",
                "name the enterprise domain: domain, or an e-mail address in login_hint".into(),
            ));
        };
        let domain = match normalize_domain_name(named)
            .ok()
            .map(|n| vault.domain_by_name(&n))
        {
            Some(Ok(Some(d))) => d,
            Some(Err(e)) => {
                tracing::error!(error = %e, "sign-in: the domain could not be read");
                return Err(fail("server_error", "the sign-in could not start".into()));
            }
            _ => {
                return Err(fail(
                    "invalid_request",
                    "no enterprise domain of that name is set up for sign-in".into(),
                ))
            }
        };
        let purpose = LoginPurpose::App {
            app_id: app.id,
            redirect_uri: redirect_uri.to_owned(),
            state: state.clone().unwrap_or_default(),
            code_challenge,
        };
        self.start(vault, &domain, purpose, login_hint, cookie, ip)
            .map_err(|(error, description)| {
                fail(
                    if error == INTERNAL {
                        "server_error"
                    } else {
                        error
                    },
                    description,
                )
            })
    }

    /// The admin page's "Try sign-in" for `domain`, by the token `actor`: the
    /// IdP's URL and the binding cookie; `Err` says why not.
    pub fn start_test(
        &self,
        vault: &Vault,
        domain: &Domain,
        actor: u64,
        login_hint: Option<&str>,
        cookie: Option<&str>,
    ) -> Result<Started, TestNotStarted> {
        self.start(
            vault,
            domain,
            LoginPurpose::Test { actor },
            login_hint,
            cookie,
            None,
        )
        .map_err(|(error, description)| match error {
            INTERNAL => TestNotStarted::Internal,
            "temporarily_unavailable" => TestNotStarted::Busy,
            _ => TestNotStarted::Refused(description),
        })
    }

    /// Keep the transaction and build the IdP's URL. `Err((error, description))`.
    fn start(
        &self,
        vault: &Vault,
        domain: &Domain,
        purpose: LoginPurpose,
        login_hint: Option<&str>,
        cookie: Option<&str>,
        ip: Option<IpAddr>,
    ) -> Result<Started, (&'static str, String)> {
        let Some(callback) = self.callback_url() else {
            return Err((
                "server_error",
                "sign-in is not enabled on this server: set server.public_url".into(),
            ));
        };
        if let Err(wait) = self.charge(ip) {
            return Err((
                "temporarily_unavailable",
                format!(
                    "too many sign-ins from this address; try again in {} s",
                    wait.as_secs() + 1
                ),
            ));
        }
        if vault.pending_logins() >= self.settings.sso.max_pending_transactions {
            tracing::warn!(
                pending = vault.pending_logins(),
                "sign-in refused: sso.max_pending_transactions reached"
            );
            return Err((
                "temporarily_unavailable",
                "too many sign-ins are under way; try again in a minute".into(),
            ));
        }
        let server_error = |what: &str, e: &dyn std::fmt::Display| {
            tracing::error!(error = %e, domain = %domain.name, "sign-in: {what}");
            (INTERNAL, "the sign-in could not start".to_owned())
        };
        let config = match vault.get_config(domain) {
            Ok(Some(c)) => c,
            Ok(None) => {
                return Err((
                    "server_error",
                    "the enterprise domain has no OIDC configuration".into(),
                ))
            }
            Err(e) => return Err(server_error("the config could not be read", &e)),
        };
        let Some(endpoint) = config.authorization_endpoint.as_deref() else {
            return Err((
                "server_error",
                "the enterprise domain's OIDC configuration has no authorization endpoint".into(),
            ));
        };
        // What the callback needs, checked before the user is sent to sign in
        // at the provider for nothing.
        if config.discovery_url.is_none() {
            return Err((
                "server_error",
                "the enterprise domain's OIDC configuration has no discovery_url (the broker \
                 needs the provider's issuer and keys)"
                    .into(),
            ));
        }
        if config.token_endpoint.is_none() {
            return Err((
                "server_error",
                "the enterprise domain's OIDC configuration has no token endpoint".into(),
            ));
        }
        let binding = match cookie.filter(|c| well_formed_binding(c)) {
            Some(c) => Zeroizing::new(c.to_owned()),
            None => rp::random_value(),
        };
        let idp_state = rp::random_value();
        let nonce = rp::random_value();
        let pkce = rp::new_pkce();
        let location = rp::authorization_url(&AuthorizeRequest {
            endpoint,
            client_id: &config.client_id,
            redirect_uri: &callback,
            state: &idp_state,
            nonce: &nonce,
            code_challenge: &pkce.challenge,
            login_hint,
        })
        .map_err(|e| server_error("the authorization URL could not be built", &e))?;
        let now = now_micros();
        let ttl = i64::try_from(self.settings.sso.transaction_ttl_secs)
            .unwrap_or(600)
            .saturating_mul(1_000_000);
        let tx = LoginTransaction {
            domain_id: domain.id,
            purpose,
            nonce,
            pkce_verifier: pkce.verifier,
            browser: binding_hash(&binding),
            started_at: now,
            expires_at: now.saturating_add(ttl),
        };
        vault
            .begin_login(&idp_state, &tx)
            .map_err(|e| server_error("the transaction could not be stored", &e))?;
        Ok(Started { location, binding })
    }
}

/// An S256 challenge: 43 base64url characters (a SHA-256, unpadded).
fn is_s256_challenge(c: &str) -> bool {
    c.len() == 43
        && c.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}
