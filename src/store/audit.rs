//! The audit trail (`audit`: monotonic id → entry): appending an event on its
//! own, paging through events, and pruning old ones behind a checkpoint the
//! chain goes on from (the chain itself: `chain`, its check: `verify`).

use std::ops::Bound;

use super::chain::{anchor_bytes, link_of, Link, META_AUDIT_HEAD};
use super::engine::{Op, Tree, Tx};
use super::records::{self, decode_audit, StoredAudit, GENESIS};
use super::{
    caller, key_id, store_only, Abort, AuditBody, AuditCheckpoint, AuditRecord, Store, StoreError,
    TxResult,
};

/// Events removed per pruning step (each in one batch, in one writer's turn).
const PRUNE_STEP: usize = 1024;
/// In shared mode: each step is one transaction, whose reads and writes must
/// stay within what one etcd transaction takes (128 operations).
const SHARED_PRUNE_STEP: usize = 100;
/// In shared mode: a step that found its events changed is read again, this
/// many times at most.
const SHARED_PRUNE_ATTEMPTS: usize = 8;

pub(super) fn audit_key_id(key: &[u8]) -> Result<u64, StoreError> {
    key_id(Tree::Audit, key)
}

/// What one pruning step removes: the entries (with the bytes they were read
/// with), the checkpoint's counts, and the link of the last event removed.
#[derive(Default)]
struct Step {
    remove: Vec<(Vec<u8>, Vec<u8>)>,
    removed: usize,
    pruned_before: u64,
    last: Option<Link>,
    more: bool,
}

/// A pruning step found an entry changed since it was read.
#[derive(Debug)]
struct Changed;

/// In a transaction: remove a step's entries and write its checkpoint;
/// with `check`, only if every entry is still as it was read (otherwise the
/// transaction aborts with [`Changed`]).
fn remove_step(
    tx: &mut dyn Tx,
    step: &Step,
    checkpoint: &Option<Op>,
    check: bool,
) -> TxResult<(), Changed> {
    for (k, v) in &step.remove {
        let old = tx.remove(Tree::Audit, k)?;
        if check && old.as_deref() != Some(v.as_slice()) {
            return Err(caller(Changed));
        }
    }
    if let Some(Op {
        key,
        value: Some(bytes),
        ..
    }) = checkpoint
    {
        tx.insert(Tree::Audit, key, bytes)?;
    }
    Ok(())
}

/// A step without the check never finds an entry changed.
fn changed_is_engine(a: Abort<Changed>) -> StoreError {
    match a {
        Abort::Store(e) => e,
        Abort::Caller(Changed) => StoreError::Engine("pruning found its events changed".into()),
    }
}

impl Store {
    /// Append an event on its own (for actions that change no record: a key
    /// rotation, a backup). Durable when this returns.
    pub async fn append_audit(&self, event: &AuditRecord) -> Result<(), StoreError> {
        if self.shared {
            store_only(
                self.apply_audited(&[Tree::Audit], |tx, slot| slot.write(tx, event.clone())),
            )?;
        } else {
            let (mut head, _gate) = self.writer_turn()?;
            let slot = self.audit_slot(&head)?;
            let bytes = slot.seal(event.clone())?;
            self.engine.write(&[Op {
                tree: Tree::Audit,
                key: slot.key().to_vec(),
                value: Some(bytes),
            }])?;
            self.advance(&mut head, &slot);
        }
        self.durable().await
    }

