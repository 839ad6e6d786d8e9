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

mod commit;
mod config;
mod counts;
pub mod fsutil;
mod records;
mod space;

use std::path::{Path, PathBuf};
use std::sync::PoisonError;

use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
use sled::Transactional;

pub use commit::{CommitMetrics, CommitStats};
pub use config::StorageConfig;
pub use records::{
    origin_of, AuditRecord, ConfigRecord, DomainRecord, TokenRecord, TokenScope, Versioned,
};
pub use records::{AuditBody, AuditCheckpoint, AuditEntry};

pub use commit::GroupCommit;
use records::{decode, decode_audit, encode, StoredAudit, GENESIS};

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
const META_TERM_USES: &[u8] = b"term_uses/";
/// The audit chain's anchor: `id ‖ mac ‖ tag` of its head (see the module doc).
const META_AUDIT_HEAD: &[u8] = b"audit/head";
/// Events removed per pruning step (each in one batch, in one writer's turn).
const PRUNE_STEP: usize = 1024;

/// The MAC of the audit trail, computed by whoever holds its key (the vault):
/// the store only lays out what each MAC covers, so it never holds the key.
pub trait AuditMac: Send + Sync {
    /// HMAC-SHA-256 of the concatenation of `parts`.
    fn mac(&self, parts: &[&[u8]]) -> [u8; 32];
}

/// A position in the audit chain: an entry's id and the MAC the next entry
/// chains to (zeros for the start and for a legacy event).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Link {
    id: u64,
    mac: [u8; 32],
}

const START: Link = Link {
    id: 0,
    mac: GENESIS,
};

/// The anchor the next group commit writes, and the key it is MAC'd with;
/// shared by the store and its flusher.
#[derive(Default)]
struct Anchor {
    pending: std::sync::Mutex<Option<Link>>,
    mac: std::sync::OnceLock<std::sync::Arc<dyn AuditMac>>,
    /// The anchor on disk was removed or altered (found so at open): it is
    /// never written again, so that `verify` keeps reporting it rather than a
    /// new anchor vouching for a trail whose end may have been cut.
    lost: std::sync::atomic::AtomicBool,
}

impl Anchor {
    /// Before a flush: write the newest head, if one moved since the last flush.
    fn write(&self, meta: &sled::Tree) -> Result<(), String> {
        let pending = self
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if self.is_lost() {
            return Ok(());
        }
        if let (Some(head), Some(m)) = (pending, self.mac.get()) {
            meta.insert(META_AUDIT_HEAD, anchor_bytes(head, m.as_ref()))
                .map_err(|e| format!("writing the audit anchor: {e}"))?;
        }
        Ok(())
    }

    fn is_lost(&self) -> bool {
        self.lost.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// What the write-order lock guards besides the order itself: the head of the
/// audit chain, so each event's MAC covers the one before it.
struct ChainHead {
    link: Link,
}

/// The audit event a writer's turn reserved: its id, what it chains to, and
/// (once the transaction body has written it) its own link.
struct AuditSlot<'a> {
    id: u64,
    prev: Link,
    mac: Option<&'a dyn AuditMac>,
    /// Set by [`AuditSlot::seal`]; reset at the start of each transaction
    /// attempt (a body may run more than once, and may write no event).
    sealed: std::cell::Cell<Option<Link>>,
}

impl AuditSlot<'_> {
    fn key(&self) -> [u8; 8] {
        self.id.to_be_bytes()
    }

    /// Start of a transaction attempt.
    fn attempt(&self) {
        self.sealed.set(None);
    }

    /// The stored bytes of `event` at this slot: chained and MAC'd when the store
    /// has an audit MAC, a legacy (version 1) event otherwise.
    fn seal(&self, event: AuditRecord) -> Result<Vec<u8>, StoreError> {
        let (bytes, mac) = match self.mac {
            None => (encode(&event)?, GENESIS),
            Some(m) => {
                let id = self.key();
                records::encode_chained(self.prev.id, &AuditBody::Event(event), |signed| {
                    m.mac(&[records::AUDIT_ENTRY_LABEL, &id, &self.prev.mac, signed])
                })?
            }
        };
        self.sealed.set(Some(Link { id: self.id, mac }));
        Ok(bytes)
    }
}

/// The anchor of `head`: its id and MAC, and a MAC over both.
fn anchor_bytes(head: Link, m: &dyn AuditMac) -> Vec<u8> {
    let id = head.id.to_be_bytes();
    let tag = m.mac(&[records::AUDIT_HEAD_LABEL, &id, &head.mac]);
    let mut out = Vec::with_capacity(72);
    out.extend_from_slice(&id);
    out.extend_from_slice(&head.mac);
    out.extend_from_slice(&tag);
    out
}

/// An anchor as stored: `(head, tag)`; `None` when malformed.
fn parse_anchor(bytes: &[u8]) -> Option<(Link, [u8; 32])> {
    let id = <[u8; 8]>::try_from(bytes.get(..8)?).ok()?;
    let mac = <[u8; 32]>::try_from(bytes.get(8..40)?).ok()?;
    let tag = <[u8; 32]>::try_from(bytes.get(40..)?).ok()?;
    Some((
        Link {
            id: u64::from_be_bytes(id),
            mac,
        },
        tag,
    ))
}

