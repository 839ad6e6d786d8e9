//! The embedded store: sled trees and the group commit. The only module that
//! imports sled.
//!
//! Trees:
//! - `meta`: id counters;
//! - `domains`: id → [`DomainRecord`]; `domain_names`: name → id;
//! - `configs`: domain id → [`ConfigRecord`];
//! - `tokens`: id → [`TokenRecord`];
//! - `apps`: id → [`AppRecord`] (the sign-in broker's applications);
//!   `app_client_ids`: client id → id;
//! - `audit`: monotonic id → [`AuditRecord`];
//! - `sso_transactions`, `sso_codes`: SHA-256 of a sign-in's `state` / one-time
//!   code → [`SsoRecord`] (sealed by the vault); `sso_spent`: SHA-256 of a
//!   redeemed code → its expiry (a replay is told apart from an unknown code).
//!
//! Every mutation runs in one sled transaction over the trees it touches, its
//! audit event included, then waits for the group commit, so a method that
//! returns `Ok` has made its change durable (flushed and fsynced).
//!
//! Mutations hold the *gate* shared while they apply; a backup or the final step
//! of a key rotation holds it exclusively, so they see a state that no write is
//! half-way through.
//!
//! The audit trail is a MAC chain (tamper evidence): each event (version 2,
//! [`AuditEntry`]) carries an HMAC over its content, its id, and the id and MAC
//! of the entry before it. Ids are taken and MACs computed under the write-order
//! lock, which also guards the chain's head (the last entry's id and MAC) kept in
//! memory, so no write reads the trail. The store never holds the key: the vault
//! hands it an [`AuditMac`] ([`Store::set_audit_mac`]); without one (benchmarks,
//! unit tests) events are written unauthenticated, as before the chain (version
//! 1). The head is also written to `meta` with a MAC of its own (the *anchor*),
//! so removing events from the end of the trail is detected too; the group
//! commit writes it once per batch, before its flush, so every acknowledged
//! event is covered (and the anchor is never ahead of the events on disk).
//! Pruning leaves a MAC'd checkpoint in place of the last event it removes, and
//! the chain goes on from it. [`Store::verify_audit_chain`] walks it all.
//!
//! Files (each `impl Store` block lives in the file of what it stores):
//! - `mod.rs`: the [`Store`] and its trees, [`Store::open`], [`StoreError`],
//!   the transaction helpers and id counters the entities share;
//! - `gate`: the writer's turn (write-order lock and shared gate),
//!   [`Store::exclusive`], the fail-stop checks (`usable`, `writable`);
//! - `domains`, `configs`, `tokens`, `apps`: one entity each (configs also
//!   re-seal);
//! - `terms`: the persisted use counts of key terms;
//! - `sso`: the sign-in broker's short-lived records (take-once, swept);
//! - `audit`: appending, paging and pruning the audit trail;
//! - `chain`: the MAC chain as it is written (links, slots, the anchor);
//! - `verify`: walking the chain ([`Store::verify_audit_chain`]);
//! - `snapshot`: the point-in-time copy a backup reads;
//! - `commit` (group commit), `counts`, `space` (free-space guard), `records`
//!   (on-disk types), `fsutil` (durable file helpers);
//! - `config`: the `[storage]` and `[audit]` sections and their bounds;
//! - `test_util`: helpers the unit tests of every file share.

mod apps;
mod audit;
mod chain;
mod commit;
mod config;
mod configs;
mod counts;
mod domains;
pub mod engine;
pub mod fsutil;
mod gate;
mod records;
mod snapshot;
mod space;
mod sso;
mod terms;
#[cfg(test)]
mod test_util;
mod tokens;
mod verify;

use std::path::{Path, PathBuf};

use sled::transaction::{ConflictableTransactionError, TransactionalTree};

pub use apps::{AppsReport, NewApp};
pub use chain::AuditMac;
pub use commit::{CommitMetrics, CommitStats};
pub use config::{AuditConfig, StorageConfig, MAX_RETENTION_DAYS};
pub use records::{
    AppRecord, AuditRecord, ConfigRecord, DomainRecord, SsoRecord, TokenRecord, TokenScope,
    Versioned,
};
pub use records::{AuditBody, AuditCheckpoint, AuditEntry};
pub use snapshot::SnapshotStats;
pub use sso::{SsoTree, Taken};
pub use verify::AuditChainReport;

pub use commit::GroupCommit;
use records::{decode, encode};

use chain::{Anchor, ChainHead};
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
    #[error("a record could not be encoded: {0}")]
    Encode(String),
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
    /// A new application's random client id is already taken (128 random bits:
    /// not expected to happen; nothing was written).
    #[error("an application with this client id already exists")]
    ClientIdTaken,
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

