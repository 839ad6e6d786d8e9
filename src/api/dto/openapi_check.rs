//! The hand-written OpenAPI document cannot drift from the response types.
//!
//! For every response type, two values: `full` (every `Option` set, every list
//! non-empty) and `minimal` (every `Option` empty, every list empty). The
//! document's schema for that response must
//! - list as `properties` exactly the fields `full` serializes,
//! - `require` exactly the fields `minimal` still serializes (the always-present ones),
//! - accept both values.
//!
//! A field added to a struct or to the document fails the first check; every
//! JSON success response of the document, and every object schema nested in one,
//! must be one of the cases below, so a new response needs a case too.
//!
//! Why a check rather than a derived document (e.g. `utoipa`): the document
//! carries hand-tuned patterns, examples, links and descriptions that the fuzzer
//! (Schemathesis) and the seed's contract rely on; deriving would mean restating
//! all of it in attributes, and adds a proc-macro dependency to every build.

use std::collections::BTreeSet;

use serde::Serialize;
use serde_json::{json, Value};

use super::*;
use crate::api::openapi::document;

struct Case {
    what: &'static str,
    /// JSON pointer of the schema in the document.
    pointer: String,
    full: Value,
    minimal: Value,
    /// Always present in the answer, yet not `required` in the document, with why.
    not_required: &'static [&'static str],
}

fn case<T: Serialize>(what: &'static str, pointer: &str, full: T, minimal: T) -> Case {
    Case {
        what,
        pointer: pointer.to_owned(),
        full: serde_json::to_value(full).unwrap(),
        minimal: serde_json::to_value(minimal).unwrap(),
        not_required: &[],
    }
}

/// The JSON pointer of an inline response schema.
fn response_schema(path: &str, method: &str, status: &str) -> String {
    format!(
        "/paths/{}/{method}/responses/{status}/content/application~1json/schema",
        path.replace('~', "~0").replace('/', "~1")
    )
}

const T: &str = "2026-11-29T15:04:05.000000Z";

fn config(full: bool) -> ConfigResponse {
    let url = |s: &str| full.then(|| format!("https://idp.example.com/{s}"));
    ConfigResponse {
        id: 1,
        enterprise_domain: 1,
        client_id: "enterprise-app-123".into(),
        client_secret: "********ssw0".into(),
        client_secret_masked: "********ssw0".into(),
        discovery_url: url(".well-known/openid-configuration"),
        authorization_endpoint: url("authorize"),
        token_endpoint: url("token"),
        userinfo_endpoint: url("userinfo"),
        created_at: T.into(),
        updated_at: T.into(),
    }
}

fn change(full: bool) -> EndpointChangeResponse {
    EndpointChangeResponse {
        field: "token_endpoint",
        old: full.then(|| "https://idp.example.com/old".into()),
        new: full.then(|| "https://idp.example.com/new".into()),
    }
}

fn kept(full: bool) -> EndpointKeptResponse {
    EndpointKeptResponse {
        field: "userinfo_endpoint",
        value: full.then(|| "https://idp.example.com/mine".into()),
        discovered: full.then(|| "https://idp.example.com/theirs".into()),
        reason: "set by hand".into(),
    }
}

fn provider_error(full: bool) -> ProviderErrorResponse {
    ProviderErrorResponse {
        status: 401,
        error: full.then(|| "invalid_client".into()),
        error_description: full.then(|| "unknown client".into()),
    }
}

fn step(full: bool) -> StepResponse {
    StepResponse {
        name: "client_authentication",
        status: "fail",
        url: full.then(|| "https://idp.example.com/token".into()),
        detail: "the provider refused the client".into(),
        provider_error: full.then(|| provider_error(true)),
    }
}

fn term() -> TermResponse {
    TermResponse {
        term: 1,
        active: true,
        created_at: T.into(),
        configs: 3,
    }
}

fn event(full: bool) -> AuditEventResponse {
    AuditEventResponse {
        id: 7,
        at: T.into(),
        actor: full.then_some(1),
        action: "config.update".into(),
        domain_id: full.then_some(1),
        domain: full.then(|| "acme.com".into()),
        fields: if full {
            vec!["client_secret".into()]
        } else {
            vec![]
        },
        secret_fingerprint: full.then(|| "ab12".into()),
        detail: full.then(|| "detail".into()),
    }
}

fn whoami(full: bool) -> WhoAmIResponse {
    WhoAmIResponse {
        kind: if full { "domain" } else { "operator" },
        token_id: 2,
        domain: full.then(|| "acme.com".into()),
    }
}

