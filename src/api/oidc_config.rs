//! `/api/v1/enterprises/oidc/config/`: the seed's resource (GET, POST, DELETE).

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::value::RawValue;

use super::dto::ConfigResponse;
use super::json::{self, Errors, Kind, MAY_NOT_BE_BLANK};
use super::{authenticate, enterprise_domain, method_not_allowed, read_json_body, ApiError};
use crate::outbound::Outbound;
use crate::vault::{ConfigPatch, Patch, Vault};

pub(super) const PATH: &str = "/api/v1/enterprises/oidc/config/";
const CLIENT_ID_MAX_CHARS: usize = 255;
const CLIENT_SECRET_MAX_BYTES: usize = 4096;
const URL_MAX_CHARS: usize = 2048;
pub(super) const URL_FIELDS: [&str; 4] = [
    "discovery_url",
    "authorization_endpoint",
    "token_endpoint",
    "userinfo_endpoint",
];

pub(super) fn configure(cfg: &mut web::ServiceConfig) {
    // One resource per spelling (with and without the trailing slash): a resource
    // given a list of paths is matched with a regex set, which took a fifth of
    // the instructions of a request; a single static path is a string compare.
    for path in [PATH, PATH.trim_end_matches('/')] {
        cfg.service(
            web::resource(path)
                .route(web::get().to(get_config))
                .route(web::post().to(post_config))
                .route(web::delete().to(delete_config))
                .default_service(web::to(method_not_allowed("GET, POST, DELETE"))),
        );
    }
}

async fn get_config(req: HttpRequest, vault: web::Data<Vault>) -> Result<HttpResponse, ApiError> {
    let caller = authenticate(&req, &vault)?;
    let domain = enterprise_domain(&req, &vault, caller)?;
    match vault.get_config(&domain)? {
        Some(c) => Ok(HttpResponse::Ok().json(ConfigResponse::from(c))),
        None => Err(ApiError::NotFound("Not found.")),
    }
}

async fn post_config(
    req: HttpRequest,
    payload: web::Payload,
    vault: web::Data<Vault>,
    outbound: web::Data<Outbound>,
) -> Result<HttpResponse, ApiError> {
    let caller = authenticate(&req, &vault)?;
    let body = read_json_body(&req, payload).await?;
    let domain = enterprise_domain(&req, &vault, caller)?;
    let mut patch = parse_patch_with(&body, outbound.policy())?;
    drop(body); // wiped
    super::provider::resolve_on_save(&vault, &outbound, &domain, &mut patch).await?;
    let (config, _created) = vault
        .upsert_config(&domain, patch, Some(caller.token_id()))
        .await?;
    Ok(HttpResponse::Ok().json(ConfigResponse::from(config)))
}

async fn delete_config(
    req: HttpRequest,
    vault: web::Data<Vault>,
) -> Result<HttpResponse, ApiError> {
    let caller = authenticate(&req, &vault)?;
    let domain = enterprise_domain(&req, &vault, caller)?;
    if vault
        .delete_config(&domain, Some(caller.token_id()))
        .await?
    {
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(ApiError::NotFound("Not found."))
    }
}

/// Validate a create-or-update body. Read-only and unknown fields are ignored, so
/// a GET body can be posted back. Every field error is reported at once.
#[cfg(test)]
fn parse_patch(body: &[u8]) -> Result<ConfigPatch, ApiError> {
    parse_patch_with(body, &crate::outbound::Policy::default())
}

/// As the contract says, with one operator extension: plain `http` URLs are also
/// accepted for the hosts in `outbound.allow_http_hosts` (a lab identity provider).
fn parse_patch_with(
    body: &[u8],
    outbound: &crate::outbound::Policy,
) -> Result<ConfigPatch, ApiError> {
    let obj = json::parse_object(body)?;
    let mut errors = Errors::default();
    let mut patch = ConfigPatch::default();

    if let Some(raw) = obj.get("client_id") {
        match json::string(raw) {
            Ok(v) => {
                let v = v.trim();
                if v.is_empty() {
                    errors.add("client_id", MAY_NOT_BE_BLANK);
                } else if v.chars().count() > CLIENT_ID_MAX_CHARS {
                    errors.add(
                        "client_id",
                        format!(
                            "Ensure this field has no more than {CLIENT_ID_MAX_CHARS} characters."
                        ),
                    );
                } else {
                    patch.client_id = Some(v.to_owned());
                }
            }
            Err(m) => errors.add("client_id", m),
        }
    }
    if let Some(raw) = obj.get("client_secret") {
        match json::secret(raw) {
            Ok(s) => {
                if s.expose().trim().is_empty() {
                    errors.add("client_secret", MAY_NOT_BE_BLANK);
                } else if s.expose().len() > CLIENT_SECRET_MAX_BYTES {
                    errors.add(
                        "client_secret",
                        format!(
                            "Ensure this field has no more than {CLIENT_SECRET_MAX_BYTES} bytes."
                        ),
                    );
                } else {
                    patch.client_secret = Some(s);
                }
            }
            Err(m) => errors.add("client_secret", m),
        }
    }
    for field in URL_FIELDS {
        let value = match obj.get(field) {
            None => Patch::Keep,
            Some(raw) => match url_field(raw, outbound) {
                Ok(v) => v,
                Err(m) => {
                    errors.add(field, m);
                    Patch::Keep
                }
            },
        };
        match field {
            "discovery_url" => patch.discovery_url = value,
            "authorization_endpoint" => patch.authorization_endpoint = value,
            "token_endpoint" => patch.token_endpoint = value,
            _ => patch.userinfo_endpoint = value,
        }
    }
    errors.finish(patch)
}

