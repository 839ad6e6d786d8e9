//! The config's identity provider: OIDC discovery on the config resource: resolve on save (called by
//! `oidc_config`'s POST), `POST .../config/refresh/` and `POST .../config/test/`.
//! Who may call: as the config resource (a domain token, or an operator token
//! with `X-Enterprise-Domain`). Outbound fetches are blocking: they run on the
//! blocking pool through `web::block`.

use super::dto::{
    ConfigResponse, ConnectionTestResponse, EndpointChangeResponse, EndpointKeptResponse,
    RefreshResponse, StepResponse,
};
use super::{authenticate, enterprise_domain, method_not_allowed, ApiError};
use crate::oidc::connection_test::{self, StepStatus, TestInput};
use crate::oidc::discovery::{self, ProviderMetadata};
use crate::origin::origin_of;
use crate::outbound::Outbound;
use crate::time::{format_micros, now_micros};
use crate::vault::{
    field_error, needs_discovery_fetch, BoundSecret, ConfigPatch, Discovered, Domain,
    EndpointSource, Patch, Vault,
};
use actix_web::{web, HttpRequest, HttpResponse};

pub(super) const REFRESH: &str = "/api/v1/enterprises/oidc/config/refresh/";
pub(super) const TEST: &str = "/api/v1/enterprises/oidc/config/test/";

pub(super) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource([REFRESH, REFRESH.trim_end_matches('/')])
            .route(web::post().to(refresh))
            .default_service(web::to(method_not_allowed("POST"))),
    )
    .service(
        web::resource([TEST, TEST.trim_end_matches('/')])
            .route(web::post().to(test))
            .default_service(web::to(method_not_allowed("POST"))),
    );
}

/// The endpoints a checked discovery document names, as the vault takes them.
fn endpoints(meta: &ProviderMetadata) -> Discovered {
    Discovered {
        authorization_endpoint: Some(meta.authorization_endpoint.clone()),
        token_endpoint: meta.token_endpoint.clone(),
        userinfo_endpoint: meta.userinfo_endpoint.clone(),
    }
}

/// Fetch a discovery document on the blocking pool; a failure is a 400 on
/// `discovery_url` with the reason (503 when outbound capacity is all in use).
async fn fetch(outbound: &Outbound, url: &str) -> Result<ProviderMetadata, ApiError> {
    let outbound = outbound.clone();
    let url = url.to_owned();
    web::block(move || discovery::fetch(&outbound, &url))
        .await
        .map_err(|e| ApiError::internal(&e))?
        .map_err(|e| ApiError::discovery(&e))
}

/// Resolve on save: when the request sets `discovery_url` (and
/// `outbound.resolve_discovery_on_save` is on), endpoints the request leaves
/// unset come from the discovery document, fetched here when needed. Runs after
/// every other check of the request, so a request refused anyway fetches nothing.
pub(super) async fn resolve_on_save(
    vault: &Vault,
    outbound: &Outbound,
    domain: &Domain,
    patch: &mut ConfigPatch,
) -> Result<(), ApiError> {
    if !outbound.resolve_discovery_on_save() {
        return Ok(());
    }
    let Patch::Set(url) = &patch.discovery_url else {
        return Ok(());
    };
    let current = vault.get_config(domain)?;
    if current.is_none() && (patch.client_id.is_none() || patch.client_secret.is_none()) {
        // A create without its required fields: refused by the vault, unfetched.
        return Ok(());
    }
    // A save the secret binding refuses anyway fetches nothing either.
    vault.check_discovery_binding(domain, patch)?;
    let doc = if needs_discovery_fetch(patch, current.as_ref()) {
        let url = url.clone();
        Some(endpoints(&fetch(outbound, &url).await?))
    } else {
        None
    };
    patch.endpoint_source = EndpointSource::Discovery(doc);
    Ok(())
}

/// The answer while a test or refresh of the same domain runs.
const BUSY: &str = "A connection test or discovery refresh of this domain is already running; \
                    try again when it has finished.";

/// The origin of a URL, for audit details.
fn origin_label(url: &str) -> String {
    origin_of(url).unwrap_or_else(|| "an invalid URL".into())
}

