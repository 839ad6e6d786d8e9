//! API tokens (`tokens`: id → record); a domain token is also listed in its
//! domain's record, so both change in one transaction.

use sled::Transactional;

use super::{
    abort, decode, encode, next_id, store_only, tx, tx_decode, AuditRecord, DomainRecord, Store,
    StoreError, TokenRecord, TokenScope, TxResult, META_NEXT_TOKEN,
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
}
