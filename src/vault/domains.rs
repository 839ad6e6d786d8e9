//! Enterprise domains: add, list, find, remove (with their config and tokens),
//! and which domain a caller acts on.

use super::{
    audit, field_error, normalize_domain_name, Caller, Domain, DomainAccess, Vault, VaultError,
};
use crate::store::{DomainRecord, StoreError};
use crate::time::now_micros;

impl Vault {
    /// The enterprise domain a request acts on: a domain token's own domain, or the
    /// one an operator names in `X-Enterprise-Domain`.
    pub fn domain_for(
        &self,
        caller: Caller,
        named: Option<&str>,
    ) -> Result<Result<Domain, DomainAccess>, VaultError> {
        let named = named.map(|n| n.trim().trim_end_matches('.').to_ascii_lowercase());
        match caller {
            Caller::Domain { domain_id, .. } => {
                let Some(domain) = self.store.domain(domain_id)? else {
                    return Ok(Err(DomainAccess::NotFound));
                };
                match named {
                    Some(n) if n != domain.name => Ok(Err(DomainAccess::Forbidden)),
                    _ => Ok(Ok(domain.into())),
                }
            }
            Caller::Operator { .. } => match named {
                None => Ok(Err(DomainAccess::NotFound)),
                Some(n) => Ok(self
                    .store
                    .domain_by_name(&n)?
                    .map(Domain::from)
                    .ok_or(DomainAccess::NotFound)),
            },
        }
    }

    pub async fn add_domain(
        &self,
        raw_name: &str,
        actor: Option<u64>,
    ) -> Result<Domain, VaultError> {
        let name = normalize_domain_name(raw_name)
            .map_err(|m| VaultError::Invalid(field_error("domain", m)))?;
        let now = now_micros();
        let audit =
            |r: &DomainRecord| audit::event(now, actor, "domain.add", Some(&r.clone().into()));
        match self.store.create_domain(&name, now, audit).await {
            Ok(r) => {
                let domain: Domain = r.into();
                audit::log_line(&audit::event(now, actor, "domain.add", Some(&domain)));
                Ok(domain)
            }
            Err(StoreError::DomainExists) => Err(VaultError::Invalid(field_error(
                "domain",
                "An enterprise domain with this name already exists.",
            ))),
            Err(e) => Err(e.into()),
        }
    }

    pub fn list_domains(&self) -> Result<Vec<Domain>, VaultError> {
        Ok(self
            .store
            .list_domains()?
            .into_iter()
            .map(Domain::from)
            .collect())
    }

    pub fn domain_by_name(&self, raw_name: &str) -> Result<Option<Domain>, VaultError> {
        let name = raw_name.trim().trim_end_matches('.').to_ascii_lowercase();
        Ok(self.store.domain_by_name(&name)?.map(Domain::from))
    }

    /// Remove a domain, its config and its tokens; false when there was none.
    pub async fn remove_domain(&self, id: u64, actor: Option<u64>) -> Result<bool, VaultError> {
        let now = now_micros();
        let audit =
            |r: &DomainRecord| audit::event(now, actor, "domain.remove", Some(&r.clone().into()));
        let removed = self.store.remove_domain(id, audit).await?;
        if let Some(r) = &removed {
            audit::log_line(&audit::event(
                now,
                actor,
                "domain.remove",
                Some(&r.clone().into()),
            ));
        }
        Ok(removed.is_some())
    }
}
