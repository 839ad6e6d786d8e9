//! The service layer: opens the data directory under the master key and carries
//! out every operation the HTTP API and the command line offer. It speaks in
//! model types (`Domain`, `OidcConfig`, ...), never in storage records or DTOs.
//!
//! Submodules: `keys` (rotation, re-encryption, passphrase change, verify),
//! `audit` (the audit trail), `backup` (online backups).

mod audit;
mod backup;
mod binding;
mod endpoints;
mod keys;

pub use audit::{AuditConfig, AuditEvent, AuditQuery, MAX_RETENTION_DAYS};
pub use backup::BackupInfo;
pub use endpoints::{
    needs_fetch as needs_discovery_fetch, Discovered, EndpointChange, EndpointKept, EndpointSource,
    RefreshReport,
};
pub use keys::{KeyStatus, TermStatus, VerifyReport};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use crate::config::{load_master_secret, Config, ConfigError, EnvSecrets, MasterSource};
use crate::crypto::{
    self, mask_secret, CryptoError, Field, Kek, Keyring, KeyringFile, SealContext, SecretString,
    TokenString, KEYRING_FILE_NAME,
};
use crate::store::{
    fsutil, Abort, AuditRecord, CommitMetrics, ConfigRecord, DomainRecord, Store, StoreError,
    StoreOptions, TokenRecord, TokenScope,
};
use crate::time::now_micros;

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
        "wrong master key: {master} does not unlock the keyring in {}; nothing was changed",
        data_dir.display()
    )]
    WrongMasterKey { master: String, data_dir: PathBuf },
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
    /// The store is closed or cannot be read right now.
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
                StoreError::Closed | StoreError::Io { .. } => Some(StorageFailure::Unavailable),
                _ => None,
            },
            _ => None,
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

// ---- model types ---------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Domain {
    pub id: u64,
    pub name: String,
    pub created_at: i64,
}

impl From<DomainRecord> for Domain {
    fn from(r: DomainRecord) -> Self {
        Self {
            id: r.id,
            name: r.name,
            created_at: r.created_at,
        }
    }
}

/// A stored OIDC configuration as the outside world may see it: masked secret only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcConfig {
    pub id: u64,
    pub domain_id: u64,
    pub client_id: String,
    pub client_secret_masked: String,
    pub discovery_url: Option<String>,
    pub authorization_endpoint: Option<String>,
    pub token_endpoint: Option<String>,
    pub userinfo_endpoint: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    /// Endpoint fields managed by discovery (the others were set by hand).
    pub discovered_endpoints: Vec<String>,
}

impl From<ConfigRecord> for OidcConfig {
    fn from(r: ConfigRecord) -> Self {
        Self {
            id: r.id,
            domain_id: r.domain_id,
            client_id: r.client_id,
            client_secret_masked: r.secret_masked,
            discovery_url: r.discovery_url,
            authorization_endpoint: r.authorization_endpoint,
            token_endpoint: r.token_endpoint,
            userinfo_endpoint: r.userinfo_endpoint,
            created_at: r.created_at,
            updated_at: r.updated_at,
            discovered_endpoints: r.discovered_endpoints,
        }
    }
}

/// One optional field of an update: left out, set to `null`, or set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Patch<T> {
    #[default]
    Keep,
    Clear,
    Set(T),
}

impl<T: Clone> Patch<T> {
    fn apply(&self, current: Option<T>) -> Option<T> {
        match self {
            Patch::Keep => current,
            Patch::Clear => None,
            Patch::Set(v) => Some(v.clone()),
        }
    }
}

/// A validated create-or-update request.
#[derive(Debug, Default)]
pub struct ConfigPatch {
    pub client_id: Option<String>,
    pub client_secret: Option<SecretString>,
    pub discovery_url: Patch<String>,
    pub authorization_endpoint: Patch<String>,
    pub token_endpoint: Patch<String>,
    pub userinfo_endpoint: Patch<String>,
    /// Whether the endpoints come from discovery (resolve on save).
    pub endpoint_source: EndpointSource,
}

