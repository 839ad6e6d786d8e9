//! The client secret's origin binding: it never reaches an origin its writer
//! did not bind it to; rebinding, audit of outbound attempts, one job per domain.

use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use actix_web::http::StatusCode;
use base64::Engine;
use serde_json::{json, Value};

use super::*;

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
        let client = step(&t.body, "client_authentication").clone();
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
    let client = step(&t.body, "client_authentication").clone();
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
    let client = step(&t.body, "client_authentication").clone();
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
