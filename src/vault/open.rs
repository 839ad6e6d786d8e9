//! Opening the data directory under the master key: bootstrap (new salt and
//! keyring) or unlock, the KDF cap and the file permissions, then the store.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use super::term_uses::TermUses;
use super::{Vault, VaultError};
use crate::config::{load_master_secret, Config, ConfigError, EnvSecrets, MasterSource};
use crate::crypto::{CryptoError, Kek, Keyring, KeyringFile, KEYRING_FILE_NAME};
use crate::store::{fsutil, CommitMetrics, Store, StoreOptions};

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
        let data_err = |reason: String| VaultError::DataDir {
            path: data_dir.clone(),
            reason,
        };
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
        let (secret, key_file_created) = load_master_secret(&source, secrets, fresh)?;
        let mut report = OpenReport {
            permissions_tightened: 0,
            initialized: fresh,
            key_file_created: match (&source, key_file_created) {
                (MasterSource::KeyFile(p), true) => Some(p.clone()),
                _ => None,
            },
            kdf_millis: 0,
        };
        let started = std::time::Instant::now();
        let (keyring, kek) = if fresh {
            fsutil::create_private_dir(&data_dir)
                .map_err(|e| data_err(format!("cannot create it: {e}")))?;
            let keyring = Keyring::generate();
            let kek = Kek::derive_new_salt(&secret, config.kdf_params())?;
            let file = KeyringFile::wrap(&keyring, &kek)?;
            fsutil::write_atomic(&keyring_path, &file.to_bytes()?)
                .map_err(|e| data_err(format!("cannot write the keyring: {e}")))?;
            (keyring, kek)
        } else {
            let bytes = std::fs::read(&keyring_path)
                .map_err(|e| data_err(format!("cannot read the keyring: {e}")))?;
            let file = KeyringFile::from_bytes(&bytes)?;
            // Before any derivation: a tampered keyring cannot ask for more work
            // than the configuration allows.
            file.kdf().check_cap(&config.kdf_cap())?;
            file.unlock(&secret).map_err(|e| match e {
                CryptoError::WrongMasterKey => VaultError::WrongMasterKey {
                    master: source.to_string(),
                    data_dir: data_dir.clone(),
                },
                other => other.into(),
            })?
        };
        report.kdf_millis = started.elapsed().as_millis();
        drop(secret);
        // Once the master key is known to be right (a wrong one changes nothing
        // on disk), before sled opens: the data and backup directories become
        // private to this user, or the command stops saying how to make them so.
        report.permissions_tightened =
            fsutil::make_private_trees(&[&data_dir, &config.backup_dir()])
                .map_err(|e| VaultError::Operation(e.to_string()))?;
        let store = Store::open(
            &data_dir,
            &StoreOptions {
                cache_capacity_bytes: config.cache_capacity_bytes(),
                commit_metrics,
            },
        )?;
        store.set_disk_reserve(config.limits.disk_reserve_bytes());
        store.set_audit_mac(Arc::new(keyring.audit_key()))?;
        let term = keyring.active_term();
        let reserved = store.term_uses(term)?;
        Ok((
            Self {
                store,
                keyring: RwLock::new(Arc::new(keyring)),
                kek,
                keyring_path,
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
}
