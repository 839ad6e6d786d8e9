//! The admin page and the sign-in broker in a real browser: node scripts under
//! `tests/browser/` (playwright-core driving Debian's headless Chromium) against
//! this build's binary on loopback.
//!
//! - `admin_page_in_headless_chromium` runs `admin-page.test.mjs`, which starts
//!   its own server;
//! - `sso_sign_in_in_headless_chromium` starts panva's `oidc-provider` (an
//!   account in the enterprise domain, its own login form) and the binary with
//!   `server.public_url`, creates the domain, its OIDC config and an
//!   application over the API, then runs `sso-signin.test.mjs`: a tiny test
//!   application on loopback, the browser signing in through the broker at the
//!   provider's page, the admin page's callback URL and "Try sign-in";
//!   `sso_sign_in_over_https_in_headless_chromium` the same with the broker on
//!   https (self-signed), where its binding cookie is `__Host-` and Secure.
//!
//! They need Chromium and the npm packages, which `scripts/test.sh` installs, so
//! a plain `cargo test` lists them as ignored; `scripts/test.sh` always runs them:
//!
//! ```sh
//! cargo test --test integration browser:: -- --ignored
//! ```
//!
//! Screenshots go to `target/browser-screenshots/` (the sign-in's to its
//! `sso-signin/` and `sso-signin-https/` folders).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::oidc_provider::Provider;
use crate::harness::prometheus::parse_or_panic;
use crate::harness::{config_toml, tail, tls_agent, Home, CONFIG_PATH, PASSPHRASE};

const BIN: &str = env!("CARGO_BIN_EXE_oidcvault");
const CHROMIUM: &str = "/usr/bin/chromium";
/// Each scenario takes 15-30 s; this bounds a hung browser.
const TIMEOUT: Duration = Duration::from_secs(300);

fn screenshots_dir() -> PathBuf {
    // BIN is <target>/<profile>/oidcvault.
    let target = Path::new(BIN)
        .parent()
        .and_then(Path::parent)
        .expect("the binary sits in <target>/<profile>/");
    target.join("browser-screenshots")
}

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// Chromium and the npm packages are there, or the test fails saying how to get them.
fn assert_installed(also: &[(PathBuf, &str)]) {
    let dir = browser_dir();
    let missing: Vec<String> = [
        (
            Path::new(CHROMIUM).to_path_buf(),
            "apt-get install chromium chromium-driver",
        ),
        (
            dir.join("node_modules/playwright-core/package.json"),
            "cd tests/browser && npm ci",
        ),
    ]
    .into_iter()
    .chain(also.iter().cloned())
    .filter(|(path, _)| !path.exists())
    .map(|(path, fix)| format!("{} (fix: {fix})", path.display()))
    .collect();
    assert!(
        missing.is_empty(),
        "the browser test needs: {missing:?}; scripts/test.sh installs them"
    );
}

/// `node --test <script>` in tests/browser with `env`, bounded by [`TIMEOUT`]:
/// its exit status (None: killed at the deadline) and a report of its output.
fn run_node_test(script: &str, env: &[(&str, String)]) -> (Option<ExitStatus>, String) {
    let started = Instant::now();
    let mut cmd = Command::new("node");
    cmd.args([
        "--test",
        "--test-reporter=spec",
        "--test-concurrency=1",
        script,
    ])
    .current_dir(browser_dir())
    .env("OIDCVAULT_BIN", BIN)
    .env("CHROMIUM", CHROMIUM)
    .env("NO_COLOR", "1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run node (needed for the browser test): {e}"));
    let read = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let out = read(Box::new(child.stdout.take().unwrap()));
    let err = read(Box::new(child.stderr.take().unwrap()));
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for node") {
            break Some(status);
        }
        if started.elapsed() > TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let (out, err) = (out.join().unwrap(), err.join().unwrap());
    let report = format!(
        "--- node --test {script}: {status:?} after {:?} ---\n{out}\n--- stderr ---\n{err}",
        started.elapsed(),
    );
    (status, report)
}

#[test]
#[ignore = "needs headless Chromium and playwright-core: scripts/test.sh installs them and runs \
            this (cargo test --test integration browser:: -- --ignored)"]
fn admin_page_in_headless_chromium() {
    assert_installed(&[]);
    let shots = screenshots_dir();
    let (status, report) = run_node_test(
        "admin-page.test.mjs",
        &[("OIDCVAULT_SCREENSHOTS", shots.display().to_string())],
    );
    let report = format!("{report}\nscreenshots: {}", shots.display());
    assert!(
        status.is_some_and(|s| s.success()),
        "the browser test failed\n{report}"
    );
    println!("{report}");
}

