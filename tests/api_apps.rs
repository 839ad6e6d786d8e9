//! The sign-in broker's applications (`/api/v1/admin/apps/`) through the real
//! app: the secret shown once and usable, operators only, validation, removal,
//! the audit trail, and the OpenAPI document's schemas.

use actix_web::http::StatusCode;
use actix_web::test::TestRequest;
use serde_json::{json, Value};

use crate::app;
use crate::harness::in_process::*;

const APPS: &str = "/api/v1/admin/apps/";

fn schema(name: &str) -> Value {
    let mut doc = oidcvault::api::openapi::document();
    let mut root = json!({"$schema": "https://json-schema.org/draft/2020-12/schema"});
    root["$ref"] = json!(format!("#/components/schemas/{name}"));
    root["components"] = doc["components"].take();
    root
}

fn body(name: &str, uris: &[&str]) -> String {
    json!({"name": name, "redirect_uris": uris}).to_string()
}

#[actix_web::test]
async fn create_list_authenticate_remove() {
    let env = Env::new();
    let op = env.operator().await;
    let app = app!(env);
    let uris = [
        "https://billing.example.com/oidc/callback",
        "http://127.0.0.1:8765/cb",
    ];
    let r = call(
        &app,
        post_json(APPS, &op, &body("  Billing portal ", &uris)),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
    assert_schema(&schema("AppCreated"), &r.body, "app create");
    assert_eq!(r.body["name"], "Billing portal", "{r:?}");
    assert_eq!(r.body["redirect_uris"], json!(uris), "{r:?}");
    let id = r.body["id"].as_u64().unwrap();
    let client_id = r.body["client_id"].as_str().unwrap().to_owned();
    let secret = r.body["client_secret"].as_str().unwrap().to_owned();

    // The secret shown works, exactly once shown, never stored or listed.
    let found = env.vault.authenticate_app(&client_id, &secret).unwrap();
    assert_eq!(found.as_ref().map(|a| a.id), Some(id), "{found:?}");
    assert_eq!(found.unwrap().redirect_uris, uris);
    let mut wrong = secret.clone();
    wrong.pop();
    wrong.push(if secret.ends_with('A') { 'B' } else { 'A' });
    for (cid, s) in [
        (client_id.as_str(), wrong.as_str()),
        (client_id.as_str(), ""),
        (client_id.as_str(), op.as_str()),
        ("ova_nosuchclientAAAAAAAAA", secret.as_str()),
        ("", secret.as_str()),
    ] {
        assert!(
            env.vault.authenticate_app(cid, s).unwrap().is_none(),
            "{cid:?} authenticated with a wrong secret"
        );
    }
    assert_eq!(
        env.vault
            .app_by_client_id(&client_id)
            .unwrap()
            .map(|a| a.id),
        Some(id)
    );
    let l = call(&app, get("/api/v1/admin/apps", &op)).await;
    assert_eq!(l.status, StatusCode::OK, "{l:?}");
    assert_eq!(l.body.as_array().map(Vec::len), Some(1), "{l:?}");
    assert_schema(&schema("App"), &l.body[0], "app list item");
    assert_eq!(l.body[0]["client_id"], client_id.as_str());
    assert!(!l.raw.contains(&secret), "the list shows the secret: {l:?}");
    assert!(l.body[0].get("client_secret").is_none(), "{l:?}");
    // A second application gets other credentials.
    let r2 = call(&app, post_json(APPS, &op, &body("Other", &uris[..1]))).await;
    assert_eq!(r2.status, StatusCode::CREATED, "{r2:?}");
    assert_ne!(r2.body["client_id"], client_id.as_str());
    assert_ne!(r2.body["client_secret"], secret.as_str());
    assert!(env
        .vault
        .authenticate_app(&client_id, r2.body["client_secret"].as_str().unwrap())
        .unwrap()
        .is_none());

    // Removed: gone from the list, its credentials no longer work.
    let r = call(&app, delete(&format!("{APPS}{id}/"), &op)).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{r:?}");
    assert!(env
        .vault
        .authenticate_app(&client_id, &secret)
        .unwrap()
        .is_none());
    assert!(env.vault.app_by_client_id(&client_id).unwrap().is_none());
    assert!(env.vault.app(id).unwrap().is_none());
    let r = call(&app, delete(&format!("{APPS}{id}"), &op)).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{r:?}");
    for bad in ["abc", "-1", "99999999999999999999999"] {
        let r = call(&app, delete(&format!("{APPS}{bad}/"), &op)).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{bad}: {r:?}");
    }
    let l = call(&app, get(APPS, &op)).await;
    assert_eq!(l.body.as_array().map(Vec::len), Some(1), "{l:?}");

    // One audit event per change, by this operator, never the secret.
    let (events, _) = env
        .vault
        .audit(&oidcvault::vault::AuditQuery {
            limit: 1000,
            ..Default::default()
        })
        .unwrap();
    let ours: Vec<_> = events
        .iter()
        .filter(|e| e.action.starts_with("app."))
        .collect();
    let actions: Vec<&str> = ours.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(
        actions,
        ["app.create", "app.create", "app.remove"],
        "{events:#?}"
    );
    let op_id = env.vault.authenticate(&op).unwrap().unwrap().token_id();
    for e in &ours {
        assert_eq!(e.actor, Some(op_id), "{e:?}");
        let detail = e.detail.as_deref().unwrap_or_default();
        assert!(detail.contains("client_id ova_"), "{e:?}");
        assert!(!detail.contains("ovs_"), "an event shows a secret: {e:?}");
    }
    assert!(ours[0]
        .detail
        .as_deref()
        .unwrap()
        .contains(&format!("app {id} client_id {client_id}")));
    assert!(!format!("{events:?}").contains(&secret));
}

#[actix_web::test]
async fn operators_only() {
    let env = Env::new();
    let op = env.operator().await;
    let (_, dtoken) = env.domain("acme.com").await;
    let app = app!(env);
    let ok = body("P", &["https://a.example.com/cb"]);
    let r = call(&app, post_json(APPS, &op, &ok)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
    let id = r.body["id"].as_u64().unwrap();
    let app_path = format!("{APPS}{id}/");
    let requests = || {
        [
            TestRequest::get().uri(APPS),
            TestRequest::post()
                .uri(APPS)
                .insert_header(("Content-Type", "application/json"))
                .set_payload(ok.clone()),
            TestRequest::delete().uri(&app_path),
        ]
    };
    for req in requests() {
        let r = call(&app, req).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{r:?}");
        assert!(
            r.header("www-authenticate")
                .is_some_and(|v| v.starts_with("Bearer")),
            "{r:?}"
        );
    }
    for req in requests() {
        let r = call(&app, req.insert_header(bearer("ovt_1_not-a-token"))).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{r:?}");
    }
    for req in requests() {
        let r = call(&app, req.insert_header(bearer(&dtoken))).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "domain token: {r:?}");
    }
    // Nothing was created or removed by the refused requests.
    let l = call(&app, get(APPS, &op)).await;
    assert_eq!(l.body.as_array().map(Vec::len), Some(1), "{l:?}");
    // Methods the paths do not serve: 405 with Allow, JSON body.
    for (req, allow) in [
        (TestRequest::put().uri(APPS), "GET, POST"),
        (TestRequest::patch().uri("/api/v1/admin/apps"), "GET, POST"),
        (TestRequest::get().uri(&app_path), "DELETE"),
        (TestRequest::post().uri(&app_path), "DELETE"),
    ] {
        let r = call(&app, req.insert_header(bearer(&op))).await;
        assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED, "{r:?}");
        assert_eq!(r.header("allow"), Some(allow), "{r:?}");
        assert!(r.body["detail"].is_string(), "{r:?}");
    }
}

