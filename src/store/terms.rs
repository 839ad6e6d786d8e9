//! Key-term use counts, persisted in `meta` (`term_uses/<term>`): a
//! conservative upper bound of the encryptions made under each key term.

use super::{Store, StoreError};

const META_TERM_USES: &[u8] = b"term_uses/";

impl Store {
    /// The persisted use count of a key term (a conservative upper bound).
    pub fn term_uses(&self, term: u32) -> Result<u64, StoreError> {
        self.usable()?;
        let mut key = META_TERM_USES.to_vec();
        key.extend_from_slice(&term.to_be_bytes());
        Ok(match self.meta.get(key)? {
            Some(v) => <[u8; 8]>::try_from(v.as_ref())
                .map(u64::from_be_bytes)
                .unwrap_or(u64::MAX),
            None => 0,
        })
    }

    /// Record that up to `uses` encryptions of `term` may have happened. Applied
    /// before the encryptions it covers, so any flush that makes one of them
    /// durable makes this durable too (sled recovers a prefix of its log).
    pub fn reserve_term_uses(&self, term: u32, uses: u64) -> Result<(), StoreError> {
        self.usable()?;
        let mut key = META_TERM_USES.to_vec();
        key.extend_from_slice(&term.to_be_bytes());
        self.meta
            .insert(key, &uses.to_be_bytes())
            .map_err(|e| self.sled_err(e))?;
        Ok(())
    }
}
