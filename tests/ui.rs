//! The admin page through the real `App`: served at `/` with its security
//! headers, every asset it references loads, and nothing in it points to another
//! origin or can run inline code. (The page's behaviour in a real browser is
//! tested by `browser`, in headless Chromium.)

use actix_web::http::{Method, StatusCode};
use actix_web::test::TestRequest;

use crate::app;
use crate::harness::in_process::*;

const INDEX_HTML: &str = include_str!("../ui/index.html");
const APP_JS: &str = include_str!("../ui/app.js");
const SSO_JS: &str = include_str!("../ui/sso.js");
const OPS_JS: &str = include_str!("../ui/ops.js");
const APP_CSS: &str = include_str!("../ui/app.css");
const ICON_SVG: &str = include_str!("../ui/icon.svg");

/// Every file of the page, by name (the test below checks they are all served).
const FILES: [(&str, &str); 6] = [
    ("ui/index.html", INDEX_HTML),
    ("ui/app.js", APP_JS),
    ("ui/sso.js", SSO_JS),
    ("ui/ops.js", OPS_JS),
    ("ui/app.css", APP_CSS),
    ("ui/icon.svg", ICON_SVG),
];

const DIRECTIVES: [&str; 8] = [
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self'",
    "connect-src 'self'",
    "img-src 'self'",
    "form-action 'none'",
    "base-uri 'none'",
    "frame-ancestors 'none'",
];

fn assert_security_headers(r: &Reply, what: &str) {
    let csp = r
        .header("content-security-policy")
        .unwrap_or_else(|| panic!("{what}: no Content-Security-Policy\n{r:?}"));
    let directives: Vec<String> = csp.split(';').map(|d| d.trim().to_owned()).collect();
    for d in DIRECTIVES {
        assert!(
            directives.iter().any(|x| x == d),
            "{what}: CSP lacks `{d}`: {csp}"
        );
    }
    assert!(
        !csp.contains("unsafe-") && !csp.contains('*') && !csp.contains("data:"),
        "{what}: CSP allows too much: {csp}"
    );
    assert!(
        directives
            .iter()
            .any(|x| x == "require-trusted-types-for 'script'"),
        "{what}: CSP does not require Trusted Types: {csp}"
    );
    assert_eq!(r.header("x-frame-options"), Some("DENY"), "{what}");
    assert_eq!(r.header("referrer-policy"), Some("no-referrer"), "{what}");
    assert_eq!(
        r.header("x-content-type-options"),
        Some("nosniff"),
        "{what}"
    );
}

/// The values of `attr="..."` in `html`.
fn attribute_values(html: &str, attr: &str) -> Vec<String> {
    let needle = format!(" {attr}=\"");
    let mut out = Vec::new();
    let mut rest = html;
    while let Some(at) = rest.find(&needle) {
        let value = &rest[at + needle.len()..];
        let end = value.find('"').expect("closing quote");
        out.push(value[..end].to_owned());
        rest = &value[end..];
    }
    out
}

#[actix_web::test]
async fn the_page_is_served_with_a_strict_policy() {
    let env = Env::new();
    let app = app!(env);
    let r = call(&app, TestRequest::get().uri("/")).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    assert_security_headers(&r, "GET /");
    assert_eq!(r.raw, INDEX_HTML, "GET / serves ui/index.html as is");
    assert!(r.raw.contains("<title>oidcvault admin</title>"));
}

#[actix_web::test]
async fn every_asset_the_page_references_loads() {
    let env = Env::new();
    let app = app!(env);
    let mut referenced: Vec<String> = attribute_values(INDEX_HTML, "src");
    referenced.extend(
        attribute_values(INDEX_HTML, "href")
            .into_iter()
            .filter(|h| !h.starts_with('#')), // in-page routes
    );
    referenced.sort();
    referenced.dedup();
    assert_eq!(
        referenced,
        [
            "/ui/app.css",
            "/ui/app.js",
            "/ui/icon.svg",
            "/ui/ops.js",
            "/ui/sso.js"
        ],
        "the page's src/href attributes"
    );
    let expected = [
        ("/ui/app.js", "text/javascript; charset=utf-8", APP_JS),
        ("/ui/sso.js", "text/javascript; charset=utf-8", SSO_JS),
        ("/ui/ops.js", "text/javascript; charset=utf-8", OPS_JS),
        ("/ui/app.css", "text/css; charset=utf-8", APP_CSS),
        ("/ui/icon.svg", "image/svg+xml", ICON_SVG),
    ];
    for (path, content_type, text) in expected {
        let r = call(&app, TestRequest::get().uri(path)).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {r:?}");
        assert_eq!(r.header("content-type"), Some(content_type), "{path}");
        assert_eq!(r.raw, text, "{path} serves its file as is");
        assert_security_headers(&r, path);
    }
    // Nothing else under /ui/, and no directory listing.
    for path in [
        "/ui/",
        "/ui/index.html",
        "/ui/../Cargo.toml",
        "/ui/app.js.map",
    ] {
        let r = call(&app, TestRequest::get().uri(path)).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}: {r:?}");
        assert!(r.body["detail"].is_string(), "{path}: JSON 404 {r:?}");
    }
}

