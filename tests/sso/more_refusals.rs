//! Refusals beyond the issue's list: what else a provider (or an attacker in
//! its place) can send: `alg: none` or HS256 even when the document lists them,
//! ID tokens missing required claims, token responses without an ID token,
//! a code from another sign-in, userinfo held to the same rules, a provider
//! that is down. Each: no code, the application's error and state, an
//! `sso.login` event with the reason.

use serde_json::json;

use super::*;
use crate::app;
use crate::harness::stub_idp::Signing;

#[actix_web::test]
async fn refused_alg_none_even_when_the_document_lists_it() {
    refused(
        |i| {
            i.set_doc(
                "id_token_signing_alg_values_supported",
                json!(["ES256", "none"]),
            );
            i.signing(Signing::AlgNone);
        },
        BAD_TOKEN,
        "alg_none",
    )
    .await;
}

#[actix_web::test]
async fn refused_email_verified_false_as_a_string() {
    refused(
        |i| i.claims(json!({"email_verified": "false"})),
        DENIED,
        "email_not_verified",
    )
    .await;
}

/// Claims an ID token must carry (OpenID Connect Core §2): without one, or with
/// an empty `sub` (every such user would share one profile id), refused.
#[actix_web::test]
async fn refused_id_tokens_without_required_claims_or_with_an_empty_sub() {
    for (claims, what) in [
        (json!({"exp": null}), "no exp"),
        (json!({"aud": null}), "no aud"),
        (json!({"iss": null}), "no iss"),
        (json!({"sub": null}), "no sub"),
        (json!({"sub": ""}), "empty sub"),
        (json!({"iat": null}), "no iat"),
    ] {
        let w = World::new().await;
        let app = app!(w.env);
        let creds = w.setup(&app).await;
        w.idp.claims(claims);
        let mut browser = Browser::new();
        let landing = w
            .sign_in(&app, &mut browser, &authorize_path(&creds, "rq", &[]))
            .await;
        assert_eq!(
            landing.param("code"),
            None,
            "{what}: a code was minted\n{}",
            browser.trace()
        );
        assert_eq!(
            landing.param("error"),
            Some("access_denied"),
            "{what}: {landing:?}"
        );
        let logins = w.logins();
        let (detail, whole) = logins.last().expect("an sso.login event");
        assert!(detail.contains("outcome=failure"), "{what}: {whole}");
    }
}

#[actix_web::test]
async fn refused_token_responses_without_an_id_token_or_with_garbage() {
    for (body, reason) in [
        (
            r#"{"access_token":"at","token_type":"Bearer"}"#,
            "no_id_token",
        ),
        (
            r#"{"access_token":"at","token_type":"Bearer","id_token":"not.a.jwt"}"#,
            "malformed_id_token",
        ),
        // Not JSON: the broker names it as having no ID token.
        (r#"{"id_token":"#, "no_id_token"),
    ] {
        refused(
            |i| i.knobs().token_error = Some((200, body.to_owned())),
            BAD_TOKEN,
            reason,
        )
        .await;
    }
}

/// Code injection: a code the attacker got for a sign-in of their own, put in
/// the victim's callback (with the victim's state), is exchanged with the
/// victim's PKCE verifier, which the provider refuses.
#[actix_web::test]
async fn refused_a_code_from_another_sign_in() {
    let w = World::new().await;
    let app = app!(w.env);
    let creds = w.setup(&app).await;
    let idp = w.idp.origin();
    let to_callback = |u: &str| u.contains("/sso/callback");
    let mut victim = Browser::new();
    let victim_cb = victim
        .follow_app_until(
            &app,
            PUBLIC_URL,
            &idp,
            &authorize_path(&creds, "victim", &[]),
            to_callback,
        )
        .await
        .unwrap_or_else(|l| panic!("{l:?}"));
    let mut attacker = Browser::new();
    let attacker_cb = attacker
        .follow_app_until(
            &app,
            PUBLIC_URL,
            &idp,
            &authorize_path(&creds, "attacker", &[]),
            to_callback,
        )
        .await
        .unwrap_or_else(|l| panic!("{l:?}"));
    let param = |u: &str, name: &str| {
        url::Url::parse(u)
            .unwrap()
            .query_pairs()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.into_owned())
            .unwrap()
    };
    let injected = with_query(
        "/sso/callback",
        &[
            ("code", &param(&attacker_cb, "code")),
            ("state", &param(&victim_cb, "state")),
        ],
    );
    let landing = w.sign_in(&app, &mut victim, &injected).await;
    expect_refused(
        &w,
        &landing,
        &victim,
        "victim",
        BAD_TOKEN,
        "token_endpoint_error",
    );
    let last = w.idp.tokens().pop().expect("a token request");
    assert_eq!(last.outcome, "code_verifier does not match", "{last:?}");
}

/// Userinfo (the ID token has no e-mail) is held to the same rules, and its
/// failure refuses the sign-in.
#[actix_web::test]
async fn refused_userinfo_unverified_outside_the_domain_or_failing() {
    let no_email = json!({"email": null, "email_verified": null});
    refused(
        |i| {
            i.claims(no_email.clone());
            i.userinfo(json!({"email": "carol@acme.com", "email_verified": false}));
        },
        DENIED,
        "email_not_verified",
    )
    .await;
    refused(
        |i| {
            i.claims(no_email.clone());
            i.userinfo(json!({"email": "carol@evil.example"}));
        },
        DENIED,
        "email_outside_domain",
    )
    .await;
    refused(
        |i| {
            i.claims(no_email.clone());
            i.knobs().userinfo_status = Some(500);
        },
        &["access_denied", "temporarily_unavailable"],
        "userinfo_failed",
    )
    .await;
}

/// HS256 with the client secret (OIDC's symmetric option), even listed by the
/// document: the broker verifies with the provider's public keys only.
#[actix_web::test]
async fn refused_hs256_signed_with_the_client_secret() {
    refused(
        |i| {
            i.set_doc(
                "id_token_signing_alg_values_supported",
                json!(["ES256", "HS256"]),
            );
            i.signing(Signing::Hs256ClientSecret);
        },
        BAD_TOKEN,
        "alg_not_allowed",
    )
    .await;
}

/// A provider that is down (its keys unreachable, its token endpoint failing):
/// the application hears `temporarily_unavailable`, not a refusal of the user.
#[actix_web::test]
async fn refused_provider_down_is_temporarily_unavailable() {
    refused(
        |i| {
            let closed = crate::harness::stub_http::closed_port();
            i.set_doc("jwks_uri", json!(format!("http://127.0.0.1:{closed}/jwks")));
        },
        &["temporarily_unavailable"],
        "jwks_unavailable",
    )
    .await;
    refused(
        |i| i.knobs().token_error = Some((503, r#"{"error":"temporarily_unavailable"}"#.into())),
        &["temporarily_unavailable"],
        "token_endpoint_error",
    )
    .await;
}
