//! The audit trail's MAC chain as it is written (see the module doc of
//! `store`): the link each entry leaves for the next, the slot a writer's turn
//! reserves for its event, the head kept in memory under the write-order lock,
//! and the anchor (the head, MAC'd, in `meta`) the group commit writes.
//!
//! In shared mode the head in memory is not trusted (other nodes append too):
//! each attempt of an audited transaction reads the anchor and the event
//! counter in `meta` and writes both with its event, so the anchor is always
//! exactly the head and two nodes' events conflict rather than fork the chain.

use std::sync::{Mutex, PoisonError};

use super::engine::{Op, Tree, Tx};
use super::records::{self, decode_audit, encode, StoredAudit, GENESIS};
use super::{counter, AuditBody, AuditRecord, Store, StoreError, TxResult, Versioned};

/// The audit chain's anchor: `id ‖ mac ‖ tag` of its head (see the module doc).
pub(super) const META_AUDIT_HEAD: &[u8] = b"audit/head";
/// Shared mode: the next audit event id (so ids stay unique without a MAC,
/// when no anchor is written).
pub(super) const META_NEXT_AUDIT: &[u8] = b"next_id/audit";

/// The MAC of the audit trail, computed by whoever holds its key (the vault):
/// the store only lays out what each MAC covers, so it never holds the key.
pub trait AuditMac: Send + Sync {
    /// HMAC-SHA-256 of the concatenation of `parts`.
    fn mac(&self, parts: &[&[u8]]) -> [u8; 32];
}

/// A position in the audit chain: an entry's id and the MAC the next entry
/// chains to (zeros for the start and for a legacy event).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Link {
    pub(super) id: u64,
    pub(super) mac: [u8; 32],
}

pub(super) const START: Link = Link {
    id: 0,
    mac: GENESIS,
};

/// The anchor the next group commit writes, and the key it is MAC'd with;
/// shared by the store and its flusher.
#[derive(Default)]
pub(super) struct Anchor {
    pending: std::sync::Mutex<Option<Link>>,
    pub(super) mac: std::sync::OnceLock<std::sync::Arc<dyn AuditMac>>,
    /// The anchor on disk was removed or altered (found so at open): it is
    /// never written again, so that `verify` keeps reporting it rather than a
    /// new anchor vouching for a trail whose end may have been cut.
    lost: std::sync::atomic::AtomicBool,
}

impl Anchor {
    /// Before a flush: the write of the newest head, if one moved since the
    /// last flush (the group commit applies it).
    pub(super) fn pending_op(&self) -> Option<Op> {
        let pending = self
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if self.is_lost() {
            return None;
        }
        let (head, m) = (pending?, self.mac.get()?);
        Some(Op {
            tree: Tree::Meta,
            key: META_AUDIT_HEAD.to_vec(),
            value: Some(anchor_bytes(head, m.as_ref())),
        })
    }

    pub(super) fn is_lost(&self) -> bool {
        self.lost.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// What the write-order lock guards besides the order itself: the head of the
/// audit chain, so each event's MAC covers the one before it.
pub(super) struct ChainHead {
    pub(super) link: Link,
}

/// The audit event a writer's turn reserved: its id, what it chains to, and
/// (once the transaction body has written it) its own link. In shared mode
/// the id and the link before it are read again by each attempt.
pub(super) struct AuditSlot<'a> {
    mac: Option<&'a dyn AuditMac>,
    /// Shared mode: read the head from `meta` in each attempt.
    shared: bool,
    /// The anchor was found tampered with: not written again.
    lost: bool,
    /// Not shared: the reserved id. Shared: the floor of ids.
    base_id: u64,
    /// Not shared: the head it chains to. Shared: the link to use when no
    /// anchor can be read.
    base_prev: Link,
    state: Mutex<Attempt>,
}

#[derive(Clone, Copy)]
struct Attempt {
    id: u64,
    prev: Link,
    /// Set by [`AuditSlot::seal`]; reset at the start of each transaction
    /// attempt (a body may run more than once, and may write no event).
    sealed: Option<Link>,
}

impl AuditSlot<'_> {
    fn state(&self) -> std::sync::MutexGuard<'_, Attempt> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn key(&self) -> [u8; 8] {
        self.state().id.to_be_bytes()
    }

    /// The id and link once written (`None`: no event was written).
    pub(super) fn sealed(&self) -> Option<Link> {
        self.state().sealed
    }

    /// Start of a transaction attempt; in shared mode, read the head.
    pub(super) fn attempt<E>(&self, tx: &mut dyn Tx) -> TxResult<(), E> {
        let mut next = Attempt {
            id: self.base_id,
            prev: self.base_prev,
            sealed: None,
        };
        if self.shared {
            let counted = counter(
                META_NEXT_AUDIT,
                tx.get(Tree::Meta, META_NEXT_AUDIT)?.as_deref(),
            )?;
            let anchor = tx
                .get(Tree::Meta, META_AUDIT_HEAD)?
                .and_then(|v| parse_anchor(&v))
                .map(|(link, _)| link);
            let from_anchor = anchor.map_or(0, |a| a.id.saturating_add(1));
            next.id = self.base_id.max(counted.unwrap_or(0)).max(from_anchor);
            if let Some(a) = anchor.filter(|_| !self.lost) {
                next.prev = a;
            }
        }
        *self.state() = next;
        Ok(())
    }

    /// The stored bytes of `event` at this slot: chained and MAC'd when the store
    /// has an audit MAC, a legacy (version 1) event otherwise.
    pub(super) fn seal(&self, event: AuditRecord) -> Result<Vec<u8>, StoreError> {
        let Attempt { id, prev, .. } = *self.state();
        let (bytes, mac) = match self.mac {
            None => (encode(&event)?, GENESIS),
            Some(m) => {
                let key = id.to_be_bytes();
                records::encode_chained(prev.id, &AuditBody::Event(event), |signed| {
                    m.mac(&[records::AUDIT_ENTRY_LABEL, &key, &prev.mac, signed])
                })?
            }
        };
        self.state().sealed = Some(Link { id, mac });
        Ok(bytes)
    }

    /// Write `event` at this slot in the transaction; in shared mode with it
    /// the next id and the new anchor (the anchor is then always the head).
    pub(super) fn write<E>(&self, tx: &mut dyn Tx, event: AuditRecord) -> TxResult<(), E> {
        let bytes = self.seal(event)?;
        let key = self.key();
        tx.insert(Tree::Audit, &key, &bytes)?;
        if self.shared {
            let id = u64::from_be_bytes(key);
            let next = id.checked_add(1).ok_or_else(exhausted)?;
            tx.insert(Tree::Meta, META_NEXT_AUDIT, &next.to_be_bytes())?;
            if let (Some(m), Some(link), false) = (self.mac, self.sealed(), self.lost) {
                tx.insert(Tree::Meta, META_AUDIT_HEAD, &anchor_bytes(link, m))?;
            }
        }
        Ok(())
    }
}

