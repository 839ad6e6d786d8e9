//! The audit trail: one event per change without secrets, one log line per
//! event, cursor paging under write load.
//!
//! Through the real binary over real TCP; the fixtures (tenants, versions of a
//! config, writer threads, key status and audit polls) are `crate::harness::ops`.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::ops::*;
use crate::harness::{Server, CONFIG_PATH};

// ---- audit trail and its log lines ------------------------------------------------------

/// Changes made through the server, each once; the audit events and the server log.
fn audited_changes() -> (Vec<Value>, String, String, Vec<String>) {
    let (home, operator) = operator_home();
    let mut server = home.start();
    let op = operator.as_str();
    let tenants = add_tenants(&server, op, "logged", 2);
    let secret = format!("logged-secret-{}", crate::harness::random_hex(8));
    // With a token endpoint: the secret is bound to its origin, so the update
    // below may move the endpoint within it without the secret (issue 11).
    let body = json!({"client_id": "logged-app", "client_secret": secret,
                      "token_endpoint": "https://logged0.test/t0"});
    server.expect(
        200,
        "POST",
        CONFIG_PATH,
        &tenants[0].token,
        None,
        Some(&body),
    );
    let no_secret =
        json!({"client_id": "logged-app-2", "token_endpoint": "https://logged0.test/t"});
    server.expect(
        200,
        "POST",
        CONFIG_PATH,
        &tenants[0].token,
        None,
        Some(&no_secret),
    );
    server.expect(
        200,
        "POST",
        CONFIG_PATH,
        op,
        Some("logged1.test"),
        Some(&body),
    );
    server.expect(204, "DELETE", CONFIG_PATH, op, Some("logged1.test"), None);
    let tokens = server.expect(200, "GET", TOKENS, op, None, None);
    let domain_token_id = tokens
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["domain"] == "logged1.test")
        .map(|t| t["id"].clone())
        .expect("the token of logged1.test");
    server.expect(
        204,
        "DELETE",
        &format!("{TOKENS}{domain_token_id}/"),
        op,
        None,
        None,
    );
    let domains = server.expect(200, "GET", DOMAINS, op, None, None);
    let second_id = domains[1]["id"].clone();
    server.expect(
        204,
        "DELETE",
        &format!("{DOMAINS}{second_id}/"),
        op,
        None,
        None,
    );
    server.expect(200, "POST", ROTATE, op, None, None);
    wait_single_term(&server, op, 2);
    wait_for_events(&server, op, "key.drop", 1);
    // The same secret again, under the new term; then another one.
    let same = json!({ "client_secret": secret });
    server.expect(
        200,
        "POST",
        CONFIG_PATH,
        &tenants[0].token,
        None,
        Some(&same),
    );
    let other = json!({"client_secret": format!("{secret}-other")});
    server.expect(
        200,
        "POST",
        CONFIG_PATH,
        &tenants[0].token,
        None,
        Some(&other),
    );
    server.expect(201, "POST", "/api/v1/admin/backup", op, None, None);
    let events = audit_all(&server, op, "");
    server.stop();
    let log = server.log();
    let mut secrets = vec![secret.clone(), format!("{secret}-other"), operator.clone()];
    secrets.extend(tenants.iter().map(|t| t.token.clone()));
    (events, log, operator, secrets)
}

