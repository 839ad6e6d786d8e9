//! Through the real binary over TCP: sign-ins end to end against the stub
//! provider, and the guarantee that a code is redeemed at most once across
//! `kill -9`: many applications' clients redeem every code at once (several
//! times each), the server is killed as soon as the first redemption is
//! answered (others in flight; later in later cycles), restarted on the same port, and every code is
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
pub(super) fn broker_home() -> (Home, String) {
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
pub(super) fn setup(server: &Server, operator: &str, idp: &StubIdp) -> AppCreds {
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

/// How long after the first answered redemption each cycle's kill comes: at
/// once (most requests in flight), then later (more answered, some cut).
const KILL_DELAYS_MS: [u64; 4] = [0, 3, 10, 30];
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
    let mut spent_unanswered_total = 0;
    for (cycle, delay) in KILL_DELAYS_MS.into_iter().enumerate() {
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
        std::thread::sleep(Duration::from_millis(delay));
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
        let mut spent_unanswered = 0;
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
            if oks_before + oks_after == 0 {
                // Redeemed (durably) by a request the kill cut before its answer.
                spent_unanswered += 1;
            }
            assert!(
                oks_before + oks_after <= 1,
                "cycle {cycle}: code {i} redeemed {} times ({oks_before} before the kill, \
                 {oks_after} after the restart: {after:?})\n--- server stderr ---\n{}",
                oks_before + oks_after,
                tail(&server.log(), 4000)
            );
        }
        spent_unanswered_total += spent_unanswered;
        eprintln!(
            "kill -9 cycle {cycle} (+{delay} ms): {} answered before the kill, {lost} cut, \
             {spent_unanswered} codes spent by a cut request",
            before.values().map(Vec::len).sum::<usize>()
        );
    }
    eprintln!(
        "kill -9: {ok_before_total} redemptions answered 200 before kills, {unanswered_total} \
         requests cut by the kills, {spent_unanswered_total} codes spent without an answer"
    );
    assert!(
        unanswered_total > 0,
        "no kill landed while redemptions were in flight: the test proved nothing"
    );
    assert!(
        spent_unanswered_total > 0,
        "no kill landed between a redemption and its answer: the test proved nothing"
    );
    server.stop();
}

/// GET `url` with `cookie`, no redirects: whether the answer sends the browser
/// to the application with a code; `Err` when no answer came.
fn deliver(url: &str, cookie: &str) -> Result<bool, String> {
    let agent = ureq::AgentBuilder::new()
        .redirects(0)
        .max_idle_connections(0)
        .timeout(Duration::from_secs(20))
        .build();
    match agent.get(url).set("Cookie", cookie).call() {
        Ok(r) | Err(ureq::Error::Status(_, r)) => Ok(r
            .header("location")
            .is_some_and(|l| l.starts_with(APP_REDIRECT) && l.contains("code="))),
        Err(e) => Err(e.to_string()),
    }
}

/// The guarantee for `state`: taken at most once across `kill -9`, even with a
/// provider that would exchange its code again. Each pending sign-in's callback
/// is delivered by several clients at once, the server is killed as soon as one
/// gets a code, restarted, and every callback delivered again: at most one code
/// per sign-in over everything.
#[test]
fn kill_9_during_callbacks_never_takes_a_state_twice() {
    let idp = StubIdp::start();
    idp.knobs().reusable_codes = true;
    let (home, _) = broker_home();
    let operator = home.run_ok(&["token", "create", "--operator"]);
    home.run_ok(&["domain", "add", DOMAIN]);
    let mut server = home.start();
    let creds = setup(&server, &operator, &idp);
    let mut spent_unanswered = 0;
    for (cycle, delay) in [0u64, 5].into_iter().enumerate() {
        let base = server.client().base;
        let pending: Vec<(String, String)> = (0..12)
            .map(|i| {
                let mut browser = Browser::new();
                let start = super::authorize_path(&creds, &format!("k{cycle}-{i}"), &[]);
                let callback = browser
                    .follow_tcp_until(&base, &idp.origin(), &start, |u| {
                        u.contains("/sso/callback")
                    })
                    .unwrap_or_else(|l| panic!("{l:?}\n{}", browser.trace()));
                (
                    callback,
                    browser.cookie_header().expect("the binding cookie"),
                )
            })
            .collect();
        let codes: Arc<Mutex<BTreeMap<usize, usize>>> = Arc::default();
        let barrier = Arc::new(Barrier::new(pending.len() * 3));
        let (first, first_rx) = mpsc::channel::<()>();
        let mut threads = Vec::new();
        for (i, (url, cookie)) in pending.iter().enumerate() {
            for _ in 0..3 {
                let (url, cookie) = (url.clone(), cookie.clone());
                let (codes, barrier, first) = (codes.clone(), barrier.clone(), first.clone());
                threads.push(std::thread::spawn(move || {
                    barrier.wait();
                    if let Ok(true) = deliver(&url, &cookie) {
                        *codes.lock().unwrap().entry(i).or_default() += 1;
                        let _ = first.send(());
                    }
                }));
            }
        }
        drop(first);
        let got = first_rx.recv_timeout(Duration::from_secs(30)).is_ok();
        std::thread::sleep(Duration::from_millis(delay));
        server.kill9();
        for t in threads {
            t.join().unwrap();
        }
        assert!(
            got,
            "cycle {cycle}: no callback gave a code\n{}",
            tail(&server.log(), 6000)
        );
        server = home.start();
        let before = codes.lock().unwrap().clone();
        for (i, (url, cookie)) in pending.iter().enumerate() {
            let again = deliver(url, cookie).unwrap_or_else(|e| panic!("{e}"));
            let total = before.get(&i).copied().unwrap_or(0) + usize::from(again);
            assert!(
                total <= 1,
                "cycle {cycle}: sign-in {i} gave {total} codes ({:?} before the kill, {again} \
                 after the restart)\n--- server stderr ---\n{}",
                before.get(&i),
                tail(&server.log(), 4000)
            );
            if total == 0 {
                spent_unanswered += 1;
            }
        }
        eprintln!(
            "callbacks, cycle {cycle} (+{delay} ms): {} codes before the kill",
            before.values().sum::<usize>()
        );
    }
    eprintln!("callbacks: {spent_unanswered} sign-ins taken by a request the kill cut");
    server.stop();
}

