//! The embedded engine: one sled database in the data directory, a sled tree
//! per [`Tree`], and the group commit that makes applied changes durable
//! (`commit`). The only module (with `commit`) that imports sled.
//!
//! Fail-stop: a sled I/O error on a write means its log could not be written
//! (a full disk, a failing device) while sled keeps the change in memory, so
//! the engine stops for good, like a failed group commit, rather than serve
//! what may not be on disk ([`EngineError::WriteFailed`]). The free-space
//! guard (`store::space`) refuses a write before sled is touched.
//!
//! *Shared* mode (`SledEngine::open(.., shared = true)`) changes nothing here:
//! it only tells the store to behave as it does on a cluster (no plain-write
//! fast paths, nothing trusted in memory), so the store's shared paths are
//! tested without etcd.

mod commit;

use std::path::{Path, PathBuf};

use sled::transaction::{
    ConflictableTransactionError, TransactionError, Transactional, TransactionalTree,
    UnabortableTransactionError,
};

pub use commit::{BeforeFlush, CommitMetrics, CommitStats, GroupCommit};

use super::{
    Body, Dump, DutyGuard, Engine, EngineError, EngineSignal, Op, Pair, Range, Tree, Tx, TxFailed,
    TxStop,
};
use crate::store::{fsutil, space, StoreError};

/// The sled engine of one data directory.
pub struct SledEngine {
    db: sled::Db,
    dir: PathBuf,
    /// By [`Tree::index`].
    trees: Vec<sled::Tree>,
    commit: GroupCommit,
    space: space::Guard,
    shared: bool,
}

impl std::fmt::Debug for SledEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledEngine")
            .field("dir", &self.dir)
            .field("shared", &self.shared)
            .finish_non_exhaustive()
    }
}

fn is_lock_error(e: &sled::Error) -> bool {
    matches!(e, sled::Error::Io(io) if io.to_string().contains("could not acquire lock"))
}

fn other(e: sled::Error) -> EngineError {
    EngineError::Other(e.to_string())
}

impl SledEngine {
    /// Open (or create) the sled database in `dir`. Fails with
    /// [`StoreError::InUse`] when another process holds it. `shared` = true
    /// only for tests of the store's shared mode.
    pub fn open(
        dir: &Path,
        cache_bytes: u64,
        commit_metrics: Option<CommitMetrics>,
        shared: bool,
    ) -> Result<Self, StoreError> {
        let io = |source| StoreError::Io {
            path: dir.to_path_buf(),
            source,
        };
        fsutil::create_private_dir(dir).map_err(io)?;
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(cache_bytes)
            .open()
            .map_err(|e| {
                if is_lock_error(&e) {
                    StoreError::InUse {
                        path: dir.to_path_buf(),
                    }
                } else {
                    StoreError::Engine(e.to_string())
                }
            })?;
        // New files (db, conf) must be reachable after a power cut.
        fsutil::sync_dir(dir).map_err(io)?;
        let trees = Tree::ALL
            .iter()
            .map(|t| db.open_tree(t.name()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| StoreError::Engine(e.to_string()))?;
        let commit =
            GroupCommit::start(db.clone(), trees.clone(), dir.to_path_buf(), commit_metrics)?;
        Ok(Self {
            db,
            dir: dir.to_path_buf(),
            trees,
            commit,
            space: space::Guard::new(),
            shared,
        })
    }

    fn tree(&self, tree: Tree) -> Result<&sled::Tree, EngineError> {
        self.trees
            .get(tree.index())
            .ok_or_else(|| EngineError::Other(format!("no tree {}", tree.name())))
    }

    /// A sled error on a write: an I/O error stops the engine (fail-stop).
    fn write_err(&self, e: sled::Error) -> EngineError {
        if matches!(e, sled::Error::Io(_)) {
            tracing::error!(error = %e, "a write to the store failed; the store stops until restarted");
            self.commit.mark_failed();
            EngineError::WriteFailed(e.to_string())
        } else {
            other(e)
        }
    }
}

/// A transaction's view of its trees: `slots[tree.index()]` is the position
/// of the tree among the views (`usize::MAX`: not in this transaction).
struct SledTx<'a> {
    views: &'a [TransactionalTree],
    slots: &'a [usize; Tree::ALL.len()],
}

