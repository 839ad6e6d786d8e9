//! Opening the data directory under the master key: bootstrap (new salt and
//! keyring) or unlock, the KDF cap and the file permissions, then the store.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use super::keyring_home::KeyringHome;
use super::term_uses::TermUses;
use super::{Vault, VaultError};
use crate::config::{load_master_secret, Config, ConfigError, EnvSecrets, MasterSource};
use crate::crypto::{CryptoError, Kek, Keyring, KeyringFile, KEYRING_FILE_NAME};
use crate::store::{fsutil, Backend, CommitMetrics, Store, StoreOptions};

/// What happened while opening, for the caller to report.
#[derive(Debug, Default)]
pub struct OpenReport {
    /// The data directory was initialised by this open.
    pub initialized: bool,
    /// A new master key file was written here.
    pub key_file_created: Option<PathBuf>,
    /// Time spent in Argon2id.
    pub kdf_millis: u128,
    /// Folders and files of the data and backup directories whose group or
    /// other permission bits were removed.
    pub permissions_tightened: fsutil::Tightened,
}

/// `p` as the file system resolves it: symbolic links and `..` followed as far
/// as the path exists, the missing rest appended (a key file or data directory
/// not created yet). Compared with `starts_with`, this cannot be fooled by a
/// symbolic link the way a lexical comparison can.
fn resolved_path(p: &Path) -> PathBuf {
    let abs = lexical_absolute(p);
    let mut missing = Vec::new();
    let mut cur = abs.as_path();
    loop {
        if let Ok(real) = cur.canonicalize() {
            let mut out = real;
            for name in missing.iter().rev() {
                out.push(name);
            }
            return out;
        }
        match (cur.parent(), cur.file_name()) {
            (Some(parent), Some(name)) => {
                missing.push(name.to_owned());
                cur = parent;
            }
            _ => return abs,
        }
    }
}

fn lexical_absolute(p: &Path) -> PathBuf {
    let abs = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_default().join(p)
    };
    let mut out = PathBuf::new();
    for c in abs.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

impl Vault {
    /// Open the data directory under the master secret, creating it (random salt,
    /// new keyring) when it does not exist or is empty. A wrong master secret
    /// changes nothing on disk: the keyring is checked before sled is opened.
    ///
    /// The secrets are taken from `env` (see [`Vault::open_with_secrets`]).
    pub fn open(
        config: &Config,
        env: &[(String, String)],
    ) -> Result<(Self, OpenReport), VaultError> {
        Self::open_with_secrets(config, env, &EnvSecrets::from_env(env), None)
    }

    /// As [`Vault::open`], with the secret variables (the master passphrase)
    /// given apart from the rest of the environment, as the command line holds them.
    /// `commit_metrics`: where the group commit reports its batches (the
    /// server's metrics), if anywhere.
    pub fn open_with_secrets(
        config: &Config,
        env: &[(String, String)],
        secrets: &EnvSecrets,
        commit_metrics: Option<CommitMetrics>,
    ) -> Result<(Self, OpenReport), VaultError> {
        let data_dir = config.data_dir();
        let source = config.master_source(env, secrets);
        let secret_file = match &source {
            MasterSource::KeyFile(p) => Some((p, "security.master_key_file")),
            MasterSource::Credential { path, .. } => {
                Some((path, "the master key credential (security.master_key_file)"))
            }
            MasterSource::PassphraseFile(p) => Some((p, crate::config::ENV_PASSPHRASE_FILE)),
            MasterSource::EnvPassphrase => None,
        };
        if let Some((file, setting)) = secret_file {
            if resolved_path(file).starts_with(resolved_path(&data_dir)) {
                return Err(ConfigError::Weak(format!(
                    "{setting} ({}) is inside the data directory {} (symbolic links followed); \
                     keep the master key apart from the data directory so that a copy of it \
                     alone reveals nothing",
                    file.display(),
                    data_dir.display()
                ))
                .into());
            }
        }
        let options = StoreOptions {
            cache_capacity_bytes: config.cache_capacity_bytes(),
            auth_cache_bytes: config.auth_cache_bytes(),
            commit_metrics,
        };
        let mut report = OpenReport::default();
        let unlocked = match config.storage.backend {
            Backend::Sled => {
                Self::unlock_data_dir(config, &source, secrets, &options, &mut report)?
            }
            Backend::Etcd => Self::unlock_cluster(config, &source, secrets, &options, &mut report)?,
        };
        let Unlocked {
            store,
            keyring,
            kek,
            home,
            stored,
        } = unlocked;
        store.set_disk_reserve(config.limits.disk_reserve_bytes());
        store.set_audit_mac(Arc::new(keyring.audit_key()))?;
        store.set_keyring_guard(Some(stored.clone()));
        let term = keyring.active_term();
        let reserved = store.term_uses(term)?;
        Ok((
            Self {
                store,
                keyring: RwLock::new(Arc::new(keyring)),
                kek,
                keyring_home: home,
                keyring_stored: Mutex::new(stored),
                backup_dir: config.backup_dir(),
                uses: Mutex::new(TermUses {
                    term,
                    used: reserved,
                    reserved,
                    reencrypted: 0,
                }),
                rotate_after: config.security.rotate_after_encryptions,
                audit_retention_days: config.audit.retention_days,
                rotation: tokio::sync::Mutex::new(()),
                wake: tokio::sync::Notify::new(),
                outbound_jobs: Mutex::default(),
            },
            report,
        ))
    }

