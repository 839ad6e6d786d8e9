//! The storage engine boundary: what the store needs from a key-value engine,
//! and nothing more. Two engines implement it: [`sled`] (embedded, in the
//! data directory; the default) and `etcd` (a cluster shared by several
//! oidcvault nodes). Everything above this module (the store's entities, the
//! audit chain, the vault) is written once against [`Engine`] and [`Tx`].
//!
//! The model: named trees ([`Tree`]) of byte keys and byte values; point
//! reads, ordered range scans in pages, and serializable transactions whose
//! body reads and writes through [`Tx`]. A body may run more than once (an
//! engine retries it when what it read changed before it could commit), so
//! it must not have side effects outside `Tx` other than recording its
//! result. Values are the store's encoded records: sealed where they hold
//! secrets, so no engine ever sees a plaintext secret.
//!
//! What differs between engines is said by the engine, never guessed:
//! [`Engine::shared`] (other processes write the same data: nothing read into
//! memory stays true between calls), [`Engine::group_commit`] (sled: a change
//! is durable only after the group commit's fsync; etcd: a committed
//! transaction is durable on a quorum).

// The etcd engine's configuration is always built (the config file parses the
// same with or without the engine); the engine itself only with the `etcd`
// cargo feature (on by default).
pub mod cached;
pub mod etcd;
pub mod sled;

use std::ops::Bound;

/// The trees (keyspaces) of the store. The discriminant is stable (engines
/// index arrays by it); the name is how the tree is called on disk (sled) and
/// in keys (etcd: `<prefix><name>/<key>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Tree {
    Meta = 0,
    Domains,
    DomainNames,
    Configs,
    Tokens,
    Apps,
    AppClientIds,
    Audit,
    SsoTransactions,
    SsoCodes,
    SsoSpent,
}

impl Tree {
    pub const ALL: [Tree; 11] = [
        Tree::Meta,
        Tree::Domains,
        Tree::DomainNames,
        Tree::Configs,
        Tree::Tokens,
        Tree::Apps,
        Tree::AppClientIds,
        Tree::Audit,
        Tree::SsoTransactions,
        Tree::SsoCodes,
        Tree::SsoSpent,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Tree::Meta => "meta",
            Tree::Domains => "domains",
            Tree::DomainNames => "domain_names",
            Tree::Configs => "configs",
            Tree::Tokens => "tokens",
            Tree::Apps => "apps",
            Tree::AppClientIds => "app_client_ids",
            Tree::Audit => "audit",
            Tree::SsoTransactions => "sso_transactions",
            Tree::SsoCodes => "sso_codes",
            Tree::SsoSpent => "sso_spent",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }

    /// Indexes keyed by a name (a domain name, an application's client id)
    /// rather than an id or a hash. Only point reads and writes are made in
    /// them (never scans), so an engine whose keys others can see (etcd: in
    /// its logs, metrics, `etcdctl get --keys-only`) may store them under a
    /// digest of the key instead; a copy between engines rebuilds them from
    /// the records they index.
    pub fn keys_are_names(self) -> bool {
        matches!(self, Tree::DomainNames | Tree::AppClientIds)
    }

    /// The sign-in broker's short-lived state: left out of backups.
    pub fn is_ephemeral(self) -> bool {
        matches!(
            self,
            Tree::SsoTransactions | Tree::SsoCodes | Tree::SsoSpent
        )
    }
}

/// A failure of the engine itself (not a refusal of the store's).
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The engine cannot be reached, has no quorum, or did not answer in time.
    /// Nothing may be assumed about a write that failed so: it may have
    /// committed (the store makes retries safe). Answered as 503 + Retry-After.
    #[error("the storage cluster is unavailable: {0}")]
    Unavailable(String),
    /// A local write failed (sled: its log could not be written). The store
    /// stops for good (fail-stop): memory may hold changes not on disk.
    #[error("a write to the store failed: {0}")]
    WriteFailed(String),
    /// Any other engine error (a read failed, the engine refused a request).
    #[error("storage engine error: {0}")]
    Other(String),
}

/// Why a transaction body stopped early. Bodies create only
/// [`TxStop::Abort`]; the other kind comes from a [`Tx`] call and must be
/// passed on unchanged (with `?`), so that the engine can retry or fail.
#[derive(Debug)]
pub enum TxStop {
    /// The body gave up (its reason is recorded by the caller). Nothing it
    /// wrote is applied.
    Abort,
    /// The engine's own signal (a conflict to retry, a read to fetch first,
    /// a storage error). Opaque to the body.
    Engine(EngineSignal),
}

/// Opaque to transaction bodies: made and read by engines only.
#[derive(Debug)]
pub enum EngineSignal {
    /// Run the body again (sled: a conflicting concurrent transaction).
    Retry,
    /// The engine failed.
    Failed(EngineError),
    /// sled's own conflict signal, handed back to sled's transaction loop.
    Sled(::sled::transaction::UnabortableTransactionError),
}

impl From<EngineSignal> for TxStop {
    fn from(s: EngineSignal) -> Self {
        TxStop::Engine(s)
    }
}

/// How a transaction ended when it did not commit.
#[derive(Debug)]
pub enum TxFailed {
    /// The body returned [`TxStop::Abort`]: nothing was written.
    Aborted,
    /// The engine failed (for [`EngineError::Unavailable`]: it may or may not
    /// have committed).
    Engine(EngineError),
}

