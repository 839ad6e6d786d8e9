//! The embedded store: sled trees and the group commit. The only module that
//! imports sled.
//!
//! Trees:
//! - `meta`: id counters;
//! - `domains`: id → [`DomainRecord`]; `domain_names`: name → id;
//! - `configs`: domain id → [`ConfigRecord`];
//! - `tokens`: id → [`TokenRecord`];
//! - `audit`: monotonic id → [`AuditRecord`].
//!
//! Every mutation runs in one sled transaction over the trees it touches, its
//! audit event included, then waits for the group commit, so a method that
//! returns `Ok` has made its change durable (flushed and fsynced).
//!
//! Mutations hold the *gate* shared while they apply; a backup or the final step
//! of a key rotation holds it exclusively, so they see a state that no write is
//! half-way through.

mod commit;
mod counts;
pub mod fsutil;
mod records;
mod space;

use std::path::{Path, PathBuf};
use std::sync::PoisonError;

use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
use sled::Transactional;

pub use commit::{CommitMetrics, CommitStats};
pub use records::{
    origin_of, AuditRecord, ConfigRecord, DomainRecord, TokenRecord, TokenScope, Versioned,
};

pub use commit::GroupCommit;
use records::{decode, encode};

pub use counts::Counts;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "data directory {} is in use by a running oidcvault server (or another command); \
         stop it first, or make the change through the admin API (/api/v1/admin/) with an operator token",
        path.display()
    )]
    InUse { path: PathBuf },
    #[error("storage engine error: {0}")]
    Sled(#[from] sled::Error),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("record {tree}/{key} is corrupt: {reason}")]
    Corrupt {
        tree: &'static str,
        key: String,
        reason: String,
    },
    #[error("the change could not be made durable: {0}")]
    Durability(String),
    #[error("the store is shut down")]
    Closed,
    #[error(
        "the disk holding the data directory is full: {free} bytes free, below the reserve of \
         {reserve} bytes (limits.disk_reserve_mib); the change was not made"
    )]
    DiskFull { free: u64, reserve: u64 },
    #[error(
        "an earlier write to disk failed, so the store refuses all work until the server is \
         restarted (memory may hold changes that are not on disk)"
    )]
    Failed,
    #[error("an enterprise domain with this name already exists")]
    DomainExists,
    #[error("enterprise domain not found")]
    DomainNotFound,
}

/// Outcome of a transaction body: a store-level refusal or the caller's own error.
#[derive(Debug)]
pub enum Abort<E> {
    Store(StoreError),
    Caller(E),
}

impl<E> From<StoreError> for Abort<E> {
    fn from(e: StoreError) -> Self {
        Abort::Store(e)
    }
}

type TxResult<T, E> = Result<T, ConflictableTransactionError<Abort<E>>>;

fn abort<T, E>(e: StoreError) -> TxResult<T, E> {
    Err(ConflictableTransactionError::Abort(Abort::Store(e)))
}

fn tx_decode<T: Versioned, E>(tree: &'static str, key: &[u8], bytes: &[u8]) -> TxResult<T, E> {
    decode(tree, key, bytes).map_err(|e| ConflictableTransactionError::Abort(Abort::Store(e)))
}

/// Unwrap an `Abort` whose caller error type is uninhabited.
fn store_only<T>(r: Result<T, Abort<std::convert::Infallible>>) -> Result<T, StoreError> {
    r.map_err(|a| match a {
        Abort::Store(e) => e,
        Abort::Caller(never) => match never {},
    })
}

const META_NEXT_DOMAIN: &[u8] = b"next_id/domain";
const META_NEXT_CONFIG: &[u8] = b"next_id/config";
const META_NEXT_TOKEN: &[u8] = b"next_id/token";
const META_TERM_USES: &[u8] = b"term_uses/";

fn next_id<E>(meta: &TransactionalTree, key: &[u8]) -> TxResult<u64, E> {
    let current = match meta.get(key)? {
        Some(v) => match <[u8; 8]>::try_from(v.as_ref()) {
            Ok(b) => u64::from_be_bytes(b),
            Err(_) => {
                return abort(StoreError::Corrupt {
                    tree: "meta",
                    key: String::from_utf8_lossy(key).into_owned(),
                    reason: "counter is not 8 bytes".into(),
                })
            }
        },
        None => 1,
    };
    // A counter read from disk: at its end it is corrupt, and wrapping would
    // hand out ids that are taken.
    let Some(next) = current.checked_add(1) else {
        return abort(StoreError::Corrupt {
            tree: "meta",
            key: String::from_utf8_lossy(key).into_owned(),
            reason: "counter is at its largest value".into(),
        });
    };
    meta.insert(key, &next.to_be_bytes())?;
    Ok(current)
}

/// What a snapshot wrote.
#[derive(Debug, Default, Clone, Copy)]
pub struct SnapshotStats {
    pub records: u64,
    pub bytes: u64,
}

