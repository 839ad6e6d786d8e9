//! Through the real binary: a crash loop (`kill -9` at random moments while many
//! clients write across many domains, checked against a client-side ledger of
//! every acknowledged write) and a concurrency run (64 clients mixing POST, GET
//! and DELETE on 1,000 domains, checked for 5xx, torn records and the final state).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use crate::harness::{tail, Home, Resp, CONFIG_PATH, PASSPHRASE};

/// Everything one write sets, derived from (domain, write id), so a record mixing
/// two writes (torn) or an older write coming back is recognised.
#[derive(Clone, Debug, PartialEq)]
struct Write {
    id: u64,
    client_id: String,
    secret: String,
    masked: String,
    discovery_url: String,
    token_endpoint: String,
}

impl Write {
    fn new(domain: &str, id: u64) -> Self {
        // 12+ characters, so the mask shows the last four: the write id.
        let secret = format!("secret-{domain}-{:04}", id % 10_000);
        let masked = format!("********{}", &secret[secret.len() - 4..]);
        Self {
            id,
            client_id: format!("client-{domain}-{id}"),
            secret,
            masked,
            discovery_url: format!("https://{domain}/.well-known/openid-configuration?w={id}"),
            token_endpoint: format!("https://{domain}/oauth2/token?w={id}"),
        }
    }

    fn body(&self) -> Value {
        json!({
            "client_id": self.client_id,
            "client_secret": self.secret,
            "discovery_url": self.discovery_url,
            "token_endpoint": self.token_endpoint,
        })
    }

    /// The whole record is this write's.
    fn matches(&self, v: &Value) -> bool {
        v["client_id"] == self.client_id.as_str()
            && v["client_secret"] == self.masked.as_str()
            && v["client_secret_masked"] == self.masked.as_str()
            && v["discovery_url"] == self.discovery_url.as_str()
            && v["token_endpoint"] == self.token_endpoint.as_str()
            && v["authorization_endpoint"].is_null()
            && v["userinfo_endpoint"].is_null()
    }
}

fn domain_name(i: usize) -> String {
    format!("d{i}.crash.test")
}

