//! API tokens (`tokens`: id → record); a domain token is also listed in its
//! domain's record, so both change in one transaction.

use super::engine::Tree;
use super::{
    abort, decode, encode, next_id, store_only, AuditRecord, DomainRecord, Store, StoreError,
    TokenRecord, TokenScope, META_NEXT_TOKEN,
};

impl Store {
    /// Create a token record. `make` gets the new id and returns the hash to store
    /// with a value handed back to the caller (the token itself).
    pub async fn create_token<R>(
        &self,
        scope: TokenScope,
        now: i64,
        make: impl Fn(u64) -> ([u8; 32], R),
        audit: impl Fn(&TokenRecord) -> AuditRecord,
    ) -> Result<(TokenRecord, R), StoreError> {
        let trees = [Tree::Meta, Tree::Domains, Tree::Tokens, Tree::Audit];
        let r = self.apply_audited(&trees, |tx, slot| {
            let id = next_id(tx, META_NEXT_TOKEN)?;
            if let TokenScope::Domain(domain_id) = scope {
                let key = domain_id.to_be_bytes();
                let Some(bytes) = tx.get(Tree::Domains, &key)? else {
                    return abort(StoreError::DomainNotFound);
                };
                let mut domain: DomainRecord = decode("domains", &key, &bytes)?;
                domain.token_ids.push(id);
                tx.insert(Tree::Domains, &key, &encode(&domain)?)?;
            }
            let (hash, extra) = make(id);
            let record = TokenRecord {
                id,
                hash,
                scope,
                created_at: now,
            };
            tx.insert(Tree::Tokens, &id.to_be_bytes(), &encode(&record)?)?;
            slot.write(tx, audit(&record))?;
            Ok((record, extra))
        });
        let out = store_only(r)?;
        self.durable().await?;
        Ok(out)
    }

    pub fn token(&self, id: u64) -> Result<Option<TokenRecord>, StoreError> {
        self.read(Tree::Tokens, &id.to_be_bytes())
    }

    pub fn list_tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        self.usable()?;
        self.entries(Tree::Tokens)
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
        let trees = [Tree::Domains, Tree::Tokens, Tree::Audit];
        let r = self.apply_audited(&trees, |tx, slot| {
            let key = id.to_be_bytes();
            let Some(bytes) = tx.remove(Tree::Tokens, &key)? else {
                return Ok(false);
            };
            let record: TokenRecord = decode("tokens", &key, &bytes)?;
            if let TokenScope::Domain(domain_id) = record.scope {
                let dkey = domain_id.to_be_bytes();
                if let Some(dbytes) = tx.get(Tree::Domains, &dkey)? {
                    let mut domain: DomainRecord = decode("domains", &dkey, &dbytes)?;
                    domain.token_ids.retain(|t| *t != id);
                    tx.insert(Tree::Domains, &dkey, &encode(&domain)?)?;
                }
            }
            slot.write(tx, audit(&record))?;
            Ok(true)
        });
        let removed = store_only(r)?;
        if removed {
            self.durable().await?;
        }
        Ok(removed)
    }
}
