//! The sign-in broker over HTTP (see `crate::broker`):
//! - `GET /sso/authorize`, `GET /sso/callback`: browser routes, answering
//!   redirects, or HTML pages for errors that have nowhere safe to go;
//! - `POST /sso/token`: the application's code redemption (form-encoded,
//!   RFC 6749 §5.2 errors);
//! - `GET /api/v1/sso/`: the callback URL to register at an IdP (any token);
//! - `POST /api/v1/enterprises/oidc/sign-in-test/`: the admin page's "Try
//!   sign-in" (as the config resource: a domain token, or an operator token
//!   with `X-Enterprise-Domain`).
//!
//! Every answer of the browser routes and the token endpoint is `no-store`
//! with `Referrer-Policy: no-referrer` (URLs here carry codes and states).

use actix_web::cookie::{time::Duration as CookieDuration, Cookie, SameSite};
use actix_web::http::header::{self, HeaderValue};
use actix_web::{web, HttpRequest, HttpResponse};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::Serialize;
use zeroize::Zeroizing;

use super::dto::{SignInTestResponse, SsoInfoResponse};
use super::{
    authenticate, content_type, enterprise_domain, is_json_media_type, json, method_not_allowed,
    read_body, ApiError,
};
use crate::broker::{
    single_params, Broker, ClientCredentials, Finished, NotStarted, TestNotStarted, TestResult,
    TokenError,
};
use crate::limits::Limits;
use crate::outbound::Outbound;
use crate::vault::Vault;

pub(super) const AUTHORIZE: &str = "/sso/authorize";
pub(super) const CALLBACK: &str = "/sso/callback";
pub(super) const TOKEN: &str = "/sso/token";
pub(super) const SSO_INFO: &str = "/api/v1/sso/";
pub(super) const SIGN_IN_TEST: &str = "/api/v1/enterprises/oidc/sign-in-test/";

pub(super) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource(AUTHORIZE)
            .route(web::get().to(authorize))
            .default_service(web::to(method_not_allowed("GET"))),
    )
    .service(
        web::resource(CALLBACK)
            .route(web::get().to(callback))
            .default_service(web::to(method_not_allowed("GET"))),
    )
    .service(
        web::resource(TOKEN)
            .route(web::post().to(token))
            .default_service(web::to(method_not_allowed("POST"))),
    )
    .service(
        web::resource([SSO_INFO, SSO_INFO.trim_end_matches('/')])
            .route(web::get().to(info))
            .default_service(web::to(method_not_allowed("GET"))),
    )
    .service(
        web::resource([SIGN_IN_TEST, SIGN_IN_TEST.trim_end_matches('/')])
            .route(web::post().to(sign_in_test))
            .default_service(web::to(method_not_allowed("POST"))),
    );
}

/// Headers of every broker answer: nothing cached, no URL leaked onwards.
fn private(mut res: HttpResponse) -> HttpResponse {
    let h = res.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    res
}

/// Policy of the broker's own pages: no script, no style, no frame, no form.
const PAGE_POLICY: &str = "default-src 'none'; base-uri 'none'; form-action 'none'; \
                           frame-ancestors 'none'";

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn html(status: u16, body: String) -> HttpResponse {
    let status = actix_web::http::StatusCode::from_u16(status)
        .unwrap_or(actix_web::http::StatusCode::BAD_REQUEST);
    let mut res = HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .body(body);
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(PAGE_POLICY),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    private(res)
}

/// An error page: for what has no application to go back to safely.
fn error_page(status: u16, message: &str) -> HttpResponse {
    html(
        status,
        format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
             <title>Sign-in failed</title></head><body><h1>Sign-in failed</h1>\
             <p id=\"reason\">{}</p></body></html>",
            escape(message)
        ),
    )
}

fn redirect(location: &str) -> HttpResponse {
    private(
        HttpResponse::Found()
            .insert_header((header::LOCATION, location))
            .finish(),
    )
}

fn binding_cookie(broker: &Broker, value: &str) -> Cookie<'static> {
    let ttl = broker.settings().sso.transaction_ttl_secs;
    Cookie::build(broker.cookie_name(), value.to_owned())
        .http_only(true)
        .same_site(SameSite::Lax)
        .secure(broker.secure_cookie())
        .path("/")
        .max_age(CookieDuration::seconds(i64::try_from(ttl).unwrap_or(600)))
        .finish()
}

fn cookie_value(req: &HttpRequest, broker: &Broker) -> Option<String> {
    req.cookie(broker.cookie_name())
        .map(|c| c.value().to_owned())
}

