//! Running under systemd, through the real binary: `READY=1` / `STOPPING=1` on
//! `NOTIFY_SOCKET` (from the process systemd started, across the re-execution
//! that takes the secrets out of the environment), SIGHUP reloading the
//! configuration, and `--version` naming the commit.

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use crate::harness::home::config_toml;
use crate::harness::ops::operator_home;
use crate::harness::text::tail;
use crate::harness::{poll, Server, BIN};

/// The next datagram on `sock`, as text (panics with the server log on timeout).
fn next_message(sock: &UnixDatagram, server: &Server, what: &str) -> String {
    let mut buf = [0u8; 4096];
    match sock.recv(&mut buf) {
        Ok(n) => String::from_utf8_lossy(&buf[..n]).into_owned(),
        Err(e) => panic!(
            "no {what} on NOTIFY_SOCKET ({e})\n--- server stderr ---\n{}",
            tail(&server.log(), 8000)
        ),
    }
}

#[test]
fn ready_once_serving_and_stopping_on_sigterm() {
    let (home, _operator) = operator_home();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    // With OIDCVAULT_MASTER_PASSPHRASE set the process re-executes itself:
    // the notification must still come, from the same pid.
    let mut server = home.start_with(None, &[("NOTIFY_SOCKET", path.to_str().unwrap())]);
    let ready = next_message(&sock, &server, "READY=1");
    let at = Instant::now();
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready:?}");
    assert!(
        ready
            .lines()
            .any(|l| l == format!("MAINPID={}", server.pid())),
        "the notification names another pid than the one started ({}): {ready:?}",
        server.pid()
    );
    assert!(ready.contains("STATUS=serving on http://"), "{ready:?}");
    let r = server.call("GET", "/readyz", None, None, None);
    let served = at.elapsed();
    assert_eq!(r.status, 200, "/readyz right after READY=1: {r}");
    eprintln!("first request answered {served:?} after READY=1 was received");

    server.stop();
    let stopping = next_message(&sock, &server, "STOPPING=1");
    assert!(stopping.lines().any(|l| l == "STOPPING=1"), "{stopping:?}");
    assert!(
        stopping.contains("STATUS=stopping (SIGTERM)"),
        "{stopping:?}"
    );
}

#[test]
fn without_notify_socket_nothing_changes() {
    let (home, _operator) = operator_home();
    let mut server = home.start();
    assert_eq!(server.call("GET", "/readyz", None, None, None).status, 200);
    server.stop();
    assert!(!server.log().contains("NOTIFY_SOCKET"), "{}", server.log());
}

fn hup(server: &Server) -> Instant {
    let sent = Instant::now();
    let status = std::process::Command::new("kill")
        .args(["-HUP", &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    sent
}

/// Wait for the `n`th log line containing `needle`; how long it took.
fn wait_log(server: &Server, needle: &str, n: usize, since: Instant) -> Duration {
    poll::until(
        &format!("log line {n} with {needle:?}"),
        Duration::from_secs(20),
        Duration::from_millis(5),
        || {
            let log = server.log();
            if log.matches(needle).count() >= n {
                Ok(since.elapsed())
            } else {
                Err(tail(&log, 4000))
            }
        },
    )
}

fn bad_token_status(server: &Server) -> u16 {
    let bad = "ovt_1_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    server
        .call("GET", "/api/v1/admin/domains/", Some(bad), None, None)
        .status
}

#[test]
fn sighup_applies_level_and_limits_and_names_the_rest() {
    let (home, _operator) = operator_home();
    let mut server = home.start();
    assert!(!server.log().contains(" DEBUG "), "{}", server.log());

    // 1. log.level and the failed-authentication allowance apply at once.
    let changed = format!(
        "{}\n[log]\nlevel = \"debug\"\n\n[limits]\nauth_failures_per_window = 2\n",
        config_toml()
    );
    home.write_config(&changed);
    let sent = hup(&server);
    let took = wait_log(&server, "configuration reloaded; applied:", 1, sent);
    let log = server.log();
    let line = log
        .lines()
        .find(|l| l.contains("configuration reloaded"))
        .unwrap_or_default();
    eprintln!("reload logged {took:?} after SIGHUP: {line}");
    assert!(
        log.contains("configuration reloaded; applied: log.level, limits.auth_failures_per_window"),
        "{}",
        tail(&log, 4000)
    );
    assert!(
        log.contains(" DEBUG oidcvault::reload: log filter replaced"),
        "{}",
        tail(&log, 4000)
    );
    assert!(
        !log.contains("restart the server"),
        "nothing else changed: {}",
        tail(&log, 4000)
    );
    assert_eq!(bad_token_status(&server), 401);
    assert_eq!(bad_token_status(&server), 401);
    assert_eq!(
        bad_token_status(&server),
        429,
        "the lowered allowance (2) applies"
    );

    // 2. A setting that needs a restart is named, and keeps its running value.
    home.write_config(&changed.replace("127.0.0.1:0", "127.0.0.1:1"));
    let sent = hup(&server);
    wait_log(&server, "configuration reloaded; applied:", 2, sent);
    let log = server.log();
    assert!(
        log.contains("WARN oidcvault::reload: configuration reload: server.bind changed; restart the server to apply it"),
        "{}",
        tail(&log, 4000)
    );
    assert!(
        log.contains("configuration reloaded; applied: nothing"),
        "{}",
        tail(&log, 4000)
    );

    // 3. A broken file: one ERROR line, the running configuration stays.
    home.write_config("[server\nbind = ");
    let sent = hup(&server);
    wait_log(&server, "configuration reload refused", 1, sent);
    let log = server.log();
    let errors: Vec<&str> = log.lines().filter(|l| l.contains(" ERROR ")).collect();
    assert_eq!(errors.len(), 1, "{}", tail(&log, 4000));
    assert!(
        errors[0].contains("the running configuration stays"),
        "{errors:?}"
    );
    let r = server.call("GET", "/readyz", None, None, None);
    assert_eq!(r.status, 200, "still serving after a broken reload: {r}");
    assert_eq!(bad_token_status(&server), 429, "the running limits stay");
    server.stop();
}

#[test]
fn version_names_the_commit() {
    let out = std::process::Command::new(BIN)
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let prefix = format!("oidcvault {} (commit ", env!("CARGO_PKG_VERSION"));
    assert!(
        text.starts_with(&prefix) && text.trim_end().ends_with(')'),
        "{text:?}"
    );
    let commit = text.trim_end()[prefix.len()..].trim_end_matches(')');
    if let Some(set) = option_env!("OIDCVAULT_COMMIT") {
        assert_eq!(commit, set.trim());
        return;
    }
    let head = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output();
    match head {
        Ok(h) if h.status.success() => {
            let head = String::from_utf8(h.stdout).unwrap();
            assert_eq!(commit.trim_end_matches("-dirty"), head.trim(), "{text:?}");
        }
        _ => assert_eq!(commit, "unknown", "{text:?}"),
    }
}
