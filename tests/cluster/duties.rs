//! Work that must run once in the cluster, and moving between engines:
//!
//! - key rotation through one node while both serve reads, writes and
//!   sign-ins (each opening the provider's client secret, under the old term
//!   then the new): every answer right throughout, both nodes see the new term,
//!   exactly one node
//!   re-encrypts (its log's `re-encryption finished resealed=N`), one
//!   `key.rotate` and one `key.drop` in the audit trail, `verify` clean;
//! - sled -> etcd -> backup -> sled: `oidcvault storage load SRC_DATA_DIR`
//!   into an empty etcd prefix, `oidcvault backup DEST` from etcd, the backup
//!   started as a single appliance: every record the same, `verify` clean.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::cluster::{send, write_key_file, NodeOptions, Nodes};
use crate::harness::cluster_sso::{broker_options, setup_broker, sign_in_across};
use crate::harness::etcd::EtcdCluster;
use crate::harness::ops::{
    add_idle_configs, audit_all, events_with_action, key_status, verify_ok, wait_for_events,
    wait_single_term, Version, DOMAINS, ROTATE, TOKENS,
};
use crate::harness::stub_idp::{self, StubIdp};
use crate::harness::{config_toml, Home, Server, CONFIG_PATH};

use super::{clients, tenants_across, Writers};

const IDLE: usize = 16;

