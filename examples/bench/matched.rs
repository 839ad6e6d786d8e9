//! The matched baseline's data (`examples/baseline_matched.rs`): a copy of
//! oidcvault's own populated store, the ids each domain's requests read, and
//! the real size of a `config.update` audit event.
//!
//! Before the servers start (the store is closed), one config update is made
//! through the library exactly as a POST makes it (the seed's example body, by
//! the domain's token), so that the newest audit event is a real
//! `config.update` (bincode of its `AuditRecord` chained with its MAC); then
//! the store is read with `SledEngine` for the record sizes, and copied.

use std::path::{Path, PathBuf};

use oidcvault::config::Config;
use oidcvault::crypto::SecretString;
use oidcvault::store::engine::{all, Engine, Tree};
use oidcvault::store::SledEngine;
use oidcvault::vault::{Caller, ConfigPatch};
use oidcvault::Vault;
use serde_json::{json, Value};

use crate::populate;
use crate::util::Cred;

/// What `baseline_matched` is started with, and the sizes it reproduces.
pub struct Prepared {
    pub data_dir: PathBuf,
    pub seed: PathBuf,
    pub event_bytes: usize,
    /// Sizes of the records of the first domain (for load.json).
    pub sizes: Value,
}

pub fn prepare(config_path: &Path, creds: &[Cred], work: &Path) -> Result<Prepared, String> {
    let env = populate::env();
    let config = Config::load_with_env(Some(config_path), &env).map_err(|e| e.to_string())?;
    let (vault, _) = Vault::open(&config, &env).map_err(|e| e.to_string())?;
    let mut seed = String::new();
    let mut first = None;
    for c in creds {
        match vault.authenticate(&c.token).map_err(|e| e.to_string())? {
            Some(Caller::Domain {
                token_id,
                domain_id,
            }) => {
                seed.push_str(&format!("{} {token_id} {domain_id}\n", c.domain));
                first.get_or_insert((c.domain.clone(), token_id, domain_id));
            }
            other => return Err(format!("{}: token authenticates as {other:?}", c.domain)),
        }
    }
    let (name, token_id, domain_id) = first.ok_or("no domains")?;
    // One update as the POST makes it, for a real `config.update` event.
    let domain = vault
        .domain_by_name(&name)
        .map_err(|e| e.to_string())?
        .ok_or("the first domain is missing")?;
    let patch = ConfigPatch {
        client_id: Some("enterprise-app-123".into()),
        client_secret: Some(SecretString::new("s3cr3tP@ssw0rd!".into())),
        ..ConfigPatch::default()
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(|e| e.to_string())?;
    let (_, created) = rt
        .block_on(vault.upsert_config(&domain, patch, Some(token_id)))
        .map_err(|e| e.to_string())?;
    if created {
        return Err("the measuring update created a config".into());
    }
    vault.shutdown();
    drop(vault);

    let data = config.data_dir();
    let engine = SledEngine::open(&data, 16 << 20, None, false).map_err(|e| format!("{e}"))?;
    let size = |tree: Tree, id: u64| -> Result<usize, String> {
        Ok(engine
            .get(tree, &id.to_be_bytes())
            .map_err(|e| e.to_string())?
            .ok_or(format!("no {} record {id}", tree.name()))?
            .len())
    };
    let (token, domain_rec, config_rec) = (
        size(Tree::Tokens, token_id)?,
        size(Tree::Domains, domain_id)?,
        size(Tree::Configs, domain_id)?,
    );
    let last = engine
        .scan(Tree::Audit, all(), 1, true)
        .map_err(|e| e.to_string())?;
    let event_bytes = last.first().map(|(_, v)| v.len()).ok_or("no audit event")?;
    let audit_events = engine.len(Tree::Audit).map_err(|e| e.to_string())?;
    engine.shutdown();
    drop(engine);

    let copy = work.join("matched-data");
    copy_dir(&data, &copy)?;
    let seed_path = work.join("matched.seed");
    crate::util::write(&seed_path, &seed)?;
    Ok(Prepared {
        data_dir: copy,
        seed: seed_path,
        event_bytes,
        sizes: json!({
            "token_record": token, "domain_record": domain_rec, "config_record": config_rec,
            "config_update_event": event_bytes, "audit_events_at_start": audit_events,
        }),
    })
}

/// `from` copied into `to`, recursively (regular files and folders).
pub fn copy_dir(from: &Path, to: &Path) -> Result<(), String> {
    std::fs::create_dir_all(to).map_err(|e| format!("{}: {e}", to.display()))?;
    let entries = std::fs::read_dir(from).map_err(|e| format!("{}: {e}", from.display()))?;
    for e in entries {
        let e = e.map_err(|e| e.to_string())?;
        let dest = to.join(e.file_name());
        let kind = e.file_type().map_err(|e| e.to_string())?;
        if kind.is_dir() {
            copy_dir(&e.path(), &dest)?;
        } else if kind.is_file() {
            std::fs::copy(e.path(), &dest)
                .map_err(|err| format!("{}: {err}", e.path().display()))?;
        }
    }
    Ok(())
}
