//! The records that decide authentication (tokens, domains and the domain
//! name index), served from memory, over an engine that is not shared.
//!
//! Why: a GET did three store reads before it touched its config (the token,
//! the domain, its name), a POST two or three; BENCHMARKS.md measured an upper
//! bound of a cache at a fifth of a GET's CPU. Why an engine wrapper: every
//! write of the store goes through [`Engine::write`], [`Engine::transaction`]
//! or [`Engine::take`], so invalidating here covers every writer that exists
//! and every one added later, with no call site to forget.
//!
//! **The guarantee**: once a write that removes or changes a cached record
//! (a token revocation, a domain removal) has returned from the engine, no
//! later lookup is answered from a value read before it. The argument, with
//! `W` the engine applying the write, `R` a reader's engine read:
//!
//! 1. A reader takes the generation `g` *before* its engine read `R`, and
//!    stores what it read only under the key's shard lock, and only if the
//!    generation is still `g`.
//! 2. A writer, *after* `W` has returned (applied, visible to every later
//!    read), takes the shard lock of each key it wrote, bumps the generation
//!    and removes the key; only then does its call return.
//! 3. If `R` came before `W`, `g` was taken before the bump. The reader's
//!    insert is under the same shard lock as the writer's removal: if it ran
//!    first, the removal takes the entry out; if it ran after, the generation
//!    is no longer `g` and nothing is stored. So when the writer's call
//!    returns, no value read before `W` is in the cache, and none can enter.
//! 4. A lookup that starts after that finds no old entry, and reads the
//!    engine, which already answers with `W` applied.
//!
//! The store's revocation and removal return only after their engine write
//! (and, on sled, the group commit), so "no request that starts after the
//! revoke's 2xx is authorised by the old token" follows; the tests of
//! `tests/binary_revocation.rs` hammer it with 64 clients through the real
//! binary, and the unit test `a_read_overtaken_by_a_revocation_leaves_nothing_behind`
//! forces the window of step 3.
//!
//! Only for an engine that is not shared ([`CachedEngine::wrap`] refuses
//! others): on etcd another node writes without passing here, and checking a
//! revision would cost the round trip the cache saves. Absent keys are not
//! cached (a token that fails is read every time: the abuse limiter counts
//! those). Values are the records as stored: a token record holds the
//! token's SHA-256, never the token. Memory is bounded by
//! `storage.auth_cache_mib`; a full shard keeps what it has (no eviction
//! churn), until invalidations make room.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use indexmap::IndexMap;

use super::{
    Body, Dump, DutyGuard, Engine, EngineError, Op, Pair, Range, Tree, Tx, TxFailed, TxStop,
};
use crate::store::StoreError;

/// The trees served from memory: what authentication and the domain check read.
pub const CACHED: [Tree; 3] = [Tree::Tokens, Tree::Domains, Tree::DomainNames];

fn is_cached(tree: Tree) -> bool {
    CACHED.contains(&tree)
}

/// Locks taken independently (two workers rarely meet on one).
const SHARDS: usize = 8;
/// Counted per entry besides its key and value: the map's slot, the two
/// vectors' headers and the allocator's rounding (an estimate on the high side).
const ENTRY_OVERHEAD: usize = 96;

type Key = (Tree, Vec<u8>);

/// A [`Key`] borrowed, to look one up without allocating. Hashes as `Key`
/// does (the derived `Hash` of both feeds the tree, then the bytes as a slice).
#[derive(Hash)]
struct KeyRef<'a>(Tree, &'a [u8]);

impl indexmap::Equivalent<Key> for KeyRef<'_> {
    fn equivalent(&self, key: &Key) -> bool {
        self.0 == key.0 && self.1 == key.1.as_slice()
    }
}

#[derive(Default)]
struct Shard {
    map: IndexMap<Key, Vec<u8>>,
    bytes: usize,
    /// Counted under the shard's lock, which a lookup holds anyway (a shared
    /// atomic would bounce one cache line between the workers on every lookup).
    hits: u64,
    misses: u64,
}

fn cost(key: &[u8], value: &[u8]) -> usize {
    key.len() + value.len() + ENTRY_OVERHEAD
}

impl Shard {
    fn remove(&mut self, key: KeyRef<'_>) {
        if let Some(v) = self.map.swap_remove(&key) {
            self.bytes = self.bytes.saturating_sub(cost(key.1, &v));
        }
    }

