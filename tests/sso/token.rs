//! `POST /sso/token`: the application's credentials (Basic or body), RFC 6749
//! §5.2 errors, and a code redeemable once, by its application only, with its
//! `redirect_uri` and `code_verifier`.

use actix_web::http::StatusCode;
use serde_json::Value;

use super::*;
use crate::app;

/// An RFC 6749 §5.2 error: `status`, `{"error": error, ...}`, and no profile.
fn expect_oauth_error(r: &Reply, status: u16, error: &str, what: &str) {
    assert_eq!(r.status.as_u16(), status, "{what}: {r:?}");
    assert_eq!(r.body["error"], error, "{what}: {r:?}");
    assert!(
        r.body.get("error_description").is_none_or(Value::is_string),
        "{what}: {r:?}"
    );
    assert!(r.body.get("profile").is_none(), "{what}: {r:?}");
}

/// A sign-in that ends with a code for `creds` (with the app's PKCE challenge
/// when `pkce`).
async fn code_for<S, B>(w: &World, app: &S, creds: &AppCreds, state: &str, pkce: bool) -> String
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    let start = if pkce {
        authorize_pkce(creds, state)
    } else {
        authorize_path(creds, state, &[])
    };
    let mut browser = Browser::new();
    let landing = w.sign_in(app, &mut browser, &start).await;
    expect_code(&landing, state, &browser)
}

#[actix_web::test]
async fn refused_code_replay_is_invalid_grant_and_audited() {
    let w = World::new().await;
    let app = app!(w.env);
    let creds = w.setup(&app).await;
    let code = code_for(&w, &app, &creds, "c", false).await;
    let r = redeem(&app, &creds, &code, APP_REDIRECT, None).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    for _ in 0..2 {
        let again = redeem(&app, &creds, &code, APP_REDIRECT, None).await;
        expect_oauth_error(&again, 400, "invalid_grant", "a replayed code");
    }
    let replays = w.events("sso.code_replay");
    assert!(!replays.is_empty(), "the replay is audited");
    for (detail, whole) in &replays {
        assert!(!detail.contains(&code), "the code in the audit: {whole}");
    }
}

#[actix_web::test]
async fn refused_code_for_another_application() {
    let w = World::new().await;
    let app = app!(w.env);
    let creds = w.setup(&app).await;
    let other = w
        .add_app(&app, "Other app", "http://127.0.0.1:4999/other")
        .await;
    let code = code_for(&w, &app, &creds, "c", false).await;
    for redirect in [APP_REDIRECT, other.redirect_uri.as_str()] {
        let r = redeem(&app, &other, &code, redirect, None).await;
        expect_oauth_error(&r, 400, "invalid_grant", "another application's code");
    }
}

#[actix_web::test]
async fn refused_redirect_uri_mismatch_at_token() {
    let w = World::new().await;
    let app = app!(w.env);
    let creds = w.setup(&app).await;
    let code = code_for(&w, &app, &creds, "c", false).await;
    for redirect in [
        "http://127.0.0.1:3999/callback/",
        "http://127.0.0.1:3999/other",
        "",
    ] {
        let r = redeem(&app, &creds, &code, redirect, None).await;
        assert!(
            r.body["error"] == "invalid_grant" || r.body["error"] == "invalid_request",
            "redirect_uri {redirect:?}: {r:?}"
        );
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{r:?}");
    }
}

#[actix_web::test]
async fn refused_wrong_or_missing_code_verifier() {
    let w = World::new().await;
    let app = app!(w.env);
    let creds = w.setup(&app).await;
    let code = code_for(&w, &app, &creds, "c", true).await;
    let wrong = "another-verifier-0123456789-abcdefghijklmnopqrstu";
    let r = redeem(&app, &creds, &code, APP_REDIRECT, Some(wrong)).await;
    expect_oauth_error(&r, 400, "invalid_grant", "a wrong code_verifier");
    // A failed attempt burns the code or leaves it: either way never two profiles.
    let code = code_for(&w, &app, &creds, "d", true).await;
    let r = redeem(&app, &creds, &code, APP_REDIRECT, None).await;
    assert!(
        r.body["error"] == "invalid_grant" || r.body["error"] == "invalid_request",
        "no code_verifier: {r:?}"
    );
    let code = code_for(&w, &app, &creds, "e", true).await;
    let r = redeem(&app, &creds, &code, APP_REDIRECT, Some(APP_VERIFIER)).await;
    assert_eq!(r.status, StatusCode::OK, "the right verifier: {r:?}");
}

#[actix_web::test]
async fn the_application_authenticates_by_basic_or_body_and_errors_are_rfc_6749() {
    let w = World::new().await;
    let app = app!(w.env);
    let creds = w.setup(&app).await;

    // Body credentials.
    let code = code_for(&w, &app, &creds, "b", false).await;
    let r = post_form(
        &app,
        None,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", APP_REDIRECT),
            ("client_id", &creds.client_id),
            ("client_secret", &creds.client_secret),
        ],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "body credentials: {r:?}");

    let code = code_for(&w, &app, &creds, "x", false).await;
    fn form(code: &str) -> Vec<(&str, &str)> {
        vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", APP_REDIRECT),
        ]
    }
    let code = code.as_str();
    // A wrong secret, an unknown client, none: 401 invalid_client.
    for auth in [
        Some(basic(&creds.client_id, "ovs_wrong")),
        Some(basic("ova_unknown", &creds.client_secret)),
        None,
    ] {
        let r = post_form(&app, auth.as_deref(), &form(code)).await;
        expect_oauth_error(&r, 401, "invalid_client", &format!("{auth:?}"));
    }
    // Another grant type.
    let mut f = form(code);
    f[0] = ("grant_type", "password");
    let r = post_form(&app, Some(&creds.basic()), &f).await;
    expect_oauth_error(&r, 400, "unsupported_grant_type", "grant_type=password");
    // No code.
    let r = post_form(
        &app,
        Some(&creds.basic()),
        &[
            ("grant_type", "authorization_code"),
            ("redirect_uri", APP_REDIRECT),
        ],
    )
    .await;
    assert!(
        r.body["error"] == "invalid_request" || r.body["error"] == "invalid_grant",
        "{r:?}"
    );
    // An unknown code.
    let r = redeem(&app, &creds, "not-a-code", APP_REDIRECT, None).await;
    expect_oauth_error(&r, 400, "invalid_grant", "an unknown code");
    // The code survived the failed attempts (none of them was its application's).
    let r = redeem(&app, &creds, code, APP_REDIRECT, None).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
}
