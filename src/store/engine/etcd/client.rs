//! [`EtcdEngine`]: the connection, the blocking bridge to the async client,
//! the key layout, error classification, and the plain (non-transactional)
//! operations. Transactions are in [`super::stm`], duties in [`super::duty`].

use std::collections::HashSet;
use std::future::Future;
use std::ops::Bound;
use std::time::Duration;

use etcd_client::{
    Client, ConnectOptions, DeleteOptions, GetOptions, GetResponse, SortOrder, SortTarget, Txn,
    TxnOp,
};
use sha2::{Digest, Sha256};

use super::config::{EtcdConfig, ReadConsistency};
use crate::store::engine::{
    Body, Dump, DutyGuard, Engine, EngineError, Entries, Op, Range, Tree, TxFailed,
};

/// etcd's default `--max-txn-ops`: the most operations (and, separately, the
/// most compares) one Txn may carry.
pub(super) const MAX_TXN_OPS: usize = 128;

/// Entries per page of a dump.
const DUMP_PAGE: i64 = 512;

/// The store's engine over an etcd cluster (see the module documentation).
pub struct EtcdEngine {
    pub(super) client: Client,
    pub(super) handle: tokio::runtime::Handle,
    /// Kept to be shut down without blocking when the engine is dropped
    /// (possibly on an async runtime's thread, where a blocking shutdown panics).
    runtime: Option<tokio::runtime::Runtime>,
    prefix: Vec<u8>,
    pub(super) timeout: Duration,
    serializable: bool,
    endpoints: Vec<String>,
}

impl std::fmt::Debug for EtcdEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdEngine")
            .field("endpoints", &self.endpoints)
            .field("prefix", &String::from_utf8_lossy(&self.prefix))
            .field("timeout", &self.timeout)
            .field("serializable", &self.serializable)
            .finish_non_exhaustive()
    }
}

impl Drop for EtcdEngine {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl EtcdEngine {
    /// Set up the client for `config` (validated first). Does not wait for
    /// the cluster: [`Engine::ready`] says whether it answers.
    pub fn connect(config: &EtcdConfig) -> Result<EtcdEngine, EngineError> {
        config.validate().map_err(EngineError::Other)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("etcd")
            .enable_all()
            .build()
            .map_err(|e| EngineError::Other(format!("the etcd client's runtime: {e}")))?;
        let timeout = config.timeout();
        let mut options = ConnectOptions::new()
            .with_timeout(timeout)
            .with_connect_timeout(timeout)
            .with_keep_alive(Duration::from_secs(5), timeout)
            .with_keep_alive_while_idle(true)
            .with_require_leader(true);
        if config.uses_tls() {
            options = options.with_tls(tls_options(config)?);
        }
        let endpoints = config.endpoints.clone();
        let eps = endpoints.clone();
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        runtime.spawn(async move {
            let _ = tx.send(Client::connect(eps, Some(options)).await);
        });
        let client = match rx.recv_timeout(timeout) {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return Err(classify("connecting to etcd", e)),
            Err(_) => {
                return Err(EngineError::Unavailable(format!(
                    "connecting to etcd: no answer within {} s",
                    timeout.as_secs()
                )))
            }
        };
        Ok(EtcdEngine {
            client,
            handle: runtime.handle().clone(),
            runtime: Some(runtime),
            prefix: config.prefix.as_bytes().to_vec(),
            timeout,
            serializable: config.read_consistency == ReadConsistency::Serializable,
            endpoints,
        })
    }

    /// Run `fut` on the engine's runtime and wait for it, at most the timeout.
    pub(super) fn run<T, F>(&self, what: &str, fut: F) -> Result<T, EngineError>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, etcd_client::Error>> + Send + 'static,
    {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let timeout = self.timeout;
        let task = self.handle.spawn(async move {
            let _ = tx.send(tokio::time::timeout(timeout, fut).await);
        });
        match rx.recv_timeout(timeout + Duration::from_millis(500)) {
            Ok(Ok(r)) => r.map_err(|e| classify(what, e)),
            Ok(Err(_)) | Err(_) => {
                task.abort();
                Err(EngineError::Unavailable(format!(
                    "{what}: etcd did not answer within {} s",
                    timeout.as_secs()
                )))
            }
        }
    }