async fn authorize(
    req: HttpRequest,
    vault: web::Data<Vault>,
    broker: web::Data<Broker>,
) -> HttpResponse {
    let params = match single_params(req.query_string()) {
        Ok(p) => p,
        Err(name) => {
            return error_page(
                400,
                &format!("The parameter {name} is given more than once."),
            )
        }
    };
    let ip = req.peer_addr().map(|a| a.ip());
    let cookie = cookie_value(&req, &broker);
    match broker.authorize(&vault, &params, cookie.as_deref(), ip) {
        Ok(started) => {
            let mut res = redirect(&started.location);
            if let Err(e) = res.add_cookie(&binding_cookie(&broker, &started.binding)) {
                tracing::error!(error = %e, "sign-in: the cookie could not be set");
                return error_page(500, "The sign-in could not start; try again later.");
            }
            res
        }
        Err(NotStarted::Page { status, message }) => error_page(status, &message),
        Err(refused) => match refused.location() {
            Some(location) => redirect(&location),
            None => error_page(400, "The redirect_uri is not a URL."),
        },
    }
}

async fn callback(
    req: HttpRequest,
    vault: web::Data<Vault>,
    outbound: web::Data<Outbound>,
    broker: web::Data<Broker>,
) -> HttpResponse {
    let params = match single_params(req.query_string()) {
        Ok(p) => p,
        Err(name) => {
            return error_page(
                400,
                &format!("The parameter {name} is given more than once."),
            )
        }
    };
    let ip = req.peer_addr().map(|a| a.ip());
    let cookie = cookie_value(&req, &broker);
    let finished = broker
        .clone()
        .into_inner()
        .callback(
            vault.into_inner(),
            outbound.get_ref().clone(),
            params,
            cookie,
            ip,
        )
        .await;
    match finished {
        Finished::Redirect(location) => redirect(&location),
        Finished::Page { status, message } => error_page(status, &message),
        Finished::Test(result) => test_page(&result),
    }
}

/// The "Try sign-in" result: each check, and the profile on success.
fn test_page(r: &TestResult) -> HttpResponse {
    let verdict = if r.succeeded { "succeeded" } else { "failed" };
    let mut rows = String::new();
    for c in &r.checks {
        rows.push_str(&format!(
            "<tr data-check=\"{}\" data-status=\"{}\"><td>{}</td><td>{}</td><td>{}</td></tr>",
            c.name,
            c.status.as_str(),
            c.name,
            c.status.as_str(),
            escape(&c.detail)
        ));
    }
    let profile = r.profile.as_ref().map_or(String::new(), |p| {
        format!(
            "<h2>Profile an application would receive</h2><pre id=\"profile\">{}</pre>",
            escape(p)
        )
    });
    html(
        200,
        format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
             <title>Sign-in test: {verdict}</title></head><body>\
             <h1>Sign-in test: {verdict}</h1><p>Enterprise domain: {}</p>\
             <table id=\"checks\"><thead><tr><th>Check</th><th>Result</th><th>Detail</th></tr>\
             </thead><tbody>{rows}</tbody></table>{profile}</body></html>",
            escape(&r.domain)
        ),
    )
}

#[derive(Serialize)]
struct OAuthError<'a> {
    error: &'a str,
    error_description: &'a str,
}

fn token_error(e: &TokenError) -> HttpResponse {
    let status = actix_web::http::StatusCode::from_u16(e.status)
        .unwrap_or(actix_web::http::StatusCode::BAD_REQUEST);
    let mut res = HttpResponse::build(status).json(OAuthError {
        error: e.error,
        error_description: &e.description,
    });
    if e.status == 401 {
        res.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"oidcvault\""),
        );
    }
    private(res)
}

fn invalid(error: &'static str, description: &str) -> HttpResponse {
    token_error(&TokenError {
        status: if error == "invalid_client" { 401 } else { 400 },
        error,
        description: description.to_owned(),
    })
}

