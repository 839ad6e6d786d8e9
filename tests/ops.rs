//! Operations through the real binary over real TCP: online backup under write
//! load and restore, the audit trail and its log lines, key rotation (under load,
//! offline, interrupted, automatic), `verify`, passphrase change interrupted at
//! every step, TLS, and `/metrics` as Prometheus text. Reuses the harness of
//! `binary` (`Home`, `Server`, `Client`).
//!
//! Crashes are provoked with the binary's test hook `OIDCVAULT_FAILPOINT=<name>`,
//! which makes the process exit with code 86 at that point. The hook exists in
//! debug builds only (what `cargo test` builds); under `cargo test --release`
//! the tests that need it are ignored, and scripts/test.sh checks that the
//! release binary does not hold it.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::binary::{
    assert_one_line_failure, assert_refused_for_master_key, config_toml, copy_dir, lower, snapshot,
    snapshot_diff, tail, Client, Home, Server, CONFIG_PATH, EXIT_TIMEOUT, OTHER_PASSPHRASE,
    PASSPHRASE, REFUSE_TIMEOUT,
};

const KEYS: &str = "/api/v1/admin/keys/";
const ROTATE: &str = "/api/v1/admin/keys/rotate";
const AUDIT: &str = "/api/v1/admin/audit/";
const DOMAINS: &str = "/api/v1/admin/domains/";
const TOKENS: &str = "/api/v1/admin/tokens/";
const FAILPOINT: &str = "OIDCVAULT_FAILPOINT";
const NEW_PASSPHRASE_ENV: &str = "OIDCVAULT_NEW_MASTER_PASSPHRASE";
const TOKEN_ENV: &str = "OIDCVAULT_TOKEN";
/// The exit code of a failpoint.
const FAILPOINT_EXIT: i32 = 86;
/// The keyring write's steps, in order.
const KEYRING_FAILPOINTS: [&str; 4] = [
    "keyring-before-write",
    "keyring-after-tmp",
    "keyring-after-rename",
    "keyring-after-sync",
];
/// Bound of every poll (re-encryption, rotation, writers making progress).
const POLL_TIMEOUT: Duration = Duration::from_secs(30);
const POLL_EVERY: Duration = Duration::from_millis(50);

// ---- helpers -------------------------------------------------------------------------

/// `host:port` of a running server (for `OIDCVAULT_SERVER__BIND` of a CLI command
/// that must reach it: the test config binds port 0).
fn addr_of(server: &Server) -> String {
    let base = &server.client.base;
    base.split_once("://")
        .map_or(base.as_str(), |(_, a)| a)
        .to_owned()
}

fn parse_json(what: &str, text: &str) -> Value {
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {text:?}"))
}

/// A home (passphrase [`PASSPHRASE`], test config) and an operator token made by
/// the offline CLI.
fn operator_home() -> (Home, String) {
    let home = Home::new(Some(PASSPHRASE));
    let operator = home.run_ok(&["token", "create", "--operator"]);
    (home, operator)
}

/// A home whose config points `storage.data_dir` at `dir`.
fn home_for_data(dir: &Path) -> Home {
    let home = Home::new(Some(PASSPHRASE));
    let text = config_toml().replace(
        "data_dir = \"data\"",
        &format!("data_dir = \"{}\"", dir.display()),
    );
    assert!(text.contains(&dir.display().to_string()));
    home.write_config(&text);
    home
}

#[derive(Clone, Debug)]
struct Tenant {
    name: String,
    token: String,
}

/// `n` domains `<prefix><i>.test`, each with a domain token, over the admin API.
fn add_tenants(server: &Server, operator: &str, prefix: &str, n: usize) -> Vec<Tenant> {
    (0..n)
        .map(|i| {
            let name = format!("{prefix}{i}.test");
            server.add_domain(operator, &name);
            let token = server.create_token(operator, &name);
            Tenant { name, token }
        })
        .collect()
}

/// One write of a domain's config, everything derived from (tag, domain, seq):
/// the client id carries the sequence number, and the secret's last four
/// characters (the visible part of the mask) are the sequence number too.
#[derive(Clone, Debug, PartialEq)]
struct Version {
    client_id: String,
    secret: String,
    masked: String,
    discovery_url: String,
}

impl Version {
    fn new(tag: &str, domain: &str, seq: u32) -> Self {
        let secret = format!("ops-{tag}-{domain}-secret-{seq:04}");
        let masked = format!("********{}", &secret[secret.len() - 4..]);
        Self {
            client_id: format!("ops-{tag}-{domain}-seq{seq}"),
            secret,
            masked,
            discovery_url: format!("https://{domain}/.well-known/openid-configuration?seq={seq}"),
        }
    }

    fn body(&self) -> Value {
        json!({
            "client_id": self.client_id,
            "client_secret": self.secret,
            "discovery_url": self.discovery_url,
        })
    }

    fn matches(&self, v: &Value) -> bool {
        v["client_id"] == self.client_id.as_str()
            && v["client_secret_masked"] == self.masked.as_str()
            && v["client_secret"] == self.masked.as_str()
            && v["discovery_url"] == self.discovery_url.as_str()
    }
}

/// The sequence number in a stored config's client id.
fn seq_of(v: &Value) -> Option<u32> {
    v["client_id"].as_str()?.rsplit_once("-seq")?.1.parse().ok()
}

/// Write version `seq` of every tenant's config; their answers.
fn write_all(server: &Server, tenants: &[Tenant], tag: &str, seq: u32) -> Vec<Value> {
    tenants
        .iter()
        .map(|t| {
            let v = Version::new(tag, &t.name, seq);
            let got = server.expect(200, "POST", CONFIG_PATH, &t.token, None, Some(&v.body()));
            assert!(v.matches(&got), "{}: wrote {v:?}, answer {got}", t.name);
            got
        })
        .collect()
}

/// `n` domains `<prefix><i>.test` with a config each that nobody writes again,
/// written by the operator naming the domain; the stored configs.
fn add_idle_configs(
    server: &Server,
    operator: &str,
    prefix: &str,
    n: usize,
) -> Vec<(String, Value)> {
    (0..n)
        .map(|i| {
            let name = format!("{prefix}{i}.test");
            server.add_domain(operator, &name);
            let v = Version::new("idle", &name, 1);
            let got = server.expect(
                200,
                "POST",
                CONFIG_PATH,
                operator,
                Some(&name),
                Some(&v.body()),
            );
            assert!(v.matches(&got), "{name}: wrote {v:?}, answer {got}");
            (name, got)
        })
        .collect()
}

fn assert_idle_configs(what: &str, server: &Server, operator: &str, idle: &[(String, Value)]) {
    for (name, want) in idle {
        let got = server.expect(200, "GET", CONFIG_PATH, operator, Some(name), None);
        assert_eq!(&got, want, "{what}: {name} changed");
    }
}

/// Every config as stored must equal `expected`, field by field (masked secret,
/// client id, URLs, ids, timestamps).
fn assert_configs(what: &str, server: &Server, tenants: &[Tenant], expected: &[Value]) {
    for (t, want) in tenants.iter().zip(expected) {
        let got = server.expect(200, "GET", CONFIG_PATH, &t.token, None, None);
        assert_eq!(
            &got,
            want,
            "{what}: {} answers differently\n--- server stderr ---\n{}",
            t.name,
            tail(&server.log(), 6000)
        );
    }
}

/// `oidcvault verify`: must exit 0; its JSON counts.
fn verify_ok(home: &Home) -> Value {
    let out = home.run(&["verify"]);
    assert!(
        out.success(),
        "`oidcvault verify` failed\n{}",
        out.describe()
    );
    let v = parse_json("verify", &out.stdout);
    assert_eq!(v["failures"], 0, "verify: {v}");
    v
}

/// `oidcvault verify` counts against what the store should hold.
fn assert_verify_counts(v: &Value, domains: u64, configs: u64, tokens: u64) {
    assert_eq!(
        (
            &v["domains"],
            &v["configs"],
            &v["secrets_opened"],
            &v["tokens"]
        ),
        (
            &json!(domains),
            &json!(configs),
            &json!(configs),
            &json!(tokens)
        ),
        "verify counts (domains, configs, secrets_opened, tokens): {v}"
    );
}

fn key_status(server: &Server, operator: &str) -> Value {
    server.expect(200, "GET", KEYS, operator, None, None)
}

/// The term numbers of a key status, in order.
fn terms_of(status: &Value) -> Vec<u64> {
    status["terms"]
        .as_array()
        .unwrap_or_else(|| panic!("no terms in {status}"))
        .iter()
        .map(|t| t["term"].as_u64().unwrap_or_else(|| panic!("term in {t}")))
        .collect()
}

/// Poll the key status until one term remains, at least `min_term`, with every
/// secret under it (progress 1.0). Returns that status.
fn wait_single_term(server: &Server, operator: &str, min_term: u64) -> Value {
    let deadline = Instant::now() + POLL_TIMEOUT;
    let mut polls = 0;
    loop {
        let s = key_status(server, operator);
        polls += 1;
        let done = terms_of(&s).len() == 1
            && s["active_term"].as_u64().is_some_and(|t| t >= min_term)
            && s["progress"].as_f64() == Some(1.0)
            && s["reencryption_pending"] == false;
        if done {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "after {POLL_TIMEOUT:?} ({polls} polls) the keys are still {s}, expected a single term \
             >= {min_term} with progress 1.0\n--- server stderr ---\n{}",
            tail(&server.log(), 8000)
        );
        std::thread::sleep(POLL_EVERY);
    }
}

