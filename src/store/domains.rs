//! Enterprise domains: `domains` (id → record) and `domain_names` (name → id),
//! created and removed (with their config and tokens) in one transaction each.

use std::convert::Infallible;

use super::chain::AuditSlot;
use super::engine::{Tree, Tx};
use super::{
    abort, counts, decode, encode, next_id, store_only, AuditRecord, DomainRecord, Store,
    StoreError, TxResult, META_NEXT_DOMAIN,
};

impl Store {
    pub async fn create_domain(
        &self,
        name: &str,
        now: i64,
        audit: impl Fn(&DomainRecord) -> AuditRecord,
    ) -> Result<DomainRecord, StoreError> {
        let trees = [Tree::Meta, Tree::Domains, Tree::DomainNames, Tree::Audit];
        let body = |tx: &mut dyn Tx, slot: &AuditSlot<'_>| -> TxResult<DomainRecord, Infallible> {
            if tx.get(Tree::DomainNames, name.as_bytes())?.is_some() {
                return abort(StoreError::DomainExists);
            }
            let id = next_id(tx, META_NEXT_DOMAIN)?;
            let record = DomainRecord {
                id,
                name: name.to_owned(),
                created_at: now,
                token_ids: Vec::new(),
            };
            tx.insert(Tree::Domains, &id.to_be_bytes(), &encode(&record)?)?;
            tx.insert(Tree::DomainNames, name.as_bytes(), &id.to_be_bytes())?;
            slot.write(tx, audit(&record))?;
            Ok(record)
        };
        let r = self.apply_audited_then(&trees, body, |_| self.counts.domain_added());
        let record = store_only(r)?;
        self.durable().await?;
        Ok(record)
    }

    pub fn domain(&self, id: u64) -> Result<Option<DomainRecord>, StoreError> {
        self.read(Tree::Domains, &id.to_be_bytes())
    }

    pub fn domain_by_name(&self, name: &str) -> Result<Option<DomainRecord>, StoreError> {
        self.usable()?;
        match self.engine.get(Tree::DomainNames, name.as_bytes())? {
            Some(id) => match <[u8; 8]>::try_from(id.as_slice()) {
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
        self.entries(Tree::Domains)
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
        let trees = [
            Tree::Domains,
            Tree::DomainNames,
            Tree::Configs,
            Tree::Tokens,
            Tree::Audit,
        ];
        let body = |tx: &mut dyn Tx,
                    slot: &AuditSlot<'_>|
         -> TxResult<Option<(DomainRecord, Option<counts::Entry>)>, Infallible> {
            let key = id.to_be_bytes();
            let Some(bytes) = tx.get(Tree::Domains, &key)? else {
                return Ok(None);
            };
            let record: DomainRecord = decode("domains", &key, &bytes)?;
            for token_id in &record.token_ids {
                tx.remove(Tree::Tokens, &token_id.to_be_bytes())?;
            }
            let config = tx
                .remove(Tree::Configs, &key)?
                .map(|v| counts::Entry::of_bytes(&key, &v));
            tx.remove(Tree::DomainNames, record.name.as_bytes())?;
            tx.remove(Tree::Domains, &key)?;
            slot.write(tx, audit(&record))?;
            Ok(Some((record, config)))
        };
        let r = self.apply_audited_then(&trees, body, |removed| {
            if let Some((_, config)) = removed {
                self.counts.domain_removed(*config);
            }
        });
        let removed = store_only(r)?.map(|(record, _)| record);
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
