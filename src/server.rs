//! `oidcvault serve`: bind (plain HTTP or TLS), serve, run key maintenance in
//! the background, and shut down cleanly.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use actix_web::{web, HttpServer};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::Config;
use crate::vault::Vault;

/// Load a rustls server configuration from PEM files (ring provider, TLS 1.2
/// and 1.3, no client authentication).
pub fn tls_config(cert: &Path, key: &Path) -> std::io::Result<rustls::ServerConfig> {
    let err = |what: &str, path: &Path, e: &dyn std::fmt::Display| {
        std::io::Error::other(format!("{what} {}: {e}", path.display()))
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| err("cannot read server.tls_cert", cert, &e))?
        .collect::<Result<_, _>>()
        .map_err(|e| err("cannot parse server.tls_cert", cert, &e))?;
    if certs.is_empty() {
        return Err(err("no certificate in server.tls_cert", cert, &"empty"));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| err("cannot read a private key from server.tls_key", key, &e))?;
    rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| std::io::Error::other(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| std::io::Error::other(format!("server.tls_cert / server.tls_key: {e}")))
}

/// Serve until SIGTERM or Ctrl-C, then stop accepting, let in-flight requests
/// finish (up to `server.shutdown_timeout_secs`), make everything durable, return.
/// Tells systemd when it is ready and when it stops, and reloads on SIGHUP
/// (`crate::reload`, `crate::systemd`).
pub async fn serve(
    config: &Config,
    vault: Vault,
    outbound: crate::outbound::Outbound,
    metrics: crate::metrics::Metrics,
) -> std::io::Result<()> {
    let vault = web::Data::new(vault);
    let data = crate::AppData::new(vault.clone(), outbound, metrics)
        .with_sso(crate::broker::BrokerSettings::from_config(config));
    let limits = web::Data::new(crate::limits::Limits::new(config.limits.clone()));
    let reloader = crate::reload::Reloader::new(config.clone(), limits.clone());
    // The signals are this module's (not actix's): STOPPING=1 and SIGHUP.
    let signals = crate::reload::Signals::register()?;
    let transport = if config.tls().is_some() {
        crate::Transport::Tls
    } else {
        crate::Transport::PlainHttp
    };
    // Per-address connection cap: counted as actix hands each connection over
    // (before any bind: actix captures the hook when a listener is bound).
    let connections = limits.connections.clone();
    let mut server =
        HttpServer::new(move || crate::app_serving(data.clone(), limits.clone(), transport))
            .on_connect(move |io, data| crate::api::middleware::on_connect(&connections, io, data))
            .shutdown_timeout(config.server.shutdown_timeout_secs)
            .disable_signals();
    // Abuse limits: connection cap (actix counts per worker), timeouts.
    let l = &config.limits;
    server = server
        .max_connections(l.max_connections_per_worker(config.worker_count()))
        .client_request_timeout(
            Duration::from_secs(l.request_head_timeout_secs) + config.worker_stall_allowance(),
        )
        .client_disconnect_timeout(Duration::from_secs(l.disconnect_timeout_secs))
        .keep_alive(Duration::from_secs(l.keep_alive_secs));
    server = server.workers(config.worker_count());
    let bind_err = |e: std::io::Error| {
        std::io::Error::new(
            e.kind(),
            format!("cannot listen on {} (server.bind): {e}", config.server.bind),
        )
    };
    let (server, scheme) = match config.tls() {
        Some((cert, key)) => {
            let tls = tls_config(&cert, &key)?;
            (
                server
                    .bind_rustls_0_23(&config.server.bind, tls)
                    .map_err(bind_err)?,
                "https",
            )
        }
        None => (server.bind(&config.server.bind).map_err(bind_err)?, "http"),
    };
    let addrs: Vec<SocketAddr> = server.addrs();
    for addr in &addrs {
        tracing::info!(%addr, "listening on {scheme}://{addr}");
    }
    let maintenance = actix_web::rt::spawn(vault.clone().into_inner().run_maintenance());
    let running = server.run();
    // Runs once the server future below has started the workers and the
    // accept loop on its first poll: READY=1 is sent from there.
    let status = match addrs.first() {
        Some(addr) => format!("serving on {scheme}://{addr}"),
        None => "serving".to_owned(),
    };
    let watcher = actix_web::rt::spawn(crate::reload::watch(
        signals,
        running.handle(),
        reloader,
        status,
    ));
    running.await?;
    watcher.abort();
    maintenance.abort();
    vault.shutdown();
    tracing::info!("stopped; all acknowledged writes are on disk");
    Ok(())
}
