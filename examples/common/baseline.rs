//! What every load-benchmark baseline shares with oidcvault's side of the
//! wire (included by each `examples/baseline_*.rs` with `#[path]`): the JSON
//! document oidcvault answers for the seed's example body, its path in both
//! spellings (one static resource each, as oidcvault registers it: a resource
//! given both paths is matched with a regex set, BENCHMARKS.md), the bind
//! address from the command line and the `listening on` line the bench driver
//! waits for. Only the handlers and their state differ between baselines.

use actix_web::{web, App, FromRequest, Handler, HttpServer, Responder};

/// What oidcvault answers for the seed's example body.
pub const DOC: &str = r#"{"id":1,"enterprise_domain":1,"client_id":"enterprise-app-123","client_secret":"********0rd!","client_secret_masked":"********0rd!","discovery_url":null,"authorization_endpoint":null,"token_endpoint":null,"userinfo_endpoint":null,"created_at":"2026-11-29T15:04:05.123456Z","updated_at":"2026-11-29T15:04:05.123456Z"}"#;
pub const PATH: &str = "/api/v1/enterprises/oidc/config/";

/// Serve `get` and `post` on both spellings of [`PATH`] at `bind` until the
/// process is stopped; `app_data` registers the handlers' state. Workers:
/// actix's default, one per core, as oidcvault's.
pub fn serve<G, GA, P, PA>(
    bind: &str,
    app_data: impl Fn(&mut web::ServiceConfig) + Clone + Send + 'static,
    get: G,
    post: P,
) -> std::io::Result<()>
where
    G: Handler<GA> + Send,
    GA: FromRequest + 'static,
    G::Output: Responder + 'static,
    P: Handler<PA> + Send,
    PA: FromRequest + 'static,
    P::Output: Responder + 'static,
{
    let bind = bind.to_owned();
    actix_web::rt::System::new().block_on(async move {
        let server = HttpServer::new(move || {
            let (get, post, app_data) = (get.clone(), post.clone(), app_data.clone());
            App::new().configure(move |cfg| {
                app_data(cfg);
                for path in [PATH, PATH.trim_end_matches('/')] {
                    cfg.service(
                        web::resource(path)
                            .route(web::get().to(get.clone()))
                            .route(web::post().to(post.clone())),
                    );
                }
            })
        })
        .bind(&bind)?;
        for addr in server.addrs() {
            eprintln!("listening on http://{addr}");
        }
        server.run().await
    })
}
