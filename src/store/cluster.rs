//! What the layers above need to know of a shared engine, without knowing
//! which engine runs: connecting to a storage cluster, whether the store is
//! shared, cluster duties, readiness, and the cluster-wide count of
//! a key term's encryptions.

use std::sync::Arc;

use super::engine::{DutyGuard, Tree};
use super::{store_only, EtcdConfig, Store, StoreError, StoreOptions};

impl Store {
    /// A store on the etcd cluster `config` names (`storage.backend = "etcd"`).
    /// Connecting checks nothing of the cluster's content.
    pub fn connect_etcd(config: &EtcdConfig, options: &StoreOptions) -> Result<Self, StoreError> {
        #[cfg(feature = "etcd")]
        {
            let engine = super::engine::etcd::EtcdEngine::connect(config)?;
            Self::with_engine(Arc::new(engine), options)
        }
        #[cfg(not(feature = "etcd"))]
        {
            let _ = (config, options, Arc::<()>::new(()));
            Err(StoreError::Engine(
                "this oidcvault was built without the `etcd` feature; storage.backend = \
                 \"etcd\" needs a build with it (the default)"
                    .into(),
            ))
        }
    }

    /// Other processes write the same data (a storage cluster).
    pub fn is_shared(&self) -> bool {
        self.shared
    }

    /// Take the cluster-wide duty `name` if no live node holds it (always
    /// granted by the embedded engine). Dropping the guard releases it.
    pub fn try_duty(&self, name: &str) -> Result<Option<Box<dyn DutyGuard>>, StoreError> {
        Ok(self.engine.try_duty(name)?)
    }

    /// Can the engine commit now (etcd: reachable, with a quorum)? Blocking.
    pub fn ready(&self) -> Result<(), StoreError> {
        Ok(self.engine.ready()?)
    }

    /// Claim `block` more encryptions of `term` in the cluster-wide count,
    /// atomically (a compare-and-swap on the count): of two nodes claiming at
    /// once, each gets its own block. Returns the count after the claim.
    pub fn claim_term_uses(&self, term: u32, block: u64) -> Result<u64, StoreError> {
        self.usable()?;
        let key = super::terms::term_key(term);
        store_only(self.transact(&[Tree::Meta], |tx| {
            let stored = tx
                .get(Tree::Meta, &key)?
                .map_or(0, |v| super::terms::uses_of(&v));
            let total = stored.saturating_add(block);
            tx.insert(Tree::Meta, &key, &total.to_be_bytes())?;
            Ok(total)
        }))
    }

    /// [`Store::replace_keyring`] for a shared engine, whose committed
    /// transaction is already durable (no group commit to wait for): usable
    /// from blocking code (opening, a rotation under the gate).
    pub fn replace_keyring_shared(
        &self,
        expected: Option<&[u8]>,
        new: &[u8],
    ) -> Result<bool, StoreError> {
        if self.engine.group_commit().is_some() {
            return Err(StoreError::Engine(
                "the keyring is kept in the store only on a shared engine".into(),
            ));
        }
        self.replace_keyring_now(expected, new)
    }
}
