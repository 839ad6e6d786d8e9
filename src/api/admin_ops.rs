//! Operator routes for running the appliance: key rotation and status, the
//! audit trail, online backups.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use super::admin::operator;
use super::dto::{AuditEventResponse, AuditPageResponse, BackupResponse, KeyStatusResponse};
use super::{method_not_allowed, ApiError};
use crate::time::parse_rfc3339;
use crate::vault::{valid_action_filter, AuditQuery, Vault};

pub const KEYS: &str = "/api/v1/admin/keys/";
pub const KEYS_ROTATE: &str = "/api/v1/admin/keys/rotate";
pub const AUDIT: &str = "/api/v1/admin/audit/";
pub const BACKUP: &str = "/api/v1/admin/backup";

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource([KEYS, KEYS.trim_end_matches('/')])
            .route(web::get().to(key_status))
            .default_service(web::to(method_not_allowed("GET"))),
    )
    .service(
        web::resource([KEYS_ROTATE, "/api/v1/admin/keys/rotate/"])
            .route(web::post().to(rotate))
            .default_service(web::to(method_not_allowed("POST"))),
    )
    .service(
        web::resource([AUDIT, AUDIT.trim_end_matches('/')])
            .route(web::get().to(audit))
            .default_service(web::to(method_not_allowed("GET"))),
    )
    .service(
        web::resource([BACKUP, "/api/v1/admin/backup/"])
            .route(web::post().to(backup))
            .default_service(web::to(method_not_allowed("POST"))),
    );
}

async fn key_status(req: HttpRequest, vault: web::Data<Vault>) -> Result<HttpResponse, ApiError> {
    operator(&req, &vault)?;
    Ok(HttpResponse::Ok().json(KeyStatusResponse::from(&vault.key_status()?)))
}

/// Add a key term; the re-encryption runs in the background.
async fn rotate(req: HttpRequest, vault: web::Data<Vault>) -> Result<HttpResponse, ApiError> {
    let caller = operator(&req, &vault)?;
    vault.rotate(Some(caller.token_id()), "requested").await?;
    Ok(HttpResponse::Ok().json(KeyStatusResponse::from(&vault.key_status()?)))
}

#[derive(Debug, Deserialize)]
struct AuditParams {
    domain: Option<String>,
    action: Option<String>,
    since: Option<String>,
    until: Option<String>,
    cursor: Option<String>,
    limit: Option<String>,
}

async fn audit(req: HttpRequest, vault: web::Data<Vault>) -> Result<HttpResponse, ApiError> {
    operator(&req, &vault)?;
    let params = web::Query::<AuditParams>::from_query(req.query_string())
        .map_err(|_| ApiError::BadRequest("Invalid query string.".into()))?
        .into_inner();
    let mut errors = super::json::Errors::default();
    if params
        .action
        .as_deref()
        .is_some_and(|a| !valid_action_filter(a))
    {
        errors.add(
            "action",
            "Enter an action (config.update) or a prefix ending in a dot (sso.): \
             words of a-z, 0-9 and _ separated by dots, at most 64 characters.",
        );
    }
    let mut time = |field: &str, v: &Option<String>| {
        v.as_ref().and_then(|t| {
            let parsed = parse_rfc3339(t);
            if parsed.is_none() {
                errors.add(
                    field,
                    "Enter an RFC 3339 date-time, e.g. 2026-11-29T15:04:05Z.",
                );
            }
            parsed
        })
    };
    let since = time("since", &params.since);
    let until = time("until", &params.until);
    let after = match &params.cursor {
        Some(c) => match c.parse::<u64>() {
            Ok(v) => Some(v),
            Err(_) => {
                errors.add("cursor", "Invalid cursor.");
                None
            }
        },
        None => None,
    };
    let limit = match &params.limit {
        Some(l) => match l.parse::<usize>() {
            Ok(v) if (1..=1000).contains(&v) => v,
            _ => {
                errors.add("limit", "Enter a whole number from 1 to 1000.");
                0
            }
        },
        None => 100,
    };
    errors.finish(())?;
    let (events, next) = vault.audit(&AuditQuery {
        domain: params.domain,
        action: params.action,
        since,
        until,
        after,
        limit,
    })?;
    Ok(HttpResponse::Ok().json(AuditPageResponse {
        results: events.iter().map(AuditEventResponse::from).collect(),
        next: next.map(|n| n.to_string()),
    }))
}

/// Write a backup under `storage.backup_dir` (never a path from the request).
async fn backup(req: HttpRequest, vault: web::Data<Vault>) -> Result<HttpResponse, ApiError> {
    let caller = operator(&req, &vault)?;
    let worker = vault.clone();
    let info = web::block(move || worker.write_backup_in_backup_dir())
        .await
        .map_err(|e| ApiError::internal(&e))??;
    vault.audit_backup(&info, Some(caller.token_id())).await?;
    Ok(HttpResponse::Created().json(BackupResponse::from(&info)))
}
