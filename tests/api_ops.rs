//! Operations through the real app: the audit trail (one event per action, no
//! secret or token in any), its filters and paging, key status and rotation, and
//! the metrics endpoint.

use actix_web::http::StatusCode;
use actix_web::test::TestRequest;
use serde_json::Value;

use crate::app;
use crate::harness::in_process::*;
use crate::harness::prometheus;

const SECRET_1: &str = "Audit-Trail-Secret-One-7f3a";
const SECRET_2: &str = "Audit-Trail-Secret-Two-91c2";

fn events(body: &Value) -> Vec<Value> {
    body["results"].as_array().cloned().unwrap_or_default()
}

#[actix_web::test]
async fn every_action_produces_exactly_one_event_without_secrets() {
    let env = Env::new();
    let op = env.operator().await;
    let app = app!(env);
    let before = call(&app, get("/api/v1/admin/audit/?limit=1000", &op)).await;
    assert_eq!(before.status, StatusCode::OK, "{before:?}");
    let start = events(&before.body).len();

    // Each action, in order, with the event it must produce.
    let r = call(
        &app,
        post_json("/api/v1/admin/domains/", &op, r#"{"domain": "acme.com"}"#),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let domain_id = r.body["id"].as_u64().unwrap();
    let r = call(
        &app,
        post_json("/api/v1/admin/tokens/", &op, r#"{"domain": "acme.com"}"#),
    )
    .await;
    let token = r.body["token"].as_str().unwrap().to_owned();
    let token_id = r.body["id"].as_u64().unwrap();
    let body = format!(r#"{{"client_id": "app", "client_secret": "{SECRET_1}"}}"#);
    assert_eq!(
        call(&app, post_json(CONFIG_PATH, &token, &body))
            .await
            .status,
        StatusCode::OK
    );
    let body = format!(
        r#"{{"client_secret": "{SECRET_2}", "discovery_url": "https://idp.acme.com/.well-known/openid-configuration"}}"#
    );
    assert_eq!(
        call(&app, post_json(CONFIG_PATH, &token, &body))
            .await
            .status,
        StatusCode::OK
    );
    // Posting the mask back changes no secret: an update without client_secret.
    let g = call(&app, get(CONFIG_PATH, &token)).await;
    assert_eq!(
        call(&app, post_json(CONFIG_PATH, &token, &g.body.to_string()))
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        call(&app, delete(CONFIG_PATH, &token)).await.status,
        StatusCode::NO_CONTENT
    );
    let r = call(
        &app,
        TestRequest::post()
            .uri("/api/v1/admin/keys/rotate")
            .insert_header(bearer(&op)),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    let r = call(
        &app,
        TestRequest::post()
            .uri("/api/v1/admin/backup")
            .insert_header(bearer(&op)),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
    assert_eq!(
        call(
            &app,
            delete(&format!("/api/v1/admin/tokens/{token_id}/"), &op)
        )
        .await
        .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        call(
            &app,
            delete(&format!("/api/v1/admin/domains/{domain_id}/"), &op)
        )
        .await
        .status,
        StatusCode::NO_CONTENT
    );

    let after = call(&app, get("/api/v1/admin/audit/?limit=1000", &op)).await;
    let all = events(&after.body);
    let new: Vec<&Value> = all[start..]
        .iter()
        .filter(|e| e["action"] != "key.drop")
        .collect();
    let actions: Vec<&str> = new.iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(
        actions,
        [
            "domain.add",
            "token.create",
            "config.create",
            "config.update",
            "config.update",
            "config.delete",
            "key.rotate",
            "backup",
            "token.revoke",
            "domain.remove"
        ],
        "{after:?}"
    );
    let op_id: u64 = op.split('_').nth(1).unwrap().parse().unwrap();
    for e in &new {
        assert_eq!(
            e["actor"],
            op_id_or_domain_token(e, op_id, token_id),
            "actor of {e}"
        );
    }
    assert_eq!(
        new[2]["fields"],
        serde_json::json!(["client_id", "client_secret"])
    );
    assert_eq!(
        new[3]["fields"],
        serde_json::json!(["client_secret", "discovery_url"])
    );
    assert_eq!(
        new[4]["fields"],
        serde_json::json!([]),
        "mask posted back: nothing changed"
    );
    assert!(new[4]["secret_fingerprint"].is_null());
    let (f1, f2) = (&new[2]["secret_fingerprint"], &new[3]["secret_fingerprint"]);
    assert!(
        f1.is_string() && f2.is_string() && f1 != f2,
        "fingerprints tell a change: {f1} {f2}"
    );
    assert_eq!(new[2]["domain"], "acme.com");
    assert_eq!(new[2]["domain_id"], domain_id);
    // No secret, no token, in any event.
    assert!(
        !after.raw.contains(SECRET_1) && !after.raw.contains(SECRET_2),
        "{}",
        after.raw
    );
    assert!(
        !after.raw.contains(&token) && !after.raw.contains(&op),
        "{}",
        after.raw
    );
    for e in &new {
        assert_schema(&audit_event_schema(), e, "audit event");
    }
}

/// Config changes are made with the domain token, everything else by the operator.
fn op_id_or_domain_token(e: &Value, op_id: u64, token_id: u64) -> Value {
    if e["action"].as_str().unwrap().starts_with("config.") {
        token_id.into()
    } else {
        op_id.into()
    }
}

fn audit_event_schema() -> Value {
    let mut doc = oidcvault::api::openapi::document();
    doc["components"]["schemas"]["AuditEvent"].take()
}

#[actix_web::test]
async fn audit_filters_and_cursor_paging() {
    let env = Env::new();
    let op = env.operator().await;
    env.domain("a.example.com").await;
    env.domain("b.example.com").await;
    let app = app!(env);
    let r = call(&app, get("/api/v1/admin/audit/?domain=a.example.com", &op)).await;
    let a = events(&r.body);
    assert!(
        !a.is_empty() && a.iter().all(|e| e["domain"] == "a.example.com"),
        "{r:?}"
    );

    // Page through everything two at a time: same events, in order, no repeats.
    let all = events(
        &call(&app, get("/api/v1/admin/audit/?limit=1000", &op))
            .await
            .body,
    );
    let mut paged = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..100 {
        let url = match &cursor {
            Some(c) => format!("/api/v1/admin/audit/?limit=2&cursor={c}"),
            None => "/api/v1/admin/audit/?limit=2".into(),
        };
        let r = call(&app, get(&url, &op)).await;
        assert_eq!(r.status, StatusCode::OK, "{r:?}");
        paged.extend(events(&r.body));
        match r.body["next"].as_str() {
            Some(n) => cursor = Some(n.to_owned()),
            None => break,
        }
    }
    assert_eq!(paged, all);

    let r = call(
        &app,
        get("/api/v1/admin/audit/?since=2999-01-01T00:00:00Z", &op),
    )
    .await;
    assert_eq!(events(&r.body).len(), 0, "{r:?}");
    let r = call(
        &app,
        get("/api/v1/admin/audit/?until=2999-01-01T00:00:00Z", &op),
    )
    .await;
    assert_eq!(events(&r.body).len(), all.len());
    for bad in ["since=yesterday", "cursor=abc", "limit=0", "limit=5000"] {
        let r = call(&app, get(&format!("/api/v1/admin/audit/?{bad}"), &op)).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}: {r:?}");
        let field = bad.split('=').next().unwrap();
        assert!(r.body[field].is_array(), "{bad}: {r:?}");
    }
    // Operators only.
    let (_, dtoken) = env.domain("c.example.com").await;
    let r = call(&app, get("/api/v1/admin/audit/", &dtoken)).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
}

#[actix_web::test]
async fn rotation_re_encrypts_and_drops_the_old_term() {
    let env = Env::new();
    let op = env.operator().await;
    let mut domains = Vec::new();
    for i in 0..5 {
        let (d, t) = env.domain(&format!("d{i}.example.com")).await;
        domains.push((d, t));
    }
    let app = app!(env);
    for (i, (_, t)) in domains.iter().enumerate() {
        let body = format!(r#"{{"client_id": "app-{i}", "client_secret": "rotation-secret-{i}"}}"#);
        assert_eq!(
            call(&app, post_json(CONFIG_PATH, t, &body)).await.status,
            StatusCode::OK
        );
    }
    let r = call(
        &app,
        TestRequest::post()
            .uri("/api/v1/admin/keys/rotate/")
            .insert_header(bearer(&op)),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.body["active_term"], 2);
    assert_eq!(r.body["reencryption_pending"], true, "{r:?}");
    // New writes use the new term at once.
    let body = r#"{"client_secret": "written-after-rotation"}"#;
    call(&app, post_json(CONFIG_PATH, &domains[0].1, body)).await;
    let s = call(&app, get("/api/v1/admin/keys/", &op)).await;
    let terms = s.body["terms"].as_array().unwrap();
    assert_eq!(terms.len(), 2, "{s:?}");
    assert_eq!(terms[1]["configs"], 1, "{s:?}");
    // The background task's work, run here directly.
    let n = env.vault.finish_reencryption().await.unwrap();
    assert_eq!(n, 4);
    let s = call(&app, get("/api/v1/admin/keys/", &op)).await;
    assert_eq!(s.body["terms"].as_array().unwrap().len(), 1, "{s:?}");
    assert_eq!(s.body["progress"], 1.0);
    for (i, (d, _)) in domains.iter().enumerate() {
        let expected = if i == 0 {
            "written-after-rotation".to_owned()
        } else {
            format!("rotation-secret-{i}")
        };
        let plain = env.vault.reveal_secret(d).unwrap().unwrap();
        assert_eq!(plain.secret.expose(), expected);
    }
    let report = env.vault.verify().unwrap();
    assert!(report.failures.is_empty(), "{report:?}");
    assert_eq!(report.secrets_opened, 5);
}

#[actix_web::test]
async fn metrics_parse_and_move_with_requests() {
    let env = Env::new();
    let (_, token) = env.domain("acme.com").await;
    let op = env.operator().await;
    let app = app!(env);
    let scrape = |body: String| prometheus::parse_or_panic(&body);
    let m0 = scrape(call(&app, get("/metrics", &op)).await.raw);
    let route = ("route", "/api/v1/enterprises/oidc/config/");
    let before = m0.sum("oidcvault_http_requests_total", &[route, ("status", "200")]);
    let batches0 = m0.sum("oidcvault_commit_batch_size_count", &[]);
    for _ in 0..3 {
        call(
            &app,
            post_json(
                CONFIG_PATH,
                &token,
                r#"{"client_id": "a", "client_secret": "metrics-secret"}"#,
            ),
        )
        .await;
    }
    let r = call(&app, get("/metrics", &op)).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.header("content-type").unwrap().starts_with("text/plain"),
        "{r:?}"
    );
    let m1 = scrape(r.raw.clone());
    assert_eq!(
        m1.sum("oidcvault_http_requests_total", &[route, ("status", "200")]) - before,
        3.0,
        "{}",
        r.raw
    );
    assert!(m1.sum("oidcvault_http_request_duration_seconds_count", &[route]) >= 3.0);
    assert!(
        m1.sum("oidcvault_commit_batch_size_count", &[]) >= batches0 + 3.0,
        "{}",
        r.raw
    );
    assert!(m1.sum("oidcvault_commit_sync_seconds_count", &[]) >= 3.0);
    assert_eq!(m1.sum("oidcvault_domains", &[]), 1.0);
    assert_eq!(m1.sum("oidcvault_configs", &[]), 1.0);
    assert_eq!(m1.sum("oidcvault_key_active_term", &[]), 1.0);
    assert!(m1.sum("oidcvault_key_term_encryptions", &[("term", "1")]) >= 3.0);
    assert!(m1.sum("oidcvault_store_size_bytes", &[]) > 0.0);
    assert!(!r.raw.contains("metrics-secret") && !r.raw.contains(&token) && !r.raw.contains(&op));
}

/// `/metrics` tells how many domains and configs exist and how the keys stand:
/// an operator token only. Without a token 401 (with the Bearer challenge),
/// with a domain token 403.
#[actix_web::test]
async fn metrics_need_the_operator_token() {
    let env = Env::new();
    let (_, domain_token) = env.domain("acme.com").await;
    let op = env.operator().await;
    let app = app!(env);
    let r = call(&app, TestRequest::get().uri("/metrics")).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{r:?}");
    assert!(
        r.header("www-authenticate")
            .is_some_and(|v| v.starts_with("Bearer")),
        "{r:?}"
    );
    assert!(!r.raw.contains("oidcvault_"), "{}", r.raw);
    let r = call(&app, get("/metrics", "ovt_1_not-a-valid-token")).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{r:?}");
    let r = call(&app, get("/metrics", &domain_token)).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{r:?}");
    assert!(!r.raw.contains("oidcvault_"), "{}", r.raw);
    let r = call(&app, get("/metrics", &op)).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(
        prometheus::parse_or_panic(&r.raw).sum("oidcvault_domains", &[]),
        1.0
    );
}

/// The counts a full scan finds now: domains, configs, configs per key term
/// (from each secret's envelope header). The oracle of the in-memory counts.
fn scanned(vault: &oidcvault::Vault) -> oidcvault::store::Counts {
    let mut c = oidcvault::store::Counts {
        domains: vault.list_domains().unwrap().len() as u64,
        ..Default::default()
    };
    for r in vault.store().configs() {
        let (_, r) = r.unwrap();
        c.configs += 1;
        if let Some(term) = oidcvault::crypto::envelope_term(&r.secret_sealed) {
            *c.configs_by_term.entry(term).or_default() += 1;
        }
    }
    c
}

/// The in-memory counts, the key status and the metrics all equal the scan.
#[track_caller]
fn assert_counts(vault: &oidcvault::Vault, what: &str) -> oidcvault::store::Counts {
    let scan = scanned(vault);
    assert_eq!(
        vault.store().counts(),
        scan,
        "{what}: counts and scan differ"
    );
    let status = vault.key_status().unwrap();
    assert_eq!(status.total_configs, scan.configs, "{what}: key status");
    for t in &status.terms {
        let want = scan.configs_by_term.get(&t.term).copied().unwrap_or(0);
        assert_eq!(t.configs, want, "{what}: key status of term {}", t.term);
    }
    scan
}

fn open_vault(dir: &std::path::Path) -> oidcvault::Vault {
    let path = write_config(dir);
    let env = vec![(
        "OIDCVAULT_MASTER_PASSPHRASE".to_owned(),
        PASSPHRASE.to_owned(),
    )];
    let config = oidcvault::config::Config::load_with_env(Some(&path), &env).unwrap();
    oidcvault::Vault::open(&config, &env).unwrap().0
}

/// The domain, config and per-term counts behind `/metrics` and the key status
/// are kept in memory by each write, not scanned per scrape: after every kind
/// of write (domain add and removal, config create, secret change, update
/// without a new secret, masked secret posted back, delete, rotation, writes
/// under the new term, re-encryption) they equal a full scan, and a reopened
/// vault counts the same.
#[actix_web::test]
async fn counts_equal_a_full_scan_after_every_kind_of_write() {
    use oidcvault::vault::TokenTarget;
    let dir = tempfile::tempdir().unwrap();
    let vault = actix_web::web::Data::new(open_vault(dir.path()));
    let data = app_data(&oidcvault::config::Config::default(), vault.clone());
    let app = actix_web::test::init_service(oidcvault::app(data)).await;
    let (_, op) = vault
        .create_token(&TokenTarget::Operator, None)
        .await
        .unwrap();
    let op = op.expose().to_owned();
    assert_counts(&vault, "empty");
    let mut domains = Vec::new();
    for i in 0..5 {
        let name = format!("c{i}.example.com");
        let d = vault.add_domain(&name, None).await.unwrap();
        let (_, t) = vault
            .create_token(&TokenTarget::Domain(name), None)
            .await
            .unwrap();
        domains.push((d, t.expose().to_owned()));
        assert_counts(&vault, "domain added");
    }
    let save = |i: usize, body: String| {
        let token = domains[i].1.clone();
        let app = &app;
        async move {
            let r = call(app, post_json(CONFIG_PATH, &token, &body)).await;
            assert_eq!(r.status, StatusCode::OK, "{r:?}");
            r
        }
    };
    for i in 0..4 {
        save(
            i,
            format!(r#"{{"client_id": "app-{i}", "client_secret": "count-secret-{i}"}}"#),
        )
        .await;
        assert_counts(&vault, "config created");
    }
    save(0, r#"{"client_secret": "count-secret-0-new"}"#.into()).await;
    assert_counts(&vault, "secret changed");
    save(1, r#"{"client_id": "renamed"}"#.into()).await;
    assert_counts(&vault, "updated without a secret");
    let masked = save(2, r#"{"client_id": "app-2"}"#.into()).await.body["client_secret_masked"]
        .as_str()
        .unwrap()
        .to_owned();
    save(2, format!(r#"{{"client_secret": "{masked}"}}"#)).await;
    assert_counts(&vault, "masked secret posted back");
    let r = call(&app, delete(CONFIG_PATH, &domains[1].1)).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{r:?}");
    assert_counts(&vault, "config deleted");
    let c = assert_counts(&vault, "before rotation");
    assert_eq!((c.domains, c.configs), (5, 3));
    assert_eq!(c.configs_by_term.get(&1), Some(&3));

    // A rotation: writes under the new term, a removal of a domain with a
    // config under each term, then re-encryption moves the rest.
    vault.rotate(None, "test").await.unwrap();
    assert_counts(&vault, "rotated");
    save(0, r#"{"client_secret": "count-secret-0-term-2"}"#.into()).await;
    save(
        1,
        r#"{"client_id": "again", "client_secret": "count-secret-1-term-2"}"#.into(),
    )
    .await;
    save(
        4,
        r#"{"client_id": "app-4", "client_secret": "count-secret-4"}"#.into(),
    )
    .await;
    let c = assert_counts(&vault, "written under term 2");
    assert_eq!(c.configs_by_term.get(&2), Some(&3), "{c:?}");
    assert!(vault.remove_domain(domains[4].0.id, None).await.unwrap());
    assert_counts(&vault, "domain with a term-2 config removed");
    assert!(vault.remove_domain(domains[3].0.id, None).await.unwrap());
    assert_counts(&vault, "domain with a term-1 config removed");
    let extra = vault.add_domain("extra.example.com", None).await.unwrap();
    assert!(vault.remove_domain(extra.id, None).await.unwrap());
    assert_counts(&vault, "domain without a config removed");
    let n = vault.finish_reencryption().await.unwrap();
    assert_eq!(n, 1, "c2 was still under term 1");
    let c = assert_counts(&vault, "re-encrypted");
    assert_eq!(
        (c.domains, c.configs, c.configs_by_term.clone()),
        (3, 3, [(2, 3)].into_iter().collect())
    );
    // The metrics show the same figures.
    let m = prometheus::parse_or_panic(&call(&app, get("/metrics", &op)).await.raw);
    assert_eq!(m.sum("oidcvault_domains", &[]), 3.0);
    assert_eq!(m.sum("oidcvault_configs", &[]), 3.0);
    assert_eq!(m.sum("oidcvault_key_term_configs", &[("term", "2")]), 3.0);
    assert_eq!(m.sum("oidcvault_key_term_configs", &[("term", "1")]), 0.0);

    // Counted again from the store when it opens.
    drop(app);
    vault.shutdown();
    drop(vault);
    let reopened = open_vault(dir.path());
    assert_eq!(assert_counts(&reopened, "reopened"), c);
}

/// Over TLS every answer carries `Strict-Transport-Security: max-age=31536000`
/// (neither includeSubDomains nor preload), the middleware's own answers (431)
/// too; over plain HTTP none does.
#[actix_web::test]
async fn hsts_is_sent_on_every_answer_over_tls_only() {
    let env = Env::new();
    let limits = actix_web::web::Data::new(oidcvault::limits::Limits::default());
    let tls = actix_web::test::init_service(oidcvault::app_serving(
        env.data.clone(),
        limits.clone(),
        oidcvault::Transport::Tls,
    ))
    .await;
    let plain = app!(env);
    let requests = || {
        [
            ("healthz", TestRequest::get().uri("/healthz"), 200),
            ("no token", TestRequest::get().uri("/metrics"), 401),
            ("unknown path", TestRequest::get().uri("/nowhere"), 404),
            ("wrong method", TestRequest::post().uri("/healthz"), 405),
            (
                "head too large",
                TestRequest::get()
                    .uri("/healthz")
                    .insert_header(("X-Big", "x".repeat(20_000))),
                431,
            ),
        ]
    };
    for (what, req, status) in requests() {
        let r = call(&tls, req).await;
        assert_eq!(r.status.as_u16(), status, "{what}: {r:?}");
        assert_eq!(
            r.header("strict-transport-security"),
            Some("max-age=31536000"),
            "{what} over TLS: {r:?}"
        );
    }
    for (what, req, status) in requests() {
        let r = call(&plain, req).await;
        assert_eq!(r.status.as_u16(), status, "{what}: {r:?}");
        assert_eq!(
            r.header("strict-transport-security"),
            None,
            "{what} over plain HTTP"
        );
    }
}