/// `null` clears; a string must be an absolute `https` URL (`http` for loopback
/// hosts only), without credentials, of at most 2048 characters.
fn url_field(raw: &RawValue, outbound: &crate::outbound::Policy) -> Result<Patch<String>, String> {
    if json::kind(raw) == Kind::Null {
        return Ok(Patch::Clear);
    }
    let value = json::string(raw).map_err(str::to_owned)?;
    if value.trim().is_empty() {
        return Err(MAY_NOT_BE_BLANK.into());
    }
    if value.chars().count() > URL_MAX_CHARS {
        return Err(format!(
            "Ensure this field has no more than {URL_MAX_CHARS} characters."
        ));
    }
    if let Err(m) = check_url(&value) {
        let allowlisted_http = url::Url::parse(&value).is_ok_and(|u| {
            u.scheme() == "http" && outbound.http_allowed(&u) && outbound.check_url(&value).is_ok()
        });
        if !allowlisted_http {
            return Err(m);
        }
    }
    Ok(Patch::Set(value))
}

pub(super) fn check_url(value: &str) -> Result<(), String> {
    const INVALID: &str = "Enter a valid URL.";
    // No white space or control character anywhere (the URL parser would
    // silently percent-encode or drop some of them).
    if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(INVALID.into());
    }
    let url = url::Url::parse(value).map_err(|_| INVALID.to_owned())?;
    let host = url.host().ok_or_else(|| INVALID.to_owned())?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err("URLs must not contain credentials.".into());
    }
    let loopback = match host {
        url::Host::Domain(d) => d.eq_ignore_ascii_case("localhost"),
        url::Host::Ipv4(ip) => ip.is_loopback(),
        url::Host::Ipv6(ip) => ip.is_loopback(),
    };
    match url.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        _ => Err("Enter an https URL (http is accepted for loopback hosts only).".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        for ok in [
            "https://idp.example.com/.well-known/openid-configuration",
            "https://idp.example.com:8443/oauth2/token?x=1",
            "http://localhost:8080/auth",
            "http://127.0.0.1/auth",
            "http://[::1]:9000/auth",
        ] {
            assert!(check_url(ok).is_ok(), "{ok}");
        }
        for bad in [
            "idp.example.com",
            "/relative",
            "ftp://idp.example.com/",
            "http://idp.example.com/",
            "https://user:pw@idp.example.com/",
            "https://",
            " https://idp.example.com/",
            "https://idp.example.com/a b",
            "https://idp.example.com/\u{7}",
            "https://idp.example.com/\u{a0}x",
            "javascript:alert(1)",
        ] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn every_field_error_is_reported_at_once() {
        let body = br#"{"client_id": 5, "client_secret": "", "discovery_url": "", "token_endpoint": "http://x.example/"}"#;
        let Err(ApiError::Validation(f)) = parse_patch(body) else {
            panic!("expected validation errors")
        };
        assert_eq!(
            f.keys().cloned().collect::<Vec<_>>(),
            [
                "client_id",
                "client_secret",
                "discovery_url",
                "token_endpoint"
            ]
        );
    }

    #[test]
    fn plain_http_only_for_loopback_or_allowlisted_hosts() {
        let body = br#"{"discovery_url": "http://lab-idp.corp/.well-known/openid-configuration"}"#;
        assert!(parse_patch(body).is_err());
        let lab = crate::outbound::Policy::new(&["lab-idp.corp".into()], &[]).unwrap();
        assert!(parse_patch_with(body, &lab).is_ok());
        let other = br#"{"discovery_url": "http://other.corp/.well-known/openid-configuration"}"#;
        assert!(parse_patch_with(other, &lab).is_err());
        let creds = br#"{"token_endpoint": "http://u:p@lab-idp.corp/token"}"#;
        assert!(parse_patch_with(creds, &lab).is_err());
    }

    #[test]
    fn read_only_and_unknown_fields_are_ignored() {
        let body = br#"{"id": 9, "enterprise_domain": 3, "client_secret_masked": "x", "created_at": "y", "updated_at": "z", "other": [1]}"#;
        let p = parse_patch(body).unwrap();
        assert!(p.client_id.is_none() && p.client_secret.is_none());
        assert_eq!(p.discovery_url, Patch::Keep);
    }
}
