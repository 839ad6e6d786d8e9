//! The service layer: opens the data directory under the master key and carries
//! out every operation the HTTP API and the command line offer. It speaks in
//! model types (`Domain`, `OidcConfig`, ...), never in storage records or DTOs.
//!
//! One file per job: `model` (the model types), `open` (unlock or bootstrap
//! the data directory), `configs`, `domains`, `tokens`, `apps` (one per
//! resource; `apps` are the sign-in broker's applications, `redirect_uri`
//! their redirect URIs' rules), `binding` (where a secret may go),
//! `endpoints` (endpoints from discovery), `keys` (rotation, re-encryption,
//! passphrase change, verify) with `term_uses` (encryptions counted per key
//! term), `audit` (the audit trail), `backup` (online backups), `sso` (the
//! sign-in broker's transactions and one-time codes).

mod apps;
mod audit;
mod backup;
mod binding;
mod configs;
mod domains;
mod endpoints;
mod keyring_home;
mod keys;
mod model;
mod moves;
mod open;
mod redirect_uri;
mod sso;
mod term_uses;
mod tokens;

pub use audit::{valid_action_filter, AuditEvent, AuditQuery};
pub use backup::BackupInfo;
pub use endpoints::{
    needs_fetch as needs_discovery_fetch, Discovered, EndpointChange, EndpointKept, EndpointSource,
    RefreshReport,
};
pub use keys::{KeyStatus, TermStatus, VerifyReport};
pub use model::{
    normalize_domain_name, App, AppSecret, BoundSecret, Caller, ConfigPatch, Domain, DomainAccess,
    OidcConfig, OutboundJob, Patch, TokenInfo, TokenTarget,
};
pub use moves::{load_data_dir, LoadReport};
pub use open::OpenReport;
pub use sso::{CodeGrant, LoginEvent, LoginPurpose, LoginTransaction, Redemption, TakenLogin};

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use crate::config::ConfigError;
use crate::crypto::{CryptoError, Kek, Keyring};
use crate::store::{Abort, Store, StoreError};
use term_uses::TermUses;

/// Field name → messages, as Django REST framework reports validation errors.
pub type FieldErrors = BTreeMap<String, Vec<String>>;

pub fn field_error(field: &str, message: impl Into<String>) -> FieldErrors {
    let mut m = FieldErrors::new();
    m.insert(field.to_owned(), vec![message.into()]);
    m
}

pub const REQUIRED: &str = "This field is required.";

#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(
        "wrong master key: {master} does not unlock the keyring in {keyring}; nothing was changed"
    )]
    WrongMasterKey { master: String, keyring: String },
    #[error("data directory {}: {reason}", path.display())]
    DataDir { path: PathBuf, reason: String },
    #[error("invalid request")]
    Invalid(FieldErrors),
    #[error("not found")]
    NotFound,
    #[error("{0}")]
    Operation(String),
}

/// What a caller of the vault needs to know of a storage failure, without the
/// store's own error type (which stays below this layer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageFailure {
    /// The enterprise domain named is gone.
    DomainNotFound,
    /// Below the free-space reserve: nothing was changed; retry once space is freed.
    DiskFull,
    /// A write failed to reach disk: the store stopped serving (fail-stop) until
    /// a restart.
    Failed,
    /// The store is closed, or cannot be reached right now (a storage cluster
    /// without quorum): nothing may be assumed about a write that met it, and
    /// a retry is safe.
    Unavailable,
}

impl VaultError {
    /// The storage failure behind this error, if it is one the caller answers
    /// in its own way (the API: 404, 503); `None` for anything else.
    pub fn storage_failure(&self) -> Option<StorageFailure> {
        match self {
            VaultError::Store(s) => match s {
                StoreError::DomainNotFound => Some(StorageFailure::DomainNotFound),
                StoreError::DiskFull { .. } => Some(StorageFailure::DiskFull),
                StoreError::Failed | StoreError::Durability(_) => Some(StorageFailure::Failed),
                StoreError::Closed
                | StoreError::Io { .. }
                | StoreError::Unavailable(_)
                | StoreError::KeyringChanged => Some(StorageFailure::Unavailable),
                _ => None,
            },
            _ => None,
        }
    }
}

/// Why the server is not ready (`/readyz`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unready {
    /// A write to disk failed: the store stopped until a restart.
    WriteFailed,
    /// The storage cluster is unreachable or has no quorum.
    ClusterUnavailable,
}

impl Unready {
    pub fn detail(self) -> &'static str {
        match self {
            Unready::WriteFailed => "The last write to disk failed; see the server log.",
            Unready::ClusterUnavailable => {
                "The storage cluster (etcd) is unreachable or has no quorum; writes are \
                 refused until it answers again (see the server log)."
            }
        }
    }
}

impl<E: Into<VaultError>> From<Abort<E>> for VaultError {
    fn from(a: Abort<E>) -> Self {
        match a {
            Abort::Store(e) => VaultError::Store(e),
            Abort::Caller(e) => e.into(),
        }
    }
}

pub struct Vault {
    store: Store,
    keyring: RwLock<Arc<Keyring>>,
    kek: Kek,
    /// Where the wrapped keyring is kept, and its stored form this node holds
    /// (`keyring_home`).
    keyring_home: keyring_home::KeyringHome,
    keyring_stored: Mutex<Vec<u8>>,
    backup_dir: PathBuf,
    uses: Mutex<TermUses>,
    rotate_after: u64,
    audit_retention_days: u32,
    rotation: tokio::sync::Mutex<()>,
    wake: tokio::sync::Notify,
    /// Domains with a connection test or discovery refresh running.
    outbound_jobs: Mutex<std::collections::HashSet<u64>>,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault")
            .field("store", &self.store)
            .field("keyring", &self.keyring())
            .field("kek", &self.kek)
            .finish_non_exhaustive()
    }
}

impl Vault {
    /// The keyring as it is now (a snapshot: rotation swaps in a new one).
    pub fn keyring(&self) -> Arc<Keyring> {
        self.keyring
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Bytes the store takes on disk (for the metrics).
    pub fn size_on_disk(&self) -> Result<u64, VaultError> {
        Ok(self.store.size_on_disk()?)
    }

    /// The authentication cache's figures, for the metrics (`None`: no cache).
    pub fn auth_cache(&self) -> Option<crate::store::engine::cached::CacheFigures> {
        self.store.auth_cache()
    }

    /// Domains, configs and configs per key term, as kept in memory by every
    /// write (for the metrics).
    pub fn counts(&self) -> crate::store::Counts {
        self.store.counts()
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Ready to serve: the store is open, the keys unlocked, and the store can
    /// write (the last group commit succeeded; the storage cluster answers
    /// with a quorum). Blocking (a network round trip with etcd).
    pub fn readiness(&self) -> Result<(), Unready> {
        if !self.store.healthy() {
            return Err(Unready::WriteFailed);
        }
        match self.store.ready() {
            Ok(()) => Ok(()),
            Err(e) => {
                tracing::warn!(error = %e, "not ready: the storage cluster does not answer");
                Err(Unready::ClusterUnavailable)
            }
        }
    }

    /// Final flush and fsync; later writes fail.
    pub fn shutdown(&self) {
        self.store.shutdown();
    }
}
