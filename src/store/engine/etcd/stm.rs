//! Serializable transactions over etcd: software transactional memory, as
//! etcd's own `concurrency.STM` (its "serializable" level) does it.
//!
//! - The first read fixes the transaction's revision R (a linearizable read,
//!   or serializable per `read_consistency`); every later read is made at R,
//!   so the body sees one consistent snapshot plus its own writes.
//! - Each key read is remembered with its mod revision (0: absent); writes
//!   are buffered (the last one per key wins).
//! - Commit is one etcd Txn: if every key read still has the mod revision it
//!   had, apply the writes; else nothing is applied and the body runs again
//!   (after a short jittered pause, a bounded number of times).
//!
//! A body that only read commits nothing: its reads were one snapshot.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use etcd_client::{Compare, CompareOp, GetOptions, Txn, TxnOp};
use rand::Rng;

use super::client::{is_compacted, EtcdEngine, MAX_TXN_OPS};
use crate::store::engine::{Body, EngineError, EngineSignal, Tree, Tx, TxFailed, TxStop};

/// Runs of one body before giving up (each failed run lost a race to a
/// concurrent writer of a key it read).
const MAX_ATTEMPTS: u32 = 200;

/// Run `body` until it commits, aborts, fails, or loses too many races.
pub(super) fn run(engine: &EtcdEngine, trees: &[Tree], body: &Body<'_>) -> Result<(), TxFailed> {
    for attempt in 0..MAX_ATTEMPTS {
        let mut tx = EtcdTx {
            engine,
            trees,
            revision: None,
            reads: HashMap::new(),
            writes: BTreeMap::new(),
        };
        match body(&mut tx) {
            Ok(()) => {}
            Err(TxStop::Abort) => return Err(TxFailed::Aborted),
            Err(TxStop::Engine(EngineSignal::Retry)) => {
                backoff(attempt);
                continue;
            }
            Err(TxStop::Engine(EngineSignal::Failed(e))) => return Err(TxFailed::Engine(e)),
            Err(TxStop::Engine(EngineSignal::Sled(e))) => {
                return Err(TxFailed::Engine(EngineError::Other(format!(
                    "a sled signal in an etcd transaction: {e:?}"
                ))))
            }
        }
        if tx.commit().map_err(TxFailed::Engine)? {
            return Ok(());
        }
        backoff(attempt);
    }
    Err(TxFailed::Engine(EngineError::Unavailable(format!(
        "contention: a transaction lost {MAX_ATTEMPTS} races to concurrent writers"
    ))))
}

/// A pause growing from about 1 ms to about 64 ms, jittered so that two
/// racing writers do not meet again at once.
fn backoff(attempt: u32) {
    let cap = 1u64 << attempt.min(6);
    let micros = rand::thread_rng().gen_range(0..cap * 1000);
    std::thread::sleep(Duration::from_micros(micros));
}

struct EtcdTx<'a> {
    engine: &'a EtcdEngine,
    trees: &'a [Tree],
    /// The revision of the first read, at which every later read is made.
    revision: Option<i64>,
    /// etcd key -> (its mod revision when read, 0 if absent; its value).
    reads: HashMap<Vec<u8>, (i64, Option<Vec<u8>>)>,
    /// etcd key -> value to put (`None`: delete).
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

impl EtcdTx<'_> {
    fn check_tree(&self, tree: Tree) -> Result<(), TxStop> {
        if self.trees.contains(&tree) {
            Ok(())
        } else {
            Err(failed(EngineError::Other(format!(
                "a transaction used tree {} that it did not declare",
                tree.name()
            ))))
        }
    }

    /// The value of `key` as this transaction sees it.
    fn read(&mut self, key: Vec<u8>) -> Result<Option<Vec<u8>>, TxStop> {
        if let Some(w) = self.writes.get(&key) {
            return Ok(w.clone());
        }
        if let Some((_, v)) = self.reads.get(&key) {
            return Ok(v.clone());
        }
        let opts = match self.revision {
            Some(r) => GetOptions::new().with_revision(r),
            None => self.engine.read_options(),
        };
        let mut kv = self.engine.client.kv_client();
        let k = key.clone();
        let mut resp = match self.engine.run("a transaction's read", async move {
            kv.get(k, Some(opts)).await
        }) {
            Ok(r) => r,
            // Revision R was compacted away under a long transaction: run it again.
            Err(EngineError::Other(e)) if is_compacted(&e) => {
                return Err(TxStop::Engine(EngineSignal::Retry))
            }
            Err(e) => return Err(failed(e)),
        };
        if self.revision.is_none() {
            self.revision = resp.header().map(|h| h.revision());
        }
        let (rev, value) = match resp.take_kvs().into_iter().next() {
            Some(kv) => (kv.mod_revision(), Some(kv.into_key_value().1)),
            None => (0, None),
        };
        self.reads.insert(key, (rev, value.clone()));
        Ok(value)
    }

    /// Apply the writes if nothing read has changed: `Ok(false)` when it had.
    fn commit(self) -> Result<bool, EngineError> {
        if self.writes.is_empty() {
            return Ok(true);
        }
        if self.reads.len() > MAX_TXN_OPS || self.writes.len() > MAX_TXN_OPS {
            return Err(EngineError::Other(format!(
                "a transaction of {} reads and {} writes is over etcd's {MAX_TXN_OPS} per Txn",
                self.reads.len(),
                self.writes.len()
            )));
        }
        let compares: Vec<Compare> = self
            .reads
            .iter()
            .map(|(k, (rev, _))| Compare::mod_revision(k.clone(), CompareOp::Equal, *rev))
            .collect();
        let ops: Vec<TxnOp> = self
            .writes
            .into_iter()
            .map(|(k, v)| match v {
                Some(v) => TxnOp::put(k, v, None),
                None => TxnOp::delete(k, None),
            })
            .collect();
        let txn = Txn::new().when(compares).and_then(ops);
        let mut kv = self.engine.client.kv_client();
        let resp = self
            .engine
            .run("a transaction's commit", async move { kv.txn(txn).await })?;
        Ok(resp.succeeded())
    }
}

fn failed(e: EngineError) -> TxStop {
    TxStop::Engine(EngineSignal::Failed(e))
}

impl Tx for EtcdTx<'_> {
    fn get(&mut self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, TxStop> {
        self.check_tree(tree)?;
        let k = self.engine.key(tree, key);
        self.read(k)
    }

    fn insert(&mut self, tree: Tree, key: &[u8], value: &[u8]) -> Result<(), TxStop> {
        self.check_tree(tree)?;
        let k = self.engine.key(tree, key);
        self.writes.insert(k, Some(value.to_vec()));
        Ok(())
    }

    fn remove(&mut self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, TxStop> {
        self.check_tree(tree)?;
        let k = self.engine.key(tree, key);
        let old = self.read(k.clone())?;
        self.writes.insert(k, None);
        Ok(old)
    }
}
