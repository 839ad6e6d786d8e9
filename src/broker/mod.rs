//! The sign-in broker: completes an enterprise user's OpenID Connect sign-in
//! on behalf of an application, which receives a verified profile and never
//! the client secret, the identity provider's tokens or its keys.
//!
//! ```text
//! app ──302──▶ /sso/authorize ──302──▶ IdP ──302──▶ /sso/callback ──302──▶ app
//!                 (transaction)                      (code exchange,      │
//!                                                     ID token checks,    ▼
//!                                                     one-time code)   POST /sso/token
//! ```
//!
//! The broker decides; it keeps its state through the vault (sealed, taken
//! once, see `vault::sso`) and speaks to the identity provider through the
//! protocol module (`oidc::rp`) over the SSRF-guarded outbound client. It knows
//! nothing of HTTP requests: the API layer (`api::sso`) turns its outcomes into
//! redirects, pages and JSON.
//!
//! Files: `config` (`[sso]`, `server.public_url`), `authorize` (start a
//! sign-in), `callback` (finish it at the IdP's return) with `verify` (its
//! blocking part: code exchange, ID token, userinfo, e-mail), `redeem` (the
//! application's code), `profile` (what the application receives).

mod authorize;
mod callback;
mod config;
mod profile;
mod redeem;
mod verify;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use authorize::{AuthorizeParams, NotStarted, Started, TestNotStarted};
pub use callback::{CallbackParams, Check, CheckStatus, Finished, TestResult, CHECKS};
pub use config::{check_public_url, SsoConfig};
/// For the OpenAPI document's check (`api::dto::openapi_check`): the profile
/// exactly as the broker serializes it.
#[cfg(test)]
pub(crate) use profile::profile_json;
pub use redeem::{ClientCredentials, TokenError, TokenParams};

use crate::limits::AuthLimiter;
pub use crate::metrics::SsoMetrics;
use crate::oidc::discovery::{self, ProviderMetadata};
use crate::oidc::rp::JwksCache;
use crate::outbound::Outbound;

/// The broker's settings, from the configuration.
#[derive(Debug, Clone, Default)]
pub struct BrokerSettings {
    /// `server.public_url`, checked, without a trailing slash.
    pub public_url: Option<String>,
    pub sso: SsoConfig,
}

impl BrokerSettings {
    pub fn from_config(config: &crate::config::Config) -> Self {
        Self {
            public_url: config.public_url(),
            sso: config.sso.clone(),
        }
    }
}

/// How long a provider's discovery document is used before it is read again.
const PROVIDER_TTL: Duration = Duration::from_secs(300);
/// Refetches of one JWKS on an unknown `kid`: at most one per this interval.
const JWKS_MIN_REFETCH: Duration = Duration::from_secs(30);
/// Longest application `state` handed back (bytes).
pub const MAX_STATE_BYTES: usize = 1024;

/// Length of a browser-binding value (32 random bytes, base64url).
const BINDING_LEN: usize = 43;

pub struct Broker {
    settings: BrokerSettings,
    jwks: JwksCache,
    providers: Mutex<HashMap<String, (Instant, Arc<ProviderMetadata>)>>,
    /// Sign-ins started (and refused callbacks) per client address.
    starts: AuthLimiter,
    metrics: Option<SsoMetrics>,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("public_url", &self.settings.public_url)
            .finish_non_exhaustive()
    }
}

impl Default for Broker {
    fn default() -> Self {
        Self::new(BrokerSettings::default(), None)
    }
}

impl Broker {
    pub fn new(settings: BrokerSettings, metrics: Option<SsoMetrics>) -> Self {
        let starts = AuthLimiter::new(
            settings.sso.authorize_per_address_per_minute,
            Duration::from_secs(60),
        );
        Self {
            settings,
            jwks: JwksCache::new(JWKS_MIN_REFETCH),
            providers: Mutex::new(HashMap::new()),
            starts,
            metrics,
        }
    }

    pub fn settings(&self) -> &BrokerSettings {
        &self.settings
    }

    /// `<public_url>/sso/callback`: the redirect URI to register at each IdP.
    pub fn callback_url(&self) -> Option<String> {
        self.settings
            .public_url
            .as_ref()
            .map(|u| format!("{u}/sso/callback"))
    }

