//! Moving an installation between engines: a sled data directory (or a backup
//! of one) loaded into an empty etcd prefix. The other way is a backup: taken
//! from a storage cluster it is a sled data directory (`backup`), which starts
//! as a single appliance with the same master key.

use std::path::Path;

use super::open::unlock_bytes;
use super::VaultError;
use crate::config::{load_master_secret, Config, EnvSecrets};
use crate::crypto::KEYRING_FILE_NAME;
use crate::store::{Backend, Store, StoreOptions};

/// What a load copied.
#[derive(Debug, Clone, Copy, Default)]
pub struct LoadReport {
    pub records: u64,
}

/// Load the stopped sled data directory `src` into the configured storage
/// cluster, whose prefix must be empty. The master key must open `src`'s
/// keyring first (nothing is written otherwise); every record is copied (the
/// sign-in broker's short-lived state stays behind), then the keyring. A load
/// cut short leaves records without a keyring, which no node serves and a
/// second load refuses: clear the prefix (`etcdctl del --prefix <prefix>`)
/// and load again.
pub fn load_data_dir(
    config: &Config,
    env: &[(String, String)],
    secrets: &EnvSecrets,
    src: &Path,
    progress: &dyn crate::progress::Progress,
) -> Result<LoadReport, VaultError> {
    if config.storage.backend != Backend::Etcd {
        return Err(VaultError::Operation(
            "`storage load` copies a data directory into a storage cluster: set \
             storage.backend = \"etcd\" and [storage.etcd] in the configuration first"
                .into(),
        ));
    }
    let keyring_path = src.join(KEYRING_FILE_NAME);
    let bytes = std::fs::read(&keyring_path).map_err(|e| VaultError::DataDir {
        path: src.to_path_buf(),
        reason: format!("cannot read its keyring {}: {e}", keyring_path.display()),
    })?;
    let source = config.master_source(env, secrets);
    let (secret, _) = load_master_secret(&source, secrets, false)?;
    // Proves the master key opens what is loaded (the nodes will need it).
    let (_keyring, _kek) =
        unlock_bytes(config, &source, &secret, &bytes, &src.display().to_string())?;
    drop(secret);
    let options = StoreOptions {
        cache_capacity_bytes: config.cache_capacity_bytes(),
        // Read once, record by record: nothing to gain from a cache.
        auth_cache_bytes: 0,
        commit_metrics: None,
    };
    let from = Store::open(src, &options)?;
    let cluster = config.etcd_settings();
    let to = Store::connect_etcd(&cluster, &options)?;
    if to.keyring()?.is_some() || !to.is_empty()? {
        return Err(VaultError::Operation(format!(
            "{} is not empty; `storage load` only fills an empty prefix (remove it with \
             `etcdctl del --prefix {}` if it holds nothing you need)",
            cluster.describe(),
            cluster.prefix
        )));
    }
    // Every record first, then the keyring: a node refuses to start on records
    // without a keyring (it would create one that opens none of them), so a
    // load cut short is found, not served (clear the prefix and load again).
    let copied = from.copy_into_with(&to, progress)?;
    if !to.replace_keyring_shared(None, &bytes)? {
        return Err(VaultError::Operation(format!(
            "another process wrote a keyring to {} meanwhile; clear the prefix and load again",
            cluster.describe()
        )));
    }
    from.shutdown();
    to.shutdown();
    let records = copied.records;
    Ok(LoadReport { records })
}
