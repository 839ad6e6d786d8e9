//! The `[storage]` section of the configuration, and its bounds.

use std::path::PathBuf;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// The sled directory; relative to the config file's folder.
    pub data_dir: PathBuf,
    /// sled's page cache, in MiB (sled's own default is 1 GiB).
    pub cache_capacity_mib: u64,
    /// Where the server writes online backups (`POST /api/v1/admin/backup`).
    pub backup_dir: PathBuf,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("data"),
            cache_capacity_mib: 16,
            backup_dir: PathBuf::from("backups"),
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
        Ok(())
    }

    /// sled's page cache, in bytes.
    pub fn cache_capacity_bytes(&self) -> u64 {
        self.cache_capacity_mib.saturating_mul(1 << 20)
    }
}
