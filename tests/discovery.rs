//! OIDC discovery through the real app: resolve on save, refresh and the
//! connection test, against stub identity providers on loopback (always run)
//! and against a real OpenID Provider, panva's `oidc-provider` from npm
//! (`tests/oidc-provider/`; ignored by a plain `cargo test` because it needs
//! `npm ci` there; `scripts/test.sh` installs it and always runs them):
//!
//! ```sh
//! (cd tests/oidc-provider && npm ci) && cargo test --test integration discovery::provider -- --ignored
//! ```
//!
//! Every fetch goes to 127.0.0.1, which the test config allowlists; nothing
//! leaves loopback.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::test::TestRequest;
use base64::Engine;
use serde_json::{json, Value};

use crate::app;
use crate::stub_http::{closed_port, Recorded, Reply, Stub};
use crate::util::*;

const WELL_KNOWN: &str = "/.well-known/openid-configuration";
const REFRESH: &str = "/api/v1/enterprises/oidc/config/refresh/";
const TEST: &str = "/api/v1/enterprises/oidc/config/test/";
const CLIENT_ID: &str = "oidcvault-test";
const SECRET: &str = "provider-test-secret-0123456789";

/// The test config: resolve on save, loopback allowlisted for http and as an
/// internal address, short timeouts.
const OUTBOUND: &str = "[outbound]\nresolve_discovery_on_save = true\n\
    allow_http_hosts = [\"127.0.0.1\"]\nallow_private_hosts = [\"127.0.0.1\"]\n\
    connect_timeout_secs = 2\ntimeout_secs = 5\n";

fn env() -> Env {
    Env::with_config(OUTBOUND)
}

/// A component schema of the served OpenAPI document, its `$ref`s resolvable.
fn served(name: &str) -> Value {
    let doc = oidcvault::api::openapi::document();
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$ref": format!("#/components/schemas/{name}"),
        "components": doc["components"],
    })
}

/// A stub identity provider: serves a discovery document that a test can change,
/// and endpoints that behave like a provider's (the token endpoint checks the
/// client's credentials, basic or post).
struct Idp {
    stub: Stub,
    doc: Arc<Mutex<Value>>,
}

fn token_answer(r: &Recorded) -> Reply {
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{CLIENT_ID}:{SECRET}"))
    );
    let form = String::from_utf8_lossy(&r.body).into_owned();
    let by_basic = r.header("authorization") == Some(expected.as_str());
    let by_post = form.contains(&format!("client_id={CLIENT_ID}"))
        && form.contains(&format!("client_secret={SECRET}"));
    if by_basic || by_post {
        Reply::Json(
            400,
            r#"{"error":"invalid_grant","error_description":"grant request is invalid"}"#.into(),
        )
    } else {
        Reply::Json(
            401,
            r#"{"error":"invalid_client","error_description":"client authentication failed"}"#
                .into(),
        )
    }
}

impl Idp {
    fn start() -> Self {
        let doc: Arc<Mutex<Value>> = Arc::new(Mutex::new(Value::Null));
        let served = doc.clone();
        let stub = Stub::start("127.0.0.1", move |r| match r.path.as_str() {
            WELL_KNOWN => Reply::Json(200, served.lock().unwrap().to_string()),
            "/html/.well-known/openid-configuration" => {
                Reply::text(200, "text/html", "<html><body>Sign in</body></html>")
            }
            "/auth" => Reply::text(400, "text/html", "missing parameters"),
            "/token" | "/token2" => token_answer(r),
            "/jwks" => Reply::Json(
                200,
                r#"{"keys":[{"kty":"RSA","kid":"k1","n":"AQAB","e":"AQAB"}]}"#.into(),
            ),
            "/nokeys" => Reply::Json(200, r#"{"keys":[]}"#.into()),
            "/me" => Reply::Json(401, r#"{"error":"invalid_token"}"#.into()),
            _ => Reply::text(404, "text/html", "not found"),
        });
        let o = stub.origin();
        *doc.lock().unwrap() = json!({
            "issuer": o,
            "authorization_endpoint": format!("{o}/auth"),
            "token_endpoint": format!("{o}/token"),
            "userinfo_endpoint": format!("{o}/me"),
            "jwks_uri": format!("{o}/jwks"),
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
        });
        Self { stub, doc }
    }

    fn discovery_url(&self) -> String {
        self.stub.url(WELL_KNOWN)
    }

    fn url(&self, path: &str) -> String {
        self.stub.url(path)
    }

    fn set(&self, key: &str, value: Value) {
        self.doc.lock().unwrap()[key] = value;
    }

    fn discovery_hits(&self) -> usize {
        self.stub
            .requests()
            .iter()
            .filter(|r| r.path.ends_with(WELL_KNOWN))
            .count()
    }
}

fn create_body(discovery_url: &str, extra: Value) -> String {
    let mut body = json!({
        "client_id": CLIENT_ID,
        "client_secret": SECRET,
        "discovery_url": discovery_url,
    });
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            b.insert(k.clone(), v.clone());
        }
    }
    body.to_string()
}

