//! The writer gate: who may write, and when.
//!
//! A writer's turn takes the write-order lock (writers of configs and audit
//! events take turns, so events become visible in id order, the audit chain's
//! head moves one event at a time, and no config update is lost), then the
//! gate shared; a backup or the final step of a key rotation holds the gate
//! exclusively ([`Store::exclusive`]), so it sees no write half-way. Every read
//! and write first asks whether the store is still usable (fail-stop: after a
//! failed write, memory may hold changes that are not on disk).

use std::sync::PoisonError;

use sled::transaction::TransactionError;

use super::chain::{AuditSlot, ChainHead};
use super::{Abort, Store, StoreError};

impl Store {
    /// Every read and write first: after a failed group commit, memory may hold
    /// changes that are not on disk, so nothing is served from it any more.
    pub(super) fn usable(&self) -> Result<(), StoreError> {
        if self.commit.healthy() {
            Ok(())
        } else {
            Err(StoreError::Failed)
        }
    }

    /// Every write first: usable, and room on disk (checked before sled is touched).
    pub(super) fn writable(&self) -> Result<(), StoreError> {
        self.usable()?;
        self.space.check(&self.dir)
    }

    /// A sled I/O error on a write means its log could not be written (a full
    /// disk, a failing device): sled keeps the change in memory, so the store
    /// stops for good, like a failed group commit (fail-stop), rather than serve
    /// what may not be on disk.
    pub(super) fn sled_err(&self, e: sled::Error) -> StoreError {
        if matches!(e, sled::Error::Io(_)) {
            tracing::error!(error = %e, "a write to the store failed; the store stops until restarted");
            self.commit.mark_failed();
            StoreError::Failed
        } else {
            StoreError::Sled(e)
        }
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

    /// Apply an audited mutation in a writer's turn: its event id is taken, its
    /// event chained to the head, and its transaction applied before the next
    /// writer's.
    pub(super) fn apply_audited<T, E>(
        &self,
        tx: impl FnOnce(&AuditSlot<'_>) -> Result<T, TransactionError<Abort<E>>>,
    ) -> Result<T, Abort<E>> {
        let (mut head, _gate) = self.writer_turn()?;
        let slot = self.audit_slot(&head)?;
        let out = self.flatten(tx(&slot))?;
        self.advance(&mut head, &slot);
        Ok(out)
    }

    fn flatten<T, E>(&self, r: Result<T, TransactionError<Abort<E>>>) -> Result<T, Abort<E>> {
        match r {
            Ok(v) => Ok(v),
            Err(TransactionError::Abort(a)) => Err(a),
            Err(TransactionError::Storage(e)) => Err(Abort::Store(self.sled_err(e))),
        }
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
        store.commit.mark_failed();
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
        assert_eq!(store.audit.len(), 2);
        assert_eq!(
            store.meta.get(b"term_uses/\0\0\0\x01").unwrap().as_deref(),
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
                assert_eq!(store.audit.len(), 3);
            });
        });
        assert!(done.load(std::sync::atomic::Ordering::SeqCst));
        assert_eq!(store.audit.len(), 0);
    }
}
