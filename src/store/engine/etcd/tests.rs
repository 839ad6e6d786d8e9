//! The etcd engine against a real etcd (see [`super::testing`]): each test
//! starts its own single-member etcd.

use std::collections::BTreeSet;
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use super::testing::TestEtcd;
use crate::store::engine::{all, Engine, EngineError, Op, Tree, TxFailed, TxStop};

macro_rules! etcd_or_skip {
    ($name:expr) => {
        match TestEtcd::start($name) {
            Some(e) => e,
            None => return,
        }
    };
}

fn put(engine: &dyn Engine, tree: Tree, key: &[u8], value: &[u8]) {
    engine
        .transaction(&[tree], &|tx| tx.insert(tree, key, value))
        .unwrap();
}

fn keys(entries: &[(Vec<u8>, Vec<u8>)]) -> Vec<String> {
    entries
        .iter()
        .map(|(k, _)| String::from_utf8_lossy(k).into_owned())
        .collect()
}

#[test]
fn get_insert_remove_scan_paging_and_reverse() {
    let etcd = etcd_or_skip!("get_insert_remove_scan_paging_and_reverse");
    let e = etcd.engine("/t/");
    assert_eq!(e.kind(), "etcd");
    assert!(e.shared());
    assert!(e.group_commit().is_none());
    assert_eq!(e.get(Tree::Audit, b"a").unwrap(), None);
    for i in 0..25u32 {
        put(
            &e,
            Tree::Audit,
            format!("k{i:02}").as_bytes(),
            &i.to_be_bytes(),
        );
    }
    // Another tree's keys stay out of this tree's scans and counts.
    put(&e, Tree::Meta, b"k00", b"meta");
    assert_eq!(
        e.get(Tree::Audit, b"k07").unwrap(),
        Some(7u32.to_be_bytes().to_vec())
    );
    assert_eq!(e.len(Tree::Audit).unwrap(), 25);
    assert_eq!(e.len(Tree::Meta).unwrap(), 1);

    // Forward paging: pages of 10 starting after the last key.
    let mut seen = Vec::new();
    let mut range = all();
    loop {
        let page = e.scan(Tree::Audit, range.clone(), 10, false).unwrap();
        assert!(page.len() <= 10);
        let Some((last, _)) = page.last().cloned() else {
            break;
        };
        seen.extend(keys(&page));
        range = (Bound::Excluded(last), Bound::Unbounded);
    }
    let want: Vec<String> = (0..25).map(|i| format!("k{i:02}")).collect();
    assert_eq!(seen, want);

    // Reverse paging.
    let mut seen = Vec::new();
    let mut range = all();
    loop {
        let page = e.scan(Tree::Audit, range.clone(), 7, true).unwrap();
        let Some((last, _)) = page.last().cloned() else {
            break;
        };
        seen.extend(keys(&page));
        range = (Bound::Unbounded, Bound::Excluded(last));
    }
    let mut rev = want.clone();
    rev.reverse();
    assert_eq!(seen, rev);

    // Bounds.
    let r = (
        Bound::Included(b"k05".to_vec()),
        Bound::Included(b"k08".to_vec()),
    );
    assert_eq!(
        keys(&e.scan(Tree::Audit, r.clone(), 100, false).unwrap()),
        want[5..9]
    );
    let r2 = (
        Bound::Excluded(b"k05".to_vec()),
        Bound::Excluded(b"k08".to_vec()),
    );
    assert_eq!(
        keys(&e.scan(Tree::Audit, r2, 100, false).unwrap()),
        want[6..8]
    );
    assert_eq!(
        keys(&e.scan(Tree::Audit, r, 2, true).unwrap()),
        vec!["k08".to_string(), "k07".to_string()]
    );
    assert!(e.scan(Tree::Audit, all(), 0, false).unwrap().is_empty());

    // Remove in a transaction returns the old value; write() puts and deletes in order.
    let old = std::sync::Mutex::new(None);
    e.transaction(&[Tree::Audit], &|tx| {
        *old.lock().unwrap() = tx.remove(Tree::Audit, b"k03")?;
        Ok(())
    })
    .unwrap();
    assert_eq!(old.into_inner().unwrap(), Some(3u32.to_be_bytes().to_vec()));
    assert_eq!(e.get(Tree::Audit, b"k03").unwrap(), None);
    let ops = vec![
        Op {
            tree: Tree::Tokens,
            key: b"x".to_vec(),
            value: Some(b"1".to_vec()),
        },
        Op {
            tree: Tree::Tokens,
            key: b"x".to_vec(),
            value: Some(b"2".to_vec()),
        },
        Op {
            tree: Tree::Tokens,
            key: b"y".to_vec(),
            value: Some(b"3".to_vec()),
        },
        Op {
            tree: Tree::Tokens,
            key: b"y".to_vec(),
            value: None,
        },
    ];
    e.write(&ops).unwrap();
    assert_eq!(e.get(Tree::Tokens, b"x").unwrap(), Some(b"2".to_vec()));
    assert_eq!(e.get(Tree::Tokens, b"y").unwrap(), None);
    // More ops than one Txn carries.
    let many: Vec<Op> = (0..300u32)
        .map(|i| Op {
            tree: Tree::Tokens,
            key: i.to_be_bytes().to_vec(),
            value: Some(vec![1]),
        })
        .collect();
    e.write(&many).unwrap();
    assert_eq!(e.len(Tree::Tokens).unwrap(), 301);
    e.ready().unwrap();
}

