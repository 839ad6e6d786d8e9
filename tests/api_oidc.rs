//! The seed's resource through the real app: create-then-update semantics,
//! validation of every field, every error status and the order of checks, tenant
//! isolation, and the response against the seed's schema.

use actix_web::http::StatusCode;
use actix_web::test::TestRequest;
use serde_json::{json, Value};

use crate::app;
use crate::harness::in_process::*;

const SEED_BODY: &str =
    r#"{"client_id": "enterprise-app-123", "client_secret": "s3cr3tP@ssw0rd!"}"#;

async fn revealed(env: &Env, domain: &oidcvault::vault::Domain) -> String {
    env.vault
        .reveal_secret(domain)
        .expect("reveal")
        .expect("a config")
        .secret
        .expose()
        .to_owned()
}

#[actix_web::test]
async fn seed_example_creates_and_answers_the_masked_secret() {
    let env = Env::new();
    let (domain, token) = env.domain("acme.com").await;
    let app = app!(env);
    let r = call(&app, post_json(CONFIG_PATH, &token, SEED_BODY)).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.body["client_id"], "enterprise-app-123");
    assert_eq!(r.body["client_secret"], "********0rd!");
    assert_eq!(r.body["client_secret_masked"], "********0rd!");
    assert_eq!(r.body["enterprise_domain"], domain.id);
    for f in [
        "discovery_url",
        "authorization_endpoint",
        "token_endpoint",
        "userinfo_endpoint",
    ] {
        assert_eq!(r.body[f], Value::Null, "{f}: {r:?}");
    }
    assert_eq!(r.body["created_at"], r.body["updated_at"]);
    assert!(
        !r.raw.contains("s3cr3tP@ssw0rd!"),
        "plaintext in response: {}",
        r.raw
    );
    assert_schema(&seed_schema(), &r.body, "POST response (seed schema)");
    let served = oidcvault::api::openapi::document();
    assert_schema(
        &served["components"]["schemas"]["EnterpriseOIDCConfig"],
        &r.body,
        "POST response (served schema)",
    );
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    // The secret is stored encrypted and opens to what was sent.
    assert_eq!(revealed(&env, &domain).await, "s3cr3tP@ssw0rd!");

    let g = call(&app, get(CONFIG_PATH, &token)).await;
    assert_eq!(g.status, StatusCode::OK, "{g:?}");
    assert_eq!(g.body, r.body);
    assert_schema(&seed_schema(), &g.body, "GET response (seed schema)");
}

#[actix_web::test]
async fn update_keeps_omitted_fields_clears_nulls_and_moves_updated_at() {
    let env = Env::new();
    let (domain, token) = env.domain("acme.com").await;
    let app = app!(env);
    let create = json!({
        "client_id": "app-1", "client_secret": "first-secret-value",
        "discovery_url": "https://idp.acme.com/.well-known/openid-configuration",
        "token_endpoint": "https://idp.acme.com/token",
    });
    let c = call(&app, post_json(CONFIG_PATH, &token, &create.to_string())).await;
    assert_eq!(c.status, StatusCode::OK, "{c:?}");

    // Omitted fields keep their values; null clears one URL.
    let u = call(
        &app,
        post_json(
            CONFIG_PATH,
            &token,
            r#"{"client_id": "app-2", "token_endpoint": null}"#,
        ),
    )
    .await;
    assert_eq!(u.status, StatusCode::OK, "{u:?}");
    assert_eq!(u.body["client_id"], "app-2");
    assert_eq!(u.body["discovery_url"], c.body["discovery_url"]);
    assert_eq!(u.body["token_endpoint"], Value::Null);
    assert_eq!(u.body["client_secret_masked"], "********alue");
    assert_eq!(u.body["id"], c.body["id"]);
    assert_eq!(u.body["created_at"], c.body["created_at"]);
    assert!(
        u.body["updated_at"].as_str() > c.body["updated_at"].as_str(),
        "updated_at must move: {} then {}",
        c.body["updated_at"],
        u.body["updated_at"]
    );
    assert_eq!(revealed(&env, &domain).await, "first-secret-value");

    // An empty object is a valid update that changes nothing but updated_at.
    let e = call(&app, post_json(CONFIG_PATH, &token, "{}")).await;
    assert_eq!(e.status, StatusCode::OK, "{e:?}");
    assert!(e.body["updated_at"].as_str() > u.body["updated_at"].as_str());

    // A new secret replaces the stored one.
    let s = call(
        &app,
        post_json(
            CONFIG_PATH,
            &token,
            r#"{"client_secret": "second-secret-value!"}"#,
        ),
    )
    .await;
    assert_eq!(s.status, StatusCode::OK, "{s:?}");
    assert_eq!(s.body["client_secret_masked"], "********lue!");
    assert_eq!(revealed(&env, &domain).await, "second-secret-value!");
}

