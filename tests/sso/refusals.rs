//! Every sign-in the broker must refuse (issue 13, "Against stub providers"):
//! the application gets its `error` and `state` and no code, and an `sso.login`
//! audit event names the reason; an unknown application or redirect URI gets a
//! 400 page and never a redirect; a replayed `state` or a callback without its
//! cookie never mints a code.

use std::time::Duration;

use serde_json::json;

use super::*;
use crate::app;
use crate::harness::stub_idp::{now, Answer, IssParam, Signing};

// ---- the ID token -------------------------------------------------------------------

#[actix_web::test]
async fn refused_bad_signature() {
    refused(|i| i.signing(Signing::OtherKey), BAD_TOKEN, "bad_signature").await;
}

#[actix_web::test]
async fn refused_alg_none() {
    refused(|i| i.signing(Signing::AlgNone), BAD_TOKEN, "alg_none").await;
}

#[actix_web::test]
async fn refused_alg_not_listed_in_the_discovery_document() {
    refused(
        |i| i.signing(Signing::UnlistedAlg),
        BAD_TOKEN,
        "alg_not_allowed",
    )
    .await;
}

#[actix_web::test]
async fn refused_wrong_iss() {
    refused(
        |i| i.claims(json!({"iss": "https://evil.example"})),
        BAD_TOKEN,
        "wrong_issuer",
    )
    .await;
}

#[actix_web::test]
async fn refused_wrong_aud() {
    refused(
        |i| i.claims(json!({"aud": "another-client"})),
        BAD_TOKEN,
        "wrong_audience",
    )
    .await;
}

#[actix_web::test]
async fn refused_wrong_azp_with_several_audiences() {
    refused(
        |i| {
            i.claims(
                json!({"aud": [stub_idp::CLIENT_ID, "another-client"], "azp": "another-client"}),
            )
        },
        BAD_TOKEN,
        "wrong_azp",
    )
    .await;
}

#[actix_web::test]
async fn refused_expired_outside_the_skew_accepted_inside() {
    refused(
        |i| i.claims(json!({"exp": now() - 300, "iat": now() - 900})),
        BAD_TOKEN,
        "expired",
    )
    .await;
    accepted(|i| i.claims(json!({"exp": now() - 60, "iat": now() - 600}))).await;
}

#[actix_web::test]
async fn refused_not_yet_valid_outside_the_skew_accepted_inside() {
    refused(
        |i| i.claims(json!({"nbf": now() + 300})),
        BAD_TOKEN,
        "not_yet_valid",
    )
    .await;
    accepted(|i| i.claims(json!({"nbf": now() + 60}))).await;
}

#[actix_web::test]
async fn refused_issued_in_the_future_outside_the_skew_accepted_inside() {
    refused(
        |i| i.claims(json!({"iat": now() + 300, "exp": now() + 900})),
        BAD_TOKEN,
        "issued_in_future",
    )
    .await;
    accepted(|i| i.claims(json!({"iat": now() + 60, "exp": now() + 900}))).await;
}

#[actix_web::test]
async fn refused_wrong_nonce_and_no_nonce() {
    refused(
        |i| i.claims(json!({"nonce": "not-the-nonce"})),
        BAD_TOKEN,
        "wrong_nonce",
    )
    .await;
    refused(
        |i| i.claims(json!({"nonce": null})),
        BAD_TOKEN,
        "wrong_nonce",
    )
    .await;
}

#[actix_web::test]
async fn refused_unknown_kid_after_at_most_one_refetch() {
    let w = World::new().await;
    let app = app!(w.env);
    let creds = w.setup(&app).await;
    let mut browser = Browser::new();
    let landing = w
        .sign_in(&app, &mut browser, &authorize_path(&creds, "ok", &[]))
        .await;
    expect_code(&landing, "ok", &browser);
    let before = w.idp.hits("/jwks");
    w.idp.signing(Signing::UnknownKid);
    for i in 0..3 {
        let state = format!("kid-{i}");
        let mut browser = Browser::new();
        let landing = w
            .sign_in(&app, &mut browser, &authorize_path(&creds, &state, &[]))
            .await;
        expect_refused(&w, &landing, &browser, &state, BAD_TOKEN, "unknown_kid");
    }
    let after = w.idp.hits("/jwks");
    assert!(
        after <= before + 1,
        "unknown kids refetched the JWK set {} times (rate limit): {before} -> {after}",
        after - before
    );
}

// ---- the user -----------------------------------------------------------------------