/// Reads and writes of one transaction. Reads see the transaction's own
/// writes. On commit, the transaction applies only if nothing it read has
/// changed since (serializable); otherwise the engine runs the body again.
pub trait Tx {
    fn get(&mut self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, TxStop>;
    fn insert(&mut self, tree: Tree, key: &[u8], value: &[u8]) -> Result<(), TxStop>;
    /// Remove `key`, returning the value it had (the read counts like a `get`).
    fn remove(&mut self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, TxStop>;
}

/// A transaction body: reads and writes through `Tx`, `Ok(())` to commit.
/// Run by the engine in the calling thread (so it need not be `Send` or
/// `Sync`: the store's callers pass closures that record their result in a
/// `RefCell`).
pub type Body<'a> = dyn Fn(&mut dyn Tx) -> Result<(), TxStop> + 'a;

/// One plain write of [`Engine::write`]: `None` removes the key.
#[derive(Debug, Clone)]
pub struct Op {
    pub tree: Tree,
    pub key: Vec<u8>,
    pub value: Option<Vec<u8>>,
}

/// One entry of a tree: its key and value.
pub type Pair = (Vec<u8>, Vec<u8>);

/// Entries (key, value) in key order: a page of [`Engine::scan`].
pub type Entries = Vec<Pair>;

/// What [`Engine::dump`] returns: each tree asked for, with its entries.
pub type Dump = Vec<(Tree, Entries)>;

/// A key range of [`Engine::scan`].
pub type Range = (Bound<Vec<u8>>, Bound<Vec<u8>>);

/// Every key of a tree.
pub fn all() -> Range {
    (Bound::Unbounded, Bound::Unbounded)
}

/// A held cluster duty ([`Engine::try_duty`]): released when dropped (or
/// when its holder dies: its lease expires).
pub trait DutyGuard: Send + Sync + std::fmt::Debug {
    /// False once the duty was lost (its lease expired or was revoked): the
    /// holder stops its work at the next step.
    fn held(&self) -> bool;
}

/// A key-value engine under the store. Every method is blocking: the sled
/// engine does its own I/O in the calling thread; the etcd engine waits for
/// its asynchronous client running on a runtime of its own, so calling from
/// inside an async task is safe (it never blocks that task's runtime on
/// itself).
pub trait Engine: Send + Sync + std::fmt::Debug {
    /// "sled" or "etcd" (for logs, metrics and `/readyz`).
    fn kind(&self) -> &'static str;

    /// Other processes write the same data: no state kept in this process's
    /// memory (counters, the audit chain's head, the keyring) may be trusted
    /// without reading it again in the transaction that depends on it.
    fn shared(&self) -> bool;

    /// The group commit whose wait makes applied changes durable (sled), or
    /// `None` when a committed change is already durable (etcd).
    fn group_commit(&self) -> Option<&crate::store::GroupCommit>;

    /// Refuse to start a write (sled: the store has stopped after a failed
    /// write, or the disk is below its reserve).
    fn check_writable(&self) -> Result<(), crate::store::StoreError>;

    /// Refuse to serve a read (sled: the store has stopped after a failed write).
    fn check_usable(&self) -> Result<(), crate::store::StoreError>;

    /// Refuse writes ([`crate::store::StoreError::DiskFull`]) while the local
    /// file system has less than `bytes` free (sled); an engine that keeps no
    /// local files ignores it.
    fn set_disk_reserve(&self, _bytes: u64) {}

    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError>;

    /// Up to `limit` entries of `tree` within `range`, in key order (or in
    /// reverse order), for paging: the next page starts after the last key.
    fn scan(
        &self,
        tree: Tree,
        range: Range,
        limit: usize,
        reverse: bool,
    ) -> Result<Vec<Pair>, EngineError>;

    /// Number of entries in `tree`.
    fn len(&self, tree: Tree) -> Result<u64, EngineError>;

    /// Run `body` as one serializable transaction over `trees` (the trees it
    /// may touch), retrying it on conflict. `Ok` means committed (not yet
    /// durable on sled: see [`Engine::group_commit`]).
    fn transaction(&self, trees: &[Tree], body: &Body<'_>) -> Result<(), TxFailed>;

    /// Plain writes, applied in order, each only after the one before it as
    /// far as a crash can tell (sled recovers a prefix of its log), without a
    /// transaction's cost. Not atomic on sled: only for a writer that holds
    /// the store's write-order lock on an engine that is not shared. One
    /// transaction on etcd.
    fn write(&self, ops: &[Op]) -> Result<(), EngineError>;

    /// Remove `key` and return its value, atomically: of concurrent callers
    /// (on any node), exactly one gets the value.
    fn take(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError>;

    /// Every entry of `trees` as of one point in time (sled: the caller holds
    /// the store's gate exclusively; etcd: one revision).
    fn dump(&self, trees: &[Tree]) -> Result<Dump, EngineError>;

    /// Take the cluster-wide duty `name` (e.g. "reencrypt", "prune",
    /// "sso-sweep") if no live node holds it: `None` when another does. An
    /// engine that is not shared always grants it.
    fn try_duty(&self, name: &str) -> Result<Option<Box<dyn DutyGuard>>, EngineError>;

    /// Is the engine reachable and able to commit now (etcd: a quorum)?
    /// `Err` names why not (for `/readyz`).
    fn ready(&self) -> Result<(), EngineError>;

    /// Bytes on disk, when the engine keeps local files.
    fn size_on_disk(&self) -> Option<u64>;

    /// The authentication cache's figures, when this engine is one
    /// ([`cached::CachedEngine`]).
    fn cache_figures(&self) -> Option<cached::CacheFigures> {
        None
    }

    /// Final sync and stop (sled: the group commit's last flush).
    fn shutdown(&self);
}
