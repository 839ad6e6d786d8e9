//! The store's shared mode (ETCD14.md, "Store shared mode"), proven on a sled
//! engine opened shared: two `Store`s on one engine are two nodes in one
//! process (each with its own memory: write-order lock, chain head, counts),
//! writing the same data, as two oidcvault nodes on one etcd cluster do.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::engine::{Body, DutyGuard, Engine, EngineError, Op, Range, Tree, TxFailed};
use super::test_util::*;
use super::*;

fn shared_engine(dir: &Path) -> Arc<SledEngine> {
    Arc::new(SledEngine::open(dir, 8 << 20, None, true).unwrap())
}

/// A node on `engine`: its own store (its own memory), chained.
fn node(engine: Arc<dyn Engine>) -> Store {
    let store = Store::with_engine(engine, &StoreOptions::default()).unwrap();
    store
        .set_audit_mac(std::sync::Arc::new(TestMac(KEY.0)))
        .unwrap();
    store
}

fn anchor_id(store: &Store) -> u64 {
    let bytes = store
        .engine
        .get(Tree::Meta, chain::META_AUDIT_HEAD)
        .unwrap()
        .unwrap();
    chain::parse_anchor(&bytes).unwrap().0.id
}

/// Writes of every kind through two nodes, interleaved: one chain, every
/// event chained to the one before it whichever node wrote it, the anchor
/// always exactly at the head (written with each event, not per batch).
#[actix_web::test]
async fn two_nodes_interleaving_writes_keep_one_chain() {
    let dir = tempfile::tempdir().unwrap();
    let engine = shared_engine(dir.path());
    let (a, b) = (node(engine.clone()), node(engine.clone()));
    let d = a.create_domain("a.example", 1, |_| ev()).await.unwrap();
    assert_eq!(anchor_id(&a), 1);
    b.upsert_config(d.id, |_, id| Ok::<_, ()>(config(id, d.id, "one")))
        .await
        .unwrap();
    a.upsert_config(d.id, |cur, id| {
        assert_eq!(cur.unwrap().client_id, "one", "node a reads b's write");
        Ok::<_, ()>(config(id, d.id, "two"))
    })
    .await
    .unwrap();
    let (t, _) = b
        .create_token(TokenScope::Domain(d.id), 1, |_| ([1; 32], ()), |_| ev())
        .await
        .unwrap();
    a.append_audit(&numbered(5)).await.unwrap();
    assert!(a.revoke_token(t.id, |_| ev()).await.unwrap());
    assert!(!b.revoke_token(t.id, |_| ev()).await.unwrap());
    b.append_audit(&numbered(7)).await.unwrap();
    assert!(b.delete_config(d.id, ev()).await.unwrap());
    assert_eq!(anchor_id(&b), 8);
    // No gaps either: ids come from the store, not from each node's memory.
    assert_eq!(ids(&a), [1, 2, 3, 4, 5, 6, 7, 8]);
    for store in [&a, &b] {
        let r = store.verify_audit_chain(&KEY).unwrap();
        assert_eq!((r.events, r.broken), (8, None));
    }
    // Pruning through one node, appending through the other: still one chain.
    assert_eq!(a.prune_audit(6).await.unwrap(), 6);
    b.append_audit(&numbered(9)).await.unwrap();
    assert_eq!(broken(&a), None);
    assert_eq!(anchor_id(&a), 9);
    a.shutdown();
}

/// Concurrent writers on both nodes: every update kept, the chain intact.
#[test]
fn concurrent_updates_through_two_nodes_are_not_lost() {
    let dir = tempfile::tempdir().unwrap();
    let engine = shared_engine(dir.path());
    let nodes = [node(engine.clone()), node(engine.clone())];
    let rt = || {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
    };
    let d = rt()
        .block_on(nodes[0].create_domain("a.example", 1, |_| ev()))
        .unwrap();
    rt().block_on(nodes[1].upsert_config(d.id, |_, id| Ok::<_, ()>(config(id, d.id, "0"))))
        .unwrap();
    const EACH: usize = 25;
    std::thread::scope(|s| {
        for n in &nodes {
            for _ in 0..2 {
                s.spawn(|| {
                    let rt = rt();
                    for _ in 0..EACH {
                        rt.block_on(n.upsert_config(d.id, |cur, id| {
                            let v: usize = cur.unwrap().client_id.parse().unwrap();
                            Ok::<_, ()>(config(id, d.id, &(v + 1).to_string()))
                        }))
                        .unwrap();
                    }
                });
            }
        }
    });
    let stored = nodes[0].config(d.id).unwrap().unwrap();
    assert_eq!(stored.client_id, (4 * EACH).to_string());
    let r = nodes[1].verify_audit_chain(&KEY).unwrap();
    assert_eq!((r.events, r.broken), (2 + 4 * EACH as u64, None));
}

