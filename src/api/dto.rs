//! Every success body the API answers, as a typed struct: the handlers and the
//! command line serialize these (the CLI prints the same shapes the API serves),
//! never an ad-hoc `json!`. Error bodies are `error::ApiError`'s alone.
//!
//! The OpenAPI document (`openapi.rs`) is written by hand, for its descriptions,
//! patterns and examples; `dto/openapi_check.rs` keeps it from drifting: for each
//! type here, the schema the document gives it must list exactly its fields,
//! require exactly the ones always present, and accept a value with every field set.
//!
//! Times are RFC 3339 strings (`time::format_micros`); an `Option` is `null`
//! when empty, never left out, unless the field says otherwise.

use serde::{Deserialize, Serialize};

use crate::oidc::connection_test::{ProviderError, Step};
use crate::time::format_micros;
use crate::vault::{
    App, AuditEvent, BackupInfo, Caller, Domain, EndpointChange, EndpointKept, KeyStatus,
    OidcConfig, TermStatus, TokenInfo,
};

#[cfg(test)]
mod openapi_check;

/// `GET /healthz`: `{"status": "ok"}`; `GET /readyz` when ready: `{"status": "ready"}`.
#[derive(Debug, Serialize)]
pub struct HealthResponse {
    pub status: &'static str,
}

/// `GET /readyz` when not ready (503).
#[derive(Debug, Serialize)]
pub struct UnreadyResponse {
    pub status: &'static str,
    pub detail: &'static str,
}