/// The `resealed=N` of every `re-encryption finished` line of a log.
fn resealed(log: &str) -> Vec<u64> {
    log.lines()
        .filter(|l| l.contains("re-encryption finished"))
        .filter_map(|l| {
            let at = l.find("resealed=")? + "resealed=".len();
            l[at..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
                .parse()
                .ok()
        })
        .collect()
}

#[test]
fn rotation_with_both_nodes_running_reencrypts_once() {
    let started = Instant::now();
    let idp = StubIdp::start();
    let etcd = EtcdCluster::start(3);
    let (options, public_url) = broker_options(2);
    let mut nodes = Nodes::start_with(&etcd, 2, options);
    let op = nodes.operator.clone();
    // The provider's client secret, sealed under term 1: opened by the node
    // that finishes each sign-in (its token request), before and after the
    // re-encryption moves it to term 2.
    let app = setup_broker(&nodes, &idp);
    let idle = add_idle_configs(nodes.server(0), &op, "rotidle", IDLE);
    let tenants = tenants_across(&nodes, "rotw", 4);
    let clients = clients(&nodes);
    let writers = Writers::start(&clients, &tenants, "rotw");
    writers.wait_until(
        &nodes,
        "2 acknowledged writes per domain",
        |_| true,
        |l| l.acks.len() >= 2,
    );
    // Readers on both nodes: every idle config, unchanged, throughout.
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicUsize::new(0));
    let read_errors: Arc<Mutex<Vec<String>>> = Arc::default();
    let readers: Vec<_> = clients
        .iter()
        .enumerate()
        .map(|(n, c)| {
            let (c, stop, reads, errors) =
                (c.clone(), stop.clone(), reads.clone(), read_errors.clone());
            let (idle, op) = (idle.clone(), op.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    for (name, want) in &idle {
                        match send(&c, "GET", CONFIG_PATH, Some(&op), Some(name), None) {
                            Ok(r) if r.status == 200 && r.json() == *want => {
                                reads.fetch_add(1, Ordering::SeqCst);
                            }
                            Ok(r) => errors
                                .lock()
                                .unwrap()
                                .push(format!("node {n}: {name}: {r}")),
                            Err(e) => errors.lock().unwrap().push(format!("node {n}: {e}")),
                        }
                    }
                }
            })
        })
        .collect();
    // Sign-ins throughout, alternately finished on each node.
    let sign_ins = Arc::new(Mutex::new(Vec::<(usize, Instant)>::new()));
    let signer = {
        let (stop, errors, sign_ins) = (stop.clone(), read_errors.clone(), sign_ins.clone());
        let bases: Vec<String> = nodes.nodes.iter().map(|n| n.base()).collect();
        let (app, public_url) = (app.clone(), public_url.clone());
        std::thread::spawn(move || {
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                let (start, finish) = (&bases[i % 2], &bases[(i + i / 2) % 2]);
                let state = format!("rot-{i}");
                match sign_in_across(&idp, &app, &public_url, start, finish, &state) {
                    Ok(p) if p["profile"]["email"] == stub_idp::EMAIL => {
                        sign_ins
                            .lock()
                            .unwrap()
                            .push(((i + i / 2) % 2, Instant::now()));
                    }
                    Ok(p) => errors.lock().unwrap().push(format!("sign-in {i}: {p}")),
                    Err(e) => errors.lock().unwrap().push(format!("sign-in {i}: {e}")),
                }
                i += 1;
            }
        })
    };

    let signed_on_both = |after: Instant| {
        let sign_ins = sign_ins.clone();
        move || {
            let s = sign_ins.lock().unwrap();
            let on = |node| s.iter().any(|(n, at)| *n == node && *at > after);
            (on(0) && on(1))
                .then_some(())
                .ok_or(format!("{} sign-ins: {s:?}", s.len()))
        }
    };
    crate::harness::poll::until(
        "a sign-in finished on each node before the rotation",
        Duration::from_secs(30),
        Duration::from_millis(20),
        signed_on_both(started),
    );

    let rotated = nodes.server(0).expect(200, "POST", ROTATE, &op, None, None);
    assert_eq!(rotated["active_term"], 2, "rotate answered {rotated}");
    let rotated_at = Instant::now();
    // Node 1 sees the new term (the keyring is in etcd).
    crate::harness::poll::until(
        "node 1 to show term 2 active",
        Duration::from_secs(10),
        Duration::from_millis(50),
        || {
            let s = key_status(nodes.server(1), &op);
            (s["active_term"] == 2).then_some(()).ok_or(s.to_string())
        },
    );
    let done = [
        wait_single_term(nodes.server(0), &op, 2),
        wait_single_term(nodes.server(1), &op, 2),
    ];
    let reencrypted_in = rotated_at.elapsed();
    // The secret under the new term, opened by each node.
    crate::harness::poll::until(
        "a sign-in finished on each node after the re-encryption",
        Duration::from_secs(30),
        Duration::from_millis(20),
        signed_on_both(Instant::now()),
    );
    writers.wait_until(
        &nodes,
        "2 writes per domain after the rotation",
        |_| true,
        |l| l.acks_after(rotated_at) >= 2,
    );
    stop.store(true, Ordering::SeqCst);
    for r in readers {
        r.join().unwrap();
    }
    signer.join().expect("the sign-in thread panicked");
    let ledgers = writers.finish(&nodes);
    let errors = read_errors.lock().unwrap().clone();
    assert!(
        errors.is_empty(),
        "reads failed during the rotation:\n{}\n{}",
        errors
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n"),
        nodes.logs()
    );
    assert_eq!(
        done[0]["terms"], done[1]["terms"],
        "the nodes disagree: {done:?}"
    );
    let sign_ins = sign_ins.lock().unwrap().clone();
    for node in 0..2 {
        let before = sign_ins
            .iter()
            .filter(|(n, at)| *n == node && *at < rotated_at)
            .count();
        let after = sign_ins
            .iter()
            .filter(|(n, at)| *n == node && *at > rotated_at)
            .count();
        assert!(
            before > 0 && after > 0,
            "sign-ins finished on node {node}: {before} before the rotation, {after} after"
        );
    }
    for reader in &clients {
        super::assert_ledgers_hold(
            "after the rotation",
            &nodes,
            reader,
            "rotw",
            &tenants,
            &ledgers,
        );
    }
    // Exactly one node re-encrypted, exactly once.
    let events = wait_for_events(nodes.server(1), &op, "key.drop", 1);
    assert_eq!(
        events_with_action(&events, "key.rotate").len(),
        1,
        "{events:#?}"
    );
    assert_eq!(
        events_with_action(&events, "key.drop").len(),
        1,
        "{events:#?}"
    );
    let per_node: Vec<Vec<u64>> = nodes.nodes.iter().map(|n| resealed(&n.log())).collect();
    let working: Vec<usize> = (0..per_node.len())
        .filter(|i| per_node[*i].iter().any(|n| *n > 0))
        .collect();
    assert_eq!(
        working.len(),
        1,
        "re-encryption per node (resealed=N of `re-encryption finished`): {per_node:?}\n{}",
        nodes.logs()
    );
    let total: u64 = per_node.iter().flatten().sum();
    assert!(
        total >= IDLE as u64,
        "{total} secrets re-encrypted, {IDLE} idle configs: {per_node:?}"
    );
    nodes.stop_all();
    let counts = verify_ok(&nodes.nodes[1].home);
    assert_eq!(
        counts["secrets_opened"],
        (IDLE + tenants.len() + 1) as u64,
        "the idle configs, the writers' and the provider's: {counts}"
    );
    eprintln!(
        "rotation with two nodes: {} reads right and {} sign-ins throughout, re-encryption of \
         {total} secrets by node {} in {reencrypted_in:?}; {:?} in all",
        reads.load(Ordering::SeqCst),
        sign_ins.len(),
        working[0],
        started.elapsed()
    );
}

