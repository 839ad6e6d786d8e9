//! Load-benchmark baseline 1, the *HTTP ceiling*: bare actix-web answering the
//! config path with the same JSON document oidcvault answers, from memory. No
//! authentication, no storage, no logging: what the HTTP stack alone allows.
//!
//! `baseline_http [BIND]` (default `127.0.0.1:0`); prints `listening on http://ADDR`
//! on stderr. Workers: one per core, as oidcvault's default `server.workers = 0`.
//! Run by `cargo run --release --example bench -- load` (see BENCHMARKS.md).
// Tests and benchmarks may unwrap: a panic is their failure report.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]
#![forbid(unsafe_code)]

use actix_web::{web, HttpResponse};

#[path = "common/baseline.rs"]
mod baseline;
use baseline::{serve, DOC};

async fn get() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(DOC)
}

/// Reads the whole body (as oidcvault must), then answers the document.
async fn post(body: web::Bytes) -> HttpResponse {
    std::hint::black_box(body);
    get().await
}

fn main() -> std::io::Result<()> {
    let bind = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".into());
    serve(&bind, |_| {}, get, post)
}
