//! TLS: backup through a TLS server whose certificate names the host only, and
//! the whole API over TLS.
//!
//! Through the real binary over real TCP; the fixtures (tenants, versions of a
//! config, writer threads, key status and audit polls) are `crate::harness::ops`.

use std::time::Instant;

use serde_json::json;

use crate::harness::ops::*;
use crate::harness::prometheus::parse_prometheus;
use crate::harness::{
    assert_one_line_failure, config_toml, tail, tls_agent, Client, Home, CONFIG_PATH, EXIT_TIMEOUT,
    PASSPHRASE, REFUSE_TIMEOUT,
};

// ---- 6. TLS --------------------------------------------------------------------------------

/// A home serving TLS with a certificate generated for `names`; the PEM
/// certificate and the paths of the certificate and key files.
fn tls_home(names: &[&str]) -> (Home, String, std::path::PathBuf, std::path::PathBuf) {
    let home = Home::new(Some(PASSPHRASE));
    let generated = rcgen::generate_simple_self_signed(
        names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>(),
    )
    .expect("generate a certificate");
    let cert_pem = generated.cert.pem();
    let cert = home.path().join("cert.pem");
    let key = home.path().join("key.pem");
    std::fs::write(&cert, &cert_pem).unwrap();
    std::fs::write(&key, generated.signing_key.serialize_pem()).unwrap();
    home.write_config(&config_toml().replace(
        "[server]\n",
        &format!(
            "[server]\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
            cert.display(),
            key.display()
        ),
    ));
    (home, cert_pem, cert, key)
}

/// An operator's certificate names the host, not the address the server binds:
/// `oidcvault backup` must still reach the server it reads the certificate of.
#[test]
fn backup_through_a_tls_server_whose_certificate_names_the_host_only() {
    let (home, cert_pem, _, _) = tls_home(&["vault.example.test"]);
    let operator = home.run_ok(&["token", "create", "--operator"]);
    let mut server = home.start();
    let addr = addr_of(&server);
    server.client = Client {
        base: server.client.base.clone(),
        agent: tls_agent(&cert_pem),
    };
    let dest = home.path().join("copy");
    let out = home.run_with(
        None,
        &[
            (TOKEN_ENV, operator.as_str()),
            ("OIDCVAULT_SERVER__BIND", addr.as_str()),
        ],
        &["backup", dest.to_str().unwrap()],
        EXIT_TIMEOUT,
    );
    server.stop();
    assert!(
        out.success(),
        "backup through a TLS server with a certificate for vault.example.test\n{}",
        out.describe()
    );
    verify_ok(&home_for_data(&dest));
}

