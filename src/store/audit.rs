//! The audit trail (`audit`: monotonic id → entry): appending an event on its
//! own, paging through events, and pruning old ones behind a checkpoint the
//! chain goes on from (the chain itself: `chain`, its check: `verify`).

use super::chain::{anchor_bytes, link_of, Link, META_AUDIT_HEAD};
use super::records::{self, decode_audit, StoredAudit, GENESIS};
use super::{AuditBody, AuditCheckpoint, AuditRecord, Store, StoreError};

/// Events removed per pruning step (each in one batch, in one writer's turn).
const PRUNE_STEP: usize = 1024;

pub(super) fn audit_key_id(key: &[u8]) -> Result<u64, StoreError> {
    <[u8; 8]>::try_from(key)
        .map(u64::from_be_bytes)
        .map_err(|_| StoreError::Corrupt {
            tree: "audit",
            key: String::from_utf8_lossy(key).into_owned(),
            reason: "key is not an 8-byte id".into(),
        })
}

impl Store {
    /// Append an event on its own (for actions that change no record: a key
    /// rotation, a backup). Durable when this returns.
    pub async fn append_audit(&self, event: &AuditRecord) -> Result<(), StoreError> {
        {
            let (mut head, _gate) = self.writer_turn()?;
            let slot = self.audit_slot(&head)?;
            let bytes = slot.seal(event.clone())?;
            self.audit
                .insert(slot.key(), bytes)
                .map_err(|e| self.sled_err(e))?;
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
        for kv in self.audit.range(start.to_be_bytes()..) {
            let (k, v) = kv?;
            let record = match decode_audit(&k, &v)? {
                StoredAudit::Legacy(r) => r,
                StoredAudit::Chained { entry, .. } => match entry.body {
                    AuditBody::Event(r) => r,
                    AuditBody::Checkpoint(_) => continue,
                },
            };
            if filter(&record) {
                let id = <[u8; 8]>::try_from(k.as_ref())
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

    /// One step of [`Store::prune_audit`]: how many it removed, and whether more
    /// may be due.
    fn prune_step(&self, before: i64) -> Result<(usize, bool), StoreError> {
        let (head, _gate) = self.writer_turn()?;
        let mut batch = sled::Batch::default();
        let mut removed = 0usize;
        let mut pruned_before = 0u64;
        let mut last: Option<Link> = None;
        let mut more = false;
        for kv in self.audit.iter() {
            let (k, v) = kv?;
            let id = audit_key_id(&k)?;
            let stored = decode_audit(&k, &v)?;
            let at = match &stored {
                StoredAudit::Legacy(r) => r.at,
                StoredAudit::Chained { entry, .. } => match &entry.body {
                    AuditBody::Event(r) => r.at,
                    AuditBody::Checkpoint(c) => {
                        // The previous checkpoint goes if anything after it does.
                        pruned_before = pruned_before.saturating_add(c.pruned);
                        batch.remove(k);
                        last = Some(link_of(id, &stored));
                        continue;
                    }
                },
            };
            if at >= before {
                break;
            }
            if removed == PRUNE_STEP {
                more = true;
                break;
            }
            batch.remove(k);
            removed += 1;
            last = Some(link_of(id, &stored));
        }
        let Some(last) = last.filter(|_| removed > 0) else {
            return Ok((0, false));
        };
        if let Some(m) = self.anchor.mac.get() {
            let checkpoint = AuditBody::Checkpoint(AuditCheckpoint {
                cutoff: before,
                pruned: pruned_before.saturating_add(removed as u64),
                link: last.mac,
            });
            let id = last.id.to_be_bytes();
            let (bytes, _) = records::encode_chained(0, &checkpoint, |signed| {
                m.mac(&[records::AUDIT_ENTRY_LABEL, &id, &GENESIS, signed])
            })?;
            batch.insert(&id, bytes);
            // The anchor at the head first (the group commit may not have
            // written it yet), so the one on disk never names a pruned event.
            if !self.anchor.is_lost() {
                self.meta
                    .insert(META_AUDIT_HEAD, anchor_bytes(head.link, m.as_ref()))
                    .map_err(|e| self.sled_err(e))?;
            }
        }
        self.audit
            .apply_batch(batch)
            .map_err(|e| self.sled_err(e))?;
        Ok((removed, more))
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
        store.audit.remove(10u64.to_be_bytes()).unwrap();
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
            .audit
            .insert(7u64.to_be_bytes(), encode(&numbered(7)).unwrap())
            .unwrap();
        let (id, why) = broken(&store).unwrap();
        assert_eq!(id, Some(7), "{why}");
        assert!(why.contains("unauthenticated"), "{why}");
    }
}
