//! Faults under load, with client-side ledgers (`super::Writers`): `kill -9` of
//! the etcd leader under 64 writers across both nodes, two of three members
//! down, `kill -9` of one oidcvault node. In each: no acknowledged write lost,
//! nothing but 200 or 503 with `Retry-After` (never a 500), and service back by
//! itself once etcd is.

use std::time::{Duration, Instant};

use crate::harness::cluster::{send, Nodes};
use crate::harness::etcd::EtcdCluster;
use crate::harness::ops::{Tenant, Version};
use crate::harness::CONFIG_PATH;

use super::{assert_ledgers_hold, clients, tenants_across, Writers, RECOVER_TIMEOUT};

const LEADER_KILL_WRITERS: usize = 64;

#[test]
fn kill_9_of_the_etcd_leader_under_64_writers_loses_no_acknowledged_write() {
    let started = Instant::now();
    let mut etcd = EtcdCluster::start(3);
    let mut nodes = Nodes::start(&etcd, 2);
    let tenants = tenants_across(&nodes, "leader", LEADER_KILL_WRITERS);
    let clients = clients(&nodes);
    let setup = started.elapsed();
    let writers = Writers::start(&clients, &tenants, "leader");
    writers.wait_until(
        &nodes,
        "2 acknowledged writes per domain",
        |_| true,
        |l| l.acks.len() >= 2,
    );
    let leader = etcd.wait_leader(Duration::from_secs(10), |_| true);
    etcd.kill9(leader);
    let killed_at = Instant::now();
    let before = writers.unavailable();
    // Writes resume by themselves: every writer gets 3 more acknowledgements.
    let resumed_in = writers.wait_until(
        &nodes,
        "3 acknowledged writes per domain after the leader's kill",
        |_| true,
        |l| l.acks_after(killed_at) >= 3,
    );
    let new_leader = etcd.wait_leader(Duration::from_secs(10), |l| l != leader);
    let ledgers = writers.finish(&nodes);
    let unavailable: usize = ledgers.iter().map(|l| l.unavailable.len()).sum();
    // Back to three members, then every domain read through the other node.
    etcd.restart(leader);
    etcd.assert_healthy();
    for (i, reader) in clients.iter().enumerate() {
        let mine: Vec<usize> = (0..tenants.len()).filter(|t| tenants[*t].1 != i).collect();
        let (t, l): (Vec<(Tenant, usize)>, Vec<super::Ledger>) = mine
            .iter()
            .map(|t| (tenants[*t].clone(), ledgers[*t].clone()))
            .unzip();
        assert_ledgers_hold("after the leader's kill", &nodes, reader, "leader", &t, &l);
    }
    let acks: usize = ledgers.iter().map(|l| l.acks.len()).sum();
    nodes.stop_all();
    eprintln!(
        "etcd leader m{leader} killed under {LEADER_KILL_WRITERS} writers: {acks} writes \
         acknowledged, {unavailable} answered 503 ({before} before the kill), every writer \
         3 acknowledgements further {resumed_in:?} after the kill, new leader m{new_leader}; \
         setup {setup:?}, {:?} in all",
        started.elapsed()
    );
}