/// What an installation holds, as the admin API shows it (ids, names, masked
/// secrets, timestamps), each domain's config read with its own token.
fn holdings(server: &Server, op: &str, tokens: &[(String, String)]) -> Value {
    let configs: Vec<Value> = tokens
        .iter()
        .map(|(name, t)| json!({ name.clone(): server.expect(200, "GET", CONFIG_PATH, t, None, None) }))
        .collect();
    // The audit trail moves too (the move's own events, if any, left out).
    let audit: Vec<Value> = audit_all(server, op, "")
        .into_iter()
        .filter(|e| {
            let a = e["action"].as_str().unwrap_or_default();
            !a.starts_with("backup") && !a.starts_with("storage")
        })
        .collect();
    json!({
        "audit": audit,
        "domains": server.expect(200, "GET", DOMAINS, op, None, None),
        "tokens": server.expect(200, "GET", TOKENS, op, None, None),
        "apps": server.expect(200, "GET", "/api/v1/admin/apps/", op, None, None),
        "configs": configs,
    })
}

/// A single appliance (sled) home using the key file `key` and `data_dir`.
fn sled_home(key: &str, data_dir: Option<&std::path::Path>) -> Home {
    let home = Home::new(None);
    if let Some(dir) = data_dir {
        home.write_config(&config_toml().replace(
            "data_dir = \"data\"",
            &format!("data_dir = \"{}\"", dir.display()),
        ));
    }
    write_key_file(&home, key);
    home
}

#[test]
fn sled_to_etcd_to_backup_to_sled_round_trips_every_record() {
    // The commands are the lead's (issue 14, part "moving between engines"):
    // `oidcvault storage load SRC_DATA_DIR` loads a sled data directory into the
    // empty etcd prefix of the config; `oidcvault backup DEST` from etcd writes
    // a sled data directory. Written against those names.
    let started = Instant::now();
    let etcd = EtcdCluster::start(3);
    let mut cluster = Nodes::homes(&etcd, 1, &NodeOptions::default());
    let key = cluster.key.clone();

    // 1. A single appliance with domains, configs, tokens and an application.
    let src = sled_home(&key, None);
    let op = src.run_ok(&["token", "create", "--operator"]);
    let mut server = src.start();
    let mut tokens = Vec::new();
    for i in 0..3 {
        let name = format!("move{i}.test");
        server.add_domain(&op, &name);
        let t = server.create_token(&op, &name);
        let v = Version::new("move", &name, 1);
        server.expect(200, "POST", CONFIG_PATH, &t, None, Some(&v.body()));
        tokens.push((name, t));
    }
    server.expect(
        201,
        "POST",
        "/api/v1/admin/apps/",
        &op,
        None,
        Some(&json!({"name": "Moved app", "redirect_uris": ["https://app.example/cb"]})),
    );
    let before = holdings(&server, &op, &tokens);
    server.stop();
    verify_ok(&src);

    // 2. Into etcd, served by a node.
    let node = &mut cluster.nodes[0];
    let src_data = src.data_dir();
    node.home
        .run_ok(&["storage", "load", src_data.to_str().unwrap()]);
    node.start();
    let in_etcd = holdings(node.server(), &op, &tokens);
    assert_eq!(
        in_etcd, before,
        "the etcd node holds otherwise than the sled appliance"
    );
    node.stop();
    verify_ok(&node.home);

    // 3. A backup from etcd: a sled data directory.
    let dest = node.home.path().join("from-etcd");
    node.home.run_ok(&["backup", dest.to_str().unwrap()]);

    // 4. Started as a single appliance again.
    let back = sled_home(&key, Some(&dest));
    let counts = verify_ok(&back);
    assert_eq!(counts["configs"], 3, "{counts}");
    let mut server = back.start();
    let after = holdings(&server, &op, &tokens);
    assert_eq!(after, before, "the backup from etcd holds otherwise");
    server.stop();
    eprintln!("sled -> etcd -> backup -> sled: {:?}", started.elapsed());
}
