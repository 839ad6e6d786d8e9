//! Property tests (proptest): any JSON body to the OIDC routes, through the real
//! app, answers 2xx or a DRF-style 4xx (never 5xx), and a 4xx changes nothing
//! stored; any bytes fed to the envelope and keyring decoders give an error,
//! never a panic. (The record decoder has its own beside the code, in
//! `src/store/records.rs`.) Case counts are modest; `PROPTEST_CASES` raises them.

use actix_web::http::StatusCode;
use actix_web::test::TestRequest;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{json, Map, Value};
use zeroize::Zeroizing;

use oidcvault::crypto::{Field, KdfParams, Kek, Keyring, KeyringFile, MasterSecret, SealContext};

use crate::app;
use crate::harness::in_process::*;

fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn runner(cases: u32) -> TestRunner {
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    })
}

// ---- JSON bodies ---------------------------------------------------------------------

const FIELDS: [&str; 11] = [
    "client_id",
    "client_secret",
    "discovery_url",
    "authorization_endpoint",
    "token_endpoint",
    "userinfo_endpoint",
    "id",
    "enterprise_domain",
    "client_secret_masked",
    "created_at",
    "updated_at",
];

fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        ".{0,40}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(".{0,12}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A value for a known field: often plausible, often not.
fn field_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => prop_oneof![
            Just("enterprise-app-123".to_owned()),
            Just("s3cr3tP@ssw0rd!".to_owned()),
            Just("https://idp.example.com/.well-known/openid-configuration".to_owned()),
            Just("https://idp.example.com/oauth2/token".to_owned()),
            Just("http://localhost:8080/auth".to_owned()),
            Just("http://idp.example.com/".to_owned()),
            Just("https://user:pw@idp.example.com/".to_owned()),
            Just("********".to_owned()),
            Just(String::new()),
            Just("   ".to_owned()),
            Just("x".repeat(256)),
            Just("y".repeat(4097)),
            Just(format!("https://idp.example.com/{}", "p".repeat(2100))),
            "[a-z0-9:/._-]{1,30}",
            "\\PC{0,20}",
        ]
        .prop_map(Value::String),
        1 => any_json(),
    ]
}

/// A body: an object of known and unknown fields, any JSON at all, or bytes
/// that are not JSON.
fn body() -> impl Strategy<Value = Vec<u8>> {
    let object = prop::collection::btree_map(
        prop_oneof![
            4 => prop::sample::select(FIELDS.to_vec()).prop_map(str::to_owned),
            1 => ".{0,10}",
        ],
        field_value(),
        0..8,
    )
    .prop_map(|m| {
        serde_json::to_vec(&Value::Object(m.into_iter().collect::<Map<_, _>>())).unwrap()
    });
    // A valid create body with a few fields changed, added or left out.
    let near_valid = (
        prop::collection::btree_map(
            prop::sample::select(FIELDS.to_vec()).prop_map(str::to_owned),
            field_value(),
            0..3,
        ),
        prop::collection::vec(prop::sample::select(FIELDS.to_vec()), 0..2),
    )
        .prop_map(|(changes, removed)| {
            let mut m = Map::new();
            m.insert("client_id".into(), json!("enterprise-app-123"));
            m.insert("client_secret".into(), json!("s3cr3tP@ssw0rd!"));
            m.insert(
                "discovery_url".into(),
                json!("https://idp.example.com/.well-known/openid-configuration"),
            );
            m.extend(changes);
            for r in removed {
                m.remove(r);
            }
            serde_json::to_vec(&Value::Object(m)).unwrap()
        });
    prop_oneof![
        4 => near_valid,
        4 => object,
        2 => any_json().prop_map(|v| serde_json::to_vec(&v).unwrap()),
        1 => prop::collection::vec(any::<u8>(), 0..64),
    ]
}

#[derive(Debug, Clone, Copy)]
enum Who {
    DomainToken,
    DomainTokenNamingItself,
    DomainTokenNamingAnother,
    OperatorNaming,
    OperatorNamingNothing,
    OperatorNamingUnknown,
}

fn who() -> impl Strategy<Value = Who> {
    prop_oneof![
        4 => Just(Who::DomainToken),
        1 => Just(Who::DomainTokenNamingItself),
        1 => Just(Who::DomainTokenNamingAnother),
        2 => Just(Who::OperatorNaming),
        1 => Just(Who::OperatorNamingNothing),
        1 => Just(Who::OperatorNamingUnknown),
    ]
}