/// Re-read the discovery document and bring managed endpoints up to date.
async fn refresh(
    req: HttpRequest,
    vault: web::Data<Vault>,
    outbound: web::Data<Outbound>,
) -> Result<HttpResponse, ApiError> {
    let caller = authenticate(&req, &vault)?;
    let domain = enterprise_domain(&req, &vault, caller)?;
    let Some(config) = vault.get_config(&domain)? else {
        return Err(ApiError::NotFound("Not found."));
    };
    let Some(url) = config.discovery_url else {
        return Err(ApiError::Validation(field_error(
            "discovery_url",
            "No discovery URL is configured: set discovery_url first.",
        )));
    };
    let _job = vault
        .begin_outbound_job(&domain)
        .ok_or(ApiError::Busy(BUSY))?;
    vault
        .record_outbound_start(
            &domain,
            Some(caller.token_id()),
            "config.refresh.start",
            format!(
                "fetching the discovery document from {}",
                origin_label(&url)
            ),
        )
        .await?;
    let meta = fetch(&outbound, &url).await?;
    let report = vault
        .refresh_discovery(&domain, &url, &endpoints(&meta), Some(caller.token_id()))
        .await?;
    Ok(HttpResponse::Ok().json(RefreshResponse {
        discovery_url: url,
        issuer: meta.issuer,
        changed: report
            .changed
            .iter()
            .map(EndpointChangeResponse::from)
            .collect(),
        kept: report.kept.iter().map(EndpointKeptResponse::from).collect(),
        discovered_endpoints: report.config.discovered_endpoints.clone(),
        config: ConfigResponse::from(report.config),
    }))
}

/// Test the stored configuration against the provider, without a user.
async fn test(
    req: HttpRequest,
    vault: web::Data<Vault>,
    outbound: web::Data<Outbound>,
) -> Result<HttpResponse, ApiError> {
    let caller = authenticate(&req, &vault)?;
    let domain = enterprise_domain(&req, &vault, caller)?;
    let Some(config) = vault.get_config(&domain)? else {
        return Err(ApiError::NotFound("Not found."));
    };
    let _job = vault
        .begin_outbound_job(&domain)
        .ok_or(ApiError::Busy(BUSY))?;
    // Audited (durably) before the secret is decrypted, naming where it may go.
    vault
        .record_outbound_start(
            &domain,
            Some(caller.token_id()),
            "config.test.start",
            match &config.secret_origin {
                Some(origin) => format!("connection test; the client secret may be sent to {origin}"),
                None => "connection test; the client secret is bound to no token endpoint and is not sent".into(),
            },
        )
        .await?;
    // Read again after the event, in one read: the config the test runs on and
    // its secret, decrypted for this request only into a zeroizing buffer that
    // the blocking task drops (and wipes) as soon as the test is over. The
    // secret goes only to the origin it is bound to (checked where it is sent).
    let Some(BoundSecret { secret, config }) = vault.reveal_secret(&domain)? else {
        return Err(ApiError::NotFound("Not found."));
    };
    let input = TestInput {
        discovery_url: config.discovery_url,
        authorization_endpoint: config.authorization_endpoint,
        token_endpoint: config.token_endpoint,
        userinfo_endpoint: config.userinfo_endpoint,
        client_id: config.client_id,
        secret_origin: config.secret_origin,
    };
    let outbound = Outbound::clone(&outbound);
    let started = now_micros();
    let steps = web::block(move || {
        let steps = connection_test::test_connection(&outbound, &input, &secret);
        drop(secret);
        steps
    })
    .await
    .map_err(|e| ApiError::internal(&e))?;
    let failed: Vec<&str> = steps
        .iter()
        .filter(|s| s.status == StepStatus::Fail)
        .map(|s| s.name)
        .collect();
    let outcome = if failed.is_empty() {
        "passed".to_owned()
    } else {
        format!("failed: {}", failed.join(", "))
    };
    vault
        .record_connection_test(&domain, Some(caller.token_id()), outcome)
        .await?;
    Ok(HttpResponse::Ok().json(ConnectionTestResponse {
        ok: failed.is_empty(),
        tested_at: format_micros(started),
        steps: steps.iter().map(StepResponse::from).collect(),
    }))
}
