//! Group commit: one flusher thread makes every waiting write durable with one
//! `flush()` plus `fdatasync`, then wakes all of them.
//!
//! sled's `flush()` writes its IO buffers but on Linux only calls
//! `sync_file_range`, which does not persist file metadata or the device cache:
//! under a simulated power cut it lost acknowledged writes. So after each flush the
//! flusher also `fdatasync`s any blob file it has not synced yet (sled writes
//! values of large pages there), then the `db` log file. A write is applied to
//! sled first and enqueues its waiter after; the flusher dequeues before it
//! flushes, so the flush that answers a waiter always covers that waiter's write.
//!
//! One flush serves a whole batch, so throughput grows with concurrency instead of
//! collapsing as with a `flush_async()` per request.
//!
//! A failed sync is final ("fail-stop"): sled keeps an I/O error of its log
//! writer for good, and after a failed `fdatasync` the kernel may have dropped the
//! dirty pages, so a later sync that "succeeds" proves nothing. From the first
//! failure on, every waiter gets an error, `healthy()` stays false, and the store
//! refuses all work until it is opened again (a restart), which recovers exactly
//! what is on disk.

use std::collections::HashSet;
use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use tokio::sync::oneshot;

use crate::store::engine::Op;
use crate::store::StoreError;

type Waiter = oneshot::Sender<Result<(), String>>;

/// Run by the flusher before each flush: the last writes that every flush
/// must carry (the audit chain's anchor), once per batch instead of once per
/// write. Set by the store ([`GroupCommit::set_before_flush`]); the flusher
/// applies the writes it returns.
pub type BeforeFlush = Box<dyn FnMut() -> Vec<Op> + Send>;

/// Where the flusher reports each batch: its size and the time its flush and
/// fsync took.
#[derive(Clone, Debug)]
pub struct CommitMetrics {
    pub batch_size: prometheus::Histogram,
    pub sync_seconds: prometheus::Histogram,
}

/// Counters for benchmarks and monitoring.
#[derive(Debug, Default)]
pub struct CommitStats {
    pub batches: AtomicU64,
    pub writes: AtomicU64,
}

pub struct GroupCommit {
    tx: Mutex<Option<mpsc::Sender<Waiter>>>,
    before_flush: Arc<Mutex<Option<BeforeFlush>>>,
    handle: Mutex<Option<JoinHandle<()>>>,
    healthy: Arc<AtomicBool>,
    pub stats: Arc<CommitStats>,
}

struct Flusher {
    db: sled::Db,
    /// The engine's trees, indexed by `Tree::index`.
    trees: Vec<sled::Tree>,
    dir: PathBuf,
    db_file: File,
    synced_blobs: HashSet<std::ffi::OsString>,
    before_flush: Arc<Mutex<Option<BeforeFlush>>>,
}

impl Flusher {
    /// Make everything applied so far durable.
    fn sync(&mut self) -> Result<(), String> {
        let ops = match self.before_flush.lock() {
            Ok(mut f) => f.as_mut().map(|f| f()).unwrap_or_default(),
            Err(_) => return Err("the store's before-flush hook panicked".to_owned()),
        };
        for op in ops {
            let tree = self
                .trees
                .get(op.tree.index())
                .ok_or_else(|| format!("no tree {}", op.tree.name()))?;
            let r = match op.value {
                Some(v) => tree.insert(op.key, v).map(|_| ()),
                None => tree.remove(op.key).map(|_| ()),
            };
            r.map_err(|e| format!("writing {} before the flush: {e}", op.tree.name()))?;
        }
        self.db.flush().map_err(|e| format!("sled flush: {e}"))?;
        self.sync_new_blobs()?;
        self.db_file
            .sync_data()
            .map_err(|e| format!("fdatasync of {}: {e}", self.dir.join("db").display()))
    }

    fn sync_new_blobs(&mut self) -> Result<(), String> {
        let blobs = self.dir.join("blobs");
        let entries = match std::fs::read_dir(&blobs) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(format!("reading {}: {e}", blobs.display())),
        };
        let mut present = HashSet::new();
        let mut new_any = false;
        for entry in entries {
            let entry = entry.map_err(|e| format!("reading {}: {e}", blobs.display()))?;
            let name = entry.file_name();
            if !self.synced_blobs.contains(&name) {
                // A blob may be removed by sled between listing and opening.
                if let Ok(f) = File::open(entry.path()) {
                    f.sync_data()
                        .map_err(|e| format!("fdatasync of {}: {e}", entry.path().display()))?;
                    new_any = true;
                }
            }
            present.insert(name);
        }
        if new_any {
            crate::store::fsutil::sync_dir(&blobs).map_err(|e| e.to_string())?;
        }
        self.synced_blobs = present;
        Ok(())
    }
}

