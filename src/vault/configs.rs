//! The OIDC configuration of each domain: read, create-or-update (with the
//! secret's origin binding and resolve-on-save decided inside the write),
//! delete, and the secret decrypted for a request to its bound origin.

use std::sync::Mutex;

use super::{
    audit, binding, endpoints, field_error, BoundSecret, ConfigPatch, Domain, EndpointSource,
    FieldErrors, OidcConfig, OutboundJob, Vault, VaultError, REQUIRED,
};
use crate::crypto::{mask_secret, CryptoError, Field, SealContext, SecretString};
use crate::store::{AuditRecord, ConfigRecord};
use crate::time::now_micros;

impl Vault {
    /// Seal a client secret for `domain_id` under the active term: the envelope,
    /// the masked form and the audit fingerprint. Runs inside a sled transaction,
    /// so it must not touch the store: callers count the encryption beforehand
    /// with [`Vault::count_encryption`].
    pub(super) fn seal_secret(
        &self,
        domain_id: u64,
        secret: &SecretString,
        origin: Option<&str>,
    ) -> Result<(Vec<u8>, String, String), VaultError> {
        let keyring = self.keyring();
        let ctx = SealContext {
            domain_id,
            field: Field::ClientSecret,
            origin,
        };
        Ok((
            keyring.seal(secret.expose().as_bytes(), ctx)?,
            mask_secret(secret.expose()),
            keyring.fingerprint(domain_id, "client_secret", secret.expose().as_bytes()),
        ))
    }

    pub fn get_config(&self, domain: &Domain) -> Result<Option<OidcConfig>, VaultError> {
        Ok(self.store.config(domain.id)?.map(OidcConfig::from))
    }

    /// Create or update a domain's config. On create `client_id` and
    /// `client_secret` are required. A `client_secret` equal to the stored masked
    /// form means "unchanged". Returns the config and whether it was created.
    pub async fn upsert_config(
        &self,
        domain: &Domain,
        patch: ConfigPatch,
        actor: Option<u64>,
    ) -> Result<(OidcConfig, bool), VaultError> {
        // With a storage cluster, another node may have rotated the keyring:
        // the store then refuses the write, and it is sealed again under the
        // newest keyring.
        let out = self
            .with_current_keyring(|| self.upsert_config_once(domain, &patch, actor))
            .await;
        // `patch` (and the plaintext secret in it) is dropped, and wiped, here.
        drop(patch);
        out
    }

    async fn upsert_config_once(
        &self,
        domain: &Domain,
        patch: &ConfigPatch,
        actor: Option<u64>,
    ) -> Result<(OidcConfig, bool), VaultError> {
        let now = now_micros();
        if patch.client_secret.is_some() {
            // Counted before the transaction (sled cannot write outside one from
            // inside one); an unchanged secret over-counts, which is the safe side.
            self.count_encryption(self.keyring().active_term(), false)?;
        }
        // The event of the attempt that commits (the closure may run again on a
        // transaction conflict), for the log line.
        let stored_event: Mutex<Option<AuditRecord>> = Mutex::new(None);
        let build = |current: Option<&ConfigRecord>,
                     id: u64|
         -> Result<(ConfigRecord, AuditRecord), VaultError> {
            let mut fields: Vec<String> = Vec::new();
            let mut fingerprint = None;
            let mut url_changes = None;
            let record = match current {
                None => {
                    let mut missing = FieldErrors::new();
                    if patch.client_id.is_none() {
                        missing.insert("client_id".into(), vec![REQUIRED.into()]);
                    }
                    let Some(secret) = &patch.client_secret else {
                        missing.insert("client_secret".into(), vec![REQUIRED.into()]);
                        return Err(VaultError::Invalid(missing));
                    };
                    let Some(client_id) = &patch.client_id else {
                        return Err(VaultError::Invalid(missing));
                    };
                    let record = ConfigRecord {
                        id,
                        domain_id: domain.id,
                        client_id: client_id.clone(),
                        secret_sealed: Vec::new(),
                        secret_masked: String::new(),
                        discovery_url: patch.discovery_url.apply(None),
                        authorization_endpoint: None,
                        token_endpoint: None,
                        userinfo_endpoint: None,
                        created_at: now,
                        updated_at: now,
                        discovered_endpoints: Vec::new(),
                        secret_origin: None,
                    };
                    let mut record = endpoints::merge_endpoints(patch, None, record);
                    // Bound to the token endpoint it is written with (see `binding`).
                    record.secret_origin = binding::origin_for(&record);
                    let (sealed, masked, fp) =
                        self.seal_secret(domain.id, secret, record.secret_origin.as_deref())?;
                    (record.secret_sealed, record.secret_masked) = (sealed, masked);
                    fingerprint = Some(fp);
                    fields.extend(["client_id".into(), "client_secret".into()]);
                    fields.extend(changed_urls(None, &record));
                    record
                }
                Some(cur) => {
                    if matches!(patch.endpoint_source, EndpointSource::Discovery(None))
                        && endpoints::needs_fetch_record(patch, Some(cur))
                    {
                        // Decided on a snapshot read before this write, and the
                        // stored config has changed since: not this document's.
                        return Err(VaultError::Invalid(field_error(
                            "discovery_url",
                            "The configuration changed while it was being saved; send the \
                             request again.",
                        )));
                    }
                    let mut next = cur.clone();
                    if let Some(client_id) = &patch.client_id {
                        next.client_id.clone_from(client_id);
                    }
                    if next.client_id != cur.client_id {
                        fields.push("client_id".into());
                    }
                    next.discovery_url = patch.discovery_url.apply(next.discovery_url);
                    let mut next = endpoints::merge_endpoints(patch, Some(cur), next);
                    let new_secret = patch
                        .client_secret
                        .as_ref()
                        .filter(|s| s.expose() != cur.secret_masked);
                    match new_secret {
                        Some(secret) => {
                            next.secret_origin = binding::origin_for(&next);
                            let (sealed, masked, fp) =
                                self.seal_secret(domain.id, secret, next.secret_origin.as_deref())?;
                            (next.secret_sealed, next.secret_masked) = (sealed, masked);
                            fingerprint = Some(fp);
                            fields.push("client_secret".into());
                        }
                        None => {
                            binding::check_kept_secret(cur, &next).map_err(VaultError::Invalid)?
                        }
                    }
                    fields.extend(changed_urls(Some(cur), &next));
                    url_changes = url_change_detail(cur, &next);
                    // `updated_at` moves on every update, even within one microsecond.
                    next.updated_at = now.max(cur.updated_at + 1);
                    next
                }
            };
            let action = if current.is_none() {
                "config.create"
            } else {
                "config.update"
            };
            let mut event = audit::event(now, actor, action, Some(domain));
            event.fields = fields;
            event.secret_fingerprint = fingerprint;
            event.detail = match (endpoints::save_detail(patch, &record), url_changes) {
                (Some(a), Some(b)) => Some(format!("{a}; {b}")),
                (a, b) => a.or(b),
            };
            *stored_event
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(event.clone());
            Ok((record, event))
        };
        let (record, created) = self.store.upsert_config(domain.id, build).await?;
        if let Some(event) = stored_event
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
        {
            audit::log_line(&event);
        }
        Ok((record.into(), created))
    }