#[actix_web::test]
async fn validation_errors_name_their_field_and_store_nothing() {
    let env = Env::new();
    let op = env.operator().await;
    let app = app!(env);
    let ok_uri = "https://a.example.com/cb";
    let long_name = "n".repeat(101);
    let eleven: Vec<String> = (0..11).map(|i| format!("{ok_uri}/{i}")).collect();
    let eleven: Vec<&str> = eleven.iter().map(String::as_str).collect();
    let long_uri = format!("{ok_uri}/{}", "a".repeat(2048));
    let cases: Vec<(String, &[&str])> = vec![
        ("{}".into(), &["name", "redirect_uris"]),
        (r#"{"name": "P"}"#.into(), &["redirect_uris"]),
        (json!({"redirect_uris": [ok_uri]}).to_string(), &["name"]),
        (body(" ", &[ok_uri]), &["name"]),
        (body(&long_name, &[ok_uri]), &["name"]),
        (
            json!({"name": 5, "redirect_uris": [ok_uri]}).to_string(),
            &["name"],
        ),
        (body("P", &[]), &["redirect_uris"]),
        (body("P", &eleven), &["redirect_uris"]),
        (
            json!({"name": "P", "redirect_uris": ok_uri}).to_string(),
            &["redirect_uris"],
        ),
        (
            json!({"name": "P", "redirect_uris": [5]}).to_string(),
            &["redirect_uris"],
        ),
        (
            json!({"name": "P", "redirect_uris": null}).to_string(),
            &["redirect_uris"],
        ),
        (body("P", &["http://a.example.com/cb"]), &["redirect_uris"]),
        (
            body("P", &["https://a.example.com/cb#x"]),
            &["redirect_uris"],
        ),
        (
            body("P", &["https://u:p@a.example.com/cb"]),
            &["redirect_uris"],
        ),
        (body("P", &["/relative"]), &["redirect_uris"]),
        (body("P", &[""]), &["redirect_uris"]),
        (body("P", &[&long_uri]), &["redirect_uris"]),
        (body("P", &[ok_uri, ok_uri]), &["redirect_uris"]),
        (
            body("", &["javascript:alert(1)"]),
            &["name", "redirect_uris"],
        ),
        ("[]".into(), &["non_field_errors"]),
    ];
    for (b, fields) in &cases {
        let r = call(&app, post_json(APPS, &op, b)).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{b}: {r:?}");
        let got: Vec<&String> = r.body.as_object().unwrap().keys().collect();
        assert_eq!(got, *fields, "{b}: {r:?}");
        for f in *fields {
            assert!(
                r.body[f]
                    .as_array()
                    .is_some_and(|m| !m.is_empty() && m.iter().all(Value::is_string)),
                "{b}: {r:?}"
            );
        }
    }
    // A URI's message says which one, and why.
    let r = call(
        &app,
        post_json(APPS, &op, &body("P", &[ok_uri, "http://a.example.com/cb"])),
    )
    .await;
    let msg = r.body["redirect_uris"][0].as_str().unwrap_or_default();
    assert!(msg.starts_with("Item 1:") && msg.contains("https"), "{r:?}");
    // Malformed JSON: a `detail`; another content type: 415; too large: 413.
    let r = call(&app, post_json(APPS, &op, "{\"name\": ")).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{r:?}");
    assert!(r.body["detail"].is_string(), "{r:?}");
    let r = call(
        &app,
        TestRequest::post()
            .uri(APPS)
            .insert_header(bearer(&op))
            .insert_header(("Content-Type", "text/plain"))
            .set_payload(body("P", &[ok_uri])),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{r:?}");
    let huge = body(&"n".repeat(70 * 1024), &[ok_uri]);
    let r = call(&app, post_json(APPS, &op, &huge)).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{r:?}");

    let l = call(&app, get(APPS, &op)).await;
    assert_eq!(l.body, json!([]), "{l:?}");
    let (events, _) = env
        .vault
        .audit(&oidcvault::vault::AuditQuery {
            limit: 1000,
            ..Default::default()
        })
        .unwrap();
    assert!(
        events.iter().all(|e| !e.action.starts_with("app.")),
        "{events:#?}"
    );
    // The limits themselves are accepted.
    let ten: Vec<&str> = eleven[..10].to_vec();
    let longest = format!("https://a.example/{}", "a".repeat(2048 - 18));
    for b in [
        body(&"n".repeat(100), &ten),
        body(
            "P",
            &[&longest, "http://localhost:3000/cb", "http://[::1]/cb"],
        ),
    ] {
        let r = call(&app, post_json(APPS, &op, &b)).await;
        assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
    }
}

/// The document's request schema accepts what the server accepts (its
/// example, the URIs above) and refuses what it refuses, as far as a pattern
/// can say (Schemathesis relies on it).
#[test]
fn the_request_schema_matches_the_rules() {
    let schema = schema("AppCreate");
    let validator = jsonschema::validator_for(&schema).unwrap();
    for ok in [
        json!({"name": "Billing portal", "redirect_uris": ["https://billing.example.com/oidc/callback"]}),
        json!({"name": "P", "redirect_uris": ["http://localhost:3000/cb", "http://127.0.0.1/cb?x=1", "http://[::1]:8080/"]}),
        json!({"name": "P", "redirect_uris": ["https://a.example.com"], "id": 3}),
    ] {
        assert!(validator.is_valid(&ok), "{ok}");
    }
    for bad in [
        json!({"name": " ", "redirect_uris": ["https://a.example.com/cb"]}),
        json!({"name": "P", "redirect_uris": []}),
        json!({"name": "P", "redirect_uris": ["https://a.example.com/cb", "https://a.example.com/cb"]}),
        json!({"name": "P", "redirect_uris": ["http://a.example.com/cb"]}),
        json!({"name": "P", "redirect_uris": ["https://a.example.com/cb#f"]}),
        json!({"name": "P", "redirect_uris": ["https://u@a.example.com/cb"]}),
        json!({"name": "P", "redirect_uris": ["HTTPS://a.example.com/cb"]}),
        json!({"name": "P"}),
    ] {
        assert!(!validator.is_valid(&bad), "{bad}");
    }
}

/// The server accepts a redirect URI exactly when the document's pattern
/// matches it, over valid URIs and every single-character insertion into them
/// (what a fuzzer tries first). Sent with a blank name, so nothing is stored:
/// the answer's `redirect_uris` key says whether the URI was refused.
#[actix_web::test]
async fn the_server_accepts_exactly_the_documented_redirect_uris() {
    let env = Env::new();
    let op = env.operator().await;
    let app = app!(env);
    let pattern = oidcvault::api::openapi::REDIRECT_URI_PATTERN;
    let validator =
        jsonschema::validator_for(&json!({"type": "string", "pattern": pattern})).unwrap();
    let seeds = [
        "https://a.example.com:8443/cb?x=1",
        "http://127.0.0.1:80/p",
        "http://[::1]/",
        "https://10.0.0.5",
    ];
    let inserts = [
        '*', '-', '.', ':', '0', '9', 'x', '%', '#', '@', '[', ']', '?', '/', ' ', 'é', '"',
    ];
    let mut candidates: Vec<String> = seeds.iter().map(|s| s.to_string()).collect();
    for seed in seeds {
        for at in 0..=seed.len() {
            for c in inserts {
                let mut s = seed.to_owned();
                s.insert(at, c);
                candidates.push(s);
            }
        }
    }
    candidates.sort();
    candidates.dedup();
    let mut mismatches = Vec::new();
    let (mut accepted, mut refused) = (0, 0);
    for uri in &candidates {
        let r = call(&app, post_json(APPS, &op, &body(" ", &[uri]))).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{uri}: {r:?}");
        let server_ok = r.body.get("redirect_uris").is_none();
        if server_ok {
            accepted += 1;
        } else {
            refused += 1;
        }
        if server_ok != validator.is_valid(&json!(uri)) {
            mismatches.push(format!("{uri:?}: server accepts: {server_ok}; {}", r.raw));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} of {} differ:\n{}",
        mismatches.len(),
        candidates.len(),
        mismatches.join("\n")
    );
    // Both sides of the line were exercised.
    assert!(
        accepted > 50 && refused > 50,
        "{accepted} accepted, {refused} refused"
    );
    assert_eq!(call(&app, get(APPS, &op)).await.body, json!([]));
}