async fn audit_actions(env: &Env) -> Vec<Value> {
    let (events, _) = env
        .vault
        .audit(&oidcvault::vault::AuditQuery {
            limit: 1000,
            ..Default::default()
        })
        .unwrap();
    events
        .into_iter()
        .map(|e| json!({"action": e.action, "fields": e.fields, "detail": e.detail}))
        .collect()
}

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
        // While the slow provider holds the only slot.
        actix_web::rt::time::sleep(Duration::from_millis(500)).await;
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

fn step<'a>(r: &'a Value, name: &str) -> &'a Value {
    r["steps"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == name))
        .unwrap_or_else(|| panic!("no step {name} in {r:#}"))
}

#[actix_web::test]
async fn connection_test_against_a_stub_provider() {
    let idp = Idp::start();
    let env = env();
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

    let t = call(&app, post_json(TEST, &token, "")).await;
    assert_eq!(t.status, StatusCode::OK, "{t:?}");
    assert_eq!(t.body["ok"], true, "{:#}", t.body);
    assert_schema(&served("ConnectionTest"), &t.body, "test answer");
    let validator = jsonschema::validator_for(&served("ConnectionTest")).unwrap();
    assert!(
        !validator.is_valid(&json!({"ok": true, "steps": [{"name": "x"}]})),
        "the schema can fail"
    );
    let names: Vec<&str> = t.body["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "discovery",
            "authorization_endpoint",
            "token_endpoint",
            "userinfo_endpoint",
            "jwks",
            "client_authentication"
        ]
    );
    let client = step(&t.body, "client_authentication");
    assert_eq!(client["status"], "pass");
    assert_eq!(client["provider_error"]["error"], "invalid_grant");
    assert!(
        client["detail"]
            .as_str()
            .unwrap()
            .contains("client_secret_basic"),
        "{client}"
    );
    assert!(!t.raw.contains(SECRET), "{}", t.raw);
    // The token request: basic credentials, a deliberately invalid code, a redirect_uri.
    let token_req = idp
        .stub
        .requests()
        .into_iter()
        .find(|r| r.method == "POST")
        .unwrap();
    let form = String::from_utf8(token_req.body.clone()).unwrap();
    assert!(
        form.contains("grant_type=authorization_code")
            && form.contains("code=oidcvault-connection-test-")
            && form.contains("redirect_uri="),
        "{form}"
    );
    assert!(
        !form.contains("client_secret"),
        "basic auth sends no secret in the body: {form}"
    );

    // The provider says it takes client_secret_post only: the test uses it.
    idp.set(
        "token_endpoint_auth_methods_supported",
        json!(["client_secret_post"]),
    );
    let t = call(&app, post_json(TEST, &token, "")).await;
    let client = step(&t.body, "client_authentication");
    assert_eq!(client["status"], "pass", "{client}");
    assert!(
        client["detail"]
            .as_str()
            .unwrap()
            .contains("client_secret_post"),
        "{client}"
    );
    // ... and neither: the client step says so.
    idp.set(
        "token_endpoint_auth_methods_supported",
        json!(["private_key_jwt"]),
    );
    let t = call(&app, post_json(TEST, &token, "")).await;
    let client = step(&t.body, "client_authentication");
    assert_eq!(client["status"], "fail", "{client}");
    assert!(
        client["detail"]
            .as_str()
            .unwrap()
            .contains("private_key_jwt"),
        "{client}"
    );
    idp.set("token_endpoint_auth_methods_supported", Value::Null);

    // A wrong secret fails the client step only, with the provider's own words.
    let r = call(
        &app,
        post_json(
            CONFIG_PATH,
            &token,
            r#"{"client_secret": "a-wrong-secret-value"}"#,
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let t = call(&app, post_json(TEST, &token, "")).await;
    assert_eq!(t.body["ok"], false);
    let client = step(&t.body, "client_authentication");
    assert_eq!(client["status"], "fail");
    assert_eq!(client["provider_error"]["error"], "invalid_client");
    assert_eq!(
        client["provider_error"]["error_description"],
        "client authentication failed"
    );
    assert_eq!(client["provider_error"]["status"], 401);
    assert_schema(&served("ConnectionTest"), &t.body, "failed test answer");
    for other in [
        "discovery",
        "authorization_endpoint",
        "token_endpoint",
        "jwks",
    ] {
        assert_eq!(
            step(&t.body, other)["status"],
            "pass",
            "{other}: {:#}",
            t.body
        );
    }
    assert!(!t.raw.contains("a-wrong-secret-value"));

    // A JWK set without keys fails its step.
    idp.set("jwks_uri", json!(idp.url("/nokeys")));
    let t = call(&app, post_json(TEST, &token, "")).await;
    assert_eq!(step(&t.body, "jwks")["status"], "fail");

    // Every test is in the audit trail, without the secret.
    let events = audit_actions(&env).await;
    let tests: Vec<&Value> = events
        .iter()
        .filter(|e| e["action"] == "config.test")
        .collect();
    assert_eq!(tests.len(), 5, "{events:?}");
    assert_eq!(tests[0]["detail"], "passed");
    assert_eq!(tests[3]["detail"], "failed: client_authentication");
    assert!(!format!("{events:?}").contains(SECRET));
}

// ---- against a real OpenID Provider ------------------------------------------------------

/// panva's oidc-provider, run by node from `tests/oidc-provider/`, on loopback.
struct Provider {
    child: Child,
    port: u16,
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl Provider {
    fn start(port: u16, token_path: &str, auth_method: &str) -> Self {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oidc-provider");
        assert!(
            dir.join("node_modules/oidc-provider/package.json").exists(),
            "the provider tests need oidc-provider from npm: cd tests/oidc-provider && npm ci \
             (scripts/test.sh does it)"
        );
        let mut child = Command::new("node")
            .arg("provider.mjs")
            .current_dir(&dir)
            .env("OP_PORT", port.to_string())
            .env("OP_CLIENT_ID", CLIENT_ID)
            .env("OP_CLIENT_SECRET", SECRET)
            .env("OP_TOKEN_PATH", token_path)
            .env("OP_AUTH_METHOD", auth_method)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run node (needed for the provider tests): {e}"));
        let stdout = child.stdout.take().unwrap();
        let mut err = child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            s
        });
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(p) = line.strip_prefix("listening ") {
                    let _ = tx.send(p.trim().parse::<u16>().ok());
                }
            }
        });
        let mut provider = Self {
            child,
            port: 0,
            stderr: Some(stderr),
        };
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Some(p)) => provider.port = p,
            other => {
                let _ = provider.child.kill();
                let _ = provider.child.wait();
                let log = provider.stderr.take().map(|h| h.join().unwrap_or_default());
                panic!(
                    "oidc-provider did not start ({other:?}); stderr:\n{}",
                    log.unwrap_or_default()
                );
            }
        }
        provider
    }

    fn issuer(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn discovery_url(&self) -> String {
        format!("{}{WELL_KNOWN}", self.issuer())
    }

    fn stop(mut self) {
        self.kill();
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        self.kill();
    }
}