const SECRET: &str = "ovs_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

fn app_model(full: bool) -> crate::vault::App {
    crate::vault::App {
        id: 1,
        name: "Billing portal".into(),
        client_id: "ova_AAAAAAAAAAAAAAAAAAAAAA".into(),
        // Never empty in practice (the server requires one); both shapes are
        // valid JSON for the schema.
        redirect_uris: if full {
            vec!["https://billing.example.com/cb".into()]
        } else {
            vec![]
        },
        created_at: 0,
    }
}

fn app(full: bool) -> AppResponse {
    AppResponse::from(app_model(full))
}

/// `POST /sso/token`'s answer, with the profile as the broker serializes it.
fn token_answer(full: bool) -> Value {
    let some = |s: &str| full.then(|| s.to_owned());
    let claims = crate::oidc::rp::IdClaims {
        sub: "248289761001".into(),
        email: some("alice@acme.com"),
        email_verified: full.then_some(true),
        name: some("Alice Example"),
        given_name: some("Alice"),
        family_name: some("Example"),
        // Never empty in practice (an ID token has `iss`, `sub`, ...); both
        // shapes are valid for the schema.
        claims: if full {
            json!({"sub": "248289761001", "nonce": "n", "groups": ["staff"]})
                .as_object()
                .cloned()
                .unwrap()
        } else {
            serde_json::Map::new()
        },
    };
    let domain = crate::vault::Domain {
        id: 1,
        name: "acme.com".into(),
        created_at: 0,
    };
    let profile = crate::broker::profile_json(&domain, "https://idp.acme.com", &claims, 0).unwrap();
    json!({"profile": serde_json::from_str::<Value>(&profile).unwrap()})
}

