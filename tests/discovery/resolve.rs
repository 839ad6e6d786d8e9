//! Resolve on save, refresh, and the global cap on concurrent fetches, against
//! stub identity providers on loopback.

use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::test::TestRequest;
use serde_json::{json, Value};

use super::*;

#[actix_web::test]
async fn resolve_on_save_fills_unset_endpoints_and_explicit_ones_win() {
    let idp = Idp::start();
    let env = env();
    let (_, token) = env.domain("acme.com").await;
    let app = app!(env);
    let body = create_body(
        &idp.discovery_url(),
        json!({"token_endpoint": "https://hand.example.com/token", "userinfo_endpoint": null}),
    );
    let r = call(&app, post_json(CONFIG_PATH, &token, &body)).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.body["authorization_endpoint"], idp.url("/auth"), "{r:?}");
    assert_eq!(
        r.body["token_endpoint"], "https://hand.example.com/token",
        "explicit wins: {r:?}"
    );
    assert_eq!(
        r.body["userinfo_endpoint"],
        idp.url("/me"),
        "null is unset: {r:?}"
    );
    assert_eq!(idp.discovery_hits(), 1);
    assert_schema(
        &seed_schema(),
        &r.body,
        "POST response with discovered endpoints",
    );
    assert!(!r.raw.contains(SECRET), "{}", r.raw);

    // A GET body posted back changes nothing and fetches nothing.
    let g = call(&app, get(CONFIG_PATH, &token)).await;
    let p = call(&app, post_json(CONFIG_PATH, &token, &g.body.to_string())).await;
    assert_eq!(p.status, StatusCode::OK, "{p:?}");
    for f in [
        "authorization_endpoint",
        "token_endpoint",
        "userinfo_endpoint",
    ] {
        assert_eq!(p.body[f], g.body[f], "{f}");
    }
    assert_eq!(
        idp.discovery_hits(),
        1,
        "an unchanged discovery URL is not fetched again"
    );

    // Clearing a hand-set endpoint while naming the discovery URL hands it to
    // discovery; as that moves the token endpoint to another origin than the
    // secret is bound to, the request must carry the secret (issue 11).
    let p = call(
        &app,
        post_json(
            CONFIG_PATH,
            &token,
            &json!({"discovery_url": idp.discovery_url(), "token_endpoint": null}).to_string(),
        ),
    )
    .await;
    assert_eq!(p.status, StatusCode::BAD_REQUEST, "{p:?}");
    assert!(
        p.body["client_secret"][0]
            .as_str()
            .unwrap()
            .contains("bound to https://hand.example.com"),
        "{p:?}"
    );
    assert_eq!(idp.discovery_hits(), 2, "fetched to learn the new origin");
    let p = call(
        &app,
        post_json(
            CONFIG_PATH,
            &token,
            &json!({"discovery_url": idp.discovery_url(), "token_endpoint": null,
                    "client_secret": SECRET})
            .to_string(),
        ),
    )
    .await;
    assert_eq!(p.status, StatusCode::OK, "{p:?}");
    assert_eq!(p.body["token_endpoint"], idp.url("/token"), "{p:?}");
    assert_eq!(idp.discovery_hits(), 3);

    let events = audit_actions(&env).await;
    let saves: Vec<&Value> = events
        .iter()
        .filter(|e| e["action"].as_str().unwrap().starts_with("config."))
        .collect();
    assert_eq!(
        saves[0]["detail"], "endpoints from discovery: authorization_endpoint, userinfo_endpoint",
        "{events:?}"
    );
}

