//! Through the real binary over TCP: sign-ins end to end against the stub
//! provider, and the guarantee that a code is redeemed at most once across
//! `kill -9`: many applications' clients redeem every code at once (several
//! times each), the server is killed as soon as the first redemption is
//! answered (others in flight), restarted on the same port, and every code is
//! redeemed again; over everything, before and after, at most one 200 per code.

use std::collections::BTreeMap;
use std::sync::{mpsc, Arc, Barrier, Mutex};
use std::time::Duration;

use serde_json::json;

use super::{basic, config, AppCreds, APP_REDIRECT, DOMAIN};
use crate::harness::sso_browser::Browser;
use crate::harness::stub_http::closed_port;
use crate::harness::stub_idp::{self, StubIdp};
use crate::harness::{tail, Home, Server, CONFIG_PATH, PASSPHRASE};

/// A home whose broker listens on a fixed loopback port (so `public_url` is
/// known before it starts, and a restart keeps it).
fn broker_home() -> (Home, String) {
    let port = closed_port();
    let public_url = format!("http://127.0.0.1:{port}");
    let home = Home::new(Some(PASSPHRASE));
    let sections = config(&public_url).replacen(
        "[server]\n",
        &format!("[server]\nbind = \"127.0.0.1:{port}\"\nshutdown_timeout_secs = 5\n"),
        1,
    );
    home.write_config(&format!(
        "[storage]\ndata_dir = \"data\"\n\
         [security]\nkdf_memory_kib = 19456\nkdf_iterations = 2\nkdf_parallelism = 1\n{sections}"
    ));
    (home, public_url)
}

/// Configure the domain with `idp` and register an application, over HTTP.
fn setup(server: &Server, operator: &str, idp: &StubIdp) -> AppCreds {
    server.expect(
        200,
        "POST",
        CONFIG_PATH,
        operator,
        Some(DOMAIN),
        Some(&json!({
            "client_id": stub_idp::CLIENT_ID,
            "client_secret": stub_idp::CLIENT_SECRET,
            "discovery_url": idp.discovery_url(),
        })),
    );
    let v = server.expect(
        201,
        "POST",
        "/api/v1/admin/apps/",
        operator,
        None,
        Some(&json!({"name": "Binary app", "redirect_uris": [APP_REDIRECT]})),
    );
    AppCreds::from_json(&v)
}

/// A sign-in through the server; the code.
fn sign_in(server: &Server, idp: &StubIdp, creds: &AppCreds, state: &str) -> String {
    let mut browser = Browser::new();
    let start = super::authorize_path(creds, state, &[]);
    let landing = browser.follow_tcp(&server.client().base, &idp.origin(), &start);
    assert!(
        landing.url().starts_with(APP_REDIRECT) && landing.param("state") == Some(state),
        "{landing:?}\npath:\n{}\n--- server stderr ---\n{}",
        browser.trace(),
        tail(&server.log(), 4000)
    );
    landing
        .param("code")
        .unwrap_or_else(|| panic!("no code: {landing:?}\n{}", browser.trace()))
        .to_owned()
}

/// `POST /sso/token`: the status and body, or `Err` when no answer came.
fn redeem_tcp(base: &str, creds: &AppCreds, code: &str) -> Result<(u16, String), String> {
    let agent = ureq::AgentBuilder::new()
        .max_idle_connections(0)
        .timeout(Duration::from_secs(20))
        .build();
    let r = agent
        .post(&format!("{base}/sso/token"))
        .set(
            "Authorization",
            &basic(&creds.client_id, &creds.client_secret),
        )
        .send_form(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", APP_REDIRECT),
        ]);
    match r {
        Ok(r) | Err(ureq::Error::Status(_, r)) => {
            let status = r.status();
            Ok((status, r.into_string().unwrap_or_default()))
        }
        Err(e) => Err(e.to_string()),
    }
}

#[test]
fn a_sign_in_through_the_binary_and_nothing_secret_in_its_log() {
    let idp = StubIdp::start();
    let (home, _) = broker_home();
    let operator = home.run_ok(&["token", "create", "--operator"]);
    home.run_ok(&["domain", "add", DOMAIN]);
    let mut server = home.start();
    let creds = setup(&server, &operator, &idp);
    let code = sign_in(&server, &idp, &creds, "bin-1");
    let (status, body) = redeem_tcp(&server.client().base, &creds, &code).unwrap();
    assert_eq!(status, 200, "{body}");
    let profile: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(profile["profile"]["email"], stub_idp::EMAIL, "{body}");
    let (status, body) = redeem_tcp(&server.client().base, &creds, &code).unwrap();
    assert_eq!(status, 400, "a second redemption: {body}");
    server.stop();
    let log = server.log();
    let state = idp
        .last_authorize()
        .get("state")
        .unwrap_or_default()
        .to_owned();
    for secret in [
        code.as_str(),
        state.as_str(),
        stub_idp::CLIENT_SECRET,
        creds.client_secret.as_str(),
        "stub-at-",
        "stubcode-",
        "eyJ",
    ] {
        assert!(
            !log.contains(secret),
            "{secret:?} in the server log:\n{log}"
        );
    }
}

