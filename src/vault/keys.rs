//! Key lifecycle: rotation of the data key without downtime, background
//! re-encryption to the newest term, dropping terms nothing uses, passphrase
//! change, and `verify`.
//!
//! Rotation is crash-safe by construction: the new term is written to the
//! keyring file (atomically) before anything is sealed under it; each record is
//! re-sealed in its own transaction; a term is dropped only after a scan, taken
//! while no write can apply, finds no record that uses it. A crash at any point
//! leaves a keyring that opens every record, and the maintenance task resumes
//! the re-encryption at the next start.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::{audit, Domain, Vault, VaultError};
use crate::crypto::{
    envelope_term, Field, KdfParams, Kek, Keyring, KeyringFile, MasterSecret, SealContext,
};
use crate::progress::{NoProgress, Progress};
use crate::store::{fsutil, Abort};
use crate::time::now_micros;

/// Re-sealed records between two group commits during re-encryption.
const REENCRYPT_BATCH: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TermStatus {
    pub term: u32,
    pub active: bool,
    pub created_at: i64,
    /// Stored secrets sealed under this term.
    pub configs: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct KeyStatus {
    pub active_term: u32,
    /// Encryptions under the active term (upper bound after a restart).
    pub active_term_encryptions: u64,
    pub rotate_after_encryptions: u64,
    pub terms: Vec<TermStatus>,
    pub total_configs: u64,
    /// Share of stored secrets already under the active term (1.0 when done).
    pub progress: f64,
    pub reencryption_pending: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    pub domains: u64,
    pub configs: u64,
    pub tokens: u64,
    /// Applications of the sign-in broker (each read, its client id checked).
    pub apps: u64,
    pub audit_events: u64,
    pub secrets_opened: u64,
    /// Audit events written before the trail was chained (no MAC): reported,
    /// not a failure.
    pub audit_legacy_events: u64,
    /// Events removed by retention, per the checkpoint the chain starts from.
    pub audit_pruned_events: u64,
    /// The first audit event that breaks the chain, when one does (also in
    /// `failures`).
    pub audit_broken_at: Option<u64>,
    /// One line per record that failed, naming it.
    pub failures: Vec<String>,
}

/// Test hook: `OIDCVAULT_FAILPOINT=<name>` makes the process exit abruptly at
/// that point, to prove crash safety from outside (tests/ops_rotation.rs, tests/ops_passphrase.rs).
///
/// Compiled into debug builds only (`debug_assertions`: what `cargo test`
/// builds and runs), so the plain test command keeps running the crash tests,
/// while a release build (`cargo build --release`, the one to ship) holds
/// neither the hook nor its variable name: scripts/test.sh checks the release
/// binary for the string.
#[cfg(debug_assertions)]
pub(crate) fn failpoint(name: &str) {
    if std::env::var("OIDCVAULT_FAILPOINT").is_ok_and(|v| v == name) {
        eprintln!("oidcvault: failpoint {name} hit, exiting");
        std::process::exit(86);
    }
}

/// Release builds: no hook (see the debug version above).
#[cfg(not(debug_assertions))]
#[inline(always)]
pub(crate) fn failpoint(_name: &str) {}

/// Write the keyring file atomically: temporary file (fsynced), rename, fsync of
/// the folder. At every instant the path holds the old or the new keyring whole.
pub(super) fn write_keyring(path: &Path, file: &KeyringFile) -> Result<(), VaultError> {
    let err = |e: std::io::Error| VaultError::Operation(format!("writing {}: {e}", path.display()));
    let bytes = file.to_bytes()?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = path.with_extension("tmp");
    failpoint("keyring-before-write");
    fsutil::write_file_synced(&tmp, &bytes).map_err(err)?;
    failpoint("keyring-after-tmp");
    std::fs::rename(&tmp, path).map_err(err)?;
    failpoint("keyring-after-rename");
    fsutil::sync_dir(dir).map_err(err)?;
    failpoint("keyring-after-sync");
    Ok(())
}

impl Vault {
    pub(super) fn swap_keyring(&self, next: Keyring) {
        *self
            .keyring
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(next);
    }

    /// Secrets per term, by scanning the records' envelope headers (where a
    /// decision rests on it: dropping terms). The key status reads the same
    /// figures from the counts the store keeps in memory.
    fn configs_by_term(&self) -> Result<(BTreeMap<u32, u64>, u64), VaultError> {
        let mut by_term = BTreeMap::new();
        let mut total = 0;
        for record in self.store.configs() {
            let (_, record) = record?;
            if let Some(term) = envelope_term(&record.secret_sealed) {
                *by_term.entry(term).or_insert(0) += 1;
            }
            total += 1;
        }
        Ok((by_term, total))
    }

    /// The keys' state. The per-term counts come from memory (`store::counts`),
    /// not from a scan: `/metrics` reads this on every scrape.
    pub fn key_status(&self) -> Result<KeyStatus, VaultError> {
        let keyring = self.keyring();
        let counts = self.store.counts();
        let (by_term, total) = (counts.configs_by_term, counts.configs);
        let active = keyring.active_term();
        let on_active = by_term.get(&active).copied().unwrap_or(0);
        let terms: Vec<TermStatus> = keyring
            .terms()
            .map(|term| TermStatus {
                term,
                active: term == active,
                created_at: keyring.term_created_at(term).unwrap_or_default(),
                configs: by_term.get(&term).copied().unwrap_or(0),
            })
            .collect();
        Ok(KeyStatus {
            active_term: active,
            active_term_encryptions: self.active_term_uses(),
            rotate_after_encryptions: self.rotate_after,
            reencryption_pending: terms.len() > 1,
            terms,
            total_configs: total,
            progress: if total == 0 {
                1.0
            } else {
                on_active as f64 / total as f64
            },
        })
    }

    /// Add a new data-key term and make it active. New writes use it at once;
    /// the maintenance task (or [`Vault::finish_reencryption`]) re-seals the rest.
    pub async fn rotate(&self, actor: Option<u64>, reason: &str) -> Result<u32, VaultError> {
        // Another node may have rotated since this one read the keyring: then
        // this node reloads it and rotates from the newest.
        self.with_current_keyring(|| self.rotate_once(actor, reason))
            .await
    }

    async fn rotate_once(&self, actor: Option<u64>, reason: &str) -> Result<u32, VaultError> {
        let _one_at_a_time = self.rotation.lock().await;
        let next = self.keyring().rotated()?;
        let term = next.active_term();
        let file = KeyringFile::wrap(&next, &self.kek)?;
        // Under the gate: a backup sees the keyring and the records consistently.
        self.store.exclusive(|| self.install_keyring(next, &file))?;
        self.reset_uses(term)?;
        let mut e = audit::event(now_micros(), actor, "key.rotate", None);
        e.detail = Some(format!("term {term} active ({reason})"));
        self.record(e).await?;
        self.wake.notify_one();
        Ok(term)
    }

    /// Re-seal every secret not under the active term, then drop the terms that
    /// no record uses any more. Returns how many records were re-sealed.
    pub async fn finish_reencryption(&self) -> Result<u64, VaultError> {
        self.finish_reencryption_with(&NoProgress).await
    }

    /// [`Vault::finish_reencryption`], reporting each record re-sealed.
    pub async fn finish_reencryption_with(
        &self,
        progress: &dyn Progress,
    ) -> Result<u64, VaultError> {
        let _one_at_a_time = self.rotation.lock().await;
        // One node of a cluster re-encrypts at a time (the others find the
        // duty held and leave it; a dead holder's lease expires).
        let Some(_duty) = self.duty("reencrypt") else {
            return Ok(0);
        };
        let mut resealed = 0u64;
        let mut in_batch = 0usize;
        // By the key a record is stored under: that is the domain it serves.
        let ids: Vec<u64> = self
            .store
            .configs()
            .filter_map(|r| r.ok())
            .filter(|(_, r)| envelope_term(&r.secret_sealed) != Some(self.keyring().active_term()))
            .map(|(domain_id, _)| domain_id)
            .collect();
        progress.start("re-encrypting secrets", Some(ids.len() as u64));
        for domain_id in ids {
            progress.advance(1);
            // Counted outside the record's transaction (see `seal_secret`).
            self.count_encryption(self.keyring().active_term(), true)?;
            let changed = self
                .store
                .reseal_config(domain_id, |record| {
                    let keyring = self.keyring();
                    if envelope_term(&record.secret_sealed) == Some(keyring.active_term()) {
                        return Ok(None);
                    }
                    if record.domain_id != domain_id {
                        // Copied from another domain's key: never re-sealed for
                        // either domain (`verify` names it); its term is kept.
                        return Err(VaultError::Operation(format!(
                            "the config stored under domain {domain_id} names domain {}",
                            record.domain_id
                        )));
                    }
                    let ctx = SealContext {
                        domain_id,
                        field: Field::ClientSecret,
                        origin: record.secret_origin.as_deref(),
                    };
                    let plain = keyring.open(&record.secret_sealed, ctx)?;
                    Ok::<_, VaultError>(Some(keyring.seal(&plain, ctx)?))
                })
                .map_err(|a| match a {
                    Abort::Store(e) => VaultError::Store(e),
                    Abort::Caller(e) => e,
                });
            let changed = match changed {
                Ok(changed) => changed,
                Err(e @ VaultError::Operation(_)) => {
                    tracing::error!(error = %e, "config not re-encrypted; run `oidcvault verify`");
                    false
                }
                Err(e) => return Err(e),
            };
            if changed {
                resealed += 1;
                in_batch += 1;
                if resealed == 1 {
                    self.store.durable().await?;
                    failpoint("reencrypt-after-first");
                }
                if in_batch >= REENCRYPT_BATCH {
                    self.store.durable().await?;
                    in_batch = 0;
                    tokio::task::yield_now().await;
                }
            }
        }
        self.store.durable().await?;
        // Sign-ins in flight too, before their term can be dropped.
        let sign_ins = self.reseal_sign_ins()?;
        self.store.durable().await?;
        if sign_ins > 0 {
            tracing::info!(resealed = sign_ins, "sign-ins in flight re-encrypted");
        }
        progress.finish(&format!("secrets re-encrypted ({resealed})"));
        self.drop_unused_terms().await?;
        Ok(resealed)
    }

    /// Drop every non-active term that no stored record uses. The scan and the
    /// keyring write happen while no write can apply, so no record sealed under a
    /// dropped term can slip in.
    async fn drop_unused_terms(&self) -> Result<Vec<u32>, VaultError> {
        let dropped = self.store.exclusive(|| {
            let keyring = self.keyring();
            let (by_term, _) = self.configs_by_term()?;
            let in_flight = self.sign_in_terms()?;
            let unused: Vec<u32> = keyring
                .terms()
                .filter(|t| {
                    *t != keyring.active_term()
                        && !by_term.contains_key(t)
                        && !in_flight.contains(t)
                })
                .collect();
            if unused.is_empty() {
                return Ok::<_, VaultError>(unused);
            }
            let mut next = (*keyring).clone();
            for t in &unused {
                if let Some(k) = next.without_term(*t) {
                    next = k;
                }
            }
            let file = KeyringFile::wrap(&next, &self.kek)?;
            self.install_keyring(next, &file)?;
            Ok(unused)
        })?;
        if !dropped.is_empty() {
            let mut e = audit::event(now_micros(), None, "key.drop", None);
            e.detail = Some(format!("terms {dropped:?} dropped: no record uses them"));
            self.record(e).await?;
        }
        Ok(dropped)
    }

    /// One round of background work: rotate when the active term is due,
    /// re-encrypt after a rotation (also one interrupted by a crash).
    pub async fn maintenance_step(&self) -> Result<(), VaultError> {
        if self.rotation_due() {
            let used = self.active_term_uses();
            self.rotate(
                None,
                &format!("automatic: {used} encryptions under the previous term"),
            )
            .await?;
        }
        if self.keyring().terms().count() > 1 {
            let n = self.finish_reencryption().await?;
            tracing::info!(
                resealed = n,
                term = self.keyring().active_term(),
                "re-encryption finished"
            );
        }
        Ok(())
    }

    /// The server's background task: key maintenance when woken (or every
    /// minute), audit retention every hour, expired sign-in state every round.
    ///
    /// Re-encryption (in [`Vault::finish_reencryption_with`]), pruning and
    /// sweeping are cluster duties (`Store::try_duty`): with a storage cluster, of
    /// all nodes only the one holding it runs it (two nodes never re-encrypt
    /// or prune at once, and a dead node's lease expires so another takes
    /// over); the embedded store always grants it. Every round first reloads
    /// the keyring if another node changed it.
    pub async fn run_maintenance(self: Arc<Self>) {
        let mut last_prune: Option<std::time::Instant> = None;
        let round = if self.store.is_shared() {
            Duration::from_secs(10)
        } else {
            Duration::from_secs(60)
        };
        loop {
            if let Err(e) = self.refresh_keyring() {
                tracing::warn!(error = %e, "could not check the keyring for changes; will retry");
            }
            if let Err(e) = self.maintenance_step().await {
                tracing::error!(error = %e, "key maintenance failed; will retry");
            }
            if last_prune.is_none_or(|t| t.elapsed() > Duration::from_secs(3600)) {
                if let Some(_duty) = self.duty("audit-prune") {
                    match self.prune_audit().await {
                        Ok(n) if n > 0 => tracing::info!(removed = n, "old audit events removed"),
                        Ok(_) => {}
                        Err(e) => tracing::error!(error = %e, "audit retention failed"),
                    }
                    last_prune = Some(std::time::Instant::now());
                }
            }
            // Sign-in state past its expiry (at most a round late).
            if let Some(_duty) = self.duty("sso-sweep") {
                match self.sweep_sign_ins() {
                    Ok(n) if n > 0 => {
                        tracing::debug!(removed = n, "expired sign-in state removed")
                    }
                    Ok(_) => {}
                    Err(e) => tracing::error!(error = %e, "sweeping sign-in state failed"),
                }
            }
            let _ = tokio::time::timeout(round, self.wake.notified()).await;
        }
    }

    /// The cluster duty `name` if this node may run it now (logged otherwise).
    pub(super) fn duty(&self, name: &str) -> Option<Box<dyn crate::store::DutyGuard>> {
        match self.store.try_duty(name) {
            Ok(Some(guard)) => Some(guard),
            Ok(None) => {
                tracing::debug!(duty = name, "another node holds this duty");
                None
            }
            Err(e) => {
                tracing::warn!(duty = name, error = %e, "could not take a cluster duty; will retry");
                None
            }
        }
    }

    /// Re-wrap the keyring under `new_secret` with a fresh salt (offline). No
    /// record is rewritten; the switch is one atomic rename (a keyring file) or
    /// one compare-and-swap (a storage cluster: every other node must then be
    /// restarted with the new master secret, see README).
    pub fn change_passphrase(
        &self,
        new_secret: &MasterSecret,
        kdf: KdfParams,
    ) -> Result<(), VaultError> {
        let kek = Kek::derive_new_salt(new_secret, kdf)?;
        let keyring = self.keyring();
        let file = KeyringFile::wrap(&keyring, &kek)?;
        self.store
            .exclusive(|| self.install_keyring((*keyring).clone(), &file))
    }

    /// Decode every record, open every secret (wiped at once) under the domain
    /// its record is stored under, and check the audit trail's chain.
    pub fn verify(&self) -> Result<VerifyReport, VaultError> {
        self.verify_with(&NoProgress)
    }

    /// [`Vault::verify`], reporting each phase and each config checked.
    pub fn verify_with(&self, progress: &dyn Progress) -> Result<VerifyReport, VaultError> {
        let mut report = VerifyReport::default();
        let keyring = self.keyring();
        progress.start("checking domains", None);
        match self.store.list_domains() {
            Ok(d) => report.domains = d.len() as u64,
            Err(e) => report.failures.push(e.to_string()),
        }
        progress.finish(&format!("domains checked ({})", report.domains));
        progress.start("checking configs and their secrets", None);
        for record in self.store.configs() {
            progress.advance(1);
            let (domain_id, record) = match record {
                Ok(r) => r,
                Err(e) => {
                    report.failures.push(e.to_string());
                    continue;
                }
            };
            report.configs += 1;
            if record.domain_id != domain_id {
                report.failures.push(format!(
                    "config record {} is stored under domain {domain_id} but names domain {}: \
                     copied from another domain",
                    record.id, record.domain_id
                ));
            }
            // The key it is stored under decides which domain's secret it must be.
            let ctx = SealContext {
                domain_id,
                field: Field::ClientSecret,
                origin: record.secret_origin.as_deref(),
            };
            match keyring.open(&record.secret_sealed, ctx) {
                Ok(plain) => {
                    drop(plain);
                    report.secrets_opened += 1;
                }
                Err(e) => report.failures.push(format!(
                    "config of domain {domain_id} (record {}): {e}",
                    record.id
                )),
            }
            if self.store.domain(domain_id).ok().flatten().is_none() {
                report.failures.push(format!(
                    "config record {} belongs to missing domain {domain_id}",
                    record.id
                ));
            }
        }
        progress.finish(&format!(
            "configs checked ({}, {} secrets opened)",
            report.configs, report.secrets_opened
        ));
        progress.start("checking tokens and applications", None);
        match self.store.list_tokens() {
            Ok(t) => report.tokens = t.len() as u64,
            Err(e) => report.failures.push(e.to_string()),
        }
        let apps = self.store.check_apps();
        report.apps = apps.apps;
        report.failures.extend(apps.failures);
        progress.finish(&format!(
            "tokens and applications checked ({} tokens, {} applications)",
            report.tokens, report.apps
        ));
        progress.start("checking the audit chain", None);
        match self.store.verify_audit_chain(&keyring.audit_key()) {
            Ok(chain) => {
                report.audit_events = chain.events;
                report.audit_legacy_events = chain.legacy;
                report.audit_pruned_events = chain.pruned;
                if let Some((id, why)) = chain.broken {
                    report.audit_broken_at = id;
                    report.failures.push(match id {
                        Some(id) => format!("audit trail broken at event {id}: {why}"),
                        None => format!("audit trail: {why}"),
                    });
                }
            }
            Err(e) => report.failures.push(e.to_string()),
        }
        progress.finish(&format!(
            "audit chain checked ({} events)",
            report.audit_events
        ));
        Ok(report)
    }

    /// Domain of a config (for messages).
    pub fn domain_name(&self, id: u64) -> Option<Domain> {
        self.store.domain(id).ok().flatten().map(Domain::from)
    }
}
