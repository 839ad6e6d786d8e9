//! Through the real binary over TCP: a revocation, and a domain removal, are
//! effective before their call returns, while 64 clients hammer the server
//! with the token being revoked. The server answers authentication from a
//! cache of token and domain records (`src/store/engine/cached.rs`, whose
//! module doc gives the argument); this is the guarantee that cache must keep:
//! no request that *begins* after the revoking call's 2xx is authorised.
//!
//! Requests that began before the 2xx may still succeed (they raced the
//! revocation, as they would without a cache); every request's start and end
//! are taken on this process's monotonic clock, and so is the 2xx's arrival.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::{config_toml, Client, Home, CONFIG_PATH, PASSPHRASE};

const CLIENTS: usize = 64;

/// One request of a hammering client.
#[derive(Debug)]
struct Seen {
    started: Instant,
    ended: Instant,
    status: Result<u16, String>,
}

/// `CLIENTS` threads GET the config with `token` until `revoke` (run on this
/// thread once every client has had a 200) has returned and a while after;
/// then no request begun after `revoke` returned may have had a 200.
fn hammer_while(client: &Client, token: &str, what: &str, revoke: impl FnOnce()) {
    let stop = AtomicBool::new(false);
    let seen = Mutex::new(Vec::<Seen>::new());
    let mut revoked_at = None;
    std::thread::scope(|scope| {
        for _ in 0..CLIENTS {
            let (client, stop, seen) = (client.clone(), &stop, &seen);
            scope.spawn(move || {
                let mut mine = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    let started = Instant::now();
                    let r = client.call("GET", CONFIG_PATH, Some(token), None, None);
                    mine.push(Seen {
                        started,
                        ended: Instant::now(),
                        status: r.map(|r| r.status),
                    });
                }
                seen.lock().unwrap().extend(mine);
            });
        }
        // Warm: every record the check reads is in the cache by now.
        std::thread::sleep(Duration::from_millis(500));
        revoke();
        revoked_at = Some(Instant::now());
        std::thread::sleep(Duration::from_millis(500));
        stop.store(true, Ordering::SeqCst);
    });
    let revoked_at = revoked_at.unwrap();
    let seen = seen.into_inner().unwrap();
    let before = seen.iter().filter(|s| s.ended < revoked_at).count();
    let ok_before = seen
        .iter()
        .filter(|s| s.ended < revoked_at && s.status == Ok(200))
        .count();
    let after: Vec<&Seen> = seen.iter().filter(|s| s.started > revoked_at).collect();
    let transport: Vec<&Seen> = seen.iter().filter(|s| s.status.is_err()).collect();
    let late_ok: Vec<String> = after
        .iter()
        .filter(|s| s.status == Ok(200))
        .map(|s| {
            format!(
                "began {:?} after the 2xx, answered 200 after {:?}",
                s.started - revoked_at,
                s.ended - s.started
            )
        })
        .collect();
    eprintln!(
        "{what}: {} requests, {before} ended before the 2xx ({ok_before} of them 200), {} \
         began after it",
        seen.len(),
        after.len()
    );
    assert!(
        transport.is_empty(),
        "{what}: transport failures: {:?}",
        &transport[..transport.len().min(5)]
    );
    assert!(
        ok_before >= CLIENTS,
        "{what}: only {ok_before} successful requests before the revocation: the token \
         was not in use (a test that cannot fail)"
    );
    assert!(
        after.len() >= CLIENTS,
        "{what}: only {} requests began after the revocation",
        after.len()
    );
    assert!(
        late_ok.is_empty(),
        "{what}: {} requests begun after the revoking call's 2xx were authorised: {:?}",
        late_ok.len(),
        &late_ok[..late_ok.len().min(10)]
    );
    let statuses: std::collections::BTreeSet<u16> =
        after.iter().filter_map(|s| s.status.clone().ok()).collect();
    assert_eq!(
        statuses,
        [401].into(),
        "{what}: answers after the revocation"
    );
}

fn home() -> Home {
    let home = Home::new(Some(PASSPHRASE));
    // No failed-authentication limit: every refused request is a 401 from the
    // token check, not a 429 before it.
    home.write_config(&format!(
        "{}\n[limits]\nauth_failures_per_window = 0\n",
        config_toml()
    ));
    home
}

/// A domain with a config, and a token of that domain (its id too).
fn domain_with_token(client: &Client, operator: &str, name: &str) -> (u64, String, u64) {
    let r = client
        .call(
            "POST",
            "/api/v1/admin/domains/",
            Some(operator),
            None,
            Some(&json!({ "domain": name })),
        )
        .unwrap();
    assert_eq!(r.status, 201, "{r}");
    let domain_id = r.json()["id"].as_u64().unwrap();
    let r = client
        .call(
            "POST",
            "/api/v1/admin/tokens/",
            Some(operator),
            None,
            Some(&json!({ "domain": name })),
        )
        .unwrap();
    assert_eq!(r.status, 201, "{r}");
    let token = r.json()["token"].as_str().unwrap().to_owned();
    let token_id = r.json()["id"].as_u64().unwrap();
    let body = json!({"client_id": "app", "client_secret": "s3cr3tP@ssw0rd!"});
    let r = client
        .call("POST", CONFIG_PATH, Some(&token), None, Some(&body))
        .unwrap();
    assert_eq!(r.status, 200, "{r}");
    (domain_id, token, token_id)
}

#[test]
fn a_revoked_token_is_refused_from_the_revocations_answer_on() {
    let home = home();
    let operator = home.run_ok(&["token", "create", "--operator"]);
    let mut server = home.start();
    let client = server.client();
    let (_, token, token_id) = domain_with_token(&client, &operator, "revoked.test");
    hammer_while(&client, &token, "token revocation", || {
        let r = client
            .call(
                "DELETE",
                &format!("/api/v1/admin/tokens/{token_id}/"),
                Some(&operator),
                None,
                None,
            )
            .unwrap();
        assert_eq!(r.status, 204, "{r}");
    });
    server.stop();
}

#[test]
fn a_removed_domains_token_is_refused_from_the_removals_answer_on() {
    let home = home();
    let operator = home.run_ok(&["token", "create", "--operator"]);
    let mut server = home.start();
    let client = server.client();
    let (domain_id, token, _) = domain_with_token(&client, &operator, "removed.test");
    hammer_while(&client, &token, "domain removal", || {
        let r = client
            .call(
                "DELETE",
                &format!("/api/v1/admin/domains/{domain_id}/"),
                Some(&operator),
                None,
                None,
            )
            .unwrap();
        assert_eq!(r.status, 204, "{r}");
    });
    // A domain of the same name added again is a new domain: the old token
    // stays refused.
    let r = client
        .call(
            "POST",
            "/api/v1/admin/domains/",
            Some(&operator),
            None,
            Some(&json!({ "domain": "removed.test" })),
        )
        .unwrap();
    assert_eq!(r.status, 201, "{r}");
    let r = client
        .call("GET", CONFIG_PATH, Some(&token), None, None)
        .unwrap();
    assert_eq!(r.status, 401, "{r}");
    server.stop();
}
