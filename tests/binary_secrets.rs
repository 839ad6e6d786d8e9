//! Nothing secret at rest or in the logs (at `trace` level, in any encoding),
//! the leak detector itself, and the connection test keeping the secret out of
//! logs and answers.
//!
//! Through the real binary over real TCP, with the harness of `crate::harness`
//! (`Home`, `Server`, `Client`): every test gets its own temporary home.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::{json, Value};

use crate::harness::leaks::{encodings, find_needles, token_random_part};
use crate::harness::text::{b64, b64_decode, hex, random_hex, tail};
use crate::harness::{config_toml, snapshot, Home, CONFIG_PATH, PASSPHRASE};

// ---- 4. secrets at rest and in logs ----------------------------------------------------

#[test]
fn no_secret_at_rest_or_in_trace_logs() {
    let started = Instant::now();
    let home = Home::new(Some(PASSPHRASE));
    let cli_domain = home.run(&["domain", "add", "cli.test"]);
    assert!(cli_domain.success(), "{}", cli_domain.describe());
    let cli_token_out = home.run(&["token", "create", "--domain", "cli.test"]);
    assert!(cli_token_out.success(), "{}", cli_token_out.describe());
    let operator_out = home.run(&["token", "create", "--operator"]);
    assert!(operator_out.success(), "{}", operator_out.describe());
    let cli_token = cli_token_out.stdout.trim().to_owned();
    let operator = operator_out.stdout.trim().to_owned();
    for (what, out, token) in [
        ("token create --domain", &cli_token_out, &cli_token),
        ("token create --operator", &operator_out, &operator),
    ] {
        assert!(
            token.starts_with("ovt_") && !out.stderr.contains(token.as_str()),
            "{what}: {}",
            out.describe()
        );
    }

    let mut server = home.start_with(None, &[("OIDCVAULT_LOG", "trace")]);
    let mut secrets = Vec::new();
    let mut tokens = vec![cli_token.clone(), operator.clone()];
    let mut domains = vec![("cli.test".to_owned(), cli_token.clone())];
    for i in 0..3 {
        let name = format!("secret{i}.test");
        server.add_domain(&operator, &name);
        let token = server.create_token(&operator, &name);
        tokens.push(token.clone());
        domains.push((name, token));
    }
    let mut answers = Vec::new();
    for (name, token) in &domains {
        let first = format!("Zebra-Quokka-{}-secret", random_hex(12));
        let second = format!("Zebra-Quokka-{}-secret", random_hex(12));
        let body = json!({ "client_id": format!("id-{name}"), "client_secret": first });
        answers.push(server.expect(200, "POST", CONFIG_PATH, token, None, Some(&body)));
        // The second secret through the operator token naming the domain.
        let body = json!({ "client_secret": second });
        answers.push(server.expect(200, "POST", CONFIG_PATH, &operator, Some(name), Some(&body)));
        answers.push(server.expect(200, "GET", CONFIG_PATH, token, None, None));
        secrets.push(first);
        secrets.push(second);
    }
    // Rejected credentials are not logged either.
    let forged = format!(
        "ovt_1_{}",
        b64(random_hex(32).as_bytes(), true).get(..43).unwrap()
    );
    let r = server.call("GET", CONFIG_PATH, Some(&forged), None, None);
    assert_eq!(r.status, 401, "a forged token: {r}");
    tokens.push(forged);
    answers.push(server.expect(200, "GET", "/api/v1/admin/tokens/", &operator, None, None));
    server.stop();
    let log = server.log();
    assert!(
        log.lines().count() > 10,
        "suspiciously few log lines at trace level:\n{log}"
    );

    // No HTTP answer carried a secret or (after creation) a token.
    for answer in &answers {
        let text = answer.to_string();
        for s in secrets.iter().chain(&tokens) {
            assert!(
                !text.contains(s.as_str()),
                "an answer contains {s:?}: {text}"
            );
        }
    }

    // Nothing in the logs: secrets, tokens (whole or their random part), passphrase.
    let mut log_needles = Vec::new();
    for s in &secrets {
        log_needles.push((format!("client secret {s:?}"), s.as_bytes().to_vec()));
    }
    for t in &tokens {
        log_needles.push((format!("token {t:?}"), t.as_bytes().to_vec()));
        let random = token_random_part(t);
        if random.len() >= 8 {
            log_needles.push((
                format!("random part of token {t:?}"),
                random.as_bytes().to_vec(),
            ));
        }
    }
    log_needles.push(("the passphrase".into(), PASSPHRASE.as_bytes().to_vec()));
    let leaked = find_needles(log.as_bytes(), &log_needles);
    assert!(
        leaked.is_empty(),
        "the trace-level log contains: {leaked:?}\n--- log ---\n{}",
        tail(&log, 20000)
    );

    // Nothing at rest under data/, in any common encoding.
    let mut needles = Vec::new();
    for s in &secrets {
        needles.extend(encodings(&format!("client secret {s:?}"), s.as_bytes()));
    }
    for t in &tokens {
        needles.extend(encodings(&format!("token {t:?}"), t.as_bytes()));
        let random = token_random_part(t);
        needles.extend(encodings(
            &format!("random bytes of token {t:?}"),
            &b64_decode(random),
        ));
    }
    needles.extend(encodings("the passphrase", PASSPHRASE.as_bytes()));
    let files = snapshot(&home.data_dir());
    let mut total = 0;
    for (path, bytes) in &files {
        let Some(bytes) = bytes else { continue };
        total += bytes.len();
        let found = find_needles(bytes, &needles);
        assert!(
            found.is_empty(),
            "data/{} contains {found:?}",
            path.display()
        );
    }
    assert!(total > 0, "data/ is empty: {:?}", files.keys());
    eprintln!(
        "no_secret_at_rest_or_in_trace_logs: {} files, {total} bytes, {} log lines, {:?}",
        files.len(),
        log.lines().count(),
        started.elapsed()
    );
}