/// Event ids at their end: never wrapped (a wrapped id would sort before, and
/// overwrite, older events).
fn exhausted() -> StoreError {
    StoreError::Corrupt {
        tree: "audit",
        key: u64::MAX.to_string(),
        reason: "event ids are exhausted".into(),
    }
}

/// The anchor of `head`: its id and MAC, and a MAC over both.
pub(super) fn anchor_bytes(head: Link, m: &dyn AuditMac) -> Vec<u8> {
    let id = head.id.to_be_bytes();
    let tag = m.mac(&[records::AUDIT_HEAD_LABEL, &id, &head.mac]);
    let mut out = Vec::with_capacity(72);
    out.extend_from_slice(&id);
    out.extend_from_slice(&head.mac);
    out.extend_from_slice(&tag);
    out
}

/// An anchor as stored: `(head, tag)`; `None` when malformed.
pub(super) fn parse_anchor(bytes: &[u8]) -> Option<(Link, [u8; 32])> {
    let id = <[u8; 8]>::try_from(bytes.get(..8)?).ok()?;
    let mac = <[u8; 32]>::try_from(bytes.get(8..40)?).ok()?;
    let tag = <[u8; 32]>::try_from(bytes.get(40..)?).ok()?;
    Some((
        Link {
            id: u64::from_be_bytes(id),
            mac,
        },
        tag,
    ))
}

/// The chain link an entry leaves for the next one.
pub(super) fn link_of(id: u64, stored: &StoredAudit<'_>) -> Link {
    let mac = match stored {
        StoredAudit::Legacy(_) => GENESIS,
        StoredAudit::Chained { entry, .. } => match &entry.body {
            AuditBody::Event(_) => entry.mac,
            AuditBody::Checkpoint(c) => c.link,
        },
    };
    Link { id, mac }
}

impl Store {
    /// The head of the audit chain on disk, read without the key: the last
    /// entry's link, or the anchor's when the anchor is further on (events after
    /// the last one were removed: new events go on from the anchor, so `verify`
    /// still finds the gap). Event ids continue past both.
    pub(super) fn chain_head(&self) -> Result<Link, StoreError> {
        let last = self
            .engine
            .scan(Tree::Audit, super::engine::all(), 1, true)?;
        let last = match last.first() {
            Some((k, v)) => {
                let id = <[u8; 8]>::try_from(k.as_slice())
                    .map(u64::from_be_bytes)
                    .unwrap_or(0);
                // An undecodable last entry: chain on from zeros (verify names it).
                decode_audit(k, v)
                    .map(|stored| link_of(id, &stored))
                    .unwrap_or(Link { id, mac: GENESIS })
            }
            None => START,
        };
        let anchor = self
            .engine
            .get(Tree::Meta, META_AUDIT_HEAD)?
            .and_then(|v| parse_anchor(&v))
            .map(|(link, _)| link);
        Ok(match anchor {
            Some(a) if a.id > last.id => a,
            _ => last,
        })
    }

