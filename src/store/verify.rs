//! Checking the audit trail's MAC chain ([`Store::verify_audit_chain`]): what
//! `oidcvault verify` reports about tampering.

use super::audit::audit_key_id;
use super::chain::{link_of, parse_anchor, AuditMac, META_AUDIT_HEAD, START};
use super::engine::Tree;
use super::records::{self, decode_audit, StoredAudit, GENESIS};
use super::{AuditBody, AuditEntry, Store, StoreError};

/// What [`Store::verify_audit_chain`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditChainReport {
    /// Events stored (legacy and chained; checkpoints not counted).
    pub events: u64,
    /// Events written before the chain (version 1, no MAC): not authenticated.
    pub legacy: u64,
    /// Events removed by pruning, as the checkpoint records them.
    pub pruned: u64,
    /// The first entry that breaks the chain (`None`: the trail as a whole, or
    /// the anchor) and why; `None` when the chain verifies.
    pub broken: Option<(Option<u64>, String)>,
}

impl Store {
    /// Walk the audit trail and check its chain under `mac`: every chained
    /// entry's MAC, that it follows the entry it names, that no unauthenticated
    /// event comes after the chain began, and that the anchored head is there.
    /// Events written before the chain (version 1) are counted as legacy.
    pub fn verify_audit_chain(&self, mac: &dyn AuditMac) -> Result<AuditChainReport, StoreError> {
        use subtle::ConstantTimeEq;
        self.usable()?;
        let mut report = AuditChainReport::default();
        // Read before the walk: a write meanwhile only moves the head further on.
        let anchor = self.engine.get(Tree::Meta, META_AUDIT_HEAD)?;
        let anchor = match anchor.as_deref().map(parse_anchor) {
            None => None,
            Some(None) => {
                report.broken = Some((None, "the anchor of the trail's head is malformed".into()));
                None
            }
            Some(Some((head, tag))) => {
                let id = head.id.to_be_bytes();
                let expected = mac.mac(&[records::AUDIT_HEAD_LABEL, &id, &head.mac]);
                if !bool::from(expected.ct_eq(&tag)) {
                    report.broken = Some((
                        None,
                        "the anchor of the trail's head fails its MAC (altered, or written \
                         under another key)"
                            .into(),
                    ));
                }
                Some(head)
            }
        };
        let mut link = START;
        let mut started = false;
        let mut first = true;
        let mut anchor_found = anchor == Some(START);
        for kv in self.entries(Tree::Audit) {
            let (k, v) = kv?;
            let stored = audit_key_id(&k).and_then(|id| Ok((id, decode_audit(&k, &v)?)));
            let is_event = !matches!(
                &stored,
                Ok((
                    _,
                    StoredAudit::Chained {
                        entry: AuditEntry {
                            body: AuditBody::Checkpoint(_),
                            ..
                        },
                        ..
                    }
                ))
            );
            if is_event {
                report.events += 1;
            }
            let was_first = std::mem::replace(&mut first, false);
            if report.broken.is_some() {
                continue;
            }
            let (id, stored) = match stored {
                Ok(s) => s,
                Err(e) => {
                    let id = <[u8; 8]>::try_from(k.as_slice())
                        .ok()
                        .map(u64::from_be_bytes);
                    report.broken = Some((id, e.to_string()));
                    continue;
                }
            };
            let problem = match &stored {
                StoredAudit::Legacy(_) if started => Some(
                    "an unauthenticated (version 1) event after the chain began: inserted".into(),
                ),
                StoredAudit::Legacy(_) => {
                    report.legacy += 1;
                    None
                }
                StoredAudit::Chained { entry, signed } => {
                    let key = id.to_be_bytes();
                    match &entry.body {
                        AuditBody::Checkpoint(c) => {
                            let expected =
                                mac.mac(&[records::AUDIT_ENTRY_LABEL, &key, &GENESIS, signed]);
                            if !was_first {
                                Some(
                                    "a pruning checkpoint that is not the trail's first entry"
                                        .into(),
                                )
                            } else if !bool::from(expected.ct_eq(&entry.mac)) {
                                Some(
                                    "the pruning checkpoint fails its MAC (altered, or moved)"
                                        .into(),
                                )
                            } else {
                                report.pruned = c.pruned;
                                started = c.link != GENESIS;
                                None
                            }
                        }
                        AuditBody::Event(_) => {
                            let expected =
                                mac.mac(&[records::AUDIT_ENTRY_LABEL, &key, &link.mac, signed]);
                            if entry.prev_id != link.id {
                                Some(format!(
                                    "it chains to event {}, but the entry before it is {}: an \
                                     event was removed, inserted or moved",
                                    entry.prev_id,
                                    match link.id {
                                        0 => "none".to_owned(),
                                        id => format!("event {id}"),
                                    }
                                ))
                            } else if !bool::from(expected.ct_eq(&entry.mac)) {
                                Some(
                                    "its MAC does not match: the event was altered or moved, or \
                                     the one before it was"
                                        .into(),
                                )
                            } else {
                                started = true;
                                None
                            }
                        }
                    }
                }
            };
            if let Some(why) = problem {
                report.broken = Some((Some(id), why));
                continue;
            }
            link = link_of(id, &stored);
            if anchor.is_some_and(|a| a.id == id) {
                anchor_found = anchor == Some(link);
            }
        }
        if report.broken.is_none() {
            match anchor {
                Some(a) if !anchor_found => {
                    report.broken = Some((
                        Some(a.id),
                        format!(
                            "the trail's head, event {}, is missing or altered: the trail was \
                             cut after event {}",
                            a.id, link.id
                        ),
                    ));
                }
                None if started => {
                    report.broken = Some((
                        None,
                        "the anchor of the trail's head is missing (removed from the store)".into(),
                    ));
                }
                _ => {}
            }
        }
        Ok(report)
    }
}

