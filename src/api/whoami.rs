//! `/api/v1/auth/whoami/`: who the presented token is (any valid token; 401
//! otherwise). The admin page and scripts ask here rather than provoking a 403
//! on an operator route to tell a domain token from an operator token.

use actix_web::{web, HttpRequest, HttpResponse};

use super::dto::WhoAmIResponse;
use super::{authenticate, method_not_allowed, ApiError};
use crate::vault::{Caller, Vault};

pub(super) const WHOAMI: &str = "/api/v1/auth/whoami/";

pub(super) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource([WHOAMI, WHOAMI.trim_end_matches('/')])
            .route(web::get().to(whoami))
            .default_service(web::to(method_not_allowed("GET"))),
    );
}

async fn whoami(req: HttpRequest, vault: web::Data<Vault>) -> Result<HttpResponse, ApiError> {
    let caller = authenticate(&req, &vault)?;
    let domain = match caller {
        Caller::Operator { .. } => None,
        // The token's own domain. Gone between the two reads: the token went
        // with it (removing a domain removes its tokens).
        Caller::Domain { .. } => Some(
            vault
                .domain_for(caller, None)?
                .map_err(|_| ApiError::InvalidToken)?,
        ),
    };
    Ok(HttpResponse::Ok().json(WhoAmIResponse::new(caller, domain)))
}
