//! Where the wrapped keyring lives, and keeping this node's copy current.
//!
//! With the embedded engine the keyring is a file beside sled in the data
//! directory (written atomically, `keys::write_keyring`), so a copy of the
//! directory carries it. With a shared engine (etcd) it is a record of the
//! store itself, replaced by compare-and-swap, and several nodes hold it in
//! memory: when one node rotates, the others notice (a write the store refuses
//! with [`StoreError::KeyringChanged`], a secret sealed under a term they do
//! not know, or the maintenance round) and reload it under the KEK they
//! already hold (no Argon2 run).

use std::path::PathBuf;

use super::keys::write_keyring;
use super::{Vault, VaultError};
use zeroize::Zeroizing;

use crate::crypto::{CryptoError, Keyring, KeyringFile, SealContext};
use crate::store::{Store, StoreError};

/// Where this installation keeps its wrapped keyring.
#[derive(Debug, Clone)]
pub(super) enum KeyringHome {
    /// The keyring file in the data directory (sled).
    File(PathBuf),
    /// The store's own `meta` record (a shared engine: etcd).
    Store,
}

impl KeyringHome {
    /// Replace the stored keyring `expected` (the bytes this node holds, or
    /// `None` for a first one) by `new`. In the store it is a compare-and-swap:
    /// when another node changed it meanwhile, nothing is written and the
    /// answer is [`StoreError::KeyringChanged`] (reload, then decide again).
    pub(super) fn replace(
        &self,
        store: &Store,
        expected: Option<&[u8]>,
        new: &KeyringFile,
    ) -> Result<Vec<u8>, VaultError> {
        let bytes = new.to_bytes()?;
        match self {
            KeyringHome::File(path) => write_keyring(path, new)?,
            KeyringHome::Store => {
                if !store.replace_keyring_shared(expected, &bytes)? {
                    return Err(StoreError::KeyringChanged.into());
                }
            }
        }
        Ok(bytes)
    }
}

impl Vault {
    /// Make `next` (wrapped as `file`) the keyring in force: stored where this
    /// installation keeps it (compare-and-swap against the one this node
    /// holds), then swapped in memory and announced to the store (the guard its
    /// shared-engine writes check). Called while the store's gate is held
    /// exclusively, so no local write seals under the old keyring meanwhile.
    pub(super) fn install_keyring(
        &self,
        next: Keyring,
        file: &KeyringFile,
    ) -> Result<(), VaultError> {
        let mut stored = self
            .keyring_stored
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let bytes = self
            .keyring_home
            .replace(&self.store, Some(stored.as_slice()), file)?;
        self.swap_keyring(next);
        self.store.set_keyring_guard(Some(bytes.clone()));
        *stored = bytes;
        Ok(())
    }

    /// Reload the keyring when the stored one is not the one this node holds
    /// (another node rotated, dropped a term or re-wrapped it). True when it
    /// changed. A no-op (false) for a keyring file: only this process writes it.
    pub fn refresh_keyring(&self) -> Result<bool, VaultError> {
        if !matches!(self.keyring_home, KeyringHome::Store) {
            return Ok(false);
        }
        let Some(bytes) = self.store.keyring()? else {
            return Err(VaultError::Operation(
                "the keyring is gone from the storage cluster; every node refuses to seal \
                 until it is restored (see README: Running more than one node)"
                    .into(),
            ));
        };
        let same = *self
            .keyring_stored
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            == bytes;
        if same {
            return Ok(false);
        }
        let file = KeyringFile::from_bytes(&bytes)?;
        let keyring = file.unwrap_with(&self.kek).map_err(|e| match e {
            CryptoError::WrongMasterKey => VaultError::Operation(
                "the keyring in the storage cluster was re-wrapped under another master key \
                 (a passphrase change on another node): restart this node with the new one"
                    .into(),
            ),
            other => other.into(),
        })?;
        let term = keyring.active_term();
        // The gate first, then the stored bytes: the order `install_keyring`
        // takes them in (a rotation holds the gate while it installs).
        self.store.exclusive(|| {
            let mut stored = self
                .keyring_stored
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            self.swap_keyring(keyring);
            self.store.set_keyring_guard(Some(bytes.clone()));
            *stored = bytes;
        });
        self.reset_uses(term)?;
        tracing::info!(
            active_term = term,
            "keyring reloaded: another node changed it"
        );
        Ok(true)
    }

    /// Run `op`; when it failed because the keyring changed on another node
    /// (a shared engine's write refused, a sealed value under a term this node
    /// does not know), reload the keyring and run it again (a rotation and the
    /// term drop after it are two changes, so up to [`KEYRING_RETRIES`] times).
    pub(super) async fn with_current_keyring<T, F, Fut>(&self, op: F) -> Result<T, VaultError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, VaultError>>,
    {
        let mut tries = 0;
        loop {
            match op().await {
                Err(e) if e.keyring_may_be_stale() && tries < KEYRING_RETRIES => {
                    tries += 1;
                    self.refresh_keyring()?;
                }
                other => return other,
            }
        }
    }

    /// The sync form of [`Vault::with_current_keyring`].
    pub(super) fn with_current_keyring_sync<T>(
        &self,
        op: impl Fn() -> Result<T, VaultError>,
    ) -> Result<T, VaultError> {
        let mut tries = 0;
        loop {
            match op() {
                Err(e) if e.keyring_may_be_stale() && tries < KEYRING_RETRIES => {
                    tries += 1;
                    self.refresh_keyring()?;
                }
                other => return other,
            }
        }
    }
}

/// Reloads of the keyring one operation may make before giving up (503).
const KEYRING_RETRIES: u32 = 5;

impl VaultError {
    /// A failure that a newer keyring from the store may cure.
    pub(super) fn keyring_may_be_stale(&self) -> bool {
        matches!(
            self,
            VaultError::Store(StoreError::KeyringChanged)
                | VaultError::Crypto(CryptoError::UnknownTerm(_))
        )
    }
}

impl Vault {
    /// Open a sealed value; when it is sealed under a term this node does not
    /// know (another node rotated a moment ago), reload the keyring and try
    /// once more.
    pub(super) fn open_sealed(
        &self,
        sealed: &[u8],
        ctx: SealContext<'_>,
    ) -> Result<Zeroizing<Vec<u8>>, VaultError> {
        self.with_current_keyring_sync(|| Ok(self.keyring().open(sealed, ctx)?))
    }
}
