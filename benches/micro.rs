//! Micro-benchmarks (criterion), each beside a baseline measured in the same run:
//!
//! | group | oidcvault | baseline |
//! |---|---|---|
//! | `seal_64B` / `open_64B` | `Keyring::seal` / `open` (envelope, AAD, zeroizing) | bare AES-256-GCM, same key size, no AAD |
//! | `argon2id` | `KdfParams::derive` at the parameters of the shipped `config.toml` | the `argon2` crate called directly with the same parameters |
//! | `token_verify` | `Vault::authenticate` (parse, store lookup, decode, constant-time compare) and `token::parse` alone | SHA-256 of 32 bytes; SHA-256 plus one raw sled `get` |
//! | `store_write_x1` | `Store::upsert_config` through the group commit (one writer) | raw sled `insert` + `flush` + `fdatasync` |
//! | `store_write_x32` | 32 concurrent `upsert_config` (one group commit serves them) | 32 raw sled inserts + one `flush` + `fdatasync` |
//! | `record_read` | `Store::config` (sled get + record decode) | raw sled `get` of a value of the same size |
//!
//! `cargo bench --bench micro` runs them all, then prints the ratios
//! oidcvault / baseline and writes them to `target/bench-results/micro.json`.
//! `scripts/bench.sh` runs this with the load and scale benchmarks.
// Tests and benchmarks may unwrap: a panic is their failure report.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

use std::collections::BTreeMap;
use std::fs::File;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::Duration;

use aes_gcm::aead::{Aead, AeadCore, KeyInit};
use aes_gcm::Aes256Gcm;
use criterion::Criterion;
use oidcvault::config::Config;
use oidcvault::crypto::{Field, KdfParams, Keyring, MasterSecret, SealContext};
use oidcvault::store::{AuditRecord, ConfigRecord, Store, StoreOptions};
use oidcvault::vault::TokenTarget;
use oidcvault::Vault;
use rand::rngs::OsRng;
use rand::RngCore;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

const PASSPHRASE: &str = "micro-benchmark passphrase";
const SECRET_64: [u8; 64] = [0x5a; 64];

fn ctx(domain_id: u64) -> SealContext<'static> {
    SealContext {
        domain_id,
        field: Field::ClientSecret,
        origin: Some("https://idp.example.com"),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("tokio runtime")
}

fn crypto(c: &mut Criterion) {
    let keyring = Keyring::generate();
    let bare = Aes256Gcm::new(&Aes256Gcm::generate_key(&mut OsRng));

    let mut g = c.benchmark_group("seal_64B");
    g.bench_function("oidcvault", |b| {
        b.iter(|| black_box(keyring.seal(black_box(&SECRET_64), ctx(42)).ok()))
    });
    g.bench_function("baseline", |b| {
        b.iter(|| {
            let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
            black_box(bare.encrypt(&nonce, black_box(&SECRET_64[..])).ok())
        })
    });
    g.finish();

    let sealed = keyring.seal(&SECRET_64, ctx(42)).expect("seal");
    let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
    let bare_ct = bare.encrypt(&nonce, &SECRET_64[..]).expect("encrypt");
    let mut g = c.benchmark_group("open_64B");
    g.bench_function("oidcvault", |b| {
        b.iter(|| black_box(keyring.open(black_box(&sealed), ctx(42)).ok()))
    });
    g.bench_function("baseline", |b| {
        b.iter(|| black_box(bare.decrypt(&nonce, black_box(&bare_ct[..])).ok()))
    });
    g.finish();
}

/// The Argon2id parameters of the shipped `config.toml` (what a new install uses).
fn configured_kdf() -> KdfParams {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.toml");
    Config::load_with_env(Some(&path), &[])
        .expect("load config.toml")
        .kdf_params()
}