#[actix_web::test]
async fn refused_email_outside_the_domain() {
    for email in ["mallory@evil.com", "x@notacme.com", "x@acme.com.evil.com"] {
        refused(
            |i| i.claims(json!({ "email": email })),
            DENIED,
            "email_outside_domain",
        )
        .await;
    }
}

#[actix_web::test]
async fn refused_email_verified_false() {
    refused(
        |i| i.claims(json!({"email_verified": false})),
        DENIED,
        "email_not_verified",
    )
    .await;
}

#[actix_web::test]
async fn refused_userinfo_with_another_sub() {
    refused(
        |i| {
            i.claims(json!({"email": null, "email_verified": null}));
            i.userinfo(json!({"sub": "someone-else"}));
        },
        BAD_TOKEN,
        "userinfo_sub_mismatch",
    )
    .await;
}

#[actix_web::test]
async fn refused_no_email_anywhere() {
    refused(
        |i| {
            i.claims(json!({"email": null}));
            i.userinfo(json!({"email": null}));
        },
        DENIED,
        "no_email",
    )
    .await;
}

// ---- the provider's answers ---------------------------------------------------------

#[actix_web::test]
async fn refused_idp_error_access_denied_reaches_the_application() {
    let w = World::new().await;
    let app = app!(w.env);
    let creds = w.setup(&app).await;
    w.idp.knobs().answer = Answer::Deny("The user cancelled the sign-in".into());
    let mut browser = Browser::new();
    let landing = w
        .sign_in(&app, &mut browser, &authorize_path(&creds, "deny", &[]))
        .await;
    expect_refused(
        &w,
        &landing,
        &browser,
        "deny",
        &["access_denied"],
        "idp_error",
    );
    let description = landing.param("error_description").unwrap_or_default();
    assert!(
        description.contains("The user cancelled the sign-in"),
        "the provider's words in error_description: {landing:?}"
    );
    assert!(w.idp.tokens().is_empty(), "no token request after an error");
}

#[actix_web::test]
async fn refused_token_endpoint_that_hangs_is_temporarily_unavailable() {
    let w = refused(
        |i| i.knobs().hang = Some(Duration::from_secs(10)),
        &["temporarily_unavailable"],
        "token_endpoint_timeout",
    )
    .await;
    assert_eq!(w.idp.tokens().len(), 1);
}

#[actix_web::test]
async fn refused_token_endpoint_error() {
    refused(
        |i| {
            i.knobs().token_error = Some((
                400,
                r#"{"error":"invalid_grant","error_description":"code expired"}"#.into(),
            ))
        },
        BAD_TOKEN,
        "token_endpoint_error",
    )
    .await;
}

#[actix_web::test]
async fn refused_wrong_rfc_9207_iss_and_missing_iss_when_advertised() {
    refused(
        |i| i.iss_param(IssParam::Wrong("https://evil.example".into())),
        &["access_denied"],
        "wrong_iss_parameter",
    )
    .await;
    let w = refused(
        |i| {
            i.iss_param(IssParam::Issuer);
            i.knobs().iss = IssParam::Omit;
        },
        &["access_denied"],
        "missing_iss_parameter",
    )
    .await;
    assert!(w.idp.tokens().is_empty(), "no code exchange after a mix-up");
}

// ---- the browser --------------------------------------------------------------------

#[actix_web::test]
async fn refused_replayed_state() {
    let w = World::new().await;
    let app = app!(w.env);
    let creds = w.setup(&app).await;
    let mut browser = Browser::new();
    let landing = w
        .sign_in(&app, &mut browser, &authorize_path(&creds, "once", &[]))
        .await;
    expect_code(&landing, "once", &browser);
    let callback = browser
        .hops
        .iter()
        .find_map(|h| {
            h.strip_prefix("GET ")
                .and_then(|h| h.split_once(" -> "))
                .map(|(u, _)| u.to_owned())
                .filter(|u| u.starts_with(&format!("{PUBLIC_URL}/sso/callback")))
        })
        .expect("the callback hop");
    let tokens = w.idp.tokens().len();
    // The same browser (its cookie), the same callback URL again.
    let again = w.sign_in(&app, &mut browser, &callback).await;
    assert_eq!(again.param("code"), None, "{again:?}\n{}", browser.trace());
    expect_error_page(&again, &browser);
    assert_eq!(
        w.idp.tokens().len(),
        tokens,
        "the code went to the provider again"
    );
    expect_failure_event(&w, "unknown_state");
}

