//! The admin page: `GET /` and its assets under `/ui/`.
//!
//! Plain files from `ui/` at the repository root, embedded in the binary at build
//! time (no build step, nothing fetched from another origin). The page talks to
//! the same JSON API as every other client, with the token the user pastes.
//!
//! Every answer carries a strict Content-Security-Policy: scripts, styles,
//! images and requests only from this origin, no inline script or style, no
//! `eval`, no framing, no form posts, and Trusted Types required for script
//! sinks, so an `innerHTML = string` in the page throws instead of parsing data
//! as HTML.

use actix_web::http::header::{self, HeaderValue};
use actix_web::{web, HttpResponse};

use super::method_not_allowed;

pub const INDEX: &str = "/";
pub const APP_JS: &str = "/ui/app.js";
pub const SSO_JS: &str = "/ui/sso.js";
pub const OPS_JS: &str = "/ui/ops.js";
pub const APP_CSS: &str = "/ui/app.css";
pub const ICON: &str = "/ui/icon.svg";

const INDEX_HTML: &str = include_str!("../../ui/index.html");
const APP_JS_TEXT: &str = include_str!("../../ui/app.js");
const SSO_JS_TEXT: &str = include_str!("../../ui/sso.js");
const OPS_JS_TEXT: &str = include_str!("../../ui/ops.js");
const APP_CSS_TEXT: &str = include_str!("../../ui/app.css");
const ICON_SVG: &str = include_str!("../../ui/icon.svg");

/// The policy on every page and asset.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; connect-src 'self'; img-src 'self'; form-action 'none'; \
     base-uri 'none'; frame-ancestors 'none'; require-trusted-types-for 'script'; \
     trusted-types 'none'";

pub fn configure(cfg: &mut web::ServiceConfig) {
    let asset = |path: &'static str, content_type: &'static str, body: &'static str| {
        web::resource(path)
            .route(web::get().to(move || async move { page(content_type, body) }))
            .default_service(web::to(method_not_allowed("GET")))
    };
    cfg.service(asset(INDEX, "text/html; charset=utf-8", INDEX_HTML))
        .service(asset(APP_JS, "text/javascript; charset=utf-8", APP_JS_TEXT))
        .service(asset(SSO_JS, "text/javascript; charset=utf-8", SSO_JS_TEXT))
        .service(asset(OPS_JS, "text/javascript; charset=utf-8", OPS_JS_TEXT))
        .service(asset(APP_CSS, "text/css; charset=utf-8", APP_CSS_TEXT))
        .service(asset(ICON, "image/svg+xml", ICON_SVG));
}

fn page(content_type: &'static str, body: &'static str) -> HttpResponse {
    let mut res = HttpResponse::Ok().body(body);
    let headers = res.headers_mut();
    for (name, value) in [
        (header::CONTENT_TYPE, content_type),
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CROSS_ORIGIN_OPENER_POLICY, "same-origin"),
        (header::CROSS_ORIGIN_RESOURCE_POLICY, "same-origin"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    headers.insert(
        header::HeaderName::from_static("permissions-policy"),
        HeaderValue::from_static("camera=(), microphone=(), geolocation=(), payment=()"),
    );
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_has_every_directive_once() {
        let directives: Vec<&str> = CONTENT_SECURITY_POLICY
            .split(';')
            .map(|d| d.split_whitespace().next().unwrap_or_default())
            .collect();
        for name in [
            "default-src",
            "script-src",
            "style-src",
            "connect-src",
            "img-src",
            "form-action",
            "base-uri",
            "frame-ancestors",
        ] {
            assert_eq!(
                directives.iter().filter(|d| **d == name).count(),
                1,
                "{name} in {CONTENT_SECURITY_POLICY}"
            );
        }
        assert!(!CONTENT_SECURITY_POLICY.contains("unsafe"));
    }
}