/// Options for opening the store.
#[derive(Debug, Clone, Default)]
pub struct StoreOptions {
    pub cache_capacity_bytes: u64,
    /// Where the group commit reports batch sizes and fsync latency.
    pub commit_metrics: Option<CommitMetrics>,
}

pub struct Store {
    db: sled::Db,
    dir: PathBuf,
    meta: sled::Tree,
    domains: sled::Tree,
    domain_names: sled::Tree,
    configs: sled::Tree,
    tokens: sled::Tree,
    audit: sled::Tree,
    /// Next audit event id: one past the last stored, so ids stay unique in a
    /// restored copy too (sled's own `generate_id` state is not in a copy).
    next_audit: std::sync::atomic::AtomicU64,
    /// Held by every audited mutation from taking its event id until it has
    /// applied, so events become visible in id order.
    write_order: std::sync::Mutex<()>,
    commit: GroupCommit,
    gate: std::sync::RwLock<()>,
    /// Free bytes a write needs on the data directory's file system (`space`).
    space: space::Guard,
    /// Domains, configs and configs per key term, kept by every write (`counts`).
    counts: counts::Counter,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

fn is_lock_error(e: &sled::Error) -> bool {
    matches!(e, sled::Error::Io(io) if io.to_string().contains("could not acquire lock"))
}

/// The counts as a scan finds them: once, when the store opens.
fn initial_counts(domains: &sled::Tree, configs: &sled::Tree) -> Result<Counts, StoreError> {
    let mut c = Counts::default();
    for k in domains.iter().keys() {
        k?;
        c.domains += 1;
    }
    for kv in configs.iter() {
        let (k, v) = kv?;
        c.add(counts::Entry::of_bytes(&k, &v));
    }
    Ok(c)
}

impl Store {
    /// Open (or create) the sled store in `dir`. Fails with [`StoreError::InUse`]
    /// when another process holds it.
    pub fn open(dir: &Path, options: &StoreOptions) -> Result<Self, StoreError> {
        let io = |source| StoreError::Io {
            path: dir.to_path_buf(),
            source,
        };
        fsutil::create_private_dir(dir).map_err(io)?;
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(options.cache_capacity_bytes)
            .open()
            .map_err(|e| {
                if is_lock_error(&e) {
                    StoreError::InUse {
                        path: dir.to_path_buf(),
                    }
                } else {
                    StoreError::Sled(e)
                }
            })?;
        // New files (db, conf) must be reachable after a power cut.
        fsutil::sync_dir(dir).map_err(io)?;
        let commit = GroupCommit::start(
            db.clone(),
            dir.to_path_buf(),
            options.commit_metrics.clone(),
        )?;
        let audit = db.open_tree("audit")?;
        let next_audit = match audit.last()? {
            Some((k, _)) => <[u8; 8]>::try_from(k.as_ref())
                .map(u64::from_be_bytes)
                .unwrap_or(0)
                .saturating_add(1),
            None => 1,
        };
        let domains = db.open_tree("domains")?;
        let configs = db.open_tree("configs")?;
        let counts = counts::Counter::new(initial_counts(&domains, &configs)?);
        Ok(Self {
            meta: db.open_tree("meta")?,
            domains,
            domain_names: db.open_tree("domain_names")?,
            configs,
            tokens: db.open_tree("tokens")?,
            audit: audit.clone(),
            next_audit: std::sync::atomic::AtomicU64::new(next_audit),
            write_order: std::sync::Mutex::new(()),
            db,
            dir: dir.to_path_buf(),
            commit,
            gate: std::sync::RwLock::new(()),
            space: space::Guard::new(),
            counts,
        })
    }

    /// A sled I/O error on a write means its log could not be written (a full
    /// disk, a failing device): sled keeps the change in memory, so the store
    /// stops for good, like a failed group commit (fail-stop), rather than serve
    /// what may not be on disk.
    fn sled_err(&self, e: sled::Error) -> StoreError {
        if matches!(e, sled::Error::Io(_)) {
            tracing::error!(error = %e, "a write to the store failed; the store stops until restarted");
            self.commit.mark_failed();
            StoreError::Failed
        } else {
            StoreError::Sled(e)
        }
    }

    /// Apply an audited mutation in a writer's turn: its event id is taken and
    /// its transaction applied before the next writer's.
    fn apply_audited<T, E>(
        &self,
        tx: impl FnOnce([u8; 8]) -> Result<T, TransactionError<Abort<E>>>,
    ) -> Result<T, Abort<E>> {
        let _turn = self.writer_turn()?;
        let audit_id = self.audit_id()?;
        self.flatten(tx(audit_id))
    }

    fn flatten<T, E>(&self, r: Result<T, TransactionError<Abort<E>>>) -> Result<T, Abort<E>> {
        match r {
            Ok(v) => Ok(v),
            Err(TransactionError::Abort(a)) => Err(a),
            Err(TransactionError::Storage(e)) => Err(Abort::Store(self.sled_err(e))),
        }
    }