fn kdf(c: &mut Criterion) {
    let params = configured_kdf();
    let secret = MasterSecret::new(Zeroizing::new(PASSPHRASE.as_bytes().to_vec()));
    let mut salt = [0u8; KdfParams::SALT_LEN];
    OsRng.fill_bytes(&mut salt);
    let mut g = c.benchmark_group("argon2id");
    g.sample_size(10).measurement_time(Duration::from_secs(8));
    g.bench_function("oidcvault", |b| {
        b.iter(|| black_box(params.derive(&secret, &salt).ok()))
    });
    g.bench_function("baseline", |b| {
        let argon = argon2::Argon2::new(
            argon2::Algorithm::Argon2id,
            argon2::Version::V0x13,
            argon2::Params::new(params.m_cost_kib, params.t_cost, params.p_cost, Some(32))
                .expect("params"),
        );
        b.iter(|| {
            let mut out = [0u8; 32];
            black_box(argon.hash_password_into(PASSPHRASE.as_bytes(), &salt, &mut out))
        })
    });
    g.finish();
}

/// A vault in `dir` with the cheapest Argon2 the appliance accepts (the KDF is
/// measured on its own above).
fn open_vault(dir: &Path) -> Vault {
    let path = dir.join("config.toml");
    std::fs::write(
        &path,
        "[storage]\ndata_dir = \"data\"\n\
         [security]\nkdf_memory_kib = 19456\nkdf_iterations = 2\nkdf_parallelism = 1\n",
    )
    .expect("write config");
    let env = vec![(
        "OIDCVAULT_MASTER_PASSPHRASE".to_owned(),
        PASSPHRASE.to_owned(),
    )];
    let config = Config::load_with_env(Some(&path), &env).expect("config");
    Vault::open(&config, &env).expect("open vault").0
}

/// A raw sled database with the same cache size as the appliance's default.
fn raw_sled(dir: &Path) -> (sled::Db, File) {
    let db = sled::Config::new()
        .path(dir)
        .cache_capacity(64 << 20)
        .open()
        .expect("sled");
    let file = File::open(dir.join("db")).expect("sled db file");
    (db, file)
}

fn tokens(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let vault = open_vault(dir.path());
    let rt = runtime();
    let token = rt.block_on(async {
        vault.add_domain("acme.com", None).await.expect("domain");
        // A few hundred other tokens, so the lookup is not in a one-entry tree.
        for _ in 0..300 {
            vault
                .create_token(&TokenTarget::Operator, None)
                .await
                .expect("token");
        }
        let (_, t) = vault
            .create_token(&TokenTarget::Domain("acme.com".into()), None)
            .await
            .expect("token");
        t.expose().to_owned()
    });
    let raw_dir = tempfile::tempdir().expect("tempdir");
    let (raw, _) = raw_sled(raw_dir.path());
    for id in 0u64..301 {
        raw.insert(id.to_be_bytes(), vec![7u8; 60]).expect("insert");
    }
    let mut random = [0u8; 32];
    OsRng.fill_bytes(&mut random);

    let mut g = c.benchmark_group("token_verify");
    g.bench_function("oidcvault", |b| {
        b.iter(|| {
            let caller = vault.authenticate(black_box(&token)).expect("auth");
            assert!(caller.is_some());
            black_box(caller)
        })
    });
    g.bench_function("oidcvault_parse_only", |b| {
        b.iter(|| black_box(oidcvault::crypto::token::parse(black_box(&token)).ok()))
    });
    g.bench_function("baseline", |b| {
        b.iter(|| black_box(Sha256::digest(black_box(random))))
    });
    g.bench_function("baseline_sha256_and_sled_get", |b| {
        b.iter(|| {
            let h = Sha256::digest(black_box(random));
            let v = raw.get(black_box(300u64.to_be_bytes())).expect("get");
            black_box((h, v))
        })
    });
    g.finish();
    vault.shutdown();
}

fn record(domain_id: u64, sealed: &[u8], id: u64, now: i64) -> ConfigRecord {
    ConfigRecord {
        id,
        domain_id,
        client_id: "enterprise-app-123".into(),
        secret_sealed: sealed.to_vec(),
        secret_masked: "********0rd!".into(),
        discovery_url: None,
        authorization_endpoint: None,
        token_endpoint: None,
        userinfo_endpoint: None,
        created_at: now,
        updated_at: now,
        discovered_endpoints: Vec::new(),
        secret_origin: Some("https://idp.example.com".into()),
    }
}

