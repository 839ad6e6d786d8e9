//! The store: the records of the vault in the trees of a key-value engine
//! (`engine`: sled, embedded, or etcd, shared by several nodes), and the
//! transactions, audit chain and counters every entity shares. Only
//! `engine::sled` imports sled.
//!
//! Trees ([`Tree`]):
//! - `meta`: id counters, key-term use counts, the audit chain's anchor, and
//!   (shared installations) the keyring;
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
//! Every mutation runs in one engine transaction over the trees it touches,
//! its audit event included, then waits for the group commit (sled; etcd: a
//! committed transaction is durable), so a method that returns `Ok` has made
//! its change durable (flushed and fsynced, or on a quorum).
//!
//! *Shared* mode (an engine other processes write too, [`Engine::shared`]):
//! nothing in memory is trusted across calls. Every audited transaction reads
//! the chain's head from its anchor and writes the new anchor with its event;
//! there are no plain-write fast paths; counts are recomputed by a scan (cached
//! 5 s); a transaction writing a sealed value checks that the keyring it was
//! sealed with is still the stored one ([`Store::set_keyring_guard`]).
//!
//! Mutations hold the *gate* shared while they apply; a backup or the final step
//! of a key rotation holds it exclusively, so they see a state that no write is
//! half-way through.
//!
//! The audit trail is a MAC chain (tamper evidence): each event (version 2,
//! [`AuditEntry`]) carries an HMAC over its content, its id, and the id and MAC
//! of the entry before it. Ids are taken and MACs computed under the write-order
//! lock, which also guards the chain's head (the last entry's id and MAC) kept in
//! memory, so no write reads the trail (in shared mode each transaction reads
//! the head from the anchor instead, see `chain`). The store never holds the key: the vault
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
//! - `mod.rs`: the [`Store`], [`Store::open`], [`Store::with_engine`],
//!   [`StoreError`], the paging of trees and the id counters the entities share;
//! - `gate`: the writer's turn (write-order lock and shared gate), the
//!   transaction helpers, [`Store::exclusive`], the fail-stop checks (`usable`,
//!   `writable`) and the keyring guard's check;
//! - `domains`, `configs`, `tokens`, `apps`: one entity each (configs also
//!   re-seal);
//! - `terms`: the persisted use counts of key terms;
//! - `sso`: the sign-in broker's short-lived records (take-once, swept);
//! - `audit`: appending, paging and pruning the audit trail;
//! - `chain`: the MAC chain as it is written (links, slots, the anchor);
//! - `verify`: walking the chain ([`Store::verify_audit_chain`]);
//! - `snapshot`: backups and copies between engines (from the engine's dump);
//! - `keyring`: the keyring kept in `meta` and the keyring guard;
//! - `engine`: the engine boundary and its sled engine (with the group
//!   commit); `counts`, `space` (free-space guard, used by the sled engine),
//!   `records` (on-disk types), `fsutil` (durable file helpers);
//! - `config`: the `[storage]` and `[audit]` sections and their bounds;
//! - `test_util`: helpers the unit tests of every file share.

mod apps;
mod audit;
mod chain;
mod cluster;
mod config;
mod configs;
mod counts;
mod domains;
pub mod engine;
pub mod fsutil;
mod gate;
mod keyring;
mod paging;
mod records;
#[cfg(test)]
mod shared_tests;
mod snapshot;
mod space;
mod sso;
mod terms;
#[cfg(test)]
mod test_util;
mod tokens;
mod verify;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use apps::{AppsReport, NewApp};
pub use chain::AuditMac;
pub use config::{AuditConfig, Backend, EtcdConfig, StorageConfig, MAX_RETENTION_DAYS};
pub use engine::sled::{CommitMetrics, CommitStats, GroupCommit, SledEngine};
pub use engine::{DutyGuard, Engine, EngineError, Tree};
pub use records::{
    AppRecord, AuditRecord, ConfigRecord, DomainRecord, SsoRecord, TokenRecord, TokenScope,
    Versioned,
};
pub use records::{AuditBody, AuditCheckpoint, AuditEntry};
pub use snapshot::SnapshotStats;
pub use sso::{SsoTree, Taken};
pub use verify::AuditChainReport;

use engine::{Tx, TxStop};
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
    Engine(String),
    /// The storage cluster cannot be reached, has no quorum, or did not answer
    /// in time (answered as 503 + Retry-After). A write that failed so may have
    /// committed.
    #[error("the storage cluster is unavailable: {0}")]
    Unavailable(String),
    /// Another node rotated the keyring since this one sealed the value being
    /// written: nothing was written; reload the keyring and retry.
    #[error("the keyring was changed by another node; reload it and retry")]
    KeyringChanged,
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