// ---- the sign-in broker, end to end ----------------------------------------------------

/// The enterprise's client at the provider (its secret is what the vault guards).
const IDP_CLIENT_ID: &str = "oidcvault-broker";
const IDP_CLIENT_SECRET: &str = "idp-client-secret-for-the-browser-test-0123";
/// The one account at the provider.
const LOGIN: &str = "alice";
const PASSWORD: &str = "correct horse at the IdP";
const EMAIL: &str = "alice@acme.com";
const SUB: &str = "248289761001";
const DOMAIN: &str = "acme.com";
/// A domain at the same provider that the account's e-mail is not in.
const OTHER_DOMAIN: &str = "globex.example";

/// A port free a moment ago, for a listener whose address must be known before
/// it starts (the broker's public URL is in its config; the test application's
/// redirect URI is registered before it runs).
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

#[test]
#[ignore = "needs headless Chromium, playwright-core and oidc-provider: scripts/test.sh \
            installs them and runs this (cargo test --test integration browser:: -- --ignored)"]
fn sso_sign_in_in_headless_chromium() {
    sign_in_scenario(false);
}

/// The same over https: the binding cookie is then `__Host-` prefixed and
/// Secure, which a browser accepts only with exactly the right attributes.
#[test]
#[ignore = "needs headless Chromium, playwright-core and oidc-provider: scripts/test.sh \
            installs them and runs this (cargo test --test integration browser:: -- --ignored)"]
fn sso_sign_in_over_https_in_headless_chromium() {
    sign_in_scenario(true);
}