/// The audit event each store write carries, as the vault's writes do.
fn event() -> AuditRecord {
    AuditRecord {
        at: 1,
        actor: None,
        action: "config.update".into(),
        domain_id: None,
        domain: None,
        fields: vec!["client_secret".into()],
        secret_fingerprint: None,
        detail: None,
    }
}

fn store(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(
        &dir.path().join("data"),
        &StoreOptions {
            cache_capacity_bytes: 64 << 20,
            auth_cache_bytes: 4 << 20,
            commit_metrics: None,
        },
    )
    .expect("store");
    let rt = runtime();
    let keyring = Keyring::generate();
    // Events chained and MAC'd, as the vault opens its store.
    store
        .set_audit_mac(std::sync::Arc::new(keyring.audit_key()))
        .expect("audit MAC");
    let sealed = keyring.seal(b"s3cr3tP@ssw0rd!", ctx(1)).expect("seal");
    let ids: Vec<u64> = rt.block_on(async {
        let mut ids = Vec::new();
        for i in 0..64 {
            let d = store
                .create_domain(&format!("tenant{i:06}.example.com"), 1, |_| event())
                .await
                .expect("domain");
            store
                .upsert_config(d.id, |_, id| {
                    Ok::<_, std::convert::Infallible>((record(d.id, &sealed, id, 1), event()))
                })
                .await
                .expect("config");
            ids.push(d.id);
        }
        ids
    });
    // About the encoded size of such a record, for the raw baseline's values.
    let value_len = sealed.len() + 45;
    let raw_dir = tempfile::tempdir().expect("tempdir");
    let (raw, raw_file) = raw_sled(raw_dir.path());
    for id in &ids {
        raw.insert(id.to_be_bytes(), vec![3u8; value_len])
            .expect("insert");
    }
    raw.flush().expect("flush");

    let mut g = c.benchmark_group("store_write_x1");
    g.sample_size(30).measurement_time(Duration::from_secs(6));
    let mut n: i64 = 2;
    g.bench_function("oidcvault", |b| {
        b.iter(|| {
            n += 1;
            let id = ids[0];
            rt.block_on(store.upsert_config(id, |cur, cid| {
                let mut r = record(id, &sealed, cid, 1);
                r.created_at = cur.map_or(n, |c| c.created_at);
                r.updated_at = n;
                Ok::<_, std::convert::Infallible>((r, event()))
            }))
            .expect("upsert")
        })
    });
    // Baseline values change on every write, as the records do: sled skips an
    // insert of the value already stored.
    let mut seq: u64 = 0;
    let mut value = move || {
        seq += 1;
        let mut v = vec![4u8; value_len];
        v[..8].copy_from_slice(&seq.to_be_bytes());
        v
    };
    g.bench_function("baseline", |b| {
        b.iter(|| {
            raw.insert(ids[0].to_be_bytes(), value()).expect("insert");
            raw.flush().expect("flush");
            raw_file.sync_data().expect("fdatasync");
        })
    });
    g.finish();

    let sealed = &sealed;
    let mut g = c.benchmark_group("store_write_x32");
    g.sample_size(30).measurement_time(Duration::from_secs(6));
    g.bench_function("oidcvault", |b| {
        b.iter(|| {
            n += 1;
            let writes = ids.iter().take(32).map(|&id| {
                store.upsert_config(id, move |cur, cid| {
                    let mut r = record(id, sealed, cid, 1);
                    r.created_at = cur.map_or(n, |c| c.created_at);
                    r.updated_at = n;
                    Ok::<_, std::convert::Infallible>((r, event()))
                })
            });
            for r in rt.block_on(futures_util::future::join_all(writes)) {
                r.expect("upsert");
            }
        })
    });
    g.bench_function("baseline", |b| {
        b.iter(|| {
            for id in ids.iter().take(32) {
                raw.insert(id.to_be_bytes(), value()).expect("insert");
            }
            raw.flush().expect("flush");
            raw_file.sync_data().expect("fdatasync");
        })
    });
    g.finish();

    let mut g = c.benchmark_group("record_read");
    g.bench_function("oidcvault", |b| {
        b.iter(|| black_box(store.config(black_box(ids[7])).expect("read")))
    });
    g.bench_function("baseline", |b| {
        b.iter(|| black_box(raw.get(black_box(ids[7].to_be_bytes())).expect("get")))
    });
    g.finish();
    store.shutdown();
}

