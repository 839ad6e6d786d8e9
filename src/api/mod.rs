//! The HTTP API: one module per resource, each with a `configure` function.
//! Handlers speak DTOs and model types, never storage records.

mod admin;
pub mod admin_ops;
mod apps;
pub mod dto;
pub mod error;
mod health;
mod json;
pub mod middleware;
mod oidc_config;
pub mod openapi;
mod provider;
mod sso;
pub mod ui;
mod whoami;

use std::time::{Duration, Instant};

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use zeroize::Zeroizing;

pub use dto::{DomainResponse, TokenResponse};
pub use error::ApiError;

use crate::limits::{Limits, LimitsConfig};
use crate::vault::{Caller, Domain, DomainAccess, Vault};

/// Largest request body accepted (413 beyond).
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Header an operator uses to name the enterprise domain it acts on.
pub const DOMAIN_HEADER: &str = "X-Enterprise-Domain";

pub fn configure(cfg: &mut web::ServiceConfig) {
    oidc_config::configure(cfg);
    provider::configure(cfg);
    admin::configure(cfg);
    apps::configure(cfg);
    admin_ops::configure(cfg);
    whoami::configure(cfg);
    sso::configure(cfg);
    health::configure(cfg);
    ui::configure(cfg);
}

/// Fallback for paths no resource serves.
pub async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound("Not found."))
}

/// A resource's fallback: 405 with the methods it does serve.
fn method_not_allowed(
    allow: &'static str,
) -> impl Fn(HttpRequest) -> std::future::Ready<Result<HttpResponse, ApiError>> + Clone + 'static {
    move |req: HttpRequest| {
        std::future::ready(Err(ApiError::MethodNotAllowed {
            method: req.method().to_string(),
            allow,
        }))
    }
}

/// Establish the caller from `Authorization: Bearer <token>` (401 otherwise).
/// A client address over its allowance of failed attempts gets 429 before its
/// token is looked at (`crate::limits`).
fn authenticate(req: &HttpRequest, vault: &Vault) -> Result<Caller, ApiError> {
    let limits = req.app_data::<web::Data<Limits>>();
    let ip = req.peer_addr().map(|a| a.ip());
    // Counted as a failure before the token is checked (one locked step with the
    // check, so a parallel burst cannot pass the allowance), given back unless the
    // token is refused.
    let attempt = match (limits, ip) {
        (Some(limits), Some(ip)) => {
            Some(
                limits
                    .auth
                    .begin(ip)
                    .map_err(|wait| ApiError::TooManyRequests {
                        retry_after_secs: wait.as_secs() + u64::from(wait.subsec_nanos() > 0),
                    })?,
            )
        }
        _ => None,
    };
    let result = check_credentials(req, vault);
    if let Some(attempt) = attempt {
        match &result {
            Err(ApiError::InvalidToken) => attempt.failed(),
            _ => attempt.release(),
        }
    }
    result
}

fn check_credentials(req: &HttpRequest, vault: &Vault) -> Result<Caller, ApiError> {
    let Some(value) = req.headers().get(header::AUTHORIZATION) else {
        return Err(ApiError::NoCredentials);
    };
    let value = value.to_str().map_err(|_| ApiError::InvalidToken)?;
    let (scheme, token) = value.trim().split_once(' ').ok_or(ApiError::InvalidToken)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(ApiError::InvalidToken);
    }
    vault
        .authenticate(token.trim())?
        .ok_or(ApiError::InvalidToken)
}

fn require_operator(caller: Caller) -> Result<(), ApiError> {
    match caller {
        Caller::Operator { .. } => Ok(()),
        Caller::Domain { .. } => Err(ApiError::Forbidden),
    }
}

/// The enterprise domain the request acts on (404 / 403).
fn enterprise_domain(req: &HttpRequest, vault: &Vault, caller: Caller) -> Result<Domain, ApiError> {
    let named = match req.headers().get(DOMAIN_HEADER) {
        Some(v) => Some(
            v.to_str()
                .map_err(|_| ApiError::NotFound(error::ENTERPRISE_DOMAIN_NOT_FOUND))?,
        ),
        None => None,
    };
    match vault.domain_for(caller, named)? {
        Ok(d) => Ok(d),
        Err(DomainAccess::NotFound) => Err(ApiError::NotFound(error::ENTERPRISE_DOMAIN_NOT_FOUND)),
        Err(DomainAccess::Forbidden) => Err(ApiError::Forbidden),
    }
}

fn is_json_media_type(value: &str) -> bool {
    let essence = value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Read a JSON request body: 413 beyond [`MAX_BODY_BYTES`] (early, from
/// `Content-Length`, when the client sends one), 415 for another content type.
async fn read_json_body(
    req: &HttpRequest,
    payload: web::Payload,
) -> Result<Zeroizing<Vec<u8>>, ApiError> {
    if declared_length(req).is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(ApiError::PayloadTooLarge);
    }
    match content_type(req) {
        Some(ct) if is_json_media_type(&ct) => {}
        Some(ct) => {
            let shown: String = ct.chars().take(100).collect();
            return Err(ApiError::UnsupportedMediaType(shown));
        }
        None => return Err(ApiError::UnsupportedMediaType(String::new())),
    }
    read_body(req, payload).await
}

fn declared_length(req: &HttpRequest) -> Option<u64> {
    req.headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
}

fn content_type(req: &HttpRequest) -> Option<String> {
    req.headers()
        .get(header::CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
}

/// Read a request body of any type: 413 beyond [`MAX_BODY_BYTES`], 408 when
/// it stalls. The buffer is allocated once at its final capacity, so it is
/// never reallocated, and it is wiped when dropped.
async fn read_body(
    req: &HttpRequest,
    mut payload: web::Payload,
) -> Result<Zeroizing<Vec<u8>>, ApiError> {
    let declared = declared_length(req);
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(ApiError::PayloadTooLarge);
    }
    let capacity = declared.map_or(MAX_BODY_BYTES, |n| n as usize);
    let mut body = Zeroizing::new(Vec::with_capacity(capacity));
    // A stalled body gets 408 (`limits.request_body_timeout_secs`).
    let allowed = req.app_data::<web::Data<Limits>>().map_or(
        Duration::from_secs(LimitsConfig::default().request_body_timeout_secs),
        |l| l.body_timeout(),
    );
    let deadline = Instant::now() + allowed;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let next = actix_web::rt::time::timeout(left, payload.next()).await;
        let Some(chunk) = next.map_err(|_| ApiError::RequestTimeout)? else {
            break;
        };
        let chunk =
            chunk.map_err(|_| ApiError::BadRequest("Could not read the request body.".into()))?;
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(ApiError::PayloadTooLarge);
        }
        if body.len() + chunk.len() > body.capacity() {
            // The client sent more than it declared: move to a buffer of the full
            // limit, wiping the old one (Zeroizing wipes it on drop).
            let mut bigger = Zeroizing::new(Vec::with_capacity(MAX_BODY_BYTES));
            bigger.extend_from_slice(&body);
            body = bigger;
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_media_types() {
        assert!(is_json_media_type("application/json"));
        assert!(is_json_media_type("Application/JSON; charset=utf-8"));
        assert!(is_json_media_type("application/merge-patch+json"));
        assert!(!is_json_media_type("text/plain"));
        assert!(!is_json_media_type("application/x-www-form-urlencoded"));
        assert!(!is_json_media_type(""));
    }
}
