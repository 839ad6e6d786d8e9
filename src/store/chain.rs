//! The audit trail's MAC chain as it is written (see the module doc of
//! `store`): the link each entry leaves for the next, the slot a writer's turn
//! reserves for its event, the head kept in memory under the write-order lock,
//! and the anchor (the head, MAC'd, in `meta`) the group commit writes.

use std::sync::PoisonError;

use super::records::{self, decode_audit, encode, StoredAudit, GENESIS};
use super::{AuditBody, AuditRecord, Store, StoreError, Versioned};

/// The audit chain's anchor: `id ‖ mac ‖ tag` of its head (see the module doc).
pub(super) const META_AUDIT_HEAD: &[u8] = b"audit/head";

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
    /// Before a flush: write the newest head, if one moved since the last flush.
    pub(super) fn write(&self, meta: &sled::Tree) -> Result<(), String> {
        let pending = self
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if self.is_lost() {
            return Ok(());
        }
        if let (Some(head), Some(m)) = (pending, self.mac.get()) {
            meta.insert(META_AUDIT_HEAD, anchor_bytes(head, m.as_ref()))
                .map_err(|e| format!("writing the audit anchor: {e}"))?;
        }
        Ok(())
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
/// (once the transaction body has written it) its own link.
pub(super) struct AuditSlot<'a> {
    id: u64,
    prev: Link,
    mac: Option<&'a dyn AuditMac>,
    /// Set by [`AuditSlot::seal`]; reset at the start of each transaction
    /// attempt (a body may run more than once, and may write no event).
    sealed: std::cell::Cell<Option<Link>>,
}

impl AuditSlot<'_> {
    pub(super) fn key(&self) -> [u8; 8] {
        self.id.to_be_bytes()
    }

    /// Start of a transaction attempt.
    pub(super) fn attempt(&self) {
        self.sealed.set(None);
    }

    /// The stored bytes of `event` at this slot: chained and MAC'd when the store
    /// has an audit MAC, a legacy (version 1) event otherwise.
    pub(super) fn seal(&self, event: AuditRecord) -> Result<Vec<u8>, StoreError> {
        let (bytes, mac) = match self.mac {
            None => (encode(&event)?, GENESIS),
            Some(m) => {
                let id = self.key();
                records::encode_chained(self.prev.id, &AuditBody::Event(event), |signed| {
                    m.mac(&[records::AUDIT_ENTRY_LABEL, &id, &self.prev.mac, signed])
                })?
            }
        };
        self.sealed.set(Some(Link { id: self.id, mac }));
        Ok(bytes)
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
    pub(super) fn chain_head(audit: &sled::Tree, meta: &sled::Tree) -> Result<Link, StoreError> {
        let last = match audit.last()? {
            Some((k, v)) => {
                let id = <[u8; 8]>::try_from(k.as_ref())
                    .map(u64::from_be_bytes)
                    .unwrap_or(0);
                // An undecodable last entry: chain on from zeros (verify names it).
                decode_audit(&k, &v)
                    .map(|stored| link_of(id, &stored))
                    .unwrap_or(Link { id, mac: GENESIS })
            }
            None => START,
        };
        let anchor = meta
            .get(META_AUDIT_HEAD)?
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
        let anchor = self.meta.get(META_AUDIT_HEAD)?;
        let (write, lost) = match anchor.as_deref().map(parse_anchor) {
            None => {
                let chained = self.has_chained_entries()?;
                (!chained, chained)
            }
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
            self.meta
                .insert(META_AUDIT_HEAD, anchor_bytes(head.link, mac.as_ref()))
                .map_err(|e| self.sled_err(e))?;
        }
        // Set once per store: a second call keeps the first key.
        let _ = self.anchor.mac.set(mac);
        Ok(())
    }

    fn has_chained_entries(&self) -> Result<bool, StoreError> {
        for kv in self.audit.iter().rev() {
            let (_, v) = kv?;
            if v.first() != Some(&AuditRecord::VERSION) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The next event id, chained to the head (in a writer's turn).
    pub(super) fn audit_slot(&self, head: &ChainHead) -> Result<AuditSlot<'_>, StoreError> {
        Ok(AuditSlot {
            id: self.audit_id()?,
            prev: head.link,
            mac: self.anchor.mac.get().map(|m| m.as_ref()),
            sealed: std::cell::Cell::new(None),
        })
    }

    /// After the slot's event was applied: it is the new head, and the anchor
    /// the next group commit writes (after the event, so the anchor on disk is
    /// never ahead of it; before the flush that acknowledges it).
    pub(super) fn advance(&self, head: &mut ChainHead, slot: &AuditSlot<'_>) {
        let Some(link) = slot.sealed.get() else {
            return;
        };
        head.link = link;
        if slot.mac.is_some() {
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
            .map_err(|_| StoreError::Corrupt {
                tree: "audit",
                key: u64::MAX.to_string(),
                reason: "event ids are exhausted".into(),
            })
    }
}