fn seed() -> u64 {
    std::env::var("OIDCVAULT_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::thread_rng().gen())
}

// ---- crash loop ---------------------------------------------------------------------

/// What the clients know about one domain.
#[derive(Debug, Default, Clone)]
struct DomainLedger {
    /// The last acknowledged change: `Some(write)` for a 200 POST, `None` for a
    /// DELETE answered 204 or 404 (no config), or nothing yet.
    acked: Option<Option<Write>>,
    /// A change sent after it that got no answer (the server was killed): it may
    /// or may not have been applied, and if it was, it is the newest.
    unanswered: Option<Option<Write>>,
    acks: u64,
}

fn expect_state(v: &Resp, state: &Option<Write>) -> bool {
    match state {
        None => v.status == 404,
        Some(w) => v.status == 200 && w.matches(&v.json()),
    }
}

/// Cycles; each but the last ends in kill -9 (so 20 kills).
const CRASH_CYCLES: u32 = 21;
const CRASH_DOMAINS: usize = 48;
const CRASH_CLIENTS: usize = 12;

#[test]
fn acknowledged_writes_survive_a_crash_loop() {
    let started = Instant::now();
    let seed = seed();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    eprintln!("crash loop: seed {seed} (OIDCVAULT_TEST_SEED={seed} repeats the kill moments)");
    let home = Home::new(Some(PASSPHRASE));
    let operator = home.run_ok(&["token", "create", "--operator"]);
    for i in 0..CRASH_DOMAINS {
        home.run_ok(&["domain", "add", &domain_name(i)]);
    }
    let ledgers = Mutex::new(vec![DomainLedger::default(); CRASH_DOMAINS]);
    // Domains created over the API during the run: acknowledged ones must stay.
    let mut created: Vec<String> = Vec::new();
    let next_write = AtomicU64::new(1);
    let mut checked_writes = 0u64;
    let mut checked_states = 0u64;
    let mut unanswered_applied = 0u64;
    let mut unanswered_total = 0u64;

    for cycle in 1..=CRASH_CYCLES {
        let mut server = home.start();
        // 1. After the restart: the store opened, every acknowledged change is
        //    there, per domain the newest wins.
        let ready = server.call("GET", "/readyz", None, None, None);
        assert_eq!(ready.status, 200, "cycle {cycle}: /readyz: {ready}");
        {
            let mut ledgers = ledgers.lock().unwrap();
            for (i, l) in ledgers.iter_mut().enumerate() {
                let name = domain_name(i);
                let r = server.call("GET", CONFIG_PATH, Some(&operator), Some(&name), None);
                let acked = l.acked.clone().unwrap_or(None);
                if expect_state(&r, &acked) {
                    l.unanswered = None;
                } else if let Some(p) = l.unanswered.take().filter(|p| expect_state(&r, p)) {
                    unanswered_applied += 1;
                    l.acked = Some(p);
                } else {
                    panic!(
                        "cycle {cycle}: after kill -9 and restart, {name} answers {r}\n\
                         newest acknowledged change: {acked:?}\nunanswered change after it: {:?}\n\
                         seed {seed}\n--- server stderr ---\n{}",
                        l.unanswered,
                        tail(&server.log(), 6000)
                    );
                }
                if l.acked.is_some() {
                    checked_states += 1;
                }
            }
            let r = server.call("GET", "/api/v1/admin/domains/", Some(&operator), None, None);
            assert_eq!(r.status, 200, "{r}");
            let names: Vec<String> = r
                .json()
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d["domain"].as_str().unwrap().to_owned())
                .collect();
            for c in &created {
                assert!(
                    names.contains(c),
                    "cycle {cycle}: domain {c} was created (201) before a kill -9 and is gone: {names:?}"
                );
            }
        }
        if cycle == CRASH_CYCLES {
            server.stop();
            break;
        }

        // 2. Many clients write; SIGKILL at a random moment while they do.
        let stop = AtomicBool::new(false);
        let errors = Mutex::new(Vec::<String>::new());
        let new_domains = Mutex::new(Vec::<String>::new());
        let kill_after = Duration::from_millis(rng.gen_range(30..1200));
        let client = server.client();
        std::thread::scope(|scope| {
            for c in 0..CRASH_CLIENTS {
                let (client, stop, errors, ledgers, next_write, operator) = (
                    client.clone(),
                    &stop,
                    &errors,
                    &ledgers,
                    &next_write,
                    &operator,
                );
                let new_domains = &new_domains;
                let mut crng =
                    rand::rngs::StdRng::seed_from_u64(seed ^ (u64::from(cycle) << 8) ^ c as u64);
                scope.spawn(move || {
                    // Each domain has one writer, so its changes are ordered.
                    let mine: Vec<usize> = (c..CRASH_DOMAINS).step_by(CRASH_CLIENTS).collect();
                    let mut n = 0u32;
                    while !stop.load(Ordering::SeqCst) {
                        n += 1;
                        if c == 0 && n.is_multiple_of(7) {
                            let name = format!("c{cycle}n{n}.created.test");
                            match client.call(
                                "POST",
                                "/api/v1/admin/domains/",
                                Some(operator),
                                None,
                                Some(&json!({"domain": name})),
                            ) {
                                Ok(r) if r.status == 201 => new_domains.lock().unwrap().push(name),
                                Ok(r) => {
                                    errors
                                        .lock()
                                        .unwrap()
                                        .push(format!("add domain {name}: {r}"));
                                    return;
                                }
                                Err(_) => return,
                            }
                            continue;
                        }
                        let i = mine[crng.gen_range(0..mine.len())];
                        let name = domain_name(i);
                        let change = if crng.gen_ratio(1, 6) {
                            None
                        } else {
                            Some(Write::new(&name, next_write.fetch_add(1, Ordering::SeqCst)))
                        };
                        ledgers.lock().unwrap()[i].unanswered = Some(change.clone());
                        let sent = match &change {
                            Some(w) => client.call(
                                "POST",
                                CONFIG_PATH,
                                Some(operator),
                                Some(&name),
                                Some(&w.body()),
                            ),
                            None => client.call(
                                "DELETE",
                                CONFIG_PATH,
                                Some(operator),
                                Some(&name),
                                None,
                            ),
                        };
                        let ok = match (&sent, &change) {
                            (Ok(r), Some(w)) => r.status == 200 && w.matches(&r.json()),
                            (Ok(r), None) => r.status == 204 || r.status == 404,
                            (Err(_), _) => {
                                // No answer: the server is gone; the change stays
                                // "unanswered" in the ledger.
                                return;
                            }
                        };
                        let r = sent.unwrap();
                        if !ok {
                            errors
                                .lock()
                                .unwrap()
                                .push(format!("{name}: {change:?} answered {r}"));
                            return;
                        }
                        let mut l = ledgers.lock().unwrap();
                        l[i].acked = Some(change);
                        l[i].unanswered = None;
                        l[i].acks += 1;
                    }
                });
            }
            std::thread::sleep(kill_after);
            let status = server.kill9();
            assert_eq!(
                std::os::unix::process::ExitStatusExt::signal(&status),
                Some(9),
                "cycle {cycle}: {status}"
            );
            stop.store(true, Ordering::SeqCst);
        });
        let errors = errors.into_inner().unwrap();
        assert!(
            errors.is_empty(),
            "cycle {cycle}: unexpected answers while writing:\n{}\n--- server stderr ---\n{}",
            errors.join("\n"),
            tail(&server.log(), 6000)
        );
        let acks: u64 = ledgers.lock().unwrap().iter().map(|l| l.acks).sum();
        let pending = ledgers
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.unanswered.is_some())
            .count();
        unanswered_total += pending as u64;
        checked_writes = acks;
        created.extend(new_domains.into_inner().unwrap());
        eprintln!(
            "cycle {cycle}: kill -9 after {kill_after:?}; {acks} acknowledged changes so far, \
             {pending} unanswered at the kill"
        );
    }
    assert!(
        checked_writes >= u64::from(CRASH_CYCLES) * 10,
        "too few acknowledged writes to mean anything: {checked_writes}"
    );
    eprintln!(
        "crash loop: {} kill -9; a ledger of {checked_writes} acknowledged config writes and \
         deletes and {} acknowledged domain creations; after each restart every domain's newest \
         acknowledged change was checked ({checked_states} checks) and every acknowledged \
         creation found; {unanswered_applied} of {unanswered_total} unanswered writes were found \
         applied (allowed either way); {:?}",
        CRASH_CYCLES - 1,
        created.len(),
        started.elapsed()
    );
}