    /// One record by key, decoded; refused once the store has stopped.
    fn read<T: Versioned>(
        &self,
        tree: &sled::Tree,
        name: &'static str,
        key: &[u8],
    ) -> Result<Option<T>, StoreError> {
        self.usable()?;
        tree.get(key)?.map(|v| decode(name, key, &v)).transpose()
    }

    /// A writer's turn: refused when the store cannot write; then the write-order
    /// lock (writers of configs and audit events take turns, so events become
    /// visible in id order and no config update is lost) and the shared gate (a
    /// backup sees no write half-way).
    fn writer_turn(
        &self,
    ) -> Result<
        (
            std::sync::MutexGuard<'_, ()>,
            std::sync::RwLockReadGuard<'_, ()>,
        ),
        StoreError,
    > {
        self.writable()?;
        let order = self
            .write_order
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        Ok((order, self.shared()))
    }

    /// Held shared by every mutation while it applies.
    fn shared(&self) -> std::sync::RwLockReadGuard<'_, ()> {
        self.gate
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Run `f` while no mutation is applying (for backups and key-term drops).
    pub fn exclusive<T>(&self, f: impl FnOnce() -> T) -> T {
        let _guard = self
            .gate
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f()
    }

    fn audit_id(&self) -> Result<[u8; 8], StoreError> {
        // Starts one past the last stored id (read from disk): never wraps, as a
        // wrapped id would sort before, and overwrite, older events.
        self.next_audit
            .fetch_update(
                std::sync::atomic::Ordering::Relaxed,
                std::sync::atomic::Ordering::Relaxed,
                |id| id.checked_add(1),
            )
            .map(u64::to_be_bytes)
            .map_err(|_| StoreError::Corrupt {
                tree: "audit",
                key: u64::MAX.to_string(),
                reason: "event ids are exhausted".into(),
            })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// False once a group commit has failed (the store may have lost durability).
    pub fn healthy(&self) -> bool {
        self.commit.healthy()
    }

    /// Refuse writes (`DiskFull`) while the file system has less than `bytes` free.
    pub fn set_disk_reserve(&self, bytes: u64) {
        self.space.set_reserve(bytes);
    }

    /// Every read and write first: after a failed group commit, memory may hold
    /// changes that are not on disk, so nothing is served from it any more.
    fn usable(&self) -> Result<(), StoreError> {
        if self.commit.healthy() {
            Ok(())
        } else {
            Err(StoreError::Failed)
        }
    }

    /// Every write first: usable, and room on disk (checked before sled is touched).
    fn writable(&self) -> Result<(), StoreError> {
        self.usable()?;
        self.space.check(&self.dir)
    }

    pub fn commit_stats(&self) -> &CommitStats {
        &self.commit.stats
    }

    /// Wait for the group commit: everything applied so far becomes durable.
    pub async fn durable(&self) -> Result<(), StoreError> {
        self.commit.wait().await
    }

    /// Final sync and stop of the flusher. Further writes fail with `Closed`.
    pub fn shutdown(&self) {
        self.commit.shutdown();
    }

    // ---- domains -------------------------------------------------------------

    pub async fn create_domain(
        &self,
        name: &str,
        now: i64,
        audit: impl Fn(&DomainRecord) -> AuditRecord,
    ) -> Result<DomainRecord, StoreError> {
        let r = self.apply_audited(|audit_id| {
            let r = (&self.meta, &self.domains, &self.domain_names, &self.audit).transaction(
                |(meta, domains, names, log)| -> TxResult<DomainRecord, std::convert::Infallible> {
                    if names.get(name.as_bytes())?.is_some() {
                        return abort(StoreError::DomainExists);
                    }
                    let id = next_id(meta, META_NEXT_DOMAIN)?;
                    let record = DomainRecord {
                        id,
                        name: name.to_owned(),
                        created_at: now,
                        token_ids: Vec::new(),
                    };
                    domains.insert(&id.to_be_bytes(), encode(&record))?;
                    names.insert(name.as_bytes(), &id.to_be_bytes())?;
                    log.insert(&audit_id, encode(&audit(&record)))?;
                    Ok(record)
                },
            );
            if r.is_ok() {
                self.counts.domain_added();
            }
            r
        });
        let record = store_only(r)?;
        self.durable().await?;
        Ok(record)
    }

    pub fn domain(&self, id: u64) -> Result<Option<DomainRecord>, StoreError> {
        self.read(&self.domains, "domains", &id.to_be_bytes())
    }

    pub fn domain_by_name(&self, name: &str) -> Result<Option<DomainRecord>, StoreError> {
        self.usable()?;
        match self.domain_names.get(name.as_bytes())? {
            Some(id) => match <[u8; 8]>::try_from(id.as_ref()) {
                Ok(b) => self.domain(u64::from_be_bytes(b)),
                Err(_) => Err(StoreError::Corrupt {
                    tree: "domain_names",
                    key: name.to_owned(),
                    reason: "id is not 8 bytes".into(),
                }),
            },
            None => Ok(None),
        }
    }

    pub fn list_domains(&self) -> Result<Vec<DomainRecord>, StoreError> {
        self.usable()?;
        self.domains
            .iter()
            .map(|kv| {
                let (k, v) = kv?;
                decode("domains", &k, &v)
            })
            .collect()
    }

    /// Domains, configs and configs per key term, from memory (see `counts`).
    pub fn counts(&self) -> Counts {
        self.counts.get()
    }

    /// Remove a domain with its config and its tokens, atomically.
    /// Returns false when there was no such domain.
    pub async fn remove_domain(
        &self,
        id: u64,
        audit: impl Fn(&DomainRecord) -> AuditRecord,
    ) -> Result<Option<DomainRecord>, StoreError> {
        let r = self.apply_audited(|audit_id| {
            let trees = (
                &self.domains,
                &self.domain_names,
                &self.configs,
                &self.tokens,
                &self.audit,
            );
            let r = trees.transaction(
                |(domains, names, configs, tokens, log)| -> TxResult<
                    Option<(DomainRecord, Option<counts::Entry>)>,
                    std::convert::Infallible,
                > {
                    let key = id.to_be_bytes();
                    let Some(bytes) = domains.get(key)? else {
                        return Ok(None);
                    };
                    let record: DomainRecord = tx_decode("domains", &key, &bytes)?;
                    for token_id in &record.token_ids {
                        tokens.remove(&token_id.to_be_bytes())?;
                    }
                    let config = configs
                        .remove(&key)?
                        .map(|v| counts::Entry::of_bytes(&key, &v));
                    names.remove(record.name.as_bytes())?;
                    domains.remove(&key)?;
                    log.insert(&audit_id, encode(&audit(&record)))?;
                    Ok(Some((record, config)))
                },
            );
            Ok(r?.map(|(record, config)| {
                self.counts.domain_removed(config);
                record
            }))
        });
        let removed = store_only(r)?;
        if removed.is_some() {
            self.durable().await?;
        }
        Ok(removed)
    }

    // ---- OIDC configs --------------------------------------------------------

    pub fn config(&self, domain_id: u64) -> Result<Option<ConfigRecord>, StoreError> {
        self.read(&self.configs, "configs", &domain_id.to_be_bytes())
    }

    /// Create or update the config of `domain_id` atomically. `build` gets the
    /// current record (if any) and the id to use, and returns the new record with
    /// its audit event, or its own error; it may run more than once when
    /// transactions conflict. Returns the stored record and whether it was created.
    pub async fn upsert_config<E>(
        &self,
        domain_id: u64,
        build: impl Fn(Option<&ConfigRecord>, u64) -> Result<(ConfigRecord, AuditRecord), E>,
    ) -> Result<(ConfigRecord, bool), Abort<E>> {
        if let Some(updated) = self.update_config(domain_id, &build)? {
            self.durable().await?;
            return Ok((updated, false));
        }
        let r = self.apply_audited(|audit_id| {
            let r = (&self.meta, &self.domains, &self.configs, &self.audit).transaction(
                |(meta, domains, configs, log)| -> TxResult<(ConfigRecord, Option<counts::Entry>), E> {
                    let key = domain_id.to_be_bytes();
                    if domains.get(key)?.is_none() {
                        return abort(StoreError::DomainNotFound);
                    }
                    let current: Option<ConfigRecord> = match configs.get(key)? {
                        Some(bytes) => Some(tx_decode("configs", &key, &bytes)?),
                        None => None,
                    };
                    let id = match &current {
                        Some(c) => c.id,
                        None => next_id(meta, META_NEXT_CONFIG)?,
                    };
                    let (record, event) = build(current.as_ref(), id)
                        .map_err(|e| ConflictableTransactionError::Abort(Abort::Caller(e)))?;
                    configs.insert(&key, encode(&record))?;
                    log.insert(&audit_id, encode(&event))?;
                    Ok((record, current.as_ref().map(counts::Entry::of)))
                },
            );
            let (record, old) = r?;
            self.counts.config_written(old, counts::Entry::of(&record));
            Ok((record, old.is_none()))
        });
        let out = r?;
        self.durable().await?;
        Ok(out)
    }

    /// The update half of [`Store::upsert_config`], without a sled transaction:
    /// every sled transaction seals and writes sled's current IO buffer under its
    /// process-wide lock, which made updates several times dearer than plain
    /// writes (BENCHMARKS.md). Instead, every writer of `configs` (this, the
    /// audited transactions, re-encryption) holds the write-order lock, so the
    /// record read here is still current when the new one is written. The audit
    /// event is written first: sled recovers a prefix of its log, so a change
    /// that survives a crash always has its event (an event may survive without
    /// its change only if neither was acknowledged). `None` when there is no
    /// config yet: the caller creates it in a transaction.
    fn update_config<E>(
        &self,
        domain_id: u64,
        build: &impl Fn(Option<&ConfigRecord>, u64) -> Result<(ConfigRecord, AuditRecord), E>,
    ) -> Result<Option<ConfigRecord>, Abort<E>> {
        let _turn = self.writer_turn()?;
        let key = domain_id.to_be_bytes();
        // A config exists only while its domain does (they are removed together).
        let Some(bytes) = self.configs.get(key).map_err(|e| self.sled_err(e))? else {
            return Ok(None);
        };
        let current: ConfigRecord = decode("configs", &key, &bytes)?;
        let (record, event) = build(Some(&current), current.id).map_err(Abort::Caller)?;
        let audit_id = self.audit_id()?;
        self.audit
            .insert(audit_id, encode(&event))
            .map_err(|e| self.sled_err(e))?;
        self.configs
            .insert(key, encode(&record))
            .map_err(|e| self.sled_err(e))?;
        self.counts.config_written(
            Some(counts::Entry::of(&current)),
            counts::Entry::of(&record),
        );
        Ok(Some(record))
    }

    /// Delete the config of `domain_id`; false when there was none.
    pub async fn delete_config(
        &self,
        domain_id: u64,
        audit: AuditRecord,
    ) -> Result<bool, StoreError> {
        let r = self.apply_audited(|audit_id| {
            let r = (&self.configs, &self.audit).transaction(
                |(configs, log)| -> TxResult<Option<counts::Entry>, std::convert::Infallible> {
                    let key = domain_id.to_be_bytes();
                    let removed = configs
                        .remove(&key)?
                        .map(|v| counts::Entry::of_bytes(&key, &v));
                    if removed.is_some() {
                        log.insert(&audit_id, encode(&audit))?;
                    }
                    Ok(removed)
                },
            );
            let removed = r?;
            if let Some(old) = removed {
                self.counts.config_removed(old);
            }
            Ok(removed.is_some())
        });
        let removed = store_only(r)?;
        if removed {
            self.durable().await?;
        }
        Ok(removed)
    }

    // ---- tokens --------------------------------------------------------------

    /// Create a token record. `make` gets the new id and returns the hash to store
    /// with a value handed back to the caller (the token itself).
    pub async fn create_token<R>(
        &self,
        scope: TokenScope,
        now: i64,
        make: impl Fn(u64) -> ([u8; 32], R),
        audit: impl Fn(&TokenRecord) -> AuditRecord,
    ) -> Result<(TokenRecord, R), StoreError> {
        let r = self.apply_audited(|audit_id| {
            (&self.meta, &self.domains, &self.tokens, &self.audit).transaction(
                |(meta, domains, tokens, log)| -> TxResult<(TokenRecord, R), std::convert::Infallible> {
                    let id = next_id(meta, META_NEXT_TOKEN)?;
                    if let TokenScope::Domain(domain_id) = scope {
                        let key = domain_id.to_be_bytes();
                        let Some(bytes) = domains.get(key)? else {
                            return abort(StoreError::DomainNotFound);
                        };
                        let mut domain: DomainRecord = tx_decode("domains", &key, &bytes)?;
                        domain.token_ids.push(id);
                        domains.insert(&key, encode(&domain))?;
                    }
                    let (hash, extra) = make(id);
                    let record = TokenRecord {
                        id,
                        hash,
                        scope,
                        created_at: now,
                    };
                    tokens.insert(&id.to_be_bytes(), encode(&record))?;
                    log.insert(&audit_id, encode(&audit(&record)))?;
                    Ok((record, extra))
                },
            )
        });
        let out = store_only(r)?;
        self.durable().await?;
        Ok(out)
    }

    pub fn token(&self, id: u64) -> Result<Option<TokenRecord>, StoreError> {
        self.read(&self.tokens, "tokens", &id.to_be_bytes())
    }

    pub fn list_tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        self.usable()?;
        self.tokens
            .iter()
            .map(|kv| {
                let (k, v) = kv?;
                decode("tokens", &k, &v)
            })
            .collect()
    }