/// Every audit event matching `query` (e.g. `domain=a.test`), following `next`.
fn audit_all(server: &Server, operator: &str, query: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..100 {
        let mut path = format!("{AUDIT}?limit=1000");
        if !query.is_empty() {
            path.push('&');
            path.push_str(query);
        }
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let page = server.expect(200, "GET", &path, operator, None, None);
        out.extend(page["results"].as_array().cloned().unwrap_or_default());
        match page["next"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return out,
        }
    }
    panic!("the audit trail did not end after 100 pages");
}

/// Poll the audit trail until it holds `n` events of `action` (an event of the
/// background task is appended just after its effect shows); all events.
fn wait_for_events(server: &Server, operator: &str, action: &str, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + POLL_TIMEOUT;
    loop {
        let events = audit_all(server, operator, "");
        if events_with_action(&events, action).len() >= n {
            return events;
        }
        assert!(
            Instant::now() < deadline,
            "fewer than {n} {action} events after {POLL_TIMEOUT:?}: {events:#?}"
        );
        std::thread::sleep(POLL_EVERY);
    }
}

fn events_with_action<'a>(events: &'a [Value], action: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["action"] == action).collect()
}

/// The id of an operator token (from the admin token list: the only operator).
fn operator_token_id(server: &Server, operator: &str) -> Value {
    let list = server.expect(200, "GET", TOKENS, operator, None, None);
    let ops: Vec<&Value> = list
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["domain"].is_null())
        .collect();
    assert_eq!(ops.len(), 1, "expected one operator token: {list}");
    ops[0]["id"].clone()
}

/// Names of the entries in a folder (empty when it does not exist).
fn entries(dir: &Path) -> Vec<String> {
    match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

// ---- concurrent writers ----------------------------------------------------------------

/// What one domain's writer did: the sequence numbers sent, and each acknowledged
/// one with the instant its 200 arrived.
#[derive(Debug, Default, Clone)]
struct DomainLedger {
    sent: u32,
    acks: Vec<(u32, Instant)>,
    /// A write that got no answer (the server was killed): it may or may not
    /// have been applied.
    unanswered: Option<u32>,
}

impl DomainLedger {
    /// The last sequence number acknowledged strictly before `t`.
    fn last_acked_before(&self, t: Instant) -> Option<u32> {
        self.acks
            .iter()
            .filter(|(_, at)| *at < t)
            .map(|(s, _)| *s)
            .max()
    }

    fn acked_after(&self, t: Instant) -> usize {
        self.acks.iter().filter(|(_, at)| *at > t).count()
    }
}

/// Writer threads: each owns some domains and writes them in turn, one domain's
/// writes strictly in sequence, until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    /// Set just before the server is killed: a write without an answer is then
    /// expected, recorded, and ends its writer.
    killing: Arc<AtomicBool>,
    ledgers: Arc<Mutex<Vec<DomainLedger>>>,
    errors: Arc<Mutex<Vec<String>>>,
    threads: Vec<JoinHandle<()>>,
}

impl Load {
    fn start(client: &Client, tenants: &[Tenant], tag: &str, threads: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let killing = Arc::new(AtomicBool::new(false));
        let ledgers = Arc::new(Mutex::new(vec![DomainLedger::default(); tenants.len()]));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let handles = (0..threads)
            .map(|t| {
                let mine: Vec<(usize, Tenant)> = tenants
                    .iter()
                    .cloned()
                    .enumerate()
                    .skip(t)
                    .step_by(threads)
                    .collect();
                let (client, stop, killing, ledgers, errors) = (
                    client.clone(),
                    stop.clone(),
                    killing.clone(),
                    ledgers.clone(),
                    errors.clone(),
                );
                let tag = tag.to_owned();
                std::thread::spawn(move || {
                    'writing: while !stop.load(Ordering::SeqCst) {
                        for (i, tenant) in &mine {
                            let seq = {
                                let mut l = ledgers.lock().unwrap();
                                l[*i].sent += 1;
                                l[*i].sent
                            };
                            let v = Version::new(&tag, &tenant.name, seq);
                            let r = client.call(
                                "POST",
                                CONFIG_PATH,
                                Some(&tenant.token),
                                None,
                                Some(&v.body()),
                            );
                            let at = Instant::now();
                            match r {
                                Ok(r) if r.status == 200 && v.matches(&r.json()) => {
                                    ledgers.lock().unwrap()[*i].acks.push((seq, at));
                                }
                                Ok(r) => {
                                    errors
                                        .lock()
                                        .unwrap()
                                        .push(format!("{}: wrote {v:?}, answer {r}", tenant.name));
                                    break 'writing;
                                }
                                Err(_) if killing.load(Ordering::SeqCst) => {
                                    ledgers.lock().unwrap()[*i].unanswered = Some(seq);
                                    break 'writing;
                                }
                                Err(e) => {
                                    errors.lock().unwrap().push(format!("{}: {e}", tenant.name));
                                    break 'writing;
                                }
                            }
                        }
                    }
                })
            })
            .collect();
        Self {
            stop,
            killing,
            ledgers,
            errors,
            threads: handles,
        }
    }

    fn snapshot(&self) -> Vec<DomainLedger> {
        self.ledgers.lock().unwrap().clone()
    }

    /// Wait (bounded) until `done` holds for the ledgers; panics naming `what`
    /// on timeout or on a writer's error.
    fn wait_until(&self, server: &Server, what: &str, done: impl Fn(&[DomainLedger]) -> bool) {
        let deadline = Instant::now() + POLL_TIMEOUT;
        loop {
            let errors = self.errors.lock().unwrap().clone();
            assert!(
                errors.is_empty(),
                "writers failed while waiting for {what}:\n{}\n--- server stderr ---\n{}",
                errors.join("\n"),
                tail(&server.log(), 8000)
            );
            if done(&self.ledgers.lock().unwrap()) {
                return;
            }
            let counts: Vec<usize> = self.snapshot().iter().map(|l| l.acks.len()).collect();
            assert!(
                Instant::now() < deadline,
                "writers: no {what} within {POLL_TIMEOUT:?} (acks per domain {counts:?})\n\
                 --- server stderr ---\n{}",
                tail(&server.log(), 8000)
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// `kill -9` the server while the writers write; join them; their ledgers.
    fn kill_server(self, server: &mut Server) -> Vec<DomainLedger> {
        self.killing.store(true, Ordering::SeqCst);
        let status = server.kill9();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9),
            "{status}"
        );
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            t.join().expect("a writer thread panicked");
        }
        let errors = self.errors.lock().unwrap().clone();
        assert!(
            errors.is_empty(),
            "writers failed before the kill:\n{}\n--- server stderr ---\n{}",
            errors.join("\n"),
            tail(&server.log(), 8000)
        );
        let ledgers = self.ledgers.lock().unwrap().clone();
        ledgers
    }

    /// Stop and join the writers; their ledgers. Panics on a writer's error.
    fn finish(self, server: &Server) -> Vec<DomainLedger> {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            t.join().expect("a writer thread panicked");
        }
        let errors = self.errors.lock().unwrap().clone();
        assert!(
            errors.is_empty(),
            "writers failed:\n{}\n--- server stderr ---\n{}",
            errors.join("\n"),
            tail(&server.log(), 8000)
        );
        let ledgers = self.ledgers.lock().unwrap().clone();
        for l in &ledgers {
            // Every write was answered: the last one sent is the last acknowledged.
            assert_eq!(l.acks.last().map(|a| a.0), Some(l.sent), "{l:?}");
        }
        ledgers
    }
}

// ---- 1. online backup ------------------------------------------------------------------

const LOAD_DOMAINS: usize = 6;
const LOAD_THREADS: usize = 3;

