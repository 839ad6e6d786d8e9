//! The master secret: which one applies (the passphrase from the environment,
//! a passphrase file, or the key file), and loading it into zeroizing buffers;
//! the key file is created (0600, 256 random bits) on first start when allowed.
//! Kept apart from the configuration's layering, which only decides the paths.

use std::io::Read;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use rand::rngs::OsRng;
use rand::RngCore;
use zeroize::Zeroizing;

use super::ConfigError;
use crate::crypto::MasterSecret;

pub const ENV_PASSPHRASE: &str = "OIDCVAULT_MASTER_PASSPHRASE";
pub const ENV_PASSPHRASE_FILE: &str = "OIDCVAULT_MASTER_PASSPHRASE_FILE";
/// Operator token for commands that go through a running server.
pub const ENV_TOKEN: &str = "OIDCVAULT_TOKEN";
/// The new passphrase of `key change-passphrase`.
pub const ENV_NEW_PASSPHRASE: &str = "OIDCVAULT_NEW_MASTER_PASSPHRASE";
/// The variables that carry a secret: taken out of the process environment at
/// start (`crate::startup`) and kept only in [`EnvSecrets`].
pub const SECRET_VARS: [&str; 3] = [ENV_PASSPHRASE, ENV_TOKEN, ENV_NEW_PASSPHRASE];

/// Set by systemd for a unit with `LoadCredential=`/`LoadCredentialEncrypted=`:
/// the read-only folder holding the unit's credentials.
pub const ENV_CREDENTIALS_DIRECTORY: &str = "CREDENTIALS_DIRECTORY";

/// A master passphrase shorter than this is refused.
pub const MIN_PASSPHRASE_CHARS: usize = 12;

/// The secrets given in the environment ([`SECRET_VARS`]), in zeroizing
/// buffers. The command line takes them out of the process environment once, at
/// start (`crate::startup`); nothing else keeps a copy. `Debug` shows which are set.
#[derive(Default)]
pub struct EnvSecrets {
    pub master_passphrase: Option<Zeroizing<String>>,
    pub token: Option<Zeroizing<String>>,
    pub new_master_passphrase: Option<Zeroizing<String>>,
}

impl std::fmt::Debug for EnvSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnvSecrets")
            .field("master_passphrase", &self.master_passphrase.is_some())
            .field("token", &self.token.is_some())
            .field(
                "new_master_passphrase",
                &self.new_master_passphrase.is_some(),
            )
            .finish()
    }
}

impl EnvSecrets {
    /// The secrets among `env` (in-process callers and tests, which pass the
    /// environment explicitly).
    pub fn from_env(env: &[(String, String)]) -> Self {
        let mut secrets = Self::default();
        for (name, value) in env {
            secrets.set(name, Zeroizing::new(value.clone()));
        }
        secrets
    }

    /// Keep `value` as the secret variable `name`; false when `name` is not one.
    pub fn set(&mut self, name: &str, value: Zeroizing<String>) -> bool {
        let slot = match name {
            ENV_PASSPHRASE => &mut self.master_passphrase,
            ENV_TOKEN => &mut self.token,
            ENV_NEW_PASSPHRASE => &mut self.new_master_passphrase,
            _ => return false,
        };
        *slot = Some(value);
        true
    }
}

/// Where the master secret comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MasterSource {
    /// `OIDCVAULT_MASTER_PASSPHRASE`.
    EnvPassphrase,
    /// `OIDCVAULT_MASTER_PASSPHRASE_FILE`.
    PassphraseFile(PathBuf),
    /// `security.master_key_file`.
    KeyFile(PathBuf),
    /// `security.master_key_file` handed over by systemd: the credential named
    /// like the setting's last part (`/etc/oidcvault/master.key` -> `master.key`),
    /// in `$CREDENTIALS_DIRECTORY`. Never created: the folder is read-only.
    Credential { name: String, path: PathBuf },
}