    /// Revoke a token; false when there was none.
    pub async fn revoke_token(
        &self,
        id: u64,
        audit: impl Fn(&TokenRecord) -> AuditRecord,
    ) -> Result<bool, StoreError> {
        let r = self.apply_audited(|audit_id| {
            (&self.domains, &self.tokens, &self.audit).transaction(
                |(domains, tokens, log)| -> TxResult<bool, std::convert::Infallible> {
                    let key = id.to_be_bytes();
                    let Some(bytes) = tokens.remove(&key)? else {
                        return Ok(false);
                    };
                    let record: TokenRecord = tx_decode("tokens", &key, &bytes)?;
                    if let TokenScope::Domain(domain_id) = record.scope {
                        let dkey = domain_id.to_be_bytes();
                        if let Some(dbytes) = domains.get(dkey)? {
                            let mut domain: DomainRecord = tx_decode("domains", &dkey, &dbytes)?;
                            domain.token_ids.retain(|t| *t != id);
                            domains.insert(&dkey, encode(&domain))?;
                        }
                    }
                    log.insert(&audit_id, encode(&audit(&record)))?;
                    Ok(true)
                },
            )
        });
        let removed = store_only(r)?;
        if removed {
            self.durable().await?;
        }
        Ok(removed)
    }

    // ---- key terms ---------------------------------------------------------------

