//! Load-benchmark baseline for the etcd backend, the *etcd ceiling*: actix-web
//! and `etcd-client` making, per request, the etcd calls oidcvault's etcd
//! engine makes for the same request (src/store/engine/etcd, store in shared
//! mode), and nothing else: no authentication, no encryption, no validation,
//! no logging, no record encoding.
//!
//! - GET: three linearizable range requests one after the other, as
//!   oidcvault's GET of a config makes them: the token record
//!   (authentication), the domain record (the caller's domain), the config
//!   record; answers the stored document (404 when none).
//! - POST: the token and domain reads as for a GET, then, under a
//!   process-wide write-order lock (oidcvault's `writer_turn`, held across the
//!   transaction), the STM transaction of `Store::upsert_config` in shared
//!   mode: five reads (`meta/next_id/audit` linearizable, which fixes the
//!   revision R; `meta/audit/head`, `domains/<d>`, `configs/<d>`,
//!   `meta/keyring` at R), then one Txn comparing the mod revision of the five
//!   keys and putting the audit event, the config, the anchor and the next
//!   audit id; run again after a jittered pause (1 to 64 ms, at most 200 runs)
//!   when a compare fails, as the engine does. A POST for a domain with no
//!   config yet also puts its token and domain records (so that later reads
//!   find them, as in oidcvault after the populate step).
//!
//! Keys are `<prefix><tree>/<key>` as oidcvault's (default prefix
//! `/ceiling/`, beside oidcvault's `/oidcvault/` in the same cluster); the
//! domain name stands for the 8-byte ids oidcvault uses as keys. Values have
//! about the size of oidcvault's records. The client runs on its own tokio
//! runtime with two workers (as the engine's); handlers await it without
//! blocking the actix worker (oidcvault's engine blocks the worker thread for
//! the call: that difference is part of what this ceiling measures). Workers:
//! one per core, as oidcvault's default.
//!
//! `BASELINE_ETCD_WRITE_LOCK=off` in the environment: POSTs without the
//! write-order lock (each runs its transaction at once; to measure the lock).
//!
//! `baseline_etcd ENDPOINTS [BIND] [PREFIX]` (ENDPOINTS comma-separated, e.g.
//! `http://127.0.0.1:2379,http://127.0.0.1:2381`); prints
//! `listening on http://ADDR` on stderr.
// Tests and benchmarks may unwrap: a panic is their failure report.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]
#![forbid(unsafe_code)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use actix_web::{web, HttpRequest, HttpResponse};
use etcd_client::{Client, Compare, CompareOp, GetOptions, GetResponse, Txn, TxnOp};
use rand::Rng;

#[path = "common/baseline.rs"]
mod baseline;
use baseline::{serve, DOC};

/// About the size of an audit event of a config update (bincode, chained, MAC'd).
const EVENT: [u8; 200] = [7; 200];
/// About the size of a token record and of a domain record.
const TOKEN: [u8; 64] = [1; 64];
const DOMAIN: [u8; 64] = [2; 64];
/// About the size of the keyring as stored in `meta` (sealed by the master key).
const KEYRING: [u8; 160] = [3; 160];
/// Runs of a transaction before giving up (the engine's MAX_ATTEMPTS).
const MAX_ATTEMPTS: u32 = 200;

struct State {
    client: Client,
    rt: tokio::runtime::Handle,
    prefix: String,
    /// oidcvault's write-order lock: one audited write in flight per process.
    turn: tokio::sync::Mutex<()>,
    /// False with `BASELINE_ETCD_WRITE_LOCK=off` (to measure what the lock does).
    write_lock: bool,
    seq: AtomicU64,
}

type EtcdResult<T> = Result<T, String>;

impl State {
    fn key(&self, tree: &str, key: &[u8]) -> Vec<u8> {
        let mut k = Vec::with_capacity(self.prefix.len() + tree.len() + 1 + key.len());
        k.extend_from_slice(self.prefix.as_bytes());
        k.extend_from_slice(tree.as_bytes());
        k.push(b'/');
        k.extend_from_slice(key);
        k
    }

    /// One range request on the client's runtime; linearizable unless `rev`.
    async fn get(&self, key: Vec<u8>, rev: Option<i64>) -> EtcdResult<GetResponse> {
        let mut kv = self.client.kv_client();
        let opts = rev.map(|r| GetOptions::new().with_revision(r));
        self.rt
            .spawn(async move { kv.get(key, opts).await })
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())
    }

    async fn txn(&self, txn: Txn) -> EtcdResult<bool> {
        let mut kv = self.client.kv_client();
        self.rt
            .spawn(async move { kv.txn(txn).await })
            .await
            .map_err(|e| e.to_string())?
            .map(|r| r.succeeded())
            .map_err(|e| e.to_string())
    }
}

/// (mod revision, 0 when absent; value) of a response's first key.
fn first(resp: &mut GetResponse) -> (i64, Option<Vec<u8>>) {
    match resp.take_kvs().into_iter().next() {
        Some(kv) => (kv.mod_revision(), Some(kv.into_key_value().1)),
        None => (0, None),
    }
}

fn domain(req: &HttpRequest) -> Vec<u8> {
    req.headers()
        .get("X-Enterprise-Domain")
        .map(|v| v.as_bytes().to_vec())
        .unwrap_or_else(|| b"default".to_vec())
}

fn json(body: impl actix_web::body::MessageBody + 'static) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(body)
}