#[actix_web::test]
async fn refused_state_without_its_cookie_or_with_another_browsers() {
    let w = World::new().await;
    let app = app!(w.env);
    let creds = w.setup(&app).await;
    let idp = w.idp.origin();
    let is_callback = |u: &str| u.starts_with(&format!("{PUBLIC_URL}/sso/callback"));
    for other_has_a_binding in [false, true] {
        let mut victim = Browser::new();
        let callback = victim
            .follow_app_until(
                &app,
                PUBLIC_URL,
                &idp,
                &authorize_path(&creds, "victim", &[]),
                is_callback,
            )
            .await
            .unwrap_or_else(|l| panic!("stopped at {l:?}"));
        let mut other = Browser::new();
        if other_has_a_binding {
            other
                .follow_app_until(
                    &app,
                    PUBLIC_URL,
                    &idp,
                    &authorize_path(&creds, "other", &[]),
                    is_callback,
                )
                .await
                .unwrap_or_else(|l| panic!("stopped at {l:?}"));
            assert!(!other.cookies.is_empty() && other.cookies != victim.cookies);
        }
        let tokens = w.idp.tokens().len();
        let landing = other.follow_app(&app, PUBLIC_URL, &idp, &callback).await;
        assert_eq!(
            landing.param("code"),
            None,
            "{landing:?}\n{}",
            other.trace()
        );
        match &landing {
            Landing::Page { .. } => expect_error_page(&landing, &other),
            Landing::App { .. } => {
                assert!(landing.param("error").is_some(), "{landing:?}");
                assert_eq!(landing.param("state"), Some("victim"), "{landing:?}");
            }
        }
        assert_eq!(w.idp.tokens().len(), tokens, "the code was exchanged");
        expect_failure_event(&w, "browser_mismatch");
    }
}

// ---- at /sso/authorize --------------------------------------------------------------

#[actix_web::test]
async fn refused_unknown_application_or_unregistered_redirect_uri_is_a_page() {
    let w = World::new().await;
    let app = app!(w.env);
    let creds = w.setup(&app).await;
    let other = w
        .add_app(&app, "Other app", "http://127.0.0.1:4999/other")
        .await;
    let mut cases: Vec<(String, String)> = [
        "http://127.0.0.1:3999/callback/",
        "http://127.0.0.1:3999/callbackx",
        "http://127.0.0.1:3999/callback?x=1",
        "http://127.0.0.1:3999/Callback",
        "http://127.0.0.1:3998/callback",
        "https://127.0.0.1:3999/callback",
        "http://localhost:3999/callback",
        "http://127.0.0.1:3999/callback#f",
        "http://evil.example/callback",
        "//evil.example/callback",
        "",
    ]
    .into_iter()
    .map(|u| (creds.client_id.clone(), u.to_owned()))
    .collect();
    // Another application's URI, an unknown client, no client.
    cases.push((creds.client_id.clone(), other.redirect_uri.clone()));
    cases.push(("ova_unknown".into(), creds.redirect_uri.clone()));
    cases.push((String::new(), creds.redirect_uri.clone()));
    for (client_id, redirect_uri) in cases {
        let path = with_query(
            AUTHORIZE,
            &[
                ("client_id", &client_id),
                ("redirect_uri", &redirect_uri),
                ("state", "s"),
                ("domain", DOMAIN),
            ],
        );
        let mut browser = Browser::new();
        let landing = w.sign_in(&app, &mut browser, &path).await;
        expect_error_page(&landing, &browser);
        assert_eq!(browser.hops.len(), 1, "{}", browser.trace());
    }
    assert!(w.idp.authorizes().is_empty(), "the provider was reached");
}

#[actix_web::test]
async fn refused_unknown_domain_or_plain_pkce_goes_back_with_invalid_request() {
    let w = World::new().await;
    let app = app!(w.env);
    let creds = w.setup(&app).await;
    let cases: [&[(&str, &str)]; 4] = [
        &[("domain", "unknown.example")],
        &[("login_hint", "bob@unknown.example")],
        &[
            ("code_challenge", "abc"),
            ("code_challenge_method", "plain"),
        ],
        &[("login_hint", "no-at-sign")],
    ];
    for extra in cases {
        let mut browser = Browser::new();
        let landing = w
            .sign_in(&app, &mut browser, &authorize_path(&creds, "st-ir", extra))
            .await;
        assert!(
            landing.url().starts_with(APP_REDIRECT),
            "{extra:?}: {landing:?}\n{}",
            browser.trace()
        );
        assert_eq!(landing.param("code"), None);
        assert_eq!(
            landing.param("state"),
            Some("st-ir"),
            "{extra:?}: {landing:?}"
        );
        assert_eq!(
            landing.param("error"),
            Some("invalid_request"),
            "{extra:?}: {landing:?}"
        );
    }
    assert!(w.idp.authorizes().is_empty(), "the provider was reached");
}
