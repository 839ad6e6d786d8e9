//! The admin side against the stub provider: the callback URL to register
//! (`GET /api/v1/sso/`), the "Try sign-in" test (`POST
//! /api/v1/enterprises/oidc/sign-in-test/`: a real sign-in whose callback renders
//! each check instead of minting a code), and the sign-in metrics.

use actix_web::http::StatusCode;
use actix_web::test::TestRequest;

use super::*;
use crate::app;
use crate::harness::prometheus;
use crate::harness::stub_idp::Signing;

const SSO_INFO: &str = "/api/v1/sso/";
const SIGN_IN_TEST: &str = "/api/v1/enterprises/oidc/sign-in-test/";

#[actix_web::test]
async fn the_callback_url_to_register_is_served() {
    let w = World::new().await;
    let app = app!(w.env);
    let r = call(&app, get(SSO_INFO, &w.operator)).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.body["public_url"], PUBLIC_URL, "{r:?}");
    assert_eq!(
        r.body["callback_url"],
        format!("{PUBLIC_URL}/sso/callback"),
        "{r:?}"
    );
    let anonymous = call(&app, TestRequest::get().uri(SSO_INFO)).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED, "{anonymous:?}");
}

/// `<tr data-check="name" data-status="...">` of the result page: name → status.
fn checks(page: &str) -> Vec<(String, String)> {
    page.split("data-check=\"")
        .skip(1)
        .filter_map(|rest| {
            let (name, rest) = rest.split_once('"')?;
            let status = rest.split("data-status=\"").nth(1)?.split('"').next()?;
            Some((name.to_owned(), status.to_owned()))
        })
        .collect()
}

/// Run the sign-in test as the domain's admin: the result page.
async fn try_sign_in<S, B>(w: &World, app: &S, token: &str) -> (Landing, Browser)
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    let r = call(app, post_json(SIGN_IN_TEST, token, "{}")).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    let url = r.body["authorization_url"]
        .as_str()
        .unwrap_or_else(|| panic!("no authorization_url: {r:?}"))
        .to_owned();
    assert!(url.starts_with(&w.idp.origin()), "{url}");
    let mut browser = Browser::new();
    let set_cookies: Vec<String> = r
        .headers
        .get_all("set-cookie")
        .filter_map(|v| v.to_str().ok().map(str::to_owned))
        .collect();
    assert!(
        !set_cookies.is_empty(),
        "no cookie binds the browser: {r:?}"
    );
    browser.keep_cookies(&set_cookies);
    let landing = w.sign_in(app, &mut browser, &url).await;
    (landing, browser)
}

#[actix_web::test]
async fn try_sign_in_shows_each_check_and_mints_no_code() {
    let w = World::new().await;
    let app = app!(w.env);
    w.setup(&app).await;
    let token = w.domain_token.clone();
    let (landing, browser) = try_sign_in(&w, &app, &token).await;
    assert_eq!(
        landing.status(),
        Some(200),
        "{landing:?}\n{}",
        browser.trace()
    );
    let Landing::Page { body, .. } = &landing else {
        unreachable!()
    };
    assert!(body.contains("Sign-in test: succeeded"), "{body}");
    let got = checks(body);
    for name in [
        "state",
        "cookie",
        "token_exchange",
        "signature",
        "issuer",
        "audience",
        "expiry",
        "nonce",
        "email_domain",
        "email_verified",
    ] {
        assert!(
            got.iter().any(|(n, s)| n == name && s == "ok"),
            "check {name} not ok: {got:?}\n{body}"
        );
    }
    assert!(body.contains("id=\"profile\""), "{body}");
    assert!(body.contains(stub_idp::EMAIL), "{body}");
    for secret in [stub_idp::CLIENT_SECRET, "stub-at-", "eyJ"] {
        assert!(!body.contains(secret), "{secret} on the page");
    }

    // A bad signature: failed, the signature check says so; still no code.
    w.idp.signing(Signing::OtherKey);
    let (landing, browser) = try_sign_in(&w, &app, &token).await;
    let Landing::Page { body, status, .. } = &landing else {
        panic!("no page: {landing:?}\n{}", browser.trace())
    };
    assert!(*status < 500, "{landing:?}");
    assert!(body.contains("Sign-in test: failed"), "{body}");
    assert!(
        checks(body)
            .iter()
            .any(|(n, s)| n == "signature" && s == "failed"),
        "{:?}\n{body}",
        checks(body)
    );
    assert!(!body.contains("id=\"profile\""), "{body}");
}

#[actix_web::test]
async fn sign_ins_are_counted_by_outcome() {
    let w = World::new().await;
    let app = app!(w.env);
    let creds = w.setup(&app).await;
    let mut browser = Browser::new();
    let landing = w
        .sign_in(&app, &mut browser, &authorize_path(&creds, "m1", &[]))
        .await;
    expect_code(&landing, "m1", &browser);
    w.idp.signing(Signing::AlgNone);
    let mut browser = Browser::new();
    let landing = w
        .sign_in(&app, &mut browser, &authorize_path(&creds, "m2", &[]))
        .await;
    assert_eq!(landing.param("code"), None, "{landing:?}");
    let r = call(&app, get("/metrics", &w.operator)).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    let m = prometheus::parse_or_panic(&r.raw);
    let all = m.sum("oidcvault_sso_logins_total", &[]);
    let ok = m.sum("oidcvault_sso_logins_total", &[("outcome", "success")]);
    assert_eq!((all, ok), (2.0, 1.0), "{}", r.raw);
    assert!(
        m.sum("oidcvault_sso_idp_seconds_count", &[]) >= 1.0,
        "{}",
        r.raw
    );
}