/// Each change the server makes is exactly one audit event, with the names of
/// the fields changed and a keyed fingerprint of the secret that tells whether it
/// changed (stable across a key rotation), never a secret or a token.
#[test]
fn each_change_is_one_audit_event_without_secrets() {
    let started = Instant::now();
    let (events, log, _, secrets) = audited_changes();
    // The first event is the operator token the offline CLI made.
    let summary: Vec<String> = events[1..]
        .iter()
        .map(|e| {
            format!(
                "{} {} {}",
                e["action"].as_str().unwrap_or_default(),
                e["domain"],
                e["fields"]
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            r#"domain.add "logged0.test" []"#,
            r#"token.create "logged0.test" []"#,
            r#"domain.add "logged1.test" []"#,
            r#"token.create "logged1.test" []"#,
            r#"config.create "logged0.test" ["client_id","client_secret","token_endpoint"]"#,
            r#"config.update "logged0.test" ["client_id","token_endpoint"]"#,
            r#"config.create "logged1.test" ["client_id","client_secret","token_endpoint"]"#,
            r#"config.delete "logged1.test" []"#,
            r#"token.revoke "logged1.test" []"#,
            r#"domain.remove "logged1.test" []"#,
            "key.rotate null []",
            "key.drop null []",
            r#"config.update "logged0.test" ["client_secret"]"#,
            r#"config.update "logged0.test" ["client_secret"]"#,
            "backup null []",
        ],
        "one event per change, in order: {events:#?}"
    );
    let fp = |i: usize| events[i]["secret_fingerprint"].as_str().map(str::to_owned);
    let created = fp(5).expect("a fingerprint on create");
    assert_eq!(
        fp(6),
        None,
        "an update without the secret has no fingerprint"
    );
    assert_eq!(
        fp(13).as_deref(),
        Some(created.as_str()),
        "the same secret, after a rotation"
    );
    assert!(
        fp(14).is_some_and(|f| f != created),
        "another secret, the same fingerprint"
    );
    assert!(
        fp(7).is_some_and(|f| f != created),
        "the same secret in another domain"
    );
    for e in &events {
        let text = e.to_string();
        for s in &secrets {
            assert!(!text.contains(s.as_str()), "{text}");
        }
    }
    for s in &secrets {
        assert!(
            !log.contains(s.as_str()),
            "a secret or token in the server log"
        );
    }
    eprintln!(
        "each_change_is_one_audit_event_without_secrets: {:?}",
        started.elapsed()
    );
}

/// Each audit event the server writes is also one structured log line carrying
/// the same facts (time, action, domain, fields, fingerprint, detail).
#[test]
fn every_server_audit_event_has_one_matching_log_line() {
    let (events, log, _, _) = audited_changes();
    let mut problems = Vec::new();
    for e in &events[1..] {
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| {
                l.contains("oidcvault::audit")
                    && l.contains(&format!("at={} ", e["at"].as_str().unwrap()))
                    && l.contains(&format!("action={} ", e["action"].as_str().unwrap()))
            })
            .collect();
        if lines.len() != 1 {
            problems.push(format!("{} log lines for {e}: {lines:#?}", lines.len()));
            continue;
        }
        let line = lines[0];
        // Values as an operator reads and greps them (issue 12): `name=value`,
        // a field without a value left out, the free-text detail quoted.
        let words: Vec<&str> = line.split_whitespace().collect();
        let plain = |v: &Value| match v {
            Value::Null => None,
            Value::String(s) => Some(s.clone()),
            other => Some(other.to_string()),
        };
        let fields: Vec<String> = e["fields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f.as_str().unwrap().to_owned())
            .collect();
        let expected = [
            ("actor", plain(&e["actor"])),
            ("domain_id", plain(&e["domain_id"])),
            ("domain", plain(&e["domain"])),
            ("fields", (!fields.is_empty()).then(|| fields.join(","))),
            ("secret_fingerprint", plain(&e["secret_fingerprint"])),
        ];
        for (name, value) in expected {
            let ok = match &value {
                Some(v) => words.contains(&format!("{name}={v}").as_str()),
                None => !words.iter().any(|w| w.starts_with(&format!("{name}="))),
            };
            if !ok {
                problems.push(format!(
                    "the log line of {e} lacks {name}={value:?}: {line}"
                ));
            }
        }
        let detail_ok = match plain(&e["detail"]) {
            Some(d) => line.contains(&format!("detail={d:?}")),
            None => !line.contains("detail="),
        };
        if !detail_ok {
            problems.push(format!("the log line of {e} has the wrong detail: {line}"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// A client that follows the audit trail with the cursor (`?cursor=<last id>`)
/// while the server is written to must see every event.
#[test]
fn audit_cursor_paging_misses_no_event_under_write_load() {
    let (home, operator) = operator_home();
    let mut server = home.start();
    let tenants = add_tenants(&server, &operator, "cursor", 6);
    let load = Load::start(&server.client(), &tenants, "cursor", 6);
    let mut seen = std::collections::BTreeSet::new();
    let mut cursor: Option<String> = None;
    let mut page_once = |server: &Server| {
        let mut path = format!("{AUDIT}?limit=1000");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let page = server.expect(200, "GET", &path, &operator, None, None);
        for e in page["results"].as_array().unwrap() {
            seen.insert(e["id"].as_u64().unwrap());
            cursor = Some(e["id"].to_string());
        }
        page["next"].is_string()
    };
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        page_once(&server);
    }
    load.finish(&server);
    while page_once(&server) {}
    let all: Vec<u64> = audit_all(&server, &operator, "")
        .iter()
        .map(|e| e["id"].as_u64().unwrap())
        .collect();
    server.stop();
    let missed: Vec<&u64> = all.iter().filter(|i| !seen.contains(i)).collect();
    assert!(
        missed.is_empty(),
        "paging with the cursor missed {} of {} events: ids {missed:?}",
        missed.len(),
        all.len()
    );
}

/// `?action=` filters the trail by one action (`config.update`) or by a family
/// (`config.`, ending in a dot), alone or with `domain`, over every page; a
/// malformed filter is a 400 naming `action`.
#[test]
fn audit_action_filter_exact_and_prefix() {
    let (home, operator) = operator_home();
    let mut server = home.start();
    let op = operator.as_str();
    let tenants = add_tenants(&server, op, "act", 2);
    for (i, t) in tenants.iter().enumerate() {
        for n in 0..2 {
            let body = json!({"client_id": format!("act-{i}-{n}"),
                              "client_secret": format!("act-secret-{i}-{n}-0123456789")});
            server.expect(200, "POST", CONFIG_PATH, &t.token, None, Some(&body));
        }
    }
    let summary = |query: &str| -> Vec<String> {
        audit_all(&server, op, query)
            .iter()
            .map(|e| format!("{} {}", e["action"].as_str().unwrap_or("?"), e["domain"]))
            .collect()
    };
    assert_eq!(
        summary("action=config.update"),
        [
            r#"config.update "act0.test""#,
            r#"config.update "act1.test""#
        ],
        "exact action"
    );
    assert_eq!(
        summary("action=config."),
        [
            r#"config.create "act0.test""#,
            r#"config.update "act0.test""#,
            r#"config.create "act1.test""#,
            r#"config.update "act1.test""#,
        ],
        "a prefix ending in a dot"
    );
    assert_eq!(
        summary("action=config.&domain=act1.test"),
        [
            r#"config.create "act1.test""#,
            r#"config.update "act1.test""#
        ],
        "with domain"
    );
    // A prefix without its dot is an action of that name: none.
    assert_eq!(summary("action=config"), Vec::<String>::new());
    assert_eq!(
        summary("action=token.create").len(),
        3,
        "the CLI's operator token and two domain tokens"
    );
    // Paged one event at a time, the filter holds on every page.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10 {
        let mut path = format!("{AUDIT}?action=config.&limit=1");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let page = server.expect(200, "GET", &path, op, None, None);
        let results = page["results"].as_array().cloned().unwrap_or_default();
        assert!(results.len() <= 1, "{page}");
        seen.extend(
            results
                .iter()
                .map(|e| e["action"].as_str().unwrap_or("?").to_owned()),
        );
        match page["next"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(
        seen,
        [
            "config.create",
            "config.update",
            "config.create",
            "config.update"
        ],
        "paged by one"
    );
    for bad in [
        "",
        ".",
        "config..",
        "Config.update",
        "config*",
        "sso.%20",
        &"a".repeat(65),
    ] {
        let res = server.call(
            "GET",
            &format!("{AUDIT}?action={bad}"),
            Some(op),
            None,
            None,
        );
        assert_eq!(res.status, 400, "action={bad:?}: {res}");
        let body = parse_json("the 400", &res.body);
        assert!(
            body["action"].is_array(),
            "action={bad:?}: the error names action: {body}"
        );
    }
    server.stop();
}
