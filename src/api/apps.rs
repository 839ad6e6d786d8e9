//! `/api/v1/admin/apps/`: the sign-in broker's applications (operator tokens
//! only). The client secret is in the creation answer alone.

use serde_json::value::RawValue;

use super::admin::{operator, path_id};
use super::dto::{AppCreatedResponse, AppResponse};
use super::json::{self, Errors, Kind};
use super::{method_not_allowed, read_json_body, ApiError};
use crate::vault::{Vault, REQUIRED};
use actix_web::{web, HttpRequest, HttpResponse};

pub(super) const APPS: &str = "/api/v1/admin/apps/";
pub(super) const APP: &str = "/api/v1/admin/apps/{id}/";

pub(super) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource([APPS, APPS.trim_end_matches('/')])
            .route(web::get().to(list_apps))
            .route(web::post().to(create_app))
            .default_service(web::to(method_not_allowed("GET, POST"))),
    )
    .service(
        web::resource([APP, APP.trim_end_matches('/')])
            .route(web::delete().to(remove_app))
            .default_service(web::to(method_not_allowed("DELETE"))),
    );
}

/// `{"name": "...", "redirect_uris": ["...", ...]}`; other fields are ignored
/// (so a listed application can be posted back). The types are checked here,
/// the values by the vault.
fn parse_app(body: &[u8]) -> Result<(String, Vec<String>), ApiError> {
    let obj = json::parse_object(body)?;
    let mut errors = Errors::default();
    let name = match obj.get("name") {
        None => {
            errors.add("name", REQUIRED);
            None
        }
        Some(raw) => json::string(raw).map_err(|m| errors.add("name", m)).ok(),
    };
    let uris = match obj.get("redirect_uris") {
        None => {
            errors.add("redirect_uris", REQUIRED);
            None
        }
        Some(raw) => string_list(raw)
            .map_err(|m| {
                for m in m {
                    errors.add("redirect_uris", m);
                }
            })
            .ok(),
    };
    match errors.finish((name, uris))? {
        (Some(name), Some(uris)) => Ok((name, uris)),
        _ => Err(ApiError::BadRequest("Invalid application.".into())),
    }
}

/// A JSON array of strings, or DRF's messages for what it is instead.
fn string_list(raw: &RawValue) -> Result<Vec<String>, Vec<String>> {
    match json::kind(raw) {
        Kind::Array => {}
        Kind::Null => return Err(vec![json::MAY_NOT_BE_NULL.into()]),
        _ => {
            return Err(vec![
                "Expected a list of items but got something else.".into()
            ])
        }
    }
    let items: Vec<&RawValue> = serde_json::from_str(raw.get())
        .map_err(|_| vec!["Expected a list of items but got something else.".to_owned()])?;
    let mut out = Vec::with_capacity(items.len());
    let mut errors = Vec::new();
    for (i, item) in items.iter().enumerate() {
        match json::string(item) {
            Ok(s) => out.push(s),
            Err(m) => errors.push(format!("Item {i}: {m}")),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

async fn list_apps(req: HttpRequest, vault: web::Data<Vault>) -> Result<HttpResponse, ApiError> {
    operator(&req, &vault)?;
    let list: Vec<AppResponse> = vault
        .list_apps()?
        .into_iter()
        .map(AppResponse::from)
        .collect();
    Ok(HttpResponse::Ok().json(list))
}

async fn create_app(
    req: HttpRequest,
    payload: web::Payload,
    vault: web::Data<Vault>,
) -> Result<HttpResponse, ApiError> {
    let caller = operator(&req, &vault)?;
    let body = read_json_body(&req, payload).await?;
    let (name, uris) = parse_app(&body)?;
    let (app, secret) = vault
        .create_app(&name, &uris, Some(caller.token_id()))
        .await?;
    Ok(HttpResponse::Created().json(AppCreatedResponse::new(app, secret.expose())))
}

async fn remove_app(
    req: HttpRequest,
    id: web::Path<String>,
    vault: web::Data<Vault>,
) -> Result<HttpResponse, ApiError> {
    let caller = operator(&req, &vault)?;
    let id = path_id(&id)?;
    if vault.remove_app(id, Some(caller.token_id())).await? {
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(ApiError::NotFound("Not found."))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_errors(body: &str) -> crate::vault::FieldErrors {
        match parse_app(body.as_bytes()) {
            Err(ApiError::Validation(f)) => f,
            other => panic!("{body}: {:?}", other.map(|_| "parsed")),
        }
    }

    #[test]
    fn types_are_checked_field_by_field() {
        let (name, uris) =
            parse_app(br#"{"name": "P", "redirect_uris": ["https://a.example/cb"], "id": 3}"#)
                .unwrap();
        assert_eq!(
            (name.as_str(), uris.as_slice()),
            ("P", &["https://a.example/cb".to_owned()][..])
        );
        let f = field_errors("{}");
        assert_eq!(f["name"], [REQUIRED]);
        assert_eq!(f["redirect_uris"], [REQUIRED]);
        let f = field_errors(r#"{"name": 5, "redirect_uris": "https://a.example/cb"}"#);
        assert_eq!(f["name"], [json::NOT_A_STRING]);
        assert!(
            f["redirect_uris"][0].starts_with("Expected a list"),
            "{f:?}"
        );
        let f = field_errors(r#"{"name": null, "redirect_uris": ["https://a.example/", 1, null]}"#);
        assert_eq!(f["name"], [json::MAY_NOT_BE_NULL]);
        assert_eq!(
            f["redirect_uris"],
            [
                format!("Item 1: {}", json::NOT_A_STRING),
                format!("Item 2: {}", json::MAY_NOT_BE_NULL)
            ]
        );
        let f = field_errors("[]");
        assert!(f.contains_key("non_field_errors"), "{f:?}");
    }
}