impl SledTx<'_> {
    fn view(&self, tree: Tree) -> Result<&TransactionalTree, TxStop> {
        self.slots
            .get(tree.index())
            .and_then(|&i| self.views.get(i))
            .ok_or_else(|| {
                TxStop::Engine(EngineSignal::Failed(EngineError::Other(format!(
                    "tree {} is not part of this transaction",
                    tree.name()
                ))))
            })
    }
}

fn signal(e: UnabortableTransactionError) -> TxStop {
    TxStop::Engine(EngineSignal::Sled(e))
}

impl Tx for SledTx<'_> {
    fn get(&mut self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, TxStop> {
        let v = self.view(tree)?.get(key).map_err(signal)?;
        Ok(v.map(|v| v.to_vec()))
    }

    fn insert(&mut self, tree: Tree, key: &[u8], value: &[u8]) -> Result<(), TxStop> {
        self.view(tree)?.insert(key, value).map_err(signal)?;
        Ok(())
    }

    fn remove(&mut self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, TxStop> {
        let v = self.view(tree)?.remove(key).map_err(signal)?;
        Ok(v.map(|v| v.to_vec()))
    }
}

/// The duty of an engine that is not shared: always held.
#[derive(Debug)]
struct LocalDuty;

impl DutyGuard for LocalDuty {
    fn held(&self) -> bool {
        true
    }
}

impl Engine for SledEngine {
    fn kind(&self) -> &'static str {
        "sled"
    }

    fn shared(&self) -> bool {
        self.shared
    }

    fn group_commit(&self) -> Option<&GroupCommit> {
        Some(&self.commit)
    }

    fn check_writable(&self) -> Result<(), StoreError> {
        self.check_usable()?;
        self.space.check(&self.dir)
    }

    fn check_usable(&self) -> Result<(), StoreError> {
        if self.commit.healthy() {
            Ok(())
        } else {
            Err(StoreError::Failed)
        }
    }

    fn set_disk_reserve(&self, bytes: u64) {
        self.space.set_reserve(bytes);
    }

    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        let v = self.tree(tree)?.get(key).map_err(other)?;
        Ok(v.map(|v| v.to_vec()))
    }

    fn scan(
        &self,
        tree: Tree,
        range: Range,
        limit: usize,
        reverse: bool,
    ) -> Result<Vec<Pair>, EngineError> {
        let iter = self.tree(tree)?.range::<Vec<u8>, _>(range);
        let page = |kv: sled::Result<(sled::IVec, sled::IVec)>| {
            kv.map(|(k, v)| (k.to_vec(), v.to_vec())).map_err(other)
        };
        if reverse {
            iter.rev().take(limit).map(page).collect()
        } else {
            iter.take(limit).map(page).collect()
        }
    }

    fn len(&self, tree: Tree) -> Result<u64, EngineError> {
        Ok(self.tree(tree)?.len() as u64)
    }

    fn transaction(&self, trees: &[Tree], body: &Body<'_>) -> Result<(), TxFailed> {
        let mut slots = [usize::MAX; Tree::ALL.len()];
        let mut sled_trees = Vec::with_capacity(trees.len());
        for t in trees {
            if slots[t.index()] == usize::MAX {
                slots[t.index()] = sled_trees.len();
                sled_trees.push(self.tree(*t).map_err(TxFailed::Engine)?.clone());
            }
        }
        // The abort's reason: `None` for the body's own, or the engine's error.
        let r = sled_trees.as_slice().transaction(
            |views: &Vec<TransactionalTree>| -> Result<(), ConflictableTransactionError<Option<EngineError>>> {
                let mut tx = SledTx {
                    views,
                    slots: &slots,
                };
                match body(&mut tx) {
                    Ok(()) => Ok(()),
                    Err(TxStop::Abort) => Err(ConflictableTransactionError::Abort(None)),
                    Err(TxStop::Engine(EngineSignal::Sled(e))) => Err(e.into()),
                    Err(TxStop::Engine(EngineSignal::Retry)) => {
                        Err(ConflictableTransactionError::Conflict)
                    }
                    Err(TxStop::Engine(EngineSignal::Failed(e))) => {
                        Err(ConflictableTransactionError::Abort(Some(e)))
                    }
                }
            },
        );
        match r {
            Ok(()) => Ok(()),
            Err(TransactionError::Abort(None)) => Err(TxFailed::Aborted),
            Err(TransactionError::Abort(Some(e))) => Err(TxFailed::Engine(e)),
            Err(TransactionError::Storage(e)) => Err(TxFailed::Engine(self.write_err(e))),
        }
    }

    fn write(&self, ops: &[Op]) -> Result<(), EngineError> {
        for op in ops {
            let tree = self.tree(op.tree)?;
            let r = match &op.value {
                Some(v) => tree.insert(op.key.as_slice(), v.as_slice()).map(|_| ()),
                None => tree.remove(op.key.as_slice()).map(|_| ()),
            };
            r.map_err(|e| self.write_err(e))?;
        }
        Ok(())
    }

    fn take(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        let v = self
            .tree(tree)?
            .remove(key)
            .map_err(|e| self.write_err(e))?;
        Ok(v.map(|v| v.to_vec()))
    }

    fn dump(&self, trees: &[Tree]) -> Result<Dump, EngineError> {
        trees
            .iter()
            .map(|t| -> Result<(Tree, Vec<Pair>), EngineError> {
                let kvs = self
                    .tree(*t)?
                    .iter()
                    .map(|kv| kv.map(|(k, v)| (k.to_vec(), v.to_vec())).map_err(other))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok((*t, kvs))
            })
            .collect()
    }

    fn try_duty(&self, _name: &str) -> Result<Option<Box<dyn DutyGuard>>, EngineError> {
        Ok(Some(Box::new(LocalDuty)))
    }

    fn ready(&self) -> Result<(), EngineError> {
        if self.commit.healthy() {
            Ok(())
        } else {
            Err(EngineError::WriteFailed(
                "an earlier write to disk failed; restart the server".into(),
            ))
        }
    }

    fn size_on_disk(&self) -> Option<u64> {
        self.db.size_on_disk().ok()
    }

    fn shutdown(&self) {
        self.commit.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine(dir: &Path) -> SledEngine {
        SledEngine::open(dir, 8 << 20, None, false).unwrap()
    }

    #[test]
    fn transactions_read_their_writes_and_abort_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let e = engine(dir.path());
        e.transaction(&[Tree::Meta, Tree::Domains], &|tx| {
            tx.insert(Tree::Meta, b"k", b"v")?;
            assert_eq!(tx.get(Tree::Meta, b"k")?.as_deref(), Some(&b"v"[..]));
            tx.insert(Tree::Domains, b"d", b"1")?;
            Ok(())
        })
        .unwrap();
        let r = e.transaction(&[Tree::Meta], &|tx| {
            tx.insert(Tree::Meta, b"k", b"w")?;
            Err(TxStop::Abort)
        });
        assert!(matches!(r, Err(TxFailed::Aborted)), "{r:?}");
        assert_eq!(e.get(Tree::Meta, b"k").unwrap().as_deref(), Some(&b"v"[..]));
        // A tree not named is refused, not silently written.
        let r = e.transaction(&[Tree::Meta], &|tx| tx.insert(Tree::Audit, b"x", b"y"));
        assert!(matches!(r, Err(TxFailed::Engine(_))), "{r:?}");
        assert_eq!(e.len(Tree::Audit).unwrap(), 0);
        e.shutdown();
    }

    #[test]
    fn scans_page_both_ways_and_take_is_once() {
        let dir = tempfile::tempdir().unwrap();
        let e = engine(dir.path());
        let ops: Vec<Op> = (0u8..10)
            .map(|i| Op {
                tree: Tree::Audit,
                key: vec![i],
                value: Some(vec![i]),
            })
            .collect();
        e.write(&ops).unwrap();
        let page = e.scan(Tree::Audit, super::super::all(), 3, false).unwrap();
        assert_eq!(
            page.iter().map(|(k, _)| k[0]).collect::<Vec<_>>(),
            [0, 1, 2]
        );
        let from = (
            std::ops::Bound::Excluded(vec![2]),
            std::ops::Bound::Unbounded,
        );
        let page = e.scan(Tree::Audit, from, 2, false).unwrap();
        assert_eq!(page.iter().map(|(k, _)| k[0]).collect::<Vec<_>>(), [3, 4]);
        let last = e.scan(Tree::Audit, super::super::all(), 1, true).unwrap();
        assert_eq!(last[0].0, vec![9]);
        assert_eq!(e.take(Tree::Audit, &[4]).unwrap(), Some(vec![4]));
        assert_eq!(e.take(Tree::Audit, &[4]).unwrap(), None);
        let dump = e.dump(&[Tree::Audit, Tree::Meta]).unwrap();
        assert_eq!(dump[0].1.len(), 9);
        assert!(dump[1].1.is_empty());
        assert!(e.try_duty("prune").unwrap().unwrap().held());
        assert!(e.ready().is_ok());
        e.shutdown();
    }
}