/// Where criterion keeps its estimates (its own rule: `CRITERION_HOME`, else
/// `CARGO_TARGET_DIR/criterion`, else `target/criterion` of this package).
fn criterion_dir() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return PathBuf::from(home);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("criterion")
}

/// Median time in ns of one benchmark of this run, from criterion's estimates.
fn median_ns(group: &str, function: &str) -> Option<f64> {
    let path = criterion_dir()
        .join(group)
        .join(function)
        .join("new/estimates.json");
    let text = std::fs::read_to_string(path).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["median"]["point_estimate"].as_f64()
}

/// Print oidcvault / baseline for every group measured, and write them to
/// `target/bench-results/micro.json`.
fn summary(started: std::time::SystemTime) {
    let groups: &[(&str, &[&str])] = &[
        ("seal_64B", &["baseline"]),
        ("open_64B", &["baseline"]),
        ("argon2id", &["baseline"]),
        (
            "token_verify",
            &["baseline", "baseline_sha256_and_sled_get"],
        ),
        ("store_write_x1", &["baseline"]),
        ("store_write_x32", &["baseline"]),
        ("record_read", &["baseline"]),
    ];
    let fresh = |group: &str, function: &str| -> bool {
        let path = criterion_dir()
            .join(group)
            .join(function)
            .join("new/estimates.json");
        std::fs::metadata(path)
            .and_then(|m| m.modified())
            .is_ok_and(|t| t >= started)
    };
    let mut out = BTreeMap::new();
    println!("\n== micro-benchmarks: median time, oidcvault / baseline (same run)");
    for (group, baselines) in groups {
        if !fresh(group, "oidcvault") {
            continue;
        }
        let Some(ours) = median_ns(group, "oidcvault") else {
            continue;
        };
        let mut entry = serde_json::Map::new();
        entry.insert("oidcvault_ns".into(), ours.into());
        for base in *baselines {
            let Some(theirs) = median_ns(group, base).filter(|_| fresh(group, base)) else {
                continue;
            };
            println!(
                "{group:<16} oidcvault {:>12}  {base:<30} {:>12}  ratio {:>6.2}",
                human(ours),
                human(theirs),
                ours / theirs
            );
            entry.insert(format!("{base}_ns"), theirs.into());
            entry.insert(format!("ratio_vs_{base}"), (ours / theirs).into());
        }
        out.insert(group.to_string(), serde_json::Value::Object(entry));
    }
    if let Some(parse) = median_ns("token_verify", "oidcvault_parse_only") {
        if fresh("token_verify", "oidcvault_parse_only") {
            println!(
                "{:<16} token::parse alone {:>12}",
                "token_verify",
                human(parse)
            );
            if let Some(serde_json::Value::Object(m)) = out.get_mut("token_verify") {
                m.insert("oidcvault_parse_only_ns".into(), parse.into());
            }
        }
    }
    if out.is_empty() {
        return;
    }
    let dir = criterion_dir()
        .parent()
        .map(|t| t.join("bench-results"))
        .unwrap_or_else(|| PathBuf::from("target/bench-results"));
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join("micro.json");
    match std::fs::write(
        &path,
        serde_json::to_string_pretty(&out).unwrap_or_default(),
    ) {
        Ok(()) => println!("written to {}", path.display()),
        Err(e) => eprintln!("cannot write {}: {e}", path.display()),
    }
}

fn human(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.2} µs", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}

fn main() {
    let started = std::time::SystemTime::now();
    let mut c = Criterion::default().configure_from_args();
    crypto(&mut c);
    kdf(&mut c);
    tokens(&mut c);
    store(&mut c);
    c.final_summary();
    let test_mode = std::env::args().any(|a| a == "--test" || a == "--list");
    if !test_mode {
        summary(started);
    }
}