impl GroupCommit {
    /// Start the flusher of `db` (whose trees are `trees`, by `Tree::index`).
    pub(super) fn start(
        db: sled::Db,
        trees: Vec<sled::Tree>,
        dir: PathBuf,
        metrics: Option<CommitMetrics>,
    ) -> Result<Self, StoreError> {
        let before_flush: Arc<Mutex<Option<BeforeFlush>>> = Arc::new(Mutex::new(None));
        let db_path = dir.join("db");
        let db_file = File::open(&db_path).map_err(|source| StoreError::Io {
            path: db_path.clone(),
            source,
        })?;
        let mut flusher = Flusher {
            db,
            trees,
            dir,
            db_file,
            synced_blobs: HashSet::new(),
            before_flush: before_flush.clone(),
        };
        let (tx, rx) = mpsc::channel::<Waiter>();
        let healthy = Arc::new(AtomicBool::new(true));
        let stats = Arc::new(CommitStats::default());
        let (h, s) = (healthy.clone(), stats.clone());
        let handle = std::thread::Builder::new()
            .name("oidcvault-commit".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut batch = vec![first];
                    batch.extend(rx.try_iter());
                    let started = std::time::Instant::now();
                    let result = if h.load(Ordering::Relaxed) {
                        flusher.sync()
                    } else {
                        Err("an earlier group commit failed; restart the server".to_owned())
                    };
                    if let Some(m) = &metrics {
                        m.batch_size.observe(batch.len() as f64);
                        m.sync_seconds.observe(started.elapsed().as_secs_f64());
                    }
                    if let Err(e) = &result {
                        tracing::error!(
                            error = %e,
                            "group commit failed: the store refuses all work until the server \
                             is restarted (free disk space first if the disk is full)"
                        );
                        h.store(false, Ordering::Relaxed);
                    }
                    s.batches.fetch_add(1, Ordering::Relaxed);
                    s.writes.fetch_add(batch.len() as u64, Ordering::Relaxed);
                    for waiter in batch {
                        let _ = waiter.send(result.clone());
                    }
                }
                // Channel closed: one last sync of whatever is left.
                if let Err(e) = flusher.sync() {
                    tracing::error!(error = %e, "final flush failed");
                }
            })
            .map_err(|source| StoreError::Io {
                path: PathBuf::from("<commit thread>"),
                source,
            })?;
        Ok(Self {
            tx: Mutex::new(Some(tx)),
            before_flush,
            handle: Mutex::new(Some(handle)),
            healthy,
            stats,
        })
    }

    /// Wait until every write applied before this call is durable.
    pub async fn wait(&self) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        {
            let guard = self.tx.lock().map_err(|_| StoreError::Closed)?;
            let sender = guard.as_ref().ok_or(StoreError::Closed)?;
            sender.send(tx).map_err(|_| StoreError::Closed)?;
        }
        rx.await
            .map_err(|_| StoreError::Closed)?
            .map_err(StoreError::Durability)
    }

    /// Run `f` before every flush from now on, applying the writes it returns
    /// (replaces an earlier one).
    pub fn set_before_flush(&self, f: BeforeFlush) {
        if let Ok(mut slot) = self.before_flush.lock() {
            *slot = Some(f);
        }
    }

    /// Stop the store for good: a write could not reach the disk.
    pub fn mark_failed(&self) {
        self.healthy.store(false, Ordering::Relaxed);
    }

    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Stop accepting waiters, let the flusher drain and do a final sync, join it.
    pub fn shutdown(&self) {
        if let Ok(mut tx) = self.tx.lock() {
            tx.take();
        }
        let handle = self.handle.lock().ok().and_then(|mut h| h.take());
        if let Some(handle) = handle {
            let _ = handle.join();
        }
    }
}

impl Drop for GroupCommit {
    fn drop(&mut self) {
        self.shutdown();
    }
}