    /// Events with id greater than `after` (oldest first) passing `filter`, at
    /// most `limit`; returns them with their ids. Checkpoints are not events.
    pub fn audit_page(
        &self,
        after: Option<u64>,
        limit: usize,
        filter: impl Fn(&AuditRecord) -> bool,
    ) -> Result<Vec<(u64, AuditRecord)>, StoreError> {
        self.usable()?;
        let start = after.map_or(0, |a| a.saturating_add(1));
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        for kv in self.entries_from(Tree::Audit, Bound::Included(start.to_be_bytes().to_vec())) {
            let (k, v) = kv?;
            let record = match decode_audit(&k, &v)? {
                StoredAudit::Legacy(r) => r,
                StoredAudit::Chained { entry, .. } => match entry.body {
                    AuditBody::Event(r) => r,
                    AuditBody::Checkpoint(_) => continue,
                },
            };
            if filter(&record) {
                let id = <[u8; 8]>::try_from(k.as_slice())
                    .map(u64::from_be_bytes)
                    .unwrap_or_default();
                out.push((id, record));
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Remove events older than `before` (microseconds). Returns how many.
    ///
    /// Each step removes up to `PRUNE_STEP` events in one atomic batch in a
    /// writer's turn (so a backup never sees half a step, and the chain's head is
    /// not moved under it), and puts a checkpoint in place of the last event it
    /// removed, MAC'd, carrying that event's MAC: the chain verifies from there on.
    pub async fn prune_audit(&self, before: i64) -> Result<usize, StoreError> {
        let mut removed = 0;
        loop {
            let (n, more) = self.prune_step(before)?;
            removed += n;
            if !more {
                break;
            }
            tokio::task::yield_now().await;
        }
        if removed > 0 {
            self.durable().await?;
        }
        Ok(removed)
    }

    /// What the next step removes, read from the start of the trail.
    fn plan_step(&self, before: i64, max: usize) -> Result<Step, StoreError> {
        let mut step = Step::default();
        for kv in self.entries(Tree::Audit) {
            let (k, v) = kv?;
            let id = audit_key_id(&k)?;
            let stored = decode_audit(&k, &v)?;
            let at = match &stored {
                StoredAudit::Legacy(r) => r.at,
                StoredAudit::Chained { entry, .. } => match &entry.body {
                    AuditBody::Event(r) => r.at,
                    AuditBody::Checkpoint(c) => {
                        // The previous checkpoint goes if anything after it does.
                        step.pruned_before = step.pruned_before.saturating_add(c.pruned);
                        step.last = Some(link_of(id, &stored));
                        step.remove.push((k, v));
                        continue;
                    }
                },
            };
            if at >= before {
                break;
            }
            if step.removed == max {
                step.more = true;
                break;
            }
            step.last = Some(link_of(id, &stored));
            step.remove.push((k, v));
            step.removed += 1;
        }
        Ok(step)
    }

    /// The checkpoint that replaces the last event a step removes (when the
    /// trail is chained): its key and bytes.
    fn checkpoint(&self, before: i64, step: &Step, last: Link) -> Result<Option<Op>, StoreError> {
        let Some(m) = self.anchor.mac.get() else {
            return Ok(None);
        };
        let checkpoint = AuditBody::Checkpoint(AuditCheckpoint {
            cutoff: before,
            pruned: step.pruned_before.saturating_add(step.removed as u64),
            link: last.mac,
        });
        let id = last.id.to_be_bytes();
        let (bytes, _) = records::encode_chained(0, &checkpoint, |signed| {
            m.mac(&[records::AUDIT_ENTRY_LABEL, &id, &GENESIS, signed])
        })?;
        Ok(Some(Op {
            tree: Tree::Audit,
            key: id.to_vec(),
            value: Some(bytes),
        }))
    }

    /// One step of [`Store::prune_audit`]: how many it removed, and whether more
    /// may be due.
    fn prune_step(&self, before: i64) -> Result<(usize, bool), StoreError> {
        if self.shared {
            return self.prune_step_shared(before);
        }
        let (head, _gate) = self.writer_turn()?;
        let step = self.plan_step(before, PRUNE_STEP)?;
        let Some(last) = step.last.filter(|_| step.removed > 0) else {
            return Ok((0, false));
        };
        let checkpoint = self.checkpoint(before, &step, last)?;
        if checkpoint.is_some() {
            // The anchor at the head first (the group commit may not have
            // written it yet), so the one on disk never names a pruned event.
            if let (Some(m), false) = (self.anchor.mac.get(), self.anchor.is_lost()) {
                self.engine.write(&[Op {
                    tree: Tree::Meta,
                    key: META_AUDIT_HEAD.to_vec(),
                    value: Some(anchor_bytes(head.link, m.as_ref())),
                }])?;
            }
        }
        // One atomic batch: a crash never leaves events removed without
        // their checkpoint.
        self.transact(&[Tree::Audit], |tx| {
            remove_step(tx, &step, &checkpoint, false)
        })
        .map_err(changed_is_engine)?;
        Ok((step.removed, step.more))
    }

    /// A pruning step in shared mode: one transaction that removes the entries
    /// only as they were read (another node may prune or append meanwhile),
    /// and writes the checkpoint. The anchor needs no write: it is always the
    /// head, which pruning keeps verifying (the checkpoint carries its link).
    fn prune_step_shared(&self, before: i64) -> Result<(usize, bool), StoreError> {
        for _ in 0..SHARED_PRUNE_ATTEMPTS {
            let _turn = self.writer_turn()?;
            let step = self.plan_step(before, SHARED_PRUNE_STEP)?;
            let Some(last) = step.last.filter(|_| step.removed > 0) else {
                return Ok((0, false));
            };
            let checkpoint = self.checkpoint(before, &step, last)?;
            match self.transact(&[Tree::Audit], |tx| {
                remove_step(tx, &step, &checkpoint, true)
            }) {
                Ok(()) => return Ok((step.removed, step.more)),
                Err(Abort::Caller(Changed)) => continue,
                Err(Abort::Store(e)) => return Err(e),
            }
        }
        Err(StoreError::Unavailable(
            "the audit trail kept changing while it was pruned".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::records::encode;
    use crate::store::test_util::*;

    #[actix_web::test]
    async fn pruning_leaves_a_checkpoint_the_chain_verifies_from() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_chained(dir.path());
        for n in 1..=10 {
            store.append_audit(&numbered(n)).await.unwrap();
        }
        assert_eq!(store.prune_audit(4).await.unwrap(), 3);
        assert_eq!(ids(&store), [3, 4, 5, 6, 7, 8, 9, 10]);
        let r = store.verify_audit_chain(&KEY).unwrap();
        assert_eq!((r.events, r.pruned, r.broken), (7, 3, None));
        // The checkpoint is no event.
        let page = store.audit_page(None, 100, |_| true).unwrap();
        assert_eq!(page.first().map(|(id, _)| *id), Some(4));
        // Pruning again replaces it; everything, then a new event.
        assert_eq!(store.prune_audit(8).await.unwrap(), 4);
        assert_eq!(ids(&store), [7, 8, 9, 10]);
        assert_eq!(store.verify_audit_chain(&KEY).unwrap().pruned, 7);
        assert_eq!(broken(&store), None);
        assert_eq!(store.prune_audit(100).await.unwrap(), 3);
        assert_eq!(ids(&store), [10]);
        assert_eq!(broken(&store), None);
        store.append_audit(&numbered(11)).await.unwrap();
        let r = store.verify_audit_chain(&KEY).unwrap();
        assert_eq!((r.events, r.pruned, r.broken), (1, 10, None));
        // A checkpoint cannot be forged or edited: removing events before the next
        // one breaks the chain at it.
        store
            .engine
            .write(&[op(Tree::Audit, &10u64.to_be_bytes(), None)])
            .unwrap();
        assert_eq!(broken(&store).unwrap().0, Some(11));
    }

    #[actix_web::test]
    async fn pruning_in_steps_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_chained(dir.path());
        let n = PRUNE_STEP as u64 * 2 + 5;
        for i in 1..=n {
            store.append_audit(&numbered(i)).await.unwrap();
        }
        assert_eq!(store.prune_audit(n as i64).await.unwrap(), n as usize - 1);
        let r = store.verify_audit_chain(&KEY).unwrap();
        assert_eq!((r.events, r.pruned, r.broken), (1, n - 1, None));
    }

    /// Events written before the chain (version 1) are counted as legacy, and
    /// the chain starts after the last of them, also across pruning.
    #[actix_web::test]
    async fn legacy_events_are_counted_and_the_chain_starts_after_them() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = open(dir.path());
            for n in 1..=4 {
                store.append_audit(&numbered(n)).await.unwrap();
            }
            assert_eq!(raw(&store, 1)[0], 1, "no MAC: a legacy event");
            store.shutdown();
        }
        let store = open_chained(dir.path());
        for n in 5..=6 {
            store.append_audit(&numbered(n)).await.unwrap();
        }
        let r = store.verify_audit_chain(&KEY).unwrap();
        assert_eq!((r.events, r.legacy, r.broken), (6, 4, None));
        assert_eq!(store.prune_audit(3).await.unwrap(), 2);
        let r = store.verify_audit_chain(&KEY).unwrap();
        assert_eq!((r.events, r.legacy, r.pruned, r.broken), (4, 2, 2, None));
        // Legacy events are not authenticated (editing one is not seen) but none
        // may follow the chain's start.
        store
            .engine
            .write(&[op(
                Tree::Audit,
                &7u64.to_be_bytes(),
                Some(&encode(&numbered(7)).unwrap()),
            )])
            .unwrap();
        let (id, why) = broken(&store).unwrap();
        assert_eq!(id, Some(7), "{why}");
        assert!(why.contains("unauthenticated"), "{why}");
    }
}
