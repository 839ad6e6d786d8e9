//! Two oidcvault nodes on a real three-member etcd cluster on loopback
//! (`harness::etcd`, `harness::cluster`): every test starts its own cluster
//! (free ports, its own prefix), so they run in parallel.
//!
//! - `etcd_harness`: the harness itself (a leader killed, a new one elected,
//!   the member back);
//! - `shared`: what one node writes or revokes the other sees on the very next
//!   request; concurrent create-or-update of one domain through both nodes;
//! - `faults`: `kill -9` of the etcd leader under 64 writers, two of three
//!   members down, `kill -9` of a node under load (client-side ledgers: no
//!   acknowledged write lost, only 503 with `Retry-After` in between);
//! - `duties`: key rotation with both nodes running (exactly one re-encrypts),
//!   and the move sled -> etcd -> backup -> sled;
//! - `signin`: a sign-in started on one node finishes on the other.
//!
//! The writers here keep the ledger of the crash tests (`harness::ops`'s
//! `Version`: every write derived from its sequence number), with what an etcd
//! outage adds: a 503 write may or may not have committed (etcd's own rule for
//! a request that timed out), so after it the stored value may be that write or
//! a later one, never one older than the last acknowledged.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::harness::cluster::{send, Nodes};
use crate::harness::ops::{seq_of, Tenant, Version};
use crate::harness::{Client, CONFIG_PATH};

mod duties;
mod etcd_harness;
mod faults;
mod shared;
mod signin;

/// Bound of every wait for the cluster to recover or the writers to progress.
const RECOVER_TIMEOUT: Duration = Duration::from_secs(30);

/// What one domain's writer did.
#[derive(Debug, Default, Clone)]
struct Ledger {
    /// The last sequence number sent.
    sent: u32,
    /// Each acknowledged write (200 with the write's own values) and when.
    acks: Vec<(u32, Instant)>,
    /// Writes answered 503: each may or may not have committed.
    unavailable: Vec<(u32, Instant)>,
    /// A write that got no answer (its node was killed).
    unanswered: Option<u32>,
}

impl Ledger {
    fn last_ack(&self) -> Option<u32> {
        self.acks.last().map(|a| a.0)
    }

    fn acks_after(&self, t: Instant) -> usize {
        self.acks.iter().filter(|(_, at)| *at > t).count()
    }
}

/// One writer thread per domain, each writing its domain's config in sequence
/// through one node; 503s (with `Retry-After`) are recorded and the writer goes
/// on after a short pause; anything else unexpected ends the writer with an error.
struct Writers {
    stop: Arc<AtomicBool>,
    /// Per node: set just before it is killed (no answer is then expected).
    killing: Arc<Vec<AtomicBool>>,
    ledgers: Arc<Mutex<Vec<Ledger>>>,
    errors: Arc<Mutex<Vec<String>>>,
    unavailable: Arc<AtomicUsize>,
    threads: Vec<JoinHandle<()>>,
}

