//! Enterprise domains: `domains` (id → record) and `domain_names` (name → id),
//! created and removed (with their config and tokens) in one transaction each.

use sled::Transactional;

use super::{
    abort, counts, decode, encode, next_id, store_only, tx, tx_decode, AuditRecord, DomainRecord,
    Store, StoreError, TxResult, META_NEXT_DOMAIN,
};

impl Store {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_util::*;
    use crate::store::TokenScope;

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
}