/// Tampering with the audit chain (issue 11 item 6).
#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::records::{decode, encode};
    use crate::store::test_util::*;

    #[actix_web::test]
    async fn an_intact_chain_verifies_and_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = open_chained(dir.path());
            trail(&store).await;
            assert_eq!(ids(&store), [1, 2, 3, 4, 5, 6, 8, 9, 10, 11]);
            let r = store.verify_audit_chain(&KEY).unwrap();
            assert_eq!((r.events, r.legacy, r.broken), (10, 0, None));
            // Under another key nothing verifies.
            assert!(store
                .verify_audit_chain(&TestMac([8; 32]))
                .unwrap()
                .broken
                .is_some());
            store.shutdown();
        }
        let store = open_chained(dir.path());
        store.append_audit(&numbered(12)).await.unwrap();
        assert_eq!(broken(&store), None);
        assert_eq!(store.audit_page(None, 100, |_| true).unwrap().len(), 11);
    }

    #[actix_web::test]
    async fn an_edited_event_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_chained(dir.path());
        trail(&store).await;
        let mut entry: AuditEntry = decode("audit", b"", &raw(&store, 9)).unwrap();
        let AuditBody::Event(e) = &mut entry.body else {
            panic!("not an event")
        };
        e.detail = Some("nothing happened".into());
        put(&store, Tree::Audit, 9, Some(&encode(&entry).unwrap()));
        let (id, why) = broken(&store).unwrap();
        assert_eq!(id, Some(9), "{why}");
        assert!(why.contains("MAC does not match"), "{why}");
    }

    #[actix_web::test]
    async fn an_event_removed_from_the_middle_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_chained(dir.path());
        trail(&store).await;
        put(&store, Tree::Audit, 4, None);
        let (id, why) = broken(&store).unwrap();
        assert_eq!(id, Some(5), "{why}");
        assert!(why.contains("event 4"), "{why}");
    }

    #[actix_web::test]
    async fn swapped_events_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_chained(dir.path());
        trail(&store).await;
        let (a, b) = (raw(&store, 8), raw(&store, 9));
        put(&store, Tree::Audit, 8, Some(&b));
        put(&store, Tree::Audit, 9, Some(&a));
        assert_eq!(broken(&store).unwrap().0, Some(8));
    }

    #[actix_web::test]
    async fn an_event_inserted_in_the_chain_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_chained(dir.path());
        trail(&store).await;
        // In the gap an aborted write left (id 7), as an unauthenticated event...
        put(&store, Tree::Audit, 7, Some(&encode(&numbered(7)).unwrap()));
        let (id, why) = broken(&store).unwrap();
        assert_eq!(id, Some(7), "{why}");
        // ...or as a copy of a real one.
        put(&store, Tree::Audit, 7, Some(&raw(&store, 6)));
        assert_eq!(broken(&store).unwrap().0, Some(7));
    }

    /// Cutting the end of the trail is detected against the anchor (the head's
    /// id and MAC in `meta`, MAC'd), also after a restart and further writes.
    #[actix_web::test]
    async fn a_truncated_tail_is_detected_against_the_anchor() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = open_chained(dir.path());
            trail(&store).await;
            put(&store, Tree::Audit, 11, None);
            put(&store, Tree::Audit, 10, None);
            let (id, why) = broken(&store).unwrap();
            assert_eq!(id, Some(11), "{why}");
            assert!(why.contains("cut after event 9"), "{why}");
            store.shutdown();
        }
        // A restart goes on from the anchor, not from the cut tail.
        let store = open_chained(dir.path());
        store.append_audit(&numbered(12)).await.unwrap();
        assert_eq!(ids(&store).last(), Some(&12));
        assert_eq!(broken(&store).unwrap().0, Some(12));
    }

    /// Nor can the anchor be removed, or rewritten to the cut trail's new end,
    /// to hide the cut: it fails, and stays failing after a restart and new
    /// events (the store does not write an anchor over one found tampered with).
    #[actix_web::test]
    async fn a_removed_or_altered_anchor_is_reported_and_not_rewritten() {
        for altered in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            {
                let store = open_chained(dir.path());
                trail(&store).await;
                let anchor = store
                    .engine
                    .get(Tree::Meta, META_AUDIT_HEAD)
                    .unwrap()
                    .unwrap();
                put(&store, Tree::Audit, 11, None);
                if altered {
                    // The cut trail's end (event 10), with the old tag.
                    let mut moved = anchor.to_vec();
                    moved[..40].copy_from_slice(&anchor_of_entry(&store, 10));
                    store
                        .engine
                        .write(&[op(Tree::Meta, META_AUDIT_HEAD, Some(&moved))])
                        .unwrap();
                } else {
                    store
                        .engine
                        .write(&[op(Tree::Meta, META_AUDIT_HEAD, None)])
                        .unwrap();
                }
                let (id, why) = broken(&store).unwrap();
                assert_eq!(id, None, "{why}");
                assert!(why.contains("anchor"), "{why}");
                store.shutdown();
            }
            let store = open_chained(dir.path());
            store.append_audit(&numbered(12)).await.unwrap();
            assert_eq!(store.prune_audit(2).await.unwrap(), 6);
            let (id, why) = broken(&store).unwrap();
            assert_eq!(id, None, "{why}");
            assert!(why.contains("anchor"), "{why}");
        }
    }

    /// `id ‖ mac` of a chained event, as an anchor names it.
    fn anchor_of_entry(store: &Store, id: u64) -> Vec<u8> {
        let entry: AuditEntry = decode("audit", b"", &raw(store, id)).unwrap();
        [&id.to_be_bytes()[..], &entry.mac[..]].concat()
    }
}
