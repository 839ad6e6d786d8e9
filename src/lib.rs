//! oidcvault: keeps each enterprise domain's OIDC single-sign-on configuration,
//! with the client secret encrypted at rest, in an embedded sled store.
//!
//! Layers: [`api`] (HTTP DTOs and handlers) → [`vault`] (operations on model
//! types) → [`store`] (sled and the group commit, the only user of sled) and
//! [`crypto`] (keys, envelopes, tokens). [`app`] is the one `App` factory, used
//! by the server and by the tests alike.
#![forbid(unsafe_code)]

pub mod api;
pub mod cli;
pub mod config;
pub mod crypto;
pub mod discovery;
pub mod limits;
pub mod logging;
pub mod metrics;
pub mod outbound;
pub mod server;
pub mod startup;
pub mod store;
pub mod time;
pub mod vault;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::middleware::{from_fn, DefaultHeaders};
use actix_web::{web, App};

pub use vault::Vault;

/// The application: every route, the request log and the security headers,
/// with the default abuse limits.
pub fn app(
    vault: web::Data<Vault>,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    app_with_limits(vault, web::Data::new(limits::Limits::default()))
}

/// [`app`] with the given limits (shared by every worker of a server).
pub fn app_with_limits(
    vault: web::Data<Vault>,
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
    App::new()
        .app_data(vault)
        .app_data(limits)
        .wrap(
            DefaultHeaders::new()
                .add(("Cache-Control", "no-store"))
                .add(("X-Content-Type-Options", "nosniff")),
        )
        .wrap(from_fn(limits::check_request_head))
        .wrap(from_fn(logging::log_request))
        .configure(api::configure)
        .default_service(web::to(api::not_found))
}
