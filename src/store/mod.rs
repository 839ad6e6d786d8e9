//! The embedded store: sled trees and the group commit. The only module that
//! imports sled.
//!
//! Trees:
//! - `meta`: id counters;
//! - `domains`: id → [`DomainRecord`]; `domain_names`: name → id;
//! - `configs`: domain id → [`ConfigRecord`];
//! - `tokens`: id → [`TokenRecord`].
//!
//! Every mutation runs in one sled transaction over the trees it touches, then
//! waits for the group commit, so a method that returns `Ok` has made its change
//! durable (flushed and fsynced).

mod commit;
pub mod fsutil;
mod records;

use std::path::{Path, PathBuf};

use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
use sled::Transactional;

pub use commit::CommitStats;
pub use records::{ConfigRecord, DomainRecord, TokenRecord, TokenScope};

pub use commit::GroupCommit;
use records::{decode, encode};

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

fn tx_decode<T: bincode::Decode<()>, E>(
    tree: &'static str,
    key: &[u8],
    bytes: &[u8],
) -> TxResult<T, E> {
    decode(tree, key, bytes).map_err(|e| ConflictableTransactionError::Abort(Abort::Store(e)))
}

fn flatten<T, E>(r: Result<T, TransactionError<Abort<E>>>) -> Result<T, Abort<E>> {
    match r {
        Ok(v) => Ok(v),
        Err(TransactionError::Abort(a)) => Err(a),
        Err(TransactionError::Storage(e)) => Err(Abort::Store(StoreError::Sled(e))),
    }
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
    meta.insert(key, &(current + 1).to_be_bytes())?;
    Ok(current)
}

/// Options for opening the store.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub cache_capacity_bytes: u64,
}