#[test]
fn online_backup_under_write_load_holds_every_acknowledged_write() {
    let started = Instant::now();
    let (home, operator) = operator_home();
    let mut server = home.start();
    let tenants = add_tenants(&server, &operator, "backup", LOAD_DOMAINS);
    let addr = addr_of(&server);
    let with_server: [(&str, &str); 2] = [
        (TOKEN_ENV, operator.as_str()),
        ("OIDCVAULT_SERVER__BIND", addr.as_str()),
    ];

    let load = Load::start(&server.client(), &tenants, "backup", LOAD_THREADS);
    load.wait_until(&server, "3 acknowledged writes per domain", |l| {
        l.iter().all(|d| d.acks.len() >= 3)
    });
    let dest = home.path().join("online-copy");
    let dest_arg = dest.to_str().unwrap();
    let backup_began = Instant::now();
    let out = home.run_with(None, &with_server, &["backup", dest_arg], EXIT_TIMEOUT);
    let backup_ended = Instant::now();
    assert!(
        out.success(),
        "`oidcvault backup` against the running server failed\n{}\n--- server stderr ---\n{}",
        out.describe(),
        tail(&server.log(), 6000)
    );
    // The writers went on during and after the backup.
    load.wait_until(&server, "2 writes per domain after the backup", |l| {
        l.iter().all(|d| d.acked_after(backup_ended) >= 2)
    });
    let ledgers = load.finish(&server);
    let during = ledgers
        .iter()
        .map(|l| {
            l.acks
                .iter()
                .filter(|(_, t)| *t > backup_began && *t < backup_ended)
                .count()
        })
        .sum::<usize>();
    eprintln!(
        "online backup took {:?}; {during} writes were acknowledged while it ran; {:?} writes in all",
        backup_ended - backup_began,
        ledgers.iter().map(|l| l.sent).collect::<Vec<_>>()
    );

    let printed = parse_json("backup", &out.stdout);
    assert_eq!(printed["path"], dest_arg, "backup printed {printed}");
    assert!(
        printed["records"].as_u64().is_some_and(|n| n > 0)
            && printed["name"].as_str().is_some_and(|n| !n.is_empty()),
        "backup printed {printed}"
    );
    assert!(
        dest.join("keyring").is_file(),
        "no keyring in the copy: {:?}",
        entries(&dest)
    );
    // The server wrote under storage.backup_dir; the CLI moved it out: nothing left.
    let leftovers = entries(&home.path().join("backups"));
    assert!(leftovers.is_empty(), "left in backup_dir: {leftovers:?}");

    // Refusals while the server runs: one line each, nothing written.
    let occupied = home.path().join("occupied");
    std::fs::create_dir(&occupied).unwrap();
    std::fs::write(occupied.join("keep.txt"), "keep").unwrap();
    let out = home.run_with(
        None,
        &with_server,
        &["backup", occupied.to_str().unwrap()],
        EXIT_TIMEOUT,
    );
    let line = assert_one_line_failure("backup into a non-empty folder", &out);
    assert!(lower(&line).contains("not empty"), "{line:?}");
    assert_eq!(entries(&occupied), vec!["keep.txt".to_owned()]);
    let elsewhere = home.path().join("elsewhere");
    let out = home.run_with(
        None,
        &[("OIDCVAULT_SERVER__BIND", addr.as_str())],
        &["backup", elsewhere.to_str().unwrap()],
        EXIT_TIMEOUT,
    );
    let line = assert_one_line_failure("backup without OIDCVAULT_TOKEN while serving", &out);
    assert!(
        line.contains(TOKEN_ENV) && lower(&line).contains("running server"),
        "the line should name {TOKEN_ENV} and the running server: {line:?}"
    );
    let out = home.run_with(
        None,
        &[
            (TOKEN_ENV, tenants[0].token.as_str()),
            ("OIDCVAULT_SERVER__BIND", addr.as_str()),
        ],
        &["backup", elsewhere.to_str().unwrap()],
        EXIT_TIMEOUT,
    );
    let line = assert_one_line_failure("backup with a domain token", &out);
    assert!(line.contains("403"), "{line:?}");
    assert!(!line.contains(&tenants[0].token), "{line:?}");
    assert!(!elsewhere.exists());
    assert!(entries(&home.path().join("backups")).is_empty());

    // The admin API writes under storage.backup_dir only, whatever the request says.
    let evil = home.path().join("evil");
    let evil_arg = evil.to_str().unwrap();
    let made = server.expect(
        201,
        "POST",
        &format!("/api/v1/admin/backup?path={evil_arg}&dest={evil_arg}"),
        &operator,
        None,
        Some(&json!({ "path": evil_arg, "dest": evil_arg, "name": "../evil" })),
    );
    let made_path = Path::new(made["path"].as_str().unwrap_or_default());
    assert!(
        made_path.starts_with(home.path().join("backups")) && made_path.is_dir(),
        "the backup was written to {made}"
    );
    assert!(!evil.exists(), "a path from the request was used");
    assert_eq!(entries(&home.path().join("backups")).len(), 1);
    assert_eq!(
        server
            .call(
                "POST",
                "/api/v1/admin/backup",
                Some(&tenants[0].token),
                None,
                None
            )
            .status,
        403,
        "a domain token asked for a backup"
    );

    // One audit event per backup, by the operator token, and one log line each.
    let events = audit_all(&server, &operator, "");
    let backups = events_with_action(&events, "backup");
    assert_eq!(backups.len(), 2, "backup events: {backups:?}");
    for b in &backups {
        assert_eq!(b["actor"], operator_token_id(&server, &operator), "{b}");
    }
    server.stop();
    let log = server.log();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("oidcvault::audit") && l.contains("action=backup "))
        .collect();
    assert_eq!(lines.len(), 2, "audit log lines of the backups: {lines:#?}");

    // The copy is a data directory: same passphrase, a config pointing at it.
    let copy = home_for_data(&dest);
    let counts = verify_ok(&copy);
    assert_verify_counts(
        &counts,
        LOAD_DOMAINS as u64,
        LOAD_DOMAINS as u64,
        LOAD_DOMAINS as u64 + 1,
    );
    let mut replica = copy.start();
    let mut writes_in_copy = 0u64;
    for (t, l) in tenants.iter().zip(&ledgers) {
        let got = replica.expect(200, "GET", CONFIG_PATH, &t.token, None, None);
        let seq = seq_of(&got).unwrap_or_else(|| panic!("{}: no sequence in {got}", t.name));
        let must = l
            .last_acked_before(backup_began)
            .expect("writes before the backup");
        assert!(
            seq >= must && seq <= l.sent,
            "{}: the copy holds write {seq}, but write {must} was acknowledged before the backup \
             began (and {} were sent)\nledger: {:?}",
            t.name,
            l.sent,
            l.acks.iter().map(|a| a.0).collect::<Vec<_>>()
        );
        let want = Version::new("backup", &t.name, seq);
        assert!(want.matches(&got), "{}: {got} is not {want:?}", t.name);
        writes_in_copy += u64::from(seq);
    }
    // Each write left one audit event: 1 operator token + a domain and a token per
    // tenant + every write the copy holds (a domain's writes apply in sequence).
    assert_eq!(
        counts["audit_events"],
        json!(1 + 2 * LOAD_DOMAINS as u64 + writes_in_copy),
        "audit events in the copy: {counts}"
    );
    replica.stop();
    eprintln!(
        "online_backup_under_write_load_holds_every_acknowledged_write: {:?}",
        started.elapsed()
    );
}

/// The server's backup_dir on another file system than DEST: the CLI cannot
/// rename the copy into place and must copy it whole.
#[test]
fn online_backup_to_another_file_system() {
    use std::os::unix::fs::MetadataExt;
    let started = Instant::now();
    let (home, operator) = operator_home();
    let shm = Path::new("/dev/shm");
    let other_fs = std::fs::metadata(shm)
        .is_ok_and(|m| m.is_dir() && m.dev() != std::fs::metadata(home.path()).unwrap().dev());
    if !other_fs {
        eprintln!(
            "online_backup_to_another_file_system: no /dev/shm on another file system; skipped"
        );
        return;
    }
    let backup_dir = tempfile::Builder::new()
        .prefix("oidcvault-ops-")
        .tempdir_in(shm)
        .unwrap();
    let backup_dir_arg = backup_dir.path().to_str().unwrap().to_owned();
    let mut server = home.start_with(None, &[("OIDCVAULT_STORAGE__BACKUP_DIR", &backup_dir_arg)]);
    let tenants = add_tenants(&server, &operator, "xfs", 2);
    let originals = write_all(&server, &tenants, "xfs", 1);
    let dest = home.path().join("copy");
    // The command moves only a folder in its own storage.backup_dir: it is
    // configured like the server.
    let out = home.run_with(
        None,
        &[
            (TOKEN_ENV, operator.as_str()),
            ("OIDCVAULT_SERVER__BIND", addr_of(&server).as_str()),
            ("OIDCVAULT_STORAGE__BACKUP_DIR", &backup_dir_arg),
        ],
        &["backup", dest.to_str().unwrap()],
        EXIT_TIMEOUT,
    );
    assert!(out.success(), "{}", out.describe());
    assert_eq!(
        parse_json("backup", &out.stdout)["path"],
        dest.to_str().unwrap()
    );
    assert!(
        entries(backup_dir.path()).is_empty(),
        "left in backup_dir: {:?}",
        entries(backup_dir.path())
    );
    server.stop();
    let copy = home_for_data(&dest);
    assert_verify_counts(&verify_ok(&copy), 2, 2, 3);
    let mut replica = copy.start();
    assert_configs("the copy", &replica, &tenants, &originals);
    replica.stop();
    eprintln!(
        "online_backup_to_another_file_system: {:?}",
        started.elapsed()
    );
}

