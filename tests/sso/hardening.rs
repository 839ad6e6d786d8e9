//! What the contract implies beyond the issue's list: the `__Host-` cookie of an
//! https `public_url`, the client secret sent only to the bound token endpoint,
//! the provider's words unable to inject parameters or markup, a removed
//! application never redirected to, two callbacks at once exchanging the code
//! once, and the bounds and expiries of what the broker stores.

use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::test::TestRequest;
use base64::Engine;
use serde_json::json;

use super::*;
use crate::app;
use crate::harness::stub_http::{Reply, Stub};
use crate::harness::stub_idp::Answer;

fn is_callback(u: &str) -> bool {
    u.contains("/sso/callback")
}

#[actix_web::test]
async fn an_https_public_url_gets_a_host_prefixed_secure_cookie() {
    let public = "https://sso.example.test";
    let w = World::with(public, "").await;
    let app = app!(w.env);
    let creds = w.setup(&app).await;
    let mut browser = Browser::new();
    let landing = w
        .sign_in(&app, &mut browser, &authorize_path(&creds, "h", &[]))
        .await;
    expect_code(&landing, "h", &browser);
    assert_eq!(
        w.idp.last_authorize().get("redirect_uri"),
        Some(format!("{public}/sso/callback").as_str())
    );
    let set_cookie = browser
        .hops
        .iter()
        .find_map(|h| h.split(" Set-Cookie: ").nth(1))
        .unwrap_or_else(|| panic!("no cookie:\n{}", browser.trace()))
        .to_owned();
    assert!(
        set_cookie.starts_with("__Host-oidcvault_sso="),
        "{set_cookie}"
    );
    let lower = set_cookie.to_ascii_lowercase();
    for attr in ["secure", "httponly", "samesite=lax", "path=/"] {
        assert!(lower.contains(attr), "{attr} missing: {set_cookie}");
    }
    assert!(
        !lower.contains("domain="),
        "__Host- has no Domain: {set_cookie}"
    );
}