#[test]
fn transaction_reads_its_own_writes_and_abort_leaves_nothing() {
    let etcd = etcd_or_skip!("transaction_reads_its_own_writes_and_abort_leaves_nothing");
    let e = etcd.engine("/t/");
    put(&e, Tree::Configs, b"c", b"old");
    e.transaction(&[Tree::Configs, Tree::Meta], &|tx| {
        assert_eq!(tx.get(Tree::Configs, b"c")?, Some(b"old".to_vec()));
        tx.insert(Tree::Configs, b"c", b"new")?;
        assert_eq!(tx.get(Tree::Configs, b"c")?, Some(b"new".to_vec()));
        tx.insert(Tree::Meta, b"m", b"1")?;
        assert_eq!(tx.remove(Tree::Meta, b"m")?, Some(b"1".to_vec()));
        assert_eq!(tx.get(Tree::Meta, b"m")?, None);
        Ok(())
    })
    .unwrap();
    assert_eq!(e.get(Tree::Configs, b"c").unwrap(), Some(b"new".to_vec()));
    assert_eq!(e.get(Tree::Meta, b"m").unwrap(), None);

    let r = e.transaction(&[Tree::Configs, Tree::Meta], &|tx| {
        tx.insert(Tree::Configs, b"c", b"aborted")?;
        tx.insert(Tree::Meta, b"n", b"aborted")?;
        Err(TxStop::Abort)
    });
    assert!(matches!(r, Err(TxFailed::Aborted)), "{r:?}");
    assert_eq!(e.get(Tree::Configs, b"c").unwrap(), Some(b"new".to_vec()));
    assert_eq!(e.get(Tree::Meta, b"n").unwrap(), None);

    // A tree the transaction did not declare is refused (as on sled).
    let r = e.transaction(&[Tree::Meta], &|tx| tx.insert(Tree::Apps, b"a", b"1"));
    assert!(
        matches!(r, Err(TxFailed::Engine(EngineError::Other(_)))),
        "{r:?}"
    );
    assert_eq!(e.len(Tree::Apps).unwrap(), 0);
}