#[test]
fn two_of_three_members_down_gives_503_and_full_service_when_quorum_returns() {
    let started = Instant::now();
    let mut etcd = EtcdCluster::start(3);
    let mut nodes = Nodes::start(&etcd, 2);
    let tenants = tenants_across(&nodes, "quorum", 4);
    let clients = clients(&nodes);
    let writers = Writers::start(&clients, &tenants, "quorum");
    writers.wait_until(
        &nodes,
        "2 acknowledged writes per domain",
        |_| true,
        |l| l.acks.len() >= 2,
    );
    // Two members down: whichever the leader is, no quorum is left.
    etcd.kill9(0);
    etcd.kill9(1);
    let lost_at = Instant::now();
    // Writes get 503 with Retry-After (the writers fail on anything else).
    writers.wait_until(
        &nodes,
        "a 503 for every domain",
        |_| true,
        |l| l.unavailable.iter().any(|(_, at)| *at > lost_at),
    );
    for (i, c) in clients.iter().enumerate() {
        crate::harness::poll::until(
            &format!("node {i}'s /readyz to say not ready"),
            RECOVER_TIMEOUT,
            Duration::from_millis(100),
            || match send(c, "GET", "/readyz", None, None, None) {
                Ok(r) if r.status == 503 => Ok(()),
                Ok(r) => Err(r.to_string()),
                Err(e) => Err(e),
            },
        );
        // A write of a new domain: 503 with Retry-After, never a 500.
        let r = send(
            c,
            "POST",
            crate::harness::ops::DOMAINS,
            Some(&nodes.operator),
            None,
            Some(&serde_json::json!({"domain": format!("noquorum{i}.test")})),
        )
        .unwrap_or_else(|e| panic!("{e}\n{}", nodes.logs()));
        assert!(
            r.is_unavailable(),
            "node {i}: a write without quorum answered {r}"
        );
        // A read (linearizable by default) is either right or 503.
        let (t, _) = &tenants[0];
        let r = send(c, "GET", CONFIG_PATH, Some(&t.token), None, None).unwrap();
        assert!(
            r.status == 200 || r.is_unavailable(),
            "node {i}: a read without quorum answered {r}"
        );
    }
    let down_for = lost_at.elapsed();
    etcd.restart(0);
    etcd.restart(1);
    let back_at = Instant::now();
    etcd.assert_healthy();
    let resumed_in = writers.wait_until(
        &nodes,
        "3 acknowledged writes per domain after quorum returned",
        |_| true,
        |l| l.acks_after(back_at) >= 3,
    );
    for (i, c) in clients.iter().enumerate() {
        crate::harness::poll::until(
            &format!("node {i}'s /readyz to say ready"),
            RECOVER_TIMEOUT,
            Duration::from_millis(100),
            || match send(c, "GET", "/readyz", None, None, None) {
                Ok(r) if r.status == 200 => Ok(()),
                Ok(r) => Err(r.to_string()),
                Err(e) => Err(e),
            },
        );
    }
    let ledgers = writers.finish(&nodes);
    let unavailable: usize = ledgers.iter().map(|l| l.unavailable.len()).sum();
    for reader in &clients {
        assert_ledgers_hold(
            "after quorum returned",
            &nodes,
            reader,
            "quorum",
            &tenants,
            &ledgers,
        );
    }
    // Nothing corrupted: every record and secret opens, the audit chain is whole.
    nodes.stop_all();
    let counts = crate::harness::ops::verify_ok(&nodes.nodes[0].home);
    assert_eq!(counts["configs"], tenants.len() as u64, "{counts}");
    eprintln!(
        "two of three etcd members down {down_for:?}: {unavailable} writes answered 503; \
         writes resumed {resumed_in:?} after the members returned; {:?} in all",
        started.elapsed()
    );
}

const NODE_KILL_WRITERS: usize = 16;

#[test]
fn kill_9_of_one_node_mid_load_the_other_keeps_serving() {
    let started = Instant::now();
    let etcd = EtcdCluster::start(3);
    let mut nodes = Nodes::start(&etcd, 2);
    let tenants = tenants_across(&nodes, "nodekill", NODE_KILL_WRITERS);
    let clients = clients(&nodes);
    let writers = Writers::start(&clients, &tenants, "nodekill");
    writers.wait_until(
        &nodes,
        "2 acknowledged writes per domain",
        |_| true,
        |l| l.acks.len() >= 2,
    );
    writers.killing(0);
    nodes.nodes[0].kill9();
    let killed_at = Instant::now();
    // Node 1's writers go on, without a single 503 or error.
    let on_b = |i: usize| tenants[i].1 == 1;
    writers.wait_until(
        &nodes,
        "5 acknowledged writes per domain of node 1",
        on_b,
        |l| l.acks_after(killed_at) >= 5,
    );
    let ledgers = writers.finish(&nodes);
    for (i, l) in ledgers.iter().enumerate() {
        let failed_after: Vec<u32> = l
            .unavailable
            .iter()
            .filter(|(_, at)| *at > killed_at)
            .map(|(s, _)| *s)
            .collect();
        assert!(
            !on_b(i) || (failed_after.is_empty() && l.unanswered.is_none()),
            "{}: node 1 failed writes {failed_after:?} after node 0 was killed: {l:?}\n{}",
            tenants[i].0.name,
            nodes.logs()
        );
    }
    // Every domain, those written through the killed node too, read through node 1.
    assert_ledgers_hold(
        "after node 0's kill",
        &nodes,
        &clients[1],
        "nodekill",
        &tenants,
        &ledgers,
    );
    // A domain whose writer was cut can be written through node 1.
    let (t, _) = tenants.iter().find(|(_, n)| *n == 0).unwrap();
    let v = Version::new("nodekill", &t.name, 9999);
    let got = nodes
        .server(1)
        .expect(200, "POST", CONFIG_PATH, &t.token, None, Some(&v.body()));
    assert!(v.matches(&got), "{got}");
    // The killed node comes back and reads it.
    nodes.nodes[0].start();
    assert_eq!(
        nodes
            .server(0)
            .expect(200, "GET", CONFIG_PATH, &t.token, None, None),
        got
    );
    let cut = ledgers.iter().filter(|l| l.unanswered.is_some()).count();
    nodes.stop_all();
    eprintln!(
        "node 0 killed under {NODE_KILL_WRITERS} writers: {cut} writes cut; node 1's writers \
         went on; {:?} in all",
        started.elapsed()
    );
}