    /// Authenticate the audit trail from now on with `mac` (the vault calls this
    /// right after opening, before any write). Writes the anchor when there is
    /// none and nothing is chained yet (a new store, or one written before the
    /// chain), or when it lags behind the last entry (a crash between an event
    /// and the group commit that writes its anchor). An anchor that is missing
    /// while events are chained, malformed, or fails its MAC was tampered with:
    /// it is never written again, for `verify` to keep reporting.
    pub fn set_audit_mac(&self, mac: std::sync::Arc<dyn AuditMac>) -> Result<(), StoreError> {
        use subtle::ConstantTimeEq;
        self.usable()?;
        let head = self
            .write_order
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let _gate = self.shared();
        // The anchor as found, and whether it must be written, is lost, or is fine.
        let decide = |anchor: Option<&[u8]>, chained: bool| match anchor.map(parse_anchor) {
            None => (!chained, chained),
            Some(None) => (false, true),
            Some(Some((a, tag))) => {
                let id = a.id.to_be_bytes();
                let expected = mac.mac(&[records::AUDIT_HEAD_LABEL, &id, &a.mac]);
                if bool::from(expected.ct_eq(&tag)) {
                    (a.id < head.link.id, false)
                } else {
                    (false, true)
                }
            }
        };
        let anchor = self.engine.get(Tree::Meta, META_AUDIT_HEAD)?;
        let chained = anchor.is_none() && self.has_chained_entries()?;
        let (write, lost) = decide(anchor.as_deref(), chained);
        if lost {
            tracing::error!(
                "the audit trail's anchor is missing or altered; it is not rewritten \
                 (`oidcvault verify` reports it)"
            );
            self.anchor
                .lost
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        if write {
            let bytes = anchor_bytes(head.link, mac.as_ref());
            if self.shared {
                // Only over the anchor just read: another node may have moved it.
                let r = self.transact(&[Tree::Meta], |tx| {
                    if tx.get(Tree::Meta, META_AUDIT_HEAD)? == anchor {
                        tx.insert(Tree::Meta, META_AUDIT_HEAD, &bytes)?;
                    }
                    Ok(())
                });
                super::store_only(r)?;
            } else {
                self.engine.write(&[Op {
                    tree: Tree::Meta,
                    key: META_AUDIT_HEAD.to_vec(),
                    value: Some(bytes),
                }])?;
            }
        }
        // Set once per store: a second call keeps the first key.
        let _ = self.anchor.mac.set(mac);
        Ok(())
    }

    fn has_chained_entries(&self) -> Result<bool, StoreError> {
        // Newest first: a chained entry, if any, is at the end.
        let mut from = std::ops::Bound::Unbounded;
        loop {
            let page =
                self.engine
                    .scan(Tree::Audit, (std::ops::Bound::Unbounded, from), 256, true)?;
            for (_, v) in &page {
                if v.first() != Some(&AuditRecord::VERSION) {
                    return Ok(true);
                }
            }
            match page.last() {
                Some((k, _)) if page.len() == 256 => from = std::ops::Bound::Excluded(k.clone()),
                _ => return Ok(false),
            }
        }
    }

    /// The next event id, chained to the head (in a writer's turn). In shared
    /// mode each attempt reads them from `meta` ([`AuditSlot::attempt`]).
    pub(super) fn audit_slot(&self, head: &ChainHead) -> Result<AuditSlot<'_>, StoreError> {
        let base_id = if self.shared {
            self.next_audit.load(std::sync::atomic::Ordering::Relaxed)
        } else {
            self.audit_id()?
        };
        Ok(AuditSlot {
            mac: self.anchor.mac.get().map(|m| m.as_ref()),
            shared: self.shared,
            lost: self.anchor.is_lost(),
            base_id,
            base_prev: head.link,
            state: Mutex::new(Attempt {
                id: base_id,
                prev: head.link,
                sealed: None,
            }),
        })
    }

    /// After the slot's event was applied: it is the new head, and the anchor
    /// the next group commit writes (after the event, so the anchor on disk is
    /// never ahead of it; before the flush that acknowledges it). In shared
    /// mode the anchor was written with the event; memory keeps a floor.
    pub(super) fn advance(&self, head: &mut ChainHead, slot: &AuditSlot<'_>) {
        let Some(link) = slot.sealed() else {
            return;
        };
        head.link = link;
        if self.shared {
            self.next_audit.fetch_max(
                link.id.saturating_add(1),
                std::sync::atomic::Ordering::Relaxed,
            );
        } else if slot.mac.is_some() {
            *self
                .anchor
                .pending
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(link);
        }
    }

    fn audit_id(&self) -> Result<u64, StoreError> {
        // Starts one past the last stored id (read from disk): never wraps, as a
        // wrapped id would sort before, and overwrite, older events.
        self.next_audit
            .fetch_update(
                std::sync::atomic::Ordering::Relaxed,
                std::sync::atomic::Ordering::Relaxed,
                |id| id.checked_add(1),
            )
            .map_err(|_| exhausted())
    }
}