pub struct Store {
    db: sled::Db,
    dir: PathBuf,
    meta: sled::Tree,
    domains: sled::Tree,
    domain_names: sled::Tree,
    configs: sled::Tree,
    tokens: sled::Tree,
    commit: GroupCommit,
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
        let commit = GroupCommit::start(db.clone(), dir.to_path_buf())?;
        Ok(Self {
            meta: db.open_tree("meta")?,
            domains: db.open_tree("domains")?,
            domain_names: db.open_tree("domain_names")?,
            configs: db.open_tree("configs")?,
            tokens: db.open_tree("tokens")?,
            db,
            dir: dir.to_path_buf(),
            commit,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// False once a group commit has failed (the store may have lost durability).
    pub fn healthy(&self) -> bool {
        self.commit.healthy()
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

    pub async fn create_domain(&self, name: &str, now: i64) -> Result<DomainRecord, StoreError> {
        let r = (&self.meta, &self.domains, &self.domain_names).transaction(
            |(meta, domains, names)| -> TxResult<DomainRecord, std::convert::Infallible> {
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
                Ok(record)
            },
        );
        let record = store_only(flatten(r))?;
        self.durable().await?;
        Ok(record)
    }

    pub fn domain(&self, id: u64) -> Result<Option<DomainRecord>, StoreError> {
        let key = id.to_be_bytes();
        self.domains
            .get(key)?
            .map(|v| decode("domains", &key, &v))
            .transpose()
    }

    pub fn domain_by_name(&self, name: &str) -> Result<Option<DomainRecord>, StoreError> {
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
        self.domains
            .iter()
            .map(|kv| {
                let (k, v) = kv?;
                decode("domains", &k, &v)
            })
            .collect()
    }

    pub fn count_domains(&self) -> usize {
        self.domains.len()
    }

    /// Remove a domain with its config and its tokens, atomically.
    /// Returns false when there was no such domain.
    pub async fn remove_domain(&self, id: u64) -> Result<bool, StoreError> {
        let r = (
            &self.domains,
            &self.domain_names,
            &self.configs,
            &self.tokens,
        )
            .transaction(
                |(domains, names, configs, tokens)| -> TxResult<bool, std::convert::Infallible> {
                    let key = id.to_be_bytes();
                    let Some(bytes) = domains.get(key)? else {
                        return Ok(false);
                    };
                    let record: DomainRecord = tx_decode("domains", &key, &bytes)?;
                    for token_id in &record.token_ids {
                        tokens.remove(&token_id.to_be_bytes())?;
                    }
                    configs.remove(&key)?;
                    names.remove(record.name.as_bytes())?;
                    domains.remove(&key)?;
                    Ok(true)
                },
            );
        let removed = store_only(flatten(r))?;
        if removed {
            self.durable().await?;
        }
        Ok(removed)
    }

    // ---- OIDC configs --------------------------------------------------------

    pub fn config(&self, domain_id: u64) -> Result<Option<ConfigRecord>, StoreError> {
        let key = domain_id.to_be_bytes();
        self.configs
            .get(key)?
            .map(|v| decode("configs", &key, &v))
            .transpose()
    }

    pub fn count_configs(&self) -> usize {
        self.configs.len()
    }

    /// Create or update the config of `domain_id` atomically. `build` gets the
    /// current record (if any) and the id to use, and returns the new record or
    /// its own error; it may run more than once when transactions conflict.
    /// Returns the stored record and whether it was created.
    pub async fn upsert_config<E>(
        &self,
        domain_id: u64,
        build: impl Fn(Option<&ConfigRecord>, u64) -> Result<ConfigRecord, E>,
    ) -> Result<(ConfigRecord, bool), Abort<E>> {
        if let Some(updated) = self.update_config_cas(domain_id, &build)? {
            self.durable().await?;
            return Ok((updated, false));
        }
        let r = (&self.meta, &self.domains, &self.configs).transaction(
            |(meta, domains, configs)| -> TxResult<(ConfigRecord, bool), E> {
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
                let record = build(current.as_ref(), id)
                    .map_err(|e| ConflictableTransactionError::Abort(Abort::Caller(e)))?;
                configs.insert(&key, encode(&record))?;
                Ok((record, current.is_none()))
            },
        );
        let out = flatten(r)?;
        self.durable().await?;
        Ok(out)
    }

    /// The update half of [`Store::upsert_config`] without a sled transaction: one
    /// compare-and-swap on `configs`, retried if the record changed meanwhile.
    /// `None` when there is no config yet (the caller creates it in a
    /// transaction). Every sled transaction rolls sled's IO buffer and holds its
    /// global write lock, so updates in transactions were serialised and cost
    /// several times a plain write (see BENCHMARKS.md). This is as safe: a config
    /// exists only while its domain does (a domain and its config are removed in
    /// one transaction, which excludes this swap), so a swap against the record
    /// read here acts on a live domain; the swap fails if anything changed it.
    fn update_config_cas<E>(
        &self,
        domain_id: u64,
        build: &impl Fn(Option<&ConfigRecord>, u64) -> Result<ConfigRecord, E>,
    ) -> Result<Option<ConfigRecord>, Abort<E>> {
        let key = domain_id.to_be_bytes();
        loop {
            let Some(bytes) = self.configs.get(key).map_err(StoreError::from)? else {
                return Ok(None);
            };
            let current: ConfigRecord = decode("configs", &key, &bytes)?;
            let record = build(Some(&current), current.id).map_err(Abort::Caller)?;
            let swapped = self
                .configs
                .compare_and_swap(key, Some(&bytes), Some(encode(&record)))
                .map_err(StoreError::from)?;
            if swapped.is_ok() {
                return Ok(Some(record));
            }
        }
    }

    /// Delete the config of `domain_id`; false when there was none.
    pub async fn delete_config(&self, domain_id: u64) -> Result<bool, StoreError> {
        let removed = self.configs.remove(domain_id.to_be_bytes())?.is_some();
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
    ) -> Result<(TokenRecord, R), StoreError> {
        let r = (&self.meta, &self.domains, &self.tokens).transaction(
            |(meta, domains, tokens)| -> TxResult<(TokenRecord, R), std::convert::Infallible> {
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
                Ok((record, extra))
            },
        );
        let out = store_only(flatten(r))?;
        self.durable().await?;
        Ok(out)
    }

    pub fn token(&self, id: u64) -> Result<Option<TokenRecord>, StoreError> {
        let key = id.to_be_bytes();
        self.tokens
            .get(key)?
            .map(|v| decode("tokens", &key, &v))
            .transpose()
    }

    pub fn list_tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        self.tokens
            .iter()
            .map(|kv| {
                let (k, v) = kv?;
                decode("tokens", &k, &v)
            })
            .collect()
    }

    /// Revoke a token; false when there was none.
    pub async fn revoke_token(&self, id: u64) -> Result<bool, StoreError> {
        let r = (&self.domains, &self.tokens).transaction(
            |(domains, tokens)| -> TxResult<bool, std::convert::Infallible> {
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
                Ok(true)
            },
        );
        let removed = store_only(flatten(r))?;
        if removed {
            self.durable().await?;
        }
        Ok(removed)
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
            },
        )
        .unwrap()
    }

