//! The sign-in broker's short-lived records: login transactions
//! (`sso_transactions`) and one-time codes (`sso_codes`), each keyed by a
//! SHA-256 of its random value (the value itself is never stored) and sealed by
//! the vault. Both are *taken*, never read: the engine's `take` (or a
//! transaction) hands a record to exactly one caller, on any node, and the removal is durable before the caller goes on, so
//! a `state` or a code is used at most once, across crashes too. A redeemed
//! code leaves a tombstone (`sso_spent`, its key → when the tombstone may go),
//! so a replay is told apart from a code that never existed, and audited.
//! Nothing here outlives its expiry by more than one sweep
//! ([`Store::sweep_sso`]); backups leave these trees out (see `snapshot`,
//! [`Tree::is_ephemeral`]).

use std::sync::atomic::Ordering;

use super::engine::{Op, Tree};
use super::{caller, decode, encode, store_only, Abort, AuditRecord, SsoRecord, Store, StoreError};

/// How long a tombstone outlives its code: replays within a day are reported
/// as replays (an attacker's retry comes soon; a day of 40-byte keys is small).
const TOMBSTONE_MICROS: i64 = 24 * 3600 * 1_000_000;

/// Which of the broker's trees a record is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SsoTree {
    Transactions,
    Codes,
}

/// What taking a record found.
#[derive(Debug)]
pub enum Taken {
    /// The record, still valid: the caller is its only user.
    Found(SsoRecord),
    /// The record, past its expiry (taken all the same: it is gone now).
    Expired(SsoRecord),
    /// A code that was redeemed before (its tombstone).
    Spent,
    /// Nothing under this key.
    Unknown,
}

impl Store {
    /// Login transactions stored and not yet taken or swept (in shared mode:
    /// counted by the engine, at most a second old).
    pub fn sso_pending(&self) -> usize {
        if !self.shared {
            return self.sso_pending.load(Ordering::Relaxed);
        }
        let mut cache = self
            .pending_cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match &*cache {
            Some((at, n)) if at.elapsed() < super::PENDING_TTL => *n,
            stale => match self.engine.len(Tree::SsoTransactions) {
                Ok(n) => {
                    let n = usize::try_from(n).unwrap_or(usize::MAX);
                    *cache = Some((std::time::Instant::now(), n));
                    n
                }
                Err(_) => stale.as_ref().map_or(0, |(_, n)| *n),
            },
        }
    }

    /// Store a login transaction. Not waited for: one lost to a crash only
    /// makes its sign-in start over; it is durable with the next group commit.
    pub fn put_transaction(&self, key: &[u8; 32], record: &SsoRecord) -> Result<(), StoreError> {
        let bytes = encode(record)?;
        self.writable()?;
        let _gate = self.shared();
        if self.shared {
            return store_only(self.transact(&[Tree::SsoTransactions], |tx| {
                self.check_keyring(tx)?;
                tx.insert(Tree::SsoTransactions, key, &bytes)?;
                Ok(())
            }));
        }
        // Counted only when new (a 256-bit random key is never reused).
        let old = self.engine.get(Tree::SsoTransactions, key)?;
        self.engine.write(&[Op {
            tree: Tree::SsoTransactions,
            key: key.to_vec(),
            value: Some(bytes),
        }])?;
        if old.is_none() {
            self.sso_pending.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Take a login transaction: one caller (on any node) gets it, and its
    /// removal is durable before this returns.
    pub async fn take_transaction(&self, key: &[u8; 32], now: i64) -> Result<Taken, StoreError> {
        let removed = {
            self.writable()?;
            let _gate = self.shared();
            self.engine.take(Tree::SsoTransactions, key)?
        };
        let Some(bytes) = removed else {
            return Ok(Taken::Unknown);
        };
        self.pending_down();
        self.durable().await?;
        let record: SsoRecord = decode("sso_transactions", key, &bytes)?;
        Ok(if record.expires_at <= now {
            Taken::Expired(record)
        } else {
            Taken::Found(record)
        })
    }

    fn pending_down(&self) {
        let _ = self
            .sso_pending
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                Some(n.saturating_sub(1))
            });
    }

    /// Store a one-time code with its audit event (the sign-in's), in one
    /// transaction; durable when this returns.
    pub async fn put_code(
        &self,
        key: &[u8; 32],
        record: &SsoRecord,
        event: &AuditRecord,
    ) -> Result<(), StoreError> {
        let bytes = encode(record)?;
        let r = self.apply_audited(&[Tree::SsoCodes, Tree::Audit], |tx, slot| {
            self.check_keyring(tx)?;
            tx.insert(Tree::SsoCodes, key, &bytes)?;
            slot.write(tx, event.clone())?;
            Ok(())
        });
        store_only(r)?;
        self.durable().await
    }

