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

use actix_web::{web, App, HttpResponse, HttpServer};

/// What oidcvault answers for the seed's example body.
const DOC: &str = r#"{"id":1,"enterprise_domain":1,"client_id":"enterprise-app-123","client_secret":"********0rd!","client_secret_masked":"********0rd!","discovery_url":null,"authorization_endpoint":null,"token_endpoint":null,"userinfo_endpoint":null,"created_at":"2026-11-29T15:04:05.123456Z","updated_at":"2026-11-29T15:04:05.123456Z"}"#;
const PATH: &str = "/api/v1/enterprises/oidc/config/";

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
    actix_web::rt::System::new().block_on(async move {
        let server = HttpServer::new(|| {
            // One static resource per spelling, as oidcvault registers its path.
            App::new()
                .service(
                    web::resource(PATH)
                        .route(web::get().to(get))
                        .route(web::post().to(post)),
                )
                .service(
                    web::resource(PATH.trim_end_matches('/'))
                        .route(web::get().to(get))
                        .route(web::post().to(post)),
                )
        })
        .bind(&bind)?;
        for addr in server.addrs() {
            eprintln!("listening on http://{addr}");
        }
        server.run().await
    })
}
