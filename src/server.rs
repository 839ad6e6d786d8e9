//! `oidcvault serve`: bind, serve, and shut down cleanly.

use std::net::SocketAddr;

use actix_web::{web, HttpServer};

use crate::config::Config;
use crate::vault::Vault;

/// Serve until SIGTERM or Ctrl-C, then stop accepting, let in-flight requests
/// finish (up to `server.shutdown_timeout_secs`), make everything durable, return.
pub async fn serve(config: &Config, vault: Vault) -> std::io::Result<()> {
    let vault = web::Data::new(vault);
    let factory_vault = vault.clone();
    let mut server = HttpServer::new(move || crate::app(factory_vault.clone()))
        .shutdown_timeout(config.server.shutdown_timeout_secs);
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