// ---- concurrency ----------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Op {
    Post(Write),
    Get(Option<Value>),
    Delete,
}

#[derive(Debug, Clone)]
struct Done {
    op: Op,
    started: Instant,
    ended: Instant,
}

const CLIENTS: usize = 64;
const DOMAINS: usize = 1000;
const OPS_PER_CLIENT: usize = 80;

#[test]
fn sixty_four_clients_on_a_thousand_domains() {
    let started = Instant::now();
    let seed = seed();
    eprintln!("concurrency: seed {seed}");
    let home = Home::new(Some(PASSPHRASE));
    let operator = home.run_ok(&["token", "create", "--operator"]);
    let mut server = home.start();
    let client = server.client();

    // 1,000 domains over the admin API, 64 at a time.
    let failures = Mutex::new(Vec::<String>::new());
    std::thread::scope(|scope| {
        for c in 0..CLIENTS {
            let (client, operator, failures) = (client.clone(), &operator, &failures);
            scope.spawn(move || {
                for i in (c..DOMAINS).step_by(CLIENTS) {
                    let r = client.call(
                        "POST",
                        "/api/v1/admin/domains/",
                        Some(operator),
                        None,
                        Some(&json!({"domain": domain_name(i)})),
                    );
                    match r {
                        Ok(r) if r.status == 201 => {}
                        other => failures
                            .lock()
                            .unwrap()
                            .push(format!("add {i}: {:?}", other.map(|r| r.to_string()))),
                    }
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap();
    assert!(failures.is_empty(), "{failures:?}");
    let setup = started.elapsed();

    // 64 clients, random domains, POST 50% / GET 30% / DELETE 20%.
    let history: Mutex<BTreeMap<usize, Vec<Done>>> = Mutex::new(BTreeMap::new());
    let problems = Mutex::new(Vec::<String>::new());
    let next_write = AtomicU64::new(1);
    let run_started = Instant::now();
    std::thread::scope(|scope| {
        for c in 0..CLIENTS {
            let (client, operator, history, problems, next_write) =
                (client.clone(), &operator, &history, &problems, &next_write);
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ c as u64);
            scope.spawn(move || {
                for _ in 0..OPS_PER_CLIENT {
                    // A skewed pick, so that many operations meet on the same domains.
                    let i = if rng.gen_ratio(1, 2) {
                        rng.gen_range(0..32)
                    } else {
                        rng.gen_range(0..DOMAINS)
                    };
                    let name = domain_name(i);
                    let roll = rng.gen_range(0..10);
                    let t0 = Instant::now();
                    let (op, r) = if roll < 5 {
                        let w = Write::new(&name, next_write.fetch_add(1, Ordering::SeqCst));
                        let r = client.call(
                            "POST",
                            CONFIG_PATH,
                            Some(operator),
                            Some(&name),
                            Some(&w.body()),
                        );
                        (Op::Post(w), r)
                    } else if roll < 8 {
                        let r = client.call("GET", CONFIG_PATH, Some(operator), Some(&name), None);
                        (Op::Get(None), r)
                    } else {
                        let r =
                            client.call("DELETE", CONFIG_PATH, Some(operator), Some(&name), None);
                        (Op::Delete, r)
                    };
                    let t1 = Instant::now();
                    let r = match r {
                        Ok(r) => r,
                        Err(e) => {
                            problems
                                .lock()
                                .unwrap()
                                .push(format!("{name}: transport: {e}"));
                            continue;
                        }
                    };
                    let op = match op {
                        Op::Post(w) => {
                            if r.status != 200 || !w.matches(&r.json()) {
                                problems
                                    .lock()
                                    .unwrap()
                                    .push(format!("POST {name} {w:?}: {r}"));
                                continue;
                            }
                            Op::Post(w)
                        }
                        Op::Get(_) => match r.status {
                            200 => Op::Get(Some(r.json())),
                            404 => Op::Get(None),
                            _ => {
                                problems.lock().unwrap().push(format!("GET {name}: {r}"));
                                continue;
                            }
                        },
                        Op::Delete => {
                            if r.status != 204 && r.status != 404 {
                                problems.lock().unwrap().push(format!("DELETE {name}: {r}"));
                                continue;
                            }
                            Op::Delete
                        }
                    };
                    history.lock().unwrap().entry(i).or_default().push(Done {
                        op,
                        started: t0,
                        ended: t1,
                    });
                }
            });
        }
    });
    let run = run_started.elapsed();
    let problems = problems.into_inner().unwrap();
    assert!(
        problems.is_empty(),
        "{} unexpected answers (a 5xx, a transport error or a wrong body), first ones:\n{}\n\
         --- server stderr ---\n{}",
        problems.len(),
        problems[..problems.len().min(20)].join("\n"),
        tail(&server.log(), 6000)
    );
    let history = history.into_inner().unwrap();
    let total_ops: usize = history.values().map(Vec::len).sum();

    // Every GET saw a whole record of one POST to that domain that had started
    // by then (never a mix of two writes, never another domain's); and the
    // final state is the effect of a last acknowledged change: one that no
    // other change on the domain started after.
    let mut gets_checked = 0;
    let mut finals_checked = 0;
    for i in 0..DOMAINS {
        let name = domain_name(i);
        let ops = history.get(&i).cloned().unwrap_or_default();
        let posts: Vec<(&Write, &Done)> = ops
            .iter()
            .filter_map(|d| match &d.op {
                Op::Post(w) => Some((w, d)),
                _ => None,
            })
            .collect();
        for d in &ops {
            if let Op::Get(Some(v)) = &d.op {
                gets_checked += 1;
                let whole = posts
                    .iter()
                    .any(|(w, p)| p.started <= d.ended && w.matches(v));
                assert!(whole, "GET {name} returned a record no single POST wrote (torn, or from elsewhere): {v}\nPOSTs: {posts:?}");
            }
        }
        let r = server.call("GET", CONFIG_PATH, Some(&operator), Some(&name), None);
        let final_state: Option<Value> = match r.status {
            200 => Some(r.json()),
            404 => None,
            _ => panic!("final GET {name}: {r}"),
        };
        let changes: Vec<&Done> = ops.iter().filter(|d| !matches!(d.op, Op::Get(_))).collect();
        let explains = |d: &Done| match (&d.op, &final_state) {
            (Op::Post(w), Some(v)) => w.matches(v),
            (Op::Delete, None) => true,
            _ => false,
        };
        let ok = if changes.is_empty() {
            final_state.is_none()
        } else {
            changes
                .iter()
                .any(|d| explains(d) && !changes.iter().any(|later| later.started > d.ended))
        };
        assert!(
            ok,
            "{name}: the final state {final_state:?} is not the effect of a last acknowledged \
             change; changes (started/ended relative to the run):\n{:#?}",
            changes
                .iter()
                .map(|d| (
                    &d.op,
                    d.started.duration_since(run_started),
                    d.ended.duration_since(run_started)
                ))
                .collect::<Vec<_>>()
        );
        finals_checked += 1;
    }
    server.stop();
    eprintln!(
        "concurrency: {CLIENTS} clients, {total_ops} operations on {} of {DOMAINS} domains in \
         {run:?} (setup of {DOMAINS} domains: {setup:?}); no 5xx; {gets_checked} GET bodies and \
         {finals_checked} final states checked",
        history.len()
    );
}
