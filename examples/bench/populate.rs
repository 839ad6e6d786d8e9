//! The loader: N domains, each with a domain token and the seed's example config,
//! written through the library (`Vault`, the real store and its group commit) as
//! fast as it goes: two threads, each with hundreds of operations in flight, so
//! one flush + fdatasync serves hundreds of writes.

use std::path::{Path, PathBuf};
use std::time::Instant;

use futures_util::StreamExt;
use oidcvault::config::Config;
use oidcvault::crypto::SecretString;
use oidcvault::vault::{ConfigPatch, TokenTarget};
use oidcvault::Vault;

use crate::util::{Cred, PASSPHRASE};

/// Operations in flight per thread.
const IN_FLIGHT: usize = 256;
const THREADS: usize = 2;

pub fn env() -> Vec<(String, String)> {
    vec![(
        "OIDCVAULT_MASTER_PASSPHRASE".to_owned(),
        PASSPHRASE.to_owned(),
    )]
}

/// A home folder for oidcvault: `config.toml` (shipped defaults but for the
/// listen address) with `data/` beside it.
pub fn write_home(home: &Path) -> Result<PathBuf, String> {
    std::fs::create_dir_all(home).map_err(|e| format!("{}: {e}", home.display()))?;
    let path = home.join("config.toml");
    crate::util::write(
        &path,
        "# Shipped defaults (Argon2id 64 MiB/3/4, 16 MiB cache, one worker per core,\n\
         # info logs), listening on a free port.\n\
         [server]\nbind = \"127.0.0.1:0\"\n[storage]\ndata_dir = \"data\"\n",
    )?;
    Ok(path)
}

pub fn domain_name(i: usize) -> String {
    format!("tenant{i:06}.example.com")
}

pub struct Loaded {
    pub creds: Vec<Cred>,
    pub seconds: f64,
    pub kdf_ms: u128,
}

/// Create domains `0..n` with a token and a config each.
pub fn populate(config_path: &Path, n: usize) -> Result<Loaded, String> {
    let env = env();
    let config = Config::load_with_env(Some(config_path), &env).map_err(|e| e.to_string())?;
    let (vault, report) = Vault::open(&config, &env).map_err(|e| e.to_string())?;
    let started = Instant::now();
    let vault = &vault;
    let results: Vec<Result<Vec<Cred>, String>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                s.spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .build()
                        .map_err(|e| e.to_string())?;
                    rt.block_on(async {
                        let ops = futures_util::stream::iter((t..n).step_by(THREADS))
                            .map(|i| one(vault, i))
                            .buffer_unordered(IN_FLIGHT);
                        ops.collect::<Vec<_>>()
                            .await
                            .into_iter()
                            .collect::<Result<Vec<_>, _>>()
                    })
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("loader thread panicked".into()))
            })
            .collect()
    });
    let mut creds = Vec::with_capacity(n);
    for r in results {
        creds.extend(r?);
    }
    let seconds = started.elapsed().as_secs_f64();
    vault.shutdown();
    creds.sort_by(|a, b| a.domain.cmp(&b.domain));
    Ok(Loaded {
        creds,
        seconds,
        kdf_ms: report.kdf_millis,
    })
}

async fn one(vault: &Vault, i: usize) -> Result<Cred, String> {
    let name = domain_name(i);
    let domain = vault
        .add_domain(&name, None)
        .await
        .map_err(|e| e.to_string())?;
    let (_, token) = vault
        .create_token(&TokenTarget::Domain(name.clone()), None)
        .await
        .map_err(|e| e.to_string())?;
    let patch = ConfigPatch {
        client_id: Some("enterprise-app-123".into()),
        client_secret: Some(SecretString::new("s3cr3tP@ssw0rd!".into())),
        ..ConfigPatch::default()
    };
    vault
        .upsert_config(&domain, patch, None)
        .await
        .map_err(|e| e.to_string())?;
    Ok(Cred {
        domain: name,
        token: token.expose().to_owned(),
    })
}