fn cases() -> Vec<Case> {
    let schema = |name: &str| format!("/components/schemas/{name}");
    let health = |status| HealthResponse { status };
    vec![
        case(
            "HealthResponse (healthz)",
            &response_schema(crate::api::health::HEALTHZ, "get", "200"),
            health("ok"),
            health("ok"),
        ),
        case(
            "HealthResponse (readyz)",
            &response_schema(crate::api::health::READYZ, "get", "200"),
            health("ready"),
            health("ready"),
        ),
        case(
            "UnreadyResponse",
            &response_schema(crate::api::health::READYZ, "get", "503"),
            UnreadyResponse {
                status: "unavailable",
                detail: "The last write to disk failed; see the server log.",
            },
            UnreadyResponse {
                status: "unavailable",
                detail: "The last write to disk failed; see the server log.",
            },
        ),
        Case {
            // One schema for the request body and the answer, with the seed's
            // `required` list (tests/api_admin.rs holds it to the seed's): the URL
            // fields may be left out of a request; the answer always has them
            // (`null` when unset).
            not_required: &[
                "discovery_url",
                "authorization_endpoint",
                "token_endpoint",
                "userinfo_endpoint",
            ],
            ..case(
                "ConfigResponse",
                &schema("EnterpriseOIDCConfig"),
                config(true),
                config(false),
            )
        },
        case(
            "RefreshResponse",
            &schema("DiscoveryRefresh"),
            RefreshResponse {
                discovery_url: "https://idp.example.com/.well-known/openid-configuration".into(),
                issuer: "https://idp.example.com".into(),
                changed: vec![change(true)],
                kept: vec![kept(true)],
                discovered_endpoints: vec!["token_endpoint".into()],
                config: config(true),
            },
            RefreshResponse {
                discovery_url: "https://idp.example.com/.well-known/openid-configuration".into(),
                issuer: "https://idp.example.com".into(),
                changed: vec![],
                kept: vec![],
                discovered_endpoints: vec![],
                config: config(false),
            },
        ),
        case(
            "EndpointChangeResponse",
            &schema("DiscoveryRefresh/properties/changed/items"),
            change(true),
            change(false),
        ),
        case(
            "EndpointKeptResponse",
            &schema("DiscoveryRefresh/properties/kept/items"),
            kept(true),
            kept(false),
        ),
        case(
            "ConnectionTestResponse",
            &schema("ConnectionTest"),
            ConnectionTestResponse {
                ok: false,
                tested_at: T.into(),
                steps: vec![step(true)],
            },
            ConnectionTestResponse {
                ok: true,
                tested_at: T.into(),
                steps: vec![],
            },
        ),
        case(
            "StepResponse",
            &schema("ConnectionTest/properties/steps/items"),
            step(true),
            step(false),
        ),
        case(
            "ProviderErrorResponse",
            &schema("ConnectionTest/properties/steps/items/properties/provider_error/oneOf/1"),
            provider_error(true),
            provider_error(false),
        ),
        case(
            "DomainResponse",
            &schema("Domain"),
            DomainResponse {
                id: 1,
                domain: "acme.com".into(),
                created_at: T.into(),
            },
            DomainResponse {
                id: 1,
                domain: "acme.com".into(),
                created_at: T.into(),
            },
        ),
        case(
            "TokenResponse",
            &schema("Token"),
            TokenResponse {
                id: 1,
                domain: Some("acme.com".into()),
                created_at: T.into(),
            },
            TokenResponse {
                id: 1,
                domain: None,
                created_at: T.into(),
            },
        ),
        case(
            "TokenCreatedResponse",
            &schema("TokenCreated"),
            TokenCreatedResponse {
                id: 1,
                token: "ovt_1_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
                domain: Some("acme.com".into()),
                created_at: T.into(),
            },
            TokenCreatedResponse {
                id: 1,
                token: "ovt_1_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
                domain: None,
                created_at: T.into(),
            },
        ),
        case("AppResponse", &schema("App"), app(true), app(false)),
        case(
            "AppCreatedResponse",
            &schema("AppCreated"),
            AppCreatedResponse::new(app_model(true), SECRET),
            AppCreatedResponse::new(app_model(false), SECRET),
        ),
        case(
            "WhoAmIResponse",
            &schema("WhoAmI"),
            whoami(true),
            whoami(false),
        ),
        case(
            "SsoInfoResponse",
            &schema("SsoInfo"),
            SsoInfoResponse {
                public_url: Some("https://sso.example.com".into()),
                callback_url: Some("https://sso.example.com/sso/callback".into()),
            },
            SsoInfoResponse {
                public_url: None,
                callback_url: None,
            },
        ),
        case(
            "SignInTestResponse",
            &schema("SignInTest"),
            SignInTestResponse {
                authorization_url: "https://idp.acme.com/authorize?state=s".into(),
            },
            SignInTestResponse {
                authorization_url: "https://idp.acme.com/authorize?state=s".into(),
            },
        ),
        case(
            "POST /sso/token (answer)",
            &schema("SsoTokenResponse"),
            token_answer(true),
            token_answer(false),
        ),
        case(
            "POST /sso/token (profile)",
            &schema("SsoProfile"),
            token_answer(true)["profile"].take(),
            token_answer(false)["profile"].take(),
        ),
        case(
            "KeyStatusResponse",
            &schema("KeyStatus"),
            KeyStatusResponse {
                keys: KeyTermsResponse {
                    active_term: 2,
                    rotate_after_encryptions: 1000,
                    terms: vec![term()],
                    total_configs: 3,
                    progress: 0.5,
                    reencryption_pending: true,
                },
                active_term_encryptions: 5,
            },
            KeyStatusResponse {
                keys: KeyTermsResponse {
                    active_term: 1,
                    rotate_after_encryptions: 1000,
                    terms: vec![],
                    total_configs: 0,
                    progress: 1.0,
                    reencryption_pending: false,
                },
                active_term_encryptions: 0,
            },
        ),
        case(
            "TermResponse",
            &schema("KeyStatus/properties/terms/items"),
            term(),
            term(),
        ),
        case(
            "AuditPageResponse",
            &schema("AuditPage"),
            AuditPageResponse {
                results: vec![event(true)],
                next: Some("8".into()),
            },
            AuditPageResponse {
                results: vec![],
                next: None,
            },
        ),
        case(
            "AuditEventResponse",
            &schema("AuditEvent"),
            event(true),
            event(false),
        ),
        case(
            "BackupResponse",
            &schema("Backup"),
            BackupResponse {
                name: "oidcvault-backup-1".into(),
                path: "/var/lib/oidcvault/backups/oidcvault-backup-1".into(),
                records: 10,
                bytes: 2048,
                created_at: T.into(),
            },
            BackupResponse {
                name: "oidcvault-backup-1".into(),
                path: "/var/lib/oidcvault/backups/oidcvault-backup-1".into(),
                records: 0,
                bytes: 0,
                created_at: T.into(),
            },
        ),
    ]
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default()
}

