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
//!
//! This file holds the topic's fixtures (a stub identity provider, request
//! bodies, the test config); the tests are in the submodules: resolve on save,
//! refresh and the global fetch cap (`resolve`), the connection test against a
//! stub (`connection_test`), against a real OpenID Provider (`provider`, the
//! path `scripts/test.sh` filters on), and the secret's origin binding
//! (`origin`).

use std::sync::{Arc, Mutex};

use base64::Engine;
use serde_json::{json, Value};

use crate::app;
use crate::harness::in_process::*;
use crate::harness::stub_http::{closed_port, Recorded, Reply, Stub};

mod connection_test;
mod origin;
mod provider;
mod resolve;

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

fn step<'a>(r: &'a Value, name: &str) -> &'a Value {
    r["steps"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == name))
        .unwrap_or_else(|| panic!("no step {name} in {r:#}"))
}