/// DRF's shapes: `{"detail": "..."}`, or field name → non-empty list of strings.
fn is_drf_error(body: &Value) -> bool {
    let Some(map) = body.as_object() else {
        return false;
    };
    if map.is_empty() {
        return false;
    }
    if let Some(detail) = map.get("detail") {
        return detail.is_string();
    }
    map.values().all(|v| {
        v.as_array()
            .is_some_and(|a| !a.is_empty() && a.iter().all(Value::is_string))
    })
}

#[test]
fn any_body_to_the_oidc_routes_is_a_2xx_or_a_drf_4xx_and_a_4xx_changes_nothing() {
    let sys = actix_web::rt::System::new();
    let env = Env::new();
    let ((acme, acme_token), (other, _), operator) = sys.block_on(async {
        (
            env.domain("acme.com").await,
            env.domain("other.com").await,
            env.operator().await,
        )
    });
    let app = sys.block_on(async { app!(env) });
    // The other domain holds a config that nothing here may touch.
    let other_before = sys.block_on(async {
        let r = call(
            &app,
            post_json(
                CONFIG_PATH,
                &operator,
                r#"{"client_id": "o", "client_secret": "other-secret-1234"}"#,
            )
            .insert_header(("X-Enterprise-Domain", "other.com")),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{r:?}");
        env.vault.get_config(&other).unwrap()
    });
    let snapshot = || {
        (
            env.vault.get_config(&acme).unwrap(),
            env.vault.get_config(&other).unwrap(),
            env.vault.list_domains().unwrap(),
            env.vault.list_tokens().unwrap(),
        )
    };
    let seen = std::cell::RefCell::new(std::collections::BTreeMap::<u16, u32>::new());
    let strategy = (
        prop_oneof![8 => Just("POST"), 1 => Just("GET"), 1 => Just("DELETE")],
        who(),
        body(),
    );
    let result = runner(cases(256)).run(&strategy, |(method, who, body)| {
        let before = snapshot();
        let (token, header) = match who {
            Who::DomainToken => (&acme_token, None),
            Who::DomainTokenNamingItself => (&acme_token, Some("ACME.com")),
            Who::DomainTokenNamingAnother => (&acme_token, Some("other.com")),
            Who::OperatorNaming => (&operator, Some("acme.com")),
            Who::OperatorNamingNothing => (&operator, None),
            Who::OperatorNamingUnknown => (&operator, Some("nowhere.example")),
        };
        let mut req = TestRequest::default()
            .method(method.parse().unwrap())
            .uri(CONFIG_PATH)
            .insert_header(bearer(token))
            .insert_header(("Content-Type", "application/json"))
            .set_payload(body.clone());
        if let Some(h) = header {
            req = req.insert_header(("X-Enterprise-Domain", h));
        }
        let r = sys.block_on(async { call(&app, req).await });
        *seen.borrow_mut().entry(r.status.as_u16()).or_default() += 1;
        let shown = String::from_utf8_lossy(&body).into_owned();
        prop_assert!(
            r.status.is_success() || r.status.is_client_error(),
            "{method} {who:?} {shown:?}: {} {}",
            r.status,
            r.raw
        );
        let after = snapshot();
        prop_assert_eq!(&after.1, &other_before, "another domain's config changed");
        prop_assert_eq!(&after.2, &before.2, "the domains changed");
        prop_assert_eq!(&after.3, &before.3, "the tokens changed");
        if r.status.is_client_error() {
            prop_assert!(
                is_drf_error(&r.body),
                "{method} {who:?} {shown:?}: {} is not DRF-style: {}",
                r.status,
                r.raw
            );
            prop_assert_eq!(
                &after.0,
                &before.0,
                "a {} changed the stored config",
                r.status
            );
        } else if method == "POST" {
            let stored = after
                .0
                .clone()
                .ok_or_else(|| TestCaseError::fail("200 but nothing stored"))?;
            prop_assert_eq!(
                &r.body["client_secret"],
                &json!(stored.client_secret_masked)
            );
            prop_assert_eq!(&r.body["client_id"], &json!(stored.client_id));
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let seen = seen.into_inner();
    eprintln!("oidc route property: statuses seen {seen:?}");
    // The generator must reach the real paths, not only the refusals.
    for status in [200, 204, 400, 403, 404] {
        assert!(
            seen.contains_key(&status),
            "no case answered {status}: the generator misses a path ({seen:?})"
        );
    }
}

// ---- decoders ------------------------------------------------------------------------

fn ctx(domain_id: u64) -> SealContext<'static> {
    SealContext {
        domain_id,
        field: Field::ClientSecret,
        origin: Some("https://idp.example.com"),
    }
}

#[test]
fn any_bytes_to_the_envelope_decoder_are_an_error_not_a_panic() {
    let keyring = Keyring::generate();
    let sealed = keyring.seal(b"s3cr3tP@ssw0rd!", ctx(7)).unwrap();
    let mut r = runner(cases(2000));
    r.run(&prop::collection::vec(any::<u8>(), 0..128), |bytes| {
        prop_assert!(keyring.open(&bytes, ctx(7)).is_err());
        Ok(())
    })
    .unwrap();
    // Changes to a real envelope: a flipped bit anywhere, a cut, an extension.
    let mutation = (
        0..sealed.len(),
        any::<u8>().prop_filter("changes", |b| *b != 0),
        0..3usize,
    );
    r.run(&mutation, |(at, xor, kind)| {
        let mut m = sealed.clone();
        match kind {
            0 => m[at] ^= xor,
            1 => m.truncate(at),
            _ => m.insert(at, xor),
        }
        prop_assert!(
            keyring.open(&m, ctx(7)).is_err(),
            "mutation {kind} at {at} opened"
        );
        Ok(())
    })
    .unwrap();
    // The untouched envelope opens, for its own record only.
    assert_eq!(
        keyring.open(&sealed, ctx(7)).unwrap().as_slice(),
        b"s3cr3tP@ssw0rd!"
    );
    assert!(keyring.open(&sealed, ctx(8)).is_err());
}

#[test]
fn any_bytes_to_the_keyring_file_decoder_are_an_error_not_a_panic() {
    let secret = || MasterSecret::new(Zeroizing::new(b"property-test passphrase".to_vec()));
    let kdf = KdfParams {
        m_cost_kib: KdfParams::MIN_M_COST_KIB,
        t_cost: KdfParams::MIN_T_COST,
        p_cost: 1,
    };
    let kek = Kek::derive_new_salt(&secret(), kdf).unwrap();
    let file = KeyringFile::wrap(&Keyring::generate(), &kek).unwrap();
    let bytes = file.to_bytes().unwrap();
    let mut r = runner(cases(2000));
    // Random bytes, and random bytes behind the right magic and version.
    let prefix = bytes[..9.min(bytes.len())].to_vec();
    r.run(
        &(any::<bool>(), prop::collection::vec(any::<u8>(), 0..256)),
        |(with_prefix, tail)| {
            let input = if with_prefix {
                [prefix.clone(), tail].concat()
            } else {
                tail
            };
            let _ = KeyringFile::from_bytes(&input);
            Ok(())
        },
    )
    .unwrap();
    // Mutations of a real file parse or not; one that still parses with the same
    // Argon2 parameters must fail to unlock (authenticated), never panic. Only a
    // few of those: each unlock runs Argon2.
    let unlocked = std::cell::Cell::new(0);
    let mut runner_small = runner(cases(200));
    runner_small
        .run(
            &(
                0..bytes.len(),
                any::<u8>().prop_filter("changes", |b| *b != 0),
                0..3usize,
            ),
            |(at, xor, kind)| {
                let mut m = bytes.clone();
                match kind {
                    0 => m[at] ^= xor,
                    1 => m.truncate(at),
                    _ => m.insert(at, xor),
                }
                if let Ok(f) = KeyringFile::from_bytes(&m) {
                    if f.kdf() == kdf && unlocked.get() < 12 {
                        unlocked.set(unlocked.get() + 1);
                        prop_assert!(
                            f.unlock(&secret()).is_err(),
                            "a changed keyring file unlocked"
                        );
                    }
                }
                Ok(())
            },
        )
        .unwrap();
    assert!(file.unlock(&secret()).is_ok());
}