    /// Re-seal one config if `reseal` says so (it returns the new envelope, or
    /// `None` to leave the record as it is). Atomic per record. Does not wait for
    /// durability: call [`Store::durable`] after a batch.
    pub fn reseal_config<E>(
        &self,
        domain_id: u64,
        reseal: impl Fn(&ConfigRecord) -> Result<Option<Vec<u8>>, E>,
    ) -> Result<bool, Abort<E>> {
        // Config writers take turns (see `update_config`): no update is lost.
        let _turn = self.writer_turn()?;
        let key = domain_id.to_be_bytes();
        let Some(bytes) = self.configs.get(key).map_err(|e| self.sled_err(e))? else {
            return Ok(false);
        };
        let mut record: ConfigRecord = decode("configs", &key, &bytes)?;
        match reseal(&record).map_err(Abort::Caller)? {
            Some(sealed) => {
                let old = counts::Entry::of(&record);
                record.secret_sealed = sealed;
                self.configs
                    .insert(key, encode(&record))
                    .map_err(|e| self.sled_err(e))?;
                self.counts
                    .config_written(Some(old), counts::Entry::of(&record));
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Every config record, decoded (for verify, re-encryption and counts).
    pub fn configs(&self) -> impl Iterator<Item = Result<ConfigRecord, StoreError>> + '_ {
        self.configs.iter().map(|kv| {
            let (k, v) = kv?;
            decode("configs", &k, &v)
        })
    }

    /// The persisted use count of a key term (a conservative upper bound).
    pub fn term_uses(&self, term: u32) -> Result<u64, StoreError> {
        let mut key = META_TERM_USES.to_vec();
        key.extend_from_slice(&term.to_be_bytes());
        Ok(match self.meta.get(key)? {
            Some(v) => <[u8; 8]>::try_from(v.as_ref())
                .map(u64::from_be_bytes)
                .unwrap_or(u64::MAX),
            None => 0,
        })
    }

    /// Record that up to `uses` encryptions of `term` may have happened. Applied
    /// before the encryptions it covers, so any flush that makes one of them
    /// durable makes this durable too (sled recovers a prefix of its log).
    pub fn reserve_term_uses(&self, term: u32, uses: u64) -> Result<(), StoreError> {
        let mut key = META_TERM_USES.to_vec();
        key.extend_from_slice(&term.to_be_bytes());
        self.meta
            .insert(key, &uses.to_be_bytes())
            .map_err(|e| self.sled_err(e))?;
        Ok(())
    }

    // ---- audit -------------------------------------------------------------------

    /// Append an event on its own (for actions that change no record: a key
    /// rotation, a backup). Durable when this returns.
    pub async fn append_audit(&self, event: &AuditRecord) -> Result<(), StoreError> {
        {
            let _turn = self.writer_turn()?;
            let id = self.audit_id()?;
            self.audit
                .insert(id, encode(event))
                .map_err(|e| self.sled_err(e))?;
        }
        self.durable().await
    }

    /// Events with id greater than `after` (oldest first) passing `filter`, at
    /// most `limit`; returns them with their ids.
    pub fn audit_page(
        &self,
        after: Option<u64>,
        limit: usize,
        filter: impl Fn(&AuditRecord) -> bool,
    ) -> Result<Vec<(u64, AuditRecord)>, StoreError> {
        let start = after.map_or(0, |a| a.saturating_add(1));
        let mut out = Vec::new();
        for kv in self.audit.range(start.to_be_bytes()..) {
            let (k, v) = kv?;
            let record: AuditRecord = decode("audit", &k, &v)?;
            if filter(&record) {
                let id = <[u8; 8]>::try_from(k.as_ref())
                    .map(u64::from_be_bytes)
                    .unwrap_or_default();
                out.push((id, record));
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Remove events older than `before` (microseconds). Returns how many.
    pub async fn prune_audit(&self, before: i64) -> Result<usize, StoreError> {
        let mut removed = 0;
        for kv in self.audit.iter() {
            let (k, v) = kv?;
            let record: AuditRecord = decode("audit", &k, &v)?;
            if record.at >= before {
                break;
            }
            self.audit.remove(k).map_err(|e| self.sled_err(e))?;
            removed += 1;
        }
        if removed > 0 {
            self.durable().await?;
        }
        Ok(removed)
    }

    // ---- backup ------------------------------------------------------------------

    /// Write a consistent, point-in-time copy of the store to `dest` (a new sled
    /// directory), with `extra_files` of the data directory copied beside it (the
    /// keyring). Writers are held off only while the state is read into memory.
    pub fn snapshot_to(
        &self,
        dest: &Path,
        extra_files: &[&str],
    ) -> Result<SnapshotStats, StoreError> {
        type Dump = Vec<(Vec<u8>, Vec<(sled::IVec, sled::IVec)>)>;
        let (dump, extras): (Dump, Vec<(String, Vec<u8>)>) = self.exclusive(|| {
            let mut dump = Vec::new();
            for name in self.db.tree_names() {
                let tree = self.db.open_tree(&name)?;
                let kvs = tree.iter().collect::<Result<Vec<_>, _>>()?;
                dump.push((name.to_vec(), kvs));
            }
            let mut extras = Vec::new();
            for f in extra_files {
                let path = self.dir.join(f);
                let bytes =
                    std::fs::read(&path).map_err(|source| StoreError::Io { path, source })?;
                extras.push(((*f).to_owned(), bytes));
            }
            Ok::<_, StoreError>((dump, extras))
        })?;
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| StoreError::Io { path, source }
        };
        fsutil::create_private_dir(dest).map_err(io(dest))?;
        let mut stats = SnapshotStats::default();
        {
            let copy = sled::Config::new()
                .path(dest)
                .cache_capacity(8 << 20)
                .open()?;
            for (name, kvs) in &dump {
                let tree = copy.open_tree(name)?;
                for (k, v) in kvs {
                    tree.insert(k, v.clone())?;
                    stats.records += 1;
                }
            }
            copy.flush()?;
        }
        for (name, bytes) in &extras {
            fsutil::write_atomic(&dest.join(name), bytes).map_err(io(dest))?;
        }
        fsutil::sync_tree(dest).map_err(io(dest))?;
        stats.bytes = fsutil::dir_size(dest).map_err(io(dest))?;
        Ok(stats)
    }

    /// Bytes on disk (for monitoring and benchmarks).
    pub fn size_on_disk(&self) -> Result<u64, StoreError> {
        Ok(self.db.size_on_disk()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &Path) -> Store {
        Store::open(
            dir,
            &StoreOptions {
                cache_capacity_bytes: 8 << 20,
                commit_metrics: None,
            },
        )
        .unwrap()
    }

    fn ev() -> AuditRecord {
        AuditRecord {
            at: 1,
            actor: None,
            action: "test".into(),
            domain_id: None,
            domain: None,
            fields: vec![],
            secret_fingerprint: None,
            detail: None,
        }
    }

    fn config(id: u64, domain_id: u64, client_id: &str) -> (ConfigRecord, AuditRecord) {
        (config_record(id, domain_id, client_id), ev())
    }

    fn config_record(id: u64, domain_id: u64, client_id: &str) -> ConfigRecord {
        ConfigRecord {
            id,
            domain_id,
            client_id: client_id.into(),
            secret_sealed: vec![1, 2, 3],
            secret_masked: "********".into(),
            discovery_url: None,
            authorization_endpoint: None,
            token_endpoint: None,
            userinfo_endpoint: None,
            created_at: 1,
            updated_at: 1,
            discovered_endpoints: Vec::new(),
            secret_origin: None,
        }
    }

    #[actix_web::test]
    async fn counters_at_their_end_are_corrupt_rather_than_wrapping() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        store
            .meta
            .insert(META_NEXT_DOMAIN, &u64::MAX.to_be_bytes())
            .unwrap();
        let e = store
            .create_domain("a.example", 1, |_| ev())
            .await
            .unwrap_err();
        assert!(matches!(e, StoreError::Corrupt { .. }), "{e}");
        store
            .next_audit
            .store(u64::MAX, std::sync::atomic::Ordering::Relaxed);
        let e = store.append_audit(&ev()).await.unwrap_err();
        assert!(matches!(e, StoreError::Corrupt { .. }), "{e}");
    }

    #[actix_web::test]
    async fn removing_a_domain_takes_its_config_and_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let a = store.create_domain("a.example", 1, |_| ev()).await.unwrap();
        let b = store.create_domain("b.example", 1, |_| ev()).await.unwrap();
        assert!(matches!(
            store.create_domain("a.example", 1, |_| ev()).await,
            Err(StoreError::DomainExists)
        ));
        store
            .upsert_config(a.id, |_, id| Ok::<_, ()>(config(id, a.id, "x")))
            .await
            .unwrap();
        store
            .upsert_config(b.id, |_, id| Ok::<_, ()>(config(id, b.id, "y")))
            .await
            .unwrap();
        let (ta, _) = store
            .create_token(TokenScope::Domain(a.id), 1, |_| ([1; 32], ()), |_| ev())
            .await
            .unwrap();
        let (tb, _) = store
            .create_token(TokenScope::Domain(b.id), 1, |_| ([2; 32], ()), |_| ev())
            .await
            .unwrap();
        let (op, _) = store
            .create_token(TokenScope::Operator, 1, |_| ([3; 32], ()), |_| ev())
            .await
            .unwrap();

        assert!(store.remove_domain(a.id, |_| ev()).await.unwrap().is_some());
        assert!(store.domain(a.id).unwrap().is_none());
        assert!(store.domain_by_name("a.example").unwrap().is_none());
        assert!(store.config(a.id).unwrap().is_none());
        assert!(store.token(ta.id).unwrap().is_none());
        // The other domain and the operator token are untouched.
        assert!(store.config(b.id).unwrap().is_some());
        assert!(store.token(tb.id).unwrap().is_some());
        assert!(store.token(op.id).unwrap().is_some());
        assert!(store.remove_domain(a.id, |_| ev()).await.unwrap().is_none());
        // One audit event per change, stored with it.
        assert_eq!(store.audit_page(None, 100, |_| true).unwrap().len(), 8);
    }

    #[actix_web::test]
    async fn upsert_keeps_id_and_reports_creation() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let d = store.create_domain("a.example", 1, |_| ev()).await.unwrap();
        let (first, created) = store
            .upsert_config(d.id, |_, id| Ok::<_, ()>(config(id, d.id, "one")))
            .await
            .unwrap();
        assert!(created);
        let (second, created) = store
            .upsert_config(d.id, |cur, id| {
                assert_eq!(cur.unwrap().client_id, "one");
                Ok::<_, ()>(config(id, d.id, "two"))
            })
            .await
            .unwrap();
        assert!(!created);
        assert_eq!(first.id, second.id);
        // A caller error stores nothing.
        let r = store
            .upsert_config(d.id, |_, _| Err::<(ConfigRecord, AuditRecord), _>("no"))
            .await;
        assert!(matches!(r, Err(Abort::Caller("no"))));
        assert_eq!(store.config(d.id).unwrap().unwrap().client_id, "two");
        // Unknown domain.
        let r = store
            .upsert_config(999, |_, id| Ok::<_, ()>(config(id, 999, "z")))
            .await;
        assert!(matches!(r, Err(Abort::Store(StoreError::DomainNotFound))));
    }

    /// Each update reads and writes in one transaction: from several threads at
    /// once, no update is lost (each one increments a counter kept in `client_id`).
    #[test]
    fn concurrent_updates_are_not_lost() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let rt = || {
            tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap()
        };
        let d = rt()
            .block_on(store.create_domain("a.example", 1, |_| ev()))
            .unwrap();
        rt().block_on(store.upsert_config(d.id, |_, id| Ok::<_, ()>(config(id, d.id, "0"))))
            .unwrap();
        const THREADS: usize = 4;
        const EACH: usize = 50;
        std::thread::scope(|s| {
            for _ in 0..THREADS {
                s.spawn(|| {
                    let rt = rt();
                    for _ in 0..EACH {
                        let (_, created) = rt
                            .block_on(store.upsert_config(d.id, |cur, id| {
                                let n: usize = cur.unwrap().client_id.parse().unwrap();
                                Ok::<_, ()>(config(id, d.id, &(n + 1).to_string()))
                            }))
                            .unwrap();
                        assert!(!created);
                    }
                });
            }
        });
        let stored = store.config(d.id).unwrap().unwrap();
        assert_eq!(stored.client_id, (THREADS * EACH).to_string());
    }

    #[actix_web::test]
    async fn no_update_after_the_domain_or_config_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let d = store.create_domain("a.example", 1, |_| ev()).await.unwrap();
        let (first, _) = store
            .upsert_config(d.id, |_, id| Ok::<_, ()>(config(id, d.id, "one")))
            .await
            .unwrap();
        // Deleted config: the next upsert creates a new one, with a new id.
        assert!(store.delete_config(d.id, ev()).await.unwrap());
        let (again, created) = store
            .upsert_config(d.id, |cur, id| {
                assert!(cur.is_none());
                Ok::<_, ()>(config(id, d.id, "two"))
            })
            .await
            .unwrap();
        assert!(created);
        assert_ne!(again.id, first.id);
        // Removed domain: its config went with it, and an update is refused.
        assert!(store.remove_domain(d.id, |_| ev()).await.unwrap().is_some());
        let r = store
            .upsert_config(d.id, |_, id| Ok::<_, ()>(config(id, d.id, "three")))
            .await;
        assert!(matches!(r, Err(Abort::Store(StoreError::DomainNotFound))));
        assert!(store.config(d.id).unwrap().is_none());
    }

    #[actix_web::test]
    async fn a_second_open_reports_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let _store = open(dir.path());
        // sled's lock is per process via flock on the db file; a second open in
        // the same process sees the same lock.
        let second = Store::open(
            dir.path(),
            &StoreOptions {
                cache_capacity_bytes: 8 << 20,
                commit_metrics: None,
            },
        );
        assert!(
            matches!(second, Err(StoreError::InUse { .. })),
            "{second:?}"
        );
    }

    #[actix_web::test]
    async fn writes_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = open(dir.path());
            store.create_domain("a.example", 7, |_| ev()).await.unwrap();
            store.shutdown();
        }
        let store = open(dir.path());
        let d = store.domain_by_name("a.example").unwrap().unwrap();
        assert_eq!(d.created_at, 7);
    }
}
