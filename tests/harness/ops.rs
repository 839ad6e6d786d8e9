//! Fixtures of the `ops_*` modules (operations through the real binary): an
//! operator's home, tenants and versions of their configs, writer threads that
//! keep a ledger of what was acknowledged, and polls of the key status and the
//! audit trail (each bounded, printing what it saw on timeout).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{config_toml, tail, Client, Home, Server, CONFIG_PATH, PASSPHRASE};

pub(crate) const KEYS: &str = "/api/v1/admin/keys/";
pub(crate) const ROTATE: &str = "/api/v1/admin/keys/rotate";
pub(crate) const AUDIT: &str = "/api/v1/admin/audit/";
pub(crate) const DOMAINS: &str = "/api/v1/admin/domains/";
pub(crate) const TOKENS: &str = "/api/v1/admin/tokens/";
pub(crate) const FAILPOINT: &str = "OIDCVAULT_FAILPOINT";
pub(crate) const NEW_PASSPHRASE_ENV: &str = "OIDCVAULT_NEW_MASTER_PASSPHRASE";
pub(crate) const TOKEN_ENV: &str = "OIDCVAULT_TOKEN";
/// The exit code of a failpoint.
pub(crate) const FAILPOINT_EXIT: i32 = 86;
/// The keyring write's steps, in order.
pub(crate) const KEYRING_FAILPOINTS: [&str; 4] = [
    "keyring-before-write",
    "keyring-after-tmp",
    "keyring-after-rename",
    "keyring-after-sync",
];
/// Bound of every poll (re-encryption, rotation, writers making progress).
pub(crate) const POLL_TIMEOUT: Duration = Duration::from_secs(30);
pub(crate) const POLL_EVERY: Duration = Duration::from_millis(50);

// ---- helpers -------------------------------------------------------------------------

/// `host:port` of a running server (for `OIDCVAULT_SERVER__BIND` of a CLI command
/// that must reach it: the test config binds port 0).
pub(crate) fn addr_of(server: &Server) -> String {
    let base = &server.client.base;
    base.split_once("://")
        .map_or(base.as_str(), |(_, a)| a)
        .to_owned()
}

pub(crate) fn parse_json(what: &str, text: &str) -> Value {
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {text:?}"))
}

/// A home (passphrase [`PASSPHRASE`], test config) and an operator token made by
/// the offline CLI.
pub(crate) fn operator_home() -> (Home, String) {
    let home = Home::new(Some(PASSPHRASE));
    let operator = home.run_ok(&["token", "create", "--operator"]);
    (home, operator)
}

