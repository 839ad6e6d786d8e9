//! Structured logs with `tracing`: one line per request (method, route pattern,
//! status, latency), never a header, a query string or a body, so no token or
//! secret can reach a log line.

use std::io::IsTerminal;
use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use tracing_subscriber::EnvFilter;

use crate::config::LogConfig;

/// Overrides `log.level` when set.
pub const ENV_LOG: &str = "OIDCVAULT_LOG";

/// Install the global subscriber, writing to stderr. `OIDCVAULT_LOG` wins over
/// `level_override` (used by the offline commands), which wins over `log.level`.
pub fn init(config: &LogConfig, level_override: Option<&str>) {
    let level = std::env::var(ENV_LOG)
        .ok()
        .or_else(|| level_override.map(str::to_owned))
        .unwrap_or_else(|| config.level.clone());
    let filter = EnvFilter::try_new(&level).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(true)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = if config.format == "json" {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
}

/// Middleware: one log line per request.
pub async fn log_request(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let method = req.method().clone();
    let res = next.call(req).await;
    let latency_us = started.elapsed().as_micros() as u64;
    match &res {
        Ok(r) => {
            let route = r
                .request()
                .match_pattern()
                .unwrap_or_else(|| "<unmatched>".to_owned());
            tracing::info!(
                target: "oidcvault::request",
                method = %method,
                route = %route,
                status = r.status().as_u16(),
                latency_us,
                "request"
            );
            if let Some(vault) = r.request().app_data::<actix_web::web::Data<crate::Vault>>() {
                vault.metrics().observe_request(
                    method.as_str(),
                    &route,
                    r.status().as_u16(),
                    started.elapsed().as_secs_f64(),
                );
            }
        }
        Err(e) => {
            tracing::warn!(
                target: "oidcvault::request",
                method = %method,
                status = e.as_response_error().status_code().as_u16(),
                latency_us,
                "request failed"
            );
        }
    }
    res
}
