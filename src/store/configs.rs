//! OIDC configs (`configs`: domain id → record): created in a transaction,
//! updated with plain writes in a writer's turn, deleted, re-sealed under a new
//! key term, and iterated for verify and re-encryption.

use super::engine::{Op, Tree};
use super::{
    abort, caller, counts, decode, encode, key_id, next_id, store_only, Abort, AuditRecord,
    ConfigRecord, Store, StoreError, META_NEXT_CONFIG,
};

impl Store {
    pub fn config(&self, domain_id: u64) -> Result<Option<ConfigRecord>, StoreError> {
        self.read(Tree::Configs, &domain_id.to_be_bytes())
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
        if !self.shared {
            if let Some(updated) = self.update_config(domain_id, &build)? {
                self.durable().await?;
                return Ok((updated, false));
            }
        }
        let trees = [Tree::Meta, Tree::Domains, Tree::Configs, Tree::Audit];
        let r = self.apply_audited_then(
            &trees,
            |tx, slot| {
                let key = domain_id.to_be_bytes();
                if tx.get(Tree::Domains, &key)?.is_none() {
                    return abort(StoreError::DomainNotFound);
                }
                let current: Option<ConfigRecord> = match tx.get(Tree::Configs, &key)? {
                    Some(bytes) => Some(decode("configs", &key, &bytes)?),
                    None => None,
                };
                let id = match &current {
                    Some(c) => c.id,
                    None => next_id(tx, META_NEXT_CONFIG)?,
                };
                let (record, event) = build(current.as_ref(), id).map_err(caller)?;
                self.check_keyring(tx)?;
                tx.insert(Tree::Configs, &key, &encode(&record)?)?;
                slot.write(tx, event)?;
                Ok((record, current.as_ref().map(counts::Entry::of)))
            },
            |(record, old)| self.counts.config_written(*old, counts::Entry::of(record)),
        );
        let (record, old) = r?;
        self.durable().await?;
        Ok((record, old.is_none()))
    }

    /// The update half of [`Store::upsert_config`], without a transaction
    /// (not in shared mode): every sled transaction seals and writes sled's
    /// current IO buffer under its process-wide lock, which made updates
    /// several times dearer than plain writes (BENCHMARKS.md). Instead, every
    /// writer of `configs` (this, the audited transactions, re-encryption)
    /// holds the write-order lock, so the record read here is still current
    /// when the new one is written. The audit event is written first: sled
    /// recovers a prefix of its log, so a change that survives a crash always
    /// has its event (an event may survive without its change only if neither
    /// was acknowledged). `None` when there is no config yet: the caller
    /// creates it in a transaction.
    fn update_config<E>(
        &self,
        domain_id: u64,
        build: &impl Fn(Option<&ConfigRecord>, u64) -> Result<(ConfigRecord, AuditRecord), E>,
    ) -> Result<Option<ConfigRecord>, Abort<E>> {
        let (mut head, _gate) = self.writer_turn()?;
        let key = domain_id.to_be_bytes();
        // A config exists only while its domain does (they are removed together).
        let Some(bytes) = self.engine.get(Tree::Configs, &key)? else {
            return Ok(None);
        };
        let current: ConfigRecord = decode("configs", &key, &bytes)?;
        let (record, event) = build(Some(&current), current.id).map_err(Abort::Caller)?;
        let stored = encode(&record)?;
        let slot = self.audit_slot(&head)?;
        let event = slot.seal(event)?;
        self.engine.write(&[
            Op {
                tree: Tree::Audit,
                key: slot.key().to_vec(),
                value: Some(event),
            },
            Op {
                tree: Tree::Configs,
                key: key.to_vec(),
                value: Some(stored),
            },
        ])?;
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
        let r = self.apply_audited_then(
            &[Tree::Configs, Tree::Audit],
            |tx, slot| -> super::TxResult<Option<counts::Entry>, std::convert::Infallible> {
                let key = domain_id.to_be_bytes();
                let removed = tx
                    .remove(Tree::Configs, &key)?
                    .map(|v| counts::Entry::of_bytes(&key, &v));
                if removed.is_some() {
                    slot.write(tx, audit.clone())?;
                }
                Ok(removed)
            },
            |removed| {
                if let Some(old) = removed {
                    self.counts.config_removed(*old);
                }
            },
        );
        let removed = store_only(r)?.is_some();
        if removed {
            self.durable().await?;
        }
        Ok(removed)
    }

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
        if self.shared {
            // Over the record as read in the transaction (another node may
            // change it meanwhile), under the keyring the vault sealed with.
            return self.transact(&[Tree::Configs], |tx| {
                let Some(bytes) = tx.get(Tree::Configs, &key)? else {
                    return Ok(false);
                };
                let mut record: ConfigRecord = decode("configs", &key, &bytes)?;
                let Some(sealed) = reseal(&record).map_err(caller)? else {
                    return Ok(false);
                };
                self.check_keyring(tx)?;
                record.secret_sealed = sealed;
                tx.insert(Tree::Configs, &key, &encode(&record)?)?;
                Ok(true)
            });
        }
        let Some(bytes) = self.engine.get(Tree::Configs, &key)? else {
            return Ok(false);
        };
        let mut record: ConfigRecord = decode("configs", &key, &bytes)?;
        match reseal(&record).map_err(Abort::Caller)? {
            Some(sealed) => {
                let old = counts::Entry::of(&record);
                record.secret_sealed = sealed;
                self.engine.write(&[Op {
                    tree: Tree::Configs,
                    key: key.to_vec(),
                    value: Some(encode(&record)?),
                }])?;
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
        self.entries(Tree::Configs).map(|kv| {
            let (k, v) = kv?;
            let id = key_id(Tree::Configs, &k).map_err(|_| StoreError::Corrupt {
                tree: "configs",
                key: String::from_utf8_lossy(&k).into_owned(),
                reason: "key is not an 8-byte domain id".into(),
            })?;
            Ok((id, decode("configs", &k, &v)?))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_util::*;

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
}