/// A store-level result inside a transaction body (an encoding failure aborts it).
fn tx<T, E>(r: Result<T, StoreError>) -> TxResult<T, E> {
    r.map_err(|e| ConflictableTransactionError::Abort(Abort::Store(e)))
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
const META_NEXT_APP: &[u8] = b"next_id/app";

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
    apps: sled::Tree,
    app_client_ids: sled::Tree,
    audit: sled::Tree,
    sso_transactions: sled::Tree,
    sso_codes: sled::Tree,
    sso_spent: sled::Tree,
    /// Login transactions stored and not yet taken or swept.
    sso_pending: std::sync::atomic::AtomicUsize,
    /// Next audit event id: one past the last stored, so ids stay unique in a
    /// restored copy too (sled's own `generate_id` state is not in a copy).
    next_audit: std::sync::atomic::AtomicU64,
    /// Held by every audited mutation from taking its event id until it has
    /// applied, so events become visible in id order; guards the chain's head.
    write_order: std::sync::Mutex<ChainHead>,
    /// The audit trail's MAC (set by the vault once the keyring is open) and
    /// the anchor waiting for the next group commit.
    anchor: std::sync::Arc<Anchor>,
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
        let audit = db.open_tree("audit")?;
        let meta = db.open_tree("meta")?;
        let anchor = std::sync::Arc::new(Anchor::default());
        let before_flush: commit::BeforeFlush = {
            let (anchor, meta) = (anchor.clone(), meta.clone());
            Box::new(move || anchor.write(&meta))
        };
        let commit = GroupCommit::start_with(
            db.clone(),
            dir.to_path_buf(),
            options.commit_metrics.clone(),
            before_flush,
        )?;
        let head = Self::chain_head(&audit, &meta)?;
        let domains = db.open_tree("domains")?;
        let configs = db.open_tree("configs")?;
        let counts = counts::Counter::new(initial_counts(&domains, &configs)?);
        let sso_transactions = db.open_tree("sso_transactions")?;
        let sso_pending = std::sync::atomic::AtomicUsize::new(sso_transactions.len());
        Ok(Self {
            sso_transactions,
            sso_codes: db.open_tree("sso_codes")?,
            sso_spent: db.open_tree("sso_spent")?,
            sso_pending,
            next_audit: std::sync::atomic::AtomicU64::new(head.id.saturating_add(1)),
            write_order: std::sync::Mutex::new(ChainHead { link: head }),
            anchor,
            meta,
            domains,
            domain_names: db.open_tree("domain_names")?,
            configs,
            tokens: db.open_tree("tokens")?,
            apps: db.open_tree("apps")?,
            app_client_ids: db.open_tree("app_client_ids")?,
            audit: audit.clone(),
            db,
            dir: dir.to_path_buf(),
            commit,
            gate: std::sync::RwLock::new(()),
            space: space::Guard::new(),
            counts,
        })
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

    /// Domains, configs and configs per key term, from memory (see `counts`).
    pub fn counts(&self) -> Counts {
        self.counts.get()
    }

    /// Bytes on disk (for monitoring and benchmarks).
    pub fn size_on_disk(&self) -> Result<u64, StoreError> {
        Ok(self.db.size_on_disk()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_util::*;

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

    /// A record bincode cannot encode, or one too large to be read back, is
    /// refused: before, `encode` wrote the version byte alone (or a record no
    /// read could decode) and answered Ok.
    #[actix_web::test]
    async fn a_record_that_cannot_be_encoded_is_refused_not_half_written() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_chained(dir.path());
        let d = store.create_domain("a.example", 1, |_| ev()).await.unwrap();
        store
            .upsert_config(d.id, |_, id| Ok::<_, ()>(config(id, d.id, "x")))
            .await
            .unwrap();
        let huge = "x".repeat(records::DECODE_LIMIT_FOR_TESTS + 1);
        // An update (plain writes) and a creation (a transaction).
        let r = store
            .upsert_config(d.id, |_, id| Ok::<_, ()>(config(id, d.id, &huge)))
            .await;
        assert!(
            matches!(r, Err(Abort::Store(StoreError::Encode(_)))),
            "{:?}",
            r.map(|_| "stored")
        );
        assert_eq!(store.config(d.id).unwrap().unwrap().client_id, "x");
        let e = store.create_domain(&huge, 1, |_| ev()).await;
        assert!(
            matches!(e, Err(StoreError::Encode(_))),
            "{:?}",
            e.map(|_| "stored")
        );
        let big_event = AuditRecord {
            detail: Some(huge.clone()),
            ..ev()
        };
        let e = store.append_audit(&big_event).await;
        assert!(matches!(e, Err(StoreError::Encode(_))), "{e:?}");
        let r = store
            .upsert_config(d.id, |_, id| {
                Ok::<_, ()>((config_record(id, d.id, "y"), big_event.clone()))
            })
            .await;
        assert!(
            matches!(r, Err(Abort::Store(StoreError::Encode(_)))),
            "{:?}",
            r.map(|_| "stored")
        );
        assert_eq!(store.config(d.id).unwrap().unwrap().client_id, "x");
        // Nothing half-written: every record reads, the chain verifies.
        assert_eq!(store.list_domains().unwrap().len(), 1);
        store.append_audit(&ev()).await.unwrap();
        assert_eq!(store.audit_page(None, 100, |_| true).unwrap().len(), 3);
        assert_eq!(broken(&store), None);
    }
}
