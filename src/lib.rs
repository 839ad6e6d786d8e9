//! oidcvault: keeps each enterprise domain's OIDC single-sign-on configuration,
//! with the client secret encrypted at rest, in an embedded sled store.
//!
//! Layers: [`api`] (HTTP DTOs and handlers) → [`vault`] (operations on model
//! types) → [`store`] (sled and the group commit, the only user of sled) and
//! [`crypto`] (keys, envelopes, tokens). [`app`] is the one `App` factory, used
//! by the server and by the tests alike.
#![forbid(unsafe_code)]

pub mod api;
pub mod broker;
pub mod cli;
pub mod config;
pub mod crypto;
pub mod limits;
pub mod logging;
pub mod metrics;
pub mod oidc;
pub mod origin;
pub mod outbound;
pub mod progress;
pub mod reload;
pub mod server;
pub mod settings;
pub mod startup;
pub mod store;
pub mod systemd;
pub mod time;
pub mod vault;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::middleware::{from_fn, Condition, DefaultHeaders};
use actix_web::{web, App};

pub use vault::Vault;

/// What the handlers share, each its own application data: the vault (the
/// service layer), the outbound client (OIDC discovery and the connection
/// test) and the metrics (the request log records into them).
#[derive(Clone)]
pub struct AppData {
    pub vault: web::Data<Vault>,
    pub outbound: web::Data<outbound::Outbound>,
    pub metrics: web::Data<metrics::Metrics>,
    /// The sign-in broker (without `server.public_url` it starts no sign-in).
    pub broker: web::Data<broker::Broker>,
}

impl AppData {
    /// The outbound client from the configuration and fresh metrics, beside
    /// `vault` (whose group commit reports into `metrics.commit` when the vault
    /// was opened with it).
    pub fn new(
        vault: web::Data<Vault>,
        outbound: outbound::Outbound,
        metrics: metrics::Metrics,
    ) -> Self {
        let broker =
            broker::Broker::new(broker::BrokerSettings::default(), Some(metrics.sso.clone()));
        Self {
            vault,
            outbound: web::Data::new(outbound),
            metrics: web::Data::new(metrics),
            broker: web::Data::new(broker),
        }
    }

    /// The broker with `settings` (`server.public_url`, `[sso]`).
    pub fn with_sso(mut self, settings: broker::BrokerSettings) -> Self {
        self.broker = web::Data::new(broker::Broker::new(
            settings,
            Some(self.metrics.sso.clone()),
        ));
        self
    }
}

/// The application: every route, the request log and the security headers,
/// with the default abuse limits.
pub fn app(
    data: AppData,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    app_with_limits(data, web::Data::new(limits::Limits::default()))
}

/// [`app`] with the given limits (shared by every worker of a server), served
/// over plain HTTP.
pub fn app_with_limits(
    data: AppData,
    limits: web::Data<limits::Limits>,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    app_serving(data, limits, Transport::PlainHttp)
}

/// How the server is reached, for the headers that depend on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    PlainHttp,
    /// `server.tls_cert` / `server.tls_key`: every response carries [`HSTS`].
    Tls,
}

/// `Strict-Transport-Security` sent on every response over TLS: a year, and
/// neither `includeSubDomains` nor `preload`, which would bind every other host
/// of the operator's domain to HTTPS too. Browsers ignore it over plain HTTP,
/// so it is not sent there.
pub const HSTS: &str = "max-age=31536000";

/// [`app_with_limits`] for a server reached over `transport`.
pub fn app_serving(
    data: AppData,
    limits: web::Data<limits::Limits>,
    transport: Transport,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    App::new()
        .app_data(data.vault)
        .app_data(data.outbound)
        .app_data(data.metrics)
        .app_data(data.broker)
        .app_data(limits)
        .wrap(
            DefaultHeaders::new()
                .add(("Cache-Control", "no-store"))
                .add(("X-Content-Type-Options", "nosniff")),
        )
        .wrap(from_fn(api::middleware::check_request_head))
        .wrap(from_fn(logging::log_request))
        // Outermost, so the answers of the middleware above carry it too.
        .wrap(Condition::new(
            transport == Transport::Tls,
            DefaultHeaders::new().add((actix_web::http::header::STRICT_TRANSPORT_SECURITY, HSTS)),
        ))
        .configure(api::configure)
        .default_service(web::to(api::not_found))
}
