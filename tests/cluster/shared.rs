//! What one node does the other sees on its very next request (linearizable
//! reads, the default): a config written through A read through B, a domain
//! added through A listed by B, a token revoked through A refused by B (which
//! had accepted it just before); and concurrent create-or-update of one domain
//! through both nodes: every answer is one of the writes, the final state the
//! last acknowledged one, the same through both nodes.

use std::sync::{Arc, Barrier, Mutex};
use std::time::Instant;

use serde_json::{json, Value};

use crate::harness::cluster::{send, Nodes};
use crate::harness::etcd::EtcdCluster;
use crate::harness::ops::{seq_of, Version, DOMAINS, TOKENS};
use crate::harness::CONFIG_PATH;

#[test]
fn a_write_through_one_node_is_read_and_a_revocation_enforced_by_the_other() {
    let started = Instant::now();
    let etcd = EtcdCluster::start(3);
    let mut nodes = Nodes::start(&etcd, 2);
    let (a, b) = (nodes.server(0), nodes.server(1));
    let op = nodes.operator.clone();

    a.add_domain(&op, "shared.test");
    let listed = b.expect(200, "GET", DOMAINS, &op, None, None);
    assert!(
        listed
            .as_array()
            .is_some_and(|l| l.iter().any(|d| d["domain"] == "shared.test")),
        "node B does not list the domain node A added: {listed}"
    );
    let created = a.expect(
        201,
        "POST",
        TOKENS,
        &op,
        None,
        Some(&json!({"domain": "shared.test"})),
    );
    let token = created["token"].as_str().unwrap().to_owned();
    let token_id = created["id"].clone();

    for seq in 1..=3 {
        let v = Version::new("shared", "shared.test", seq);
        let wrote = a.expect(200, "POST", CONFIG_PATH, &token, None, Some(&v.body()));
        assert!(v.matches(&wrote), "node A answered {wrote} to {v:?}");
        // The very next request, on the other node.
        let read = b.expect(200, "GET", CONFIG_PATH, &token, None, None);
        assert_eq!(
            read, wrote,
            "node B reads otherwise than node A wrote (seq {seq})"
        );
    }
    // And the other way round.
    let v = Version::new("shared", "shared.test", 4);
    let wrote = b.expect(200, "POST", CONFIG_PATH, &token, None, Some(&v.body()));
    assert_eq!(a.expect(200, "GET", CONFIG_PATH, &token, None, None), wrote);

    // B has just accepted the token (whatever it may keep of that); A revokes it.
    b.expect(200, "GET", CONFIG_PATH, &token, None, None);
    let revoke = format!("{TOKENS}{token_id}/");
    a.expect(204, "DELETE", &revoke, &op, None, None);
    let r = b.call("GET", CONFIG_PATH, Some(&token), None, None);
    assert_eq!(
        r.status,
        401,
        "node B accepted a token node A had revoked: {r}\n{}",
        nodes.logs()
    );
    let r = a.call("GET", CONFIG_PATH, Some(&token), None, None);
    assert_eq!(r.status, 401, "node A: {r}");
    // Domain removal through B: A sees no config and no domain.
    let id = listed.as_array().unwrap()[0]["id"].clone();
    b.expect(204, "DELETE", &format!("{DOMAINS}{id}/"), &op, None, None);
    let listed = a.expect(200, "GET", DOMAINS, &op, None, None);
    assert_eq!(listed, json!([]), "node A still lists a removed domain");
    let r = a.call("GET", CONFIG_PATH, Some(&op), Some("shared.test"), None);
    assert_eq!(r.status, 404, "{r}");
    nodes.stop_all();
    eprintln!("shared reads and revocation: {:?}", started.elapsed());
}

const UPSERT_WRITERS: usize = 8;
const UPSERT_ROUNDS: u32 = 6;