/// The chain link an entry leaves for the next one.
fn link_of(id: u64, stored: &StoredAudit<'_>) -> Link {
    let mac = match stored {
        StoredAudit::Legacy(_) => GENESIS,
        StoredAudit::Chained { entry, .. } => match &entry.body {
            AuditBody::Event(_) => entry.mac,
            AuditBody::Checkpoint(c) => c.link,
        },
    };
    Link { id, mac }
}

fn audit_key_id(key: &[u8]) -> Result<u64, StoreError> {
    <[u8; 8]>::try_from(key)
        .map(u64::from_be_bytes)
        .map_err(|_| StoreError::Corrupt {
            tree: "audit",
            key: String::from_utf8_lossy(key).into_owned(),
            reason: "key is not an 8-byte id".into(),
        })
}

/// What [`Store::verify_audit_chain`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditChainReport {
    /// Events stored (legacy and chained; checkpoints not counted).
    pub events: u64,
    /// Events written before the chain (version 1, no MAC): not authenticated.
    pub legacy: u64,
    /// Events removed by pruning, as the checkpoint records them.
    pub pruned: u64,
    /// The first entry that breaks the chain (`None`: the trail as a whole, or
    /// the anchor) and why; `None` when the chain verifies.
    pub broken: Option<(Option<u64>, String)>,
}

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
        Ok(Self {
            next_audit: std::sync::atomic::AtomicU64::new(head.id.saturating_add(1)),
            write_order: std::sync::Mutex::new(ChainHead { link: head }),
            anchor,
            meta,
            domains,
            domain_names: db.open_tree("domain_names")?,
            configs,
            tokens: db.open_tree("tokens")?,
            audit: audit.clone(),
            db,
            dir: dir.to_path_buf(),
            commit,
            gate: std::sync::RwLock::new(()),
            space: space::Guard::new(),
            counts,
        })
    }

    /// The head of the audit chain on disk, read without the key: the last
    /// entry's link, or the anchor's when the anchor is further on (events after
    /// the last one were removed: new events go on from the anchor, so `verify`
    /// still finds the gap). Event ids continue past both.
    fn chain_head(audit: &sled::Tree, meta: &sled::Tree) -> Result<Link, StoreError> {
        let last = match audit.last()? {
            Some((k, v)) => {
                let id = <[u8; 8]>::try_from(k.as_ref())
                    .map(u64::from_be_bytes)
                    .unwrap_or(0);
                // An undecodable last entry: chain on from zeros (verify names it).
                decode_audit(&k, &v)
                    .map(|stored| link_of(id, &stored))
                    .unwrap_or(Link { id, mac: GENESIS })
            }
            None => START,
        };
        let anchor = meta
            .get(META_AUDIT_HEAD)?
            .and_then(|v| parse_anchor(&v))
            .map(|(link, _)| link);
        Ok(match anchor {
            Some(a) if a.id > last.id => a,
            _ => last,
        })
    }

    /// Authenticate the audit trail from now on with `mac` (the vault calls this
    /// right after opening, before any write). Writes the anchor when there is
    /// none and nothing is chained yet (a new store, or one written before the
    /// chain), or when it lags behind the last entry (a crash between an event
    /// and the group commit that writes its anchor). An anchor that is missing
    /// while events are chained, malformed, or fails its MAC was tampered with:
    /// it is never written again, for `verify` to keep reporting.
    pub fn set_audit_mac(&self, mac: std::sync::Arc<dyn AuditMac>) -> Result<(), StoreError> {
        use subtle::ConstantTimeEq;
        self.usable()?;
        let head = self
            .write_order
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let _gate = self.shared();
        let anchor = self.meta.get(META_AUDIT_HEAD)?;
        let (write, lost) = match anchor.as_deref().map(parse_anchor) {
            None => {
                let chained = self.has_chained_entries()?;
                (!chained, chained)
            }
            Some(None) => (false, true),
            Some(Some((a, tag))) => {
                let id = a.id.to_be_bytes();
                let expected = mac.mac(&[records::AUDIT_HEAD_LABEL, &id, &a.mac]);
                if bool::from(expected.ct_eq(&tag)) {
                    (a.id < head.link.id, false)
                } else {
                    (false, true)
                }
            }
        };
        if lost {
            tracing::error!(
                "the audit trail's anchor is missing or altered; it is not rewritten \
                 (`oidcvault verify` reports it)"
            );
            self.anchor
                .lost
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        if write {
            self.meta
                .insert(META_AUDIT_HEAD, anchor_bytes(head.link, mac.as_ref()))
                .map_err(|e| self.sled_err(e))?;
        }
        // Set once per store: a second call keeps the first key.
        let _ = self.anchor.mac.set(mac);
        Ok(())
    }

    fn has_chained_entries(&self) -> Result<bool, StoreError> {
        for kv in self.audit.iter().rev() {
            let (_, v) = kv?;
            if v.first() != Some(&AuditRecord::VERSION) {
                return Ok(true);
            }
        }
        Ok(false)
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

    /// Apply an audited mutation in a writer's turn: its event id is taken, its
    /// event chained to the head, and its transaction applied before the next
    /// writer's.
    fn apply_audited<T, E>(
        &self,
        tx: impl FnOnce(&AuditSlot<'_>) -> Result<T, TransactionError<Abort<E>>>,
    ) -> Result<T, Abort<E>> {
        let (mut head, _gate) = self.writer_turn()?;
        let slot = self.audit_slot(&head)?;
        let out = self.flatten(tx(&slot))?;
        self.advance(&mut head, &slot);
        Ok(out)
    }

    /// The next event id, chained to the head (in a writer's turn).
    fn audit_slot(&self, head: &ChainHead) -> Result<AuditSlot<'_>, StoreError> {
        Ok(AuditSlot {
            id: self.audit_id()?,
            prev: head.link,
            mac: self.anchor.mac.get().map(|m| m.as_ref()),
            sealed: std::cell::Cell::new(None),
        })
    }

    /// After the slot's event was applied: it is the new head, and the anchor
    /// the next group commit writes (after the event, so the anchor on disk is
    /// never ahead of it; before the flush that acknowledges it).
    fn advance(&self, head: &mut ChainHead, slot: &AuditSlot<'_>) {
        let Some(link) = slot.sealed.get() else {
            return;
        };
        head.link = link;
        if slot.mac.is_some() {
            *self
                .anchor
                .pending
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(link);
        }
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
            std::sync::MutexGuard<'_, ChainHead>,
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

    fn audit_id(&self) -> Result<u64, StoreError> {
        // Starts one past the last stored id (read from disk): never wraps, as a
        // wrapped id would sort before, and overwrite, older events.
        self.next_audit
            .fetch_update(
                std::sync::atomic::Ordering::Relaxed,
                std::sync::atomic::Ordering::Relaxed,
                |id| id.checked_add(1),
            )
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
        let r = self.apply_audited(|slot| {
            let r = (&self.meta, &self.domains, &self.domain_names, &self.audit).transaction(
                |(meta, domains, names, log)| -> TxResult<DomainRecord, std::convert::Infallible> {
                    slot.attempt();
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
                    domains.insert(&id.to_be_bytes(), tx(encode(&record))?)?;
                    names.insert(name.as_bytes(), &id.to_be_bytes())?;
                    log.insert(&slot.key(), tx(slot.seal(audit(&record)))?)?;
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
        let r = self.apply_audited(|slot| {
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
                    slot.attempt();
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
                    log.insert(&slot.key(), tx(slot.seal(audit(&record)))?)?;
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
        let r = self.apply_audited(|slot| {
            let r = (&self.meta, &self.domains, &self.configs, &self.audit).transaction(
                |(meta, domains, configs, log)| -> TxResult<(ConfigRecord, Option<counts::Entry>), E> {
                    slot.attempt();
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
                    configs.insert(&key, tx(encode(&record))?)?;
                    log.insert(&slot.key(), tx(slot.seal(event))?)?;
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
        let (mut head, _gate) = self.writer_turn()?;
        let key = domain_id.to_be_bytes();
        // A config exists only while its domain does (they are removed together).
        let Some(bytes) = self.configs.get(key).map_err(|e| self.sled_err(e))? else {
            return Ok(None);
        };
        let current: ConfigRecord = decode("configs", &key, &bytes)?;
        let (record, event) = build(Some(&current), current.id).map_err(Abort::Caller)?;
        let stored = encode(&record)?;
        let slot = self.audit_slot(&head)?;
        let event = slot.seal(event)?;
        self.audit
            .insert(slot.key(), event)
            .map_err(|e| self.sled_err(e))?;
        self.configs
            .insert(key, stored)
            .map_err(|e| self.sled_err(e))?;
        self.counts.config_written(
            Some(counts::Entry::of(&current)),
            counts::Entry::of(&record),
        );
        self.advance(&mut head, &slot);
        Ok(Some(record))
    }

    /// Delete the config of `domain_id`; false when there was none.
    pub async fn delete_config(
        &self,
        domain_id: u64,
        audit: AuditRecord,
    ) -> Result<bool, StoreError> {
        let r = self.apply_audited(|slot| {
            let r = (&self.configs, &self.audit).transaction(
                |(configs, log)| -> TxResult<Option<counts::Entry>, std::convert::Infallible> {
                    slot.attempt();
                    let key = domain_id.to_be_bytes();
                    let removed = configs
                        .remove(&key)?
                        .map(|v| counts::Entry::of_bytes(&key, &v));
                    if removed.is_some() {
                        log.insert(&slot.key(), tx(slot.seal(audit.clone()))?)?;
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
        let r = self.apply_audited(|slot| {
            (&self.meta, &self.domains, &self.tokens, &self.audit).transaction(
                |(meta, domains, tokens, log)| -> TxResult<(TokenRecord, R), std::convert::Infallible> {
                    slot.attempt();
                    let id = next_id(meta, META_NEXT_TOKEN)?;
                    if let TokenScope::Domain(domain_id) = scope {
                        let key = domain_id.to_be_bytes();
                        let Some(bytes) = domains.get(key)? else {
                            return abort(StoreError::DomainNotFound);
                        };
                        let mut domain: DomainRecord = tx_decode("domains", &key, &bytes)?;
                        domain.token_ids.push(id);
                        domains.insert(&key, tx(encode(&domain))?)?;
                    }
                    let (hash, extra) = make(id);
                    let record = TokenRecord {
                        id,
                        hash,
                        scope,
                        created_at: now,
                    };
                    tokens.insert(&id.to_be_bytes(), tx(encode(&record))?)?;
                    log.insert(&slot.key(), tx(slot.seal(audit(&record)))?)?;
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
        let r = self.apply_audited(|slot| {
            (&self.domains, &self.tokens, &self.audit).transaction(
                |(domains, tokens, log)| -> TxResult<bool, std::convert::Infallible> {
                    slot.attempt();
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
                            domains.insert(&dkey, tx(encode(&domain))?)?;
                        }
                    }
                    log.insert(&slot.key(), tx(slot.seal(audit(&record)))?)?;
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
                    .insert(key, encode(&record)?)
                    .map_err(|e| self.sled_err(e))?;
                self.counts
                    .config_written(Some(old), counts::Entry::of(&record));
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Every config record, decoded, with the domain id it is stored under (its
    /// key: the one that counts, whatever the record says), for verify,
    /// re-encryption and counts. Stops with an error once the store has stopped.
    pub fn configs(&self) -> impl Iterator<Item = Result<(u64, ConfigRecord), StoreError>> + '_ {
        self.configs.iter().map(|kv| {
            self.usable()?;
            let (k, v) = kv?;
            let id = <[u8; 8]>::try_from(k.as_ref())
                .map(u64::from_be_bytes)
                .map_err(|_| StoreError::Corrupt {
                    tree: "configs",
                    key: String::from_utf8_lossy(&k).into_owned(),
                    reason: "key is not an 8-byte domain id".into(),
                })?;
            Ok((id, decode("configs", &k, &v)?))
        })
    }

    /// The persisted use count of a key term (a conservative upper bound).
    pub fn term_uses(&self, term: u32) -> Result<u64, StoreError> {
        self.usable()?;
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
        self.usable()?;
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
            let (mut head, _gate) = self.writer_turn()?;
            let slot = self.audit_slot(&head)?;
            let bytes = slot.seal(event.clone())?;
            self.audit
                .insert(slot.key(), bytes)
                .map_err(|e| self.sled_err(e))?;
            self.advance(&mut head, &slot);
        }
        self.durable().await
    }

    /// Events with id greater than `after` (oldest first) passing `filter`, at
    /// most `limit`; returns them with their ids. Checkpoints are not events.
    pub fn audit_page(
        &self,
        after: Option<u64>,
        limit: usize,
        filter: impl Fn(&AuditRecord) -> bool,
    ) -> Result<Vec<(u64, AuditRecord)>, StoreError> {
        self.usable()?;
        let start = after.map_or(0, |a| a.saturating_add(1));
        let mut out = Vec::new();
        for kv in self.audit.range(start.to_be_bytes()..) {
            let (k, v) = kv?;
            let record = match decode_audit(&k, &v)? {
                StoredAudit::Legacy(r) => r,
                StoredAudit::Chained { entry, .. } => match entry.body {
                    AuditBody::Event(r) => r,
                    AuditBody::Checkpoint(_) => continue,
                },
            };
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
    ///
    /// Each step removes up to `PRUNE_STEP` events in one atomic batch in a
    /// writer's turn (so a backup never sees half a step, and the chain's head is
    /// not moved under it), and puts a checkpoint in place of the last event it
    /// removed, MAC'd, carrying that event's MAC: the chain verifies from there on.
    pub async fn prune_audit(&self, before: i64) -> Result<usize, StoreError> {
        let mut removed = 0;
        loop {
            let (n, more) = self.prune_step(before)?;
            removed += n;
            if !more {
                break;
            }
            tokio::task::yield_now().await;
        }
        if removed > 0 {
            self.durable().await?;
        }
        Ok(removed)
    }

    /// One step of [`Store::prune_audit`]: how many it removed, and whether more
    /// may be due.
    fn prune_step(&self, before: i64) -> Result<(usize, bool), StoreError> {
        let (head, _gate) = self.writer_turn()?;
        let mut batch = sled::Batch::default();
        let mut removed = 0usize;
        let mut pruned_before = 0u64;
        let mut last: Option<Link> = None;
        let mut more = false;
        for kv in self.audit.iter() {
            let (k, v) = kv?;
            let id = audit_key_id(&k)?;
            let stored = decode_audit(&k, &v)?;
            let at = match &stored {
                StoredAudit::Legacy(r) => r.at,
                StoredAudit::Chained { entry, .. } => match &entry.body {
                    AuditBody::Event(r) => r.at,
                    AuditBody::Checkpoint(c) => {
                        // The previous checkpoint goes if anything after it does.
                        pruned_before = pruned_before.saturating_add(c.pruned);
                        batch.remove(k);
                        last = Some(link_of(id, &stored));
                        continue;
                    }
                },
            };
            if at >= before {
                break;
            }
            if removed == PRUNE_STEP {
                more = true;
                break;
            }
            batch.remove(k);
            removed += 1;
            last = Some(link_of(id, &stored));
        }
        let Some(last) = last.filter(|_| removed > 0) else {
            return Ok((0, false));
        };
        if let Some(m) = self.anchor.mac.get() {
            let checkpoint = AuditBody::Checkpoint(AuditCheckpoint {
                cutoff: before,
                pruned: pruned_before.saturating_add(removed as u64),
                link: last.mac,
            });
            let id = last.id.to_be_bytes();
            let (bytes, _) = records::encode_chained(0, &checkpoint, |signed| {
                m.mac(&[records::AUDIT_ENTRY_LABEL, &id, &GENESIS, signed])
            })?;
            batch.insert(&id, bytes);
            // The anchor at the head first (the group commit may not have
            // written it yet), so the one on disk never names a pruned event.
            if !self.anchor.is_lost() {
                self.meta
                    .insert(META_AUDIT_HEAD, anchor_bytes(head.link, m.as_ref()))
                    .map_err(|e| self.sled_err(e))?;
            }
        }
        self.audit
            .apply_batch(batch)
            .map_err(|e| self.sled_err(e))?;
        Ok((removed, more))
    }

    /// Walk the audit trail and check its chain under `mac`: every chained
    /// entry's MAC, that it follows the entry it names, that no unauthenticated
    /// event comes after the chain began, and that the anchored head is there.
    /// Events written before the chain (version 1) are counted as legacy.
    pub fn verify_audit_chain(&self, mac: &dyn AuditMac) -> Result<AuditChainReport, StoreError> {
        use subtle::ConstantTimeEq;
        self.usable()?;
        let mut report = AuditChainReport::default();
        // Read before the walk: a write meanwhile only moves the head further on.
        let anchor = self.meta.get(META_AUDIT_HEAD)?;
        let anchor = match anchor.as_deref().map(parse_anchor) {
            None => None,
            Some(None) => {
                report.broken = Some((None, "the anchor of the trail's head is malformed".into()));
                None
            }
            Some(Some((head, tag))) => {
                let id = head.id.to_be_bytes();
                let expected = mac.mac(&[records::AUDIT_HEAD_LABEL, &id, &head.mac]);
                if !bool::from(expected.ct_eq(&tag)) {
                    report.broken = Some((
                        None,
                        "the anchor of the trail's head fails its MAC (altered, or written \
                         under another key)"
                            .into(),
                    ));
                }
                Some(head)
            }
        };
        let mut link = START;
        let mut started = false;
        let mut first = true;
        let mut anchor_found = anchor == Some(START);
        for kv in self.audit.iter() {
            self.usable()?;
            let (k, v) = kv?;
            let stored = audit_key_id(&k).and_then(|id| Ok((id, decode_audit(&k, &v)?)));
            let is_event = !matches!(
                &stored,
                Ok((
                    _,
                    StoredAudit::Chained {
                        entry: AuditEntry {
                            body: AuditBody::Checkpoint(_),
                            ..
                        },
                        ..
                    }
                ))
            );
            if is_event {
                report.events += 1;
            }
            let was_first = std::mem::replace(&mut first, false);
            if report.broken.is_some() {
                continue;
            }
            let (id, stored) = match stored {
                Ok(s) => s,
                Err(e) => {
                    let id = <[u8; 8]>::try_from(k.as_ref()).ok().map(u64::from_be_bytes);
                    report.broken = Some((id, e.to_string()));
                    continue;
                }
            };
            let problem = match &stored {
                StoredAudit::Legacy(_) if started => Some(
                    "an unauthenticated (version 1) event after the chain began: inserted".into(),
                ),
                StoredAudit::Legacy(_) => {
                    report.legacy += 1;
                    None
                }
                StoredAudit::Chained { entry, signed } => {
                    let key = id.to_be_bytes();
                    match &entry.body {
                        AuditBody::Checkpoint(c) => {
                            let expected =
                                mac.mac(&[records::AUDIT_ENTRY_LABEL, &key, &GENESIS, signed]);
                            if !was_first {
                                Some(
                                    "a pruning checkpoint that is not the trail's first entry"
                                        .into(),
                                )
                            } else if !bool::from(expected.ct_eq(&entry.mac)) {
                                Some(
                                    "the pruning checkpoint fails its MAC (altered, or moved)"
                                        .into(),
                                )
                            } else {
                                report.pruned = c.pruned;
                                started = c.link != GENESIS;
                                None
                            }
                        }
                        AuditBody::Event(_) => {
                            let expected =
                                mac.mac(&[records::AUDIT_ENTRY_LABEL, &key, &link.mac, signed]);
                            if entry.prev_id != link.id {
                                Some(format!(
                                    "it chains to event {}, but the entry before it is {}: an \
                                     event was removed, inserted or moved",
                                    entry.prev_id,
                                    match link.id {
                                        0 => "none".to_owned(),
                                        id => format!("event {id}"),
                                    }
                                ))
                            } else if !bool::from(expected.ct_eq(&entry.mac)) {
                                Some(
                                    "its MAC does not match: the event was altered or moved, or \
                                     the one before it was"
                                        .into(),
                                )
                            } else {
                                started = true;
                                None
                            }
                        }
                    }
                }
            };
            if let Some(why) = problem {
                report.broken = Some((Some(id), why));
                continue;
            }
            link = link_of(id, &stored);
            if anchor.is_some_and(|a| a.id == id) {
                anchor_found = anchor == Some(link);
            }
        }
        if report.broken.is_none() {
            match anchor {
                Some(a) if !anchor_found => {
                    report.broken = Some((
                        Some(a.id),
                        format!(
                            "the trail's head, event {}, is missing or altered: the trail was \
                             cut after event {}",
                            a.id, link.id
                        ),
                    ));
                }
                None if started => {
                    report.broken = Some((
                        None,
                        "the anchor of the trail's head is missing (removed from the store)".into(),
                    ));
                }
                _ => {}
            }
        }
        Ok(report)
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

    // ---- the audit chain (issue 11 item 6) ---------------------------------------

    #[derive(Debug)]
    struct TestMac([u8; 32]);

    impl AuditMac for TestMac {
        fn mac(&self, parts: &[&[u8]]) -> [u8; 32] {
            use hmac::{Hmac, Mac};
            let mut m = <Hmac<sha2::Sha256> as Mac>::new_from_slice(&self.0).unwrap();
            for p in parts {
                m.update(p);
            }
            m.finalize().into_bytes().into()
        }
    }

    const KEY: TestMac = TestMac([7; 32]);

    fn open_chained(dir: &Path) -> Store {
        let store = open(dir);
        store
            .set_audit_mac(std::sync::Arc::new(TestMac(KEY.0)))
            .unwrap();
        store
    }

    fn numbered(n: u64) -> AuditRecord {
        AuditRecord {
            at: n as i64,
            detail: Some(format!("event {n}")),
            ..ev()
        }
    }

    /// A trail written by every kind of writer, ids 1..=10.
    async fn trail(store: &Store) {
        let d = store.create_domain("a.example", 1, |_| ev()).await.unwrap(); // 1
        store
            .upsert_config(d.id, |_, id| Ok::<_, ()>(config(id, d.id, "one"))) // 2
            .await
            .unwrap();
        store
            .upsert_config(d.id, |_, id| Ok::<_, ()>(config(id, d.id, "two"))) // 3
            .await
            .unwrap();
        let (t, _) = store
            .create_token(TokenScope::Domain(d.id), 1, |_| ([1; 32], ()), |_| ev()) // 4
            .await
            .unwrap();
        store.revoke_token(t.id, |_| ev()).await.unwrap(); // 5
        assert!(store.delete_config(d.id, ev()).await.unwrap()); // 6
        assert!(!store.delete_config(d.id, ev()).await.unwrap()); // (id 7 taken, no event)
        for n in 8..=10 {
            store.append_audit(&numbered(n)).await.unwrap();
        }
        store.remove_domain(d.id, |_| ev()).await.unwrap(); // 11
    }

    fn ids(store: &Store) -> Vec<u64> {
        store
            .audit
            .iter()
            .keys()
            .map(|k| u64::from_be_bytes(k.unwrap().as_ref().try_into().unwrap()))
            .collect()
    }

    fn broken(store: &Store) -> Option<(Option<u64>, String)> {
        store.verify_audit_chain(&KEY).unwrap().broken
    }

    fn raw(store: &Store, id: u64) -> sled::IVec {
        store.audit.get(id.to_be_bytes()).unwrap().unwrap()
    }

    #[actix_web::test]
    async fn an_intact_chain_verifies_and_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = open_chained(dir.path());
            trail(&store).await;
            assert_eq!(ids(&store), [1, 2, 3, 4, 5, 6, 8, 9, 10, 11]);
            let r = store.verify_audit_chain(&KEY).unwrap();
            assert_eq!((r.events, r.legacy, r.broken), (10, 0, None));
            // Under another key nothing verifies.
            assert!(store
                .verify_audit_chain(&TestMac([8; 32]))
                .unwrap()
                .broken
                .is_some());
            store.shutdown();
        }
        let store = open_chained(dir.path());
        store.append_audit(&numbered(12)).await.unwrap();
        assert_eq!(broken(&store), None);
        assert_eq!(store.audit_page(None, 100, |_| true).unwrap().len(), 11);
    }

    #[actix_web::test]
    async fn an_edited_event_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_chained(dir.path());
        trail(&store).await;
        let mut entry: AuditEntry = decode("audit", b"", &raw(&store, 9)).unwrap();
        let AuditBody::Event(e) = &mut entry.body else {
            panic!("not an event")
        };
        e.detail = Some("nothing happened".into());
        store
            .audit
            .insert(9u64.to_be_bytes(), encode(&entry).unwrap())
            .unwrap();
        let (id, why) = broken(&store).unwrap();
        assert_eq!(id, Some(9), "{why}");
        assert!(why.contains("MAC does not match"), "{why}");
    }

    #[actix_web::test]
    async fn an_event_removed_from_the_middle_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_chained(dir.path());
        trail(&store).await;
        store.audit.remove(4u64.to_be_bytes()).unwrap();
        let (id, why) = broken(&store).unwrap();
        assert_eq!(id, Some(5), "{why}");
        assert!(why.contains("event 4"), "{why}");
    }

    #[actix_web::test]
    async fn swapped_events_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_chained(dir.path());
        trail(&store).await;
        let (a, b) = (raw(&store, 8), raw(&store, 9));
        store.audit.insert(8u64.to_be_bytes(), b).unwrap();
        store.audit.insert(9u64.to_be_bytes(), a).unwrap();
        assert_eq!(broken(&store).unwrap().0, Some(8));
    }

    #[actix_web::test]
    async fn an_event_inserted_in_the_chain_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_chained(dir.path());
        trail(&store).await;
        // In the gap an aborted write left (id 7), as an unauthenticated event...
        store
            .audit
            .insert(7u64.to_be_bytes(), encode(&numbered(7)).unwrap())
            .unwrap();
        let (id, why) = broken(&store).unwrap();
        assert_eq!(id, Some(7), "{why}");
        // ...or as a copy of a real one.
        store
            .audit
            .insert(7u64.to_be_bytes(), raw(&store, 6))
            .unwrap();
        assert_eq!(broken(&store).unwrap().0, Some(7));
    }

    /// Cutting the end of the trail is detected against the anchor (the head's
    /// id and MAC in `meta`, MAC'd), also after a restart and further writes.
    #[actix_web::test]
    async fn a_truncated_tail_is_detected_against_the_anchor() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = open_chained(dir.path());
            trail(&store).await;
            store.audit.remove(11u64.to_be_bytes()).unwrap();
            store.audit.remove(10u64.to_be_bytes()).unwrap();
            let (id, why) = broken(&store).unwrap();
            assert_eq!(id, Some(11), "{why}");
            assert!(why.contains("cut after event 9"), "{why}");
            store.shutdown();
        }
        // A restart goes on from the anchor, not from the cut tail.
        let store = open_chained(dir.path());
        store.append_audit(&numbered(12)).await.unwrap();
        assert_eq!(ids(&store).last(), Some(&12));
        assert_eq!(broken(&store).unwrap().0, Some(12));
    }

    /// Nor can the anchor be removed, or rewritten to the cut trail's new end,
    /// to hide the cut: it fails, and stays failing after a restart and new
    /// events (the store does not write an anchor over one found tampered with).
    #[actix_web::test]
    async fn a_removed_or_altered_anchor_is_reported_and_not_rewritten() {
        for altered in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            {
                let store = open_chained(dir.path());
                trail(&store).await;
                let anchor = store.meta.get(META_AUDIT_HEAD).unwrap().unwrap();
                store.audit.remove(11u64.to_be_bytes()).unwrap();
                if altered {
                    // The cut trail's end (event 10), with the old tag.
                    let mut moved = anchor.to_vec();
                    moved[..40].copy_from_slice(&anchor_of_entry(&store, 10));
                    store.meta.insert(META_AUDIT_HEAD, moved).unwrap();
                } else {
                    store.meta.remove(META_AUDIT_HEAD).unwrap();
                }
                let (id, why) = broken(&store).unwrap();
                assert_eq!(id, None, "{why}");
                assert!(why.contains("anchor"), "{why}");
                store.shutdown();
            }
            let store = open_chained(dir.path());
            store.append_audit(&numbered(12)).await.unwrap();
            assert_eq!(store.prune_audit(2).await.unwrap(), 6);
            let (id, why) = broken(&store).unwrap();
            assert_eq!(id, None, "{why}");
            assert!(why.contains("anchor"), "{why}");
        }
    }

    /// `id ‖ mac` of a chained event, as an anchor names it.
    fn anchor_of_entry(store: &Store, id: u64) -> Vec<u8> {
        let entry: AuditEntry = decode("audit", b"", &raw(store, id)).unwrap();
        [&id.to_be_bytes()[..], &entry.mac[..]].concat()
    }

    #[actix_web::test]
    async fn pruning_leaves_a_checkpoint_the_chain_verifies_from() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_chained(dir.path());
        for n in 1..=10 {
            store.append_audit(&numbered(n)).await.unwrap();
        }
        assert_eq!(store.prune_audit(4).await.unwrap(), 3);
        assert_eq!(ids(&store), [3, 4, 5, 6, 7, 8, 9, 10]);
        let r = store.verify_audit_chain(&KEY).unwrap();
        assert_eq!((r.events, r.pruned, r.broken), (7, 3, None));
        // The checkpoint is no event.
        let page = store.audit_page(None, 100, |_| true).unwrap();
        assert_eq!(page.first().map(|(id, _)| *id), Some(4));
        // Pruning again replaces it; everything, then a new event.
        assert_eq!(store.prune_audit(8).await.unwrap(), 4);
        assert_eq!(ids(&store), [7, 8, 9, 10]);
        assert_eq!(store.verify_audit_chain(&KEY).unwrap().pruned, 7);
        assert_eq!(broken(&store), None);
        assert_eq!(store.prune_audit(100).await.unwrap(), 3);
        assert_eq!(ids(&store), [10]);
        assert_eq!(broken(&store), None);
        store.append_audit(&numbered(11)).await.unwrap();
        let r = store.verify_audit_chain(&KEY).unwrap();
        assert_eq!((r.events, r.pruned, r.broken), (1, 10, None));
        // A checkpoint cannot be forged or edited: removing events before the next
        // one breaks the chain at it.
        store.audit.remove(10u64.to_be_bytes()).unwrap();
        assert_eq!(broken(&store).unwrap().0, Some(11));
    }

    #[actix_web::test]
    async fn pruning_in_steps_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_chained(dir.path());
        let n = PRUNE_STEP as u64 * 2 + 5;
        for i in 1..=n {
            store.append_audit(&numbered(i)).await.unwrap();
        }
        assert_eq!(store.prune_audit(n as i64).await.unwrap(), n as usize - 1);
        let r = store.verify_audit_chain(&KEY).unwrap();
        assert_eq!((r.events, r.pruned, r.broken), (1, n - 1, None));
    }

    /// Events written before the chain (version 1) are counted as legacy, and
    /// the chain starts after the last of them, also across pruning.
    #[actix_web::test]
    async fn legacy_events_are_counted_and_the_chain_starts_after_them() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = open(dir.path());
            for n in 1..=4 {
                store.append_audit(&numbered(n)).await.unwrap();
            }
            assert_eq!(raw(&store, 1)[0], 1, "no MAC: a legacy event");
            store.shutdown();
        }
        let store = open_chained(dir.path());
        for n in 5..=6 {
            store.append_audit(&numbered(n)).await.unwrap();
        }
        let r = store.verify_audit_chain(&KEY).unwrap();
        assert_eq!((r.events, r.legacy, r.broken), (6, 4, None));
        assert_eq!(store.prune_audit(3).await.unwrap(), 2);
        let r = store.verify_audit_chain(&KEY).unwrap();
        assert_eq!((r.events, r.legacy, r.pruned, r.broken), (4, 2, 2, None));
        // Legacy events are not authenticated (editing one is not seen) but none
        // may follow the chain's start.
        store
            .audit
            .insert(7u64.to_be_bytes(), encode(&numbered(7)).unwrap())
            .unwrap();
        let (id, why) = broken(&store).unwrap();
        assert_eq!(id, Some(7), "{why}");
        assert!(why.contains("unauthenticated"), "{why}");
    }

    // ---- fail-stop gaps (issue 11 item 17) -----------------------------------------

    #[actix_web::test]
    async fn a_stopped_store_serves_no_config_audit_page_pruning_or_term_use() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let d = store.create_domain("a.example", 1, |_| ev()).await.unwrap();
        store
            .upsert_config(d.id, |_, id| Ok::<_, ()>(config(id, d.id, "x")))
            .await
            .unwrap();
        store.reserve_term_uses(1, 10).unwrap();
        store.commit.mark_failed();
        assert!(matches!(
            store.configs().next(),
            Some(Err(StoreError::Failed))
        ));
        assert!(matches!(
            store.audit_page(None, 10, |_| true),
            Err(StoreError::Failed)
        ));
        assert!(matches!(store.term_uses(1), Err(StoreError::Failed)));
        assert!(matches!(
            store.reserve_term_uses(1, 20),
            Err(StoreError::Failed)
        ));
        assert!(matches!(
            store.prune_audit(i64::MAX).await,
            Err(StoreError::Failed)
        ));
        // Nothing was removed or written behind the refusal.
        assert_eq!(store.audit.len(), 2);
        assert_eq!(
            store.meta.get(b"term_uses/\0\0\0\x01").unwrap().as_deref(),
            Some(&10u64.to_be_bytes()[..])
        );
    }

    /// Pruning takes a writer's turn: while a backup holds the gate, it waits.
    #[test]
    fn pruning_waits_for_the_gate() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let rt = || {
            tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap()
        };
        rt().block_on(async {
            for n in 1..=3 {
                store.append_audit(&numbered(n)).await.unwrap();
            }
        });
        let done = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            store.exclusive(|| {
                s.spawn(|| {
                    let n = rt().block_on(store.prune_audit(i64::MAX)).unwrap();
                    done.store(true, std::sync::atomic::Ordering::SeqCst);
                    assert_eq!(n, 3);
                });
                std::thread::sleep(std::time::Duration::from_millis(300));
                // What a backup reads here: the whole trail, nothing pruned.
                assert!(!done.load(std::sync::atomic::Ordering::SeqCst));
                assert_eq!(store.audit.len(), 3);
            });
        });
        assert!(done.load(std::sync::atomic::Ordering::SeqCst));
        assert_eq!(store.audit.len(), 0);
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
