//! `/metrics` as Prometheus text over TCP: it parses (strictly, with the
//! harness's parser) and moves with requests.
//!
//! Through the real binary over real TCP; the fixtures (tenants, versions of a
//! config, writer threads, key status and audit polls) are `crate::harness::ops`.

use std::time::Instant;

use crate::harness::ops::*;
use crate::harness::{Server, CONFIG_PATH};

use crate::harness::prometheus::{parse_prometheus, Exposition};

// ---- 7. metrics ----------------------------------------------------------------------------

#[test]
fn prometheus_parser_is_strict() {
    let good = "# HELP a_total Things.\n# TYPE a_total counter\na_total{x=\"1\",y=\"a\\\"b\"} 3\n\
                # TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 0.5\nh_count 2\n";
    let e = parse_prometheus(good).unwrap();
    assert_eq!(e.sum("a_total", &[("y", "a\"b")]), 3.0);
    for bad in [
        "a_total 3\n",                          // no TYPE
        "# TYPE a counter\na{x=1} 3\n",         // unquoted label
        "# TYPE a counter\na{x=\"1\"} three\n", // not a number
        "# TYPE a counter\na 1\na 2\n",         // repeated series
        "# TYPE a counter\na 1",                // no final newline
        "# TYPE a gauge\na{x=\"1\"}  2\n",      // two spaces
        "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",
        "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 3\n",
        "# TYPE a counter\na_bucket 1\n", // no such family
        "# TYPE 1a counter\n",            // invalid name
    ] {
        assert!(parse_prometheus(bad).is_err(), "accepted {bad:?}");
    }
}

/// A malformed exposition fails naming the line (its number and its text), so a
/// test that scrapes `/metrics` says what was wrong.
#[test]
fn prometheus_parser_names_the_malformed_line() {
    let text = "# TYPE a counter\na{x=\"1\"} 1\na{x=1} 3\n";
    let e = parse_prometheus(text).expect_err("an unquoted label value is refused");
    assert!(
        e.contains("line 3") && e.contains("a{x=1} 3"),
        "the error does not name the line: {e}"
    );
    let panicked = std::panic::catch_unwind(|| crate::harness::prometheus::parse_or_panic(text));
    let message = panicked
        .expect_err("parse_or_panic accepted a malformed exposition")
        .downcast::<String>()
        .map(|m| *m)
        .unwrap_or_default();
    assert!(message.contains("a{x=1} 3"), "{message}");
}

/// `/metrics` with the operator token.
fn scrape(server: &Server, operator: &str) -> Exposition {
    let r = server.call("GET", "/metrics", Some(operator), None, None);
    assert_eq!(r.status, 200, "GET /metrics: {r}");
    parse_prometheus(&r.body)
        .unwrap_or_else(|e| panic!("/metrics is not Prometheus text: {e}\n{}", r.body))
}

