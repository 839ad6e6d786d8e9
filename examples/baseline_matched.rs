//! Load-benchmark baseline 3, the *matched baselines*: exactly the storage work
//! oidcvault's GET and POST of an existing config do, on a copy of oidcvault's
//! own populated store, and nothing else: no authentication, no encryption, no
//! validation, no logging. oidcvault / this = what our code costs; the two
//! ceilings (`baseline_http`, `baseline_store`) say what the whole product
//! costs.
//!
//! - GET: the three reads oidcvault's GET makes before any cache: the token
//!   record by id (`tokens`), the domain record by id (`domains`), the config
//!   record by id (`configs`), each one `SledEngine::get`; then the same JSON
//!   document oidcvault answers (404 when a record is missing).
//! - POST: what `Store::update_config` does (src/store/configs.rs): under one
//!   `std::sync::Mutex` (the store's write-order lock, which orders audit ids,
//!   taken on the actix worker as there), read the domain's config record,
//!   then one `SledEngine::write` of the audit event (key = next u64 id
//!   big-endian in `audit`, value of the size of a real `config.update` event,
//!   measured by the driver) followed by the new config record (the stored
//!   record with its last 8 bytes changed: same size, a new value, as
//!   oidcvault's re-sealed record); release the lock, wait for the group
//!   commit (`durable`), whose flusher also writes the audit anchor (72 bytes
//!   in `meta`) before each flush when the head moved, as oidcvault's does.
//!
//! Which records a request reads comes from a seed file the driver writes
//! (`DOMAIN TOKEN_ID DOMAIN_ID` per line): the `X-Enterprise-Domain` header
//! picks the line (a hash-map lookup, in place of parsing the token's id).
//! The sled cache is oidcvault's shipped default (16 MiB); workers one per core.
//!
//! `baseline_matched DATA_DIR SEED_FILE EVENT_BYTES [BIND]`; prints
//! `listening on http://ADDR` on stderr. Run by `bench load` (BENCHMARKS.md).
// Tests and benchmarks may unwrap: a panic is their failure report.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use actix_web::{web, HttpRequest, HttpResponse};
use oidcvault::store::engine::{all, Engine, Op, Tree};
use oidcvault::store::SledEngine;

#[path = "common/baseline.rs"]
mod baseline;
use baseline::{serve, DOC};

/// oidcvault's `storage.cache_capacity_mib` default.
const CACHE_BYTES: u64 = 16 << 20;
/// The audit chain's anchor in `meta` (src/store/chain.rs): id ‖ mac ‖ tag.
const ANCHOR_KEY: &[u8] = b"audit/head";
const ANCHOR_BYTES: usize = 8 + 32 + 32;

/// What the write-order lock guards: the next audit id (oidcvault: the chain's
/// head) and a counter that makes every new config record a new value.
struct Head {
    next_audit: u64,
    seq: u64,
}

struct State {
    engine: Arc<SledEngine>,
    /// Domain name → (token id, domain id).
    ids: HashMap<String, (u64, u64)>,
    write_order: Mutex<Head>,
    /// The newest audit id written, for the anchor the flusher writes.
    anchor: Arc<Mutex<Option<u64>>>,
    event_bytes: usize,
}

impl State {
    fn ids(&self, req: &HttpRequest) -> Option<(u64, u64)> {
        let name = req.headers().get("X-Enterprise-Domain")?.to_str().ok()?;
        self.ids.get(name).copied()
    }
}

fn json() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(DOC)
}

async fn get(req: HttpRequest, state: web::Data<State>) -> HttpResponse {
    let Some((token_id, domain_id)) = state.ids(&req) else {
        return HttpResponse::NotFound().finish();
    };
    let e = &state.engine;
    let reads = [
        (Tree::Tokens, token_id),
        (Tree::Domains, domain_id),
        (Tree::Configs, domain_id),
    ];
    for (tree, id) in reads {
        match e.get(tree, &id.to_be_bytes()) {
            Ok(Some(v)) => {
                std::hint::black_box(v);
            }
            Ok(None) => return HttpResponse::NotFound().finish(),
            Err(_) => return HttpResponse::InternalServerError().finish(),
        }
    }
    json()
}

