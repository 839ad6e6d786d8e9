//! The etcd harness itself: three members come up healthy, `kill -9` of the
//! leader gets a new one elected among the others, the killed member restarts
//! on its data directory and the cluster is whole again.

use std::time::{Duration, Instant};

use crate::harness::etcd::EtcdCluster;

#[test]
fn a_killed_etcd_leader_is_replaced_and_comes_back() {
    let started = Instant::now();
    let mut etcd = EtcdCluster::start(3);
    assert_eq!(etcd.endpoints().len(), 3);
    let up = started.elapsed();
    let old = etcd.wait_leader(Duration::from_secs(10), |_| true);
    etcd.kill9(old);
    assert!(!etcd.is_running(old));
    let killed_at = Instant::now();
    let new = etcd.wait_leader(Duration::from_secs(10), |l| l != old);
    let elected_in = killed_at.elapsed();
    assert_ne!(new, old);
    etcd.wait_healthy(Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("the two members left: {e}\n{}", etcd.logs()));
    etcd.restart(old);
    etcd.assert_healthy();
    let leader = etcd.wait_leader(Duration::from_secs(10), |_| true);
    eprintln!(
        "etcd harness: 3 members healthy in {up:?}; leader m{old} killed, m{new} elected in \
         {elected_in:?}; m{old} back (leader m{leader}); {:?} in all ({})",
        started.elapsed(),
        etcd.path().display()
    );
}