#[test]
fn offline_backup_and_restore_by_replacing_data() {
    let started = Instant::now();
    let (home, operator) = operator_home();
    let mut server = home.start();
    let tenants = add_tenants(&server, &operator, "restore", 3);
    write_all(&server, &tenants, "restore", 1);
    let originals = write_all(&server, &tenants, "restore", 2);
    server.stop();

    // Offline: no token needed, written directly.
    let dest = home.path().join("offline-copy");
    let dest_arg = dest.to_str().unwrap();
    let printed = parse_json("backup", &home.run_ok(&["backup", dest_arg]));
    assert_eq!(printed["path"], dest_arg, "backup printed {printed}");
    assert!(
        printed["records"].as_u64().is_some_and(|n| n > 0),
        "{printed}"
    );
    let out = home.run(&["backup", dest_arg]);
    let line = assert_one_line_failure("offline backup into a non-empty folder", &out);
    assert!(lower(&line).contains("not empty"), "{line:?}");
    let counts = verify_ok(&home_for_data(&dest));
    assert_verify_counts(&counts, 3, 3, 4);
    // operator token, 3 domains, 3 tokens, 6 writes.
    assert_eq!(counts["audit_events"], 13, "{counts}");

    // Changes after the backup, which the restore must undo.
    let mut server = home.start();
    write_all(&server, &tenants[..1], "restore", 3);
    server.add_domain(&operator, "after-backup.test");
    server.stop();

    // The README's restore: stop the server, replace data/ with the copy, start.
    std::fs::remove_dir_all(home.data_dir()).unwrap();
    std::fs::rename(&dest, home.data_dir()).unwrap();
    let mut server = home.start();
    assert_configs("after the restore", &server, &tenants, &originals);
    let domains = server.expect(200, "GET", DOMAINS, &operator, None, None);
    let names: Vec<&str> = domains
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|d| d["domain"].as_str())
        .collect();
    assert_eq!(names, ["restore0.test", "restore1.test", "restore2.test"]);
    server.stop();
    verify_ok(&home);
    eprintln!(
        "offline_backup_and_restore_by_replacing_data: {:?}",
        started.elapsed()
    );
}

/// A restored backup keeps its audit trail whole: events written after the
/// restore are appended after the copied ones and overwrite none of them.
#[test]
fn a_restored_backup_appends_to_its_audit_trail() {
    let started = Instant::now();
    let (home, operator) = operator_home();
    // Several processes open the store before the backup (each reopening moves
    // sled's own id generator).
    home.run_ok(&["domain", "add", "cli0.test"]);
    home.run_ok(&["domain", "add", "cli1.test"]);
    let mut server = home.start();
    let tenants = add_tenants(&server, &operator, "trail", 2);
    write_all(&server, &tenants, "trail", 1);
    let before = audit_all(&server, &operator, "");
    let dest = home.path().join("copy");
    let out = home.run_with(
        None,
        &[
            (TOKEN_ENV, operator.as_str()),
            ("OIDCVAULT_SERVER__BIND", addr_of(&server).as_str()),
        ],
        &["backup", dest.to_str().unwrap()],
        EXIT_TIMEOUT,
    );
    assert!(out.success(), "{}", out.describe());
    server.stop();

    std::fs::remove_dir_all(home.data_dir()).unwrap();
    std::fs::rename(&dest, home.data_dir()).unwrap();
    for round in 0..2 {
        let mut server = home.start();
        server.add_domain(&operator, &format!("restored{round}.test"));
        write_all(&server, &tenants, "trail", 2 + round);
        server.stop();
    }
    let mut server = home.start();
    let after = audit_all(&server, &operator, "");
    server.stop();
    let key = |e: &Value| {
        format!(
            "{} {} {} {}",
            e["at"], e["action"], e["domain"], e["detail"]
        )
    };
    let show = |events: &[Value]| events.iter().map(key).collect::<Vec<_>>().join("\n");
    // 2 rounds of (1 domain + 2 writes).
    assert_eq!(
        after.len(),
        before.len() + 6,
        "the restored store's audit trail:\n{}\n--- the copied trail ---\n{}",
        show(&after),
        show(&before)
    );
    assert_eq!(
        show(&after[..before.len()]),
        show(&before),
        "the copied events are not all there, first and in order"
    );
    let ids: Vec<u64> = after.iter().map(|e| e["id"].as_u64().unwrap()).collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "ids not increasing: {ids:?}"
    );
    eprintln!(
        "a_restored_backup_appends_to_its_audit_trail: {:?}",
        started.elapsed()
    );
}

// ---- audit trail and its log lines ------------------------------------------------------