    /// The embedded engine: the keyring file in the data directory (created
    /// with the directory when both are missing), unlocked before sled opens,
    /// so a wrong master key changes nothing on disk.
    fn unlock_data_dir(
        config: &Config,
        source: &MasterSource,
        secrets: &EnvSecrets,
        options: &StoreOptions,
        report: &mut OpenReport,
    ) -> Result<Unlocked, VaultError> {
        let data_dir = config.data_dir();
        let data_err = |reason: String| VaultError::DataDir {
            path: data_dir.clone(),
            reason,
        };
        let keyring_path = data_dir.join(KEYRING_FILE_NAME);
        let fresh = match std::fs::symlink_metadata(&keyring_path) {
            Ok(_) => false,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
            Err(e) => return Err(data_err(format!("cannot read the keyring: {e}"))),
        };
        if fresh
            && !fsutil::is_absent_or_empty(&data_dir)
                .map_err(|e| data_err(format!("cannot list it: {e}")))?
        {
            return Err(data_err(
                "it is not empty but holds no oidcvault keyring; refusing to initialise it \
                 (point storage.data_dir at an empty or missing folder, or restore the keyring file)"
                    .into(),
            ));
        }
        let (secret, key_file_created) = load_master_secret(source, secrets, fresh)?;
        report.initialized = fresh;
        report.key_file_created = match (source, key_file_created) {
            (MasterSource::KeyFile(p), true) => Some(p.clone()),
            _ => None,
        };
        let started = std::time::Instant::now();
        let (keyring, kek, stored) = if fresh {
            fsutil::create_private_dir(&data_dir)
                .map_err(|e| data_err(format!("cannot create it: {e}")))?;
            let keyring = Keyring::generate();
            let kek = Kek::derive_new_salt(&secret, config.kdf_params())?;
            let bytes = KeyringFile::wrap(&keyring, &kek)?.to_bytes()?;
            fsutil::write_atomic(&keyring_path, &bytes)
                .map_err(|e| data_err(format!("cannot write the keyring: {e}")))?;
            (keyring, kek, bytes)
        } else {
            let bytes = std::fs::read(&keyring_path)
                .map_err(|e| data_err(format!("cannot read the keyring: {e}")))?;
            let (keyring, kek) = unlock_bytes(
                config,
                source,
                &secret,
                &bytes,
                &data_dir.display().to_string(),
            )?;
            (keyring, kek, bytes)
        };
        report.kdf_millis = started.elapsed().as_millis();
        drop(secret);
        // Once the master key is known to be right (a wrong one changes nothing
        // on disk), before sled opens: the data and backup directories become
        // private to this user, or the command stops saying how to make them so.
        report.permissions_tightened =
            fsutil::make_private_trees(&[&data_dir, &config.backup_dir()])
                .map_err(|e| VaultError::Operation(e.to_string()))?;
        let store = Store::open(&data_dir, options)?;
        Ok(Unlocked {
            store,
            keyring,
            kek,
            home: KeyringHome::File(keyring_path),
            stored,
        })
    }

