//! A sign-in through the broker started on one node and finished on the
//! other: the browser's `/sso/authorize` goes to node A, the provider's
//! callback to node B (A killed with `kill -9` in between), the code is
//! redeemed at B, once; then the other way round with A back. Both nodes have
//! the same `server.public_url` (as behind a load balancer: the callback
//! registered at the provider), and the browser is pointed at one node or the
//! other by hand. Against the stub provider (`harness::stub_idp`), as
//! `sso::binary` does for one node.

use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};

use crate::harness::cluster::{NodeOptions, Nodes};
use crate::harness::etcd::EtcdCluster;
use crate::harness::sso_browser::{Browser, Landing};
use crate::harness::stub_http::closed_port;
use crate::harness::stub_idp::{self, StubIdp};
use crate::harness::CONFIG_PATH;

const DOMAIN: &str = "acme.com";
const APP_REDIRECT: &str = "http://127.0.0.1:3999/callback";

const SSO_SECTIONS: &str =
    "[sso]\nclock_skew_secs = 120\nauthorize_per_address_per_minute = 100000\n\
     [outbound]\nresolve_discovery_on_save = true\n\
     allow_http_hosts = [\"127.0.0.1\"]\nallow_private_hosts = [\"127.0.0.1\"]\n\
     connect_timeout_secs = 2\ntimeout_secs = 3\n";

fn authorize_path(client_id: &str, state: &str) -> String {
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
fn redeem(base: &str, app: &Value, code: &str) -> (u16, String) {
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
fn start_sign_in(
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
fn finish_sign_in(
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

#[test]
fn a_sign_in_started_on_one_node_finishes_on_the_other() {
    let started = Instant::now();
    let idp = StubIdp::start();
    let etcd = EtcdCluster::start(3);
    let ports = vec![closed_port(), closed_port()];
    let public_url = format!("http://127.0.0.1:{}", ports[0]);
    let mut nodes = Nodes::start_with(
        &etcd,
        2,
        NodeOptions {
            server_extra: format!("public_url = \"{public_url}\"\n"),
            extra: SSO_SECTIONS.to_owned(),
            ports,
        },
    );
    let op = nodes.operator.clone();
    let (a, b) = (nodes.nodes[0].base(), nodes.nodes[1].base());
    nodes.server(0).add_domain(&op, DOMAIN);
    nodes.server(0).expect(
        200,
        "POST",
        CONFIG_PATH,
        &op,
        Some(DOMAIN),
        Some(&json!({
            "client_id": stub_idp::CLIENT_ID,
            "client_secret": stub_idp::CLIENT_SECRET,
            "discovery_url": idp.discovery_url(),
        })),
    );
    let app = nodes.server(0).expect(
        201,
        "POST",
        "/api/v1/admin/apps/",
        &op,
        None,
        Some(&json!({"name": "Cluster app", "redirect_uris": [APP_REDIRECT]})),
    );
    let client_id = app["client_id"].as_str().unwrap().to_owned();

    // Started on A; A killed; the callback and the redemption on B.
    let (mut browser, callback) = start_sign_in(&a, &idp, &client_id, "cross-1");
    nodes.nodes[0].kill9();
    let code = finish_sign_in(&mut browser, &public_url, &b, &idp, &callback, "cross-1");
    let (status, body) = redeem(&b, &app, &code);
    assert_eq!(status, 200, "redeeming at node B: {body}\n{}", nodes.logs());
    let profile: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(profile["profile"]["email"], stub_idp::EMAIL, "{body}");

    // A back: the code is spent there too; the state cannot be used again.
    nodes.nodes[0].start();
    let (status, body) = redeem(&a, &app, &code);
    assert_eq!(
        status, 400,
        "a code redeemed at B was redeemed again at A: {body}"
    );
    let mut replay = browser.clone();
    let again = replay.follow_tcp(&a, &idp.origin(), &callback);
    assert_eq!(
        again.param("code"),
        None,
        "a callback taken at B gave a code at A: {again:?}"
    );

    // The other way round: started on B, finished on A, redeemed on B.
    let (mut browser, callback) = start_sign_in(&b, &idp, &client_id, "cross-2");
    let code = finish_sign_in(&mut browser, &public_url, &a, &idp, &callback, "cross-2");
    let (status, body) = redeem(&b, &app, &code);
    assert_eq!(status, 200, "{body}\n{}", nodes.logs());
    let (status, _) = redeem(&a, &app, &code);
    assert_eq!(status, 400, "a code redeemed twice across nodes");
    nodes.stop_all();
    eprintln!("sign-ins across nodes: {:?}", started.elapsed());
}