/// A home whose config points `storage.data_dir` at `dir`.
pub(crate) fn home_for_data(dir: &Path) -> Home {
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
pub(crate) struct Tenant {
    pub(crate) name: String,
    pub(crate) token: String,
}

/// `n` domains `<prefix><i>.test`, each with a domain token, over the admin API.
pub(crate) fn add_tenants(server: &Server, operator: &str, prefix: &str, n: usize) -> Vec<Tenant> {
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
pub(crate) struct Version {
    pub(crate) client_id: String,
    pub(crate) secret: String,
    pub(crate) masked: String,
    pub(crate) discovery_url: String,
}

impl Version {
    pub(crate) fn new(tag: &str, domain: &str, seq: u32) -> Self {
        let secret = format!("ops-{tag}-{domain}-secret-{seq:04}");
        let masked = format!("********{}", &secret[secret.len() - 4..]);
        Self {
            client_id: format!("ops-{tag}-{domain}-seq{seq}"),
            secret,
            masked,
            discovery_url: format!("https://{domain}/.well-known/openid-configuration?seq={seq}"),
        }
    }

    pub(crate) fn body(&self) -> Value {
        json!({
            "client_id": self.client_id,
            "client_secret": self.secret,
            "discovery_url": self.discovery_url,
        })
    }

    pub(crate) fn matches(&self, v: &Value) -> bool {
        v["client_id"] == self.client_id.as_str()
            && v["client_secret_masked"] == self.masked.as_str()
            && v["client_secret"] == self.masked.as_str()
            && v["discovery_url"] == self.discovery_url.as_str()
    }
}

/// The sequence number in a stored config's client id.
pub(crate) fn seq_of(v: &Value) -> Option<u32> {
    v["client_id"].as_str()?.rsplit_once("-seq")?.1.parse().ok()
}

/// Write version `seq` of every tenant's config; their answers.
pub(crate) fn write_all(server: &Server, tenants: &[Tenant], tag: &str, seq: u32) -> Vec<Value> {
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
pub(crate) fn add_idle_configs(
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

pub(crate) fn assert_idle_configs(
    what: &str,
    server: &Server,
    operator: &str,
    idle: &[(String, Value)],
) {
    for (name, want) in idle {
        let got = server.expect(200, "GET", CONFIG_PATH, operator, Some(name), None);
        assert_eq!(&got, want, "{what}: {name} changed");
    }
}

/// Every config as stored must equal `expected`, field by field (masked secret,
/// client id, URLs, ids, timestamps).
pub(crate) fn assert_configs(what: &str, server: &Server, tenants: &[Tenant], expected: &[Value]) {
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
pub(crate) fn verify_ok(home: &Home) -> Value {
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
pub(crate) fn assert_verify_counts(v: &Value, domains: u64, configs: u64, tokens: u64) {
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

pub(crate) fn key_status(server: &Server, operator: &str) -> Value {
    server.expect(200, "GET", KEYS, operator, None, None)
}

/// The term numbers of a key status, in order.
pub(crate) fn terms_of(status: &Value) -> Vec<u64> {
    status["terms"]
        .as_array()
        .unwrap_or_else(|| panic!("no terms in {status}"))
        .iter()
        .map(|t| t["term"].as_u64().unwrap_or_else(|| panic!("term in {t}")))
        .collect()
}

/// Poll the key status until one term remains, at least `min_term`, with every
/// secret under it (progress 1.0). Returns that status.
pub(crate) fn wait_single_term(server: &Server, operator: &str, min_term: u64) -> Value {
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
pub(crate) fn audit_all(server: &Server, operator: &str, query: &str) -> Vec<Value> {
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
pub(crate) fn wait_for_events(
    server: &Server,
    operator: &str,
    action: &str,
    n: usize,
) -> Vec<Value> {
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

pub(crate) fn events_with_action<'a>(events: &'a [Value], action: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["action"] == action).collect()
}

/// The id of an operator token (from the admin token list: the only operator).
pub(crate) fn operator_token_id(server: &Server, operator: &str) -> Value {
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
pub(crate) fn entries(dir: &Path) -> Vec<String> {
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
pub(crate) struct DomainLedger {
    pub(crate) sent: u32,
    pub(crate) acks: Vec<(u32, Instant)>,
    /// A write that got no answer (the server was killed): it may or may not
    /// have been applied.
    pub(crate) unanswered: Option<u32>,
}

impl DomainLedger {
    /// The last sequence number acknowledged strictly before `t`.
    pub(crate) fn last_acked_before(&self, t: Instant) -> Option<u32> {
        self.acks
            .iter()
            .filter(|(_, at)| *at < t)
            .map(|(s, _)| *s)
            .max()
    }

    pub(crate) fn acked_after(&self, t: Instant) -> usize {
        self.acks.iter().filter(|(_, at)| *at > t).count()
    }
}

/// Writer threads: each owns some domains and writes them in turn, one domain's
/// writes strictly in sequence, until stopped.
pub(crate) struct Load {
    stop: Arc<AtomicBool>,
    /// Set just before the server is killed: a write without an answer is then
    /// expected, recorded, and ends its writer.
    killing: Arc<AtomicBool>,
    ledgers: Arc<Mutex<Vec<DomainLedger>>>,
    errors: Arc<Mutex<Vec<String>>>,
    threads: Vec<JoinHandle<()>>,
}

impl Load {
    pub(crate) fn start(client: &Client, tenants: &[Tenant], tag: &str, threads: usize) -> Self {
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

    pub(crate) fn snapshot(&self) -> Vec<DomainLedger> {
        self.ledgers.lock().unwrap().clone()
    }

    /// Wait (bounded) until `done` holds for the ledgers; panics naming `what`
    /// on timeout or on a writer's error.
    pub(crate) fn wait_until(
        &self,
        server: &Server,
        what: &str,
        done: impl Fn(&[DomainLedger]) -> bool,
    ) {
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
    pub(crate) fn kill_server(self, server: &mut Server) -> Vec<DomainLedger> {
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
    pub(crate) fn finish(self, server: &Server) -> Vec<DomainLedger> {
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

pub(crate) const LOAD_DOMAINS: usize = 6;
pub(crate) const LOAD_THREADS: usize = 3;

/// An answer with the headers the API must carry.
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) cache_control: Option<String>,
    pub(crate) nosniff: Option<String>,
    pub(crate) content_type: Option<String>,
    /// `Strict-Transport-Security`.
    pub(crate) hsts: Option<String>,
    pub(crate) body: String,
}

impl Answer {
    pub(crate) fn json(&self) -> Value {
        parse_json("answer", &self.body)
    }
}

pub(crate) fn request(
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