/// The leak detector itself: a secret embedded at any offset in a buffer that is
/// then hex- or base64-encoded is found, and an unrelated buffer is not flagged.
#[test]
fn leak_detector_finds_every_encoding() {
    let secret = format!("Zebra-Quokka-{}-secret", random_hex(12));
    let needles = encodings("secret", secret.as_bytes());
    for prefix in 0..6 {
        let mut plain = b"{\"k\":\"".to_vec();
        plain.extend(std::iter::repeat_n(b'x', prefix));
        plain.extend(secret.as_bytes());
        plain.extend(b"\"}");
        for (form, encoded) in [
            ("raw", plain.clone()),
            ("hex", hex(&plain, false).into_bytes()),
            ("HEX", hex(&plain, true).into_bytes()),
            ("base64", b64(&plain, false).into_bytes()),
            ("base64url", b64(&plain, true).into_bytes()),
        ] {
            let mut file = b"some header bytes ".to_vec();
            file.extend(&encoded);
            file.extend(b" trailing");
            assert!(
                !find_needles(&file, &needles).is_empty(),
                "{form} at offset {prefix} not found"
            );
        }
    }
    let other = format!("Zebra-Quokka-{}-secret", random_hex(12));
    assert!(find_needles(other.as_bytes(), &needles).is_empty());
    assert_eq!(b64_decode(&b64(secret.as_bytes(), true)), secret.as_bytes());
}

// ---- 5. outbound: the connection test's secret stays out of logs and answers ---------