#[actix_web::test]
async fn a_get_body_posted_back_changes_nothing_but_updated_at() {
    let env = Env::new();
    let (domain, token) = env.domain("acme.com").await;
    let app = app!(env);
    call(&app, post_json(CONFIG_PATH, &token, SEED_BODY)).await;
    let g = call(&app, get(CONFIG_PATH, &token)).await;
    // Read-only fields with other values are ignored, as are unknown fields.
    let mut body = g.body.clone();
    body["id"] = json!(999);
    body["enterprise_domain"] = json!(999);
    body["created_at"] = json!("2000-01-01T00:00:00.000000Z");
    body["client_secret_masked"] = json!("something else");
    body["unknown_field"] = json!({"nested": true});
    let p = call(&app, post_json(CONFIG_PATH, &token, &body.to_string())).await;
    assert_eq!(p.status, StatusCode::OK, "{p:?}");
    for f in [
        "id",
        "enterprise_domain",
        "client_id",
        "client_secret",
        "client_secret_masked",
        "created_at",
    ] {
        assert_eq!(p.body[f], g.body[f], "{f} changed: {p:?}");
    }
    assert_eq!(
        revealed(&env, &domain).await,
        "s3cr3tP@ssw0rd!",
        "posting the mask back must not overwrite the secret with it"
    );
}

#[actix_web::test]
async fn validation_names_the_field_at_fault_and_stores_nothing() {
    let env = Env::new();
    let (_, token) = env.domain("acme.com").await;
    let app = app!(env);
    let long_url = format!("https://idp.example.com/{}", "a".repeat(2048));
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({"client_id": 123, "client_secret": "x-secret"}),
            "client_id",
        ),
        (
            json!({"client_id": "", "client_secret": "x-secret"}),
            "client_id",
        ),
        (
            json!({"client_id": "   ", "client_secret": "x-secret"}),
            "client_id",
        ),
        (
            json!({"client_id": null, "client_secret": "x-secret"}),
            "client_id",
        ),
        (
            json!({"client_id": "a".repeat(256), "client_secret": "x-secret"}),
            "client_id",
        ),
        (json!({"client_secret": "x-secret"}), "client_id"),
        (json!({"client_id": "app"}), "client_secret"),
        (
            json!({"client_id": "app", "client_secret": ""}),
            "client_secret",
        ),
        (
            json!({"client_id": "app", "client_secret": 5}),
            "client_secret",
        ),
        (
            json!({"client_id": "app", "client_secret": null}),
            "client_secret",
        ),
        (
            json!({"client_id": "app", "client_secret": "x".repeat(4097)}),
            "client_secret",
        ),
    ];
    let mut cases = cases;
    for f in [
        "discovery_url",
        "authorization_endpoint",
        "token_endpoint",
        "userinfo_endpoint",
    ] {
        for bad in [
            json!(""),
            json!("not a url"),
            json!("/relative/path"),
            json!("http://idp.example.com/insecure"),
            json!("ftp://idp.example.com/"),
            json!("https://user:pw@idp.example.com/"),
            json!(42),
            json!(long_url),
        ] {
            let mut body = json!({"client_id": "app", "client_secret": "x-secret"});
            body[f] = bad;
            cases.push((body, f));
        }
    }
    for (body, field) in &cases {
        let r = call(&app, post_json(CONFIG_PATH, &token, &body.to_string())).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {r:?}");
        let messages = r.body[*field].as_array();
        assert!(
            messages.is_some_and(|m| !m.is_empty() && m.iter().all(Value::is_string)),
            "{body}: expected field errors for {field}, got {}",
            r.raw
        );
        let g = call(&app, get(CONFIG_PATH, &token)).await;
        assert_eq!(
            g.status,
            StatusCode::NOT_FOUND,
            "a 400 stored something: {body}"
        );
    }
    // Boundaries that are valid.
    let ok = json!({"client_id": "a".repeat(255), "client_secret": "x".repeat(4096),
                    "discovery_url": "http://localhost:8080/.well-known/openid-configuration",
                    "token_endpoint": "http://127.0.0.1/token"});
    let r = call(&app, post_json(CONFIG_PATH, &token, &ok.to_string())).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
}