/// The provider, the binary (its public URL https with a self-signed
/// certificate when `https`), the domain, its config and an application; then
/// `sso-signin.test.mjs`, the audit trail and the log.
fn sign_in_scenario(https: bool) {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    assert_installed(&[(
        repo.join("tests/oidc-provider/node_modules/oidc-provider/package.json"),
        "cd tests/oidc-provider && npm ci",
    )]);
    let port = free_port();
    let scheme = if https { "https" } else { "http" };
    let base = format!("{scheme}://127.0.0.1:{port}");
    let app_port = free_port();
    let app_redirect = format!("http://127.0.0.1:{app_port}/callback");

    let mut op = Provider::start_with(
        0,
        &[
            ("OP_CLIENT_ID", IDP_CLIENT_ID),
            ("OP_CLIENT_SECRET", IDP_CLIENT_SECRET),
            ("OP_REDIRECT_URIS", &format!("{base}/sso/callback")),
            ("OP_ACCOUNT_EMAIL", EMAIL),
            ("OP_ACCOUNT_LOGIN", LOGIN),
            ("OP_ACCOUNT_PASSWORD", PASSWORD),
            ("OP_ACCOUNT_SUB", SUB),
            ("OP_ACCOUNT_NAME", "Alice Example"),
        ],
    );

    // The binary at a known address, which is its public URL; outbound fetches
    // (discovery, JWKS, token, userinfo) may reach the provider on loopback.
    let home = Home::new(Some(PASSPHRASE));
    let config = config_toml()
        .replace(
            "bind = \"127.0.0.1:0\"",
            &format!("bind = \"127.0.0.1:{port}\"\npublic_url = \"{base}\""),
        )
        .replace(
            "[outbound]\nenabled = false\nresolve_discovery_on_save = false\n",
            "[outbound]\nenabled = true\nresolve_discovery_on_save = true\n\
             allow_http_hosts = [\"127.0.0.1\"]\nallow_private_hosts = [\"127.0.0.1\"]\n\
             connect_timeout_secs = 2\ntimeout_secs = 10\n",
        );
    assert!(config.contains("public_url") && config.contains("allow_http_hosts"));
    let cert_pem = https.then(|| {
        let generated = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()])
            .expect("generate a certificate");
        std::fs::write(home.path().join("cert.pem"), generated.cert.pem()).unwrap();
        std::fs::write(
            home.path().join("key.pem"),
            generated.signing_key.serialize_pem(),
        )
        .unwrap();
        generated.cert.pem()
    });
    let config = if https {
        config.replace(
            "[server]\n",
            "[server]\ntls_cert = \"cert.pem\"\ntls_key = \"key.pem\"\n",
        )
    } else {
        config
    };
    home.write_config(&config);
    let operator = home.run_ok(&["token", "create", "--operator"]);
    let mut server = home.start();
    if let Some(pem) = &cert_pem {
        server.client.agent = tls_agent(pem);
    }
    assert_eq!(
        server.client.base, base,
        "the server is not where its public URL says"
    );

    let domain = server.add_domain(&operator, DOMAIN);
    server.add_domain(&operator, OTHER_DOMAIN);
    for name in [DOMAIN, OTHER_DOMAIN] {
        let stored = server.expect(
            200,
            "POST",
            CONFIG_PATH,
            &operator,
            Some(name),
            Some(&json!({
                "client_id": IDP_CLIENT_ID,
                "client_secret": IDP_CLIENT_SECRET,
                "discovery_url": op.discovery_url(),
            })),
        );
        // Resolved on save: the secret is bound to the provider's token endpoint.
        assert_eq!(
            stored["token_endpoint"],
            format!("{}/token", op.issuer()),
            "{stored}"
        );
    }
    let app = server.expect(
        201,
        "POST",
        "/api/v1/admin/apps/",
        &operator,
        None,
        Some(&json!({"name": "Example app", "redirect_uris": [app_redirect]})),
    );
    let text = |v: &serde_json::Value| {
        v.as_str()
            .unwrap_or_else(|| panic!("not a string in {app}"))
            .to_owned()
    };
    let (client_id, client_secret) = (text(&app["client_id"]), text(&app["client_secret"]));

    let shots = screenshots_dir().join(if https {
        "sso-signin-https"
    } else {
        "sso-signin"
    });
    let mut env = vec![
        ("SSO_HTTPS", https.to_string()),
        ("OIDCVAULT_BASE", base.clone()),
        ("OIDCVAULT_OPERATOR_TOKEN", operator.clone()),
        ("OIDCVAULT_SCREENSHOTS", shots.display().to_string()),
        ("SSO_ISSUER", op.issuer()),
        ("SSO_DOMAIN", DOMAIN.to_owned()),
        ("SSO_OTHER_DOMAIN", OTHER_DOMAIN.to_owned()),
        ("SSO_DOMAIN_ID", domain["id"].to_string()),
        ("SSO_LOGIN", LOGIN.to_owned()),
        ("SSO_PASSWORD", PASSWORD.to_owned()),
        ("SSO_EMAIL", EMAIL.to_owned()),
        ("SSO_SUB", SUB.to_owned()),
        ("SSO_APP_PORT", app_port.to_string()),
        ("SSO_APP_REDIRECT_URI", app_redirect),
        ("SSO_APP_CLIENT_ID", client_id),
        ("SSO_APP_CLIENT_SECRET", client_secret.clone()),
        ("SSO_IDP_CLIENT_SECRET", IDP_CLIENT_SECRET.to_owned()),
    ];
    if https {
        // The test application's requests to the broker trust its certificate.
        let cert = home.path().join("cert.pem").display().to_string();
        env.push(("NODE_EXTRA_CA_CERTS", cert));
    }
    let (status, report) = run_node_test("sso-signin.test.mjs", &env);
    let log = server.log();
    let op_log = op.stop_and_log();
    let report = format!(
        "{report}\nscreenshots: {}\n--- server stderr ---\n{}\n--- provider stderr ---\n{}",
        shots.display(),
        tail(&log, 12000),
        tail(&op_log, 6000)
    );
    assert!(
        status.is_some_and(|s| s.success()),
        "the sign-in browser test failed\n{report}"
    );
    // The audit trail: the sign-in, the redemption and the replayed code, never a secret.
    let audit = server.expect(
        200,
        "GET",
        "/api/v1/admin/audit/?limit=1000",
        &operator,
        None,
        None,
    );
    let events = audit["results"].as_array().cloned().unwrap_or_default();
    let actions: Vec<&str> = events.iter().filter_map(|e| e["action"].as_str()).collect();
    let sso_events: Vec<String> = events
        .iter()
        .filter(|e| e["action"].as_str().is_some_and(|a| a.starts_with("sso.")))
        .map(|e| format!("{} {} {}", e["action"], e["domain"], e["detail"]))
        .collect();
    let report = format!(
        "{report}\n--- sso.* audit events ---\n{}",
        sso_events.join("\n")
    );
    for action in ["sso.login", "sso.code_redeem", "sso.code_replay"] {
        assert!(
            actions.contains(&action),
            "no {action} audit event in {actions:?}\n{report}"
        );
    }
    // One sso.login per sign-in the scenario made, in order, with its reason.
    let logins: Vec<String> = events
        .iter()
        .filter(|e| e["action"] == "sso.login")
        .map(|e| {
            let detail = e["detail"].as_str().unwrap_or_default();
            detail
                .split_whitespace()
                .filter(|w| {
                    w.starts_with("outcome=")
                        || w.starts_with("reason=")
                        || w.starts_with("purpose=")
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    assert_eq!(
        logins,
        [
            "outcome=success",
            "outcome=failure reason=unknown_state", // the provider's answer replayed
            "outcome=failure reason=idp_error",     // cancelled at the provider
            "outcome=success",                      // two tabs at once
            "outcome=success",
            "outcome=failure reason=browser_mismatch", // finished in another browser
            "outcome=success purpose=sign_in_test",    // the admin page's Try sign-in
            "outcome=failure purpose=sign_in_test reason=email_outside_domain", // ... the other domain
        ],
        "the sso.login events\n{report}"
    );
    assert!(
        events.iter().any(|e| e["action"] == "sso.login"
            && e["domain"] == DOMAIN
            && e["detail"].as_str().is_some_and(|d| d.contains(EMAIL))),
        "no sso.login event of {DOMAIN} naming {EMAIL}: {events:#?}"
    );
    // Every audit event is also one structured log line (target oidcvault::audit,
    // as for every other action), so a log pipeline sees the sign-ins too.
    for action in ["sso.login", "sso.code_redeem", "sso.code_replay"] {
        assert!(
            log.lines()
                .any(|l| l.contains("oidcvault::audit") && l.contains(&format!("action={action} "))),
            "no audit log line for {action} (the events are in the audit trail, not in the log)\n{report}"
        );
    }
    // The domain's own view of the trail (the filter an operator uses) has its
    // code redemptions too, not only its sign-ins.
    let of_domain = server.expect(
        200,
        "GET",
        &format!("/api/v1/admin/audit/?domain={DOMAIN}&limit=1000"),
        &operator,
        None,
        None,
    );
    let domain_actions: Vec<String> = of_domain["results"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter_map(|e| e["action"].as_str().map(str::to_owned))
        .collect();
    assert!(
        domain_actions.iter().any(|a| a == "sso.code_redeem"),
        "GET /api/v1/admin/audit/?domain={DOMAIN} has no sso.code_redeem: {domain_actions:?} \
         (the redemption events carry domain_id but no domain name)\n{report}"
    );
    // The metrics count the same sign-ins, by outcome and reason, and time the
    // provider's part of each exchange.
    let metrics = server.call("GET", "/metrics", Some(&operator), None, None);
    assert_eq!(metrics.status, 200, "GET /metrics: {metrics}");
    let exposition = parse_or_panic(&metrics.body);
    let logins = |outcome: &str, reason: &str| {
        exposition.sum(
            "oidcvault_sso_logins_total",
            &[("outcome", outcome), ("reason", reason)],
        )
    };
    for (outcome, reason, n) in [
        ("success", "signed_in", 3.0),
        ("success", "sign_in_test", 1.0),
        ("failure", "unknown_state", 1.0),
        ("failure", "idp_error", 1.0),
        ("failure", "browser_mismatch", 1.0),
        ("failure", "email_outside_domain", 1.0),
    ] {
        assert_eq!(
            logins(outcome, reason),
            n,
            "oidcvault_sso_logins_total{{outcome={outcome:?}, reason={reason:?}}}\n{}",
            metrics.body
        );
    }
    assert_eq!(
        exposition.sum("oidcvault_sso_logins_total", &[]),
        8.0,
        "{}",
        metrics.body
    );
    // Five exchanges with the provider (three sign-ins, two tests).
    assert_eq!(
        exposition.single("oidcvault_sso_idp_seconds_count"),
        5.0,
        "{}",
        metrics.body
    );
    let audit_text = audit.to_string();
    for (what, secret) in [
        ("the IdP client secret", IDP_CLIENT_SECRET),
        ("the application's client secret", client_secret.as_str()),
        ("the password", PASSWORD),
    ] {
        assert!(!audit_text.contains(secret), "{what} is in the audit trail");
    }
    for (what, secret) in [
        ("the IdP client secret", IDP_CLIENT_SECRET),
        ("the application's client secret", client_secret.as_str()),
        ("the operator token", operator.as_str()),
    ] {
        assert!(
            !log.contains(secret),
            "{what} is in the server log\n{report}"
        );
    }
    println!("{report}");
}