    /// Delete a domain's config; false when there was none.
    pub async fn delete_config(
        &self,
        domain: &Domain,
        actor: Option<u64>,
    ) -> Result<bool, VaultError> {
        let event = audit::event(now_micros(), actor, "config.delete", Some(domain));
        let deleted = self.store.delete_config(domain.id, event.clone()).await?;
        if deleted {
            audit::log_line(&event);
        }
        Ok(deleted)
    }

    /// Mark an outbound job (connection test, discovery refresh) of `domain` as
    /// running; `None` while one already runs. The turn ends when dropped.
    pub fn begin_outbound_job(&self, domain: &Domain) -> Option<OutboundJob<'_>> {
        let mut busy = self
            .outbound_jobs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Not `then_some`: it would build (and drop, so release) a job also
        // when the domain is busy.
        if !busy.insert(domain.id) {
            return None;
        }
        Some(OutboundJob {
            jobs: &self.outbound_jobs,
            domain_id: domain.id,
        })
    }

    /// Decrypt a domain's client secret, for a request to the origin it is
    /// bound to, with the config it was read from (`config.secret_origin`;
    /// `None`: bound nowhere, never to be sent). The caller must not send it
    /// anywhere else.
    pub fn reveal_secret(&self, domain: &Domain) -> Result<Option<BoundSecret>, VaultError> {
        let Some(record) = self.store.config(domain.id)? else {
            return Ok(None);
        };
        let plain = self.open_sealed(
            &record.secret_sealed,
            SealContext {
                domain_id: domain.id,
                field: Field::ClientSecret,
                origin: record.secret_origin.as_deref(),
            },
        )?;
        let text = String::from_utf8(plain.to_vec()).map_err(|e| {
            let mut bytes = e.into_bytes();
            zeroize::Zeroize::zeroize(&mut bytes);
            CryptoError::MalformedEnvelope("plaintext is not UTF-8")
        })?;
        Ok(Some(BoundSecret {
            secret: SecretString::new(text),
            config: record.into(),
        }))
    }
}

/// The URL fields of a config, in API order.
fn url_fields(r: &ConfigRecord) -> [(&'static str, Option<&str>); 4] {
    [
        ("discovery_url", r.discovery_url.as_deref()),
        (
            "authorization_endpoint",
            r.authorization_endpoint.as_deref(),
        ),
        ("token_endpoint", r.token_endpoint.as_deref()),
        ("userinfo_endpoint", r.userinfo_endpoint.as_deref()),
    ]
}

/// Old and new values of the URL fields an update changes (for its audit event:
/// URLs only, never the secret).
fn url_change_detail(before: &ConfigRecord, after: &ConfigRecord) -> Option<String> {
    let changes: Vec<String> = url_fields(before)
        .into_iter()
        .zip(url_fields(after))
        .filter(|((_, old), (_, new))| old != new)
        .map(|((name, old), (_, new))| {
            format!(
                "{name}: {} -> {}",
                old.unwrap_or("none"),
                new.unwrap_or("none")
            )
        })
        .collect();
    (!changes.is_empty()).then(|| changes.join("; "))
}

/// Names of the URL fields that differ between `before` and `after`.
fn changed_urls(before: Option<&ConfigRecord>, after: &ConfigRecord) -> Vec<String> {
    let old = before.map(url_fields);
    url_fields(after)
        .into_iter()
        .enumerate()
        .filter(|(i, (_, v))| old.as_ref().and_then(|o| o.get(*i)).and_then(|(_, ov)| *ov) != *v)
        .map(|(_, (name, _))| name.to_owned())
        .collect()
}