    /// Redeem a one-time code: it is taken (and a tombstone left) in the same
    /// transaction as the audit event `event` makes of the outcome; durable
    /// before this returns, so a code is never redeemed twice, even across a
    /// crash between the redemption and its answer (or by two nodes).
    pub async fn redeem_code(
        &self,
        key: &[u8; 32],
        now: i64,
        event: impl Fn(&Taken) -> AuditRecord,
    ) -> Result<Taken, StoreError> {
        let trees = [Tree::SsoCodes, Tree::SsoSpent, Tree::Audit];
        let r = self.apply_audited(&trees, |tx, slot| {
            let taken = if let Some(bytes) = tx.remove(Tree::SsoCodes, key)? {
                let record: SsoRecord = decode("sso_codes", key, &bytes)?;
                let until = record.expires_at.saturating_add(TOMBSTONE_MICROS);
                tx.insert(Tree::SsoSpent, key, &until.to_be_bytes())?;
                if record.expires_at <= now {
                    Taken::Expired(record)
                } else {
                    Taken::Found(record)
                }
            } else if tx.get(Tree::SsoSpent, key)?.is_some() {
                Taken::Spent
            } else {
                Taken::Unknown
            };
            slot.write(tx, event(&taken))?;
            Ok(taken)
        });
        let taken = store_only(r)?;
        self.durable().await?;
        Ok(taken)
    }

    /// Remove every broker record (and tombstone) whose time is up. Returns how
    /// many went. Not waited for: a sweep lost to a crash is done again. In
    /// shared mode each removal is a transaction over the record as read (one
    /// written again meanwhile stays).
    pub fn sweep_sso(&self, now: i64) -> Result<usize, StoreError> {
        let mut removed = 0;
        for tree in [Tree::SsoTransactions, Tree::SsoCodes, Tree::SsoSpent] {
            self.usable()?;
            let mut due = Vec::new();
            for kv in self.entries(tree) {
                let (k, v) = kv?;
                let until = if tree == Tree::SsoSpent {
                    <[u8; 8]>::try_from(v.as_slice())
                        .map(i64::from_be_bytes)
                        .unwrap_or(i64::MIN)
                } else {
                    // A record that does not decode is swept too: nothing can use it.
                    decode::<SsoRecord>(tree.name(), &k, &v).map_or(i64::MIN, |r| r.expires_at)
                };
                if until <= now {
                    due.push((k, v));
                }
            }
            for (k, v) in due {
                self.writable()?;
                let _gate = self.shared();
                let gone = if self.shared {
                    store_only(self.transact(&[tree], |tx| {
                        if tx.get(tree, &k)?.as_deref() != Some(v.as_slice()) {
                            return Ok(false);
                        }
                        tx.remove(tree, &k)?;
                        Ok(true)
                    }))?
                } else {
                    self.engine.take(tree, &k)?.is_some()
                };
                if gone {
                    removed += 1;
                    if tree == Tree::SsoTransactions {
                        self.pending_down();
                    }
                }
            }
        }
        Ok(removed)
    }

    /// The broker's sealed records (sign-ins in flight, codes not yet
    /// redeemed) with their keys, for re-encryption before a key term is
    /// dropped. A record that does not decode is left to the sweep.
    pub fn sso_records(&self, tree: SsoTree) -> Result<Vec<([u8; 32], SsoRecord)>, StoreError> {
        let tree = Self::sso_tree(tree);
        let mut records = Vec::new();
        for kv in self.entries(tree) {
            let (k, v) = kv?;
            let Ok(key) = <[u8; 32]>::try_from(k.as_slice()) else {
                continue;
            };
            if let Ok(record) = decode::<SsoRecord>(tree.name(), &k, &v) {
                records.push((key, record));
            }
        }
        Ok(records)
    }

    /// Re-seal one broker record if it is still there: `reseal` gets it and
    /// returns the new sealed bytes (`None`: leave it). A compare-and-swap on
    /// the record (a transaction), so a record taken or redeemed meanwhile is
    /// not written back. Not waited for (the record is short-lived; a lost
    /// re-seal is made again by the next pass).
    pub fn reseal_sso<E>(
        &self,
        tree: SsoTree,
        key: &[u8; 32],
        reseal: impl Fn(&SsoRecord) -> Result<Option<Vec<u8>>, E>,
    ) -> Result<bool, Abort<E>> {
        let tree = Self::sso_tree(tree);
        self.writable()?;
        let _gate = self.shared();
        self.transact(&[tree, Tree::Meta], |tx| {
            let Some(bytes) = tx.get(tree, key)? else {
                return Ok(false);
            };
            let mut record: SsoRecord = decode(tree.name(), key, &bytes)?;
            let Some(sealed) = reseal(&record).map_err(caller)? else {
                return Ok(false);
            };
            self.check_keyring(tx)?;
            record.sealed = sealed;
            tx.insert(tree, key, &encode(&record)?)?;
            Ok(true)
        })
    }