    /// Keep `value` if the shard has room. A full shard keeps what it has
    /// (invalidations make room again): evicting a random entry on every miss
    /// of a working set larger than the budget churned the allocator, measured
    /// at 100,000 domains as a fifth less mixed-load throughput and 27 MiB more
    /// resident memory than no cache (BENCHMARKS.md, issue 15).
    fn insert(&mut self, key: KeyRef<'_>, value: &[u8], budget: usize) {
        let size = cost(key.1, value);
        if self.bytes + size > budget || self.map.contains_key(&key) {
            return;
        }
        self.bytes += size;
        self.map.insert((key.0, key.1.to_vec()), value.to_vec());
    }
}

/// What `/metrics` shows of the cache (to size `storage.auth_cache_mib`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheFigures {
    pub hits: u64,
    pub misses: u64,
    /// Bytes held (keys, values, estimated overhead).
    pub bytes: u64,
    pub entries: u64,
}

/// An engine whose [`CACHED`] trees are read through a bounded cache that
/// every write through it invalidates (see the module doc).
pub struct CachedEngine {
    inner: Arc<dyn Engine>,
    shards: [Mutex<Shard>; SHARDS],
    /// Bytes per shard.
    budget: usize,
    /// Bumped by every invalidation (under the shard lock of the key).
    generation: AtomicU64,
    hasher: RandomState,
}

impl std::fmt::Debug for CachedEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // No keys or values: domain names and token hashes stay out of logs.
        f.debug_struct("CachedEngine")
            .field("inner", &self.inner)
            .field("budget_bytes", &self.budget.saturating_mul(SHARDS))
            .finish_non_exhaustive()
    }
}

impl CachedEngine {
    /// `inner` with a cache of at most `budget_bytes`; `inner` itself when it is
    /// shared (other processes write it: see the module doc) or the budget is 0.
    pub fn wrap(inner: Arc<dyn Engine>, budget_bytes: u64) -> Arc<dyn Engine> {
        if inner.shared() || budget_bytes == 0 {
            return inner;
        }
        Arc::new(Self::new(inner, budget_bytes))
    }

    fn new(inner: Arc<dyn Engine>, budget_bytes: u64) -> Self {
        let total = usize::try_from(budget_bytes).unwrap_or(usize::MAX);
        Self {
            inner,
            shards: std::array::from_fn(|_| Mutex::default()),
            budget: total / SHARDS,
            generation: AtomicU64::new(0),
            hasher: RandomState::new(),
        }
    }

    fn shard(&self, tree: Tree, key: &[u8]) -> MutexGuard<'_, Shard> {
        let h = self.hasher.hash_one((tree, key));
        // `h % SHARDS` < SHARDS: the index is always in bounds.
        let i = (h % SHARDS as u64) as usize;
        // A poisoned shard only means a panic elsewhere mid-update of a map
        // of copies; its entries are still values read from the engine.
        self.shards[i]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Step 2 of the module doc: after the engine applied a write of `key`.
    fn invalidate(&self, tree: Tree, key: &[u8]) {
        if !is_cached(tree) {
            return;
        }
        let mut shard = self.shard(tree, key);
        self.generation.fetch_add(1, Ordering::SeqCst);
        shard.remove(KeyRef(tree, key));
    }
}

/// A transaction's view that notes the cached keys it writes (a body may
/// run more than once: the union of all runs is invalidated, a superset).
struct Noting<'a> {
    tx: &'a mut dyn Tx,
    written: &'a Mutex<Vec<Key>>,
}

impl Noting<'_> {
    fn note(&self, tree: Tree, key: &[u8]) {
        if is_cached(tree) {
            self.written
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push((tree, key.to_vec()));
        }
    }
}