/// After sign-ins (one code minted and not redeemed, one sign-in pending),
/// nothing of them is under `data/` in the clear: not the code, the provider's
/// state, nonce and code verifier, its tokens, the application's state, the
/// browser's binding, or either secret.
#[test]
fn nothing_of_a_sign_in_is_in_the_clear_under_data() {
    use crate::harness::leaks::{encodings, find_needles};
    let idp = StubIdp::start();
    let (home, _) = broker_home();
    let operator = home.run_ok(&["token", "create", "--operator"]);
    home.run_ok(&["domain", "add", DOMAIN]);
    let mut server = home.start();
    let creds = setup(&server, &operator, &idp);
    let app_state = "app-state-kept-sealed-0123456789";
    let code = sign_in(&server, &idp, &creds, app_state);
    let done = idp.last_authorize();
    let token_req = idp.tokens().pop().expect("a token request");
    let mut pending = Browser::new();
    pending
        .follow_tcp_until(
            &server.client().base,
            &idp.origin(),
            &super::authorize_path(&creds, "pending-app-state-0123456789", &[]),
            |u| u.contains("/sso/callback"),
        )
        .unwrap_or_else(|l| panic!("{l:?}"));
    let open = idp.last_authorize();
    server.stop();

    let mut values: Vec<(String, String)> = vec![
        ("the code".into(), code),
        ("the application's state".into(), app_state.into()),
        (
            "a pending application state".into(),
            "pending-app-state-0123456789".into(),
        ),
        ("the client secret".into(), stub_idp::CLIENT_SECRET.into()),
        ("the application secret".into(), creds.client_secret.clone()),
        (
            "the code verifier".into(),
            token_req.get("code_verifier").unwrap_or_default().into(),
        ),
    ];
    for (what, a) in [("done", &done), ("pending", &open)] {
        for p in ["state", "nonce"] {
            values.push((format!("{what} {p}"), a.get(p).unwrap_or_default().into()));
        }
    }
    for (name, v) in &pending.cookies {
        values.push((format!("cookie {name}"), v.clone()));
    }
    let mut needles = Vec::new();
    for (what, v) in &values {
        assert!(v.len() >= 16, "{what} is too short to look for: {v:?}");
        needles.extend(encodings(what, v.as_bytes()));
    }
    let files = crate::harness::snapshot(&home.data_dir());
    for (path, bytes) in &files {
        let Some(bytes) = bytes else { continue };
        let found = find_needles(bytes, &needles);
        assert!(
            found.is_empty(),
            "data/{} contains {found:?}",
            path.display()
        );
    }
}

/// Sign-in state is left out of backups: a backup taken while a code was
/// unredeemed and a sign-in pending, restored after the code was redeemed,
/// brings back neither (a restore never lets a code be redeemed twice).
#[test]
fn a_restored_backup_brings_back_no_code_and_no_pending_sign_in() {
    let idp = StubIdp::start();
    let (home, _) = broker_home();
    let operator = home.run_ok(&["token", "create", "--operator"]);
    home.run_ok(&["domain", "add", DOMAIN]);
    let mut server = home.start();
    let creds = setup(&server, &operator, &idp);
    let code = sign_in(&server, &idp, &creds, "before-backup");
    let base = server.client().base;
    let mut pending = Browser::new();
    let callback = pending
        .follow_tcp_until(
            &base,
            &idp.origin(),
            &super::authorize_path(&creds, "pending", &[]),
            |u| u.contains("/sso/callback"),
        )
        .unwrap_or_else(|l| panic!("{l:?}"));
    let dest = home.path().join("sso-backup");
    let addr = crate::harness::ops::addr_of(&server);
    let out = home.run_with(
        None,
        &[
            (crate::harness::ops::TOKEN_ENV, operator.as_str()),
            ("OIDCVAULT_SERVER__BIND", addr.as_str()),
        ],
        &["backup", dest.to_str().unwrap()],
        crate::harness::EXIT_TIMEOUT,
    );
    assert!(out.success(), "backup failed\n{}", out.describe());
    let (status, body) = redeem_tcp(&base, &creds, &code).unwrap();
    assert_eq!(status, 200, "{body}");
    server.stop();

    std::fs::remove_dir_all(home.data_dir()).unwrap();
    std::fs::rename(&dest, home.data_dir()).unwrap();
    let mut server = home.start();
    let (status, body) = redeem_tcp(&base, &creds, &code).unwrap();
    assert_eq!(
        status, 400,
        "the restored backup redeemed the code again: {body}"
    );
    let landing = pending.follow_tcp(&base, &idp.origin(), &callback);
    assert_eq!(
        landing.param("code"),
        None,
        "{landing:?}\n{}",
        pending.trace()
    );
    assert_eq!(
        landing.status(),
        Some(400),
        "{landing:?}\n{}",
        pending.trace()
    );
    server.stop();
}
