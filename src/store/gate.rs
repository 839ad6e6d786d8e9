//! The writer gate: who may write, and when.
//!
//! A writer's turn takes the write-order lock (writers of configs and audit
//! events take turns, so events become visible in id order, the audit chain's
//! head moves one event at a time, and no config update is lost), then the
//! gate shared; a backup or the final step of a key rotation holds the gate
//! exclusively ([`Store::exclusive`]), so it sees no write half-way. Every read
//! and write first asks whether the store is still usable (fail-stop: after a
//! failed write, memory may hold changes that are not on disk).

use std::sync::{Mutex, PoisonError};

use super::chain::{AuditSlot, ChainHead};
use super::engine::{Tree, Tx, TxFailed, TxStop};
use super::{Abort, Stop, Store, StoreError, TxResult};

/// `meta` key of the keyring (stored there by a shared installation).
pub(super) const META_KEYRING: &[u8] = b"keyring";

impl Store {
    /// Every read and write first: after a failed write, memory may hold
    /// changes that are not on disk, so nothing is served from it any more.
    pub(super) fn usable(&self) -> Result<(), StoreError> {
        self.engine.check_usable()
    }

    /// Every write first: usable, and room on disk (checked before the engine
    /// is touched).
    pub(super) fn writable(&self) -> Result<(), StoreError> {
        self.engine.check_writable()
    }

    /// A writer's turn: refused when the store cannot write; then the write-order
    /// lock (writers of configs and audit events take turns, so events become
    /// visible in id order and no config update is lost) and the shared gate (a
    /// backup sees no write half-way).
    pub(super) fn writer_turn(
        &self,
    ) -> Result<
        (
            std::sync::MutexGuard<'_, ChainHead>,
            std::sync::RwLockReadGuard<'_, ()>,
        ),
        StoreError,
    > {
        self.writable()?;
        let order = self
            .write_order
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        Ok((order, self.shared()))
    }

    /// Run `body` as one engine transaction over `trees` (in shared mode
    /// `meta` too: the keyring guard and the chain's head are read there).
    /// The body may run more than once; what the last run returned, or the
    /// refusal it stopped with, is the result.
    pub(super) fn transact<T, E>(
        &self,
        trees: &[Tree],
        body: impl Fn(&mut dyn Tx) -> TxResult<T, E>,
    ) -> Result<T, Abort<E>> {
        let mut all = trees.to_vec();
        if self.shared && !all.contains(&Tree::Meta) {
            all.push(Tree::Meta);
        }
        let out: Mutex<Option<Result<T, Abort<E>>>> = Mutex::new(None);
        let keep = |r| *out.lock().unwrap_or_else(PoisonError::into_inner) = Some(r);
        let r = self.engine.transaction(&all, &|tx| match body(tx) {
            Ok(v) => {
                keep(Ok(v));
                Ok(())
            }
            Err(Stop::Tx(s)) => Err(s),
            Err(Stop::Abort(a)) => {
                keep(Err(a));
                Err(TxStop::Abort)
            }
        });
        let out = out.into_inner().unwrap_or_else(PoisonError::into_inner);
        match (r, out) {
            (Ok(()), Some(Ok(v))) => Ok(v),
            (Err(TxFailed::Aborted), Some(Err(a))) => Err(a),
            (Err(TxFailed::Engine(e)), _) => Err(Abort::Store(e.into())),
            _ => Err(Abort::Store(StoreError::Engine(
                "a transaction ended without its body's result".into(),
            ))),
        }
    }