/// A sealed value is written only under the keyring the vault sealed it
/// with: once another node replaced the stored keyring, the write aborts
/// with `KeyringChanged` and nothing is written.
#[actix_web::test]
async fn the_keyring_guard_refuses_writes_sealed_under_an_old_keyring() {
    let dir = tempfile::tempdir().unwrap();
    let engine = shared_engine(dir.path());
    let (a, b) = (node(engine.clone()), node(engine.clone()));
    assert_eq!(a.keyring().unwrap(), None);
    assert!(a.replace_keyring(None, b"ring-1").await.unwrap());
    assert!(!b.replace_keyring(None, b"ring-x").await.unwrap());
    assert_eq!(b.keyring().unwrap().as_deref(), Some(&b"ring-1"[..]));
    a.set_keyring_guard(Some(b"ring-1".to_vec()));
    let d = a.create_domain("a.example", 1, |_| ev()).await.unwrap();
    a.upsert_config(d.id, |_, id| Ok::<_, ()>(config(id, d.id, "one")))
        .await
        .unwrap();
    // Node b rotates.
    assert!(b.replace_keyring(Some(b"ring-1"), b"ring-2").await.unwrap());
    let r = a
        .upsert_config(d.id, |_, id| Ok::<_, ()>(config(id, d.id, "two")))
        .await;
    assert!(
        matches!(r, Err(Abort::Store(StoreError::KeyringChanged))),
        "{:?}",
        r.map(|_| ())
    );
    let r = a.reseal_config(d.id, |_| Ok::<_, ()>(Some(vec![9])));
    assert!(matches!(r, Err(Abort::Store(StoreError::KeyringChanged))));
    let sso = SsoRecord {
        domain_id: d.id,
        expires_at: 100,
        sealed: vec![1],
    };
    let r = a.put_transaction(&[1; 32], &sso);
    assert!(matches!(r, Err(StoreError::KeyringChanged)), "{r:?}");
    let r = a.put_code(&[2; 32], &sso, &ev()).await;
    assert!(matches!(r, Err(StoreError::KeyringChanged)), "{r:?}");
    // Nothing written behind the refusals.
    assert_eq!(a.config(d.id).unwrap().unwrap().client_id, "one");
    assert_eq!(a.sso_len(SsoTree::Transactions), 0);
    assert_eq!(a.sso_len(SsoTree::Codes), 0);
    assert_eq!(broken(&a), None);
    // Reloaded: writes go through again.
    a.set_keyring_guard(Some(b"ring-2".to_vec()));
    a.upsert_config(d.id, |_, id| Ok::<_, ()>(config(id, d.id, "two")))
        .await
        .unwrap();
    a.put_transaction(&[1; 32], &sso).unwrap();
    assert_eq!(a.sso_len(SsoTree::Transactions), 1);
}

/// Counts and pending sign-ins are the store's, not one node's memory.
#[actix_web::test]
async fn counts_and_pending_sign_ins_are_recomputed() {
    let dir = tempfile::tempdir().unwrap();
    let engine = shared_engine(dir.path());
    let a = node(engine.clone());
    let mut b = node(engine.clone());
    b.counts_ttl = std::time::Duration::ZERO;
    assert_eq!(a.counts(), Counts::default());
    let d = a.create_domain("a.example", 1, |_| ev()).await.unwrap();
    a.upsert_config(d.id, |_, id| Ok::<_, ()>(config(id, d.id, "one")))
        .await
        .unwrap();
    let c = b.counts();
    assert_eq!((c.domains, c.configs), (1, 1));
    // Node a serves its cached scan for a while (5 s).
    assert_eq!(a.counts().domains, 0);
    b.put_transaction(&[1; 32], &rec()).unwrap();
    assert_eq!(a.sso_pending(), 1);
}