/// `EnterpriseOIDCConfig` as the seed defines it. `client_secret` carries the
/// masked form: the plaintext never leaves the server.
#[derive(Debug, Serialize)]
pub struct ConfigResponse {
    pub id: u64,
    pub enterprise_domain: u64,
    pub client_id: String,
    pub client_secret: String,
    pub client_secret_masked: String,
    pub discovery_url: Option<String>,
    pub authorization_endpoint: Option<String>,
    pub token_endpoint: Option<String>,
    pub userinfo_endpoint: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

impl From<OidcConfig> for ConfigResponse {
    fn from(c: OidcConfig) -> Self {
        Self {
            id: c.id,
            enterprise_domain: c.domain_id,
            client_id: c.client_id,
            client_secret: c.client_secret_masked.clone(),
            client_secret_masked: c.client_secret_masked,
            discovery_url: c.discovery_url,
            authorization_endpoint: c.authorization_endpoint,
            token_endpoint: c.token_endpoint,
            userinfo_endpoint: c.userinfo_endpoint,
            created_at: format_micros(c.created_at),
            updated_at: format_micros(c.updated_at),
        }
    }
}

/// `POST .../config/refresh/`: what changed, what was kept, the stored config.
#[derive(Debug, Serialize)]
pub struct RefreshResponse {
    pub discovery_url: String,
    pub issuer: String,
    pub changed: Vec<EndpointChangeResponse>,
    pub kept: Vec<EndpointKeptResponse>,
    pub discovered_endpoints: Vec<String>,
    pub config: ConfigResponse,
}

#[derive(Debug, Serialize)]
pub struct EndpointChangeResponse {
    pub field: &'static str,
    pub old: Option<String>,
    pub new: Option<String>,
}

impl From<&EndpointChange> for EndpointChangeResponse {
    fn from(c: &EndpointChange) -> Self {
        Self {
            field: c.field,
            old: c.old.clone(),
            new: c.new.clone(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct EndpointKeptResponse {
    pub field: &'static str,
    pub value: Option<String>,
    pub discovered: Option<String>,
    pub reason: String,
}

impl From<&EndpointKept> for EndpointKeptResponse {
    fn from(k: &EndpointKept) -> Self {
        Self {
            field: k.field,
            value: k.value.clone(),
            discovered: k.discovered.clone(),
            reason: k.reason.clone(),
        }
    }
}

/// `POST .../config/test/`: each step of the connection test.
#[derive(Debug, Serialize)]
pub struct ConnectionTestResponse {
    pub ok: bool,
    pub tested_at: String,
    pub steps: Vec<StepResponse>,
}

#[derive(Debug, Serialize)]
pub struct StepResponse {
    pub name: &'static str,
    pub status: &'static str,
    pub url: Option<String>,
    pub detail: String,
    pub provider_error: Option<ProviderErrorResponse>,
}

impl From<&Step> for StepResponse {
    fn from(s: &Step) -> Self {
        Self {
            name: s.name,
            status: s.status.as_str(),
            url: s.url.clone(),
            detail: s.detail.clone(),
            provider_error: s.provider_error.as_ref().map(ProviderErrorResponse::from),
        }
    }
}

/// What the provider answered when a step failed on its side.
#[derive(Debug, Serialize)]
pub struct ProviderErrorResponse {
    pub status: u16,
    pub error: Option<String>,
    pub error_description: Option<String>,
}

impl From<&ProviderError> for ProviderErrorResponse {
    fn from(p: &ProviderError) -> Self {
        Self {
            status: p.status,
            error: p.error.clone(),
            error_description: p.error_description.clone(),
        }
    }
}

/// An enterprise domain (`/api/v1/admin/domains/`, `oidcvault domain add|list`).
#[derive(Debug, Serialize)]
pub struct DomainResponse {
    pub id: u64,
    pub domain: String,
    pub created_at: String,
}

impl From<Domain> for DomainResponse {
    fn from(d: Domain) -> Self {
        Self {
            id: d.id,
            domain: d.name,
            created_at: format_micros(d.created_at),
        }
    }
}

/// A token, never its value (`GET /api/v1/admin/tokens/`, `oidcvault token list`).
#[derive(Debug, Serialize)]
pub struct TokenResponse {
    pub id: u64,
    /// `null` for an operator token.
    pub domain: Option<String>,
    pub created_at: String,
}

impl From<TokenInfo> for TokenResponse {
    fn from(t: TokenInfo) -> Self {
        Self {
            id: t.id,
            domain: t.domain,
            created_at: format_micros(t.created_at),
        }
    }
}

/// `POST /api/v1/admin/tokens/`: the one answer that carries a token's value
/// (borrowed, so no copy of it outlives the token's own zeroizing buffer).
#[derive(Debug, Serialize)]
pub struct TokenCreatedResponse<'a> {
    pub id: u64,
    pub token: &'a str,
    /// `null` for an operator token.
    pub domain: Option<String>,
    pub created_at: String,
}

/// An application of the sign-in broker, never its secret
/// (`GET /api/v1/admin/apps/`, `oidcvault app list`).
#[derive(Debug, Serialize)]
pub struct AppResponse {
    pub id: u64,
    pub name: String,
    pub client_id: String,
    pub redirect_uris: Vec<String>,
    pub created_at: String,
}

impl From<App> for AppResponse {
    fn from(a: App) -> Self {
        Self {
            id: a.id,
            name: a.name,
            client_id: a.client_id,
            redirect_uris: a.redirect_uris,
            created_at: format_micros(a.created_at),
        }
    }
}

/// `POST /api/v1/admin/apps/`, `oidcvault app add`: the one answer that
/// carries an application's client secret (borrowed, so no copy of it outlives
/// the secret's own zeroizing buffer; left out of `Debug`).
#[derive(Serialize)]
pub struct AppCreatedResponse<'a> {
    pub id: u64,
    pub name: String,
    pub client_id: String,
    pub client_secret: &'a str,
    pub redirect_uris: Vec<String>,
    pub created_at: String,
}

impl std::fmt::Debug for AppCreatedResponse<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppCreatedResponse")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("client_id", &self.client_id)
            .field("redirect_uris", &self.redirect_uris)
            .field("created_at", &self.created_at)
            .finish_non_exhaustive()
    }
}

impl<'a> AppCreatedResponse<'a> {
    pub fn new(app: App, client_secret: &'a str) -> Self {
        Self {
            id: app.id,
            name: app.name,
            client_id: app.client_id,
            client_secret,
            redirect_uris: app.redirect_uris,
            created_at: format_micros(app.created_at),
        }
    }
}

/// `GET /api/v1/auth/whoami/`: who the presented token is.
#[derive(Debug, Serialize)]
pub struct WhoAmIResponse {
    /// `"operator"` or `"domain"`.
    pub kind: &'static str,
    pub token_id: u64,
    /// The domain a domain token belongs to; `null` for an operator token.
    pub domain: Option<String>,
}

impl WhoAmIResponse {
    /// `domain`: the caller's own domain (for a domain token).
    pub fn new(caller: Caller, domain: Option<Domain>) -> Self {
        match caller {
            Caller::Operator { token_id } => Self {
                kind: "operator",
                token_id,
                domain: None,
            },
            Caller::Domain { token_id, .. } => Self {
                kind: "domain",
                token_id,
                domain: domain.map(|d| d.name),
            },
        }
    }
}

/// `GET /api/v1/sso/`: where the broker is reached, and the callback URL to
/// register at each identity provider (`null` while `server.public_url` is unset).
#[derive(Debug, Serialize)]
pub struct SsoInfoResponse {
    pub public_url: Option<String>,
    pub callback_url: Option<String>,
}

/// `POST /api/v1/enterprises/oidc/sign-in-test/`: the IdP's authorization URL
/// to open (in a new tab) for the admin page's "Try sign-in".
#[derive(Debug, Serialize)]
pub struct SignInTestResponse {
    pub authorization_url: String,
}

/// Key terms and re-encryption progress (`/api/v1/admin/keys/`): what is stored,
/// and the serving process's count of encryptions under the active term.
#[derive(Debug, Serialize)]
pub struct KeyStatusResponse {
    #[serde(flatten)]
    pub keys: KeyTermsResponse,
    /// Counted in memory by the process that answers (an upper bound after a
    /// restart): the command line, a process of its own, leaves it out.
    pub active_term_encryptions: u64,
}

impl From<&KeyStatus> for KeyStatusResponse {
    fn from(s: &KeyStatus) -> Self {
        Self {
            keys: KeyTermsResponse::from(s),
            active_term_encryptions: s.active_term_encryptions,
        }
    }
}

/// The part of [`KeyStatusResponse`] any process reads alike from the store
/// (`oidcvault key status|rotate` print it).
#[derive(Debug, Serialize)]
pub struct KeyTermsResponse {
    pub active_term: u32,
    pub rotate_after_encryptions: u64,
    pub terms: Vec<TermResponse>,
    pub total_configs: u64,
    pub progress: f64,
    pub reencryption_pending: bool,
}

impl From<&KeyStatus> for KeyTermsResponse {
    fn from(s: &KeyStatus) -> Self {
        Self {
            active_term: s.active_term,
            rotate_after_encryptions: s.rotate_after_encryptions,
            terms: s.terms.iter().map(TermResponse::from).collect(),
            total_configs: s.total_configs,
            progress: s.progress,
            reencryption_pending: s.reencryption_pending,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct TermResponse {
    pub term: u32,
    pub active: bool,
    pub created_at: String,
    pub configs: u64,
}

impl From<&TermStatus> for TermResponse {
    fn from(t: &TermStatus) -> Self {
        Self {
            term: t.term,
            active: t.active,
            created_at: format_micros(t.created_at),
            configs: t.configs,
        }
    }
}

/// One page of the audit trail.
#[derive(Debug, Serialize)]
pub struct AuditPageResponse {
    pub results: Vec<AuditEventResponse>,
    /// The cursor of the next page; `null` on the last one.
    pub next: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct AuditEventResponse {
    pub id: u64,
    pub at: String,
    pub actor: Option<u64>,
    pub action: String,
    pub domain_id: Option<u64>,
    pub domain: Option<String>,
    pub fields: Vec<String>,
    pub secret_fingerprint: Option<String>,
    pub detail: Option<String>,
}

impl From<&AuditEvent> for AuditEventResponse {
    fn from(e: &AuditEvent) -> Self {
        Self {
            id: e.id,
            at: format_micros(e.at),
            actor: e.actor,
            action: e.action.clone(),
            domain_id: e.domain_id,
            domain: e.domain.clone(),
            fields: e.fields.clone(),
            secret_fingerprint: e.secret_fingerprint.clone(),
            detail: e.detail.clone(),
        }
    }
}

/// A backup written (`POST /api/v1/admin/backup`, `oidcvault backup`, which also
/// reads it back from a running server).
#[derive(Debug, Serialize, Deserialize)]
pub struct BackupResponse {
    pub name: String,
    pub path: String,
    pub records: u64,
    pub bytes: u64,
    pub created_at: String,
}

impl From<&BackupInfo> for BackupResponse {
    fn from(info: &BackupInfo) -> Self {
        Self {
            name: info.name.clone(),
            path: info.path.display().to_string(),
            records: info.records,
            bytes: info.bytes,
            created_at: format_micros(info.created_at),
        }
    }
}
