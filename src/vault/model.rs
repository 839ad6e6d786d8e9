//! The service layer's model types: what the API and the command line speak
//! (never storage records), and the domain-name rules.

use std::sync::Mutex;

use super::EndpointSource;
use crate::crypto::SecretString;
use crate::store::{AppRecord, ConfigRecord, DomainRecord};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Domain {
    pub id: u64,
    pub name: String,
    pub created_at: i64,
}

impl From<DomainRecord> for Domain {
    fn from(r: DomainRecord) -> Self {
        Self {
            id: r.id,
            name: r.name,
            created_at: r.created_at,
        }
    }
}

/// A stored OIDC configuration as the outside world may see it: masked secret only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcConfig {
    pub id: u64,
    pub domain_id: u64,
    pub client_id: String,
    pub client_secret_masked: String,
    pub discovery_url: Option<String>,
    pub authorization_endpoint: Option<String>,
    pub token_endpoint: Option<String>,
    pub userinfo_endpoint: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    /// Endpoint fields managed by discovery (the others were set by hand).
    pub discovered_endpoints: Vec<String>,
    /// The origin the client secret is bound to (`None`: written without a
    /// token endpoint, so it may go nowhere). Not a secret; never in answers.
    pub secret_origin: Option<String>,
}

impl From<ConfigRecord> for OidcConfig {
    fn from(r: ConfigRecord) -> Self {
        Self {
            id: r.id,
            domain_id: r.domain_id,
            client_id: r.client_id,
            client_secret_masked: r.secret_masked,
            discovery_url: r.discovery_url,
            authorization_endpoint: r.authorization_endpoint,
            token_endpoint: r.token_endpoint,
            userinfo_endpoint: r.userinfo_endpoint,
            created_at: r.created_at,
            updated_at: r.updated_at,
            discovered_endpoints: r.discovered_endpoints,
            secret_origin: r.secret_origin,
        }
    }
}

/// One optional field of an update: left out, set to `null`, or set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Patch<T> {
    #[default]
    Keep,
    Clear,
    Set(T),
}

impl<T: Clone> Patch<T> {
    pub(super) fn apply(&self, current: Option<T>) -> Option<T> {
        match self {
            Patch::Keep => current,
            Patch::Clear => None,
            Patch::Set(v) => Some(v.clone()),
        }
    }
}

/// A validated create-or-update request.
#[derive(Debug, Default)]
pub struct ConfigPatch {
    pub client_id: Option<String>,
    pub client_secret: Option<SecretString>,
    pub discovery_url: Patch<String>,
    pub authorization_endpoint: Patch<String>,
    pub token_endpoint: Patch<String>,
    pub userinfo_endpoint: Patch<String>,
    /// Whether the endpoints come from discovery (resolve on save).
    pub endpoint_source: EndpointSource,
}

/// A running outbound job of one domain (see [`super::Vault::begin_outbound_job`]).
#[derive(Debug)]
pub struct OutboundJob<'a> {
    pub(super) jobs: &'a Mutex<std::collections::HashSet<u64>>,
    pub(super) domain_id: u64,
}

impl Drop for OutboundJob<'_> {
    fn drop(&mut self) {
        self.jobs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&self.domain_id);
    }
}

/// A decrypted client secret with the config it was read from (one read, so
/// the two always match); `config.secret_origin` is the one origin it may be
/// sent to.
#[derive(Debug)]
pub struct BoundSecret {
    pub secret: SecretString,
    pub config: OidcConfig,
}

/// An application of the sign-in broker, as the API and the command line show
/// it: never its secret (stored only as a hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct App {
    pub id: u64,
    pub name: String,
    pub client_id: String,
    /// Registered exactly as given; a sign-in's `redirect_uri` must equal one.
    pub redirect_uris: Vec<String>,
    pub created_at: i64,
}

impl From<AppRecord> for App {
    fn from(r: AppRecord) -> Self {
        Self {
            id: r.id,
            name: r.name,
            client_id: r.client_id,
            redirect_uris: r.redirect_uris,
            created_at: r.created_at,
        }
    }
}

/// An application's client secret, as shown once at creation. Wiped on drop,
/// redacted in `Debug`.
pub struct AppSecret(pub(super) zeroize::Zeroizing<String>);

impl AppSecret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for AppSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AppSecret(<redacted>)")
    }
}

/// Who is calling, as established from a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    Operator { token_id: u64 },
    Domain { token_id: u64, domain_id: u64 },
}

impl Caller {
    pub fn token_id(&self) -> u64 {
        match self {
            Caller::Operator { token_id } | Caller::Domain { token_id, .. } => *token_id,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    pub id: u64,
    /// `None` for an operator token.
    pub domain: Option<String>,
    pub created_at: i64,
}

/// What to create a token for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenTarget {
    Operator,
    Domain(String),
}

/// Why a caller cannot act on an enterprise domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DomainAccess {
    /// No domain named, or the named one does not exist.
    NotFound,
    /// A domain token naming another domain.
    Forbidden,
}

/// Check and normalise an enterprise domain name (a DNS host name, lower-cased,
/// at most one trailing dot dropped; the last label starts with a letter). The
/// OpenAPI document states the same rule as a pattern (`DOMAIN_NAME_PATTERN`).
pub fn normalize_domain_name(raw: &str) -> Result<String, String> {
    let name = raw.strip_suffix('.').unwrap_or(raw).to_ascii_lowercase();
    let invalid = || Err("Enter a valid domain name, such as acme.com.".to_owned());
    if name.is_empty() || name.len() > 253 {
        return invalid();
    }
    let labels: Vec<&str> = name.split('.').collect();
    if labels.len() < 2 {
        return invalid();
    }
    for label in &labels {
        let ok = !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            return invalid();
        }
    }
    if !labels
        .last()
        .is_some_and(|tld| tld.bytes().next().is_some_and(|b| b.is_ascii_lowercase()))
    {
        return invalid();
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domain_names_are_normalised_and_checked() {
        assert_eq!(normalize_domain_name("Acme.COM").unwrap(), "acme.com");
        assert_eq!(
            normalize_domain_name("sso.acme.co.uk.").unwrap(),
            "sso.acme.co.uk"
        );
        for bad in [
            "",
            "acme",
            "-acme.com",
            "acme-.com",
            "ac me.com",
            "acme..com",
            "1.2.3.4",
            "acme.com/x",
            "a@b.com",
            "é.com",
            " acme.com",
            "acme.com..",
            "acme.1com",
        ] {
            assert!(normalize_domain_name(bad).is_err(), "{bad:?} accepted");
        }
        assert!(normalize_domain_name(&format!("{}.com", "a".repeat(64))).is_err());
    }
}
