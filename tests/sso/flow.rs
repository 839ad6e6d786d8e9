//! Sign-ins that succeed: what the broker sends the provider, its cookie, the
//! profile the application gets, a stable `id`, two tabs at once,
//! `client_secret_post`, and userinfo when the ID token has no e-mail.

use std::time::Duration;

use actix_web::http::StatusCode;
use serde_json::json;

use super::*;
use crate::app;
use crate::harness::stub_idp::{IssParam, EMAIL, SUB};

#[actix_web::test]
async fn a_sign_in_gives_the_application_a_verified_profile() {
    let w = World::new().await;
    let app = app!(w.env);
    let creds = w.setup(&app).await;
    let mut browser = Browser::new();
    let landing = w
        .sign_in(
            &app,
            &mut browser,
            &authorize_path(&creds, "app-state-1", &[("login_hint", "alice@acme.com")]),
        )
        .await;
    let code = expect_code(&landing, "app-state-1", &browser);
    assert!(code.len() >= 22, "a code of >= 128 bits: {code:?}");

    // What the provider got: the authorization code flow with PKCE, a nonce, the
    // callback under public_url, the login hint, a state that is not the app's.
    let a = w.idp.last_authorize();
    assert_eq!(a.get("response_type"), Some("code"), "{a:?}");
    let scope: Vec<&str> = a.get("scope").unwrap_or_default().split(' ').collect();
    for s in ["openid", "email", "profile"] {
        assert!(scope.contains(&s), "{a:?}");
    }
    assert_eq!(
        a.get("redirect_uri"),
        Some(format!("{PUBLIC_URL}/sso/callback").as_str()),
        "{a:?}"
    );
    assert_eq!(a.get("code_challenge_method"), Some("S256"), "{a:?}");
    assert!(
        a.get("code_challenge").is_some_and(|c| c.len() >= 43),
        "{a:?}"
    );
    assert!(a.get("nonce").is_some_and(|n| n.len() >= 22), "{a:?}");
    let idp_state = a.get("state").unwrap_or_default();
    assert!(idp_state.len() >= 22 && idp_state != "app-state-1", "{a:?}");
    assert_eq!(a.get("login_hint"), Some("alice@acme.com"), "{a:?}");
    // The token request: basic auth, the stub's checks (code, redirect_uri, PKCE) passed.
    let t = w.idp.tokens();
    assert_eq!(t.len(), 1, "{t:?}");
    assert_eq!((t[0].auth, t[0].outcome.as_str()), ("basic", "ok"), "{t:?}");
    assert_eq!(
        t[0].get("client_secret"),
        None,
        "basic sends no secret in the body"
    );

    // The cookie: http public_url, so no __Host- prefix; HttpOnly, SameSite=Lax.
    let set_cookie = browser
        .hops
        .iter()
        .find(|h| h.contains("Set-Cookie: oidcvault_sso="))
        .unwrap_or_else(|| panic!("no oidcvault_sso cookie:\n{}", browser.trace()))
        .to_ascii_lowercase();
    assert!(set_cookie.contains("httponly"), "{set_cookie}");
    assert!(set_cookie.contains("samesite=lax"), "{set_cookie}");
    assert!(set_cookie.contains("path=/"), "{set_cookie}");

    // The application redeems the code: the profile of the contract.
    let r = redeem(&app, &creds, &code, APP_REDIRECT, None).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert!(
        r.header("cache-control")
            .is_some_and(|c| c.contains("no-store")),
        "RFC 6749 §5.1: Cache-Control: no-store: {r:?}"
    );
    let p = &r.body["profile"];
    let mut keys: Vec<&str> = p.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "authenticated_at",
            "claims",
            "domain",
            "email",
            "email_verified",
            "enterprise_domain",
            "family_name",
            "given_name",
            "id",
            "issuer",
            "name",
            "sub"
        ],
        "{p:#}"
    );
    assert_eq!(p["sub"], SUB);
    assert_eq!(p["email"], EMAIL);
    assert_eq!(p["email_verified"], true);
    assert_eq!(p["issuer"], w.idp.issuer());
    // As in the config object: the enterprise domain's id; its name in `domain`.
    assert!(p["enterprise_domain"].is_u64(), "{p:#}");
    assert_eq!(p["domain"], DOMAIN, "{p:#}");
    assert_eq!(p["name"], "Alice Example");
    assert_eq!(p["given_name"], "Alice");
    assert_eq!(p["family_name"], "Example");
    assert_eq!(p["claims"]["sub"], SUB, "{p:#}");
    assert!(p["id"].as_str().is_some_and(|s| !s.is_empty()), "{p:#}");
    // Nothing of the provider's tokens or the secrets reaches the application.
    for secret in [stub_idp::CLIENT_SECRET, "stub-at-", "stubcode-", "eyJ"] {
        assert!(!r.raw.contains(secret), "{secret} in {}", r.raw);
    }
    // Audited, without code, token or state.
    let logins = w.logins();
    let (detail, whole) = logins.last().expect("an sso.login event");
    assert!(detail.contains("success"), "{whole}");
    assert!(detail.contains(SUB) && detail.contains(EMAIL), "{whole}");
    for s in [code.as_str(), idp_state, "app-state-1", "stub-at-", "eyJ"] {
        assert!(!detail.contains(s), "{s} in the audit: {whole}");
    }
    let redeems = w.events("sso.code_redeem");
    assert_eq!(redeems.len(), 1, "{redeems:?}");
}

