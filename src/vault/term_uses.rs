//! Encryptions counted against the active key term (beside `keys`, which
//! rotates when a term is due): counted in memory, reserved in the store ahead
//! of use, so a crash over-counts and never under-counts.

use super::{Vault, VaultError};

/// Encryptions counted against the active term: `used` in memory, `reserved`
/// persisted ahead of use (a crash over-counts, never under-counts).
#[derive(Debug)]
pub(super) struct TermUses {
    pub(super) term: u32,
    pub(super) used: u64,
    pub(super) reserved: u64,
    /// Of `used`, how many re-encrypted stored secrets after a rotation. They do
    /// not make the next rotation due: with more stored secrets than
    /// `rotate_after_encryptions`, they would otherwise make every rotation due
    /// again at once (a rotation storm). A term still seals at most
    /// `rotate_after_encryptions` + the number of stored secrets times.
    pub(super) reencrypted: u64,
}

/// How many encryptions are reserved in the store at a time.
pub(super) const USE_RESERVATION_BLOCK: u64 = 4096;

impl Vault {
    /// Count one encryption under the active term, reserving ahead in the store;
    /// wakes the maintenance task when the term is due for rotation.
    pub(super) fn count_encryption(&self, term: u32, reencryption: bool) -> Result<(), VaultError> {
        let mut uses = self
            .uses
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if uses.term != term {
            // Rotated since: a new term counts from what the store says.
            let reserved = self.store.term_uses(term)?;
            *uses = TermUses {
                term,
                used: reserved,
                reserved,
                reencrypted: 0,
            };
        }
        // Saturating: the count starts from a value read from disk, and a corrupt
        // one must make the term due (the safe side), never wrap to a small count.
        uses.used = uses.used.saturating_add(1);
        if reencryption {
            uses.reencrypted = uses.reencrypted.saturating_add(1);
        }
        if uses.used > uses.reserved {
            if self.store.is_shared() {
                // Several nodes seal under one term: each claims a block of
                // the cluster-wide count atomically, and counts on from its
                // start, so the count is an upper bound of all nodes' uses.
                let total = self.store.claim_term_uses(term, USE_RESERVATION_BLOCK)?;
                uses.used = uses.used.max(
                    total
                        .saturating_sub(USE_RESERVATION_BLOCK)
                        .saturating_add(1),
                );
                uses.reserved = total;
            } else {
                uses.reserved = uses.used.saturating_add(USE_RESERVATION_BLOCK);
                self.store.reserve_term_uses(term, uses.reserved)?;
            }
        }
        if uses.used.saturating_sub(uses.reencrypted) >= self.rotate_after {
            self.wake.notify_one();
        }
        Ok(())
    }

    /// Whether the active term has sealed enough new secrets to be rotated.
    pub(crate) fn rotation_due(&self) -> bool {
        let uses = self
            .uses
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        uses.used.saturating_sub(uses.reencrypted) >= self.rotate_after
    }

    /// Start counting encryptions of a newly active term.
    pub(super) fn reset_uses(&self, term: u32) -> Result<(), VaultError> {
        let reserved = self.store.term_uses(term)?;
        *self
            .uses
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = TermUses {
            term,
            used: reserved,
            reserved,
            reencrypted: 0,
        };
        Ok(())
    }

    /// Encryptions under the active term so far (upper bound after a restart).
    pub fn active_term_uses(&self) -> u64 {
        self.uses
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .used
    }
}
