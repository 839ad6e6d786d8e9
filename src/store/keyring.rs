//! The keyring kept in the store (`meta` key `keyring`): where a shared
//! installation (etcd) keeps its keyring, wrapped by the master key as in the
//! keyring file of a sled installation (which keeps its file). The store only
//! holds the bytes; the vault decides which to use.
//!
//! The keyring guard: in shared mode another node may rotate the keyring
//! between this node sealing a value and writing it. Every transaction that
//! writes a sealed value (a config, a sign-in record) reads the stored keyring
//! and aborts with [`StoreError::KeyringChanged`] when it is not the one the
//! vault sealed with ([`Store::set_keyring_guard`]).

use std::sync::PoisonError;

use super::engine::Tree;
use super::gate::META_KEYRING;
use super::{store_only, Store, StoreError};

impl Store {
    /// The keyring stored in `meta`, if any.
    pub fn keyring(&self) -> Result<Option<Vec<u8>>, StoreError> {
        self.usable()?;
        Ok(self.engine.get(Tree::Meta, META_KEYRING)?)
    }

    /// Store `new` as the keyring if the stored one is `expected` (`None`:
    /// none stored), atomically; false (nothing written) when it is not.
    /// Durable when this returns.
    pub async fn replace_keyring(
        &self,
        expected: Option<&[u8]>,
        new: &[u8],
    ) -> Result<bool, StoreError> {
        let replaced = self.replace_keyring_now(expected, new)?;
        if replaced {
            self.durable().await?;
        }
        Ok(replaced)
    }

    /// The compare-and-swap of [`Store::replace_keyring`], applied (durable
    /// only once the group commit ran, on an engine that has one). Takes no
    /// writer's turn: the transaction is atomic by itself, and the vault calls
    /// it while holding the gate exclusively (no sealed write applies then).
    pub(super) fn replace_keyring_now(
        &self,
        expected: Option<&[u8]>,
        new: &[u8],
    ) -> Result<bool, StoreError> {
        self.writable()?;
        store_only(self.transact(&[Tree::Meta], |tx| {
            if tx.get(Tree::Meta, META_KEYRING)?.as_deref() != expected {
                return Ok(false);
            }
            tx.insert(Tree::Meta, META_KEYRING, new)?;
            Ok(true)
        }))
    }

    /// The stored keyring every sealed write must still find in shared mode
    /// (the bytes of the keyring the vault seals with); `None`: no check.
    pub fn set_keyring_guard(&self, keyring: Option<Vec<u8>>) {
        *self
            .keyring_guard
            .write()
            .unwrap_or_else(PoisonError::into_inner) = keyring;
    }
}
