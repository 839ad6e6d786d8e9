//! Record counts kept in memory, so that `/metrics` and the key status read
//! them in constant time instead of scanning every config (sled's `len` walks
//! the whole tree).
//!
//! In shared mode (other nodes write too) these are not used: the counts are
//! recomputed by a scan, cached for a few seconds (`Store::counts`).
//!
//! Counted once when the store opens, then adjusted by every write that
//! changes them, while that write holds the store's write-order lock: every
//! writer of `domains` and `configs` takes it, so the adjustments apply in the
//! order of the writes and the counts equal a scan taken at any moment no write
//! is half-way through. A config is counted under the key term in its
//! envelope's header (`crypto::envelope_term`), as the scan does.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};

use super::engine::Tree;
use super::records::{decode, ConfigRecord};
use super::{Store, StoreError};

/// The counts at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    pub domains: u64,
    pub configs: u64,
    /// Stored secrets per key term (terms with none are absent).
    pub configs_by_term: BTreeMap<u32, u64>,
}

/// What the counts know of one stored config: its secret's key term (`None`
/// when the record or its envelope header cannot be read).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Entry(Option<u32>);

impl Entry {
    pub(super) fn of(record: &ConfigRecord) -> Self {
        Self(crate::crypto::envelope_term(&record.secret_sealed))
    }

    /// From a stored config's bytes.
    pub(super) fn of_bytes(key: &[u8], bytes: &[u8]) -> Self {
        decode::<ConfigRecord>("configs", key, bytes).map_or(Self(None), |r| Self::of(&r))
    }
}

#[derive(Debug, Default)]
pub(super) struct Counter(Mutex<Counts>);

impl Counter {
    /// Replace the counts (after a scan).
    pub(super) fn set(&self, counts: Counts) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = counts;
    }

    fn with(&self, f: impl FnOnce(&mut Counts)) {
        f(&mut self.0.lock().unwrap_or_else(PoisonError::into_inner));
    }

    pub(super) fn get(&self) -> Counts {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(super) fn domain_added(&self) {
        self.with(|c| c.domains = c.domains.saturating_add(1));
    }

    /// A domain went, with its config when it had one.
    pub(super) fn domain_removed(&self, config: Option<Entry>) {
        self.with(|c| {
            c.domains = c.domains.saturating_sub(1);
            if let Some(e) = config {
                c.remove(e);
            }
        });
    }

    /// A config was written: created (`old` is `None`) or replaced.
    pub(super) fn config_written(&self, old: Option<Entry>, new: Entry) {
        if old == Some(new) {
            return;
        }
        self.with(|c| {
            if let Some(e) = old {
                c.remove(e);
            }
            c.add(new);
        });
    }

    pub(super) fn config_removed(&self, old: Entry) {
        self.with(|c| c.remove(old));
    }
}

impl Counts {
    pub(super) fn add(&mut self, e: Entry) {
        self.configs = self.configs.saturating_add(1);
        if let Some(term) = e.0 {
            let n = self.configs_by_term.entry(term).or_insert(0);
            *n = n.saturating_add(1);
        }
    }

    fn remove(&mut self, e: Entry) {
        self.configs = self.configs.saturating_sub(1);
        if let Some(term) = e.0 {
            if let Some(n) = self.configs_by_term.get_mut(&term) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.configs_by_term.remove(&term);
                }
            }
        }
    }
}

impl Store {
    /// Domains, configs and configs per key term: from memory, or in shared
    /// mode from a scan at most 5 s old (the last one, when a scan
    /// fails).
    pub fn counts(&self) -> Counts {
        if !self.shared {
            return self.counts.get();
        }
        let mut cache = self
            .counts_cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match &*cache {
            Some((at, c)) if at.elapsed() < self.counts_ttl => c.clone(),
            stale => match self.scan_counts() {
                Ok(c) => {
                    *cache = Some((std::time::Instant::now(), c.clone()));
                    c
                }
                Err(e) => {
                    tracing::warn!(error = %e, "counting records failed");
                    stale.as_ref().map(|(_, c)| c.clone()).unwrap_or_default()
                }
            },
        }
    }

    /// The counts as a scan finds them.
    pub(super) fn scan_counts(&self) -> Result<Counts, StoreError> {
        let mut c = Counts::default();
        for kv in self.entries(Tree::Domains) {
            kv?;
            c.domains += 1;
        }
        for kv in self.entries(Tree::Configs) {
            let (k, v) = kv?;
            c.add(Entry::of_bytes(&k, &v));
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adjustments_keep_terms_without_configs_out() {
        let c = Counter::default();
        c.domain_added();
        c.config_written(None, Entry(Some(1)));
        c.domain_added();
        c.config_written(None, Entry(Some(1)));
        c.config_written(Some(Entry(Some(1))), Entry(Some(2)));
        c.config_written(Some(Entry(Some(2))), Entry(Some(2)));
        let got = c.get();
        assert_eq!((got.domains, got.configs), (2, 2));
        assert_eq!(got.configs_by_term, BTreeMap::from([(1, 1), (2, 1)]));
        c.config_removed(Entry(Some(1)));
        c.domain_removed(Some(Entry(Some(2))));
        let got = c.get();
        assert_eq!((got.domains, got.configs), (1, 0));
        assert!(got.configs_by_term.is_empty(), "{got:?}");
        // Never below zero, whatever the order of events.
        c.config_removed(Entry(Some(7)));
        c.domain_removed(None);
        c.domain_removed(None);
        assert_eq!(c.get(), Counts::default());
    }
}
