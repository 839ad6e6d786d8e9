//! Operations: liveness, readiness and the OpenAPI document.

use actix_web::{web, HttpResponse};
use serde_json::json;

use super::{method_not_allowed, openapi, ApiError};
use crate::vault::Vault;

pub const HEALTHZ: &str = "/healthz";
pub const READYZ: &str = "/readyz";
pub const OPENAPI: &str = "/api/v1/openapi.json";

pub fn configure(cfg: &mut web::ServiceConfig) {
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
    );
}

/// 200 while the process serves.
async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// 200 once the store is open and the keys unlocked (the server only listens
/// after both) and while group commits succeed; 503 otherwise.
async fn readyz(vault: web::Data<Vault>) -> Result<HttpResponse, ApiError> {
    if vault.ready() {
        Ok(HttpResponse::Ok().json(json!({"status": "ready"})))
    } else {
        Ok(
            HttpResponse::ServiceUnavailable().json(json!({"status": "unavailable",
            "detail": "The last write to disk failed; see the server log."})),
        )
    }
}

async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok().json(openapi::document())
}