    /// Apply an audited mutation in a writer's turn: its event id is taken, its
    /// event chained to the head (`slot.write`), and its transaction applied
    /// before the next writer's.
    pub(super) fn apply_audited<T, E>(
        &self,
        trees: &[Tree],
        body: impl Fn(&mut dyn Tx, &AuditSlot<'_>) -> TxResult<T, E>,
    ) -> Result<T, Abort<E>> {
        self.apply_audited_then(trees, body, |_| {})
    }

    /// [`Store::apply_audited`], then `after` with the result while the turn
    /// is still held (the in-memory counts change in the order of the writes).
    pub(super) fn apply_audited_then<T, E>(
        &self,
        trees: &[Tree],
        body: impl Fn(&mut dyn Tx, &AuditSlot<'_>) -> TxResult<T, E>,
        after: impl FnOnce(&T),
    ) -> Result<T, Abort<E>> {
        let (mut head, _gate) = self.writer_turn()?;
        let slot = self.audit_slot(&head)?;
        let out = self.transact(trees, |tx| {
            slot.attempt(tx)?;
            body(tx, &slot)
        })?;
        self.advance(&mut head, &slot);
        after(&out);
        Ok(out)
    }

    /// In shared mode, in a transaction that writes a sealed value: the keyring
    /// stored in `meta` must still be the one the value was sealed with (the
    /// guard), or another node rotated it and the write aborts.
    pub(super) fn check_keyring<E>(&self, tx: &mut dyn Tx) -> TxResult<(), E> {
        if !self.shared {
            return Ok(());
        }
        let guard = self
            .keyring_guard
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let Some(expected) = guard else {
            return Ok(());
        };
        if tx.get(Tree::Meta, META_KEYRING)?.as_deref() != Some(expected.as_slice()) {
            return Err(StoreError::KeyringChanged.into());
        }
        Ok(())
    }

    /// Held shared by every mutation while it applies.
    pub(super) fn shared(&self) -> std::sync::RwLockReadGuard<'_, ()> {
        self.gate
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Run `f` while no mutation is applying (for backups and key-term drops).
    pub fn exclusive<T>(&self, f: impl FnOnce() -> T) -> T {
        let _guard = self
            .gate
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f()
    }
}

/// Fail-stop gaps (issue 11 item 17), and the gate pruning waits for.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_util::*;

    #[actix_web::test]
    async fn a_stopped_store_serves_no_config_audit_page_pruning_or_term_use() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let d = store.create_domain("a.example", 1, |_| ev()).await.unwrap();
        store
            .upsert_config(d.id, |_, id| Ok::<_, ()>(config(id, d.id, "x")))
            .await
            .unwrap();
        store.reserve_term_uses(1, 10).unwrap();
        store.engine.group_commit().unwrap().mark_failed();
        assert!(matches!(
            store.configs().next(),
            Some(Err(StoreError::Failed))
        ));
        assert!(matches!(
            store.audit_page(None, 10, |_| true),
            Err(StoreError::Failed)
        ));
        assert!(matches!(store.term_uses(1), Err(StoreError::Failed)));
        assert!(matches!(
            store.reserve_term_uses(1, 20),
            Err(StoreError::Failed)
        ));
        assert!(matches!(
            store.prune_audit(i64::MAX).await,
            Err(StoreError::Failed)
        ));
        // Nothing was removed or written behind the refusal.
        assert_eq!(store.engine.len(Tree::Audit).unwrap(), 2);
        assert_eq!(
            store
                .engine
                .get(Tree::Meta, b"term_uses/\0\0\0\x01")
                .unwrap()
                .as_deref(),
            Some(&10u64.to_be_bytes()[..])
        );
    }

    /// Pruning takes a writer's turn: while a backup holds the gate, it waits.
    #[test]
    fn pruning_waits_for_the_gate() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let rt = || {
            tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap()
        };
        rt().block_on(async {
            for n in 1..=3 {
                store.append_audit(&numbered(n)).await.unwrap();
            }
        });
        let done = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            store.exclusive(|| {
                s.spawn(|| {
                    let n = rt().block_on(store.prune_audit(i64::MAX)).unwrap();
                    done.store(true, std::sync::atomic::Ordering::SeqCst);
                    assert_eq!(n, 3);
                });
                std::thread::sleep(std::time::Duration::from_millis(300));
                // What a backup reads here: the whole trail, nothing pruned.
                assert!(!done.load(std::sync::atomic::Ordering::SeqCst));
                assert_eq!(store.engine.len(Tree::Audit).unwrap(), 3);
            });
        });
        assert!(done.load(std::sync::atomic::Ordering::SeqCst));
        assert_eq!(store.engine.len(Tree::Audit).unwrap(), 0);
    }
}