/// `full` must really be full: no `null`, no empty list, anywhere.
fn assert_full(what: &str, at: &str, v: &Value) {
    match v {
        Value::Null => panic!("{what}: `full` has null at {at}"),
        Value::Array(items) => {
            assert!(
                !items.is_empty(),
                "{what}: `full` has an empty list at {at}"
            );
            for (i, item) in items.iter().enumerate() {
                assert_full(what, &format!("{at}/{i}"), item);
            }
        }
        Value::Object(o) => {
            for (k, item) in o {
                assert_full(what, &format!("{at}/{k}"), item);
            }
        }
        _ => {}
    }
}

/// The document with a root `$ref` to `pointer`: a schema that resolves the
/// document's own `$ref`s.
fn validator_for(doc: &Value, pointer: &str) -> jsonschema::Validator {
    let mut root = doc.clone();
    root["$schema"] = json!("https://json-schema.org/draft/2020-12/schema");
    root["$ref"] = json!(format!("#{pointer}"));
    jsonschema::validator_for(&root).unwrap()
}

fn assert_valid(doc: &Value, c: &Case, which: &str, instance: &Value) {
    let validator = validator_for(doc, &c.pointer);
    let errors: Vec<String> = validator
        .iter_errors(instance)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{}: `{which}` does not match the document's schema {}: {errors:?}\n{instance:#}",
        c.what,
        c.pointer
    );
}

#[test]
fn every_response_type_matches_its_schema_in_the_document() {
    let doc = document();
    for c in cases() {
        let schema = doc
            .pointer(&c.pointer)
            .unwrap_or_else(|| panic!("{}: no schema at {}", c.what, c.pointer));
        assert_full(c.what, "", &c.full);
        let documented = keys(&schema["properties"]);
        let served = keys(&c.full);
        assert_eq!(
            documented, served,
            "{}: the document's properties (left) are not the fields the type serializes (right) at {}",
            c.what, c.pointer
        );
        let required: BTreeSet<String> = schema["required"]
            .as_array()
            .map(|r| {
                r.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let always: BTreeSet<String> = keys(&c.minimal)
            .into_iter()
            .filter(|k| !c.not_required.contains(&k.as_str()))
            .collect();
        assert_eq!(
            required, always,
            "{}: the document's `required` (left) is not the always-present fields (right) at {}",
            c.what, c.pointer
        );
        assert_valid(&doc, &c, "full", &c.full);
        assert_valid(&doc, &c, "minimal", &c.minimal);
    }
}

/// Object schemas (with `properties`) at or below `pointer`, not following `$ref`;
/// and the `$ref`s met on the way.
fn object_schemas(doc: &Value, pointer: &str, found: &mut Vec<String>, refs: &mut Vec<String>) {
    let Some(schema) = doc.pointer(pointer) else {
        return;
    };
    if let Some(r) = schema["$ref"].as_str() {
        refs.push(r.trim_start_matches('#').to_owned());
        return;
    }
    if let Some(props) = schema["properties"].as_object() {
        found.push(pointer.to_owned());
        for k in props.keys() {
            object_schemas(doc, &format!("{pointer}/properties/{k}"), found, refs);
        }
    }
    if schema.get("items").is_some() {
        object_schemas(doc, &format!("{pointer}/items"), found, refs);
    }
    if let Some(alts) = schema["oneOf"].as_array() {
        for i in 0..alts.len() {
            object_schemas(doc, &format!("{pointer}/oneOf/{i}"), found, refs);
        }
    }
}

#[test]
fn every_success_response_of_the_document_has_a_checked_type() {
    let doc = document();
    let checked: BTreeSet<String> = cases().into_iter().map(|c| c.pointer).collect();
    let mut pending = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let Some(responses) = op["responses"].as_object() else {
                continue;
            };
            for (status, response) in responses {
                // Success bodies, and readyz's 503 (the one error that is not an
                // `ApiError` body).
                let success = status.starts_with('2');
                let unready = path == crate::api::health::READYZ && status == "503";
                if !(success || unready) || response["content"]["application/json"].is_null() {
                    continue;
                }
                if path == crate::api::health::OPENAPI {
                    continue; // the document itself
                }
                pending.push(response_schema(path, method, status));
            }
        }
    }
    let mut seen = BTreeSet::new();
    while let Some(pointer) = pending.pop() {
        if !seen.insert(pointer.clone()) {
            continue;
        }
        let (mut found, mut refs) = (Vec::new(), Vec::new());
        object_schemas(&doc, &pointer, &mut found, &mut refs);
        for f in found {
            assert!(
                checked.contains(&f),
                "the document's object schema {f} is no response type's: add a case to dto/openapi_check.rs"
            );
        }
        pending.extend(refs);
    }
}
