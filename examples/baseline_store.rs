//! Load-benchmark baseline 2, the *storage ceiling*: actix-web + sled with
//! oidcvault's own group commit (`oidcvault::store::GroupCommit`: sled flush +
//! fdatasync, one flusher thread for all waiters), through oidcvault's sled
//! engine (`oidcvault::store::SledEngine`: a plain write and a read, as the
//! store's fast paths make them), and nothing else: no authentication, no
//! encryption, no validation, no logging.
//!
//! POST stores the JSON document oidcvault answers (behind an 8-byte sequence
//! number, so that every write changes the value: sled skips a write of the
//! value already stored) under the key named by the `X-Enterprise-Domain`
//! header, waits until it is durable, and answers the document; GET answers the
//! stored document (404 when none). The sled cache is
//! oidcvault's default (64 MiB); workers one per core, as oidcvault's default.
//!
//! `baseline_store DATA_DIR [BIND]`; prints `listening on http://ADDR` on stderr.
// Tests and benchmarks may unwrap: a panic is their failure report.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use actix_web::{web, HttpRequest, HttpResponse};
use oidcvault::store::engine::{Engine, Op, Tree};
use oidcvault::store::SledEngine;

#[path = "common/baseline.rs"]
mod baseline;
use baseline::{serve, DOC};

struct State {
    engine: SledEngine,
    seq: AtomicU64,
}

fn key(req: &HttpRequest) -> Vec<u8> {
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

async fn get(req: HttpRequest, state: web::Data<State>) -> HttpResponse {
    match state.engine.get(Tree::Configs, &key(&req)) {
        Ok(Some(v)) => json(v.get(8..).unwrap_or_default().to_vec()),
        Ok(None) => HttpResponse::NotFound().finish(),
        Err(_) => HttpResponse::InternalServerError().finish(),
    }
}

async fn post(req: HttpRequest, body: web::Bytes, state: web::Data<State>) -> HttpResponse {
    std::hint::black_box(body);
    // A new value every time, as oidcvault's record (updated_at, a fresh nonce):
    // sled skips an insert of the value already stored, which would make this
    // "write" free.
    let mut value = Vec::with_capacity(8 + DOC.len());
    value.extend_from_slice(&state.seq.fetch_add(1, Ordering::Relaxed).to_be_bytes());
    value.extend_from_slice(DOC.as_bytes());
    let op = Op {
        tree: Tree::Configs,
        key: key(&req),
        value: Some(value),
    };
    if state.engine.write(&[op]).is_err() {
        return HttpResponse::InternalServerError().finish();
    }
    let Some(commit) = state.engine.group_commit() else {
        return HttpResponse::InternalServerError().finish();
    };
    match commit.wait().await {
        Ok(()) => json(DOC),
        Err(_) => HttpResponse::InternalServerError().finish(),
    }
}

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(
        args.next()
            .unwrap_or_else(|| "target/bench-work/baseline-store".into()),
    );
    let bind = args.next().unwrap_or_else(|| "127.0.0.1:0".into());
    let engine = SledEngine::open(&dir, 64 << 20, None, false).map_err(std::io::Error::other)?;
    let state = web::Data::new(State {
        engine,
        seq: AtomicU64::new(0),
    });
    let result = serve(
        &bind,
        {
            let state = state.clone();
            move |cfg| {
                cfg.app_data(state.clone());
            }
        },
        get,
        post,
    );
    state.engine.shutdown();
    result
}