/// Changes made through the server, each once; the audit events and the server log.
fn audited_changes() -> (Vec<Value>, String, String, Vec<String>) {
    let (home, operator) = operator_home();
    let mut server = home.start();
    let op = operator.as_str();
    let tenants = add_tenants(&server, op, "logged", 2);
    let secret = format!("logged-secret-{}", crate::binary::random_hex(8));
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

// ---- 2. rotation under load --------------------------------------------------------------

const IDLE_DOMAINS: usize = 24;

#[test]
fn rotation_under_write_load_loses_no_write() {
    let started = Instant::now();
    let (home, operator) = operator_home();
    let mut server = home.start();
    let tenants = add_tenants(&server, &operator, "rotate", LOAD_DOMAINS);
    // Configs nobody writes again: only the background re-encryption moves them.
    let idle = add_idle_configs(&server, &operator, "idle", IDLE_DOMAINS);
    let total = (LOAD_DOMAINS + IDLE_DOMAINS) as u64;
    let load = Load::start(&server.client(), &tenants, "rotate", LOAD_THREADS);
    load.wait_until(&server, "3 acknowledged writes per domain", |l| {
        l.iter().all(|d| d.acks.len() >= 3)
    });
    let rotated = server.expect(200, "POST", ROTATE, &operator, None, None);
    let rotated_at = Instant::now();
    assert_eq!(rotated["active_term"], 2, "rotate answered {rotated}");
    assert!(terms_of(&rotated).contains(&2), "rotate answered {rotated}");
    let done = wait_single_term(&server, &operator, 2);
    let reencrypted_in = rotated_at.elapsed();
    load.wait_until(&server, "3 writes per domain after the rotation", |l| {
        l.iter().all(|d| d.acked_after(rotated_at) >= 3)
    });

    // The offline key commands are refused while the server holds the store.
    let keyring = std::fs::read(home.data_dir().join("keyring")).unwrap();
    for args in [["key", "rotate"], ["key", "change-passphrase"]] {
        let out = home.run_with(
            None,
            &[(NEW_PASSPHRASE_ENV, OTHER_PASSPHRASE)],
            &args,
            EXIT_TIMEOUT,
        );
        let line = assert_one_line_failure(&format!("`{}` while serving", args.join(" ")), &out);
        assert!(
            lower(&line).contains("in use") && lower(&line).contains("admin api"),
            "{line:?}"
        );
    }
    assert_eq!(
        std::fs::read(home.data_dir().join("keyring")).unwrap(),
        keyring,
        "a refused key command changed the keyring"
    );

    let ledgers = load.finish(&server);
    eprintln!(
        "re-encryption of {total} configs done in {reencrypted_in:?} under load; writes per \
         domain {:?}",
        ledgers.iter().map(|l| l.sent).collect::<Vec<_>>()
    );
    assert_eq!(done["active_term"], 2, "{done}");

    for (t, l) in tenants.iter().zip(&ledgers) {
        let got = server.expect(200, "GET", CONFIG_PATH, &t.token, None, None);
        let want = Version::new("rotate", &t.name, l.sent);
        assert!(
            want.matches(&got),
            "{}: the last acknowledged write was {want:?}, the server has {got}",
            t.name
        );
    }
    assert_idle_configs("after the rotation", &server, &operator, &idle);
    let status = key_status(&server, &operator);
    assert_eq!(terms_of(&status), [2], "{status}");
    assert_eq!(status["terms"][0]["configs"], total, "{status}");
    assert_eq!(status["total_configs"], total, "{status}");
    let events = wait_for_events(&server, &operator, "key.drop", 1);
    let rotations = events_with_action(&events, "key.rotate");
    assert_eq!(rotations.len(), 1, "{rotations:?}");
    assert_eq!(
        rotations[0]["actor"],
        operator_token_id(&server, &operator),
        "{rotations:?}"
    );
    assert_eq!(
        events_with_action(&events, "key.drop").len(),
        1,
        "{events:?}"
    );
    server.stop();

    let counts = verify_ok(&home);
    assert_verify_counts(&counts, total, total, LOAD_DOMAINS as u64 + 1);
    let status = parse_json("key status", &home.run_ok(&["key", "status"]));
    assert_eq!(status["active_term"], 2, "key status: {status}");
    assert_eq!(terms_of(&status), [2], "key status: {status}");
    assert_eq!(status["terms"][0]["configs"], total, "{status}");
    eprintln!(
        "rotation_under_write_load_loses_no_write: {:?}",
        started.elapsed()
    );
}

#[test]
fn rotation_killed_under_write_load_resumes_and_loses_no_write() {
    let started = Instant::now();
    let (home, operator) = operator_home();
    let mut server = home.start();
    let tenants = add_tenants(&server, &operator, "killrot", LOAD_DOMAINS);
    let idle = add_idle_configs(&server, &operator, "killidle", IDLE_DOMAINS);
    let total = (LOAD_DOMAINS + IDLE_DOMAINS) as u64;
    let load = Load::start(&server.client(), &tenants, "killrot", LOAD_THREADS);
    load.wait_until(&server, "3 acknowledged writes per domain", |l| {
        l.iter().all(|d| d.acks.len() >= 3)
    });
    server.expect(200, "POST", ROTATE, &operator, None, None);
    // kill -9 at once: the background re-encryption has just begun, if at all.
    let killed_log = server.log();
    let ledgers = load.kill_server(&mut server);
    let mid = parse_json("key status", &home.run_ok(&["key", "status"]));
    assert_eq!(
        mid["active_term"], 2,
        "the rotation was acknowledged: {mid}"
    );
    eprintln!("key status after kill -9: {mid}");

    let mut server = home.start();
    wait_single_term(&server, &operator, 2);
    for (t, l) in tenants.iter().zip(&ledgers) {
        let got = server.expect(200, "GET", CONFIG_PATH, &t.token, None, None);
        let acked = l.acks.last().expect("acknowledged writes").0;
        let ok = Version::new("killrot", &t.name, acked).matches(&got)
            || l.unanswered
                .is_some_and(|u| Version::new("killrot", &t.name, u).matches(&got));
        assert!(
            ok,
            "{}: last acknowledged write {acked}, unanswered {:?}, after the restart {got}\n\
             --- stderr of the killed server ---\n{}",
            t.name,
            l.unanswered,
            tail(&killed_log, 4000)
        );
    }
    assert_idle_configs("after kill -9 and restart", &server, &operator, &idle);
    server.stop();
    let counts = verify_ok(&home);
    assert_verify_counts(&counts, total, total, LOAD_DOMAINS as u64 + 1);
    let status = parse_json("key status", &home.run_ok(&["key", "status"]));
    assert_eq!(terms_of(&status), [2], "{status}");
    eprintln!(
        "rotation_killed_under_write_load_resumes_and_loses_no_write: {:?}",
        started.elapsed()
    );
}

#[test]
fn offline_key_rotate_re_encrypts_and_drops_the_old_term() {
    let started = Instant::now();
    let (home, operator) = operator_home();
    let mut server = home.start();
    let tenants = add_tenants(&server, &operator, "offrot", 3);
    let originals = write_all(&server, &tenants, "offrot", 1);
    server.stop();

    let status = parse_json("key status", &home.run_ok(&["key", "status"]));
    assert_eq!(terms_of(&status), [1], "{status}");
    assert_eq!(status["terms"][0]["configs"], 3, "{status}");
    for term in [2u64, 3] {
        let out = home.run(&["key", "rotate"]);
        assert!(out.success(), "`key rotate`\n{}", out.describe());
        let printed = parse_json("key rotate", &out.stdout);
        assert_eq!(printed["active_term"], term, "key rotate printed {printed}");
        assert_eq!(terms_of(&printed), [term], "key rotate printed {printed}");
        assert_eq!(printed["progress"], 1.0, "{printed}");
        let status = parse_json("key status", &home.run_ok(&["key", "status"]));
        assert_eq!(status, printed, "key status after key rotate");
        let counts = verify_ok(&home);
        assert_verify_counts(&counts, 3, 3, 4);
    }
    let mut server = home.start();
    assert_configs("after two offline rotations", &server, &tenants, &originals);
    let status = key_status(&server, &operator);
    assert_eq!(terms_of(&status), [3], "{status}");
    let events = audit_all(&server, &operator, "");
    assert_eq!(events_with_action(&events, "key.rotate").len(), 2);
    server.stop();
    eprintln!(
        "offline_key_rotate_re_encrypts_and_drops_the_old_term: {:?}",
        started.elapsed()
    );
}

#[test]
fn verify_names_every_record_that_fails_to_open() {
    let started = Instant::now();
    let (home, operator) = operator_home();
    let mut server = home.start();
    let tenants = add_tenants(&server, &operator, "broken", 3);
    let written = write_all(&server, &tenants, "broken", 1);
    server.stop();
    let keyring = home.data_dir().join("keyring");
    let before_rotation = std::fs::read(&keyring).unwrap();
    home.run_ok(&["key", "rotate"]);
    // The keyring from before the rotation lacks the term every secret is under now.
    std::fs::write(&keyring, &before_rotation).unwrap();
    let out = home.run(&["verify"]);
    assert!(
        out.failed(),
        "verify passed with a keyring that opens no secret\n{}",
        out.describe()
    );
    let printed = parse_json("verify", &out.stdout);
    assert_eq!(
        (
            &printed["configs"],
            &printed["secrets_opened"],
            &printed["failures"]
        ),
        (&json!(3), &json!(0), &json!(3)),
        "verify printed {printed}"
    );
    for (t, v) in tenants.iter().zip(&written) {
        let (domain, record) = (&v["enterprise_domain"], &v["id"]);
        assert!(
            out.stderr
                .lines()
                .any(|l| l.contains(&format!("domain {domain}"))
                    && l.contains(&format!("record {record}"))),
            "no line names {} (domain {domain}, record {record})\n{}",
            t.name,
            out.describe()
        );
        assert!(!out
            .stderr
            .contains(&Version::new("broken", &t.name, 1).secret));
    }
    let last = out.stderr.lines().last().unwrap_or_default();
    assert!(
        last.contains('3') && lower(last).contains("failed"),
        "the last line should count the failures: {last:?}"
    );
    eprintln!(
        "verify_names_every_record_that_fails_to_open: {:?}",
        started.elapsed()
    );
}

// ---- 3. rotation interrupted -----------------------------------------------------------

#[test]
#[cfg_attr(
    not(debug_assertions),
    ignore = "the failpoint hook exists in debug builds only (src/vault/keys.rs)"
)]
fn rotation_interrupted_mid_re_encryption_resumes_at_restart() {
    let started = Instant::now();
    let (home, operator) = operator_home();
    let mut server = home.start_with(None, &[(FAILPOINT, "reencrypt-after-first")]);
    let tenants = add_tenants(&server, &operator, "resume", 5);
    let originals = write_all(&server, &tenants, "resume", 1);
    // The answer may or may not arrive: the background task exits the process.
    let answer = server
        .client()
        .call("POST", ROTATE, Some(&operator), None, None)
        .map(|r| r.to_string());
    let status = server.wait_exit(EXIT_TIMEOUT);
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(FAILPOINT_EXIT),
        "the server did not stop at reencrypt-after-first ({status:?}); rotate answered {answer:?}\n\
         --- server stderr ---\n{}",
        tail(&server.log(), 8000)
    );
    // Stopped half way: one secret under the new term, the rest under the old one.
    let mid = parse_json("key status", &home.run_ok(&["key", "status"]));
    assert_eq!(mid["active_term"], 2, "{mid}");
    assert_eq!(terms_of(&mid), [1, 2], "{mid}");
    assert_eq!(
        (&mid["terms"][0]["configs"], &mid["terms"][1]["configs"]),
        (&json!(4), &json!(1)),
        "{mid}"
    );
    // Every secret opens in the half-rotated store, and a backup of it is whole.
    assert_verify_counts(&verify_ok(&home), 5, 5, 6);
    let half = home.path().join("half-rotated-copy");
    home.run_ok(&["backup", half.to_str().unwrap()]);

    let mut server = home.start();
    let done = wait_single_term(&server, &operator, 2);
    assert_eq!(done["active_term"], 2, "{done}");
    assert_eq!(done["terms"][0]["configs"], 5, "{done}");
    assert_configs(
        "after the resumed re-encryption",
        &server,
        &tenants,
        &originals,
    );
    // Still writable, under the new term.
    write_all(&server, &tenants, "resume", 2);
    server.stop();
    let counts = verify_ok(&home);
    assert_verify_counts(&counts, 5, 5, 6);

    // The copy of the half-rotated store finishes the re-encryption when it starts.
    let copy = home_for_data(&half);
    let mut replica = copy.start();
    let done = wait_single_term(&replica, &operator, 2);
    assert_eq!(done["terms"][0]["configs"], 5, "the copy: {done}");
    assert_configs("the half-rotated copy", &replica, &tenants, &originals);
    replica.stop();
    eprintln!(
        "rotation_interrupted_mid_re_encryption_resumes_at_restart: {:?}",
        started.elapsed()
    );
}

#[test]
#[cfg_attr(
    not(debug_assertions),
    ignore = "the failpoint hook exists in debug builds only (src/vault/keys.rs)"
)]
fn rotation_interrupted_at_each_keyring_step_loses_nothing() {
    let started = Instant::now();
    let (template, operator) = operator_home();
    let mut server = template.start();
    let tenants = add_tenants(&server, &operator, "krot", 3);
    let originals = write_all(&server, &tenants, "krot", 1);
    server.stop();

    for (step, failpoint) in KEYRING_FAILPOINTS.iter().enumerate() {
        let what = format!("rotation stopped at {failpoint}");
        let home = Home::new(Some(PASSPHRASE));
        copy_dir(&template.data_dir(), &home.data_dir());
        let mut server = home.start_with(None, &[(FAILPOINT, failpoint)]);
        let answer = server
            .client()
            .call("POST", ROTATE, Some(&operator), None, None)
            .map(|r| r.to_string());
        let status = server.wait_exit(EXIT_TIMEOUT);
        assert_eq!(
            status.and_then(|s| s.code()),
            Some(FAILPOINT_EXIT),
            "{what}: no failpoint exit ({status:?}); rotate answered {answer:?}\n\
             --- server stderr ---\n{}",
            tail(&server.log(), 8000)
        );
        assert!(answer.is_err(), "{what}: rotate answered {answer:?}");
        // Before the rename the old keyring is in place; from the rename on, the new.
        let expected_term = if step < 2 { 1 } else { 2 };
        let after = parse_json("key status", &home.run_ok(&["key", "status"]));
        assert_eq!(after["active_term"], expected_term, "{what}: {after}");

        let mut server = home.start();
        let done = wait_single_term(&server, &operator, expected_term);
        assert_eq!(done["active_term"], expected_term, "{what}: {done}");
        assert_configs(&what, &server, &tenants, &originals);
        // And a rotation now goes through.
        server.expect(200, "POST", ROTATE, &operator, None, None);
        let done = wait_single_term(&server, &operator, expected_term + 1);
        assert_eq!(done["active_term"], expected_term + 1, "{what}: {done}");
        assert_configs(&what, &server, &tenants, &originals);
        server.stop();
        let counts = verify_ok(&home);
        assert_verify_counts(&counts, 3, 3, 4);
    }
    eprintln!(
        "rotation_interrupted_at_each_keyring_step_loses_nothing: {:?}",
        started.elapsed()
    );
}