fn rec() -> SsoRecord {
    SsoRecord {
        domain_id: 1,
        expires_at: 100,
        sealed: vec![1, 2, 3],
    }
}

/// A login transaction is taken once across nodes.
#[actix_web::test]
async fn a_sign_in_is_taken_by_one_node_only() {
    let dir = tempfile::tempdir().unwrap();
    let engine = shared_engine(dir.path());
    let (a, b) = (node(engine.clone()), node(engine.clone()));
    a.put_transaction(&[7; 32], &rec()).unwrap();
    let first = b.take_transaction(&[7; 32], 50).await.unwrap();
    assert!(matches!(first, Taken::Found(_)), "{first:?}");
    let again = a.take_transaction(&[7; 32], 50).await.unwrap();
    assert!(matches!(again, Taken::Unknown), "{again:?}");
    b.put_code(&[8; 32], &rec(), &ev()).await.unwrap();
    assert!(matches!(
        a.redeem_code(&[8; 32], 10, |_| ev()).await.unwrap(),
        Taken::Found(_)
    ));
    assert!(matches!(
        b.redeem_code(&[8; 32], 10, |_| ev()).await.unwrap(),
        Taken::Spent
    ));
    a.put_transaction(&[9; 32], &rec()).unwrap();
    assert_eq!(b.sweep_sso(1000).unwrap(), 1);
    assert_eq!(broken(&a), None);
}

/// A term's use count is a bound no node lowers.
#[test]
fn term_uses_never_go_down_in_shared_mode() {
    let dir = tempfile::tempdir().unwrap();
    let engine = shared_engine(dir.path());
    let (a, b) = (node(engine.clone()), node(engine.clone()));
    a.reserve_term_uses(1, 10).unwrap();
    b.reserve_term_uses(1, 5).unwrap();
    assert_eq!(a.term_uses(1).unwrap(), 10);
    b.reserve_term_uses(1, 20).unwrap();
    assert_eq!(a.term_uses(1).unwrap(), 20);
}

/// Everything of a sled store (but the broker's short-lived records) goes
/// into an empty shared store and back, name indexes rebuilt; the copies'
/// chains verify and go on.
#[actix_web::test]
async fn copy_into_round_trips_every_record() {
    let dir = tempfile::tempdir().unwrap();
    let src = open_chained(&dir.path().join("src"));
    trail(&src).await;
    let d = src.create_domain("b.example", 2, |_| ev()).await.unwrap();
    src.upsert_config(d.id, |_, id| Ok::<_, ()>(config(id, d.id, "b")))
        .await
        .unwrap();
    let uris = vec!["https://app.example.com/cb".to_owned()];
    let new = NewApp {
        name: "Portal",
        redirect_uris: &uris,
        now: 5,
    };
    let (app, _) = src
        .create_app(&new, |_| ("ova_a".into(), [1; 32], ()), |_| ev())
        .await
        .unwrap();
    src.reserve_term_uses(1, 42).unwrap();
    src.put_transaction(&[1; 32], &rec()).unwrap();
    src.put_code(&[2; 32], &rec(), &ev()).await.unwrap();

    // Copied before the vault would set the audit MAC (which writes an
    // anchor into an empty store).
    let mid = Store::with_engine(
        shared_engine(&dir.path().join("mid")),
        &StoreOptions::default(),
    )
    .unwrap();
    let stats = src.copy_into(&mid).unwrap();
    mid.set_audit_mac(Arc::new(TestMac(KEY.0))).unwrap();
    let copied: Vec<Tree> = Tree::ALL
        .into_iter()
        .filter(|t| !t.is_ephemeral())
        .collect();
    let dump = |s: &Store| s.engine.dump(&copied).unwrap();
    assert_eq!(dump(&src), dump(&mid));
    assert_eq!(
        stats.records,
        dump(&src)
            .iter()
            .filter(|(t, _)| !t.keys_are_names())
            .map(|(_, kvs)| kvs.len() as u64)
            .sum::<u64>()
    );
    assert_eq!(mid.sso_len(SsoTree::Transactions), 0);
    assert_eq!(mid.sso_len(SsoTree::Codes), 0);
    assert_eq!(mid.domain_by_name("b.example").unwrap(), Some(d.clone()));
    assert_eq!(mid.app_by_client_id("ova_a").unwrap(), Some(app));
    assert_eq!(mid.term_uses(1).unwrap(), 42);
    assert_eq!(mid.counts(), src.counts());
    assert_eq!(broken(&mid), None);
    // The copy goes on from the source's head.
    mid.append_audit(&numbered(100)).await.unwrap();
    assert_eq!(broken(&mid), None);
    // A destination that is not empty is refused.
    assert!(src.copy_into(&mid).is_err());

    let back = open(&dir.path().join("back"));
    mid.copy_into(&back).unwrap();
    back.set_audit_mac(Arc::new(TestMac(KEY.0))).unwrap();
    assert_eq!(dump(&mid), dump(&back));
    back.append_audit(&numbered(101)).await.unwrap();
    assert_eq!(broken(&back), None);
    assert_eq!(back.counts(), mid.counts());
}