fn unavailable(e: &str) -> HttpResponse {
    eprintln!("etcd: {e}");
    HttpResponse::ServiceUnavailable().finish()
}

async fn get(req: HttpRequest, state: web::Data<State>) -> HttpResponse {
    let d = domain(&req);
    // Authentication, then the caller's domain, then the config: one after the other.
    for tree in ["tokens", "domains"] {
        if let Err(e) = state.get(state.key(tree, &d), None).await {
            return unavailable(&e);
        }
    }
    match state.get(state.key("configs", &d), None).await {
        Ok(mut r) => match first(&mut r).1 {
            Some(v) => json(v.get(8..).unwrap_or_default().to_vec()),
            None => HttpResponse::NotFound().finish(),
        },
        Err(e) => unavailable(&e),
    }
}

async fn post(req: HttpRequest, body: web::Bytes, state: web::Data<State>) -> HttpResponse {
    std::hint::black_box(body);
    let d = domain(&req);
    for tree in ["tokens", "domains"] {
        if let Err(e) = state.get(state.key(tree, &d), None).await {
            return unavailable(&e);
        }
    }
    let _turn = match state.write_lock {
        true => Some(state.turn.lock().await),
        false => None,
    };
    for attempt in 0..MAX_ATTEMPTS {
        match upsert_once(&state, &d).await {
            Ok(true) => return json(DOC),
            Ok(false) => backoff(attempt).await,
            Err(e) => return unavailable(&e),
        }
    }
    unavailable("contention")
}

/// One run of the transaction: `Ok(false)` when a compare failed.
async fn upsert_once(state: &State, d: &[u8]) -> EtcdResult<bool> {
    let k_next = state.key("meta", b"next_id/audit");
    let k_head = state.key("meta", b"audit/head");
    let k_domain = state.key("domains", d);
    let k_config = state.key("configs", d);
    let k_keyring = state.key("meta", b"keyring");
    // The first read fixes the revision every later read is made at.
    let mut r = state.get(k_next.clone(), None).await?;
    let rev = r.header().map(|h| h.revision());
    let (next_rev, next) = first(&mut r);
    let mut reads = vec![(k_next.clone(), next_rev)];
    let mut values = Vec::new();
    for k in [&k_head, &k_domain, &k_config, &k_keyring] {
        let (m, v) = first(&mut state.get(k.clone(), rev).await?);
        reads.push((k.clone(), m));
        values.push(v);
    }
    let id = next
        .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
        .map_or(0, u64::from_be_bytes);
    let mut value = Vec::with_capacity(8 + DOC.len());
    value.extend_from_slice(&state.seq.fetch_add(1, Ordering::Relaxed).to_be_bytes());
    value.extend_from_slice(DOC.as_bytes());
    let mut anchor = id.to_be_bytes().to_vec();
    anchor.extend_from_slice(&[9; 64]);
    let mut ops = vec![
        TxnOp::put(state.key("audit", &id.to_be_bytes()), EVENT.to_vec(), None),
        TxnOp::put(k_config, value, None),
        TxnOp::put(k_head, anchor, None),
        TxnOp::put(k_next, (id + 1).to_be_bytes().to_vec(), None),
    ];
    if values[2].is_none() {
        // Creation: the records the reads of later requests find.
        ops.push(TxnOp::put(k_domain, DOMAIN.to_vec(), None));
        ops.push(TxnOp::put(state.key("tokens", d), TOKEN.to_vec(), None));
    }
    let compares: Vec<Compare> = reads
        .into_iter()
        .map(|(k, m)| Compare::mod_revision(k, CompareOp::Equal, m))
        .collect();
    state.txn(Txn::new().when(compares).and_then(ops)).await
}

/// The engine's pause: about 1 ms growing to about 64 ms, jittered.
async fn backoff(attempt: u32) {
    let cap = 1u64 << attempt.min(6);
    let micros = rand::thread_rng().gen_range(0..cap * 1000);
    actix_web::rt::time::sleep(Duration::from_micros(micros)).await;
}

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let endpoints: Vec<String> = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:2379".into())
        .split(',')
        .map(str::to_owned)
        .collect();
    let bind = args.next().unwrap_or_else(|| "127.0.0.1:0".into());
    let prefix = args.next().unwrap_or_else(|| "/ceiling/".into());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("etcd")
        .enable_all()
        .build()?;
    let client = rt
        .block_on(async {
            let options = etcd_client::ConnectOptions::new()
                .with_timeout(Duration::from_secs(5))
                .with_connect_timeout(Duration::from_secs(5))
                .with_require_leader(true);
            let mut client = Client::connect(endpoints, Some(options)).await?;
            // The keyring every POST compares (the vault's guard).
            let mut kv = client.kv_client();
            let key = format!("{prefix}meta/keyring");
            kv.put(key, KEYRING.to_vec(), None).await?;
            client.status().await.map(|_| client)
        })
        .map_err(std::io::Error::other)?;
    let state = web::Data::new(State {
        client,
        rt: rt.handle().clone(),
        prefix,
        turn: tokio::sync::Mutex::new(()),
        write_lock: std::env::var("BASELINE_ETCD_WRITE_LOCK").as_deref() != Ok("off"),
        seq: AtomicU64::new(0),
    });
    let result = serve(
        &bind,
        move |cfg| {
            cfg.app_data(state.clone());
        },
        get,
        post,
    );
    rt.shutdown_background();
    result
}
