//! Operations through the real app: the audit trail (one event per action, no
//! secret or token in any), its filters and paging, key status and rotation, and
//! the metrics endpoint.

use actix_web::http::StatusCode;
use actix_web::test::TestRequest;
use serde_json::Value;

use crate::app;
use crate::util::*;

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

/// Parse Prometheus text strictly enough to catch a malformed exposition.
fn parse_prometheus(text: &str) -> Vec<(String, f64)> {
    let mut samples = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix('#') {
            let rest = rest.trim_start();
            assert!(
                rest.starts_with("HELP ") || rest.starts_with("TYPE "),
                "bad comment: {line}"
            );
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value: {line}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value in {line}")),
        };
        let name_end = series.find('{').unwrap_or(series.len());
        let name = &series[..name_end];
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name: {line}"
        );
        if name_end < series.len() {
            assert!(series.ends_with('}'), "unclosed labels: {line}");
        }
        samples.push((series.to_owned(), value));
    }
    samples
}

fn sample(samples: &[(String, f64)], prefix: &str, contains: &[&str]) -> f64 {
    samples
        .iter()
        .filter(|(s, _)| s.starts_with(prefix) && contains.iter().all(|c| s.contains(c)))
        .map(|(_, v)| *v)
        .sum()
}

#[actix_web::test]
async fn metrics_parse_and_move_with_requests() {
    let env = Env::new();
    let (_, token) = env.domain("acme.com").await;
    let app = app!(env);
    let scrape = |body: String| parse_prometheus(&body);
    let m0 = scrape(call(&app, TestRequest::get().uri("/metrics")).await.raw);
    let route = r#"route="/api/v1/enterprises/oidc/config/""#;
    let before = sample(
        &m0,
        "oidcvault_http_requests_total",
        &[route, r#"status="200""#],
    );
    let batches0 = sample(&m0, "oidcvault_commit_batch_size_count", &[]);
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
    let r = call(&app, TestRequest::get().uri("/metrics")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.header("content-type").unwrap().starts_with("text/plain"),
        "{r:?}"
    );
    let m1 = scrape(r.raw.clone());
    assert_eq!(
        sample(
            &m1,
            "oidcvault_http_requests_total",
            &[route, r#"status="200""#]
        ) - before,
        3.0,
        "{}",
        r.raw
    );
    assert!(
        sample(
            &m1,
            "oidcvault_http_request_duration_seconds_count",
            &[route]
        ) >= 3.0
    );
    assert!(
        sample(&m1, "oidcvault_commit_batch_size_count", &[]) >= batches0 + 3.0,
        "{}",
        r.raw
    );
    assert!(sample(&m1, "oidcvault_commit_sync_seconds_count", &[]) >= 3.0);
    assert_eq!(sample(&m1, "oidcvault_domains", &[]), 1.0);
    assert_eq!(sample(&m1, "oidcvault_configs", &[]), 1.0);
    assert_eq!(sample(&m1, "oidcvault_key_active_term", &[]), 1.0);
    assert!(sample(&m1, "oidcvault_key_term_encryptions", &[r#"term="1""#]) >= 3.0);
    assert!(sample(&m1, "oidcvault_store_size_bytes", &[]) > 0.0);
    assert!(!r.raw.contains("metrics-secret") && !r.raw.contains(&token));
}
