//! Operations: liveness, readiness, the OpenAPI document (anonymous), and the
//! Prometheus metrics (operator token: they tell how many domains and configs
//! exist and how the keys stand).

use super::dto::{HealthResponse, UnreadyResponse};
use super::{authenticate, method_not_allowed, openapi, require_operator, ApiError};
use crate::metrics::Metrics;
use crate::vault::Vault;
use actix_web::{web, HttpRequest, HttpResponse};

pub(super) const HEALTHZ: &str = "/healthz";
pub(super) const READYZ: &str = "/readyz";
pub(super) const OPENAPI: &str = "/api/v1/openapi.json";
pub(super) const METRICS: &str = "/metrics";

pub(super) fn configure(cfg: &mut web::ServiceConfig) {
    let get_only = || web::to(method_not_allowed("GET"));
    cfg.service(
        web::resource(HEALTHZ)
            .route(web::get().to(healthz))
            .default_service(get_only()),
    )
    .service(
        web::resource(READYZ)
            .route(web::get().to(readyz))
            .default_service(get_only()),
    )
    .service(
        web::resource(OPENAPI)
            .route(web::get().to(openapi_json))
            .default_service(get_only()),
    )
    .service(
        web::resource(METRICS)
            .route(web::get().to(metrics))
            .default_service(get_only()),
    );
}

/// 200 while the process serves.
async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(HealthResponse { status: "ok" })
}

/// 200 once the store is open and the keys unlocked (the server only listens
/// after both) and while the store can write: the last group commit succeeded
/// (sled), or the storage cluster answers with a quorum (etcd; asked on each
/// call, within `storage.etcd.timeout_secs`). 503 otherwise, saying which.
async fn readyz(vault: web::Data<Vault>) -> Result<HttpResponse, ApiError> {
    let vault = vault.into_inner();
    // The cluster check is a network round trip: off the worker's thread.
    let readiness = web::block(move || vault.readiness())
        .await
        .map_err(|e| ApiError::internal(&e))?;
    match readiness {
        Ok(()) => Ok(HttpResponse::Ok().json(HealthResponse { status: "ready" })),
        Err(why) => Ok(HttpResponse::ServiceUnavailable().json(UnreadyResponse {
            status: "unavailable",
            detail: why.detail(),
        })),
    }
}

async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok().json(openapi::document())
}

/// Prometheus text format, for an operator token (401 without a token, 403 for
/// a domain token). Figures read from the store are refreshed here; the counts
/// come from memory (`store::counts`), so a scrape costs the same however many
/// configs there are.
async fn metrics(
    req: HttpRequest,
    vault: web::Data<Vault>,
    m: web::Data<Metrics>,
) -> Result<HttpResponse, ApiError> {
    require_operator(authenticate(&req, &vault)?)?;
    m.store_bytes
        .set(i64::try_from(vault.size_on_disk()?).unwrap_or(i64::MAX));
    m.set_auth_cache(vault.auth_cache());
    let counts = vault.counts();
    m.domains
        .set(i64::try_from(counts.domains).unwrap_or(i64::MAX));
    m.configs
        .set(i64::try_from(counts.configs).unwrap_or(i64::MAX));
    let status = vault.key_status()?;
    m.active_term.set(i64::from(status.active_term));
    // Only the active term's count (it is the one that moves toward the rotation
    // threshold): a term rotated away from would otherwise keep its last value
    // until a restart, and a dashboard's max over terms would show it.
    m.term_uses.reset();
    m.term_uses
        .with_label_values(&[status.active_term.to_string().as_str()])
        .set(i64::try_from(status.active_term_encryptions).unwrap_or(i64::MAX));
    m.configs_by_term.reset();
    for t in &status.terms {
        m.configs_by_term
            .with_label_values(&[t.term.to_string().as_str()])
            .set(i64::try_from(t.configs).unwrap_or(i64::MAX));
    }
    let body = m.render().map_err(|e| ApiError::internal(&e))?;
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(body))
}