#[test]
fn the_whole_api_over_tls() {
    let started = Instant::now();
    let (home, cert_pem, cert, key) = tls_home(&["localhost", "127.0.0.1"]);
    let operator = home.run_ok(&["token", "create", "--operator"]);
    let mut server = home.start();
    assert!(
        server.client.base.starts_with("https://"),
        "the server announced {}",
        server.client.base
    );
    let addr = addr_of(&server);
    server.client = Client {
        base: server.client.base.clone(),
        agent: tls_agent(&cert_pem),
    };
    let client = server.client();

    // Every API answer carries the two headers, and over TLS, HSTS (a year,
    // neither includeSubDomains nor preload).
    let check = |what: &str, a: &Answer, status: u16| {
        assert_eq!(a.status, status, "{what}: HTTP {} {}", a.status, a.body);
        assert_eq!(a.cache_control.as_deref(), Some("no-store"), "{what}");
        assert_eq!(a.nosniff.as_deref(), Some("nosniff"), "{what}");
        assert_eq!(a.hsts.as_deref(), Some("max-age=31536000"), "{what}");
    };
    let op = Some(operator.as_str());
    check(
        "healthz",
        &request(&client, "GET", "/healthz", None, None, None),
        200,
    );
    check(
        "readyz",
        &request(&client, "GET", "/readyz", None, None, None),
        200,
    );
    let doc = request(&client, "GET", "/api/v1/openapi.json", None, None, None);
    check("openapi", &doc, 200);
    assert!(
        doc.json()["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1")),
        "{}",
        doc.body
    );
    check(
        "metrics without a token",
        &request(&client, "GET", "/metrics", None, None, None),
        401,
    );
    let metrics = request(&client, "GET", "/metrics", op, None, None);
    check("metrics", &metrics, 200);
    assert!(
        metrics
            .content_type
            .as_deref()
            .is_some_and(|c| c.starts_with("text/plain")),
        "{:?}",
        metrics.content_type
    );
    parse_prometheus(&metrics.body).unwrap_or_else(|e| panic!("/metrics over TLS: {e}"));
    check(
        "no token",
        &request(&client, "GET", DOMAINS, None, None, None),
        401,
    );

    let d = request(
        &client,
        "POST",
        DOMAINS,
        op,
        None,
        Some(&json!({"domain": "tls.test"})),
    );
    check("add domain", &d, 201);
    let domain_id = d.json()["id"].clone();
    let t = request(
        &client,
        "POST",
        TOKENS,
        op,
        None,
        Some(&json!({"domain": "tls.test"})),
    );
    check("create token", &t, 201);
    let token = t.json()["token"].as_str().unwrap().to_owned();
    let list = request(&client, "GET", DOMAINS, op, None, None);
    check("list domains", &list, 200);
    assert_eq!(list.json()[0]["domain"], "tls.test", "{}", list.body);
    let tokens = request(&client, "GET", TOKENS, op, None, None);
    check("list tokens", &tokens, 200);
    assert!(
        !tokens.body.contains(&token),
        "the token list shows a token"
    );

    let v = Version::new("tls", "tls.test", 1);
    let posted = request(
        &client,
        "POST",
        CONFIG_PATH,
        Some(&token),
        None,
        Some(&v.body()),
    );
    check("post config", &posted, 200);
    assert!(v.matches(&posted.json()), "{}", posted.body);
    assert!(!posted.body.contains(&v.secret));
    let got = request(&client, "GET", CONFIG_PATH, Some(&token), None, None);
    check("get config", &got, 200);
    assert_eq!(got.json(), posted.json());
    let by_operator = request(&client, "GET", CONFIG_PATH, op, Some("tls.test"), None);
    check("get config as operator", &by_operator, 200);
    assert_eq!(by_operator.json(), posted.json());
    check("keys", &request(&client, "GET", KEYS, op, None, None), 200);
    let audit = request(&client, "GET", AUDIT, op, None, None);
    check("audit", &audit, 200);
    assert!(
        !audit.body.contains(&v.secret) && !audit.body.contains(&token),
        "{}",
        audit.body
    );

    // A backup through the TLS server: the CLI trusts server.tls_cert.
    let dest = home.path().join("tls-copy");
    let out = home.run_with(
        None,
        &[
            (TOKEN_ENV, operator.as_str()),
            ("OIDCVAULT_SERVER__BIND", addr.as_str()),
        ],
        &["backup", dest.to_str().unwrap()],
        EXIT_TIMEOUT,
    );
    assert!(
        out.success(),
        "backup through the TLS server\n{}\n--- server stderr ---\n{}",
        out.describe(),
        tail(&server.log(), 6000)
    );
    assert_verify_counts(&verify_ok(&home_for_data(&dest)), 1, 1, 2);

    let rotated = request(&client, "POST", ROTATE, op, None, None);
    check("rotate", &rotated, 200);
    assert_eq!(rotated.json()["active_term"], 2, "{}", rotated.body);
    check(
        "a method the path does not serve",
        &request(&client, "PUT", "/healthz", None, None, None),
        405,
    );
    let token_id = t.json()["id"].clone();
    check(
        "revoke token",
        &request(
            &client,
            "DELETE",
            &format!("{TOKENS}{token_id}/"),
            op,
            None,
            None,
        ),
        204,
    );
    check(
        "a revoked token",
        &request(&client, "GET", CONFIG_PATH, Some(&token), None, None),
        401,
    );
    check(
        "delete config",
        &request(&client, "DELETE", CONFIG_PATH, op, Some("tls.test"), None),
        204,
    );
    check(
        "get deleted config",
        &request(&client, "GET", CONFIG_PATH, op, Some("tls.test"), None),
        404,
    );
    check(
        "delete domain",
        &request(
            &client,
            "DELETE",
            &format!("{DOMAINS}{domain_id}/"),
            op,
            None,
            None,
        ),
        204,
    );

    // Plain HTTP to the TLS port gets no HTTP answer.
    let plain = Client::new(format!("http://{addr}")).call("GET", "/healthz", None, None, None);
    assert!(
        plain.is_err(),
        "plain HTTP to the TLS port answered {:?}",
        plain.map(|r| r.to_string())
    );
    // And a client that does not trust the certificate refuses the connection.
    let untrusted =
        Client::new(format!("https://{addr}")).call("GET", "/healthz", None, None, None);
    assert!(
        untrusted.is_err(),
        "an untrusted certificate was accepted: {:?}",
        untrusted.map(|r| r.to_string())
    );
    let r = server.call("GET", "/healthz", None, None, None);
    assert_eq!(r.status, 200, "{r}");
    server.stop();

    // A certificate without its key is a configuration error, named.
    let half = Home::new(Some(PASSPHRASE));
    half.write_config(&config_toml().replace(
        "[server]\n",
        &format!("[server]\ntls_cert = \"{}\"\n", cert.display()),
    ));
    let out = half.run_with(None, &[], &["serve"], REFUSE_TIMEOUT);
    let line = assert_one_line_failure("tls_cert without tls_key", &out);
    assert!(
        line.contains("tls_cert") && line.contains("tls_key"),
        "{line:?}"
    );
    // A file that holds no certificate: serve refuses to start, naming the key.
    let garbage = home.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").unwrap();
    let bad = Home::new(Some(PASSPHRASE));
    bad.write_config(&config_toml().replace(
        "[server]\n",
        &format!(
            "[server]\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
            garbage.display(),
            key.display()
        ),
    ));
    let out = bad.run_with(None, &[], &["serve"], REFUSE_TIMEOUT);
    assert!(
        out.failed() && out.stderr.contains("server.tls_cert"),
        "serve with a certificate file holding no certificate\n{}",
        out.describe()
    );
    eprintln!("the_whole_api_over_tls: {:?}", started.elapsed());
}