#[actix_web::test]
async fn malformed_and_empty_bodies_are_400() {
    let env = Env::new();
    let (_, token) = env.domain("acme.com").await;
    let app = app!(env);
    for body in [
        "",
        "not json",
        "{\"client_id\": ",
        "[1, 2]",
        "\"s3cr3t\"",
        "12",
        "null",
    ] {
        let r = call(&app, post_json(CONFIG_PATH, &token, body)).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body:?}: {r:?}");
        assert!(r.body.is_object(), "{body:?}: body {}", r.raw);
        assert!(!r.raw.contains("s3cr3t"), "echoed the body: {}", r.raw);
    }
    // Empty body on create: the required fields are named.
    let r = call(&app, post_json(CONFIG_PATH, &token, "")).await;
    assert!(
        r.body["client_id"].is_array() && r.body["client_secret"].is_array(),
        "{r:?}"
    );
}

#[actix_web::test]
async fn authentication_and_the_order_of_checks() {
    let env = Env::new();
    let (_, token) = env.domain("acme.com").await;
    let operator = env.operator().await;
    let app = app!(env);

    // 401: none, malformed, unknown, wrong scheme — with WWW-Authenticate: Bearer.
    let no_auth = TestRequest::get().uri(CONFIG_PATH);
    let reqs = vec![
        no_auth,
        TestRequest::get()
            .uri(CONFIG_PATH)
            .insert_header(("Authorization", "Bearer nope")),
        TestRequest::get()
            .uri(CONFIG_PATH)
            .insert_header(("Authorization", format!("Basic {token}"))),
        TestRequest::get().uri(CONFIG_PATH).insert_header((
            "Authorization",
            "Bearer ovt_1_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        )),
    ];
    for req in reqs {
        let r = call(&app, req).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{r:?}");
        assert!(
            r.header("www-authenticate")
                .is_some_and(|h| h.starts_with("Bearer")),
            "{r:?}"
        );
        assert!(r.body["detail"].is_string(), "{r:?}");
    }
    // 401 before 415: an unauthenticated text/plain body.
    let r = call(
        &app,
        TestRequest::post()
            .uri(CONFIG_PATH)
            .insert_header(("Content-Type", "text/plain"))
            .set_payload("x"),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{r:?}");
    // 415: another content type, or none.
    let r = call(
        &app,
        TestRequest::post()
            .uri(CONFIG_PATH)
            .insert_header(bearer(&token))
            .insert_header(("Content-Type", "text/plain"))
            .set_payload(SEED_BODY),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{r:?}");
    let r = call(
        &app,
        TestRequest::post()
            .uri(CONFIG_PATH)
            .insert_header(bearer(&token))
            .set_payload(SEED_BODY),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{r:?}");
    // 413: over 64 KiB, before the domain is looked up (operator without header).
    let big = format!("{{\"client_id\": \"{}\"}}", "a".repeat(70 * 1024));
    let r = call(&app, post_json(CONFIG_PATH, &operator, &big)).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{:?}", r.status);
    // 415 before 404.
    let r = call(
        &app,
        TestRequest::post()
            .uri(CONFIG_PATH)
            .insert_header(bearer(&operator))
            .insert_header(("Content-Type", "text/plain"))
            .set_payload("x"),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{r:?}");
    // 404 before 400: operator without X-Enterprise-Domain and an invalid body.
    let r = call(&app, post_json(CONFIG_PATH, &operator, "[1]")).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{r:?}");
    assert_eq!(r.body, json!({"detail": "Enterprise domain not found"}));
    // Operator naming an unknown domain.
    let r = call(
        &app,
        post_json(CONFIG_PATH, &operator, SEED_BODY)
            .insert_header(("X-Enterprise-Domain", "nosuch.com")),
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{r:?}");
    // Operator naming a real domain acts on it.
    let r = call(
        &app,
        post_json(CONFIG_PATH, &operator, SEED_BODY)
            .insert_header(("X-Enterprise-Domain", "ACME.com")),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    let g = call(&app, get(CONFIG_PATH, &token)).await;
    assert_eq!(g.body["client_id"], "enterprise-app-123", "{g:?}");
}

#[actix_web::test]
async fn one_domain_never_sees_or_changes_another() {
    let env = Env::new();
    let (_, token_a) = env.domain("a.example.com").await;
    let (domain_b, token_b) = env.domain("b.example.com").await;
    let app = app!(env);
    let r = call(&app, post_json(CONFIG_PATH, &token_b, SEED_BODY)).await;
    assert_eq!(r.status, StatusCode::OK);

    // A's own view: nothing.
    let r = call(&app, get(CONFIG_PATH, &token_a)).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{r:?}");
    // A naming B: 403 on every method, and B is untouched.
    for req in [
        get(CONFIG_PATH, &token_a),
        delete(CONFIG_PATH, &token_a),
        post_json(
            CONFIG_PATH,
            &token_a,
            r#"{"client_id": "hijack", "client_secret": "hijack-secret"}"#,
        ),
    ] {
        let r = call(
            &app,
            req.insert_header(("X-Enterprise-Domain", "b.example.com")),
        )
        .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{r:?}");
    }
    // A naming itself is fine.
    let r = call(
        &app,
        get(CONFIG_PATH, &token_a).insert_header(("X-Enterprise-Domain", "a.example.com")),
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{r:?}");
    // A writes its own config; B's stays as it was.
    let r = call(
        &app,
        post_json(
            CONFIG_PATH,
            &token_a,
            r#"{"client_id": "a-app", "client_secret": "a-secret-value"}"#,
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let b = call(&app, get(CONFIG_PATH, &token_b)).await;
    assert_eq!(b.body["client_id"], "enterprise-app-123", "{b:?}");
    assert_eq!(revealed(&env, &domain_b).await, "s3cr3tP@ssw0rd!");
    // A domain token on an admin route: 403.
    let r = call(&app, get("/api/v1/admin/domains/", &token_a)).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{r:?}");
}

#[actix_web::test]
async fn delete_then_404_and_paths_without_trailing_slash() {
    let env = Env::new();
    let (_, token) = env.domain("acme.com").await;
    let app = app!(env);
    let bare = CONFIG_PATH.trim_end_matches('/');
    let r = call(&app, post_json(bare, &token, SEED_BODY)).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    let r = call(&app, get(bare, &token)).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    let r = call(&app, delete(CONFIG_PATH, &token)).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{r:?}");
    assert!(r.raw.is_empty());
    let r = call(&app, delete(bare, &token)).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{r:?}");
    let r = call(&app, get(CONFIG_PATH, &token)).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{r:?}");
    assert!(r.body["detail"].is_string());
    // Re-create after delete: a create again (required fields enforced).
    let r = call(
        &app,
        post_json(CONFIG_PATH, &token, r#"{"client_id": "x"}"#),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{r:?}");
}

#[actix_web::test]
async fn unsupported_methods_are_405_with_allow_and_unknown_paths_404() {
    let env = Env::new();
    let (_, token) = env.domain("acme.com").await;
    let app = app!(env);
    for method in ["PUT", "PATCH", "HEAD", "OPTIONS", "TRACE", "FOO"] {
        let req = TestRequest::default()
            .method(actix_web::http::Method::from_bytes(method.as_bytes()).unwrap())
            .uri(CONFIG_PATH)
            .insert_header(bearer(&token));
        let r = call(&app, req).await;
        assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED, "{method}: {r:?}");
        assert_eq!(r.header("allow"), Some("GET, POST, DELETE"), "{method}");
        if method != "HEAD" {
            assert!(r.body["detail"].is_string(), "{method}: {r:?}");
        }
    }
    let r = call(&app, get("/api/v1/nothing-here/", &token)).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{r:?}");
    assert_eq!(r.body["detail"], "Not found.");
}

#[actix_web::test]
async fn concurrent_updates_are_not_torn() {
    let env = Env::new();
    let (_, token) = env.domain("acme.com").await;
    let app = app!(env);
    call(&app, post_json(CONFIG_PATH, &token, SEED_BODY)).await;
    let futures: Vec<_> = (0..32)
        .map(|i| {
            let body =
                format!(r#"{{"client_id": "app-{i}", "client_secret": "secret-number-{i:04}"}}"#);
            call(&app, post_json(CONFIG_PATH, &token, &body))
        })
        .collect();
    let replies = futures_util::future::join_all(futures).await;
    assert!(replies.iter().all(|r| r.status == StatusCode::OK));
    let g = call(&app, get(CONFIG_PATH, &token)).await;
    let id = g.body["client_id"]
        .as_str()
        .unwrap()
        .trim_start_matches("app-")
        .to_owned();
    let n: usize = id.parse().unwrap();
    assert_eq!(
        g.body["client_secret_masked"],
        format!("********{n:04}"),
        "client_id and secret from different writes: {g:?}"
    );
}
