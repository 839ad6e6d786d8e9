//! API tokens: authentication, create (shown once, stored as a hash), list,
//! revoke.

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::{
    audit, field_error, normalize_domain_name, Caller, Domain, TokenInfo, TokenTarget, Vault,
    VaultError,
};
use crate::crypto::{self, TokenString};
use crate::store::{AuditRecord, StoreError, TokenRecord, TokenScope};
use crate::time::now_micros;

impl Vault {
    /// The caller a presented bearer token stands for; `None` when it is not valid.
    pub fn authenticate(&self, presented: &str) -> Result<Option<Caller>, VaultError> {
        let Ok((id, hash)) = crypto::token::parse(presented) else {
            return Ok(None);
        };
        let Some(record) = self.store.token(id)? else {
            return Ok(None);
        };
        if !hash.matches(&crypto::TokenHash(record.hash)) {
            return Ok(None);
        }
        Ok(Some(match record.scope {
            TokenScope::Operator => Caller::Operator { token_id: id },
            TokenScope::Domain(domain_id) => Caller::Domain {
                token_id: id,
                domain_id,
            },
        }))
    }

    /// Create a token. The token string is returned once and never stored.
    pub async fn create_token(
        &self,
        target: &TokenTarget,
        actor: Option<u64>,
    ) -> Result<(TokenInfo, TokenString), VaultError> {
        let (scope, domain) = match target {
            TokenTarget::Operator => (TokenScope::Operator, None),
            TokenTarget::Domain(name) => {
                let name = normalize_domain_name(name)
                    .map_err(|m| VaultError::Invalid(field_error("domain", m)))?;
                let Some(d) = self.domain_by_name(&name)? else {
                    return Err(VaultError::Invalid(field_error(
                        "domain",
                        "Enterprise domain not found.",
                    )));
                };
                (TokenScope::Domain(d.id), Some(d))
            }
        };
        let now = now_micros();
        let token_event = |r: &TokenRecord| {
            let mut e = audit::event(now, actor, "token.create", domain.as_ref());
            e.detail = Some(format!(
                "token {}{}",
                r.id,
                if domain.is_none() { " (operator)" } else { "" }
            ));
            e
        };
        let result = self
            .store
            .create_token(
                scope,
                now,
                |id| {
                    let generated = crypto::token::generate(id);
                    (generated.hash.0, generated.token)
                },
                token_event,
            )
            .await;
        let (record, token) = match result {
            Ok(v) => v,
            Err(StoreError::DomainNotFound) => {
                return Err(VaultError::Invalid(field_error(
                    "domain",
                    "Enterprise domain not found.",
                )))
            }
            Err(e) => return Err(e.into()),
        };
        audit::log_line(&token_event(&record));
        Ok((
            TokenInfo {
                id: record.id,
                domain: domain.map(|d| d.name),
                created_at: record.created_at,
            },
            token,
        ))
    }

    pub fn list_tokens(&self) -> Result<Vec<TokenInfo>, VaultError> {
        let names: BTreeMap<u64, String> = self
            .store
            .list_domains()?
            .into_iter()
            .map(|d| (d.id, d.name))
            .collect();
        Ok(self
            .store
            .list_tokens()?
            .into_iter()
            .map(|t: TokenRecord| TokenInfo {
                id: t.id,
                domain: match t.scope {
                    TokenScope::Operator => None,
                    TokenScope::Domain(d) => names.get(&d).cloned(),
                },
                created_at: t.created_at,
            })
            .collect())
    }

    /// Revoke a token; false when there was none.
    pub async fn revoke_token(&self, id: u64, actor: Option<u64>) -> Result<bool, VaultError> {
        let now = now_micros();
        // The token's domain, for its event: a token's scope never changes, so it
        // is read once here rather than listing every domain.
        let domain = match self.store.token(id)?.map(|t| t.scope) {
            Some(TokenScope::Domain(d)) => self.store.domain(d)?.map(Domain::from),
            _ => None,
        };
        let stored_event: Mutex<Option<AuditRecord>> = Mutex::new(None);
        let token_event = |r: &TokenRecord| {
            let mut e = audit::event(now, actor, "token.revoke", domain.as_ref());
            e.detail = Some(format!("token {}", r.id));
            *stored_event
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(e.clone());
            e
        };
        let revoked = self.store.revoke_token(id, token_event).await?;
        if revoked {
            if let Some(e) = stored_event
                .into_inner()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
            {
                audit::log_line(&e);
            }
        }
        Ok(revoked)
    }
}