#[test]
fn conflicting_increments_are_retried_and_none_is_lost() {
    let etcd = etcd_or_skip!("conflicting_increments_are_retried_and_none_is_lost");
    let e = Arc::new(etcd.engine("/t/"));
    let runs = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let (e, runs) = (e.clone(), runs.clone());
            std::thread::spawn(move || {
                for _ in 0..200 {
                    e.transaction(&[Tree::Meta], &|tx| {
                        runs.fetch_add(1, Ordering::Relaxed);
                        let n = tx
                            .get(Tree::Meta, b"counter")?
                            .map_or(0, |v| u64::from_be_bytes(v.try_into().unwrap()));
                        tx.insert(Tree::Meta, b"counter", &(n + 1).to_be_bytes())
                    })
                    .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let n = u64::from_be_bytes(
        e.get(Tree::Meta, b"counter")
            .unwrap()
            .unwrap()
            .try_into()
            .unwrap(),
    );
    assert_eq!(n, 400);
    eprintln!(
        "400 increments by 2 threads: {} body runs",
        runs.load(Ordering::Relaxed)
    );
}

#[test]
fn take_has_exactly_one_winner_among_16_threads() {
    let etcd = etcd_or_skip!("take_has_exactly_one_winner_among_16_threads");
    let e = Arc::new(etcd.engine("/t/"));
    for round in 0..5u8 {
        put(&*e, Tree::SsoCodes, b"code", &[round]);
        let barrier = Arc::new(Barrier::new(16));
        let threads: Vec<_> = (0..16)
            .map(|_| {
                let (e, barrier) = (e.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    e.take(Tree::SsoCodes, b"code").unwrap()
                })
            })
            .collect();
        let got: Vec<Vec<u8>> = threads
            .into_iter()
            .filter_map(|t| t.join().unwrap())
            .collect();
        assert_eq!(got, vec![vec![round]], "round {round}");
        assert_eq!(e.get(Tree::SsoCodes, b"code").unwrap(), None);
    }
}

#[test]
fn name_trees_keep_only_digests_in_etcd() {
    let etcd = etcd_or_skip!("name_trees_keep_only_digests_in_etcd");
    let e = etcd.engine("/t/");
    let names: [(Tree, &[u8]); 2] = [
        (Tree::DomainNames, b"corp.example.com"),
        (Tree::AppClientIds, b"client-id-of-the-app"),
    ];
    for (tree, name) in names {
        put(&e, tree, name, b"id-1");
        assert_eq!(e.get(tree, name).unwrap(), Some(b"id-1".to_vec()));
    }
    put(&e, Tree::Domains, b"id-1", b"record");
    // Read every raw key with a client of our own.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let raw: Vec<String> = rt.block_on(async {
        let mut c = etcd_client::Client::connect([etcd.url()], None)
            .await
            .unwrap();
        let r = c
            .get(
                "/t/",
                Some(
                    etcd_client::GetOptions::new()
                        .with_prefix()
                        .with_keys_only(),
                ),
            )
            .await
            .unwrap();
        r.kvs()
            .iter()
            .map(|kv| String::from_utf8_lossy(kv.key()).into_owned())
            .collect()
    });
    assert_eq!(raw.len(), 3, "{raw:?}");
    assert!(raw.contains(&"/t/domains/id-1".to_string()), "{raw:?}");
    for k in &raw {
        assert!(
            !k.contains("example") && !k.contains("client-id"),
            "plaintext name in {k}"
        );
    }
    let digest = raw
        .iter()
        .find(|k| k.starts_with("/t/domain_names/"))
        .unwrap();
    assert_eq!(digest.len(), "/t/domain_names/".len() + 64, "{digest}");
}

#[test]
fn dump_is_one_point_in_time() {
    let etcd = etcd_or_skip!("dump_is_one_point_in_time");
    let e = Arc::new(etcd.engine("/t/"));
    // 1200 tokens, each either in `tokens` or in `apps`; a writer keeps
    // moving them across in transactions. Any dump must hold each exactly once.
    const N: u32 = 1200;
    let ops: Vec<Op> = (0..N)
        .map(|i| Op {
            tree: Tree::Tokens,
            key: format!("{i:05}").into_bytes(),
            value: Some(vec![7; 32]),
        })
        .collect();
    e.write(&ops).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (e, stop) = (e.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut i = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("{:05}", (i * 7919) % N).into_bytes();
                e.transaction(&[Tree::Tokens, Tree::Apps], &|tx| {
                    if let Some(v) = tx.remove(Tree::Tokens, &key)? {
                        tx.insert(Tree::Apps, &key, &v)
                    } else {
                        let v = tx.remove(Tree::Apps, &key)?.unwrap_or_default();
                        tx.insert(Tree::Tokens, &key, &v)
                    }
                })
                .unwrap();
                i += 1;
            }
            i
        })
    };
    for _ in 0..5 {
        let dump = e.dump(&[Tree::Tokens, Tree::Apps]).unwrap();
        assert_eq!(dump.len(), 2);
        let mut seen = BTreeSet::new();
        for (_, entries) in &dump {
            for (k, _) in entries {
                assert!(
                    seen.insert(k.clone()),
                    "{} twice",
                    String::from_utf8_lossy(k)
                );
            }
        }
        assert_eq!(seen.len(), N as usize, "a dump saw {} tokens", seen.len());
    }
    stop.store(true, Ordering::Relaxed);
    let moves = writer.join().unwrap();
    assert!(moves > 0);
    eprintln!("5 dumps of {N} entries during {moves} moves");
}