    fn sso_tree(tree: SsoTree) -> Tree {
        match tree {
            SsoTree::Transactions => Tree::SsoTransactions,
            SsoTree::Codes => Tree::SsoCodes,
        }
    }

    /// Records in one of the broker's trees (for tests and the metrics).
    pub fn sso_len(&self, tree: SsoTree) -> usize {
        let tree = match tree {
            SsoTree::Transactions => Tree::SsoTransactions,
            SsoTree::Codes => Tree::SsoCodes,
        };
        self.engine
            .len(tree)
            .map_or(0, |n| usize::try_from(n).unwrap_or(usize::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_util::*;

    fn rec(expires_at: i64) -> SsoRecord {
        SsoRecord {
            domain_id: 1,
            expires_at,
            sealed: vec![1, 2, 3],
        }
    }

    #[actix_web::test]
    async fn a_transaction_is_taken_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        store.put_transaction(&[7; 32], &rec(100)).unwrap();
        assert_eq!(store.sso_pending(), 1);
        assert!(matches!(
            store.take_transaction(&[7; 32], 50).await.unwrap(),
            Taken::Found(r) if r.sealed == vec![1, 2, 3]
        ));
        assert!(matches!(
            store.take_transaction(&[7; 32], 50).await.unwrap(),
            Taken::Unknown
        ));
        assert_eq!(store.sso_pending(), 0);
        store.put_transaction(&[8; 32], &rec(100)).unwrap();
        assert!(matches!(
            store.take_transaction(&[8; 32], 100).await.unwrap(),
            Taken::Expired(_)
        ));
    }

    #[actix_web::test]
    async fn a_code_is_redeemed_once_and_a_replay_is_told_apart() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_chained(dir.path());
        store.put_code(&[1; 32], &rec(100), &ev()).await.unwrap();
        let first = store.redeem_code(&[1; 32], 10, |_| ev()).await.unwrap();
        assert!(matches!(first, Taken::Found(_)), "{first:?}");
        let again = store.redeem_code(&[1; 32], 10, |_| ev()).await.unwrap();
        assert!(matches!(again, Taken::Spent), "{again:?}");
        let never = store.redeem_code(&[2; 32], 10, |_| ev()).await.unwrap();
        assert!(matches!(never, Taken::Unknown), "{never:?}");
        // put + three redemptions: four events, the chain intact.
        assert_eq!(store.audit_page(None, 100, |_| true).unwrap().len(), 4);
        assert_eq!(broken(&store), None);
    }

    #[actix_web::test]
    async fn a_redemption_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = open(dir.path());
            store
                .put_code(&[3; 32], &rec(i64::MAX), &ev())
                .await
                .unwrap();
            let r = store.redeem_code(&[3; 32], 1, |_| ev()).await.unwrap();
            assert!(matches!(r, Taken::Found(_)));
            store.shutdown();
        }
        let store = open(dir.path());
        let r = store.redeem_code(&[3; 32], 1, |_| ev()).await.unwrap();
        assert!(matches!(r, Taken::Spent), "{r:?}");
    }

    #[actix_web::test]
    async fn sweeps_remove_only_what_is_due() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        store.put_transaction(&[1; 32], &rec(10)).unwrap();
        store.put_transaction(&[2; 32], &rec(1000)).unwrap();
        store.put_code(&[3; 32], &rec(10), &ev()).await.unwrap();
        store.put_code(&[4; 32], &rec(1000), &ev()).await.unwrap();
        assert_eq!(store.sweep_sso(500).unwrap(), 2);
        assert_eq!(store.sso_pending(), 1);
        assert_eq!(store.sso_len(SsoTree::Transactions), 1);
        assert_eq!(store.sso_len(SsoTree::Codes), 1);
        // A tombstone goes a day after its code's expiry.
        store.redeem_code(&[4; 32], 600, |_| ev()).await.unwrap();
        assert_eq!(store.sweep_sso(2000).unwrap(), 1, "the transaction");
        assert_eq!(
            store.sweep_sso(1000 + TOMBSTONE_MICROS).unwrap(),
            1,
            "the tombstone"
        );
    }
}