impl MasterSource {
    /// The source for `security.master_key_file` (`key_file`, resolved): the
    /// systemd credential named like its last part when `credentials_dir`
    /// (`$CREDENTIALS_DIRECTORY`) is set and not empty, else the file itself.
    pub fn key_file(key_file: PathBuf, credentials_dir: Option<&str>) -> Self {
        let name = key_file.file_name().and_then(|n| n.to_str());
        match (credentials_dir.filter(|d| !d.is_empty()), name) {
            (Some(dir), Some(name)) => MasterSource::Credential {
                name: name.to_owned(),
                path: Path::new(dir).join(name),
            },
            _ => MasterSource::KeyFile(key_file),
        }
    }
}

impl std::fmt::Display for MasterSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MasterSource::EnvPassphrase => write!(f, "the master passphrase ({ENV_PASSPHRASE})"),
            MasterSource::PassphraseFile(p) => write!(
                f,
                "the master passphrase file {} ({ENV_PASSPHRASE_FILE})",
                p.display()
            ),
            MasterSource::KeyFile(p) => write!(f, "the master key file {}", p.display()),
            MasterSource::Credential { name, path } => write!(
                f,
                "the master key credential {name} ({}, from ${ENV_CREDENTIALS_DIRECTORY})",
                path.display()
            ),
        }
    }
}

/// Read the master secret. A missing key file is created (mode 0600, 256 random
/// bits) only when `may_create` is set, i.e. when the data directory is new.
pub fn load_master_secret(
    source: &MasterSource,
    secrets: &EnvSecrets,
    may_create: bool,
) -> Result<(MasterSecret, bool), ConfigError> {
    let err = |m: String| ConfigError::MasterKey(m);
    let (bytes, created) = match source {
        MasterSource::EnvPassphrase => {
            let v = secrets
                .master_passphrase
                .as_ref()
                .map(|v| Zeroizing::new(v.as_bytes().to_vec()))
                .unwrap_or_default();
            (v, false)
        }
        MasterSource::PassphraseFile(path) => (read_secret_file(path, source)?, false),
        MasterSource::KeyFile(path) => match std::fs::symlink_metadata(path) {
            Ok(_) => (read_secret_file(path, source)?, false),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if !may_create {
                    return Err(err(format!(
                        "{source} does not exist, but the data directory was created with a \
                         master key: restore the key file from your key backup, or set {ENV_PASSPHRASE}"
                    )));
                }
                (create_key_file(path)?, true)
            }
            Err(e) => return Err(err(format!("cannot read {source}: {e}"))),
        },
        MasterSource::Credential { name, path } => match std::fs::symlink_metadata(path) {
            Ok(_) => (read_secret_file(path, source)?, false),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(err(format!(
                    "{source} does not exist: systemd set ${ENV_CREDENTIALS_DIRECTORY} but handed \
                     over no credential named {name}; add LoadCredential={name}:/etc/oidcvault/{name} \
                     (or LoadCredentialEncrypted=) to the unit, or name the credential like the last \
                     part of security.master_key_file (no key is ever created there: it is read-only)"
                )))
            }
            Err(e) => return Err(err(format!("cannot read {source}: {e}"))),
        },
    };
    let secret = MasterSecret::new(trim(bytes));
    if secret.char_len() < MIN_PASSPHRASE_CHARS {
        return Err(err(format!(
            "{source} is shorter than {MIN_PASSPHRASE_CHARS} characters; use a longer passphrase \
             (or remove {ENV_PASSPHRASE} to use a generated key file)"
        )));
    }
    Ok((secret, created))
}

fn trim(bytes: Zeroizing<Vec<u8>>) -> Zeroizing<Vec<u8>> {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |i| i + 1);
    Zeroizing::new(bytes.get(start..end).unwrap_or_default().to_vec())
}