    /// The browser-binding cookie's name: `__Host-` prefixed (Secure, Path=/,
    /// no Domain) when the public URL is https.
    pub fn cookie_name(&self) -> &'static str {
        if self.secure_cookie() {
            "__Host-oidcvault_sso"
        } else {
            "oidcvault_sso"
        }
    }

    pub fn secure_cookie(&self) -> bool {
        self.settings
            .public_url
            .as_deref()
            .is_some_and(|u| u.starts_with("https://"))
    }

    /// Count a start (or a refused callback) against `ip`'s allowance: `Err`
    /// with the wait when it is used up.
    fn charge(&self, ip: Option<IpAddr>) -> Result<(), Duration> {
        match ip {
            Some(ip) => self.starts.begin(ip).map(|a| a.failed()),
            None => Ok(()),
        }
    }

    fn count(&self, outcome: &str, reason: &str) {
        if let Some(m) = &self.metrics {
            m.logins.with_label_values(&[outcome, reason]).inc();
        }
    }

    fn observe_idp(&self, took: Duration) {
        if let Some(m) = &self.metrics {
            m.idp_seconds.observe(took.as_secs_f64());
        }
    }

    /// A provider's discovery document, from the cache or fetched (blocking).
    fn provider(
        &self,
        outbound: &Outbound,
        discovery_url: &str,
    ) -> Result<Arc<ProviderMetadata>, discovery::DiscoveryError> {
        let lock = || {
            self.providers
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        };
        if let Some((at, meta)) = lock().get(discovery_url) {
            if at.elapsed() < PROVIDER_TTL {
                return Ok(meta.clone());
            }
        }
        let meta = Arc::new(discovery::fetch_patiently(
            outbound,
            discovery_url,
            crate::oidc::rp::SLOT_WAIT,
        )?);
        let mut cache = lock();
        // Bounded: one entry per configured discovery URL, stale ones dropped.
        cache.retain(|_, (at, _)| at.elapsed() < PROVIDER_TTL);
        cache.insert(discovery_url.to_owned(), (Instant::now(), meta.clone()));
        Ok(meta)
    }
}

/// A well-formed browser-binding value (what the broker itself hands out).
fn well_formed_binding(value: &str) -> bool {
    value.len() == BINDING_LEN
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// What a transaction keeps of a browser-binding value.
fn binding_hash(value: &str) -> [u8; 32] {
    crate::crypto::sso::browser_binding(value)
}

/// Append `pairs` to `base`'s query (keeping what it has).
fn with_query(base: &str, pairs: &[(&str, &str)]) -> Option<String> {
    let mut url = url::Url::parse(base).ok()?;
    {
        let mut q = url.query_pairs_mut();
        for (k, v) in pairs {
            q.append_pair(k, v);
        }
    }
    Some(url.into())
}

/// Query parameters as a map; `Err` names one that is given more than once
/// (RFC 6749 §3.1: parameters must not repeat).
pub fn single_params(query: &str) -> Result<HashMap<String, String>, String> {
    let mut out = HashMap::new();
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        if out.insert(k.to_string(), v.into_owned()).is_some() {
            return Err(k.into_owned());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_parameters_are_named() {
        assert_eq!(single_params("a=1&b=2").unwrap().len(), 2);
        assert_eq!(single_params("a=1&a=2").unwrap_err(), "a");
    }

    #[test]
    fn redirects_keep_the_applications_own_query() {
        assert_eq!(
            with_query(
                "https://app.example/cb?x=1",
                &[("code", "c d"), ("state", "s")]
            )
            .unwrap(),
            "https://app.example/cb?x=1&code=c+d&state=s"
        );
    }

    #[test]
    fn cookie_name_follows_the_public_url() {
        let b = |u: &str| {
            Broker::new(
                BrokerSettings {
                    public_url: Some(u.into()),
                    sso: SsoConfig::default(),
                },
                None,
            )
        };
        assert_eq!(
            b("https://sso.example").cookie_name(),
            "__Host-oidcvault_sso"
        );
        assert_eq!(b("http://127.0.0.1:1").cookie_name(), "oidcvault_sso");
        assert!(well_formed_binding(&"a".repeat(43)));
        assert!(!well_formed_binding(&"a".repeat(42)));
        assert!(!well_formed_binding(&format!("{};", "a".repeat(42))));
    }
}