/// An engine that counts the plain writes made through it.
#[derive(Debug)]
struct Counting {
    inner: SledEngine,
    writes: AtomicUsize,
}

impl Engine for Counting {
    fn kind(&self) -> &'static str {
        "counting"
    }
    fn shared(&self) -> bool {
        self.inner.shared()
    }
    fn group_commit(&self) -> Option<&GroupCommit> {
        self.inner.group_commit()
    }
    fn check_writable(&self) -> Result<(), StoreError> {
        self.inner.check_writable()
    }
    fn check_usable(&self) -> Result<(), StoreError> {
        self.inner.check_usable()
    }
    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        self.inner.get(tree, key)
    }
    fn scan(
        &self,
        tree: Tree,
        range: Range,
        limit: usize,
        reverse: bool,
    ) -> Result<Vec<engine::Pair>, EngineError> {
        self.inner.scan(tree, range, limit, reverse)
    }
    fn len(&self, tree: Tree) -> Result<u64, EngineError> {
        self.inner.len(tree)
    }
    fn transaction(&self, trees: &[Tree], body: &Body<'_>) -> Result<(), TxFailed> {
        self.inner.transaction(trees, body)
    }
    fn write(&self, ops: &[Op]) -> Result<(), EngineError> {
        self.writes.fetch_add(1, Ordering::SeqCst);
        self.inner.write(ops)
    }
    fn take(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        self.inner.take(tree, key)
    }
    fn dump(&self, trees: &[Tree]) -> Result<engine::Dump, EngineError> {
        self.inner.dump(trees)
    }
    fn try_duty(&self, name: &str) -> Result<Option<Box<dyn DutyGuard>>, EngineError> {
        self.inner.try_duty(name)
    }
    fn ready(&self) -> Result<(), EngineError> {
        self.inner.ready()
    }
    fn size_on_disk(&self) -> Option<u64> {
        self.inner.size_on_disk()
    }
    fn shutdown(&self) {
        self.inner.shutdown()
    }
}

/// A store on a shared engine never takes a plain-write fast path; on one
/// that is not shared, it does (the same writes, counted).
#[actix_web::test]
async fn a_shared_store_makes_no_plain_writes() {
    for shared in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let engine = Arc::new(Counting {
            inner: SledEngine::open(dir.path(), 8 << 20, None, shared).unwrap(),
            writes: AtomicUsize::new(0),
        });
        let store = node(engine.clone());
        let d = store.create_domain("a.example", 1, |_| ev()).await.unwrap();
        for v in ["one", "two"] {
            store
                .upsert_config(d.id, |_, id| Ok::<_, ()>(config(id, d.id, v)))
                .await
                .unwrap();
        }
        assert!(store
            .reseal_config(d.id, |_| Ok::<_, ()>(Some(vec![4, 5])))
            .unwrap());
        store.append_audit(&numbered(4)).await.unwrap();
        store.reserve_term_uses(1, 10).unwrap();
        store.put_transaction(&[1; 32], &rec()).unwrap();
        assert_eq!(store.sweep_sso(1000).unwrap(), 1);
        assert_eq!(store.prune_audit(i64::MAX).await.unwrap(), 4);
        assert_eq!(broken(&store), None);
        let writes = engine.writes.load(Ordering::SeqCst);
        if shared {
            assert_eq!(writes, 0, "plain writes on a shared engine");
        } else {
            assert!(writes >= 5, "the fast paths are taken: {writes}");
        }
        store.shutdown();
    }
}
