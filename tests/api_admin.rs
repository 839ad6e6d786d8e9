//! Admin routes, operations routes and the OpenAPI document through the real app.

use actix_web::http::{Method, StatusCode};
use actix_web::test::TestRequest;
use serde_json::{json, Value};

use crate::app;
use crate::harness::in_process::*;

fn served_schema(name: &str) -> Value {
    let mut doc = oidcvault::api::openapi::document();
    let mut schema = doc["components"]["schemas"][name].take();
    // Resolve nothing: these component schemas have no $ref.
    schema["$schema"] = json!("https://json-schema.org/draft/2020-12/schema");
    schema
}

#[actix_web::test]
async fn domains_add_list_remove() {
    let env = Env::new();
    let op = env.operator().await;
    let app = app!(env);
    let r = call(
        &app,
        post_json("/api/v1/admin/domains/", &op, r#"{"domain": "Acme.com"}"#),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
    assert_eq!(r.body["domain"], "acme.com");
    assert_schema(&served_schema("Domain"), &r.body, "domain create");
    let id = r.body["id"].as_u64().unwrap();

    for (body, field) in [
        (r#"{"domain": "acme.com"}"#, "domain"),
        (r#"{"domain": "not a host"}"#, "domain"),
        (r#"{"domain": 5}"#, "domain"),
        (r#"{}"#, "domain"),
        ("[]", "non_field_errors"),
    ] {
        let r = call(&app, post_json("/api/v1/admin/domains/", &op, body)).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {r:?}");
        assert!(r.body[field].is_array(), "{body}: {r:?}");
    }
    let l = call(&app, get("/api/v1/admin/domains", &op)).await;
    assert_eq!(l.status, StatusCode::OK);
    assert_eq!(l.body.as_array().map(Vec::len), Some(1), "{l:?}");

    // Removing the domain takes its config and its tokens.
    let (_, dtoken) = {
        let (_, t) = env
            .vault
            .create_token(
                &oidcvault::vault::TokenTarget::Domain("acme.com".into()),
                None,
            )
            .await
            .unwrap();
        ((), t.expose().to_owned())
    };
    let r = call(
        &app,
        post_json(
            CONFIG_PATH,
            &dtoken,
            r#"{"client_id": "x", "client_secret": "y-secret"}"#,
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    let r = call(&app, delete(&format!("/api/v1/admin/domains/{id}/"), &op)).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{r:?}");
    let r = call(&app, get(CONFIG_PATH, &dtoken)).await;
    assert_eq!(
        r.status,
        StatusCode::UNAUTHORIZED,
        "token of a removed domain: {r:?}"
    );
    assert!(env.vault.store().config(id).unwrap().is_none());
    let r = call(&app, delete(&format!("/api/v1/admin/domains/{id}/"), &op)).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{r:?}");
    let r = call(&app, delete("/api/v1/admin/domains/abc/", &op)).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{r:?}");
}

#[actix_web::test]
async fn tokens_create_list_revoke() {
    let env = Env::new();
    env.domain("acme.com").await;
    let op = env.operator().await;
    let app = app!(env);
    let r = call(
        &app,
        post_json("/api/v1/admin/tokens/", &op, r#"{"domain": "acme.com"}"#),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
    assert_schema(&served_schema("TokenCreated"), &r.body, "token create");
    let token = r.body["token"].as_str().unwrap().to_owned();
    let id = r.body["id"].as_u64().unwrap();
    assert_eq!(r.body["domain"], "acme.com");
    let r = call(&app, get(CONFIG_PATH, &token)).await;
    assert_eq!(
        r.status,
        StatusCode::NOT_FOUND,
        "new token works (no config yet): {r:?}"
    );

    let r = call(
        &app,
        post_json("/api/v1/admin/tokens/", &op, r#"{"operator": true}"#),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
    assert_eq!(r.body["domain"], Value::Null);
    let op2 = r.body["token"].as_str().unwrap().to_owned();

    for body in [
        r#"{}"#,
        r#"{"operator": false}"#,
        r#"{"domain": "acme.com", "operator": true}"#,
        r#"{"domain": "nosuch.com"}"#,
        r#"{"operator": "yes"}"#,
    ] {
        let r = call(&app, post_json("/api/v1/admin/tokens/", &op, body)).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {r:?}");
    }

    let l = call(&app, get("/api/v1/admin/tokens/", &op2)).await;
    assert_eq!(l.status, StatusCode::OK);
    assert!(
        !l.raw.contains(&token) && !l.raw.contains(&op2),
        "token values listed: {}",
        l.raw
    );
    assert!(!l.raw.contains("\"token\""), "{}", l.raw);
    let list = l.body.as_array().unwrap();
    assert_eq!(list.len(), 4, "{l:?}");
    for t in list {
        assert_schema(&served_schema("Token"), t, "token list item");
    }

    let r = call(&app, delete(&format!("/api/v1/admin/tokens/{id}/"), &op)).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{r:?}");
    let r = call(&app, get(CONFIG_PATH, &token)).await;
    assert_eq!(
        r.status,
        StatusCode::UNAUTHORIZED,
        "revoked token still works: {r:?}"
    );
    let r = call(&app, delete(&format!("/api/v1/admin/tokens/{id}/"), &op)).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{r:?}");
}

#[actix_web::test]
async fn health_and_readiness() {
    let env = Env::new();
    let app = app!(env);
    for path in ["/healthz", "/readyz"] {
        let r = call(&app, TestRequest::get().uri(path)).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {r:?}");
    }
    let r = call(&app, TestRequest::post().uri("/healthz")).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.header("allow"), Some("GET"));
}

/// The served document and the code cannot drift: every path and method it
/// lists is served, and every other method on those paths answers 405.
#[actix_web::test]
async fn openapi_document_matches_the_routes_and_the_seed() {
    let env = Env::new();
    let (_, _) = env.domain("acme.com").await;
    let op = env.operator().await;
    let app = app!(env);
    let r = call(&app, TestRequest::get().uri("/api/v1/openapi.json")).await;
    assert_eq!(r.status, StatusCode::OK);
    let doc = r.body;
    assert_eq!(doc["openapi"], "3.1.0");
    let methods = ["get", "post", "put", "patch", "delete"];
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.len() >= 8, "{paths:?}");
    for (path, item) in paths {
        let concrete = path.replace("{id}", "1");
        for m in methods {
            // A body of the operation's documented media type (JSON elsewhere):
            // `/sso/token` takes a form, and refuses another one before it
            // looks at credentials.
            let (media, payload) = match item[m]["requestBody"]["content"].as_object() {
                Some(c) if c.contains_key("application/x-www-form-urlencoded") => {
                    ("application/x-www-form-urlencoded", "")
                }
                _ => ("application/json", "{}"),
            };
            let req = TestRequest::default()
                .method(Method::from_bytes(m.to_uppercase().as_bytes()).unwrap())
                .uri(&concrete)
                .insert_header(bearer(&op))
                .insert_header(("Content-Type", media))
                .insert_header(("X-Enterprise-Domain", "acme.com"))
                .set_payload(payload);
            let r = call(&app, req).await;
            if item.get(m).is_some() {
                assert_ne!(
                    r.status,
                    StatusCode::METHOD_NOT_ALLOWED,
                    "{m} {path} is documented but not served"
                );
                assert!(!r.status.is_server_error(), "{m} {path}: {r:?}");
                let documented: Vec<&String> =
                    item[m]["responses"].as_object().unwrap().keys().collect();
                assert!(
                    documented.iter().any(|c| *c == r.status.as_str()),
                    "{m} {path} answered {} which is not documented ({documented:?})",
                    r.status
                );
                // The security the document states is the one served: an
                // operation with `security: []` answers without a token, any
                // other one asks for it (401).
                let anonymous = TestRequest::default()
                    .method(Method::from_bytes(m.to_uppercase().as_bytes()).unwrap())
                    .uri(&concrete)
                    .insert_header(("Content-Type", media))
                    .set_payload(payload);
                let r = call(&app, anonymous).await;
                let open = item[m]["security"].as_array().is_some_and(Vec::is_empty);
                assert_eq!(
                    r.status == StatusCode::UNAUTHORIZED,
                    !open,
                    "{m} {path}: documented security {} but answered {} without a token",
                    item[m]["security"],
                    r.status
                );
                // ... and the 401's challenge names the documented scheme
                // (`bearer` for tokens, `basic` for an application's credentials).
                if !open {
                    let requirement = item[m]["security"][0].as_object().unwrap();
                    assert_eq!(requirement.len(), 1, "{m} {path}: {requirement:?}");
                    let name = requirement.keys().next().unwrap();
                    let scheme = doc["components"]["securitySchemes"][name]["scheme"]
                        .as_str()
                        .unwrap_or_else(|| panic!("{m} {path}: no security scheme {name}"));
                    let challenge = r.header("www-authenticate").unwrap_or_default();
                    assert!(
                        challenge
                            .to_ascii_lowercase()
                            .starts_with(&format!("{scheme} ")),
                        "{m} {path}: documented scheme {scheme} but the challenge is {challenge:?}"
                    );
                }
            } else {
                assert_eq!(
                    r.status,
                    StatusCode::METHOD_NOT_ALLOWED,
                    "{m} {path} served but not documented"
                );
            }
        }
    }
    // The seed's schema: same properties with the same types, same required list.
    let seed = seed_schema();
    let ours = &doc["components"]["schemas"]["EnterpriseOIDCConfig"];
    for (name, prop) in seed["properties"].as_object().unwrap() {
        assert_eq!(
            ours["properties"][name]["type"], prop["type"],
            "type of {name}"
        );
        if prop.get("format").is_some() {
            assert_eq!(
                ours["properties"][name]["format"], prop["format"],
                "format of {name}"
            );
        }
    }
    assert_eq!(ours["required"], seed["required"]);
    for ro in [
        "id",
        "enterprise_domain",
        "client_secret_masked",
        "created_at",
        "updated_at",
    ] {
        assert_eq!(ours["properties"][ro]["readOnly"], true, "{ro} readOnly");
    }
    let desc = ours["properties"]["client_secret"]["description"]
        .as_str()
        .unwrap_or_default();
    assert!(
        desc.contains("Write-accepted") && desc.contains("masked"),
        "{desc}"
    );
    assert!(ours["properties"]["client_secret"]
        .get("readOnly")
        .is_none());
}

/// `GET /api/v1/auth/whoami/`: any valid token says who it is; 401 otherwise.
#[actix_web::test]
async fn whoami_tells_the_kind_of_token() {
    const WHOAMI: &str = "/api/v1/auth/whoami/";
    let env = Env::new();
    let (domain, token) = env.domain("acme.com").await;
    let op = env.operator().await;
    let app = app!(env);

    let r = call(&app, get(WHOAMI, &token)).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_schema(&served_schema("WhoAmI"), &r.body, "whoami (domain)");
    assert_eq!(r.body["kind"], "domain");
    assert_eq!(r.body["domain"], "acme.com");
    let domain_token_id = r.body["token_id"].as_u64().unwrap();
    assert!(
        token.starts_with(&format!("ovt_{domain_token_id}_")),
        "{r:?}"
    );

    let r = call(&app, get(WHOAMI, &op)).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_schema(&served_schema("WhoAmI"), &r.body, "whoami (operator)");
    assert_eq!(r.body["kind"], "operator");
    assert_eq!(r.body["domain"], Value::Null);
    let op_id = r.body["token_id"].as_u64().unwrap();
    assert!(op.starts_with(&format!("ovt_{op_id}_")), "{r:?}");

    // Without the trailing slash too; other methods: 405.
    let r = call(&app, get(WHOAMI.trim_end_matches('/'), &op)).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    let r = call(&app, post_json(WHOAMI, &op, "{}")).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED, "{r:?}");
    assert_eq!(r.header("allow"), Some("GET"));

    // 401 with the usual challenge: no token, an unknown one, a revoked one.
    let r = call(
        &app,
        delete(&format!("/api/v1/admin/domains/{}/", domain.id), &op),
    )
    .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{r:?}");
    for req in [
        TestRequest::get().uri(WHOAMI),
        TestRequest::get().uri(WHOAMI).insert_header((
            "Authorization",
            "Bearer ovt_1_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        )),
        get(WHOAMI, &token), // its domain removed, and the token with it
    ] {
        let r = call(&app, req).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{r:?}");
        assert!(
            r.header("www-authenticate")
                .is_some_and(|h| h.starts_with("Bearer")),
            "{r:?}"
        );
        assert!(r.body["detail"].is_string(), "{r:?}");
    }
}

/// The broker's admin routes answer what the document says: `GET /api/v1/sso/`
/// its `SsoInfo`; the sign-in test's body is a JSON object (or nothing), as
/// every JSON body of the API.
#[actix_web::test]
async fn sso_admin_routes_follow_the_document() {
    const TEST: &str = "/api/v1/enterprises/oidc/sign-in-test/";
    let env = Env::new();
    let (_, token) = env.domain("acme.com").await;
    let app = app!(env);
    let r = call(&app, get("/api/v1/sso/", &token)).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_schema(&served_schema("SsoInfo"), &r.body, "sso info");

    for (body, field) in [
        ("[]", "non_field_errors"),
        ("5", "non_field_errors"),
        (r#"{"login_hint": 5}"#, "login_hint"),
        (r#"{"login_hint": ["a@acme.com"]}"#, "login_hint"),
    ] {
        let r = call(&app, post_json(TEST, &token, body)).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {r:?}");
        assert!(r.body[field][0].is_string(), "{body}: {r:?}");
    }
    // A well-formed request on a server without `server.public_url`: 400 `detail`.
    for body in [
        "",
        "{}",
        r#"{"login_hint": null}"#,
        r#"{"login_hint": "a@acme.com"}"#,
    ] {
        let r = call(&app, post_json(TEST, &token, body)).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {r:?}");
        let detail = r.body["detail"].as_str().unwrap_or_default();
        assert!(detail.contains("public_url"), "{body}: {r:?}");
    }
}