impl From<EngineError> for StoreError {
    /// A write that failed locally has already stopped the engine (fail-stop).
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Unavailable(why) => StoreError::Unavailable(why),
            EngineError::WriteFailed(_) => StoreError::Failed,
            EngineError::Other(why) => StoreError::Engine(why),
        }
    }
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

impl<E> From<EngineError> for Abort<E> {
    fn from(e: EngineError) -> Self {
        Abort::Store(e.into())
    }
}

/// Why a transaction body of the store stopped: the engine's signal (passed on
/// to it) or the store's or caller's refusal (the transaction aborts with it).
#[derive(Debug)]
enum Stop<E> {
    Tx(TxStop),
    Abort(Abort<E>),
}

impl<E> From<TxStop> for Stop<E> {
    fn from(s: TxStop) -> Self {
        Stop::Tx(s)
    }
}

impl<E> From<StoreError> for Stop<E> {
    fn from(e: StoreError) -> Self {
        Stop::Abort(Abort::Store(e))
    }
}

type TxResult<T, E> = Result<T, Stop<E>>;

fn abort<T, E>(e: StoreError) -> TxResult<T, E> {
    Err(Stop::Abort(Abort::Store(e)))
}

/// The caller's own error, aborting the transaction.
fn caller<E>(e: E) -> Stop<E> {
    Stop::Abort(Abort::Caller(e))
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

/// A big-endian id counter in `meta` (`None` when absent).
fn counter(key: &[u8], value: Option<&[u8]>) -> Result<Option<u64>, StoreError> {
    value
        .map(|v| {
            <[u8; 8]>::try_from(v)
                .map(u64::from_be_bytes)
                .map_err(|_| StoreError::Corrupt {
                    tree: "meta",
                    key: String::from_utf8_lossy(key).into_owned(),
                    reason: "counter is not 8 bytes".into(),
                })
        })
        .transpose()
}

fn next_id<E>(tx: &mut dyn Tx, key: &[u8]) -> TxResult<u64, E> {
    let current = counter(key, tx.get(Tree::Meta, key)?.as_deref())?.unwrap_or(1);
    // A counter read from disk: at its end it is corrupt, and wrapping would
    // hand out ids that are taken.
    let Some(next) = current.checked_add(1) else {
        return abort(StoreError::Corrupt {
            tree: "meta",
            key: String::from_utf8_lossy(key).into_owned(),
            reason: "counter is at its largest value".into(),
        });
    };
    tx.insert(Tree::Meta, key, &next.to_be_bytes())?;
    Ok(current)
}

/// The big-endian id of an 8-byte key.
fn key_id(tree: Tree, key: &[u8]) -> Result<u64, StoreError> {
    <[u8; 8]>::try_from(key)
        .map(u64::from_be_bytes)
        .map_err(|_| StoreError::Corrupt {
            tree: tree.name(),
            key: String::from_utf8_lossy(key).into_owned(),
            reason: "key is not an 8-byte id".into(),
        })
}

/// Options for opening the store.
#[derive(Debug, Clone, Default)]
pub struct StoreOptions {
    pub cache_capacity_bytes: u64,
    /// The authentication cache's budget (`engine::cached`; 0: none). Used by
    /// [`Store::open`] only: an engine opened elsewhere may be shared.
    pub auth_cache_bytes: u64,
    /// Where the group commit reports batch sizes and fsync latency.
    pub commit_metrics: Option<CommitMetrics>,
}

/// How long recomputed counts are served in shared mode.
const COUNTS_TTL: std::time::Duration = std::time::Duration::from_secs(5);
/// How long the number of pending sign-ins is served in shared mode.
const PENDING_TTL: std::time::Duration = std::time::Duration::from_secs(1);

/// A value recomputed at most once per its time to live (shared mode).
type Cached<T> = std::sync::Mutex<Option<(std::time::Instant, T)>>;

pub struct Store {
    engine: Arc<dyn Engine>,
    /// Other processes write the same data ([`Engine::shared`]).
    shared: bool,
    /// The data directory (sled); `None` for a store opened on an engine.
    dir: Option<PathBuf>,
    /// Login transactions stored and not yet taken or swept (not shared).
    sso_pending: std::sync::atomic::AtomicUsize,
    /// Next audit event id: one past the last stored, so ids stay unique in a
    /// restored copy too. In shared mode only a floor (the id comes from `meta`).
    next_audit: std::sync::atomic::AtomicU64,
    /// Held by every audited mutation from taking its event id until it has
    /// applied, so events become visible in id order; guards the chain's head.
    write_order: std::sync::Mutex<ChainHead>,
    /// The audit trail's MAC (set by the vault once the keyring is open) and
    /// the anchor waiting for the next group commit.
    anchor: Arc<Anchor>,
    gate: std::sync::RwLock<()>,
    /// Domains, configs and configs per key term, kept by every write (`counts`).
    counts: counts::Counter,
    /// Shared mode: the counts as last scanned, and the pending sign-ins.
    counts_cache: Cached<Counts>,
    counts_ttl: std::time::Duration,
    pending_cache: Cached<usize>,
    /// Shared mode: the stored keyring every sealed write must still find.
    keyring_guard: std::sync::RwLock<Option<Vec<u8>>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("engine", &self.engine.kind())
            .field("shared", &self.shared)
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Open (or create) the sled store in `dir`. Fails with [`StoreError::InUse`]
    /// when another process holds it.
    pub fn open(dir: &Path, options: &StoreOptions) -> Result<Self, StoreError> {
        let engine = SledEngine::open(
            dir,
            options.cache_capacity_bytes,
            options.commit_metrics.clone(),
            false,
        )?;
        let engine = engine::cached::CachedEngine::wrap(Arc::new(engine), options.auth_cache_bytes);
        let mut store = Self::with_engine(engine, options)?;
        store.dir = Some(dir.to_path_buf());
        Ok(store)
    }

    /// The store on `engine` (the options are the sled engine's: unused here).
    pub fn with_engine(
        engine: Arc<dyn Engine>,
        _options: &StoreOptions,
    ) -> Result<Self, StoreError> {
        let anchor = Arc::new(Anchor::default());
        if let Some(commit) = engine.group_commit() {
            let anchor = anchor.clone();
            commit.set_before_flush(Box::new(move || anchor.pending_op().into_iter().collect()));
        }
        let store = Self {
            shared: engine.shared(),
            engine,
            dir: None,
            sso_pending: std::sync::atomic::AtomicUsize::new(0),
            next_audit: std::sync::atomic::AtomicU64::new(1),
            write_order: std::sync::Mutex::new(ChainHead { link: chain::START }),
            anchor,
            gate: std::sync::RwLock::new(()),
            counts: counts::Counter::default(),
            counts_cache: std::sync::Mutex::new(None),
            counts_ttl: COUNTS_TTL,
            pending_cache: std::sync::Mutex::new(None),
            keyring_guard: std::sync::RwLock::new(None),
        };
        store.load_state()?;
        Ok(store)
    }

    /// Read what the store keeps in memory from the engine: the chain's head,
    /// the next event id, the counts and the pending sign-ins (at open, and
    /// after a copy into this store).
    fn load_state(&self) -> Result<(), StoreError> {
        let mut order = self
            .write_order
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let head = self.chain_head()?;
        order.link = head;
        self.next_audit.store(
            head.id.saturating_add(1),
            std::sync::atomic::Ordering::Relaxed,
        );
        self.counts.set(self.scan_counts()?);
        let pending =
            usize::try_from(self.engine.len(Tree::SsoTransactions)?).unwrap_or(usize::MAX);
        self.sso_pending
            .store(pending, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// One record by key, decoded; refused once the store has stopped.
    fn read<T: Versioned>(&self, tree: Tree, key: &[u8]) -> Result<Option<T>, StoreError> {
        self.usable()?;
        self.engine
            .get(tree, key)?
            .map(|v| decode(tree.name(), key, &v))
            .transpose()
    }

    /// The engine under this store.
    pub fn engine(&self) -> &Arc<dyn Engine> {
        &self.engine
    }

    /// The data directory of a store opened with [`Store::open`].
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// False once a write has failed (the store may have lost durability).
    pub fn healthy(&self) -> bool {
        self.engine.check_usable().is_ok()
    }

    /// Refuse writes (`DiskFull`) while the file system has less than `bytes` free.
    pub fn set_disk_reserve(&self, bytes: u64) {
        self.engine.set_disk_reserve(bytes);
    }

    /// The group commit's counters (sled).
    pub fn commit_stats(&self) -> Option<&CommitStats> {
        self.engine.group_commit().map(|c| &*c.stats)
    }

    /// Wait for the group commit: everything applied so far becomes durable.
    pub async fn durable(&self) -> Result<(), StoreError> {
        match self.engine.group_commit() {
            Some(commit) => commit.wait().await,
            None => Ok(()),
        }
    }

    /// Final sync and stop of the flusher. Further writes fail with `Closed`.
    pub fn shutdown(&self) {
        self.engine.shutdown();
    }

    /// The authentication cache's figures (`None`: no cache).
    pub fn auth_cache(&self) -> Option<engine::cached::CacheFigures> {
        self.engine.cache_figures()
    }

    /// Bytes on disk (for monitoring and benchmarks; 0 when the engine keeps
    /// no local files).
    pub fn size_on_disk(&self) -> Result<u64, StoreError> {
        Ok(self.engine.size_on_disk().unwrap_or(0))
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
            .engine
            .write(&[op(
                Tree::Meta,
                META_NEXT_DOMAIN,
                Some(&u64::MAX.to_be_bytes()),
            )])
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
                auth_cache_bytes: 1 << 20,
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