impl Tx for Noting<'_> {
    fn get(&mut self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, TxStop> {
        self.tx.get(tree, key)
    }

    fn insert(&mut self, tree: Tree, key: &[u8], value: &[u8]) -> Result<(), TxStop> {
        self.note(tree, key);
        self.tx.insert(tree, key, value)
    }

    fn remove(&mut self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, TxStop> {
        self.note(tree, key);
        self.tx.remove(tree, key)
    }
}

impl Engine for CachedEngine {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    fn shared(&self) -> bool {
        self.inner.shared()
    }

    fn group_commit(&self) -> Option<&crate::store::GroupCommit> {
        self.inner.group_commit()
    }

    fn check_writable(&self) -> Result<(), StoreError> {
        self.inner.check_writable()
    }

    fn check_usable(&self) -> Result<(), StoreError> {
        self.inner.check_usable()
    }

    fn set_disk_reserve(&self, bytes: u64) {
        self.inner.set_disk_reserve(bytes);
    }

    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        if !is_cached(tree) {
            return self.inner.get(tree, key);
        }
        {
            let mut shard = self.shard(tree, key);
            if let Some(v) = shard.map.get(&KeyRef(tree, key)) {
                let v = v.clone();
                shard.hits += 1;
                return Ok(Some(v));
            }
            shard.misses += 1;
        }
        // Step 1 of the module doc: the generation before the read.
        let seen = self.generation.load(Ordering::SeqCst);
        let value = self.inner.get(tree, key)?;
        if let Some(v) = &value {
            let mut shard = self.shard(tree, key);
            if self.generation.load(Ordering::SeqCst) == seen {
                shard.insert(KeyRef(tree, key), v, self.budget);
            }
        }
        Ok(value)
    }

    fn scan(
        &self,
        tree: Tree,
        range: Range,
        limit: usize,
        reverse: bool,
    ) -> Result<Vec<Pair>, EngineError> {
        self.inner.scan(tree, range, limit, reverse)
    }

    fn len(&self, tree: Tree) -> Result<u64, EngineError> {
        self.inner.len(tree)
    }

    fn transaction(&self, trees: &[Tree], body: &Body<'_>) -> Result<(), TxFailed> {
        if !trees.iter().any(|t| is_cached(*t)) {
            return self.inner.transaction(trees, body);
        }
        let written = Mutex::new(Vec::new());
        let r = self.inner.transaction(trees, &|tx: &mut dyn Tx| {
            body(&mut Noting {
                tx,
                written: &written,
            })
        });
        // Whatever the outcome (a failed commit may still have applied).
        for (tree, key) in written.into_inner().unwrap_or_else(PoisonError::into_inner) {
            self.invalidate(tree, &key);
        }
        r
    }

    fn write(&self, ops: &[Op]) -> Result<(), EngineError> {
        let r = self.inner.write(ops);
        for op in ops {
            self.invalidate(op.tree, &op.key);
        }
        r
    }

    fn take(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        let r = self.inner.take(tree, key);
        self.invalidate(tree, key);
        r
    }

    fn dump(&self, trees: &[Tree]) -> Result<Dump, EngineError> {
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

    fn cache_figures(&self) -> Option<CacheFigures> {
        let mut f = CacheFigures {
            hits: 0,
            misses: 0,
            bytes: 0,
            entries: 0,
        };
        for s in &self.shards {
            let s = s.lock().unwrap_or_else(PoisonError::into_inner);
            f.hits += s.hits;
            f.misses += s.misses;
            f.bytes += s.bytes as u64;
            f.entries += s.map.len() as u64;
        }
        Some(f)
    }

    fn shutdown(&self) {
        self.inner.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Barrier;

    use super::*;
    use crate::store::SledEngine;

    /// An engine in memory whose `get` can stop between reading a value and
    /// returning it: the window in which a write may slip in.
    #[derive(Debug, Default)]
    struct Paused {
        data: Mutex<BTreeMap<Key, Vec<u8>>>,
        /// (read done, go on)
        pause: Mutex<Option<Arc<(Barrier, Barrier)>>>,
    }

    impl Engine for Paused {
        fn kind(&self) -> &'static str {
            "test"
        }
        fn shared(&self) -> bool {
            false
        }
        fn group_commit(&self) -> Option<&crate::store::GroupCommit> {
            None
        }
        fn check_writable(&self) -> Result<(), StoreError> {
            Ok(())
        }
        fn check_usable(&self) -> Result<(), StoreError> {
            Ok(())
        }
        fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
            let v = self
                .data
                .lock()
                .unwrap()
                .get(&(tree, key.to_vec()))
                .cloned();
            let pause = self.pause.lock().unwrap().take();
            if let Some(p) = pause {
                p.0.wait();
                p.1.wait();
            }
            Ok(v)
        }
        fn scan(&self, _: Tree, _: Range, _: usize, _: bool) -> Result<Vec<Pair>, EngineError> {
            Ok(Vec::new())
        }
        fn len(&self, _: Tree) -> Result<u64, EngineError> {
            Ok(0)
        }
        fn transaction(&self, _: &[Tree], _: &Body<'_>) -> Result<(), TxFailed> {
            Err(TxFailed::Aborted)
        }
        fn write(&self, ops: &[Op]) -> Result<(), EngineError> {
            let mut data = self.data.lock().unwrap();
            for op in ops {
                let k = (op.tree, op.key.clone());
                match &op.value {
                    Some(v) => data.insert(k, v.clone()),
                    None => data.remove(&k),
                };
            }
            Ok(())
        }
        fn take(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
            Ok(self.data.lock().unwrap().remove(&(tree, key.to_vec())))
        }
        fn dump(&self, _: &[Tree]) -> Result<Dump, EngineError> {
            Ok(Vec::new())
        }
        fn try_duty(&self, _: &str) -> Result<Option<Box<dyn DutyGuard>>, EngineError> {
            Ok(None)
        }
        fn ready(&self) -> Result<(), EngineError> {
            Ok(())
        }
        fn size_on_disk(&self) -> Option<u64> {
            None
        }
        fn shutdown(&self) {}
    }

    fn op(tree: Tree, key: &[u8], value: Option<&[u8]>) -> Op {
        Op {
            tree,
            key: key.to_vec(),
            value: value.map(<[u8]>::to_vec),
        }
    }

    fn hits(c: &CachedEngine) -> u64 {
        c.cache_figures().unwrap().hits
    }

    fn held_bytes(c: &CachedEngine) -> usize {
        c.cache_figures().unwrap().bytes as usize
    }

    /// The window of step 3 (module doc), forced: a read of the old token
    /// record is under way while the revocation applies and invalidates; it
    /// returns the old value to its own caller (it began before the
    /// revocation) but must not leave it behind for later lookups.
    #[test]
    fn a_read_overtaken_by_a_revocation_leaves_nothing_behind() {
        let inner = Arc::new(Paused::default());
        inner
            .write(&[op(Tree::Tokens, b"t1", Some(b"hash-of-t1"))])
            .unwrap();
        let cache = Arc::new(CachedEngine::new(inner.clone(), 1 << 20));
        let p = Arc::new((Barrier::new(2), Barrier::new(2)));
        *inner.pause.lock().unwrap() = Some(p.clone());
        let reader = {
            let cache = cache.clone();
            std::thread::spawn(move || cache.get(Tree::Tokens, b"t1").unwrap())
        };
        p.0.wait(); // the reader has read the old record...
        cache.write(&[op(Tree::Tokens, b"t1", None)]).unwrap(); // ...the revocation
        p.1.wait(); // the reader goes on and tries to keep what it read
        assert_eq!(reader.join().unwrap().as_deref(), Some(&b"hash-of-t1"[..]));
        for _ in 0..3 {
            assert_eq!(
                cache.get(Tree::Tokens, b"t1").unwrap(),
                None,
                "a lookup after the revocation returned found the old record"
            );
        }
        assert_eq!(hits(&cache), 0);
    }

    /// Every way the store writes (plain writes, transactions, take)
    /// invalidates what it wrote; a value kept before is taken out.
    #[test]
    fn reads_are_served_from_memory_until_a_write_through_any_path() {
        let dir = tempfile::tempdir().unwrap();
        let sled: Arc<dyn Engine> =
            Arc::new(SledEngine::open(dir.path(), 8 << 20, None, false).unwrap());
        let cache = CachedEngine::new(sled, 1 << 20);
        let put = |tree, k: &[u8], v: &[u8]| cache.write(&[op(tree, k, Some(v))]).unwrap();
        let get = |tree, k: &[u8]| cache.get(tree, k).unwrap();

        put(Tree::Tokens, b"t", b"1");
        assert_eq!(get(Tree::Tokens, b"t").as_deref(), Some(&b"1"[..]));
        assert_eq!(get(Tree::Tokens, b"t").as_deref(), Some(&b"1"[..]));
        assert_eq!(hits(&cache), 1, "the second read is served from memory");
        // A plain write.
        put(Tree::Tokens, b"t", b"2");
        assert_eq!(get(Tree::Tokens, b"t").as_deref(), Some(&b"2"[..]));
        // A transaction (the store's revocation and domain removal).
        assert_eq!(get(Tree::Domains, b"d").as_deref(), None);
        put(Tree::Domains, b"d", b"x");
        assert_eq!(get(Tree::Domains, b"d").as_deref(), Some(&b"x"[..]));
        cache
            .transaction(&[Tree::Tokens, Tree::Domains, Tree::Audit], &|tx| {
                tx.remove(Tree::Tokens, b"t")?;
                tx.insert(Tree::Domains, b"d", b"y")?;
                tx.insert(Tree::Audit, b"e", b"event")?;
                Ok(())
            })
            .unwrap();
        assert_eq!(get(Tree::Tokens, b"t"), None);
        assert_eq!(get(Tree::Domains, b"d").as_deref(), Some(&b"y"[..]));
        // An aborted transaction changes nothing, cached or not.
        let r = cache.transaction(&[Tree::Domains], &|tx| {
            tx.insert(Tree::Domains, b"d", b"z")?;
            Err(TxStop::Abort)
        });
        assert!(matches!(r, Err(TxFailed::Aborted)));
        assert_eq!(get(Tree::Domains, b"d").as_deref(), Some(&b"y"[..]));
        // An atomic take.
        put(Tree::DomainNames, b"a.example", b"id");
        assert!(get(Tree::DomainNames, b"a.example").is_some());
        assert!(cache
            .take(Tree::DomainNames, b"a.example")
            .unwrap()
            .is_some());
        assert_eq!(get(Tree::DomainNames, b"a.example"), None);
        // Other trees are not cached.
        let before = hits(&cache);
        put(Tree::Configs, b"c", b"1");
        get(Tree::Configs, b"c");
        get(Tree::Configs, b"c");
        assert_eq!(hits(&cache), before);
        assert_eq!(held_bytes(&cache), cost(b"d", b"y"));
        cache.shutdown();
    }

    #[test]
    fn memory_stays_within_the_budget() {
        let inner: Arc<dyn Engine> = Arc::new(Paused::default());
        let ops: Vec<Op> = (0u32..5000)
            .map(|i| op(Tree::Tokens, &i.to_be_bytes(), Some(&[7; 100])))
            .collect();
        inner.write(&ops).unwrap();
        let budget = 64 << 10;
        let cache = CachedEngine::new(inner, budget);
        for round in 0..2 {
            for i in 0u32..5000 {
                let v = cache.get(Tree::Tokens, &i.to_be_bytes()).unwrap();
                assert_eq!(v.as_deref(), Some(&[7; 100][..]), "round {round}, key {i}");
            }
        }
        let held = held_bytes(&cache);
        assert!(held as u64 <= budget, "{held} bytes held, budget {budget}");
        assert!(
            held as u64 > budget / 2,
            "{held} bytes held: the budget is not used"
        );
        // A full cache keeps what it took first, rather than churning: the
        // first keys were hits in the second round, the last ones were not.
        let before = hits(&cache);
        cache.get(Tree::Tokens, &0u32.to_be_bytes()).unwrap();
        assert_eq!(hits(&cache), before + 1);
        cache.get(Tree::Tokens, &4999u32.to_be_bytes()).unwrap();
        assert_eq!(hits(&cache), before + 1);
        // An invalidation makes room again: a key written anew is kept anew.
        let zero = 0u32.to_be_bytes();
        cache
            .write(&[op(Tree::Tokens, &zero, Some(&[8; 100]))])
            .unwrap();
        assert_eq!(
            cache.get(Tree::Tokens, &zero).unwrap().as_deref(),
            Some(&[8; 100][..])
        );
        assert_eq!(
            cache.get(Tree::Tokens, &zero).unwrap().as_deref(),
            Some(&[8; 100][..])
        );
        assert_eq!(hits(&cache), before + 2);
        // A value larger than a shard's budget is never kept.
        let tiny = CachedEngine::new(Arc::new(Paused::default()), 8 * 64);
        tiny.write(&[op(Tree::Tokens, b"big", Some(&[1; 200]))])
            .unwrap();
        tiny.get(Tree::Tokens, b"big").unwrap();
        assert_eq!(held_bytes(&tiny), 0);
    }

    #[test]
    fn a_shared_engine_or_a_zero_budget_gets_no_cache() {
        let dir = tempfile::tempdir().unwrap();
        let shared: Arc<dyn Engine> =
            Arc::new(SledEngine::open(dir.path(), 8 << 20, None, true).unwrap());
        assert!(Arc::ptr_eq(
            &CachedEngine::wrap(shared.clone(), 1 << 20),
            &shared
        ));
        shared.shutdown();
        let local: Arc<dyn Engine> = Arc::new(Paused::default());
        assert!(Arc::ptr_eq(&CachedEngine::wrap(local.clone(), 0), &local));
        assert!(!Arc::ptr_eq(
            &CachedEngine::wrap(local.clone(), 1 << 20),
            &local
        ));
    }
}