/// The connection test decrypts the client secret and sends it to the provider
/// (client_secret_basic, then client_secret_post): at `trace` level no log line,
/// and no answer, carries it in any encoding. The provider is a stub on loopback.
#[test]
fn connection_test_keeps_the_secret_out_of_trace_logs() {
    use crate::harness::stub_http::{Reply, Stub};
    let secret = format!("Zebra-Quokka-{}-secret", random_hex(12));
    let doc = Arc::new(Mutex::new(Value::Null));
    let (served, expected) = (doc.clone(), secret.clone());
    let idp = Stub::start("127.0.0.1", move |r| {
        let body = String::from_utf8_lossy(&r.body).into_owned();
        let authenticated = r.header("authorization").is_some_and(|h| {
            b64_decode(h.trim_start_matches("Basic ")).ends_with(expected.as_bytes())
        }) || body.contains(&format!("client_secret={expected}"));
        match r.path.as_str() {
            "/.well-known/openid-configuration" => {
                Reply::Json(200, served.lock().unwrap().to_string())
            }
            "/jwks" => Reply::Json(200, r#"{"keys":[{"kty":"EC","kid":"a"}]}"#.into()),
            "/token" if r.method == "POST" && authenticated => {
                Reply::Json(400, r#"{"error":"invalid_grant"}"#.into())
            }
            "/token" if r.method == "POST" => {
                Reply::Json(401, r#"{"error":"invalid_client"}"#.into())
            }
            _ => Reply::Json(400, r#"{"error":"invalid_request"}"#.into()),
        }
    });
    let o = idp.origin();
    *doc.lock().unwrap() = json!({
        "issuer": o, "authorization_endpoint": format!("{o}/auth"),
        "token_endpoint": format!("{o}/token"), "jwks_uri": format!("{o}/jwks"),
    });
    let home = Home::new(Some(PASSPHRASE));
    home.write_config(&config_toml().replace(
        "enabled = false\nresolve_discovery_on_save = false",
        "resolve_discovery_on_save = true\nallow_http_hosts = [\"127.0.0.1\"]\n\
         allow_private_hosts = [\"127.0.0.1\"]\ntimeout_secs = 5",
    ));
    let operator = home.run_ok(&["token", "create", "--operator"]);
    let mut server = home.start_with(None, &[("OIDCVAULT_LOG", "trace")]);
    server.add_domain(&operator, "acme.com");
    let body = json!({"client_id": "app", "client_secret": secret,
                      "discovery_url": format!("{o}/.well-known/openid-configuration")});
    let mut answers = vec![server.expect(
        200,
        "POST",
        CONFIG_PATH,
        &operator,
        Some("acme.com"),
        Some(&body),
    )];
    assert_eq!(
        answers[0]["token_endpoint"],
        format!("{o}/token"),
        "{}",
        answers[0]
    );
    let test_path = "/api/v1/enterprises/oidc/config/test/";
    for methods in [json!(null), json!(["client_secret_post"])] {
        doc.lock().unwrap()["token_endpoint_auth_methods_supported"] = methods;
        let t = server.expect(
            200,
            "POST",
            test_path,
            &operator,
            Some("acme.com"),
            Some(&json!({})),
        );
        let client = t["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == "client_authentication")
            .unwrap()
            .clone();
        assert_eq!(client["status"], "pass", "{t}");
        answers.push(t);
    }
    server.stop();
    let log = server.log();
    assert!(
        log.contains("config.test"),
        "the test is audited and logged:\n{}",
        tail(&log, 4000)
    );
    // The HTTP client's own debug lines (ureq's request head) are in the log, with
    // the credentials header redacted: the check below looks at them too.
    assert!(
        log.contains("POST /token") && log.contains("Authorization: ***"),
        "{}",
        tail(&log, 8000)
    );
    let needles = encodings("the client secret", secret.as_bytes());
    let leaked = find_needles(log.as_bytes(), &needles);
    assert!(
        leaked.is_empty(),
        "the trace-level log contains {leaked:?}\n{}",
        tail(&log, 20000)
    );
    for a in &answers {
        let found = find_needles(a.to_string().as_bytes(), &needles);
        assert!(found.is_empty(), "an answer contains {found:?}: {a}");
    }
    let posts = idp
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST")
        .count();
    assert_eq!(posts, 2, "one token request per test");
}