#[actix_web::test]
async fn with_resolve_on_save_off_nothing_is_fetched() {
    let idp = Idp::start();
    let env = Env::with_config(&OUTBOUND.replace(
        "resolve_discovery_on_save = true",
        "resolve_discovery_on_save = false",
    ));
    let (_, token) = env.domain("acme.com").await;
    let app = app!(env);
    let r = call(
        &app,
        post_json(
            CONFIG_PATH,
            &token,
            &create_body(&idp.discovery_url(), json!({})),
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.body["authorization_endpoint"], Value::Null);
    assert_eq!(idp.stub.hits(), 0);
}

/// Each failure: 400 on discovery_url with a message naming the problem, and
/// nothing stored (on create no config, on update the old one unchanged).
#[actix_web::test]
async fn bad_discovery_urls_are_400_and_nothing_is_stored() {
    let idp = Idp::start();
    let wrong_issuer = Idp::start();
    wrong_issuer.set("issuer", json!("https://idp.example.com"));
    let metadata_jwks = Idp::start();
    metadata_jwks.set(
        "jwks_uri",
        json!("https://169.254.169.254/latest/meta-data/"),
    );
    let plain_http_token = Idp::start();
    plain_http_token.set("token_endpoint", json!("http://idp.example.com/token"));
    let no_auth = Idp::start();
    no_auth
        .doc
        .lock()
        .unwrap()
        .as_object_mut()
        .unwrap()
        .remove("authorization_endpoint");
    let port = closed_port();
    let cases: Vec<(String, &str)> = vec![
        (
            wrong_issuer.discovery_url(),
            "does not match the URL it came from",
        ),
        (
            idp.url("/html/.well-known/openid-configuration"),
            "did not answer with a JSON discovery document",
        ),
        (
            idp.url("/missing/.well-known/openid-configuration"),
            "answered HTTP 404",
        ),
        (
            format!("http://127.0.0.1:{port}{WELL_KNOWN}"),
            "could not connect",
        ),
        (
            idp.url("/openid"),
            "its issuer followed by /.well-known/openid-configuration",
        ),
        (metadata_jwks.discovery_url(), "jwks_uri cannot be used"),
        (
            plain_http_token.discovery_url(),
            "token_endpoint cannot be used",
        ),
        (no_auth.discovery_url(), "it has no authorization_endpoint"),
        (
            format!("http://[::1]:{port}{WELL_KNOWN}"),
            "outbound.allow_http_hosts",
        ),
    ];
    let env = env();
    let (domain, token) = env.domain("acme.com").await;
    let app = app!(env);
    for (url, expected) in &cases {
        let r = call(
            &app,
            post_json(CONFIG_PATH, &token, &create_body(url, json!({}))),
        )
        .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{url}: {r:?}");
        let msg = r.body["discovery_url"][0].as_str().unwrap_or_default();
        assert!(
            msg.contains(expected),
            "{url}: expected {expected:?} in {msg:?}"
        );
        assert_eq!(r.body.as_object().unwrap().len(), 1, "{r:?}");
        assert!(!r.raw.contains(SECRET));
        assert!(
            env.vault.get_config(&domain).unwrap().is_none(),
            "{url}: stored"
        );
    }
    let wrong = call(
        &app,
        post_json(
            CONFIG_PATH,
            &token,
            &create_body(&wrong_issuer.discovery_url(), json!({})),
        ),
    )
    .await;
    let msg = wrong.body["discovery_url"][0].as_str().unwrap();
    assert!(
        msg.contains("https://idp.example.com/.well-known/openid-configuration"),
        "says what to use: {msg}"
    );

    // On update: the stored config stays as it was.
    let ok = call(
        &app,
        post_json(
            CONFIG_PATH,
            &token,
            &create_body(&idp.discovery_url(), json!({})),
        ),
    )
    .await;
    assert_eq!(ok.status, StatusCode::OK, "{ok:?}");
    for (url, _) in &cases {
        let r = call(
            &app,
            post_json(
                CONFIG_PATH,
                &token,
                &json!({"discovery_url": url, "client_id": "changed"}).to_string(),
            ),
        )
        .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{url}: {r:?}");
    }
    let after = call(&app, get(CONFIG_PATH, &token)).await;
    assert_eq!(after.body, ok.body, "a refused update changed the config");
}

#[actix_web::test]
async fn every_other_check_comes_before_the_fetch() {
    let idp = Idp::start();
    let env = env();
    let (_, token) = env.domain("acme.com").await;
    let op = env.operator().await;
    let app = app!(env);
    let body = create_body(&idp.discovery_url(), json!({}));
    let r = call(
        &app,
        TestRequest::post()
            .uri(CONFIG_PATH)
            .insert_header(("Content-Type", "application/json"))
            .set_payload(body.clone()),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = call(
        &app,
        TestRequest::post()
            .uri(CONFIG_PATH)
            .insert_header(bearer(&token))
            .insert_header(("Content-Type", "text/plain"))
            .set_payload(body.clone()),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let r = call(
        &app,
        post_json(CONFIG_PATH, &op, &body).insert_header(("X-Enterprise-Domain", "nosuch.com")),
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = call(
        &app,
        post_json(
            CONFIG_PATH,
            &token,
            &create_body(&idp.discovery_url(), json!({"client_id": 5})),
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        r.body["client_id"].is_array() && r.body.get("discovery_url").is_none(),
        "{r:?}"
    );
    let r = call(
        &app,
        post_json(
            CONFIG_PATH,
            &token,
            &json!({"client_id": "x", "discovery_url": idp.discovery_url()}).to_string(),
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.body["client_secret"].is_array(), "{r:?}");
    assert_eq!(
        idp.stub.hits(),
        0,
        "a request refused anyway fetched discovery"
    );
}

#[actix_web::test]
async fn refresh_reports_what_changed_and_never_overwrites_a_hand_set_endpoint() {
    let idp = Idp::start();
    let env = env();
    let (_, token) = env.domain("acme.com").await;
    let app = app!(env);
    let hand = "https://hand.example.com/authorize";
    let r = call(
        &app,
        post_json(
            CONFIG_PATH,
            &token,
            &create_body(
                &idp.discovery_url(),
                json!({"authorization_endpoint": hand}),
            ),
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");

    // Nothing new at the provider: nothing changes, nothing is written.
    let before = audit_actions(&env).await.len();
    let r = call(&app, post_json(REFRESH, &token, "")).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.body["changed"], json!([]), "{r:?}");
    assert_eq!(
        r.body["kept"][0]["field"], "authorization_endpoint",
        "{r:?}"
    );
    assert_eq!(r.body["kept"][0]["value"], hand);
    assert_eq!(r.body["kept"][0]["discovered"], idp.url("/auth"));
    // Only the attempt is recorded (before the fetch), no change.
    let events = audit_actions(&env).await;
    assert_eq!(events.len(), before + 1, "{events:?}");
    assert_eq!(events[before]["action"], "config.refresh.start");

    // The provider moves its token endpoint and drops userinfo.
    idp.set("token_endpoint", json!(idp.url("/token2")));
    idp.set("userinfo_endpoint", Value::Null);
    idp.set("authorization_endpoint", json!(idp.url("/auth2")));
    let r = call(&app, post_json(REFRESH, &token, "")).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(
        r.body["changed"],
        json!([
            {"field": "token_endpoint", "old": idp.url("/token"), "new": idp.url("/token2")},
            {"field": "userinfo_endpoint", "old": idp.url("/me"), "new": null},
        ]),
        "{r:?}"
    );
    assert_eq!(r.body["config"]["token_endpoint"], idp.url("/token2"));
    assert_schema(&served("DiscoveryRefresh"), &r.body, "refresh answer");
    assert_eq!(
        r.body["config"]["authorization_endpoint"], hand,
        "hand-set endpoint overwritten"
    );
    assert_eq!(r.body["kept"][0]["discovered"], idp.url("/auth2"));
    assert!(!r.raw.contains(SECRET));
    let g = call(&app, get(CONFIG_PATH, &token)).await;
    assert_eq!(g.body, r.body["config"], "the refresh is stored");
    let events = audit_actions(&env).await;
    let last = events.last().unwrap();
    assert_eq!(last["action"], "config.refresh", "{events:?}");
    assert_eq!(
        last["fields"],
        json!(["token_endpoint", "userinfo_endpoint"])
    );

    // The provider's issuer changes: refresh refuses, nothing changes.
    idp.set("issuer", json!("https://elsewhere.example.com"));
    let r = call(&app, post_json(REFRESH, &token, "")).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{r:?}");
    assert!(
        r.body["discovery_url"][0]
            .as_str()
            .unwrap()
            .contains("does not match"),
        "{r:?}"
    );
    assert_eq!(call(&app, get(CONFIG_PATH, &token)).await.body, g.body);
}

#[actix_web::test]
async fn refresh_and_test_need_a_config_and_refresh_a_discovery_url() {
    let env = env();
    let (_, token) = env.domain("acme.com").await;
    let op = env.operator().await;
    let app = app!(env);
    for path in [REFRESH, TEST, "/api/v1/enterprises/oidc/config/refresh"] {
        let r = call(&app, post_json(path, &token, "")).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}: {r:?}");
        let r = call(&app, TestRequest::post().uri(path)).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{path}: {r:?}");
        let r = call(&app, post_json(path, &op, "")).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}: {r:?}");
        assert_eq!(r.body["detail"], "Enterprise domain not found");
        let r = call(&app, get(path, &token)).await;
        assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED, "{path}: {r:?}");
        assert_eq!(r.header("allow"), Some("POST"));
    }
    let r = call(
        &app,
        post_json(
            CONFIG_PATH,
            &token,
            r#"{"client_id": "x", "client_secret": "y-secret"}"#,
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = call(&app, post_json(REFRESH, &token, "")).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{r:?}");
    assert!(
        r.body["discovery_url"][0]
            .as_str()
            .unwrap()
            .contains("No discovery URL"),
        "{r:?}"
    );
}

/// Beyond `outbound.max_concurrent_fetches`, a fetch is refused at once: 503
/// with Retry-After (the server's capacity, not this client's quota), nothing
/// fetched or stored; once the running fetch ends, the same request works.
#[actix_web::test]
async fn a_fetch_beyond_the_global_cap_is_503_at_once() {
    let idp = Idp::start();
    let slow = Stub::start("127.0.0.1", |_| Reply::Silence(Duration::from_secs(4)));
    let env = Env::with_config(&format!(
        "{}max_concurrent_fetches = 1\n",
        OUTBOUND.replace("timeout_secs = 5", "timeout_secs = 2")
    ));
    let (_, slow_token) = env.domain("slow.example").await;
    let (_, token) = env.domain("acme.com").await;
    let app = app!(env);
    let hanging = call(
        &app,
        post_json(
            CONFIG_PATH,
            &slow_token,
            &create_body(&slow.url(WELL_KNOWN), json!({})),
        ),
    );
    let refused = async {
        // While the slow provider holds the only slot: wait until its fetch has
        // reached the provider (which then answers nothing for 4 s).
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while slow.hits() == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the slow fetch did not reach its provider within 5 s (hits: {})",
                slow.hits()
            );
            actix_web::rt::time::sleep(Duration::from_millis(10)).await;
        }
        let started = std::time::Instant::now();
        let r = call(
            &app,
            post_json(
                CONFIG_PATH,
                &token,
                &create_body(&idp.discovery_url(), json!({})),
            ),
        )
        .await;
        (r, started.elapsed())
    };
    let (slow_reply, (r, took)) = tokio::join!(hanging, refused);
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{r:?}");
    assert_eq!(r.header("retry-after"), Some("1"), "{r:?}");
    let detail = r.body["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("outbound.max_concurrent_fetches"), "{r:?}");
    assert!(
        took < Duration::from_millis(1500),
        "not refused at once: {took:?}"
    );
    assert_eq!(idp.stub.hits(), 0, "a refused fetch reached the provider");
    assert_eq!(slow_reply.status, StatusCode::BAD_REQUEST, "{slow_reply:?}");
    assert_eq!(
        call(&app, get(CONFIG_PATH, &token)).await.status,
        StatusCode::NOT_FOUND,
        "a refused save stored nothing"
    );
    // The slot is free again.
    let r = call(
        &app,
        post_json(
            CONFIG_PATH,
            &token,
            &create_body(&idp.discovery_url(), json!({})),
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
}