// ---- 4. passphrase change ------------------------------------------------------------

/// `domain list` with `passphrase`: its output.
fn domain_list_with(home: &Home, passphrase: &str) -> crate::binary::Output {
    home.run_with(
        Some(Some(passphrase)),
        &[],
        &["domain", "list"],
        REFUSE_TIMEOUT,
    )
}

/// Exactly one of OLD / NEW opens the store, `opens`; the other is refused as a
/// wrong master key without changing a byte; the one that opens serves every
/// config.
fn assert_exactly_one_opens(
    what: &str,
    home: &Home,
    opens: &str,
    tenants: &[Tenant],
    originals: &[Value],
) {
    let refused = if opens == PASSPHRASE {
        OTHER_PASSPHRASE
    } else {
        PASSPHRASE
    };
    let name = |p: &str| if p == PASSPHRASE { "OLD" } else { "NEW" };
    let out = domain_list_with(home, opens);
    assert!(
        out.success(),
        "{what}: {} should open the store\n{}",
        name(opens),
        out.describe()
    );
    let list = parse_json("domain list", &out.stdout);
    assert_eq!(list.as_array().map(Vec::len), Some(tenants.len()), "{list}");

    let before = snapshot(&home.data_dir());
    let out = domain_list_with(home, refused);
    assert_refused_for_master_key(
        &format!("{what}: {}", name(refused)),
        &out,
        &[PASSPHRASE, OTHER_PASSPHRASE],
    );
    assert!(
        lower(&out.stderr).contains("wrong master key"),
        "{what}: {} refused without the wrong-master-key message\n{}",
        name(refused),
        out.describe()
    );
    let line = assert_one_line_failure(&format!("{what}: {}", name(refused)), &out);
    assert!(!line.is_empty());
    let diff = snapshot_diff(&before, &snapshot(&home.data_dir()));
    assert!(diff.is_empty(), "{what}: the refused open changed {diff:?}");

    let counts = home.run_with(Some(Some(opens)), &[], &["verify"], EXIT_TIMEOUT);
    assert!(counts.success(), "{what}: verify\n{}", counts.describe());
    let counts = parse_json("verify", &counts.stdout);
    assert_verify_counts(
        &counts,
        tenants.len() as u64,
        tenants.len() as u64,
        tenants.len() as u64 + 1,
    );
    let mut server = home.start_with(Some(Some(opens)), &[]);
    assert_configs(what, &server, tenants, originals);
    server.stop();
}

#[test]
#[cfg_attr(
    not(debug_assertions),
    ignore = "the failpoint hook exists in debug builds only (src/vault/keys.rs)"
)]
fn passphrase_change_interrupted_at_every_step_leaves_exactly_one_that_opens() {
    let started = Instant::now();
    let (template, operator) = operator_home();
    let mut server = template.start();
    let tenants = add_tenants(&server, &operator, "pass", 3);
    let originals = write_all(&server, &tenants, "pass", 1);
    server.stop();

    for (step, failpoint) in KEYRING_FAILPOINTS.iter().enumerate() {
        let what = format!("change-passphrase stopped at {failpoint}");
        let home = Home::new(Some(PASSPHRASE));
        copy_dir(&template.data_dir(), &home.data_dir());
        let out = home.run_with(
            None,
            &[
                (NEW_PASSPHRASE_ENV, OTHER_PASSPHRASE),
                (FAILPOINT, failpoint),
            ],
            &["key", "change-passphrase"],
            EXIT_TIMEOUT,
        );
        assert_eq!(
            out.status.and_then(|s| s.code()),
            Some(FAILPOINT_EXIT),
            "{what}: no failpoint exit\n{}",
            out.describe()
        );
        let opens = if step < 2 {
            PASSPHRASE
        } else {
            OTHER_PASSPHRASE
        };
        assert_exactly_one_opens(&what, &home, opens, &tenants, &originals);
    }

    // Not interrupted: NEW opens, OLD is refused, and no record was rewritten.
    let home = Home::new(Some(PASSPHRASE));
    copy_dir(&template.data_dir(), &home.data_dir());
    let records_before = snapshot(&home.data_dir());
    let out = home.run_with(
        None,
        &[(NEW_PASSPHRASE_ENV, OTHER_PASSPHRASE)],
        &["key", "change-passphrase"],
        EXIT_TIMEOUT,
    );
    assert!(out.success(), "change-passphrase\n{}", out.describe());
    assert!(
        !out.stderr.contains(PASSPHRASE) && !out.stderr.contains(OTHER_PASSPHRASE),
        "{}",
        out.describe()
    );
    let changed: Vec<String> = snapshot_diff(&records_before, &snapshot(&home.data_dir()))
        .into_iter()
        .filter(|d| !d.starts_with("changed: keyring ") && !d.contains(" snap."))
        .collect();
    // No record rewritten: besides the keyring only sled's own snapshot file (which
    // any open and close rewrites) may differ.
    assert!(
        changed.is_empty(),
        "change-passphrase changed more than the keyring: {changed:?}"
    );
    assert_ne!(
        records_before.get(Path::new("keyring")),
        snapshot(&home.data_dir()).get(Path::new("keyring")),
        "the keyring file did not change"
    );
    assert_exactly_one_opens(
        "change-passphrase completed",
        &home,
        OTHER_PASSPHRASE,
        &tenants,
        &originals,
    );

    // A new passphrase that is too short: refused, nothing changed.
    let home = Home::new(Some(PASSPHRASE));
    copy_dir(&template.data_dir(), &home.data_dir());
    let keyring_before = std::fs::read(home.data_dir().join("keyring")).unwrap();
    let out = home.run_with(
        None,
        &[(NEW_PASSPHRASE_ENV, "short")],
        &["key", "change-passphrase"],
        EXIT_TIMEOUT,
    );
    let line = assert_one_line_failure("a too-short new passphrase", &out);
    assert!(
        lower(&line).contains("shorter") && lower(&line).contains("nothing"),
        "{line:?}"
    );
    assert_eq!(
        std::fs::read(home.data_dir().join("keyring")).unwrap(),
        keyring_before,
        "the keyring changed"
    );
    let out = domain_list_with(&home, PASSPHRASE);
    assert!(
        out.success(),
        "OLD after a refused change\n{}",
        out.describe()
    );
    eprintln!(
        "passphrase_change_interrupted_at_every_step_leaves_exactly_one_that_opens: {:?}",
        started.elapsed()
    );
}

// ---- 5. automatic rotation -------------------------------------------------------------

#[test]
fn automatic_rotation_after_the_configured_number_of_encryptions() {
    let started = Instant::now();
    let home = Home::new(Some(PASSPHRASE));
    home.write_config(
        &config_toml().replace("[security]\n", "[security]\nrotate_after_encryptions = 5\n"),
    );
    let operator = home.run_ok(&["token", "create", "--operator"]);
    let mut server = home.start();
    let tenants = add_tenants(&server, &operator, "auto", 3);
    // Five encryptions under term 1: the fifth makes it due.
    write_all(&server, &tenants, "auto", 1);
    write_all(&server, &tenants[..2], "auto", 2);
    let done = wait_single_term(&server, &operator, 2);
    assert_eq!(done["active_term"], 2, "{done}");
    // A sixth secret, under the new term; the three re-sealed plus it stay under 5.
    let last = write_all(&server, &tenants[2..], "auto", 2);
    let status = key_status(&server, &operator);
    assert_eq!(terms_of(&status), [2], "{status}");
    assert_eq!(status["terms"][0]["configs"], 3, "{status}");
    assert_eq!(status["rotate_after_encryptions"], 5, "{status}");
    let events = wait_for_events(&server, &operator, "key.drop", 1);
    let rotations = events_with_action(&events, "key.rotate");
    assert_eq!(rotations.len(), 1, "{rotations:?}");
    assert!(
        rotations[0]["actor"].is_null()
            && rotations[0]["detail"]
                .as_str()
                .is_some_and(|d| d.contains("automatic")),
        "the rotation event: {}",
        rotations[0]
    );
    assert_eq!(events_with_action(&events, "key.drop").len(), 1);
    let got = server.expect(200, "GET", CONFIG_PATH, &tenants[2].token, None, None);
    assert_eq!(got, last[0]);
    server.stop();
    let counts = verify_ok(&home);
    assert_verify_counts(&counts, 3, 3, 4);
    eprintln!(
        "automatic_rotation_after_the_configured_number_of_encryptions: {:?}",
        started.elapsed()
    );
}