/// A running outbound job of one domain (see [`Vault::begin_outbound_job`]).
#[derive(Debug)]
pub struct OutboundJob<'a> {
    jobs: &'a Mutex<std::collections::HashSet<u64>>,
    domain_id: u64,
}

impl Drop for OutboundJob<'_> {
    fn drop(&mut self) {
        self.jobs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&self.domain_id);
    }
}

/// A decrypted client secret and the one origin it may be sent to.
#[derive(Debug)]
pub struct BoundSecret {
    pub secret: SecretString,
    /// `None`: written without a token endpoint, so it may go nowhere.
    pub origin: Option<String>,
}

/// Who is calling, as established from a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    Operator { token_id: u64 },
    Domain { token_id: u64, domain_id: u64 },
}

impl Caller {
    pub fn token_id(&self) -> u64 {
        match self {
            Caller::Operator { token_id } | Caller::Domain { token_id, .. } => *token_id,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    pub id: u64,
    /// `None` for an operator token.
    pub domain: Option<String>,
    pub created_at: i64,
}

/// What to create a token for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenTarget {
    Operator,
    Domain(String),
}

/// Why a caller cannot act on an enterprise domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DomainAccess {
    /// No domain named, or the named one does not exist.
    NotFound,
    /// A domain token naming another domain.
    Forbidden,
}

/// Check and normalise an enterprise domain name (a DNS host name, lower-cased,
/// at most one trailing dot dropped; the last label starts with a letter). The
/// OpenAPI document states the same rule as a pattern (`DOMAIN_NAME_PATTERN`).
pub fn normalize_domain_name(raw: &str) -> Result<String, String> {
    let name = raw.strip_suffix('.').unwrap_or(raw).to_ascii_lowercase();
    let invalid = || Err("Enter a valid domain name, such as acme.com.".to_owned());
    if name.is_empty() || name.len() > 253 {
        return invalid();
    }
    let labels: Vec<&str> = name.split('.').collect();
    if labels.len() < 2 {
        return invalid();
    }
    for label in &labels {
        let ok = !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            return invalid();
        }
    }
    if !labels
        .last()
        .is_some_and(|tld| tld.bytes().next().is_some_and(|b| b.is_ascii_lowercase()))
    {
        return invalid();
    }
    Ok(name)
}

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

/// Encryptions counted against the active term: `used` in memory, `reserved`
/// persisted ahead of use (a crash over-counts, never under-counts).
#[derive(Debug)]
struct TermUses {
    term: u32,
    used: u64,
    reserved: u64,
    /// Of `used`, how many re-encrypted stored secrets after a rotation. They do
    /// not make the next rotation due: with more stored secrets than
    /// `rotate_after_encryptions`, they would otherwise make every rotation due
    /// again at once (a rotation storm). A term still seals at most
    /// `rotate_after_encryptions` + the number of stored secrets times.
    reencrypted: u64,
}

/// How many encryptions are reserved in the store at a time.
const USE_RESERVATION_BLOCK: u64 = 4096;

pub struct Vault {
    store: Store,
    keyring: RwLock<Arc<Keyring>>,
    kek: Kek,
    keyring_path: PathBuf,
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

