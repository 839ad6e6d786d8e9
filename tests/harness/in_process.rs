//! Shared helpers for the in-process API tests: a vault in its own temporary
//! directory, the real `App` from `oidcvault::app`, and request helpers that
//! return status, headers and the JSON body together so a failing assertion can
//! print all three.

use std::path::Path;

use actix_web::body::MessageBody;
use actix_web::dev::{Service, ServiceResponse};
use actix_web::http::header::HeaderMap;
use actix_web::http::StatusCode;
use actix_web::test::TestRequest;
use actix_web::web;
use serde_json::Value;

use oidcvault::config::Config;
use oidcvault::vault::{Domain, TokenTarget};
use oidcvault::Vault;

pub const PASSPHRASE: &str = "integration-test passphrase";
pub const CONFIG_PATH: &str = "/api/v1/enterprises/oidc/config/";

/// Config for tests: Argon2id at the smallest parameters the appliance accepts,
/// and no outbound fetch on save (see [`Env::new`]).
#[allow(dead_code)] // the helper other test modules may call
pub fn write_config(dir: &Path) -> std::path::PathBuf {
    write_config_with(
        dir,
        "[outbound]\nenabled = false\nresolve_discovery_on_save = false\n",
    )
}

/// As [`write_config`], with `extra` TOML appended (sections of its own)
/// instead of the `[outbound]` default.
pub fn write_config_with(dir: &Path, extra: &str) -> std::path::PathBuf {
    let path = dir.join("config.toml");
    std::fs::write(
        &path,
        format!(
            "[storage]\ndata_dir = \"data\"\ncache_capacity_mib = 8\n\
             [security]\nkdf_memory_kib = 19456\nkdf_iterations = 2\nkdf_parallelism = 1\n{extra}"
        ),
    )
    .expect("write config");
    path
}

/// A vault in its own temporary directory.
pub struct Env {
    /// Removed when the test ends.
    _dir: tempfile::TempDir,
    pub vault: web::Data<Vault>,
    /// What the real app shares: the vault above, the outbound client, metrics.
    pub data: oidcvault::AppData,
}

impl Env {
    /// No outbound fetch on save: test bodies carry discovery URLs of hosts that
    /// do not exist (idp.acme.com), and the suite must never leave loopback; the
    /// discovery tests turn it on with [`Env::with_config`].
    pub fn new() -> Self {
        Self::with_config("[outbound]\nenabled = false\nresolve_discovery_on_save = false\n")
    }

    /// A vault whose config has `extra` TOML appended (e.g. an `[outbound]` section).
    pub fn with_config(extra: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = write_config_with(dir.path(), extra);
        let env = vec![(
            "OIDCVAULT_MASTER_PASSPHRASE".to_owned(),
            PASSPHRASE.to_owned(),
        )];
        let config = Config::load_with_env(Some(&path), &env).expect("config");
        // As the server does: the group commit reports into the app's metrics.
        let metrics = oidcvault::metrics::Metrics::new().expect("metrics");
        let secrets = oidcvault::config::EnvSecrets::from_env(&env);
        let (vault, _) =
            Vault::open_with_secrets(&config, &env, &secrets, Some(metrics.commit.clone()))
                .expect("open vault");
        let vault = web::Data::new(vault);
        let outbound =
            oidcvault::outbound::Outbound::new(&config.outbound_settings()).expect("outbound");
        Self {
            _dir: dir,
            data: oidcvault::AppData::new(vault.clone(), outbound, metrics)
                .with_sso(oidcvault::broker::BrokerSettings::from_config(&config)),
            vault,
        }
    }

    /// A new domain and a token for it.
    pub async fn domain(&self, name: &str) -> (Domain, String) {
        let domain = self.vault.add_domain(name, None).await.expect("add domain");
        let (_, token) = self
            .vault
            .create_token(&TokenTarget::Domain(name.to_owned()), None)
            .await
            .expect("token");
        (domain, token.expose().to_owned())
    }

    pub async fn operator(&self) -> String {
        let (_, token) = self
            .vault
            .create_token(&TokenTarget::Operator, None)
            .await
            .expect("operator token");
        token.expose().to_owned()
    }
}

/// The application data `main` builds around a vault: the outbound client from
/// `config`, and fresh metrics.
pub fn app_data(config: &Config, vault: web::Data<Vault>) -> oidcvault::AppData {
    let outbound =
        oidcvault::outbound::Outbound::new(&config.outbound_settings()).expect("outbound");
    let metrics = oidcvault::metrics::Metrics::new().expect("metrics");
    oidcvault::AppData::new(vault, outbound, metrics)
        .with_sso(oidcvault::broker::BrokerSettings::from_config(config))
}

/// The real application, as `main` builds it.
#[macro_export]
macro_rules! app {
    ($env:expr) => {
        actix_web::test::init_service(oidcvault::app($env.data.clone())).await
    };
}

#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
    pub raw: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

pub async fn call<S, B>(app: &S, req: TestRequest) -> Reply
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    let res = actix_web::test::call_service(app, req.to_request()).await;
    let status = res.status();
    let headers = res.headers().clone();
    let bytes = actix_web::test::read_body(res).await;
    let raw = String::from_utf8_lossy(&bytes).into_owned();
    let body = if raw.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&raw).unwrap_or(Value::String(raw.clone()))
    };
    Reply {
        status,
        headers,
        body,
        raw,
    }
}

pub fn bearer(token: &str) -> (&'static str, String) {
    ("Authorization", format!("Bearer {token}"))
}

/// POST JSON text (not re-serialized, so malformed bodies can be sent).
pub fn post_json(path: &str, token: &str, body: &str) -> TestRequest {
    TestRequest::post()
        .uri(path)
        .insert_header(bearer(token))
        .insert_header(("Content-Type", "application/json"))
        .set_payload(body.to_owned())
}

pub fn get(path: &str, token: &str) -> TestRequest {
    TestRequest::get().uri(path).insert_header(bearer(token))
}

pub fn delete(path: &str, token: &str) -> TestRequest {
    TestRequest::delete().uri(path).insert_header(bearer(token))
}

/// Check `instance` against a JSON Schema; the message lists every violation.
pub fn assert_schema(schema: &Value, instance: &Value, what: &str) {
    let validator = jsonschema::validator_for(schema).expect("schema compiles");
    let errors: Vec<String> = validator
        .iter_errors(instance)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{what} does not match its schema: {errors:?}\ninstance: {instance:#}"
    );
}

/// The seed's `EnterpriseOIDCConfig` schema (tests/fixtures, from the seed).
pub fn seed_schema() -> Value {
    let text = include_str!("../fixtures/seed-openapi.json");
    let doc: Value = serde_json::from_str(text).expect("seed fixture");
    doc["components"]["schemas"]["EnterpriseOIDCConfig"].clone()
}