#[actix_web::test]
#[ignore = "needs oidc-provider from npm: scripts/test.sh installs it and runs this \
            (cargo test --test integration discovery::provider -- --ignored)"]
async fn provider_resolve_on_save_and_connection_test() {
    let op = Provider::start(0, "/token", "client_secret_basic");
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
    let op = Provider::start(0, "/token", "client_secret_post");
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
    let op = Provider::start(0, "/token", "client_secret_basic");
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
    let moved = Provider::start(port, "/oauth2/token", "client_secret_basic");
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

// ---- the secret's origin binding (issue 11, item 1) ----------------------------------

/// Every spelling of the test credentials an attacker could collect.
fn credential_spellings() -> Vec<String> {
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
    let basic = format!("{CLIENT_ID}:{SECRET}");
    vec![
        SECRET.to_owned(),
        STANDARD.encode(SECRET),
        URL_SAFE_NO_PAD.encode(SECRET),
        STANDARD.encode(&basic),
        URL_SAFE_NO_PAD.encode(&basic),
    ]
}

/// What reached the attacker that carries the secret, in any spelling.
fn leaked(attacker: &Stub) -> Vec<String> {
    let spellings = credential_spellings();
    attacker
        .requests()
        .iter()
        .filter(|r| {
            let text = format!(
                "{} {} {:?} {}",
                r.method,
                r.path,
                r.headers,
                String::from_utf8_lossy(&r.body)
            );
            spellings.iter().any(|s| text.contains(s.as_str()))
        })
        .map(|r| format!("{} {} {:?}", r.method, r.path, r.headers))
        .collect()
}

/// The review's attack: a domain token (or an operator token) points the stored
/// configuration at a server of its own, then runs the connection test (or a
/// refresh, or both, in any order), hoping the stored secret follows. It never
/// does: each step is refused, kept, or runs without sending the secret, and the
/// legitimate provider still gets it at the end.
#[actix_web::test]
async fn the_secret_never_reaches_an_origin_its_writer_did_not_bind_it_to() {
    let attacker = Arc::new(Stub::start("127.0.0.1", |r| match r.path.as_str() {
        "/t" | "/token" => token_answer(r),
        _ => Reply::text(404, "text/html", "not found"),
    }));
    let a = attacker.origin();
    let attacker_doc = json!({
        "issuer": a, "authorization_endpoint": format!("{a}/auth"),
        "token_endpoint": format!("{a}/token"), "jwks_uri": format!("{a}/jwks"),
    });
    // The attack steps, each a request body to the config (or a refresh, or a
    // change at the provider that a refresh would pick up).
    #[derive(Clone, Copy, Debug)]
    enum Step {
        TokenEndpoint,
        ClearThenTokenEndpoint,
        DiscoveryUrl,
        ClearBothThenDiscovery,
        ProviderMovesTokenEndpoint,
        PostBackMaskedSecretWithTokenEndpoint,
    }
    use Step::*;
    let all = [
        TokenEndpoint,
        ClearThenTokenEndpoint,
        DiscoveryUrl,
        ClearBothThenDiscovery,
        ProviderMovesTokenEndpoint,
        PostBackMaskedSecretWithTokenEndpoint,
    ];
    let orders: Vec<Vec<Step>> = vec![
        all.to_vec(),
        all.iter().rev().copied().collect(),
        vec![
            ProviderMovesTokenEndpoint,
            ClearThenTokenEndpoint,
            TokenEndpoint,
        ],
        vec![
            ClearBothThenDiscovery,
            DiscoveryUrl,
            ProviderMovesTokenEndpoint,
        ],
    ];
    for order in orders {
        let idp = Idp::start();
        // The attacker's discovery document lives at its own origin.
        let served_doc = attacker_doc.clone();
        let attacker_idp = Stub::start("127.0.0.1", move |r| match r.path.as_str() {
            WELL_KNOWN => Reply::Json(200, served_doc.to_string()),
            _ => Reply::text(404, "text/html", "not found"),
        });
        let attacker_disc = attacker_idp.url(WELL_KNOWN);
        // The attacker's discovery document names its own issuer.
        let mut doc = attacker_doc.clone();
        doc["issuer"] = json!(attacker_idp.origin());
        let env = env();
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
        let masked = r.body["client_secret"].as_str().unwrap().to_owned();
        let evil_token = attacker.url("/t");
        for step in &order {
            let bodies: Vec<Value> = match step {
                TokenEndpoint => vec![json!({"token_endpoint": evil_token})],
                ClearThenTokenEndpoint => vec![
                    json!({"token_endpoint": null}),
                    json!({"token_endpoint": evil_token}),
                ],
                DiscoveryUrl => vec![json!({"discovery_url": attacker_disc})],
                ClearBothThenDiscovery => vec![
                    json!({"discovery_url": null, "token_endpoint": null}),
                    json!({"discovery_url": attacker_disc}),
                ],
                ProviderMovesTokenEndpoint => {
                    idp.set("token_endpoint", json!(format!("{a}/token")));
                    vec![]
                }
                PostBackMaskedSecretWithTokenEndpoint => {
                    vec![json!({"client_secret": masked, "token_endpoint": evil_token})]
                }
            };
            for body in bodies {
                let r = call(&app, post_json(CONFIG_PATH, &token, &body.to_string())).await;
                let points_elsewhere = body
                    .as_object()
                    .unwrap()
                    .values()
                    .any(|v| v.as_str().is_some_and(|s| s.starts_with("http")));
                if points_elsewhere {
                    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{step:?} {body}: {r:?}");
                    assert!(r.body["client_secret"][0].is_string(), "{step:?}: {r:?}");
                } else {
                    assert_eq!(r.status, StatusCode::OK, "{step:?} {body}: {r:?}");
                }
            }
            // A refresh never moves the token endpoint to the attacker.
            let r = call(&app, post_json(REFRESH, &token, "")).await;
            if r.status == StatusCode::OK {
                assert_ne!(
                    r.body["config"]["token_endpoint"],
                    json!(format!("{a}/token")),
                    "{r:?}"
                );
                for k in r.body["kept"].as_array().unwrap() {
                    if k["field"] == "token_endpoint"
                        && k["discovered"] == json!(format!("{a}/token"))
                    {
                        assert!(k["reason"].as_str().unwrap().contains("bound to"), "{k}");
                    }
                }
            }
            let t = call(&app, post_json(TEST, &token, "")).await;
            assert_eq!(t.status, StatusCode::OK, "{step:?}: {t:?}");
            assert!(
                leaked(&attacker).is_empty(),
                "{step:?}: {:?}",
                leaked(&attacker)
            );
        }
        // The provider still gets the secret, and only it.
        idp.set("token_endpoint", json!(idp.url("/token")));
        let r = call(
            &app,
            post_json(
                CONFIG_PATH,
                &token,
                &json!({"discovery_url": idp.discovery_url(), "token_endpoint": idp.url("/token"),
                        "client_secret": SECRET})
                .to_string(),
            ),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{order:?}: {r:?}");
        let t = call(&app, post_json(TEST, &token, "")).await;
        let client = t.body["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == "client_authentication")
            .unwrap()
            .clone();
        assert_eq!(client["status"], "pass", "{order:?}: {t:?}");
        assert!(
            leaked(&attacker).is_empty(),
            "{order:?}: {:?}",
            leaked(&attacker)
        );
        assert!(
            attacker.requests().iter().all(|r| r.method != "POST"),
            "{order:?}: the attacker's token endpoint was posted to"
        );
        drop(attacker_idp);
    }
}

/// A secret written with the attacker's endpoint, knowingly, goes there: the
/// binding moves with a new secret, and only with one.
#[actix_web::test]
async fn a_new_secret_rebinds_and_the_refresh_reports_what_it_kept() {
    let idp = Idp::start();
    let other = Idp::start();
    let env = env();
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
    // The provider moves its token endpoint to another origin: kept, with why.
    idp.set("token_endpoint", json!(other.url("/token")));
    let r = call(&app, post_json(REFRESH, &token, "")).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(
        r.body["config"]["token_endpoint"],
        idp.url("/token"),
        "{r:?}"
    );
    let kept = r.body["kept"].as_array().unwrap();
    assert_eq!(kept.len(), 1, "{r:?}");
    assert_eq!(kept[0]["field"], "token_endpoint");
    assert_eq!(kept[0]["discovered"], other.url("/token"));
    assert!(
        kept[0]["reason"]
            .as_str()
            .unwrap()
            .contains(&idp.stub.origin()),
        "{r:?}"
    );
    assert_schema(&served("DiscoveryRefresh"), &r.body, "refresh answer");
    // With a new secret in the same request, the endpoint moves and the secret
    // follows it there.
    let r = call(
        &app,
        post_json(
            CONFIG_PATH,
            &token,
            &json!({"token_endpoint": other.url("/token"), "client_secret": SECRET}).to_string(),
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    let t = call(&app, post_json(TEST, &token, "")).await;
    let client = t.body["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "client_authentication")
        .unwrap()
        .clone();
    assert_eq!(client["status"], "pass", "{t:?}");
    assert_eq!(client["url"], other.url("/token"));
    let posts = |s: &Stub| s.requests().iter().filter(|r| r.method == "POST").count();
    assert_eq!(posts(&other.stub), 1);
    assert_eq!(posts(&idp.stub), 0);
}

/// A secret written without a token endpoint is bound to none: the connection
/// test does not send it, whatever discovery says, and says what to do.
#[actix_web::test]
async fn a_secret_written_without_a_token_endpoint_is_sent_nowhere() {
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
    assert_eq!(r.body["token_endpoint"], Value::Null);
    let t = call(&app, post_json(TEST, &token, "")).await;
    let client = t.body["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "client_authentication")
        .unwrap()
        .clone();
    assert_eq!(client["status"], "fail", "{t:?}");
    assert!(
        client["detail"].as_str().unwrap().contains("bound to none"),
        "{client}"
    );
    assert!(idp.stub.requests().iter().all(|r| r.method != "POST"));
}

/// Audit (item 3): the attempt is recorded before the outbound call, naming
/// where it goes, and a config.update records old and new URL values.
#[actix_web::test]
async fn outbound_attempts_are_audited_first_and_updates_name_old_and_new_urls() {
    let idp = Idp::start();
    let env = env();
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
    let r = call(
        &app,
        post_json(
            CONFIG_PATH,
            &token,
            &json!({"userinfo_endpoint": idp.url("/me2")}).to_string(),
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    let t = call(&app, post_json(TEST, &token, "")).await;
    assert_eq!(t.status, StatusCode::OK);
    let f = call(&app, post_json(REFRESH, &token, "")).await;
    assert_eq!(f.status, StatusCode::OK);
    let events = audit_actions(&env).await;
    let actions: Vec<&str> = events
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    let from = actions.iter().position(|a| *a == "config.update").unwrap();
    assert_eq!(
        actions[from..],
        [
            "config.update",
            "config.test.start",
            "config.test",
            "config.refresh.start",
        ],
        "{events:#?}"
    );
    assert_eq!(
        events[from]["detail"],
        format!(
            "userinfo_endpoint: {} -> {}",
            idp.url("/me"),
            idp.url("/me2")
        )
    );
    assert_eq!(
        events[from + 1]["detail"],
        format!(
            "connection test; the client secret may be sent to {}",
            idp.stub.origin()
        )
    );
    assert_eq!(
        events[from + 3]["detail"],
        format!("fetching the discovery document from {}", idp.stub.origin())
    );
    assert!(!format!("{events:?}").contains(SECRET));
}

/// Item 5: one test or refresh of a domain at a time; a second one meanwhile
/// gets 429 with Retry-After, another domain is not held up.
#[actix_web::test]
async fn one_outbound_job_per_domain_at_a_time() {
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let release_rx = Arc::new(Mutex::new(release_rx));
    let (entered_tx, entered_rx) = mpsc::channel::<()>();
    let entered_tx = Arc::new(Mutex::new(entered_tx));
    let slow = Stub::start("127.0.0.1", move |r| {
        if r.path == WELL_KNOWN {
            let _ = entered_tx.lock().unwrap().send(());
            let _ = release_rx
                .lock()
                .unwrap()
                .recv_timeout(Duration::from_secs(10));
        }
        Reply::text(404, "text/html", "not found")
    });
    let idp = Idp::start();
    let env = Env::with_config(&OUTBOUND.replace(
        "resolve_discovery_on_save = true",
        "resolve_discovery_on_save = false",
    ));
    let (_, token) = env.domain("acme.com").await;
    let (_, other) = env.domain("other.com").await;
    let app = app!(env);
    for (t, url) in [
        (&token, slow.url(WELL_KNOWN)),
        (&other, idp.discovery_url()),
    ] {
        let r = call(
            &app,
            post_json(CONFIG_PATH, t, &create_body(&url, json!({}))),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{r:?}");
    }
    let first = actix_web::rt::spawn({
        let req = post_json(TEST, &token, "").to_request();
        let app = std::rc::Rc::new(app);
        let app2 = app.clone();
        async move {
            let res = actix_web::test::call_service(&*app2, req).await;
            (res.status(), app2)
        }
    });
    // Wait until the first test is inside the provider's discovery fetch.
    let entered = actix_web::rt::task::spawn_blocking(move || {
        entered_rx.recv_timeout(Duration::from_secs(10))
    });
    entered
        .await
        .unwrap()
        .expect("the first test reached the stub");
    // The second requests go through another service on the same vault (as
    // another worker of the server would).
    let app2 = app!(env);
    for path in [TEST, REFRESH] {
        let r = call(&app2, post_json(path, &token, "")).await;
        assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{path}: {r:?}");
        assert_eq!(r.headers.get("retry-after").unwrap(), "1");
        assert!(
            r.body["detail"]
                .as_str()
                .unwrap()
                .contains("already running"),
            "{r:?}"
        );
    }
    let r = call(&app2, post_json(TEST, &other, "")).await;
    assert_eq!(r.status, StatusCode::OK, "another domain is served: {r:?}");
    release_tx.send(()).unwrap();
    let (status, _) = first.await.unwrap();
    assert_eq!(status, StatusCode::OK);
    let r = call(&app2, post_json(TEST, &token, "")).await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "free again once the first ended: {r:?}"
    );
}

/// Item 16: resolve-on-save decides whether to fetch on a snapshot read before
/// the write. A save whose decision ("the managed endpoints stand, no fetch")
/// was made on an older record must not apply to a newer one: here another save
/// moved the discovery URL in between, and the stale save would have marked the
/// other document's endpoints as discovered from its URL. Decided again inside
/// the write: refused, nothing changed.
#[actix_web::test]
async fn a_save_decided_on_a_stale_snapshot_is_refused_inside_the_write() {
    use oidcvault::crypto::SecretString;
    use oidcvault::vault::{ConfigPatch, Discovered, EndpointSource, Patch};
    let env = env();
    let (domain, _) = env.domain("acme.com").await;
    let doc = |host: &str| Discovered {
        authorization_endpoint: Some(format!("https://{host}/auth")),
        token_endpoint: Some(format!("https://{host}/token")),
        userinfo_endpoint: None,
    };
    let url = |host: &str| format!("https://{host}{WELL_KNOWN}");
    let save = |discovery: &str, source: EndpointSource, secret: bool| ConfigPatch {
        client_id: Some(CLIENT_ID.into()),
        client_secret: secret.then(|| SecretString::new(SECRET.into())),
        discovery_url: Patch::Set(discovery.into()),
        endpoint_source: source,
        ..Default::default()
    };
    let vault = &env.vault;
    vault
        .upsert_config(
            &domain,
            save(
                &url("a.example"),
                EndpointSource::Discovery(Some(doc("a.example"))),
                true,
            ),
            None,
        )
        .await
        .unwrap();
    // The stale request: decided on the record above (same URL, nothing to fetch).
    let stale = save(&url("a.example"), EndpointSource::Discovery(None), false);
    assert!(!oidcvault::vault::needs_discovery_fetch(
        &stale,
        vault.get_config(&domain).unwrap().as_ref()
    ));
    // Meanwhile another save moves the discovery URL (with the secret).
    vault
        .upsert_config(
            &domain,
            save(
                &url("b.example"),
                EndpointSource::Discovery(Some(doc("b.example"))),
                true,
            ),
            None,
        )
        .await
        .unwrap();
    let before = vault.get_config(&domain).unwrap().unwrap();
    let err = vault.upsert_config(&domain, stale, None).await.unwrap_err();
    match err {
        oidcvault::vault::VaultError::Invalid(fields) => {
            assert!(
                fields["discovery_url"][0].contains("changed while"),
                "{fields:?}"
            )
        }
        other => panic!("expected a 400 on discovery_url, got {other:?}"),
    }
    let after = vault.get_config(&domain).unwrap().unwrap();
    assert_eq!(after, before, "nothing changed");
    assert_eq!(
        after.token_endpoint.as_deref(),
        Some("https://b.example/token")
    );
}