    /// `<prefix><tree>/`
    pub(super) fn tree_prefix(&self, tree: Tree) -> Vec<u8> {
        let mut k = Vec::with_capacity(self.prefix.len() + 24);
        k.extend_from_slice(&self.prefix);
        k.extend_from_slice(tree.name().as_bytes());
        k.push(b'/');
        k
    }

    /// The etcd key of `key` in `tree` (a digest for trees keyed by names).
    pub(super) fn key(&self, tree: Tree, key: &[u8]) -> Vec<u8> {
        let mut k = self.tree_prefix(tree);
        if tree.keys_are_names() {
            k.extend_from_slice(hex(&Sha256::digest(key)).as_bytes());
        } else {
            k.extend_from_slice(key);
        }
        k
    }

    /// `<prefix>duty/<name>`: outside every tree.
    pub(super) fn duty_key(&self, name: &str) -> Vec<u8> {
        let mut k = self.prefix.clone();
        k.extend_from_slice(b"duty/");
        k.extend_from_slice(name.as_bytes());
        k
    }

    /// Options of a plain read (serializable when configured so).
    pub(super) fn read_options(&self) -> GetOptions {
        if self.serializable {
            GetOptions::new().with_serializable()
        } else {
            GetOptions::new()
        }
    }

    fn get_raw(
        &self,
        what: &str,
        key: Vec<u8>,
        opts: GetOptions,
    ) -> Result<GetResponse, EngineError> {
        let mut kv = self.client.kv_client();
        self.run(what, async move { kv.get(key, Some(opts)).await })
    }

    /// One page of `tree` within `range`, at `revision` when given.
    fn page(
        &self,
        tree: Tree,
        range: &Range,
        limit: i64,
        reverse: bool,
        revision: Option<i64>,
    ) -> Result<(Entries, bool, i64), EngineError> {
        let tp = self.tree_prefix(tree);
        let (start, end) = etcd_range(&tp, range);
        let mut opts = match revision {
            Some(r) => GetOptions::new().with_revision(r),
            None => self.read_options(),
        }
        .with_range(end)
        .with_limit(limit);
        if reverse {
            opts = opts.with_sort(SortTarget::Key, SortOrder::Descend);
        }
        let mut resp = self.get_raw("a range read", start, opts)?;
        let rev = resp.header().map_or(0, |h| h.revision());
        let more = resp.more();
        let entries = resp
            .take_kvs()
            .into_iter()
            .map(|kv| {
                let (mut k, v) = kv.into_key_value();
                k.drain(..tp.len().min(k.len()));
                (k, v)
            })
            .collect();
        Ok((entries, more, rev))
    }

    fn dump_once(&self, trees: &[Tree]) -> Result<Dump, EngineError> {
        let mut revision = None;
        let mut out = Vec::with_capacity(trees.len());
        for &tree in trees {
            let mut entries = Vec::new();
            let mut range: Range = (Bound::Unbounded, Bound::Unbounded);
            loop {
                let (page, more, rev) = self.page(tree, &range, DUMP_PAGE, false, revision)?;
                // The first page fixes the revision every other page is read at.
                revision.get_or_insert(rev);
                let last = page.last().map(|(k, _)| k.clone());
                entries.extend(page);
                match last {
                    Some(k) if more => range = (Bound::Excluded(k), Bound::Unbounded),
                    _ => break,
                }
            }
            out.push((tree, entries));
        }
        Ok(out)
    }

    fn write_chunk(&self, ops: Vec<TxnOp>) -> Result<(), EngineError> {
        let mut kv = self.client.kv_client();
        let txn = Txn::new().and_then(ops);
        self.run("a write", async move { kv.txn(txn).await })
            .map(|_| ())
    }
}

impl Engine for EtcdEngine {
    fn kind(&self) -> &'static str {
        "etcd"
    }