#[test]
fn a_duty_is_exclusive_and_moves_when_released_or_expired() {
    let etcd = etcd_or_skip!("a_duty_is_exclusive_and_moves_when_released_or_expired");
    let a = etcd.engine("/t/");
    let b = etcd.engine("/t/");
    let held = a
        .try_duty("prune")
        .unwrap()
        .expect("the first taker gets it");
    assert!(held.held());
    assert!(b.try_duty("prune").unwrap().is_none());
    assert!(
        a.try_duty("prune").unwrap().is_none(),
        "not twice in one process either"
    );
    // Another duty is independent.
    let other = b.try_duty("sso-sweep").unwrap().unwrap();
    // Released: the other engine takes it at once (the revoke is asynchronous).
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(5);
    let held_b = loop {
        if let Some(g) = b.try_duty("prune").unwrap() {
            break g;
        }
        assert!(
            Instant::now() < deadline,
            "the released duty was not free within 5 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(held_b.held());
    // Still held after more than a lease period: the keep-alive renews it.
    std::thread::sleep(Duration::from_secs(12));
    assert!(held_b.held());
    assert!(other.held());
    assert!(a.try_duty("prune").unwrap().is_none());
    // The holder dies without releasing: the lease expires (TTL 10 s).
    std::mem::forget(held_b);
    drop(b);
    let started = Instant::now();
    let held_a = loop {
        if let Some(g) = a.try_duty("prune").unwrap() {
            break g;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the dead holder's duty never expired"
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    assert!(held_a.held());
    eprintln!(
        "a dead holder's duty was free after {:?}",
        started.elapsed()
    );
}

#[test]
fn a_dead_cluster_is_unavailable_and_recovers() {
    let mut etcd = etcd_or_skip!("a_dead_cluster_is_unavailable_and_recovers");
    let e = etcd.engine("/t/");
    put(&e, Tree::Meta, b"k", b"v");
    let duty = e.try_duty("reencrypt").unwrap().unwrap();
    etcd.kill();
    let limit = Duration::from_secs(3 + 2); // timeout_secs + slack
    let started = Instant::now();
    let r = e.get(Tree::Meta, b"k");
    assert!(matches!(r, Err(EngineError::Unavailable(_))), "{r:?}");
    assert!(
        started.elapsed() < limit,
        "get took {:?}",
        started.elapsed()
    );
    let started = Instant::now();
    let r = e.transaction(&[Tree::Meta], &|tx| tx.insert(Tree::Meta, b"k", b"w"));
    assert!(
        matches!(r, Err(TxFailed::Engine(EngineError::Unavailable(_)))),
        "{r:?}"
    );
    assert!(
        started.elapsed() < limit,
        "transaction took {:?}",
        started.elapsed()
    );
    for r in [
        e.ready(),
        e.write(&[Op {
            tree: Tree::Meta,
            key: b"k".to_vec(),
            value: None,
        }]),
    ] {
        assert!(matches!(r, Err(EngineError::Unavailable(_))), "{r:?}");
    }
    assert!(matches!(
        e.take(Tree::Meta, b"k"),
        Err(EngineError::Unavailable(_))
    ));
    assert!(matches!(
        e.len(Tree::Meta),
        Err(EngineError::Unavailable(_))
    ));
    assert!(matches!(e.try_duty("x"), Err(EngineError::Unavailable(_))));
    if let Err(r) = e.dump(&[Tree::Meta]) {
        assert!(matches!(r, EngineError::Unavailable(_)), "{r:?}");
    } else {
        panic!("a dump of a dead cluster succeeded");
    }
    println!("Unavailable message: {}", e.ready().unwrap_err());
    // The duty's keep-alive fails: the holder learns it may have lost it.
    let deadline = Instant::now() + Duration::from_secs(12);
    while duty.held() {
        assert!(
            Instant::now() < deadline,
            "a duty still held 12 s after the cluster died"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    etcd.restart();
    let deadline = Instant::now() + Duration::from_secs(20);
    while let Err(err) = e.ready() {
        assert!(
            Instant::now() < deadline,
            "not ready 20 s after restart: {err}\n{}",
            etcd.log_tail()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(e.get(Tree::Meta, b"k").unwrap(), Some(b"v".to_vec()));
    put(&e, Tree::Meta, b"k", b"after");
    assert_eq!(e.get(Tree::Meta, b"k").unwrap(), Some(b"after".to_vec()));
}

#[test]
fn tls_with_a_client_certificate() {
    let etcd = match TestEtcd::start_tls("tls_with_a_client_certificate") {
        Some(e) => e,
        None => return,
    };
    let e = etcd.engine("/t/");
    put(&e, Tree::Configs, b"c", b"sealed");
    assert_eq!(
        e.get(Tree::Configs, b"c").unwrap(),
        Some(b"sealed".to_vec())
    );
    // Without the client certificate, or trusting another CA: an error
    // within the timeout, never a panic or a hang.
    let mut no_cert = etcd.config("/t/");
    no_cert.cert_file = None;
    no_cert.key_file = None;
    let mut wrong_ca = etcd.config("/t/");
    wrong_ca.ca_file = Some(etcd.file("client.pem"));
    for config in [no_cert, wrong_ca] {
        let started = Instant::now();
        let r = super::EtcdEngine::connect(&config).and_then(|e| e.get(Tree::Configs, b"c"));
        assert!(r.is_err(), "{r:?}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        println!("refused: {}", r.unwrap_err());
    }
    let mut missing = etcd.config("/t/");
    missing.key_file = Some(etcd.file("nowhere.pem"));
    let err = super::EtcdEngine::connect(&missing)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("storage.etcd.key_file") && err.contains("nowhere.pem"),
        "{err}"
    );
}

/// Not a benchmark: the order of magnitude of one round trip on loopback
/// (`cargo test latency -- --nocapture` prints it).
#[test]
fn latency_on_loopback() {
    let etcd = etcd_or_skip!("latency_on_loopback");
    let e = etcd.engine("/t/");
    put(&e, Tree::Meta, b"a", b"1");
    put(&e, Tree::Meta, b"b", b"1");
    let median = |mut v: Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let time = |f: &dyn Fn()| {
        (0..200)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed()
            })
            .collect::<Vec<_>>()
    };
    let get = median(time(&|| {
        e.get(Tree::Meta, b"a").unwrap();
    }));
    let write2 = median(time(&|| {
        let ops = [b"a", b"b"].map(|k| Op {
            tree: Tree::Meta,
            key: k.to_vec(),
            value: Some(vec![2]),
        });
        e.write(&ops).unwrap();
    }));
    let stm2 = median(time(&|| {
        e.transaction(&[Tree::Meta], &|tx| {
            let a = tx.get(Tree::Meta, b"a")?.unwrap_or_default();
            let b = tx.get(Tree::Meta, b"b")?.unwrap_or_default();
            tx.insert(Tree::Meta, b"a", &b)?;
            tx.insert(Tree::Meta, b"b", &a)
        })
        .unwrap();
    }));
    println!(
        "etcd on loopback, median of 200: get {get:?}; 2-key write Txn {write2:?}; \
         2-key read-modify-write transaction (2 reads + commit) {stm2:?}"
    );
}