/// With fewer encryptions allowed per term than there are stored secrets, the
/// re-encryption alone uses up each new term: the server must not rotate in a
/// loop (each round rewrites the keyring and every record and adds two audit
/// events).
#[test]
fn automatic_rotation_settles_when_secrets_outnumber_the_threshold() {
    let home = Home::new(Some(PASSPHRASE));
    home.write_config(
        &config_toml().replace("[security]\n", "[security]\nrotate_after_encryptions = 5\n"),
    );
    let operator = home.run_ok(&["token", "create", "--operator"]);
    let mut server = home.start();
    let tenants = add_tenants(&server, &operator, "storm", 6);
    write_all(&server, &tenants, "storm", 1);
    let deadline = Instant::now() + POLL_TIMEOUT;
    while key_status(&server, &operator)["active_term"] == 1 {
        assert!(Instant::now() < deadline, "no automatic rotation");
        std::thread::sleep(POLL_EVERY);
    }
    // No write from here on: give the first rotation time to finish, then count.
    std::thread::sleep(Duration::from_millis(500));
    let first = key_status(&server, &operator);
    let rotations = events_with_action(&audit_all(&server, &operator, ""), "key.rotate").len();
    std::thread::sleep(Duration::from_secs(1));
    let later = key_status(&server, &operator);
    let rotations_later =
        events_with_action(&audit_all(&server, &operator, ""), "key.rotate").len();
    assert_eq!(
        (rotations_later, &later["active_term"]),
        (rotations, &first["active_term"]),
        "the server went on rotating with no write: {rotations} rotations, then \
         {rotations_later} one second later (active term {} -> {})",
        first["active_term"],
        later["active_term"]
    );
    server.stop();
}

// ---- 6. TLS --------------------------------------------------------------------------------

/// An agent that trusts exactly `cert_pem`.
fn tls_agent(cert_pem: &str) -> ureq::Agent {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(cert_pem.as_bytes()) {
        roots.add(c.expect("PEM certificate")).expect("add root");
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    ureq::AgentBuilder::new()
        .tls_config(Arc::new(cfg))
        .max_idle_connections(0)
        .timeout_connect(Duration::from_secs(5))
        .timeout(Duration::from_secs(20))
        .build()
}

/// An answer with the headers the API must carry.
struct Answer {
    status: u16,
    cache_control: Option<String>,
    nosniff: Option<String>,
    content_type: Option<String>,
    /// `Strict-Transport-Security`.
    hsts: Option<String>,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        parse_json("answer", &self.body)
    }
}

fn request(
    client: &Client,
    method: &str,
    path: &str,
    token: Option<&str>,
    domain: Option<&str>,
    body: Option<&Value>,
) -> Answer {
    let mut req = client
        .agent
        .request(method, &format!("{}{path}", client.base));
    if let Some(t) = token {
        req = req.set("Authorization", &format!("Bearer {t}"));
    }
    if let Some(d) = domain {
        req = req.set("X-Enterprise-Domain", d);
    }
    let result = match body {
        Some(b) => req.send_json(b),
        None => req.call(),
    };
    let r = match result {
        Ok(r) | Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{method} {path}: {e}"),
    };
    let header = |name: &str| r.header(name).map(str::to_owned);
    Answer {
        status: r.status(),
        cache_control: header("Cache-Control"),
        nosniff: header("X-Content-Type-Options"),
        content_type: header("Content-Type"),
        hsts: header("Strict-Transport-Security"),
        body: r.into_string().expect("body"),
    }
}

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

// ---- 7. metrics ----------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

#[derive(Debug, Default)]
struct Exposition {
    types: BTreeMap<String, String>,
    samples: Vec<Sample>,
}

impl Exposition {
    /// Samples named `name` whose labels include `labels`.
    fn find(&self, name: &str, labels: &[(&str, &str)]) -> Vec<&Sample> {
        self.samples
            .iter()
            .filter(|s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .collect()
    }

    /// The sum of the samples [`Exposition::find`] returns (0 when none).
    fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.find(name, labels).iter().map(|s| s.value).sum()
    }

    /// The one sample `name` with no labels.
    fn single(&self, name: &str) -> f64 {
        let found = self.find(name, &[]);
        assert_eq!(found.len(), 1, "{name}: {found:?}");
        found[0].value
    }
}

fn is_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn parse_value(s: &str) -> Result<f64, String> {
    match s {
        "+Inf" | "Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ if s
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '+' | '-')) =>
        {
            s.parse::<f64>().map_err(|e| format!("value {s:?}: {e}"))
        }
        _ => Err(format!("value {s:?} is not a number")),
    }
}

/// `{a="x",b="y"}` at the start of `s`: the labels and the rest of `s`.
fn parse_labels(s: &str) -> Result<(BTreeMap<String, String>, &str), String> {
    let mut labels = BTreeMap::new();
    let mut rest = s.strip_prefix('{').ok_or("expected '{'")?;
    loop {
        if let Some(after) = rest.strip_prefix('}') {
            return Ok((labels, after));
        }
        let eq = rest.find('=').ok_or("a label without '='")?;
        let name = &rest[..eq];
        if !is_label_name(name) {
            return Err(format!("invalid label name {name:?}"));
        }
        rest = rest[eq + 1..]
            .strip_prefix('"')
            .ok_or_else(|| format!("label {name}: value not quoted"))?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next() {
                None => return Err(format!("label {name}: unterminated value")),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, 'n')) => value.push('\n'),
                    other => return Err(format!("label {name}: bad escape {other:?}")),
                },
                Some((_, '\n')) => return Err(format!("label {name}: newline in value")),
                Some((_, c)) => value.push(c),
            }
        };
        if labels.insert(name.to_owned(), value).is_some() {
            return Err(format!("label {name} twice"));
        }
        rest = &rest[end + 1..];
        if let Some(after) = rest.strip_prefix(',') {
            rest = after;
        } else if !rest.starts_with('}') {
            return Err("expected ',' or '}' after a label".into());
        }
    }
}

/// A strict parser of the Prometheus text format (0.0.4): `# HELP` / `# TYPE`
/// lines, samples `name{label="value",...} value [timestamp]`; every sample must
/// belong to a family with a `# TYPE` given before it, histograms must be
/// cumulative with `+Inf` equal to `_count`, and no series may repeat.
fn parse_prometheus(text: &str) -> Result<Exposition, String> {
    let mut out = Exposition::default();
    let mut helps = BTreeMap::new();
    if !text.ends_with('\n') {
        return Err("the exposition does not end with a newline".into());
    }
    for (n, line) in text.lines().enumerate() {
        let at = |e: String| format!("line {}: {e}: {line:?}", n + 1);
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let mut parts = comment.trim_start().splitn(3, ' ');
            match parts.next() {
                Some("HELP") => {
                    let name = parts.next().unwrap_or_default();
                    if !is_metric_name(name) {
                        return Err(at(format!("HELP of an invalid name {name:?}")));
                    }
                    let doc = parts.next().unwrap_or_default();
                    let mut chars = doc.chars();
                    while let Some(c) = chars.next() {
                        if c == '\\' && !matches!(chars.next(), Some('\\' | 'n')) {
                            return Err(at("bad escape in HELP".into()));
                        }
                    }
                    if helps.insert(name.to_owned(), doc.to_owned()).is_some() {
                        return Err(at(format!("second HELP for {name}")));
                    }
                }
                Some("TYPE") => {
                    let name = parts.next().unwrap_or_default();
                    let kind = parts.next().unwrap_or_default();
                    if !is_metric_name(name) {
                        return Err(at(format!("TYPE of an invalid name {name:?}")));
                    }
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                        return Err(at(format!("unknown type {kind:?}")));
                    }
                    if out
                        .samples
                        .iter()
                        .any(|s| family_of(&s.name, &out.types) == name)
                    {
                        return Err(at(format!("TYPE of {name} after its samples")));
                    }
                    if out.types.insert(name.to_owned(), kind.to_owned()).is_some() {
                        return Err(at(format!("second TYPE for {name}")));
                    }
                }
                _ => {} // other comments are allowed
            }
            continue;
        }
        let name_end = line
            .find(['{', ' '])
            .ok_or_else(|| at("a sample without a value".into()))?;
        let name = &line[..name_end];
        if !is_metric_name(name) {
            return Err(at(format!("invalid metric name {name:?}")));
        }
        let (labels, rest) = if line[name_end..].starts_with('{') {
            parse_labels(&line[name_end..]).map_err(at)?
        } else {
            (BTreeMap::new(), &line[name_end..])
        };
        let rest = rest
            .strip_prefix(' ')
            .ok_or_else(|| at("no space before the value".into()))?;
        let mut fields = rest.split(' ');
        let value = parse_value(fields.next().unwrap_or_default()).map_err(at)?;
        if let Some(ts) = fields.next() {
            ts.parse::<i64>()
                .map_err(|e| at(format!("timestamp {ts:?}: {e}")))?;
        }
        if fields.next().is_some() {
            return Err(at("trailing fields".into()));
        }
        let family = family_of(name, &out.types);
        let Some(kind) = out.types.get(&family) else {
            return Err(at(format!("no TYPE before the sample of {name}")));
        };
        let suffix = &name[family.len()..];
        let allowed: &[&str] = match kind.as_str() {
            "histogram" => &["_bucket", "_sum", "_count"],
            "summary" => &["", "_sum", "_count"],
            _ => &[""],
        };
        if !allowed.contains(&suffix) {
            return Err(at(format!("{name} does not fit the {kind} {family}")));
        }
        if kind == "histogram" && suffix == "_bucket" && !labels.contains_key("le") {
            return Err(at("a histogram bucket without le".into()));
        }
        if kind == "counter" && (value.is_nan() || value < 0.0) {
            return Err(at("a negative counter".into()));
        }
        let sample = Sample {
            name: name.to_owned(),
            labels,
            value,
        };
        if out
            .samples
            .iter()
            .any(|s| s.name == sample.name && s.labels == sample.labels)
        {
            return Err(at("a repeated series".into()));
        }
        out.samples.push(sample);
    }
    check_histograms(&out)?;
    Ok(out)
}

