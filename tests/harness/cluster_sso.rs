//! Sign-ins through the broker of a cluster's nodes (the stub provider,
//! `super::stub_idp`): both nodes get the same `server.public_url` (as behind a
//! load balancer: the callback registered at the provider), and the browser is
//! pointed at one node or the other by hand, so a sign-in can start on one node
//! and finish on another.

use std::time::Duration;

use base64::Engine;
use serde_json::{json, Value};

use super::cluster::{NodeOptions, Nodes};
use super::sso_browser::{Browser, Landing};
use super::stub_http::closed_port;
use super::stub_idp::{self, StubIdp};
use super::CONFIG_PATH;

pub(crate) const DOMAIN: &str = "acme.com";
pub(crate) const APP_REDIRECT: &str = "http://127.0.0.1:3999/callback";

pub(crate) const SSO_SECTIONS: &str =
    "[sso]\nclock_skew_secs = 120\nauthorize_per_address_per_minute = 100000\n\
     [outbound]\nresolve_discovery_on_save = false\n\
     allow_http_hosts = [\"127.0.0.1\"]\nallow_private_hosts = [\"127.0.0.1\"]\n\
     connect_timeout_secs = 2\ntimeout_secs = 3\n";

pub(crate) fn authorize_path(client_id: &str, state: &str) -> String {
    let q: String = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs([
            ("client_id", client_id),
            ("redirect_uri", APP_REDIRECT),
            ("state", state),
            ("domain", DOMAIN),
        ])
        .finish();
    format!("/sso/authorize?{q}")
}

/// `POST /sso/token` at `base` with HTTP Basic: status and body.
pub(crate) fn redeem(base: &str, app: &Value, code: &str) -> (u16, String) {
    let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let id = app["client_id"].as_str().unwrap();
    let secret = app["client_secret"].as_str().unwrap();
    let basic =
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", enc(id), enc(secret)));
    let agent = ureq::AgentBuilder::new()
        .max_idle_connections(0)
        .timeout(Duration::from_secs(20))
        .build();
    let r = agent
        .post(&format!("{base}/sso/token"))
        .set("Authorization", &format!("Basic {basic}"))
        .send_form(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", APP_REDIRECT),
        ]);
    match r {
        Ok(r) | Err(ureq::Error::Status(_, r)) => {
            let status = r.status();
            (status, r.into_string().unwrap_or_default())
        }
        Err(e) => panic!("POST {base}/sso/token: {e}"),
    }
}

/// Start a sign-in at `start_base`, stop before the callback; the browser and
/// the callback URL (at the shared public URL).
pub(crate) fn start_sign_in(
    start_base: &str,
    idp: &StubIdp,
    client_id: &str,
    state: &str,
) -> (Browser, String) {
    let mut browser = Browser::new();
    // The provider sends the browser to the shared public URL: the callback is
    // at the starting node's origin (stop there) or at another (where the
    // browser thinks the flow left the broker).
    let callback = match browser.follow_tcp_until(
        start_base,
        &idp.origin(),
        &authorize_path(client_id, state),
        |u| u.contains("/sso/callback"),
    ) {
        Ok(url) => url,
        Err(Landing::App { url, .. }) if url.contains("/sso/callback") => url,
        Err(l) => panic!(
            "the sign-in did not reach the callback: {l:?}\n{}",
            browser.trace()
        ),
    };
    (browser, callback)
}

/// Deliver `callback` (made for `public_url`) to `finish_base` instead; the code.
pub(crate) fn finish_sign_in(
    browser: &mut Browser,
    public_url: &str,
    finish_base: &str,
    idp: &StubIdp,
    callback: &str,
    state: &str,
) -> String {
    let at_other = callback.replacen(public_url, finish_base, 1);
    assert!(callback.starts_with(public_url), "{callback}");
    let landing = browser.follow_tcp(finish_base, &idp.origin(), &at_other);
    match &landing {
        Landing::App { url, .. } if url.starts_with(APP_REDIRECT) => {}
        _ => panic!(
            "the sign-in did not end at the application: {landing:?}\n{}",
            browser.trace()
        ),
    }
    assert_eq!(landing.param("state"), Some(state), "{landing:?}");
    landing
        .param("code")
        .unwrap_or_else(|| panic!("no code: {landing:?}\n{}", browser.trace()))
        .to_owned()
}

/// Options for `n` nodes on fixed ports whose `public_url` is the first
/// node's address; that URL.
pub(crate) fn broker_options(n: usize) -> (NodeOptions, String) {
    let ports: Vec<u16> = (0..n).map(|_| closed_port()).collect();
    let public_url = format!("http://127.0.0.1:{}", ports[0]);
    (
        NodeOptions {
            server_extra: format!("public_url = \"{public_url}\"\n"),
            extra: SSO_SECTIONS.to_owned(),
            ports,
        },
        public_url,
    )
}

/// Through node 0: the domain [`DOMAIN`] configured with `idp` (its endpoints
/// given by hand: nothing is resolved on save, so the tests' other configs may
/// carry any discovery URL), and an application registered (its JSON, with
/// the secret).
pub(crate) fn setup_broker(nodes: &Nodes, idp: &StubIdp) -> Value {
    let op = nodes.operator.as_str();
    nodes.server(0).add_domain(op, DOMAIN);
    nodes.server(0).expect(
        200,
        "POST",
        CONFIG_PATH,
        op,
        Some(DOMAIN),
        Some(&json!({
            "client_id": stub_idp::CLIENT_ID,
            "client_secret": stub_idp::CLIENT_SECRET,
            "discovery_url": idp.discovery_url(),
            "authorization_endpoint": format!("{}/authorize", idp.origin()),
            "token_endpoint": format!("{}/token", idp.origin()),
            "userinfo_endpoint": format!("{}/userinfo", idp.origin()),
        })),
    );
    nodes.server(0).expect(
        201,
        "POST",
        "/api/v1/admin/apps/",
        op,
        None,
        Some(&json!({"name": "Cluster app", "redirect_uris": [APP_REDIRECT]})),
    )
}

/// A whole sign-in started at `start` and finished (callback and redemption)
/// at `finish`: `Err` says what went wrong.
pub(crate) fn sign_in_across(
    idp: &StubIdp,
    app: &Value,
    public_url: &str,
    start: &str,
    finish: &str,
    state: &str,
) -> Result<Value, String> {
    let client_id = app["client_id"].as_str().unwrap_or_default();
    let (mut browser, callback) = start_sign_in(start, idp, client_id, state);
    let code = finish_sign_in(&mut browser, public_url, finish, idp, &callback, state);
    let (status, body) = redeem(finish, app, &code);
    if status != 200 {
        return Err(format!("redeeming at {finish}: HTTP {status} {body}"));
    }
    serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))
}
