//! Against a real OpenID Provider, panva's `oidc-provider` from npm (ignored by
//! a plain `cargo test`; `scripts/test.sh` runs them by this module's path,
//! `discovery::provider`).

use actix_web::http::StatusCode;
use serde_json::{json, Value};

use super::*;

use crate::harness::oidc_provider::Provider;

// ---- against a real OpenID Provider ------------------------------------------------------

/// panva's oidc-provider (`harness::oidc_provider`) with the test client.
fn start_provider(port: u16, token_path: &str, auth_method: &str) -> Provider {
    Provider::start_with(
        port,
        &[
            ("OP_CLIENT_ID", CLIENT_ID),
            ("OP_CLIENT_SECRET", SECRET),
            ("OP_TOKEN_PATH", token_path),
            ("OP_AUTH_METHOD", auth_method),
        ],
    )
}

#[actix_web::test]
#[ignore = "needs oidc-provider from npm: scripts/test.sh installs it and runs this \
            (cargo test --test integration discovery::provider -- --ignored)"]
async fn provider_resolve_on_save_and_connection_test() {
    let op = start_provider(0, "/token", "client_secret_basic");
    let env = env();
    let (_, token) = env.domain("acme.com").await;
    let app = app!(env);
    let r = call(
        &app,
        post_json(
            CONFIG_PATH,
            &token,
            &create_body(&op.discovery_url(), json!({})),
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    let i = op.issuer();
    assert_eq!(
        r.body["authorization_endpoint"],
        format!("{i}/auth"),
        "{r:?}"
    );
    assert_eq!(r.body["token_endpoint"], format!("{i}/token"), "{r:?}");
    assert_eq!(r.body["userinfo_endpoint"], format!("{i}/me"), "{r:?}");

    // Right secret: every step passes; the provider answers invalid_grant.
    let t = call(&app, post_json(TEST, &token, "")).await;
    assert_eq!(t.status, StatusCode::OK, "{t:?}");
    assert_eq!(t.body["ok"], true, "{:#}", t.body);
    for s in t.body["steps"].as_array().unwrap() {
        assert_eq!(s["status"], "pass", "{s}");
    }
    assert_eq!(
        step(&t.body, "client_authentication")["provider_error"]["error"],
        "invalid_grant"
    );
    assert!(step(&t.body, "jwks")["detail"]
        .as_str()
        .unwrap()
        .contains("key(s) loaded"));
    assert!(!t.raw.contains(SECRET));

    // Wrong secret: the client step fails with the provider's own error.
    let r = call(
        &app,
        post_json(
            CONFIG_PATH,
            &token,
            r#"{"client_secret": "not-the-provider-secret"}"#,
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let t = call(&app, post_json(TEST, &token, "")).await;
    assert_eq!(t.body["ok"], false, "{:#}", t.body);
    let client = step(&t.body, "client_authentication");
    assert_eq!(client["status"], "fail", "{client}");
    assert_eq!(
        client["provider_error"]["error"], "invalid_client",
        "{client}"
    );
    assert_eq!(
        client["provider_error"]["error_description"], "client authentication failed",
        "{client}"
    );
    for other in [
        "discovery",
        "authorization_endpoint",
        "token_endpoint",
        "userinfo_endpoint",
        "jwks",
    ] {
        assert_eq!(
            step(&t.body, other)["status"],
            "pass",
            "{other}: {:#}",
            t.body
        );
    }
    assert!(!t.raw.contains("not-the-provider-secret"));
    op.stop();
}

#[actix_web::test]
#[ignore = "needs oidc-provider from npm: scripts/test.sh installs it and runs this \
            (cargo test --test integration discovery::provider -- --ignored)"]
async fn provider_client_secret_post_is_used_when_it_is_the_only_method() {
    let op = start_provider(0, "/token", "client_secret_post");
    let env = env();
    let (_, token) = env.domain("acme.com").await;
    let app = app!(env);
    let r = call(
        &app,
        post_json(
            CONFIG_PATH,
            &token,
            &create_body(&op.discovery_url(), json!({})),
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    let t = call(&app, post_json(TEST, &token, "")).await;
    let client = step(&t.body, "client_authentication");
    assert_eq!(client["status"], "pass", "{:#}", t.body);
    assert!(
        client["detail"]
            .as_str()
            .unwrap()
            .contains("client_secret_post"),
        "{client}"
    );
}

#[actix_web::test]
#[ignore = "needs oidc-provider from npm: scripts/test.sh installs it and runs this \
            (cargo test --test integration discovery::provider -- --ignored)"]
async fn provider_refresh_reports_a_changed_endpoint_and_bad_urls_are_400() {
    let op = start_provider(0, "/token", "client_secret_basic");
    let port = op.port;
    let env = env();
    let (domain, token) = env.domain("acme.com").await;
    let app = app!(env);
    let r = call(
        &app,
        post_json(
            CONFIG_PATH,
            &token,
            &create_body(&op.discovery_url(), json!({})),
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    let i = op.issuer();

    // The same provider, restarted on the same port with its token endpoint moved.
    op.stop();
    let moved = start_provider(port, "/oauth2/token", "client_secret_basic");
    assert_eq!(moved.port, port);
    let r = call(&app, post_json(REFRESH, &token, "")).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(
        r.body["changed"],
        json!([{"field": "token_endpoint", "old": format!("{i}/token"), "new": format!("{i}/oauth2/token")}]),
        "{r:?}"
    );
    assert_eq!(
        r.body["config"]["token_endpoint"],
        format!("{i}/oauth2/token")
    );
    let t = call(&app, post_json(TEST, &token, "")).await;
    assert_eq!(t.body["ok"], true, "the moved endpoint works: {:#}", t.body);

    // A wrong issuer (the provider's own document, served from another origin),
    // a URL the provider answers with an error, and an unreachable host: each a
    // clear 400, and nothing changed. (A 200 answer that is not JSON is
    // `bad_discovery_urls_are_400_and_nothing_is_stored`, against a stub.)
    let before = env.vault.get_config(&domain).unwrap();
    let doc: Value = {
        let outbound = oidcvault::outbound::Outbound::clone(&env.data.outbound);
        let url = moved.discovery_url();
        actix_web::web::block(move || outbound.get(&url, "application/json"))
            .await
            .unwrap()
            .expect("the provider's discovery document")
            .json()
            .expect("JSON")
    };
    assert_eq!(doc["issuer"], i);
    let relay = Stub::start("127.0.0.1", move |_| Reply::Json(200, doc.to_string()));
    let cases = [
        (relay.url(WELL_KNOWN), "does not match the URL it came from"),
        (
            format!("http://127.0.0.1:{port}/prefix{WELL_KNOWN}"),
            "answered HTTP 404",
        ),
        (
            format!("http://127.0.0.1:{}{WELL_KNOWN}", closed_port()),
            "could not connect",
        ),
    ];
    for (url, expected) in cases {
        // With the secret: a discovery URL on another origin needs it (issue 11),
        // and the discovery errors are what this checks.
        let r = call(
            &app,
            post_json(
                CONFIG_PATH,
                &token,
                &json!({"discovery_url": url, "client_secret": "another-secret-value"}).to_string(),
            ),
        )
        .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{url}: {r:?}");
        let msg = r.body["discovery_url"][0].as_str().unwrap_or_default();
        assert!(
            msg.contains(expected),
            "{url}: expected {expected:?} in {msg:?}"
        );
    }
    assert_eq!(env.vault.get_config(&domain).unwrap(), before);
    drop(moved);
}