#[test]
fn metrics_parse_as_prometheus_text_and_move_with_requests() {
    let started = Instant::now();
    let (home, operator) = operator_home();
    let mut server = home.start();
    // Over plain HTTP no HSTS is sent (browsers ignore it there), and the
    // metrics need the operator token.
    let plain = request(&server.client(), "GET", "/metrics", None, None, None);
    assert_eq!(plain.status, 401, "{}", plain.body);
    assert_eq!(plain.hsts, None);
    let health = request(&server.client(), "GET", "/healthz", None, None, None);
    assert_eq!((health.status, health.hsts), (200, None));
    let first = scrape(&server, &operator);
    assert_eq!(first.single("oidcvault_domains"), 0.0);
    assert_eq!(first.single("oidcvault_key_active_term"), 1.0);
    assert!(first.single("oidcvault_store_size_bytes") > 0.0);

    let tenants = add_tenants(&server, &operator, "metrics", 2);
    let before = scrape(&server, &operator);
    let domains = server.expect(200, "GET", DOMAINS, &operator, None, None);
    assert_eq!(
        before.single("oidcvault_domains"),
        domains.as_array().unwrap().len() as f64
    );
    assert_eq!(before.single("oidcvault_domains"), 2.0);
    assert_eq!(before.single("oidcvault_configs"), 0.0);
    let route = |e: &Exposition| -> Vec<String> {
        e.find("oidcvault_http_requests_total", &[])
            .iter()
            .filter_map(|s| s.labels.get("route").cloned())
            .filter(|r| r.contains("enterprises/oidc/config"))
            .collect()
    };
    let batches = |e: &Exposition| e.single("oidcvault_commit_batch_size_count");
    let syncs = |e: &Exposition| e.single("oidcvault_commit_sync_seconds_count");

    write_all(&server, &tenants, "metrics", 1);
    write_all(&server, &tenants[..1], "metrics", 2);
    let r = server.call("GET", CONFIG_PATH, Some(&tenants[1].token), None, None);
    assert_eq!(r.status, 200, "{r}");
    let after = scrape(&server, &operator);
    // Request metrics exist once a request was served (the prometheus crate leaves
    // out a labelled family with no series yet).
    for family in [
        "oidcvault_http_requests_total",
        "oidcvault_http_request_duration_seconds",
        "oidcvault_commit_batch_size",
        "oidcvault_commit_sync_seconds",
        "oidcvault_store_size_bytes",
        "oidcvault_domains",
        "oidcvault_configs",
        "oidcvault_key_active_term",
        "oidcvault_key_term_encryptions",
        "oidcvault_auth_cache_lookups_total",
        "oidcvault_auth_cache_bytes",
    ] {
        assert!(
            after.types.contains_key(family),
            "no {family} in {:?}",
            after.types.keys().collect::<Vec<_>>()
        );
    }
    // Authentication read the tokens and domains through the cache: the
    // operator token and the tenants' tokens were presented again and again.
    let lookups =
        |e: &Exposition, result| e.sum("oidcvault_auth_cache_lookups_total", &[("result", result)]);
    assert!(
        lookups(&after, "hit") > lookups(&before, "hit"),
        "no authentication cache hit between two scrapes: {} then {}",
        lookups(&before, "hit"),
        lookups(&after, "hit")
    );
    assert!(lookups(&after, "miss") >= 1.0);
    assert!(after.single("oidcvault_auth_cache_bytes") > 0.0);
    let routes = route(&after);
    assert!(
        !routes.is_empty(),
        "no request counted for the config route"
    );
    let config_route = routes[0].clone();
    let on_config = |e: &Exposition, method: &str, status: &str| {
        e.sum(
            "oidcvault_http_requests_total",
            &[
                ("method", method),
                ("route", config_route.as_str()),
                ("status", status),
            ],
        )
    };
    assert_eq!(
        on_config(&after, "POST", "200") - on_config(&before, "POST", "200"),
        3.0,
        "three POSTs of the config: {:?}",
        after.find("oidcvault_http_requests_total", &[("route", &config_route)])
    );
    assert_eq!(
        on_config(&after, "GET", "200") - on_config(&before, "GET", "200"),
        1.0
    );
    // Each request counted is timed under the same labels.
    for s in after.find("oidcvault_http_requests_total", &[]) {
        let labels: Vec<(&str, &str)> = s
            .labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            after.sum("oidcvault_http_request_duration_seconds_count", &labels),
            s.value,
            "latency count of {s:?}"
        );
    }
    assert!(
        batches(&after) > batches(&before),
        "commit_batch_size_count did not move: {} -> {}",
        batches(&before),
        batches(&after)
    );
    assert!(syncs(&after) > syncs(&before));
    assert_eq!(after.single("oidcvault_configs"), 2.0);
    assert!(
        after.sum("oidcvault_key_term_encryptions", &[("term", "1")]) >= 3.0,
        "{:?}",
        after.find("oidcvault_key_term_encryptions", &[])
    );
    // A 404 is counted under its own status.
    let r = server.call(
        "GET",
        CONFIG_PATH,
        Some(&operator),
        Some("nosuch.test"),
        None,
    );
    assert_eq!(r.status, 404, "{r}");
    let later = scrape(&server, &operator);
    assert_eq!(
        on_config(&later, "GET", "404") - on_config(&after, "GET", "404"),
        1.0
    );
    // Nothing secret in the exposition.
    let text = server
        .call("GET", "/metrics", Some(&operator), None, None)
        .body;
    for t in &tenants {
        assert!(!text.contains(&t.token) && !text.contains("secret-0001"));
    }
    assert!(!text.contains(&operator));
    server.stop();
    eprintln!(
        "metrics_parse_as_prometheus_text_and_move_with_requests: {:?}",
        started.elapsed()
    );
}
