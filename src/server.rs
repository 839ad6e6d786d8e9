//! `oidcvault serve`: bind, serve, and shut down cleanly.

use std::net::SocketAddr;
use std::time::Duration;

use actix_web::{web, HttpServer};

use crate::config::Config;
use crate::vault::Vault;

/// Serve until SIGTERM or Ctrl-C, then stop accepting, let in-flight requests
/// finish (up to `server.shutdown_timeout_secs`), make everything durable, return.
pub async fn serve(config: &Config, vault: Vault) -> std::io::Result<()> {
    let vault = web::Data::new(vault);
    let factory_vault = vault.clone();
    let limits = web::Data::new(crate::limits::Limits::new(config.limits.clone()));
    let mut server =
        HttpServer::new(move || crate::app_with_limits(factory_vault.clone(), limits.clone()))
            .shutdown_timeout(config.server.shutdown_timeout_secs);
    // Abuse limits: connection cap (actix counts per worker), timeouts.
    let l = &config.limits;
    server = server
        .max_connections(l.max_connections_per_worker(config.server.workers))
        .client_request_timeout(Duration::from_secs(l.request_head_timeout_secs))
        .client_disconnect_timeout(Duration::from_secs(l.disconnect_timeout_secs))
        .keep_alive(Duration::from_secs(l.keep_alive_secs));
    if config.server.workers > 0 {
        server = server.workers(config.server.workers);
    }
    let server = server.bind(&config.server.bind).map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cannot listen on {} (server.bind): {e}", config.server.bind),
        )
    })?;
    let addrs: Vec<SocketAddr> = server.addrs();
    for addr in &addrs {
        tracing::info!(%addr, "listening on http://{addr}");
    }
    server.run().await?;
    vault.shutdown();
    tracing::info!("stopped; all acknowledged writes are on disk");
    Ok(())
}