#[test]
fn concurrent_create_or_update_of_one_domain_through_both_nodes() {
    let started = Instant::now();
    let etcd = EtcdCluster::start(3);
    let mut nodes = Nodes::start(&etcd, 2);
    let op = nodes.operator.clone();
    nodes.server(0).add_domain(&op, "race.test");
    let token = nodes.server(0).create_token(&op, "race.test");
    let clients = super::clients(&nodes);

    // Each write is unique: writer w sends seq w * 1000 + round.
    #[derive(Debug, Clone)]
    struct Answered {
        seq: u32,
        sent_at: Instant,
        acked_at: Instant,
        /// The config's `id` and `created_at` as this answer has them.
        identity: (Value, Value),
    }
    let acks: Arc<Mutex<Vec<Answered>>> = Arc::default();
    let errors: Arc<Mutex<Vec<String>>> = Arc::default();
    let unavailable: Arc<Mutex<Vec<u32>>> = Arc::default();
    let barrier = Arc::new(Barrier::new(UPSERT_WRITERS));
    std::thread::scope(|s| {
        for w in 0..UPSERT_WRITERS {
            let client = clients[w % clients.len()].clone();
            let (acks, errors, unavailable, barrier) = (&acks, &errors, &unavailable, &barrier);
            let token = token.as_str();
            s.spawn(move || {
                barrier.wait();
                for round in 1..=UPSERT_ROUNDS {
                    let seq = (w as u32 + 1) * 1000 + round;
                    let v = Version::new("race", "race.test", seq);
                    let sent_at = Instant::now();
                    match send(
                        &client,
                        "POST",
                        CONFIG_PATH,
                        Some(token),
                        None,
                        Some(&v.body()),
                    ) {
                        Ok(r) if r.status == 200 => {
                            let got = r.json();
                            if v.matches(&got) {
                                acks.lock().unwrap().push(Answered {
                                    seq,
                                    sent_at,
                                    acked_at: Instant::now(),
                                    identity: (got["id"].clone(), got["created_at"].clone()),
                                });
                            } else {
                                errors
                                    .lock()
                                    .unwrap()
                                    .push(format!("wrote seq {seq}, answered {got}"));
                            }
                        }
                        Ok(r) if r.is_unavailable() => unavailable.lock().unwrap().push(seq),
                        Ok(r) => errors.lock().unwrap().push(format!("wrote seq {seq}: {r}")),
                        Err(e) => errors.lock().unwrap().push(e),
                    }
                }
            });
        }
    });
    let errors = errors.lock().unwrap().clone();
    assert!(errors.is_empty(), "{}\n{}", errors.join("\n"), nodes.logs());
    let acks = acks.lock().unwrap().clone();
    let unavailable = unavailable.lock().unwrap().clone();
    assert!(
        acks.len() >= UPSERT_WRITERS,
        "only {} of {} writes acknowledged (503: {unavailable:?})",
        acks.len(),
        UPSERT_WRITERS * UPSERT_ROUNDS as usize
    );

    let finals: Vec<Value> = (0..2)
        .map(|i| {
            nodes
                .server(i)
                .expect(200, "GET", CONFIG_PATH, &token, None, None)
        })
        .collect();
    assert_eq!(finals[0], finals[1], "the two nodes read different configs");
    let seq = seq_of(&finals[0]).unwrap_or_else(|| panic!("stored {}", finals[0]));
    assert!(
        Version::new("race", "race.test", seq).matches(&finals[0]),
        "the stored config is no single write: {}",
        finals[0]
    );
    let last = acks
        .iter()
        .find(|a| a.seq == seq)
        .unwrap_or_else(|| {
            panic!(
                "the final state (seq {seq}) is no acknowledged write (503: {unavailable:?}); \
                 acknowledged: {:?}",
                acks.iter().map(|a| a.seq).collect::<Vec<_>>()
            )
        })
        .clone();
    // Linearizable: no write sent after the final one was acknowledged may
    // itself have been acknowledged (it would come later in the order).
    let later: Vec<u32> = acks
        .iter()
        .filter(|a| a.sent_at > last.acked_at)
        .map(|a| a.seq)
        .collect();
    assert!(
        later.is_empty(),
        "the final state is seq {seq}, but writes sent after its acknowledgement were \
         acknowledged too: {later:?}"
    );
    // One config: created once, every other write an update of it.
    let identity = (finals[0]["id"].clone(), finals[0]["created_at"].clone());
    let others: Vec<&Answered> = acks.iter().filter(|a| a.identity != identity).collect();
    assert!(
        others.is_empty(),
        "answers name another config than the stored {identity:?} (two creates?): {others:?}"
    );
    nodes.stop_all();
    eprintln!(
        "concurrent create-or-update: {} acknowledged, {} answered 503, final seq {seq}, {:?}",
        acks.len(),
        unavailable.len(),
        started.elapsed()
    );
}