impl Writers {
    /// `tenants[i]` written through `clients[tenants[i].1]`.
    fn start(clients: &[Client], tenants: &[(Tenant, usize)], tag: &str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let killing: Arc<Vec<AtomicBool>> =
            Arc::new((0..clients.len()).map(|_| AtomicBool::new(false)).collect());
        let ledgers = Arc::new(Mutex::new(vec![Ledger::default(); tenants.len()]));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let unavailable = Arc::new(AtomicUsize::new(0));
        let threads = tenants
            .iter()
            .cloned()
            .enumerate()
            .map(|(i, (tenant, node))| {
                let client = clients[node].clone();
                let (stop, killing, ledgers, errors, unavailable) = (
                    stop.clone(),
                    Arc::clone(&killing),
                    ledgers.clone(),
                    errors.clone(),
                    unavailable.clone(),
                );
                let tag = tag.to_owned();
                std::thread::spawn(move || {
                    while !stop.load(Ordering::SeqCst) {
                        let seq = {
                            let mut l = ledgers.lock().unwrap();
                            l[i].sent += 1;
                            l[i].sent
                        };
                        let v = Version::new(&tag, &tenant.name, seq);
                        let r = send(
                            &client,
                            "POST",
                            CONFIG_PATH,
                            Some(&tenant.token),
                            None,
                            Some(&v.body()),
                        );
                        let at = Instant::now();
                        match r {
                            Ok(r) if r.status == 200 && v.matches(&r.json()) => {
                                ledgers.lock().unwrap()[i].acks.push((seq, at));
                            }
                            Ok(r) if r.is_unavailable() => {
                                unavailable.fetch_add(1, Ordering::SeqCst);
                                ledgers.lock().unwrap()[i].unavailable.push((seq, at));
                                std::thread::sleep(Duration::from_millis(100));
                            }
                            Ok(r) => {
                                errors.lock().unwrap().push(format!(
                                    "{} via node {node}: wrote seq {seq}, answer {r}",
                                    tenant.name
                                ));
                                return;
                            }
                            Err(_) if killing[node].load(Ordering::SeqCst) => {
                                ledgers.lock().unwrap()[i].unanswered = Some(seq);
                                return;
                            }
                            Err(e) => {
                                errors
                                    .lock()
                                    .unwrap()
                                    .push(format!("{} via node {node}: {e}", tenant.name));
                                return;
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
            unavailable,
            threads,
        }
    }

    fn snapshot(&self) -> Vec<Ledger> {
        self.ledgers.lock().unwrap().clone()
    }

    fn unavailable(&self) -> usize {
        self.unavailable.load(Ordering::SeqCst)
    }

    /// Say node `i` is about to be killed: its writers' missing answers are expected.
    fn killing(&self, node: usize) {
        self.killing[node].store(true, Ordering::SeqCst);
    }

    fn assert_no_errors(&self, nodes: &Nodes, when: &str) {
        let errors = self.errors.lock().unwrap().clone();
        assert!(
            errors.is_empty(),
            "writers failed {when} ({} errors):\n{}\n{}",
            errors.len(),
            errors
                .iter()
                .take(20)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n"),
            nodes.logs()
        );
    }

    /// Wait (bounded) until `done` holds for the ledgers of the writers for
    /// which `mine` holds (by tenant index); panics on a writer's error.
    fn wait_until(
        &self,
        nodes: &Nodes,
        what: &str,
        mine: impl Fn(usize) -> bool,
        done: impl Fn(&Ledger) -> bool,
    ) -> Duration {
        let started = Instant::now();
        loop {
            self.assert_no_errors(nodes, &format!("while waiting for {what}"));
            let ledgers = self.snapshot();
            if ledgers
                .iter()
                .enumerate()
                .filter(|(i, _)| mine(*i))
                .all(|(_, l)| done(l))
            {
                return started.elapsed();
            }
            if started.elapsed() > RECOVER_TIMEOUT {
                let acks: Vec<usize> = ledgers.iter().map(|l| l.acks.len()).collect();
                panic!(
                    "writers: no {what} within {RECOVER_TIMEOUT:?} (acks per domain {acks:?}, \
                     {} answers 503)\n{}",
                    self.unavailable(),
                    nodes.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stop and join every writer; their ledgers.
    fn finish(self, nodes: &Nodes) -> Vec<Ledger> {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            t.join().expect("a writer thread panicked");
        }
        let errors = self.errors.lock().unwrap().clone();
        assert!(
            errors.is_empty(),
            "writers failed:\n{}\n{}",
            errors.join("\n"),
            nodes.logs()
        );
        let ledgers = self.ledgers.lock().unwrap().clone();
        ledgers
    }
}

/// Every domain's stored config, read through `reader` (503s retried within
/// [`RECOVER_TIMEOUT`]), is its last acknowledged write or a later one sent
/// (a 503'd or unanswered write may have committed), never an older one.
fn assert_ledgers_hold(
    what: &str,
    nodes: &Nodes,
    reader: &Client,
    tag: &str,
    tenants: &[(Tenant, usize)],
    ledgers: &[Ledger],
) {
    for ((t, node), l) in tenants.iter().zip(ledgers) {
        let started = Instant::now();
        let got = loop {
            let r = send(reader, "GET", CONFIG_PATH, Some(&t.token), None, None)
                .unwrap_or_else(|e| panic!("{what}: {e}\n{}", nodes.logs()));
            if r.status == 200 {
                break r.json();
            }
            assert!(
                r.is_unavailable() && started.elapsed() < RECOVER_TIMEOUT,
                "{what}: GET {} through {}: {r}\n{}",
                t.name,
                reader.base,
                nodes.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        let seq = seq_of(&got).unwrap_or_else(|| panic!("{what}: {}: stored {got}", t.name));
        let floor = l.last_ack().unwrap_or(0);
        assert!(
            seq >= floor && seq <= l.sent,
            "{what}: {} (written through node {node}) holds seq {seq}; last acknowledged {floor}, \
             last sent {}: an acknowledged write was lost\nledger: acks {:?}, 503 {:?}, \
             unanswered {:?}\n{}",
            t.name,
            l.sent,
            l.acks.iter().map(|a| a.0).collect::<Vec<_>>(),
            l.unavailable.iter().map(|a| a.0).collect::<Vec<_>>(),
            l.unanswered,
            nodes.logs()
        );
        let want = Version::new(tag, &t.name, seq);
        assert!(
            want.matches(&got),
            "{what}: {} holds a mix of writes: seq {seq} is {want:?}, stored {got}",
            t.name
        );
    }
}

/// `n` domains `<prefix><i>.test` with a token each, made through node 0, the
/// writers of domain `i` going through node `i % nodes`.
fn tenants_across(nodes: &Nodes, prefix: &str, n: usize) -> Vec<(Tenant, usize)> {
    let count = nodes.nodes.len();
    crate::harness::ops::add_tenants(nodes.server(0), &nodes.operator, prefix, n)
        .into_iter()
        .enumerate()
        .map(|(i, t)| (t, i % count))
        .collect()
}

/// A short-timeout client per node (by the node's fixed address).
fn clients(nodes: &Nodes) -> Vec<Client> {
    nodes
        .nodes
        .iter()
        .map(|n| crate::harness::cluster::short_client(&n.base()))
        .collect()
}