    /// A storage cluster (etcd): the keyring is a record of the store. The
    /// first node to start on an empty prefix creates it (compare-and-swap: of
    /// two nodes starting at once, one keyring wins and both use it); every
    /// other node unlocks it with the same master secret. A wrong master key
    /// writes nothing.
    fn unlock_cluster(
        config: &Config,
        source: &MasterSource,
        secrets: &EnvSecrets,
        options: &StoreOptions,
        report: &mut OpenReport,
    ) -> Result<Unlocked, VaultError> {
        let store = Store::connect_etcd(&config.etcd_settings(), options)?;
        let place = config.etcd_settings().describe();
        let existing = store.keyring()?;
        if existing.is_none() && !store.is_empty()? {
            // Records without their keyring (a load cut short, a keyring
            // removed by hand): a new keyring could open none of them.
            return Err(VaultError::Operation(format!(
                "{place} holds records but no keyring; refusing to create a new one that \
                 could open none of them (restore the keyring, or clear the prefix and load \
                 the data again: README, Running more than one node)"
            )));
        }
        let (secret, key_file_created) = load_master_secret(source, secrets, existing.is_none())?;
        report.key_file_created = match (source, key_file_created) {
            (MasterSource::KeyFile(p), true) => Some(p.clone()),
            _ => None,
        };
        let started = std::time::Instant::now();
        let (keyring, kek, stored) = match existing {
            Some(bytes) => {
                let (keyring, kek) = unlock_bytes(config, source, &secret, &bytes, &place)?;
                (keyring, kek, bytes)
            }
            None => {
                let keyring = Keyring::generate();
                let kek = Kek::derive_new_salt(&secret, config.kdf_params())?;
                let bytes = KeyringFile::wrap(&keyring, &kek)?.to_bytes()?;
                if store.replace_keyring_shared(None, &bytes)? {
                    report.initialized = true;
                    (keyring, kek, bytes)
                } else {
                    // Another node created it first: use that one.
                    let bytes = store.keyring()?.ok_or_else(|| {
                        VaultError::Operation(format!(
                            "the keyring in {place} vanished while starting"
                        ))
                    })?;
                    let (keyring, kek) = unlock_bytes(config, source, &secret, &bytes, &place)?;
                    (keyring, kek, bytes)
                }
            }
        };
        report.kdf_millis = started.elapsed().as_millis();
        drop(secret);
        report.permissions_tightened = fsutil::make_private_trees(&[&config.backup_dir()])
            .map_err(|e| VaultError::Operation(e.to_string()))?;
        Ok(Unlocked {
            store,
            keyring,
            kek,
            home: KeyringHome::Store,
            stored,
        })
    }
}

/// What opening produced: the store and the keys that unlock it.
struct Unlocked {
    store: Store,
    keyring: Keyring,
    kek: Kek,
    home: KeyringHome,
    /// The keyring's stored form (the bytes a compare-and-swap expects).
    stored: Vec<u8>,
}

/// Parse a stored keyring, bound its KDF parameters (before any derivation:
/// a tampered keyring cannot ask for more work than the configuration
/// allows), and unlock it; a wrong secret names the master key and `place`.
pub(super) fn unlock_bytes(
    config: &Config,
    source: &MasterSource,
    secret: &crate::crypto::MasterSecret,
    bytes: &[u8],
    place: &str,
) -> Result<(Keyring, Kek), VaultError> {
    let file = KeyringFile::from_bytes(bytes)?;
    file.kdf().check_cap(&config.kdf_cap())?;
    file.unlock(secret).map_err(|e| match e {
        CryptoError::WrongMasterKey => VaultError::WrongMasterKey {
            master: source.to_string(),
            keyring: place.to_owned(),
        },
        other => other.into(),
    })
}