fn read_secret_file(path: &Path, source: &MasterSource) -> Result<Zeroizing<Vec<u8>>, ConfigError> {
    let err = |m: String| ConfigError::MasterKey(m);
    let meta = std::fs::metadata(path).map_err(|e| err(format!("cannot read {source}: {e}")))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(err(format!(
            "{source} is readable by other users (mode {mode:o}); run: chmod 600 {}",
            path.display()
        )));
    }
    let mut buf = Zeroizing::new(Vec::new());
    std::fs::File::open(path)
        .and_then(|mut f| f.read_to_end(&mut buf))
        .map_err(|e| err(format!("cannot read {source}: {e}")))?;
    Ok(buf)
}

fn create_key_file(path: &Path) -> Result<Zeroizing<Vec<u8>>, ConfigError> {
    use std::io::Write;
    let err = |e: std::io::Error| {
        ConfigError::MasterKey(format!(
            "cannot create the master key file {}: {e}",
            path.display()
        ))
    };
    let mut raw = Zeroizing::new([0u8; 32]);
    OsRng.fill_bytes(raw.as_mut());
    let mut text = Zeroizing::new(STANDARD.encode(raw.as_slice()));
    text.push('\n');
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(err)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(err)?;
    f.write_all(text.as_bytes()).map_err(err)?;
    f.sync_all().map_err(err)?;
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        crate::store::fsutil::sync_dir(parent).map_err(err)?;
    }
    Ok(Zeroizing::new(text.as_bytes().to_vec()))
}

#[cfg(test)]
mod tests {
    use super::super::tests::env;
    use super::*;

    #[test]
    fn key_file_is_created_private_only_when_allowed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        let src = MasterSource::KeyFile(path.clone());
        assert!(load_master_secret(&src, &EnvSecrets::default(), false).is_err());
        let (a, created) = load_master_secret(&src, &EnvSecrets::default(), true).unwrap();
        assert!(created);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let (b, created) = load_master_secret(&src, &EnvSecrets::default(), true).unwrap();
        assert!(!created);
        assert_eq!(a.expose(), b.expose());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = load_master_secret(&src, &EnvSecrets::default(), false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("chmod 600"), "{e}");
    }

    #[test]
    fn the_credential_is_named_like_the_key_file_and_never_created() {
        let creds = tempfile::tempdir().unwrap();
        let dir = creds.path().to_str().unwrap();
        let src = MasterSource::key_file(PathBuf::from("/etc/oidcvault/master.key"), Some(dir));
        let path = creds.path().join("master.key");
        assert_eq!(
            src,
            MasterSource::Credential {
                name: "master.key".into(),
                path: path.clone()
            }
        );
        // Unset or empty: the file itself.
        for unset in [None, Some("")] {
            assert_eq!(
                MasterSource::key_file(PathBuf::from("/k/master.key"), unset),
                MasterSource::KeyFile(PathBuf::from("/k/master.key"))
            );
        }
        // Missing: refused even for a new data directory, with the unit line to add.
        let e = load_master_secret(&src, &EnvSecrets::default(), true)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("LoadCredential=master.key:") && e.contains("CREDENTIALS_DIRECTORY"),
            "{e}"
        );
        assert!(
            !path.exists(),
            "a key was created in the credentials directory"
        );
        // Present (systemd makes it 0400): read, whitespace trimmed.
        std::fs::write(&path, "0123456789abcdefghij\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
        let (secret, created) = load_master_secret(&src, &EnvSecrets::default(), true).unwrap();
        assert!(!created);
        assert_eq!(secret.expose(), b"0123456789abcdefghij");
        // The mode check still holds.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o440)).unwrap();
        let e = load_master_secret(&src, &EnvSecrets::default(), false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("chmod 600") && e.contains("credential"), "{e}");
    }

    #[test]
    fn short_passphrase_is_refused() {
        let e = env(&[(ENV_PASSPHRASE, "short")]);
        let r = load_master_secret(
            &MasterSource::EnvPassphrase,
            &EnvSecrets::from_env(&e),
            true,
        );
        let msg = r.unwrap_err().to_string();
        assert!(msg.contains("master") && !msg.contains("short\""), "{msg}");
    }
}
