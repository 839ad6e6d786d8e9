//! The `[storage]` and `[audit]` sections of the configuration, and their
//! bounds (the store keeps the data and the audit trail; the vault prunes the
//! trail by `audit.retention_days`).

use std::path::PathBuf;

use serde::Deserialize;

pub use super::engine::etcd::EtcdConfig;

#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// The engine: the embedded sled store in `data_dir` (one appliance), or
    /// an etcd cluster shared by several nodes (`[storage.etcd]`).
    pub backend: Backend,
    /// The sled directory; relative to the config file's folder.
    pub data_dir: PathBuf,
    /// sled's page cache, in MiB (sled's own default is 1 GiB).
    pub cache_capacity_mib: u64,
    /// The records that decide authentication (tokens, domains), kept in
    /// memory, in MiB; 0 turns the cache off. sled only: with etcd other
    /// nodes write too, and the cache is off.
    pub auth_cache_mib: u64,
    /// Where the server writes online backups (`POST /api/v1/admin/backup`).
    pub backup_dir: PathBuf,
    /// The etcd cluster, when `backend = "etcd"`.
    pub etcd: EtcdConfig,
}

/// Largest `storage.auth_cache_mib`.
pub(super) const MAX_AUTH_CACHE_MIB: u64 = 4096;

/// `storage.backend`.
#[derive(Debug, Clone, Copy, Default, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    #[default]
    Sled,
    Etcd,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("data"),
            cache_capacity_mib: 16,
            auth_cache_mib: 1,
            backup_dir: PathBuf::from("backups"),
            backend: Backend::Sled,
            etcd: EtcdConfig::default(),
        }
    }
}

impl StorageConfig {
    /// Bounds of the `[storage]` settings: a message naming the key at fault.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=65536).contains(&self.cache_capacity_mib) {
            return Err(format!(
                "storage.cache_capacity_mib = {} is outside 1..=65536",
                self.cache_capacity_mib
            ));
        }
        if self.auth_cache_mib > MAX_AUTH_CACHE_MIB {
            return Err(format!(
                "storage.auth_cache_mib = {} is outside 0..={MAX_AUTH_CACHE_MIB} (MiB; 0 turns \
                 the authentication cache off)",
                self.auth_cache_mib
            ));
        }
        if self.backend == Backend::Etcd {
            self.etcd.validate()?;
        }
        Ok(())
    }

    /// sled's page cache, in bytes.
    pub fn cache_capacity_bytes(&self) -> u64 {
        self.cache_capacity_mib.saturating_mul(1 << 20)
    }

    /// The authentication cache's budget, in bytes.
    pub fn auth_cache_bytes(&self) -> u64 {
        self.auth_cache_mib.saturating_mul(1 << 20)
    }
}

/// The `[audit]` section of the configuration.
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Audit events older than this are removed.
    pub retention_days: u32,
}

/// Largest value of `audit.retention_days` (100 years).
pub const MAX_RETENTION_DAYS: u32 = 36_500;

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            retention_days: 365,
        }
    }
}

impl AuditConfig {
    /// Bounds of the `[audit]` settings: a message naming the key at fault.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=MAX_RETENTION_DAYS).contains(&self.retention_days) {
            return Err(format!(
                "audit.retention_days = {} is outside 1..={MAX_RETENTION_DAYS} (days; \
                 {MAX_RETENTION_DAYS} is 100 years)",
                self.retention_days
            ));
        }
        Ok(())
    }
}