/// The write half, under the write-order lock (as `Store::update_config`).
fn write(state: &State, domain_id: u64) -> Result<bool, String> {
    let mut head = state
        .write_order
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let key = domain_id.to_be_bytes();
    let Some(mut record) = state
        .engine
        .get(Tree::Configs, &key)
        .map_err(|e| e.to_string())?
    else {
        return Ok(false);
    };
    head.seq += 1;
    let n = record.len();
    let tail = n.saturating_sub(8);
    let stamp = head.seq.to_be_bytes();
    record[tail..].copy_from_slice(&stamp[8 - (n - tail)..]);
    let id = head.next_audit;
    let mut event = vec![0x5a; state.event_bytes];
    let m = event.len().min(8);
    event[..m].copy_from_slice(&id.to_be_bytes()[..m]);
    state
        .engine
        .write(&[
            Op {
                tree: Tree::Audit,
                key: id.to_be_bytes().to_vec(),
                value: Some(event),
            },
            Op {
                tree: Tree::Configs,
                key: key.to_vec(),
                value: Some(record),
            },
        ])
        .map_err(|e| e.to_string())?;
    head.next_audit = id + 1;
    *state.anchor.lock().unwrap_or_else(PoisonError::into_inner) = Some(id);
    Ok(true)
}

async fn post(req: HttpRequest, body: web::Bytes, state: web::Data<State>) -> HttpResponse {
    std::hint::black_box(body);
    let Some((_, domain_id)) = state.ids(&req) else {
        return HttpResponse::NotFound().finish();
    };
    match write(&state, domain_id) {
        Ok(true) => {}
        Ok(false) => return HttpResponse::NotFound().finish(),
        Err(_) => return HttpResponse::InternalServerError().finish(),
    }
    let Some(commit) = state.engine.group_commit() else {
        return HttpResponse::InternalServerError().finish();
    };
    match commit.wait().await {
        Ok(()) => json(),
        Err(_) => HttpResponse::InternalServerError().finish(),
    }
}

/// `DOMAIN TOKEN_ID DOMAIN_ID` per line.
fn read_seed(path: &std::path::Path) -> std::io::Result<HashMap<String, (u64, u64)>> {
    let text = std::fs::read_to_string(path)?;
    let mut ids = HashMap::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let [name, token, domain] = f[..] else {
            return Err(std::io::Error::other(format!("seed line {line:?}")));
        };
        let parse = |s: &str| {
            s.parse::<u64>()
                .map_err(|_| std::io::Error::other(format!("seed line {line:?}")))
        };
        ids.insert(name.to_owned(), (parse(token)?, parse(domain)?));
    }
    Ok(ids)
}

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, seed, event_bytes, rest @ ..] = &args[..] else {
        eprintln!("usage: baseline_matched DATA_DIR SEED_FILE EVENT_BYTES [BIND]");
        std::process::exit(2);
    };
    let bind = rest
        .first()
        .cloned()
        .unwrap_or_else(|| "127.0.0.1:0".into());
    let event_bytes: usize = event_bytes
        .parse()
        .map_err(|_| std::io::Error::other(format!("EVENT_BYTES {event_bytes:?}")))?;
    let ids = read_seed(&PathBuf::from(seed))?;
    let engine = Arc::new(
        SledEngine::open(&PathBuf::from(dir), CACHE_BYTES, None, false)
            .map_err(std::io::Error::other)?,
    );
    // One past the last stored event, as the store starts its ids.
    let last = engine
        .scan(Tree::Audit, all(), 1, true)
        .map_err(std::io::Error::other)?;
    let next_audit = last
        .first()
        .and_then(|(k, _)| <[u8; 8]>::try_from(k.as_slice()).ok())
        .map_or(0, |k| u64::from_be_bytes(k) + 1);
    let anchor: Arc<Mutex<Option<u64>>> = Arc::default();
    if let Some(commit) = engine.group_commit() {
        let pending = anchor.clone();
        commit.set_before_flush(Box::new(move || {
            let head = pending
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            head.map(|id| {
                let mut v = vec![0xa5; ANCHOR_BYTES];
                v[..8].copy_from_slice(&id.to_be_bytes());
                Op {
                    tree: Tree::Meta,
                    key: ANCHOR_KEY.to_vec(),
                    value: Some(v),
                }
            })
            .into_iter()
            .collect()
        }));
    }
    let state = web::Data::new(State {
        engine: engine.clone(),
        ids,
        write_order: Mutex::new(Head { next_audit, seq: 0 }),
        anchor,
        event_bytes,
    });
    let result = serve(
        &bind,
        move |cfg| {
            cfg.app_data(state.clone());
        },
        get,
        post,
    );
    engine.shutdown();
    result
}