#[actix_web::test]
async fn other_methods_answer_405_with_allow() {
    let env = Env::new();
    let app = app!(env);
    for path in [
        "/",
        "/ui/app.js",
        "/ui/sso.js",
        "/ui/ops.js",
        "/ui/app.css",
        "/ui/icon.svg",
    ] {
        for method in ["POST", "PUT", "PATCH", "DELETE", "OPTIONS"] {
            let req = TestRequest::default()
                .method(Method::from_bytes(method.as_bytes()).unwrap())
                .uri(path);
            let r = call(&app, req).await;
            assert_eq!(
                r.status,
                StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path}: {r:?}"
            );
            assert_eq!(r.header("allow"), Some("GET"), "{method} {path}");
            assert!(r.body["detail"].is_string(), "{method} {path}: {r:?}");
        }
    }
}

/// No URL with a scheme or a protocol-relative `//host` in any file of the page,
/// so nothing can make the browser contact another origin. The one exception is
/// the SVG namespace name, an identifier that is never fetched.
#[test]
fn the_page_names_no_other_origin() {
    const SVG_NAMESPACE: &str = "xmlns=\"http://www.w3.org/2000/svg\"";
    for (name, text) in FILES {
        let text = if name.ends_with(".svg") {
            assert_eq!(text.matches(SVG_NAMESPACE).count(), 1, "{name}");
            text.replace(SVG_NAMESPACE, "")
        } else {
            text.to_owned()
        };
        let lower = text.to_ascii_lowercase();
        for scheme in [
            "http://", "https://", "ws://", "wss://", "ftp://", "data:", "blob:",
        ] {
            assert!(!lower.contains(scheme), "{name} contains `{scheme}`");
        }
        for attr in ["src", "href", "action", "srcset", "poster"] {
            for value in attribute_values(&text, attr) {
                assert!(
                    (value.starts_with('/') && !value.starts_with("//")) || value.starts_with('#'),
                    "{name}: {attr}=\"{value}\" is not a same-origin path"
                );
            }
        }
        // CSS: url(...) and @import only to this origin's paths.
        assert!(!lower.contains("@import"), "{name} imports CSS");
        for (at, _) in lower.match_indices("url(") {
            let arg = lower[at + 4..].trim_start_matches(['"', '\'']);
            assert!(
                arg.starts_with('/') && !arg.starts_with("//"),
                "{name}: url({}) is not a same-origin path",
                &arg[..arg.len().min(40)]
            );
        }
    }
}

/// No inline script or style for the policy to block, and no HTML-parsing sink
/// or `eval` in the script: data reaches the page as text only.
#[test]
fn no_inline_code_and_no_html_sinks() {
    let html = INDEX_HTML.to_ascii_lowercase();
    let scripts = html.matches("<script").count();
    // sso.js and ops.js first: app.js hands them its helpers when it starts.
    assert_eq!(scripts, 3, "three scripts");
    assert!(
        html.contains(
            "<script src=\"/ui/sso.js\" defer></script>\n<script src=\"/ui/ops.js\" defer></script>\n\
             <script src=\"/ui/app.js\" defer></script>"
        ),
        "every <script> is external: sso.js, ops.js, then app.js"
    );
    assert!(!html.contains("<style"), "inline <style>");
    assert!(!html.contains(" style=\""), "inline style attribute");
    assert!(!html.contains("javascript:"), "javascript: URL");
    for attr in [
        " onclick=",
        " onload=",
        " onerror=",
        " onsubmit=",
        " oninput=",
    ] {
        assert!(!html.contains(attr), "inline handler {attr}");
    }
    for sink in [
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "eval(",
        "new Function",
        "setTimeout('",
        "setTimeout(\"",
        "createContextualFragment",
        "DOMParser",
        "localStorage",
        "document.cookie",
    ] {
        for (name, text) in [
            ("ui/app.js", APP_JS),
            ("ui/sso.js", SSO_JS),
            ("ui/ops.js", OPS_JS),
        ] {
            let code: String = text
                .lines()
                .filter(|l| !l.trim_start().starts_with("//"))
                .collect::<Vec<_>>()
                .join("\n");
            assert!(!code.contains(sink), "{name} uses {sink}");
        }
    }
}

/// Every input and select has a label (a `<label for>` naming its id).
#[test]
fn every_control_has_a_label() {
    let labelled = attribute_values(INDEX_HTML, "for");
    let mut controls = 0;
    for tag in ["<input ", "<select ", "<textarea "] {
        for (at, _) in INDEX_HTML.match_indices(tag) {
            let end = INDEX_HTML[at..].find('>').unwrap() + at;
            let element = &INDEX_HTML[at..end];
            let id = attribute_values(element, "id");
            assert_eq!(id.len(), 1, "a control without an id: {element}");
            assert!(
                labelled.contains(&id[0]),
                "no <label for=\"{}\">: {element}",
                id[0]
            );
            controls += 1;
        }
    }
    assert!(controls >= 9, "found only {controls} controls");
}