    /// The keyring as it is now (a snapshot: rotation swaps in a new one).
    pub fn keyring(&self) -> Arc<Keyring> {
        self.keyring
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Count one encryption under the active term, reserving ahead in the store;
    /// wakes the maintenance task when the term is due for rotation.
    fn count_encryption(&self, term: u32, reencryption: bool) -> Result<(), VaultError> {
        let mut uses = self
            .uses
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if uses.term != term {
            // Rotated since: a new term counts from what the store says.
            let reserved = self.store.term_uses(term)?;
            *uses = TermUses {
                term,
                used: reserved,
                reserved,
                reencrypted: 0,
            };
        }
        // Saturating: the count starts from a value read from disk, and a corrupt
        // one must make the term due (the safe side), never wrap to a small count.
        uses.used = uses.used.saturating_add(1);
        if reencryption {
            uses.reencrypted = uses.reencrypted.saturating_add(1);
        }
        if uses.used > uses.reserved {
            uses.reserved = uses.used.saturating_add(USE_RESERVATION_BLOCK);
            self.store.reserve_term_uses(term, uses.reserved)?;
        }
        if uses.used.saturating_sub(uses.reencrypted) >= self.rotate_after {
            self.wake.notify_one();
        }
        Ok(())
    }

    /// Whether the active term has sealed enough new secrets to be rotated.
    pub(crate) fn rotation_due(&self) -> bool {
        let uses = self
            .uses
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        uses.used.saturating_sub(uses.reencrypted) >= self.rotate_after
    }

    /// Start counting encryptions of a newly active term.
    fn reset_uses(&self, term: u32) -> Result<(), VaultError> {
        let reserved = self.store.term_uses(term)?;
        *self
            .uses
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = TermUses {
            term,
            used: reserved,
            reserved,
            reencrypted: 0,
        };
        Ok(())
    }

    /// Encryptions under the active term so far (upper bound after a restart).
    pub fn active_term_uses(&self) -> u64 {
        self.uses
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .used
    }

    /// Seal a client secret for `domain_id` under the active term: the envelope,
    /// the masked form and the audit fingerprint. Runs inside a sled transaction,
    /// so it must not touch the store: callers count the encryption beforehand
    /// with [`Vault::count_encryption`].
    fn seal_secret(
        &self,
        domain_id: u64,
        secret: &SecretString,
        origin: Option<&str>,
    ) -> Result<(Vec<u8>, String, String), VaultError> {
        let keyring = self.keyring();
        let ctx = SealContext {
            domain_id,
            field: Field::ClientSecret,
            origin,
        };
        Ok((
            keyring.seal(secret.expose().as_bytes(), ctx)?,
            mask_secret(secret.expose()),
            keyring.fingerprint(domain_id, "client_secret", secret.expose().as_bytes()),
        ))
    }

    /// Bytes the store takes on disk (for the metrics).
    pub fn size_on_disk(&self) -> Result<u64, VaultError> {
        Ok(self.store.size_on_disk()?)
    }

    /// Domains, configs and configs per key term, as kept in memory by every
    /// write (for the metrics).
    pub fn counts(&self) -> crate::store::Counts {
        self.store.counts()
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Ready to serve: the store is open, the keys unlocked, and the last group
    /// commit succeeded.
    pub fn ready(&self) -> bool {
        self.store.healthy()
    }

    /// Final flush and fsync; later writes fail.
    pub fn shutdown(&self) {
        self.store.shutdown();
    }

    // ---- authentication ----------------------------------------------------------

    /// The caller a presented bearer token stands for; `None` when it is not valid.
    pub fn authenticate(&self, presented: &str) -> Result<Option<Caller>, VaultError> {
        let Ok((id, hash)) = crypto::token::parse(presented) else {
            return Ok(None);
        };
        let Some(record) = self.store.token(id)? else {
            return Ok(None);
        };
        if !hash.matches(&crypto::TokenHash(record.hash)) {
            return Ok(None);
        }
        Ok(Some(match record.scope {
            TokenScope::Operator => Caller::Operator { token_id: id },
            TokenScope::Domain(domain_id) => Caller::Domain {
                token_id: id,
                domain_id,
            },
        }))
    }

    /// The enterprise domain a request acts on: a domain token's own domain, or the
    /// one an operator names in `X-Enterprise-Domain`.
    pub fn domain_for(
        &self,
        caller: Caller,
        named: Option<&str>,
    ) -> Result<Result<Domain, DomainAccess>, VaultError> {
        let named = named.map(|n| n.trim().trim_end_matches('.').to_ascii_lowercase());
        match caller {
            Caller::Domain { domain_id, .. } => {
                let Some(domain) = self.store.domain(domain_id)? else {
                    return Ok(Err(DomainAccess::NotFound));
                };
                match named {
                    Some(n) if n != domain.name => Ok(Err(DomainAccess::Forbidden)),
                    _ => Ok(Ok(domain.into())),
                }
            }
            Caller::Operator { .. } => match named {
                None => Ok(Err(DomainAccess::NotFound)),
                Some(n) => Ok(self
                    .store
                    .domain_by_name(&n)?
                    .map(Domain::from)
                    .ok_or(DomainAccess::NotFound)),
            },
        }
    }

    // ---- OIDC configs ------------------------------------------------------------

    pub fn get_config(&self, domain: &Domain) -> Result<Option<OidcConfig>, VaultError> {
        Ok(self.store.config(domain.id)?.map(OidcConfig::from))
    }

    /// Create or update a domain's config. On create `client_id` and
    /// `client_secret` are required. A `client_secret` equal to the stored masked
    /// form means "unchanged". Returns the config and whether it was created.
    pub async fn upsert_config(
        &self,
        domain: &Domain,
        patch: ConfigPatch,
        actor: Option<u64>,
    ) -> Result<(OidcConfig, bool), VaultError> {
        let now = now_micros();
        if patch.client_secret.is_some() {
            // Counted before the transaction (sled cannot write outside one from
            // inside one); an unchanged secret over-counts, which is the safe side.
            self.count_encryption(self.keyring().active_term(), false)?;
        }
        // The event of the attempt that commits (the closure may run again on a
        // transaction conflict), for the log line.
        let stored_event: Mutex<Option<AuditRecord>> = Mutex::new(None);
        let build = |current: Option<&ConfigRecord>,
                     id: u64|
         -> Result<(ConfigRecord, AuditRecord), VaultError> {
            let mut fields: Vec<String> = Vec::new();
            let mut fingerprint = None;
            let mut url_changes = None;
            let record = match current {
                None => {
                    let mut missing = FieldErrors::new();
                    if patch.client_id.is_none() {
                        missing.insert("client_id".into(), vec![REQUIRED.into()]);
                    }
                    let Some(secret) = &patch.client_secret else {
                        missing.insert("client_secret".into(), vec![REQUIRED.into()]);
                        return Err(VaultError::Invalid(missing));
                    };
                    let Some(client_id) = &patch.client_id else {
                        return Err(VaultError::Invalid(missing));
                    };
                    let record = ConfigRecord {
                        id,
                        domain_id: domain.id,
                        client_id: client_id.clone(),
                        secret_sealed: Vec::new(),
                        secret_masked: String::new(),
                        discovery_url: patch.discovery_url.apply(None),
                        authorization_endpoint: None,
                        token_endpoint: None,
                        userinfo_endpoint: None,
                        created_at: now,
                        updated_at: now,
                        discovered_endpoints: Vec::new(),
                        secret_origin: None,
                    };
                    let mut record = endpoints::merge_endpoints(&patch, None, record);
                    // Bound to the token endpoint it is written with (see `binding`).
                    record.secret_origin = binding::origin_for(&record);
                    let (sealed, masked, fp) =
                        self.seal_secret(domain.id, secret, record.secret_origin.as_deref())?;
                    (record.secret_sealed, record.secret_masked) = (sealed, masked);
                    fingerprint = Some(fp);
                    fields.extend(["client_id".into(), "client_secret".into()]);
                    fields.extend(changed_urls(None, &record));
                    record
                }
                Some(cur) => {
                    if matches!(patch.endpoint_source, EndpointSource::Discovery(None))
                        && endpoints::needs_fetch_record(&patch, Some(cur))
                    {
                        // Decided on a snapshot read before this write, and the
                        // stored config has changed since: not this document's.
                        return Err(VaultError::Invalid(field_error(
                            "discovery_url",
                            "The configuration changed while it was being saved; send the \
                             request again.",
                        )));
                    }
                    let mut next = cur.clone();
                    if let Some(client_id) = &patch.client_id {
                        next.client_id.clone_from(client_id);
                    }
                    if next.client_id != cur.client_id {
                        fields.push("client_id".into());
                    }
                    next.discovery_url = patch.discovery_url.apply(next.discovery_url);
                    let mut next = endpoints::merge_endpoints(&patch, Some(cur), next);
                    let new_secret = patch
                        .client_secret
                        .as_ref()
                        .filter(|s| s.expose() != cur.secret_masked);
                    match new_secret {
                        Some(secret) => {
                            next.secret_origin = binding::origin_for(&next);
                            let (sealed, masked, fp) =
                                self.seal_secret(domain.id, secret, next.secret_origin.as_deref())?;
                            (next.secret_sealed, next.secret_masked) = (sealed, masked);
                            fingerprint = Some(fp);
                            fields.push("client_secret".into());
                        }
                        None => {
                            binding::check_kept_secret(cur, &next).map_err(VaultError::Invalid)?
                        }
                    }
                    fields.extend(changed_urls(Some(cur), &next));
                    url_changes = url_change_detail(cur, &next);
                    // `updated_at` moves on every update, even within one microsecond.
                    next.updated_at = now.max(cur.updated_at + 1);
                    next
                }
            };
            let action = if current.is_none() {
                "config.create"
            } else {
                "config.update"
            };
            let mut event = audit::event(now, actor, action, Some(domain));
            event.fields = fields;
            event.secret_fingerprint = fingerprint;
            event.detail = match (endpoints::save_detail(&patch, &record), url_changes) {
                (Some(a), Some(b)) => Some(format!("{a}; {b}")),
                (a, b) => a.or(b),
            };
            *stored_event
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(event.clone());
            Ok((record, event))
        };
        let (record, created) = self.store.upsert_config(domain.id, build).await?;
        // `patch` (and the plaintext secret in it) is dropped, and wiped, here.
        drop(patch);
        if let Some(event) = stored_event
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
        {
            audit::log_line(&event);
        }
        Ok((record.into(), created))
    }

    /// Delete a domain's config; false when there was none.
    pub async fn delete_config(
        &self,
        domain: &Domain,
        actor: Option<u64>,
    ) -> Result<bool, VaultError> {
        let event = audit::event(now_micros(), actor, "config.delete", Some(domain));
        let deleted = self.store.delete_config(domain.id, event.clone()).await?;
        if deleted {
            audit::log_line(&event);
        }
        Ok(deleted)
    }

    /// Mark an outbound job (connection test, discovery refresh) of `domain` as
    /// running; `None` while one already runs. The turn ends when dropped.
    pub fn begin_outbound_job(&self, domain: &Domain) -> Option<OutboundJob<'_>> {
        let mut busy = self
            .outbound_jobs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Not `then_some`: it would build (and drop, so release) a job also
        // when the domain is busy.
        if !busy.insert(domain.id) {
            return None;
        }
        Some(OutboundJob {
            jobs: &self.outbound_jobs,
            domain_id: domain.id,
        })
    }

    /// The origin a domain's client secret is bound to, without decrypting it:
    /// `None` when there is no config, `Some(None)` when bound nowhere.
    pub fn secret_origin(&self, domain: &Domain) -> Result<Option<Option<String>>, VaultError> {
        Ok(self.store.config(domain.id)?.map(|r| r.secret_origin))
    }

    /// Decrypt a domain's client secret, for a request to the origin it is
    /// bound to (returned beside it; `None`: bound nowhere, never to be sent).
    /// The caller must not send it anywhere else.
    pub fn reveal_secret(&self, domain: &Domain) -> Result<Option<BoundSecret>, VaultError> {
        let Some(record) = self.store.config(domain.id)? else {
            return Ok(None);
        };
        let plain = self.keyring().open(
            &record.secret_sealed,
            SealContext {
                domain_id: domain.id,
                field: Field::ClientSecret,
                origin: record.secret_origin.as_deref(),
            },
        )?;
        let text = String::from_utf8(plain.to_vec()).map_err(|e| {
            let mut bytes = e.into_bytes();
            zeroize::Zeroize::zeroize(&mut bytes);
            CryptoError::MalformedEnvelope("plaintext is not UTF-8")
        })?;
        Ok(Some(BoundSecret {
            secret: SecretString::new(text),
            origin: record.secret_origin,
        }))
    }

    // ---- domains -----------------------------------------------------------------

    pub async fn add_domain(
        &self,
        raw_name: &str,
        actor: Option<u64>,
    ) -> Result<Domain, VaultError> {
        let name = normalize_domain_name(raw_name)
            .map_err(|m| VaultError::Invalid(field_error("domain", m)))?;
        let now = now_micros();
        let audit =
            |r: &DomainRecord| audit::event(now, actor, "domain.add", Some(&r.clone().into()));
        match self.store.create_domain(&name, now, audit).await {
            Ok(r) => {
                let domain: Domain = r.into();
                audit::log_line(&audit::event(now, actor, "domain.add", Some(&domain)));
                Ok(domain)
            }
            Err(StoreError::DomainExists) => Err(VaultError::Invalid(field_error(
                "domain",
                "An enterprise domain with this name already exists.",
            ))),
            Err(e) => Err(e.into()),
        }
    }

    pub fn list_domains(&self) -> Result<Vec<Domain>, VaultError> {
        Ok(self
            .store
            .list_domains()?
            .into_iter()
            .map(Domain::from)
            .collect())
    }

    pub fn domain_by_name(&self, raw_name: &str) -> Result<Option<Domain>, VaultError> {
        let name = raw_name.trim().trim_end_matches('.').to_ascii_lowercase();
        Ok(self.store.domain_by_name(&name)?.map(Domain::from))
    }

    /// Remove a domain, its config and its tokens; false when there was none.
    pub async fn remove_domain(&self, id: u64, actor: Option<u64>) -> Result<bool, VaultError> {
        let now = now_micros();
        let audit =
            |r: &DomainRecord| audit::event(now, actor, "domain.remove", Some(&r.clone().into()));
        let removed = self.store.remove_domain(id, audit).await?;
        if let Some(r) = &removed {
            audit::log_line(&audit::event(
                now,
                actor,
                "domain.remove",
                Some(&r.clone().into()),
            ));
        }
        Ok(removed.is_some())
    }

    // ---- tokens ------------------------------------------------------------------

    /// Create a token. The token string is returned once and never stored.
    pub async fn create_token(
        &self,
        target: &TokenTarget,
        actor: Option<u64>,
    ) -> Result<(TokenInfo, TokenString), VaultError> {
        let (scope, domain) = match target {
            TokenTarget::Operator => (TokenScope::Operator, None),
            TokenTarget::Domain(name) => {
                let name = normalize_domain_name(name)
                    .map_err(|m| VaultError::Invalid(field_error("domain", m)))?;
                let Some(d) = self.domain_by_name(&name)? else {
                    return Err(VaultError::Invalid(field_error(
                        "domain",
                        "Enterprise domain not found.",
                    )));
                };
                (TokenScope::Domain(d.id), Some(d))
            }
        };
        let now = now_micros();
        let token_event = |r: &TokenRecord| {
            let mut e = audit::event(now, actor, "token.create", domain.as_ref());
            e.detail = Some(format!(
                "token {}{}",
                r.id,
                if domain.is_none() { " (operator)" } else { "" }
            ));
            e
        };
        let result = self
            .store
            .create_token(
                scope,
                now,
                |id| {
                    let generated = crypto::token::generate(id);
                    (generated.hash.0, generated.token)
                },
                token_event,
            )
            .await;
        let (record, token) = match result {
            Ok(v) => v,
            Err(StoreError::DomainNotFound) => {
                return Err(VaultError::Invalid(field_error(
                    "domain",
                    "Enterprise domain not found.",
                )))
            }
            Err(e) => return Err(e.into()),
        };
        audit::log_line(&token_event(&record));
        Ok((
            TokenInfo {
                id: record.id,
                domain: domain.map(|d| d.name),
                created_at: record.created_at,
            },
            token,
        ))
    }

    pub fn list_tokens(&self) -> Result<Vec<TokenInfo>, VaultError> {
        let names: BTreeMap<u64, String> = self
            .store
            .list_domains()?
            .into_iter()
            .map(|d| (d.id, d.name))
            .collect();
        Ok(self
            .store
            .list_tokens()?
            .into_iter()
            .map(|t: TokenRecord| TokenInfo {
                id: t.id,
                domain: match t.scope {
                    TokenScope::Operator => None,
                    TokenScope::Domain(d) => names.get(&d).cloned(),
                },
                created_at: t.created_at,
            })
            .collect())
    }

    /// Revoke a token; false when there was none.
    pub async fn revoke_token(&self, id: u64, actor: Option<u64>) -> Result<bool, VaultError> {
        let now = now_micros();
        // The token's domain, for its event: a token's scope never changes, so it
        // is read once here rather than listing every domain.
        let domain = match self.store.token(id)?.map(|t| t.scope) {
            Some(TokenScope::Domain(d)) => self.store.domain(d)?.map(Domain::from),
            _ => None,
        };
        let stored_event: Mutex<Option<AuditRecord>> = Mutex::new(None);
        let token_event = |r: &TokenRecord| {
            let mut e = audit::event(now, actor, "token.revoke", domain.as_ref());
            e.detail = Some(format!("token {}", r.id));
            *stored_event
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(e.clone());
            e
        };
        let revoked = self.store.revoke_token(id, token_event).await?;
        if revoked {
            if let Some(e) = stored_event
                .into_inner()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
            {
                audit::log_line(&e);
            }
        }
        Ok(revoked)
    }
}

/// The URL fields of a config, in API order.
fn url_fields(r: &ConfigRecord) -> [(&'static str, Option<&str>); 4] {
    [
        ("discovery_url", r.discovery_url.as_deref()),
        (
            "authorization_endpoint",
            r.authorization_endpoint.as_deref(),
        ),
        ("token_endpoint", r.token_endpoint.as_deref()),
        ("userinfo_endpoint", r.userinfo_endpoint.as_deref()),
    ]
}

/// Old and new values of the URL fields an update changes (for its audit event:
/// URLs only, never the secret).
fn url_change_detail(before: &ConfigRecord, after: &ConfigRecord) -> Option<String> {
    let changes: Vec<String> = url_fields(before)
        .into_iter()
        .zip(url_fields(after))
        .filter(|((_, old), (_, new))| old != new)
        .map(|((name, old), (_, new))| {
            format!(
                "{name}: {} -> {}",
                old.unwrap_or("none"),
                new.unwrap_or("none")
            )
        })
        .collect();
    (!changes.is_empty()).then(|| changes.join("; "))
}

/// Names of the URL fields that differ between `before` and `after`.
fn changed_urls(before: Option<&ConfigRecord>, after: &ConfigRecord) -> Vec<String> {
    let old = before.map(url_fields);
    url_fields(after)
        .into_iter()
        .enumerate()
        .filter(|(i, (_, v))| old.as_ref().and_then(|o| o.get(*i)).and_then(|(_, ov)| *ov) != *v)
        .map(|(_, (name, _))| name.to_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domain_names_are_normalised_and_checked() {
        assert_eq!(normalize_domain_name("Acme.COM").unwrap(), "acme.com");
        assert_eq!(
            normalize_domain_name("sso.acme.co.uk.").unwrap(),
            "sso.acme.co.uk"
        );
        for bad in [
            "",
            "acme",
            "-acme.com",
            "acme-.com",
            "ac me.com",
            "acme..com",
            "1.2.3.4",
            "acme.com/x",
            "a@b.com",
            "é.com",
            " acme.com",
            "acme.com..",
            "acme.1com",
        ] {
            assert!(normalize_domain_name(bad).is_err(), "{bad:?} accepted");
        }
        assert!(normalize_domain_name(&format!("{}.com", "a".repeat(64))).is_err());
    }
}