    fn config(id: u64, domain_id: u64, client_id: &str) -> ConfigRecord {
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
        }
    }

    #[actix_web::test]
    async fn removing_a_domain_takes_its_config_and_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let a = store.create_domain("a.example", 1).await.unwrap();
        let b = store.create_domain("b.example", 1).await.unwrap();
        assert!(matches!(
            store.create_domain("a.example", 1).await,
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
            .create_token(TokenScope::Domain(a.id), 1, |_| ([1; 32], ()))
            .await
            .unwrap();
        let (tb, _) = store
            .create_token(TokenScope::Domain(b.id), 1, |_| ([2; 32], ()))
            .await
            .unwrap();
        let (op, _) = store
            .create_token(TokenScope::Operator, 1, |_| ([3; 32], ()))
            .await
            .unwrap();

        assert!(store.remove_domain(a.id).await.unwrap());
        assert!(store.domain(a.id).unwrap().is_none());
        assert!(store.domain_by_name("a.example").unwrap().is_none());
        assert!(store.config(a.id).unwrap().is_none());
        assert!(store.token(ta.id).unwrap().is_none());
        // The other domain and the operator token are untouched.
        assert!(store.config(b.id).unwrap().is_some());
        assert!(store.token(tb.id).unwrap().is_some());
        assert!(store.token(op.id).unwrap().is_some());
        assert!(!store.remove_domain(a.id).await.unwrap());
    }

    #[actix_web::test]
    async fn upsert_keeps_id_and_reports_creation() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let d = store.create_domain("a.example", 1).await.unwrap();
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
            .upsert_config(d.id, |_, _| Err::<ConfigRecord, _>("no"))
            .await;
        assert!(matches!(r, Err(Abort::Caller("no"))));
        assert_eq!(store.config(d.id).unwrap().unwrap().client_id, "two");
        // Unknown domain.
        let r = store
            .upsert_config(999, |_, id| Ok::<_, ()>(config(id, 999, "z")))
            .await;
        assert!(matches!(r, Err(Abort::Store(StoreError::DomainNotFound))));
    }

    /// Updates swap the record they read: from several threads at once, no
    /// update is lost (each one increments a counter kept in `client_id`).
    #[test]
    fn concurrent_updates_are_not_lost() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let rt = || {
            tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap()
        };
        let d = rt().block_on(store.create_domain("a.example", 1)).unwrap();
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
        let d = store.create_domain("a.example", 1).await.unwrap();
        let (first, _) = store
            .upsert_config(d.id, |_, id| Ok::<_, ()>(config(id, d.id, "one")))
            .await
            .unwrap();
        // Deleted config: the next upsert creates a new one, with a new id.
        assert!(store.delete_config(d.id).await.unwrap());
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
        assert!(store.remove_domain(d.id).await.unwrap());
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
            store.create_domain("a.example", 7).await.unwrap();
            store.shutdown();
        }
        let store = open(dir.path());
        let d = store.domain_by_name("a.example").unwrap().unwrap();
        assert_eq!(d.created_at, 7);
    }
}
