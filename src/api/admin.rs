//! `/api/v1/admin/`: enterprise domains and API tokens (operator tokens only).

use super::dto::{DomainResponse, TokenCreatedResponse, TokenResponse};
use super::json::{self, Errors, Kind};
use super::{authenticate, method_not_allowed, read_json_body, require_operator, ApiError};
use crate::time::format_micros;
use crate::vault::{Caller, TokenTarget, Vault, REQUIRED};
use actix_web::{web, HttpRequest, HttpResponse};

pub(super) const DOMAINS: &str = "/api/v1/admin/domains/";
pub(super) const DOMAIN: &str = "/api/v1/admin/domains/{id}/";
pub(super) const TOKENS: &str = "/api/v1/admin/tokens/";
pub(super) const TOKEN: &str = "/api/v1/admin/tokens/{id}/";

pub(super) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource([DOMAINS, DOMAINS.trim_end_matches('/')])
            .route(web::get().to(list_domains))
            .route(web::post().to(add_domain))
            .default_service(web::to(method_not_allowed("GET, POST"))),
    )
    .service(
        web::resource([DOMAIN, DOMAIN.trim_end_matches('/')])
            .route(web::delete().to(remove_domain))
            .default_service(web::to(method_not_allowed("DELETE"))),
    )
    .service(
        web::resource([TOKENS, TOKENS.trim_end_matches('/')])
            .route(web::get().to(list_tokens))
            .route(web::post().to(create_token))
            .default_service(web::to(method_not_allowed("GET, POST"))),
    )
    .service(
        web::resource([TOKEN, TOKEN.trim_end_matches('/')])
            .route(web::delete().to(revoke_token))
            .default_service(web::to(method_not_allowed("DELETE"))),
    );
}

pub(super) fn operator(req: &HttpRequest, vault: &Vault) -> Result<Caller, ApiError> {
    let caller = authenticate(req, vault)?;
    require_operator(caller)?;
    Ok(caller)
}

pub(super) fn path_id(raw: &str) -> Result<u64, ApiError> {
    raw.parse().map_err(|_| ApiError::NotFound("Not found."))
}

async fn list_domains(req: HttpRequest, vault: web::Data<Vault>) -> Result<HttpResponse, ApiError> {
    operator(&req, &vault)?;
    let list: Vec<DomainResponse> = vault
        .list_domains()?
        .into_iter()
        .map(DomainResponse::from)
        .collect();
    Ok(HttpResponse::Ok().json(list))
}

async fn add_domain(
    req: HttpRequest,
    payload: web::Payload,
    vault: web::Data<Vault>,
) -> Result<HttpResponse, ApiError> {
    let caller = operator(&req, &vault)?;
    let body = read_json_body(&req, payload).await?;
    let obj = json::parse_object(&body)?;
    let mut errors = Errors::default();
    let name = match obj.get("domain") {
        None => {
            errors.add("domain", REQUIRED);
            None
        }
        Some(raw) => json::string(raw).map_err(|m| errors.add("domain", m)).ok(),
    };
    let name = errors.finish(name)?.unwrap_or_default();
    let domain = vault.add_domain(&name, Some(caller.token_id())).await?;
    Ok(HttpResponse::Created().json(DomainResponse::from(domain)))
}

async fn remove_domain(
    req: HttpRequest,
    id: web::Path<String>,
    vault: web::Data<Vault>,
) -> Result<HttpResponse, ApiError> {
    let caller = operator(&req, &vault)?;
    let id = path_id(&id)?;
    if vault.remove_domain(id, Some(caller.token_id())).await? {
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(ApiError::NotFound("Not found."))
    }
}

async fn list_tokens(req: HttpRequest, vault: web::Data<Vault>) -> Result<HttpResponse, ApiError> {
    operator(&req, &vault)?;
    let list: Vec<TokenResponse> = vault
        .list_tokens()?
        .into_iter()
        .map(TokenResponse::from)
        .collect();
    Ok(HttpResponse::Ok().json(list))
}

/// `{"domain": "acme.com"}` or `{"operator": true}`.
fn parse_token_target(body: &[u8]) -> Result<TokenTarget, ApiError> {
    let obj = json::parse_object(body)?;
    let mut errors = Errors::default();
    let domain = match obj.get("domain") {
        Some(raw) if json::kind(raw) != Kind::Null => {
            json::string(raw).map_err(|m| errors.add("domain", m)).ok()
        }
        _ => None,
    };
    let operator = match obj.get("operator") {
        Some(raw) => match json::kind(raw) {
            Kind::Bool => raw.get().trim() == "true",
            Kind::Null => false,
            _ => {
                errors.add("operator", "Must be a valid boolean.");
                false
            }
        },
        None => false,
    };
    let target = match (domain, operator) {
        (Some(d), false) => Some(TokenTarget::Domain(d)),
        (None, true) => Some(TokenTarget::Operator),
        _ => {
            errors.add(
                "non_field_errors",
                "Give either \"domain\" (a domain name) or \"operator\": true.",
            );
            None
        }
    };
    errors
        .finish(target)?
        .ok_or(ApiError::BadRequest("Invalid token request.".into()))
}

async fn create_token(
    req: HttpRequest,
    payload: web::Payload,
    vault: web::Data<Vault>,
) -> Result<HttpResponse, ApiError> {
    let caller = operator(&req, &vault)?;
    let body = read_json_body(&req, payload).await?;
    let target = parse_token_target(&body)?;
    let (info, token) = vault.create_token(&target, Some(caller.token_id())).await?;
    Ok(HttpResponse::Created().json(TokenCreatedResponse {
        id: info.id,
        token: token.expose(),
        domain: info.domain,
        created_at: format_micros(info.created_at),
    }))
}

async fn revoke_token(
    req: HttpRequest,
    id: web::Path<String>,
    vault: web::Data<Vault>,
) -> Result<HttpResponse, ApiError> {
    let caller = operator(&req, &vault)?;
    let id = path_id(&id)?;
    if vault.revoke_token(id, Some(caller.token_id())).await? {
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(ApiError::NotFound("Not found."))
    }
}