    fn shared(&self) -> bool {
        true
    }

    fn group_commit(&self) -> Option<&crate::store::GroupCommit> {
        None
    }

    fn check_writable(&self) -> Result<(), crate::store::StoreError> {
        Ok(())
    }

    fn check_usable(&self) -> Result<(), crate::store::StoreError> {
        Ok(())
    }

    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        let mut resp = self.get_raw("a read", self.key(tree, key), self.read_options())?;
        Ok(resp
            .take_kvs()
            .into_iter()
            .next()
            .map(|kv| kv.into_key_value().1))
    }

    fn scan(
        &self,
        tree: Tree,
        range: Range,
        limit: usize,
        reverse: bool,
    ) -> Result<Entries, EngineError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        Ok(self.page(tree, &range, limit, reverse, None)?.0)
    }

    fn len(&self, tree: Tree) -> Result<u64, EngineError> {
        let tp = self.tree_prefix(tree);
        let opts = self
            .read_options()
            .with_range(prefix_end(&tp))
            .with_count_only();
        let resp = self.get_raw("a count", tp, opts)?;
        Ok(u64::try_from(resp.count()).unwrap_or(0))
    }

    fn transaction(&self, trees: &[Tree], body: &Body<'_>) -> Result<(), TxFailed> {
        super::stm::run(self, trees, body)
    }

    fn write(&self, ops: &[Op]) -> Result<(), EngineError> {
        // One Txn (etcd refuses a key twice in one, and more than 128 ops):
        // split there, in order, so that a crash leaves a prefix applied.
        let mut chunk = Vec::new();
        let mut keys = HashSet::new();
        for op in ops {
            let key = self.key(op.tree, &op.key);
            if chunk.len() == MAX_TXN_OPS || keys.contains(&key) {
                self.write_chunk(std::mem::take(&mut chunk))?;
                keys.clear();
            }
            keys.insert(key.clone());
            chunk.push(match &op.value {
                Some(v) => TxnOp::put(key, v.clone(), None),
                None => TxnOp::delete(key, None),
            });
        }
        if !chunk.is_empty() {
            self.write_chunk(chunk)?;
        }
        Ok(())
    }

    fn take(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        let mut kv = self.client.kv_client();
        let key = self.key(tree, key);
        let mut resp = self.run("a take", async move {
            kv.delete(key, Some(DeleteOptions::new().with_prev_key()))
                .await
        })?;
        Ok(resp
            .take_prev_kvs()
            .into_iter()
            .next()
            .map(|kv| kv.into_key_value().1))
    }

    fn dump(&self, trees: &[Tree]) -> Result<Dump, EngineError> {
        // A compaction past the dump's revision in the middle: start again.
        let mut attempts = 0;
        loop {
            match self.dump_once(trees) {
                Err(EngineError::Other(e)) if is_compacted(&e) && attempts < 3 => attempts += 1,
                r => return r,
            }
        }
    }

    fn try_duty(&self, name: &str) -> Result<Option<Box<dyn DutyGuard>>, EngineError> {
        super::duty::try_duty(self, name)
    }

    fn ready(&self) -> Result<(), EngineError> {
        // Linearizable whatever the configuration: it needs the quorum.
        let key = self.prefix.clone();
        self.get_raw(
            "the readiness check",
            key,
            GetOptions::new().with_count_only(),
        )
        .map(|_| ())
    }

    fn size_on_disk(&self) -> Option<u64> {
        None
    }

    fn shutdown(&self) {}
}

/// The etcd `[start, end)` of `range` within the tree prefix `tp`.
fn etcd_range(tp: &[u8], range: &Range) -> (Vec<u8>, Vec<u8>) {
    let with = |k: &[u8], zero: bool| {
        let mut v = tp.to_vec();
        v.extend_from_slice(k);
        if zero {
            v.push(0);
        }
        v
    };
    let start = match &range.0 {
        Bound::Included(k) => with(k, false),
        Bound::Excluded(k) => with(k, true),
        Bound::Unbounded => tp.to_vec(),
    };
    let end = match &range.1 {
        Bound::Included(k) => with(k, true),
        Bound::Excluded(k) => with(k, false),
        Bound::Unbounded => prefix_end(tp),
    };
    (start, end)
}

