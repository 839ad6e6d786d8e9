//! Durability across `kill -9` (every acknowledged write survives, whole), and
//! backup by copy (a copy of `data/` taken while stopped is a full replica).
//!
//! Through the real binary over real TCP, with the harness of `crate::harness`
//! (`Home`, `Server`, `Client`): every test gets its own temporary home.

use std::os::unix::process::ExitStatusExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::text::{random_hex, tail};
use crate::harness::{
    assert_refused_for_master_key, copy_dir, snapshot, snapshot_diff, Home, Server, CONFIG_PATH,
    OTHER_PASSPHRASE, PASSPHRASE, REFUSE_TIMEOUT,
};

// ---- 1. durability across kill -9 -----------------------------------------------------

struct Tenant {
    name: String,
    token: String,
}

/// One write: everything it sets is derived from (cycle, domain, seq), and the
/// secret's last four characters (the visible part of the mask) are the sequence
/// number, so the stored mask identifies the write.
#[derive(Clone, Debug, PartialEq)]
struct Written {
    client_id: String,
    secret: String,
    masked: String,
    discovery_url: String,
}

impl Written {
    fn new(cycle: u32, domain: &str, seq: u32) -> Self {
        let secret = format!("kill9-secret-c{cycle}-{domain}-{seq:04}");
        let masked = format!("********{}", &secret[secret.len() - 4..]);
        Self {
            client_id: format!("client-c{cycle}-{domain}-{seq:04}"),
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

#[derive(Default, Debug)]
struct Ledger {
    seq: u32,
    /// The last write answered 200.
    acked: Option<Written>,
    /// A write sent after it that got no answer (the server was killed).
    pending: Option<Written>,
    acks_this_cycle: usize,
}

const WRITER_THREADS: usize = 3;
const MIN_ACKS: usize = 6;

/// Write from several threads until every domain has `MIN_ACKS` acknowledged
/// writes, then SIGKILL the server while the writers are still writing.
fn write_then_kill9(
    server: &mut Server,
    tenants: &[Tenant],
    ledgers: &Mutex<Vec<Ledger>>,
    cycle: u32,
) -> String {
    for l in ledgers.lock().unwrap().iter_mut() {
        l.pending = None;
        l.acks_this_cycle = 0;
    }
    let errors = Mutex::new(Vec::<String>::new());
    let stop = AtomicBool::new(false);
    let client = server.client();
    let mut enough = false;
    let mut killed = None;
    std::thread::scope(|scope| {
        for t in 0..WRITER_THREADS {
            let (client, errors, stop) = (client.clone(), &errors, &stop);
            scope.spawn(move || {
                let mine: Vec<usize> = (t..tenants.len()).step_by(WRITER_THREADS).collect();
                'writing: while !stop.load(Ordering::SeqCst) {
                    for &i in &mine {
                        let w = {
                            let mut l = ledgers.lock().unwrap();
                            l[i].seq += 1;
                            Written::new(cycle, &tenants[i].name, l[i].seq)
                        };
                        let sent = client.call(
                            "POST",
                            CONFIG_PATH,
                            Some(&tenants[i].token),
                            None,
                            Some(&w.body()),
                        );
                        match sent {
                            Ok(r) if r.status == 200 => {
                                let v = r.json();
                                if !w.matches(&v) || r.body.contains(&w.secret) {
                                    errors.lock().unwrap().push(format!(
                                        "{}: wrote {w:?}, answer {r}",
                                        tenants[i].name
                                    ));
                                    break 'writing;
                                }
                                let mut l = ledgers.lock().unwrap();
                                l[i].acked = Some(w);
                                l[i].acks_this_cycle += 1;
                            }
                            Ok(r) => {
                                errors
                                    .lock()
                                    .unwrap()
                                    .push(format!("{}: wrote {w:?}, answer {r}", tenants[i].name));
                                break 'writing;
                            }
                            Err(_) => {
                                // No answer: the server is gone. This write may or
                                // may not have been applied.
                                ledgers.lock().unwrap()[i].pending = Some(w);
                                break 'writing;
                            }
                        }
                    }
                }
            });
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline && errors.lock().unwrap().is_empty() {
            if ledgers
                .lock()
                .unwrap()
                .iter()
                .all(|l| l.acks_this_cycle >= MIN_ACKS)
            {
                enough = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        // Writers are still running: some request is likely in flight.
        killed = Some(server.kill9());
        stop.store(true, Ordering::SeqCst);
    });
    let log = server.log();
    let errors = errors.into_inner().unwrap();
    assert!(
        errors.is_empty(),
        "cycle {cycle}: unexpected answers while writing:\n{}\n--- server stderr ---\n{}",
        errors.join("\n"),
        tail(&log, 8000)
    );
    let counts: Vec<usize> = ledgers
        .lock()
        .unwrap()
        .iter()
        .map(|l| l.acks_this_cycle)
        .collect();
    assert!(
        enough,
        "cycle {cycle}: not every domain got {MIN_ACKS} acknowledged writes in 30 s: {counts:?}\n\
         --- server stderr ---\n{}",
        tail(&log, 8000)
    );
    let killed = killed.unwrap();
    assert_eq!(
        killed.signal(),
        Some(9),
        "cycle {cycle}: the server was not killed by SIGKILL: {killed}"
    );
    eprintln!("cycle {cycle}: acknowledged writes per domain before kill -9: {counts:?}");
    log
}

/// After a restart each domain must hold its last acknowledged write (or the one
/// unanswered write sent after it), whole. Returns (id, created_at) per domain.
fn verify_after_restart(
    server: &Server,
    tenants: &[Tenant],
    ledgers: &Mutex<Vec<Ledger>>,
    cycle: u32,
    killed_log: &str,
) -> Vec<(Value, Value, Value)> {
    let mut ledgers = ledgers.lock().unwrap();
    let unanswered = ledgers.iter().filter(|l| l.pending.is_some()).count();
    let mut applied = 0;
    let mut out = Vec::new();
    for (tenant, ledger) in tenants.iter().zip(ledgers.iter_mut()) {
        let r = server.call("GET", CONFIG_PATH, Some(&tenant.token), None, None);
        let acked = ledger.acked.clone().expect("an acknowledged write");
        let ok = r.status == 200 && {
            let v = r.json();
            if acked.matches(&v) {
                true
            } else if ledger.pending.as_ref().is_some_and(|p| p.matches(&v)) {
                // The unanswered write made it: it is now the latest value.
                ledger.acked = ledger.pending.take();
                applied += 1;
                true
            } else {
                false
            }
        };
        assert!(
            ok,
            "cycle {cycle}: after kill -9 and restart, {} answers {r}\n\
             last acknowledged write: {acked:?}\nunanswered write after it: {:?}\n\
             --- stderr of the killed server ---\n{}\n--- stderr of the restarted server ---\n{}",
            tenant.name,
            ledger.pending,
            tail(killed_log, 6000),
            tail(&server.log(), 6000)
        );
        let v = r.json();
        assert!(
            !r.body.contains(&acked.secret),
            "{}: the answer carries the plaintext secret: {r}",
            tenant.name
        );
        out.push((
            v["id"].clone(),
            v["enterprise_domain"].clone(),
            v["created_at"].clone(),
        ));
    }
    eprintln!(
        "cycle {cycle}: {unanswered} write(s) were unanswered at kill -9, {applied} of them \
         found applied after the restart"
    );
    out
}

#[test]
fn acknowledged_writes_survive_kill_9() {
    let started = Instant::now();
    let home = Home::new(Some(PASSPHRASE));
    home.run_ok(&["domain", "add", "acme.test"]);
    let acme = home.run_ok(&["token", "create", "--domain", "acme.test"]);
    let operator = home.run_ok(&["token", "create", "--operator"]);

    let mut server = home.start();
    let mut tenants = vec![Tenant {
        name: "acme.test".into(),
        token: acme,
    }];
    // Domains and tokens created over the admin API must survive kill -9 too.
    for i in 1..6 {
        let name = format!("tenant{i}.test");
        server.add_domain(&operator, &name);
        let token = server.create_token(&operator, &name);
        tenants.push(Tenant { name, token });
    }
    let ledgers = Mutex::new(
        (0..tenants.len())
            .map(|_| Ledger::default())
            .collect::<Vec<_>>(),
    );

    let mut first_seen: Option<Vec<(Value, Value, Value)>> = None;
    for cycle in 1..=2 {
        let killed_log = write_then_kill9(&mut server, &tenants, &ledgers, cycle);
        server = home.start();
        let seen = verify_after_restart(&server, &tenants, &ledgers, cycle, &killed_log);
        // id, enterprise_domain and created_at stay fixed across updates and restarts.
        if let Some(first) = &first_seen {
            assert_eq!(
                first, &seen,
                "cycle {cycle}: (id, enterprise_domain, created_at) per domain changed"
            );
        }
        first_seen = Some(seen);
    }
    // The operator token (CLI) still works after two kills.
    let domains = server.expect(200, "GET", "/api/v1/admin/domains/", &operator, None, None);
    assert_eq!(
        domains.as_array().map(Vec::len),
        Some(tenants.len()),
        "domains after two kills: {domains}"
    );
    server.stop();
    eprintln!(
        "acknowledged_writes_survive_kill_9: {:?}",
        started.elapsed()
    );
}

// ---- 3. backup by copy ----------------------------------------------------------------

#[test]
fn a_copy_of_data_taken_while_stopped_is_a_full_replica() {
    let started = Instant::now();
    let home = Home::new(Some(PASSPHRASE));
    let operator = home.run_ok(&["token", "create", "--operator"]);
    let mut server = home.start();
    let mut tenants = Vec::new();
    for i in 0..3 {
        let name = format!("backup{i}.test");
        server.add_domain(&operator, &name);
        let token = server.create_token(&operator, &name);
        let body = json!({
            "client_id": format!("backup-client-{i}"),
            "client_secret": format!("backup-secret-{i}-{}", random_hex(8)),
            "token_endpoint": format!("https://{name}/oauth2/token"),
        });
        server.expect(200, "POST", CONFIG_PATH, &token, None, Some(&body));
        // An update, so created_at and updated_at differ.
        let update = json!({ "client_id": format!("backup-client-{i}-v2") });
        server.expect(200, "POST", CONFIG_PATH, &token, None, Some(&update));
        tenants.push((name, token));
    }
    let originals: Vec<Value> = tenants
        .iter()
        .map(|(_, token)| server.expect(200, "GET", CONFIG_PATH, token, None, None))
        .collect();
    server.stop();

    let copy = Home::new(Some(PASSPHRASE));
    copy_dir(&home.data_dir(), &copy.data_dir());
    let mut replica = copy.start();
    for ((name, token), original) in tenants.iter().zip(&originals) {
        // The domain token works on the replica, and the operator names the domain.
        let by_token = replica.expect(200, "GET", CONFIG_PATH, token, None, None);
        let by_operator = replica.expect(200, "GET", CONFIG_PATH, &operator, Some(name), None);
        for got in [&by_token, &by_operator] {
            assert_eq!(
                got, original,
                "{name}: the replica answers differently from the original"
            );
        }
        for field in ["id", "client_id", "client_secret_masked", "created_at"] {
            assert!(
                !original[field].is_null(),
                "{name}: {field} missing in {original}"
            );
        }
    }
    replica.stop();

    // The copy alone, with another passphrase: refused, unchanged.
    let before = snapshot(&copy.data_dir());
    let out = copy.run_with(
        Some(Some(OTHER_PASSPHRASE)),
        &[],
        &["serve"],
        REFUSE_TIMEOUT,
    );
    assert_refused_for_master_key(
        "`serve` on the copy with another passphrase",
        &out,
        &[PASSPHRASE, OTHER_PASSPHRASE],
    );
    let diff = snapshot_diff(&before, &snapshot(&copy.data_dir()));
    assert!(
        diff.is_empty(),
        "the refused start changed the copy: {diff:?}"
    );
    // And without any passphrase (key-file mode, no key file): refused as well.
    let out = copy.run_with(Some(None), &[], &["serve"], REFUSE_TIMEOUT);
    assert_refused_for_master_key("`serve` on the copy with no master key", &out, &[]);
    assert!(
        !copy.key_file().exists(),
        "a key file was created for the copy"
    );
    eprintln!(
        "a_copy_of_data_taken_while_stopped_is_a_full_replica: {:?}",
        started.elapsed()
    );
}