#[actix_web::test]
async fn the_profile_id_is_stable_for_one_sub_and_differs_for_another() {
    let w = World::new().await;
    let app = app!(w.env);
    let creds = w.setup(&app).await;
    let mut ids = Vec::new();
    for (i, sub) in [SUB, SUB, "another-user-0002"].into_iter().enumerate() {
        w.idp.claims(json!({ "sub": sub }));
        // A fresh browser each time: a new device, the same user.
        let mut browser = Browser::new();
        let state = format!("s{i}");
        let landing = w
            .sign_in(&app, &mut browser, &authorize_pkce(&creds, &state))
            .await;
        let code = expect_code(&landing, &state, &browser);
        let r = redeem(&app, &creds, &code, APP_REDIRECT, Some(APP_VERIFIER)).await;
        assert_eq!(r.status, StatusCode::OK, "{r:?}");
        assert_eq!(r.body["profile"]["sub"], sub);
        ids.push(r.body["profile"]["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(ids[0], ids[1], "the same (issuer, sub) must keep its id");
    assert_ne!(ids[0], ids[2], "another sub must get another id");
}

#[actix_web::test]
async fn two_tabs_sign_in_at_once_in_one_browser() {
    let w = World::new().await;
    let app = app!(w.env);
    let creds = w.setup(&app).await;
    let mut browser = Browser::new();
    let idp = w.idp.origin();
    let is_callback = |u: &str| u.starts_with(&format!("{PUBLIC_URL}/sso/callback"));
    // Tab 1 goes to the provider and back as far as the callback, not into it.
    let tab1 = browser
        .follow_app_until(
            &app,
            PUBLIC_URL,
            &idp,
            &authorize_path(&creds, "tab-1", &[]),
            is_callback,
        )
        .await
        .unwrap_or_else(|l| panic!("tab 1 stopped at {l:?}"));
    let cookie1 = browser.cookies.clone();
    // Tab 2 signs in all the way, in the same browser (same cookie jar).
    let tab2 = browser
        .follow_app_until(
            &app,
            PUBLIC_URL,
            &idp,
            &authorize_path(&creds, "tab-2", &[]),
            is_callback,
        )
        .await
        .unwrap_or_else(|l| panic!("tab 2 stopped at {l:?}"));
    assert_eq!(
        browser.cookies,
        cookie1,
        "a browser that has a binding keeps it:\n{}",
        browser.trace()
    );
    let landing2 = browser.follow_app(&app, PUBLIC_URL, &idp, &tab2).await;
    let code2 = expect_code(&landing2, "tab-2", &browser);
    // Tab 1 comes back later: it works too, with its own state.
    let landing1 = browser.follow_app(&app, PUBLIC_URL, &idp, &tab1).await;
    let code1 = expect_code(&landing1, "tab-1", &browser);
    assert_ne!(code1, code2);
    for code in [code1, code2] {
        let r = redeem(&app, &creds, &code, APP_REDIRECT, None).await;
        assert_eq!(r.status, StatusCode::OK, "{r:?}");
    }
}

#[actix_web::test]
async fn a_provider_that_takes_client_secret_post_only_gets_it() {
    let w = World::new().await;
    w.idp.post_only();
    let app = app!(w.env);
    let creds = w.setup(&app).await;
    let mut browser = Browser::new();
    let landing = w
        .sign_in(&app, &mut browser, &authorize_path(&creds, "p", &[]))
        .await;
    expect_code(&landing, "p", &browser);
    let t = w.idp.tokens();
    assert_eq!((t[0].auth, t[0].outcome.as_str()), ("post", "ok"), "{t:?}");
}

#[actix_web::test]
async fn without_an_email_in_the_id_token_the_broker_asks_userinfo() {
    let w = World::new().await;
    let app = app!(w.env);
    let creds = w.setup(&app).await;
    w.idp.claims(json!({"email": null, "email_verified": null}));
    w.idp
        .userinfo(json!({"email": "carol@eu.acme.com", "email_verified": true}));
    let mut browser = Browser::new();
    let landing = w
        .sign_in(&app, &mut browser, &authorize_path(&creds, "u", &[]))
        .await;
    let code = expect_code(&landing, "u", &browser);
    assert_eq!(w.idp.hits("/userinfo"), 1);
    let r = redeem(&app, &creds, &code, APP_REDIRECT, None).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.body["profile"]["email"], "carol@eu.acme.com", "{r:?}");
    assert_eq!(r.body["profile"]["sub"], SUB);

    // With an e-mail in the ID token, no userinfo call.
    w.idp
        .claims(json!({"email": EMAIL, "email_verified": true}));
    let mut browser = Browser::new();
    let landing = w
        .sign_in(&app, &mut browser, &authorize_path(&creds, "v", &[]))
        .await;
    expect_code(&landing, "v", &browser);
    assert_eq!(w.idp.hits("/userinfo"), 1, "no second userinfo call");
}

#[actix_web::test]
async fn rfc_9207_iss_is_accepted_when_it_is_the_issuer_and_a_subdomain_email_too() {
    let w = World::new().await;
    w.idp.iss_param(IssParam::Issuer);
    let app = app!(w.env);
    let creds = w.setup(&app).await;
    w.idp.claims(json!({"email": "dave@eu.ACME.com"}));
    let mut browser = Browser::new();
    let landing = w
        .sign_in(&app, &mut browser, &authorize_path(&creds, "i", &[]))
        .await;
    expect_code(&landing, "i", &browser);
}

/// The broker's JWK refetches of one provider: at most one per this long
/// (`broker::JWKS_MIN_REFETCH`, counted from any fetch).
const JWKS_MIN_REFETCH: Duration = Duration::from_secs(30);

#[actix_web::test]
async fn a_rotated_key_is_fetched_once_and_the_sign_in_succeeds() {
    let w = World::new().await;
    let app = app!(w.env);
    let creds = w.setup(&app).await;
    let mut browser = Browser::new();
    let landing = w
        .sign_in(&app, &mut browser, &authorize_path(&creds, "r1", &[]))
        .await;
    expect_code(&landing, "r1", &browser);
    let fetched = std::time::Instant::now();
    let before = w.idp.hits("/jwks");
    assert!(before >= 1, "the JWK set was fetched");
    // The provider rotates: the cached set lacks the new kid. Right after a
    // fetch, the refetch is held back (rate limit): refused, nothing fetched.
    w.idp.rotate();
    let mut browser = Browser::new();
    let landing = w
        .sign_in(&app, &mut browser, &authorize_path(&creds, "r2", &[]))
        .await;
    if fetched.elapsed() < JWKS_MIN_REFETCH {
        expect_refused(
            &w,
            &landing,
            &browser,
            "r2",
            &["access_denied"],
            "unknown_kid",
        );
        assert_eq!(w.idp.hits("/jwks"), before, "a refetch within the limit");
    }
    // Once the interval has passed: one refetch, then success.
    actix_web::rt::time::sleep(JWKS_MIN_REFETCH.saturating_sub(fetched.elapsed())).await;
    actix_web::rt::time::sleep(Duration::from_secs(1)).await;
    let mut browser = Browser::new();
    let landing = w
        .sign_in(&app, &mut browser, &authorize_path(&creds, "r3", &[]))
        .await;
    expect_code(&landing, "r3", &browser);
    assert_eq!(
        w.idp.hits("/jwks"),
        before + 1,
        "one refetch for the new kid"
    );
    // The next sign-in uses the cache.
    let mut browser = Browser::new();
    let landing = w
        .sign_in(&app, &mut browser, &authorize_path(&creds, "r4", &[]))
        .await;
    expect_code(&landing, "r4", &browser);
    assert_eq!(w.idp.hits("/jwks"), before + 1, "cached");
}