/// RFC 6749 §2.3.1: HTTP Basic with the form-urlencoded client id and secret.
fn basic_credentials(req: &HttpRequest) -> Result<Option<ClientCredentials>, &'static str> {
    let Some(value) = req.headers().get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value
        .to_str()
        .map_err(|_| "malformed Authorization header")?;
    let Some((scheme, encoded)) = value.trim().split_once(' ') else {
        return Err("malformed Authorization header");
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err("use HTTP Basic (or client_id and client_secret in the body)");
    }
    let decoded = Zeroizing::new(
        STANDARD
            .decode(encoded.trim())
            .map_err(|_| "malformed HTTP Basic credentials")?,
    );
    let text = std::str::from_utf8(&decoded).map_err(|_| "malformed HTTP Basic credentials")?;
    let Some((id, secret)) = text.split_once(':') else {
        return Err("malformed HTTP Basic credentials");
    };
    let decode = |s: &str| -> String {
        url::form_urlencoded::parse(format!("x={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    };
    Ok(Some(ClientCredentials {
        client_id: decode(id),
        client_secret: Zeroizing::new(decode(secret)),
    }))
}

async fn token(
    req: HttpRequest,
    payload: web::Payload,
    vault: web::Data<Vault>,
    broker: web::Data<Broker>,
) -> HttpResponse {
    let is_form = content_type(&req).is_some_and(|ct| {
        ct.split(';').next().is_some_and(|e| {
            e.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
    });
    if !is_form {
        return invalid(
            "invalid_request",
            "the body must be application/x-www-form-urlencoded",
        );
    }
    let body = match read_body(&req, payload).await {
        Ok(b) => b,
        Err(ApiError::PayloadTooLarge) => {
            return invalid("invalid_request", "the body is too large")
        }
        Err(_) => return invalid("invalid_request", "the body could not be read"),
    };
    let form = match std::str::from_utf8(&body).map(single_params) {
        Ok(Ok(f)) => f,
        Ok(Err(name)) => {
            return invalid(
                "invalid_request",
                &format!("the parameter {name} is given more than once"),
            )
        }
        Err(_) => return invalid("invalid_request", "the body is not UTF-8"),
    };
    drop(body);
    let credentials = match basic_credentials(&req) {
        Err(why) => return invalid("invalid_client", why),
        Ok(Some(_)) if form.contains_key("client_secret") => {
            return invalid(
                "invalid_request",
                "use one client authentication method: HTTP Basic or the body, not both",
            )
        }
        Ok(Some(c)) => c,
        Ok(None) => match (form.get("client_id"), form.get("client_secret")) {
            (Some(id), Some(secret)) => ClientCredentials {
                client_id: id.clone(),
                client_secret: Zeroizing::new(secret.clone()),
            },
            _ => return invalid("invalid_client", "client authentication is required"),
        },
    };
    if form
        .get("client_id")
        .is_some_and(|id| *id != credentials.client_id)
    {
        return invalid(
            "invalid_request",
            "client_id does not match the credentials",
        );
    }
    // Failed client authentications count against the address, like bad tokens.
    let limits = req.app_data::<web::Data<Limits>>();
    let attempt = match (limits, req.peer_addr()) {
        (Some(l), Some(a)) => match l.auth.begin(a.ip()) {
            Ok(attempt) => Some(attempt),
            Err(wait) => {
                let mut res = invalid("invalid_client", "too many failed authentications");
                res.headers_mut().insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(wait.as_secs().saturating_add(1)),
                );
                return res;
            }
        },
        _ => None,
    };
    let app = match broker.client(&vault, &credentials) {
        Ok(Some(app)) => {
            if let Some(a) = attempt {
                a.release();
            }
            app
        }
        Ok(None) => return invalid("invalid_client", "unknown client or wrong secret"),
        Err(e) => {
            if let Some(a) = attempt {
                a.release();
            }
            return token_error(&e);
        }
    };
    drop(credentials);
    match broker.redeem(&vault, &app, &form).await {
        Ok(profile) => private(
            HttpResponse::Ok()
                .content_type("application/json")
                .body(profile.as_bytes().to_vec()),
        ),
        Err(e) => token_error(&e),
    }
}

async fn info(
    req: HttpRequest,
    vault: web::Data<Vault>,
    broker: web::Data<Broker>,
) -> Result<HttpResponse, ApiError> {
    authenticate(&req, &vault)?;
    Ok(HttpResponse::Ok().json(SsoInfoResponse {
        public_url: broker.settings().public_url.clone(),
        callback_url: broker.callback_url(),
    }))
}

async fn sign_in_test(
    req: HttpRequest,
    payload: web::Payload,
    vault: web::Data<Vault>,
    broker: web::Data<Broker>,
) -> Result<HttpResponse, ApiError> {
    let caller = authenticate(&req, &vault)?;
    // Checks in the API's order: 401, then 413/415, then 404, then 400.
    let body = read_body(&req, payload).await?;
    let empty = body.iter().all(u8::is_ascii_whitespace);
    if !empty && !content_type(&req).is_some_and(|ct| is_json_media_type(&ct)) {
        return Err(ApiError::UnsupportedMediaType(
            content_type(&req).unwrap_or_default(),
        ));
    }
    let domain = enterprise_domain(&req, &vault, caller)?;
    // A JSON object (or nothing), as every JSON body of the API: `[]` or `5`
    // is a 400, not a request without a hint.
    let body = json::parse_object(&body)?;
    let login_hint = match body.get("login_hint") {
        None => None,
        Some(raw) if json::kind(raw) == json::Kind::Null => None,
        Some(raw) => Some(json::string(raw).map_err(|message| {
            ApiError::Validation(crate::vault::field_error("login_hint", message))
        })?),
    };
    let cookie = cookie_value(&req, &broker);
    let started = broker
        .start_test(
            &vault,
            &domain,
            caller.token_id(),
            login_hint.as_deref(),
            cookie.as_deref(),
        )
        .map_err(|e| match e {
            TestNotStarted::Refused(why) => ApiError::BadRequest(why),
            TestNotStarted::Busy => {
                ApiError::Busy("Too many sign-ins are under way; try again in a minute.")
            }
            TestNotStarted::Internal => ApiError::internal(&"the sign-in test could not start"),
        })?;
    let mut res = HttpResponse::Ok().json(SignInTestResponse {
        authorization_url: started.location.clone(),
    });
    res.add_cookie(&binding_cookie(&broker, &started.binding))
        .map_err(|e| ApiError::internal(&e))?;
    Ok(private(res))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_escape_what_they_show() {
        assert_eq!(
            escape("<script>\"x\"&'y'</script>"),
            "&lt;script&gt;&quot;x&quot;&amp;&#39;y&#39;&lt;/script&gt;"
        );
    }
}