/// The family a sample name belongs to: itself when typed, else the name less a
/// histogram / summary suffix.
fn family_of(name: &str, types: &BTreeMap<String, String>) -> String {
    if types.contains_key(name) {
        return name.to_owned();
    }
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            if types.contains_key(base) {
                return base.to_owned();
            }
        }
    }
    name.to_owned()
}

/// Buckets cumulative (non-decreasing with `le`), `+Inf` present and equal to `_count`.
fn check_histograms(e: &Exposition) -> Result<(), String> {
    for (family, kind) in &e.types {
        if kind != "histogram" {
            continue;
        }
        let bucket = format!("{family}_bucket");
        // Labels other than `le` -> (le, cumulative count) of each bucket.
        type Buckets = Vec<(f64, f64)>;
        let mut series: BTreeMap<Vec<(String, String)>, Buckets> = BTreeMap::new();
        for s in e.samples.iter().filter(|s| s.name == bucket) {
            let mut rest = s.labels.clone();
            let le = parse_value(&rest.remove("le").unwrap_or_default())?;
            series
                .entry(rest.into_iter().collect())
                .or_default()
                .push((le, s.value));
        }
        for (labels, mut buckets) in series {
            buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
            if buckets.windows(2).any(|w| w[1].1 < w[0].1) {
                return Err(format!(
                    "{family}{labels:?}: buckets not cumulative: {buckets:?}"
                ));
            }
            let inf = buckets
                .last()
                .filter(|b| b.0 == f64::INFINITY)
                .ok_or_else(|| format!("{family}{labels:?}: no +Inf bucket"))?
                .1;
            let want: BTreeMap<String, String> = labels.into_iter().collect();
            let count = e
                .samples
                .iter()
                .find(|s| s.name == format!("{family}_count") && s.labels == want)
                .ok_or_else(|| format!("{family}{want:?}: no _count"))?;
            if count.value != inf {
                return Err(format!(
                    "{family}{want:?}: _count {} but +Inf bucket {inf}",
                    count.value
                ));
            }
            if !e
                .samples
                .iter()
                .any(|s| s.name == format!("{family}_sum") && s.labels == want)
            {
                return Err(format!("{family}{want:?}: no _sum"));
            }
        }
    }
    Ok(())
}

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
    ] {
        assert!(
            after.types.contains_key(family),
            "no {family} in {:?}",
            after.types.keys().collect::<Vec<_>>()
        );
    }
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

// ---- the audit chain and the key a record is stored under (issue 11 items 6, 8) -------

/// The data directory's sled store, opened directly (the server must be stopped):
/// what an attacker with write access to `data/` can do.
fn raw_store(home: &Home) -> sled::Db {
    sled::Config::new()
        .path(home.data_dir())
        .cache_capacity(8 << 20)
        .open()
        .unwrap()
}

fn key_id(k: &[u8]) -> u64 {
    u64::from_be_bytes(k.try_into().unwrap())
}

/// A config record copied, bytes and all, under another domain's key opens (its
/// envelope is bound to the domain it names), so `verify` must judge it by the
/// key it is stored under; re-encryption must not re-seal it for either domain.
#[test]
fn verify_names_a_config_copied_under_another_domain_and_rotation_leaves_it() {
    let (home, operator) = operator_home();
    let mut server = home.start();
    let tenants = add_tenants(&server, &operator, "copied", 2);
    let written = write_all(&server, &tenants, "copied", 1);
    server.stop();
    let a = written[0]["enterprise_domain"].as_u64().unwrap();
    let b = written[1]["enterprise_domain"].as_u64().unwrap();
    let copied = {
        let db = raw_store(&home);
        let configs = db.open_tree("configs").unwrap();
        let bytes = configs.get(a.to_be_bytes()).unwrap().unwrap();
        configs.insert(b.to_be_bytes(), bytes.clone()).unwrap();
        db.flush().unwrap();
        bytes
    };
    let out = home.run(&["verify"]);
    assert!(
        out.failed(),
        "verify passed a copied record\n{}",
        out.describe()
    );
    assert!(
        out.stderr
            .lines()
            .any(|l| l.contains(&format!("stored under domain {b}"))
                && l.contains(&format!("names domain {a}"))),
        "no line names the copy\n{}",
        out.describe()
    );
    // A rotation re-encrypts the genuine record but not the copy, and keeps the
    // term the copy is under.
    home.run_ok(&["key", "rotate"]);
    let db = raw_store(&home);
    let configs = db.open_tree("configs").unwrap();
    assert_eq!(configs.get(b.to_be_bytes()).unwrap().unwrap(), copied);
    assert_ne!(configs.get(a.to_be_bytes()).unwrap().unwrap(), copied);
    drop(configs);
    drop(db);
    let out = home.run(&["verify"]);
    assert!(out.failed(), "{}", out.describe());
    assert!(
        out.stderr.contains(&format!("stored under domain {b}")),
        "{}",
        out.describe()
    );
}

/// `oidcvault verify` checks the audit chain and names the first event that
/// breaks it: one edited on disk, then the end of the trail cut off.
#[test]
fn verify_names_the_first_broken_audit_event() {
    let (home, operator) = operator_home();
    let mut server = home.start();
    let tenants = add_tenants(&server, &operator, "chain", 2);
    write_all(&server, &tenants, "chain", 1);
    server.stop();
    let clean = verify_ok(&home);
    assert_eq!(clean["audit_broken_at"], Value::Null, "{clean}");
    assert_eq!(clean["audit_events"], 7, "{clean}");
    // Edit the first token.create event: same length, so it still decodes.
    let (edited, original) = {
        let db = raw_store(&home);
        let audit = db.open_tree("audit").unwrap();
        let (k, v) = audit
            .iter()
            .map(Result::unwrap)
            .find(|(_, v)| v.windows(12).any(|w| w == b"token.create"))
            .unwrap();
        let at = v.windows(12).position(|w| w == b"token.create").unwrap();
        let mut forged = v.to_vec();
        forged[at + 9] = b'4';
        audit.insert(&k, forged).unwrap();
        db.flush().unwrap();
        (key_id(&k), (k, v))
    };
    let out = home.run(&["verify"]);
    assert!(
        out.failed(),
        "verify passed an edited event\n{}",
        out.describe()
    );
    assert_eq!(parse_json("verify", &out.stdout)["audit_broken_at"], edited);
    assert!(
        out.stderr
            .contains(&format!("audit trail broken at event {edited}")),
        "{}",
        out.describe()
    );
    // Put it back, then cut the last event off.
    let last = {
        let db = raw_store(&home);
        let audit = db.open_tree("audit").unwrap();
        audit.insert(original.0, original.1).unwrap();
        let (k, _) = audit.last().unwrap().unwrap();
        audit.remove(&k).unwrap();
        db.flush().unwrap();
        key_id(&k)
    };
    let out = home.run(&["verify"]);
    assert!(
        out.failed(),
        "verify passed a cut trail\n{}",
        out.describe()
    );
    assert_eq!(parse_json("verify", &out.stdout)["audit_broken_at"], last);
}

/// A trail written before the chain (version 1 events, no MAC, no anchor): verify
/// reports its events as unauthenticated legacy ones, not as a failure, and the
/// chain starts after the last of them.
#[test]
fn verify_reports_legacy_audit_events_and_chains_after_them() {
    let home = Home::new(Some(PASSPHRASE));
    home.run_ok(&["domain", "add", "before.test"]);
    {
        let db = raw_store(&home);
        let audit = db.open_tree("audit").unwrap();
        audit.clear().unwrap();
        db.open_tree("meta").unwrap().remove(b"audit/head").unwrap();
        for id in 1u64..=3 {
            let event = oidcvault::store::AuditRecord {
                at: id as i64,
                actor: None,
                action: "domain.create".into(),
                domain_id: Some(1),
                domain: Some("before.test".into()),
                fields: vec![],
                secret_fingerprint: None,
                detail: None,
            };
            let mut bytes = vec![1u8];
            bytes.extend(bincode::encode_to_vec(&event, bincode::config::standard()).unwrap());
            audit.insert(id.to_be_bytes(), bytes).unwrap();
        }
        db.flush().unwrap();
    }
    home.run_ok(&["domain", "add", "after.test"]);
    let out = home.run(&["verify"]);
    assert!(!out.failed(), "{}", out.describe());
    let printed = parse_json("verify", &out.stdout);
    assert_eq!(
        (&printed["audit_events"], &printed["audit_legacy_events"]),
        (&json!(4), &json!(3)),
        "{printed}"
    );
    assert!(
        out.stderr.contains("unauthenticated legacy events: 3"),
        "{}",
        out.describe()
    );
    // A legacy event after the chain began is a failure.
    {
        let db = raw_store(&home);
        let audit = db.open_tree("audit").unwrap();
        let v = audit.get(1u64.to_be_bytes()).unwrap().unwrap();
        audit.insert(9u64.to_be_bytes(), v).unwrap();
        db.flush().unwrap();
    }
    let out = home.run(&["verify"]);
    assert!(out.failed(), "{}", out.describe());
    assert_eq!(parse_json("verify", &out.stdout)["audit_broken_at"], 9);
}