/// The first key after every key starting with `p` (etcd's range end of a prefix).
pub(super) fn prefix_end(p: &[u8]) -> Vec<u8> {
    let mut end = p.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // All 0xff (never: prefixes start with '/'): to the end of the keyspace.
    vec![0]
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

fn tls_options(config: &EtcdConfig) -> Result<etcd_client::TlsOptions, EngineError> {
    let read = |key: &str, path: &std::path::Path| {
        std::fs::read(path)
            .map(zeroize::Zeroizing::new)
            .map_err(|e| EngineError::Other(format!("storage.etcd.{key} {}: {e}", path.display())))
    };
    let mut tls = etcd_client::TlsOptions::new();
    if let Some(ca) = &config.ca_file {
        tls = tls.ca_certificate(etcd_client::Certificate::from_pem(&*read("ca_file", ca)?));
    }
    if let (Some(cert), Some(key)) = (&config.cert_file, &config.key_file) {
        let cert = read("cert_file", cert)?;
        let key = read("key_file", key)?;
        tls = tls.identity(etcd_client::Identity::from_pem(&*cert, &*key));
    }
    Ok(tls)
}

/// A compaction removed the revision a read asked for.
pub(super) fn is_compacted(message: &str) -> bool {
    message.contains("required revision has been compacted")
}

/// Unavailable (no quorum, unreachable, too slow: 503, retry later) or Other.
/// The message is etcd's or the transport's own, never a key's value.
pub(super) fn classify(what: &str, e: etcd_client::Error) -> EngineError {
    use etcd_client::Error as E;
    use tonic::Code;
    match e {
        E::TransportError(e) => EngineError::Unavailable(format!("{what}: {e}")),
        E::IoError(e) => EngineError::Unavailable(format!("{what}: {e}")),
        E::GRpcStatus(s) => {
            let msg = s.message();
            let short: String = msg.chars().take(300).collect();
            let unavailable = matches!(
                s.code(),
                Code::Unavailable
                    | Code::DeadlineExceeded
                    | Code::Cancelled
                    | Code::ResourceExhausted
                    | Code::Aborted
            ) || [
                "no leader",
                "request timed out",
                "leader changed",
                "timed out",
                "too many requests",
                "not capable",
                "connection refused",
                "unhealthy cluster",
            ]
            .iter()
            .any(|m| msg.contains(m));
            let text = format!("{what}: {short} ({:?})", s.code());
            if unavailable {
                EngineError::Unavailable(text)
            } else {
                EngineError::Other(text)
            }
        }
        E::LeaseKeepAliveError(e) => EngineError::Unavailable(format!("{what}: {e}")),
        other => EngineError::Other(format!("{what}: {other}")),
    }
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn ranges_stay_inside_the_tree() {
        let tp = b"/p/audit/";
        let r = etcd_range(tp, &(Bound::Unbounded, Bound::Unbounded));
        assert_eq!(r, (b"/p/audit/".to_vec(), b"/p/audit0".to_vec()));
        let r = etcd_range(
            tp,
            &(
                Bound::Excluded(b"a".to_vec()),
                Bound::Included(b"c".to_vec()),
            ),
        );
        assert_eq!(r, (b"/p/audit/a\0".to_vec(), b"/p/audit/c\0".to_vec()));
        let r = etcd_range(
            tp,
            &(
                Bound::Included(b"a".to_vec()),
                Bound::Excluded(b"c".to_vec()),
            ),
        );
        assert_eq!(r, (b"/p/audit/a".to_vec(), b"/p/audit/c".to_vec()));
        assert_eq!(prefix_end(b"a\xff\xff"), b"b".to_vec());
        assert_eq!(hex(&[0, 0xab, 0x10]), "00ab10");
    }
}