const CYCLES: usize = 3;
const CODES_PER_CYCLE: usize = 16;
const REDEEMERS_PER_CODE: usize = 4;

#[test]
fn kill_9_during_redemptions_never_lets_a_code_be_redeemed_twice() {
    let idp = StubIdp::start();
    let (home, _) = broker_home();
    let operator = home.run_ok(&["token", "create", "--operator"]);
    home.run_ok(&["domain", "add", DOMAIN]);
    let mut server = home.start();
    let creds = setup(&server, &operator, &idp);
    let mut unanswered_total = 0;
    let mut ok_before_total = 0;
    for cycle in 0..CYCLES {
        let codes: Vec<String> = (0..CODES_PER_CYCLE)
            .map(|i| sign_in(&server, &idp, &creds, &format!("c{cycle}-{i}")))
            .collect();
        let base = server.client().base;
        // code index -> answers (status) before the kill; unanswered counted apart.
        let answers: Arc<Mutex<BTreeMap<usize, Vec<u16>>>> = Arc::default();
        let unanswered = Arc::new(Mutex::new(0usize));
        let barrier = Arc::new(Barrier::new(CODES_PER_CYCLE * REDEEMERS_PER_CODE));
        let (first_ok, first_ok_rx) = mpsc::channel::<()>();
        let mut threads = Vec::new();
        for (i, code) in codes.iter().enumerate() {
            for _ in 0..REDEEMERS_PER_CODE {
                let (base, creds, code) = (base.clone(), creds.clone(), code.clone());
                let (answers, unanswered, barrier) =
                    (answers.clone(), unanswered.clone(), barrier.clone());
                let first_ok = first_ok.clone();
                threads.push(std::thread::spawn(move || {
                    barrier.wait();
                    match redeem_tcp(&base, &creds, &code) {
                        Ok((status, _)) => {
                            if status == 200 {
                                let _ = first_ok.send(());
                            }
                            answers.lock().unwrap().entry(i).or_default().push(status);
                        }
                        Err(_) => *unanswered.lock().unwrap() += 1,
                    }
                }));
            }
        }
        drop(first_ok);
        // Kill as soon as one redemption is answered, the others in flight.
        let got_one = first_ok_rx.recv_timeout(Duration::from_secs(30)).is_ok();
        let killed = server.kill9();
        for t in threads {
            t.join().unwrap();
        }
        assert!(
            got_one,
            "cycle {cycle}: no redemption answered 200 ({killed})\n--- server stderr ---\n{}",
            tail(&server.log(), 6000)
        );
        let before = answers.lock().unwrap().clone();
        let lost = *unanswered.lock().unwrap();
        unanswered_total += lost;
        for (i, statuses) in &before {
            let oks = statuses.iter().filter(|s| **s == 200).count();
            ok_before_total += oks;
            assert!(
                oks <= 1,
                "cycle {cycle}: code {i} redeemed {oks} times before the kill: {statuses:?}"
            );
            assert!(
                statuses.iter().all(|s| *s == 200 || *s == 400),
                "cycle {cycle}: code {i}: {statuses:?}"
            );
        }
        // Restart on the same port and redeem every code again.
        server = home.start();
        assert_eq!(server.client().base, base, "restarted on another address");
        for (i, code) in codes.iter().enumerate() {
            let oks_before = before
                .get(&i)
                .map_or(0, |s| s.iter().filter(|s| **s == 200).count());
            let mut after = Vec::new();
            for _ in 0..2 {
                let (status, body) = redeem_tcp(&base, &creds, code).unwrap_or_else(|e| {
                    panic!("{e}\n--- server stderr ---\n{}", tail(&server.log(), 4000))
                });
                assert!(status == 200 || status == 400, "{status} {body}");
                after.push(status);
            }
            let oks_after = after.iter().filter(|s| **s == 200).count();
            assert!(
                oks_before + oks_after <= 1,
                "cycle {cycle}: code {i} redeemed {} times ({oks_before} before the kill, \
                 {oks_after} after the restart: {after:?})\n--- server stderr ---\n{}",
                oks_before + oks_after,
                tail(&server.log(), 4000)
            );
        }
        eprintln!(
            "kill -9 cycle {cycle}: {} answered before the kill, {lost} unanswered",
            before.values().map(Vec::len).sum::<usize>()
        );
    }
    eprintln!(
        "kill -9: {ok_before_total} redemptions answered 200 before kills, {unanswered_total} \
         requests cut by the kills"
    );
    assert!(
        unanswered_total > 0,
        "no kill landed while redemptions were in flight: the test proved nothing"
    );
    server.stop();
}