#[actix_web::test]
async fn the_secret_goes_only_to_the_bound_token_endpoint() {
    let w = World::new().await;
    let app = app!(w.env);
    let creds = w.setup(&app).await;
    // After the config was saved, the provider's document names endpoints
    // elsewhere: the broker keeps to the stored, bound token endpoint.
    let evil = Stub::start("127.0.0.1", |_| {
        Reply::Json(400, r#"{"error":"invalid_grant"}"#.into())
    });
    w.idp.set_doc("token_endpoint", json!(evil.url("/token")));
    w.idp
        .set_doc("userinfo_endpoint", json!(evil.url("/userinfo")));
    let mut browser = Browser::new();
    let landing = w
        .sign_in(&app, &mut browser, &authorize_path(&creds, "b", &[]))
        .await;
    assert_eq!(landing.param("state"), Some("b"), "{landing:?}");
    let leaked: Vec<String> = evil
        .requests()
        .iter()
        .filter(|r| {
            String::from_utf8_lossy(&r.body).contains(stub_idp::CLIENT_SECRET)
                || r.header("authorization").is_some()
        })
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert!(leaked.is_empty(), "credentials sent elsewhere: {leaked:?}");
    // At the provider, the secret is in token requests only.
    let basic_secret = base64::engine::general_purpose::STANDARD.encode(format!(
        "{}:{}",
        stub_idp::CLIENT_ID,
        stub_idp::CLIENT_SECRET
    ));
    for r in w.idp.stub.requests() {
        let carries = String::from_utf8_lossy(&r.body).contains(stub_idp::CLIENT_SECRET)
            || r.path.contains(stub_idp::CLIENT_SECRET)
            || r.header("authorization")
                .is_some_and(|a| a.contains(&basic_secret));
        assert!(
            !carries || (r.method == "POST" && r.path == "/token"),
            "the secret in {} {}",
            r.method,
            r.path
        );
    }
}

#[actix_web::test]
async fn the_providers_words_cannot_inject_parameters_or_markup() {
    let w = World::new().await;
    let app = app!(w.env);
    let creds = w.setup(&app).await;
    w.idp.knobs().answer =
        Answer::Deny("no&code=injected&state=forged#frag<script>x</script>".into());
    let mut browser = Browser::new();
    let landing = w
        .sign_in(&app, &mut browser, &authorize_path(&creds, "real", &[]))
        .await;
    assert_eq!(landing.param("code"), None, "{landing:?}");
    assert_eq!(landing.param("state"), Some("real"), "{landing:?}");
    assert_eq!(landing.param("error"), Some("access_denied"), "{landing:?}");
    assert!(!landing.url().contains('#'), "a fragment: {landing:?}");

    // The sign-in test page shows the provider's words escaped.
    let r = call(
        &app,
        post_json(
            "/api/v1/enterprises/oidc/sign-in-test/",
            &w.domain_token,
            "{}",
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    w.idp.knobs().answer =
        Answer::Deny("<script>alert(1)</script><img src=x onerror=alert(2)>".into());
    let mut browser = Browser::new();
    let cookies: Vec<String> = r
        .headers
        .get_all("set-cookie")
        .filter_map(|v| v.to_str().ok().map(str::to_owned))
        .collect();
    browser.keep_cookies(&cookies);
    let page = w
        .sign_in(
            &app,
            &mut browser,
            r.body["authorization_url"].as_str().unwrap(),
        )
        .await;
    let Landing::Page { body, .. } = &page else {
        panic!("{page:?}")
    };
    assert!(body.contains("Sign-in test: failed"), "{body}");
    assert!(
        !body.contains("<script>alert") && !body.contains("<img src=x"),
        "unescaped: {body}"
    );
    // Nor does an error page reflect markup from the query.
    let mut browser = Browser::new();
    let page = w
        .sign_in(
            &app,
            &mut browser,
            &with_query(
                AUTHORIZE,
                &[
                    ("client_id", "<script>alert(3)</script>"),
                    ("redirect_uri", "<img src=x>"),
                ],
            ),
        )
        .await;
    let Landing::Page { body, .. } = &page else {
        panic!("{page:?}")
    };
    assert!(
        !body.contains("<script>alert") && !body.contains("<img src=x"),
        "{body}"
    );
}

#[actix_web::test]
async fn a_removed_application_is_never_redirected_to() {
    let w = World::new().await;
    let app = app!(w.env);
    let creds = w.setup(&app).await;
    let mut browser = Browser::new();
    let callback = browser
        .follow_app_until(
            &app,
            PUBLIC_URL,
            &w.idp.origin(),
            &authorize_path(&creds, "gone", &[]),
            is_callback,
        )
        .await
        .unwrap_or_else(|l| panic!("stopped at {l:?}"));
    let r = call(&app, delete(&format!("{APPS}{}/", creds.id), &w.operator)).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{r:?}");
    let landing = w.sign_in(&app, &mut browser, &callback).await;
    expect_error_page(&landing, &browser);
    expect_failure_event(&w, "application_removed");
    assert!(
        w.idp.tokens().is_empty(),
        "the code was exchanged for nobody"
    );
    // And a new sign-in for it is a page too (unknown client).
    let mut browser = Browser::new();
    let landing = w
        .sign_in(&app, &mut browser, &authorize_path(&creds, "gone", &[]))
        .await;
    expect_error_page(&landing, &browser);
}

#[actix_web::test]
async fn two_callbacks_at_once_exchange_the_code_once() {
    let w = World::new().await;
    let app = app!(w.env);
    let creds = w.setup(&app).await;
    let mut browser = Browser::new();
    let callback = browser
        .follow_app_until(
            &app,
            PUBLIC_URL,
            &w.idp.origin(),
            &authorize_path(&creds, "race", &[]),
            is_callback,
        )
        .await
        .unwrap_or_else(|l| panic!("stopped at {l:?}"));
    let path = callback.strip_prefix(PUBLIC_URL).unwrap().to_owned();
    let cookie = browser.cookie_header().unwrap();
    let req = || {
        TestRequest::get()
            .uri(&path)
            .insert_header(("Cookie", cookie.clone()))
    };
    let (a, b, c) =
        futures_util::future::join3(call(&app, req()), call(&app, req()), call(&app, req())).await;
    let with_code = [&a, &b, &c]
        .iter()
        .filter(|r| r.header("location").is_some_and(|l| l.contains("code=")))
        .count();
    assert_eq!(with_code, 1, "{a:?}\n{b:?}\n{c:?}");
    assert_eq!(w.idp.tokens().len(), 1, "{:?}", w.idp.tokens());
    for r in [&a, &b, &c] {
        assert!(r.status.as_u16() < 500, "{r:?}");
    }
}

#[actix_web::test]
async fn pending_sign_ins_are_bounded_and_a_finished_one_frees_its_place() {
    let w = World::with(PUBLIC_URL, "max_pending_transactions = 2\n").await;
    let app = app!(w.env);
    let creds = w.setup(&app).await;
    let mut first = Browser::new();
    let callback = first
        .follow_app_until(
            &app,
            PUBLIC_URL,
            &w.idp.origin(),
            &authorize_path(&creds, "p1", &[]),
            is_callback,
        )
        .await
        .unwrap_or_else(|l| panic!("stopped at {l:?}"));
    let mut second = Browser::new();
    second
        .follow_app_until(
            &app,
            PUBLIC_URL,
            &w.idp.origin(),
            &authorize_path(&creds, "p2", &[]),
            is_callback,
        )
        .await
        .unwrap_or_else(|l| panic!("stopped at {l:?}"));
    let mut third = Browser::new();
    let landing = w
        .sign_in(&app, &mut third, &authorize_path(&creds, "p3", &[]))
        .await;
    assert_eq!(
        landing.param("error"),
        Some("temporarily_unavailable"),
        "{landing:?}\n{}",
        third.trace()
    );
    assert_eq!(landing.param("state"), Some("p3"), "{landing:?}");
    assert_eq!(
        w.idp.authorizes().len(),
        2,
        "the third reached the provider"
    );
    // The first finishes: its place is free again.
    let landing = w.sign_in(&app, &mut first, &callback).await;
    expect_code(&landing, "p1", &first);
    let mut fourth = Browser::new();
    let landing = w
        .sign_in(&app, &mut fourth, &authorize_path(&creds, "p4", &[]))
        .await;
    expect_code(&landing, "p4", &fourth);
}

#[actix_web::test]
async fn an_expired_code_is_invalid_grant() {
    let w = World::with(PUBLIC_URL, "code_ttl_secs = 5\n").await;
    let app = app!(w.env);
    let creds = w.setup(&app).await;
    let mut browser = Browser::new();
    let landing = w
        .sign_in(&app, &mut browser, &authorize_path(&creds, "e", &[]))
        .await;
    let code = expect_code(&landing, "e", &browser);
    actix_web::rt::time::sleep(Duration::from_secs(6)).await;
    let r = redeem(&app, &creds, &code, APP_REDIRECT, None).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{r:?}");
    assert_eq!(r.body["error"], "invalid_grant", "{r:?}");
}

#[actix_web::test]
async fn an_expired_sign_in_is_refused_at_the_callback() {
    let w = World::with(PUBLIC_URL, "transaction_ttl_secs = 30\n").await;
    let app = app!(w.env);
    let creds = w.setup(&app).await;
    let mut browser = Browser::new();
    let callback = browser
        .follow_app_until(
            &app,
            PUBLIC_URL,
            &w.idp.origin(),
            &authorize_path(&creds, "x", &[]),
            is_callback,
        )
        .await
        .unwrap_or_else(|l| panic!("stopped at {l:?}"));
    actix_web::rt::time::sleep(Duration::from_secs(31)).await;
    let landing = w.sign_in(&app, &mut browser, &callback).await;
    expect_error_page(&landing, &browser);
    assert!(
        w.idp.tokens().is_empty(),
        "an expired sign-in exchanged its code"
    );
    let logins = w.logins();
    let (detail, whole) = logins.last().expect("an sso.login event");
    assert!(
        detail.contains("expired_state") || detail.contains("unknown_state"),
        "{whole}"
    );
}

#[actix_web::test]
async fn the_domain_of_a_login_hint_is_found_whatever_its_case() {
    let w = World::new().await;
    let app = app!(w.env);
    let creds = w.setup(&app).await;
    let mut browser = Browser::new();
    let landing = w
        .sign_in(
            &app,
            &mut browser,
            &authorize_path(&creds, "c", &[("login_hint", "Alice@ACME.Com")]),
        )
        .await;
    expect_code(&landing, "c", &browser);
    assert_eq!(
        w.idp.last_authorize().get("login_hint"),
        Some("Alice@ACME.Com")
    );
}

#[actix_web::test]
async fn sign_ins_and_refused_callbacks_are_limited_per_address() {
    let w = World::with(PUBLIC_URL, "authorize_per_address_per_minute = 5\n").await;
    let app = app!(w.env);
    let creds = w.setup(&app).await;
    let addr = |last: u8| std::net::SocketAddr::from(([10, 0, 0, last], 40000));
    // Starts: five from one address, then back to the application with
    // temporarily_unavailable; another address is not held up.
    let start = authorize_path(&creds, "lim", &[]);
    let mut seen = Vec::new();
    for _ in 0..7 {
        let r = call(&app, TestRequest::get().uri(&start).peer_addr(addr(7))).await;
        seen.push((
            r.status.as_u16(),
            r.header("location").unwrap_or_default().to_owned(),
        ));
    }
    let to_idp = seen
        .iter()
        .filter(|(_, l)| l.starts_with(&w.idp.origin()))
        .count();
    assert_eq!(to_idp, 5, "{seen:#?}");
    let (status, last) = seen.last().unwrap();
    assert!(
        *status == 302
            && last.starts_with(APP_REDIRECT)
            && last.contains("error=temporarily_unavailable"),
        "{seen:#?}"
    );
    let r = call(&app, TestRequest::get().uri(&start).peer_addr(addr(8))).await;
    assert!(
        r.header("location")
            .is_some_and(|l| l.starts_with(&w.idp.origin())),
        "{r:?}"
    );

    // Callbacks with made-up states: refused and audited up to the allowance,
    // then 429 and no more audit events (the trail is no flood target).
    let before = w.logins().len();
    let mut statuses = Vec::new();
    for i in 0..12 {
        let uri = with_query(
            "/sso/callback",
            &[("state", &format!("made-up-{i}")), ("code", "x")],
        );
        let r = call(&app, TestRequest::get().uri(&uri).peer_addr(addr(9))).await;
        statuses.push(r.status.as_u16());
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 400).count(),
        5,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        7,
        "{statuses:?}"
    );
    assert_eq!(
        w.logins().len() - before,
        5,
        "audit events past the allowance"
    );
}

/// OpenID Connect Discovery §4.3: the issuer a document names must be the URL it
/// was fetched under; a document claiming another issuer (another provider's,
/// whose users' profile ids are `(issuer, sub)`) is not used.
#[actix_web::test]
async fn a_discovery_document_naming_another_issuer_is_not_used() {
    let w = World::new().await;
    let app = app!(w.env);
    let creds = w.setup(&app).await;
    // Issued tokens follow the document's (new) issuer: only the document check can refuse.
    w.idp
        .set_doc("issuer", json!("https://login.another-idp.example"));
    let mut browser = Browser::new();
    let landing = w
        .sign_in(&app, &mut browser, &authorize_path(&creds, "mixup", &[]))
        .await;
    assert_eq!(
        landing.param("code"),
        None,
        "a sign-in under another provider's issuer:\n{}",
        browser.trace()
    );
    assert!(
        landing.param("error").is_some() || landing.status().is_some_and(|s| s < 500),
        "{landing:?}"
    );
}

#[actix_web::test]
async fn without_a_discovery_url_or_a_public_url_no_sign_in_starts() {
    // A domain configured with explicit endpoints only: the broker needs the
    // provider's issuer and keys, so the application hears it at once.
    let w = World::new().await;
    let app = app!(w.env);
    let body = json!({
        "client_id": stub_idp::CLIENT_ID,
        "client_secret": stub_idp::CLIENT_SECRET,
        "authorization_endpoint": format!("{}/authorize", w.idp.origin()),
        "token_endpoint": format!("{}/token", w.idp.origin()),
    });
    let r = call(
        &app,
        post_json(CONFIG_PATH, &w.operator, &body.to_string())
            .insert_header(("X-Enterprise-Domain", DOMAIN)),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    let creds = w.add_app(&app, "App", APP_REDIRECT).await;
    let mut browser = Browser::new();
    let landing = w
        .sign_in(&app, &mut browser, &authorize_path(&creds, "nd", &[]))
        .await;
    assert_eq!(
        landing.param("code"),
        None,
        "{landing:?}\n{}",
        browser.trace()
    );
    assert_eq!(
        landing.param("state"),
        Some("nd"),
        "{landing:?}\n{}",
        browser.trace()
    );
    assert_eq!(landing.param("error"), Some("server_error"), "{landing:?}");
    assert!(
        landing
            .param("error_description")
            .is_some_and(|d| d.contains("discovery_url")),
        "{landing:?}"
    );
    assert!(
        w.idp.authorizes().is_empty(),
        "sent to the provider:\n{}",
        browser.trace()
    );
    // "Try sign-in" says so too, instead of a URL.
    let r = call(
        &app,
        post_json(
            "/api/v1/enterprises/oidc/sign-in-test/",
            &w.domain_token,
            "{}",
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{r:?}");
    assert!(r.raw.contains("discovery_url"), "{r:?}");

    // A discovery URL, but no token endpoint stored (not resolved on save).
    let env = Env::with_config(&config(PUBLIC_URL).replace(
        "resolve_discovery_on_save = true",
        "resolve_discovery_on_save = false",
    ));
    env.domain(DOMAIN).await;
    let operator = env.operator().await;
    let app2 = app!(env);
    let body = json!({
        "client_id": stub_idp::CLIENT_ID,
        "client_secret": stub_idp::CLIENT_SECRET,
        "discovery_url": w.idp.discovery_url(),
        "authorization_endpoint": format!("{}/authorize", w.idp.origin()),
    });
    let r = call(
        &app2,
        post_json(CONFIG_PATH, &operator, &body.to_string())
            .insert_header(("X-Enterprise-Domain", DOMAIN)),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    let body = json!({"name": "App", "redirect_uris": [APP_REDIRECT]});
    let r = call(&app2, post_json(APPS, &operator, &body.to_string())).await;
    let creds = AppCreds::from_json(&r.body);
    let r = call(
        &app2,
        TestRequest::get().uri(&authorize_path(&creds, "nt", &[])),
    )
    .await;
    let location = r.header("location").unwrap_or_default();
    assert!(
        location.starts_with(APP_REDIRECT)
            && location.contains("error=server_error")
            && location.contains("token+endpoint"),
        "{r:?}"
    );
    assert!(w.idp.authorizes().is_empty(), "sent to the provider");

    // No server.public_url: no callback URL to give the provider.
    let env = Env::with_config(
        "[outbound]\nresolve_discovery_on_save = false\nallow_http_hosts = [\"127.0.0.1\"]\n\
         allow_private_hosts = [\"127.0.0.1\"]\n",
    );
    env.domain(DOMAIN).await;
    let operator = env.operator().await;
    let app = app!(env);
    let r = call(&app, get("/api/v1/sso/", &operator)).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert!(
        r.body["public_url"].is_null() && r.body["callback_url"].is_null(),
        "{r:?}"
    );
    let body = json!({"name": "App", "redirect_uris": [APP_REDIRECT]});
    let r = call(&app, post_json(APPS, &operator, &body.to_string())).await;
    let creds = AppCreds::from_json(&r.body);
    let r = call(
        &app,
        TestRequest::get().uri(&authorize_path(&creds, "np", &[])),
    )
    .await;
    let location = r.header("location").unwrap_or_default();
    assert!(
        r.status.is_client_error()
            || (location.starts_with(APP_REDIRECT) && location.contains("error=")),
        "{r:?}"
    );
    assert!(!location.contains("code="), "{r:?}");
}
