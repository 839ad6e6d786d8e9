//! Key-term use counts, persisted in `meta` (`term_uses/<term>`): a
//! conservative upper bound of the encryptions made under each key term.

use super::engine::{Op, Tree};
use super::{store_only, Store, StoreError};

const META_TERM_USES: &[u8] = b"term_uses/";

pub(super) fn term_key(term: u32) -> Vec<u8> {
    let mut key = META_TERM_USES.to_vec();
    key.extend_from_slice(&term.to_be_bytes());
    key
}

pub(super) fn uses_of(v: &[u8]) -> u64 {
    <[u8; 8]>::try_from(v)
        .map(u64::from_be_bytes)
        .unwrap_or(u64::MAX)
}

impl Store {
    /// The persisted use count of a key term (a conservative upper bound).
    pub fn term_uses(&self, term: u32) -> Result<u64, StoreError> {
        self.usable()?;
        Ok(self
            .engine
            .get(Tree::Meta, &term_key(term))?
            .map_or(0, |v| uses_of(&v)))
    }

    /// Record that up to `uses` encryptions of `term` may have happened. Applied
    /// before the encryptions it covers, so any flush that makes one of them
    /// durable makes this durable too (sled recovers a prefix of its log). In
    /// shared mode, a transaction that never lowers the stored bound (another
    /// node may have raised it).
    pub fn reserve_term_uses(&self, term: u32, uses: u64) -> Result<(), StoreError> {
        self.usable()?;
        let key = term_key(term);
        if self.shared {
            return store_only(self.transact(&[Tree::Meta], |tx| {
                let stored = tx.get(Tree::Meta, &key)?.map_or(0, |v| uses_of(&v));
                if stored < uses {
                    tx.insert(Tree::Meta, &key, &uses.to_be_bytes())?;
                }
                Ok(())
            }));
        }
        self.engine.write(&[Op {
            tree: Tree::Meta,
            key,
            value: Some(uses.to_be_bytes().to_vec()),
        }])?;
        Ok(())
    }
}
