//! A sign-in through the broker started on one node and finished on the
//! other: the browser's `/sso/authorize` goes to node A, the provider's
//! callback to node B (A killed with `kill -9` in between), the code is
//! redeemed at B, once; then the other way round with A back. Both nodes have
//! the same `server.public_url` (as behind a load balancer: the callback
//! registered at the provider), and the browser is pointed at one node or the
//! other by hand. Against the stub provider (`harness::stub_idp`), as
//! `sso::binary` does for one node.

use std::time::Instant;

use serde_json::Value;

use crate::harness::cluster::Nodes;
use crate::harness::cluster_sso::{
    broker_options, finish_sign_in, redeem, setup_broker, start_sign_in,
};
use crate::harness::etcd::EtcdCluster;
use crate::harness::stub_idp::{self, StubIdp};

#[test]
fn a_sign_in_started_on_one_node_finishes_on_the_other() {
    let started = Instant::now();
    let idp = StubIdp::start();
    let etcd = EtcdCluster::start(3);
    let (options, public_url) = broker_options(2);
    let mut nodes = Nodes::start_with(&etcd, 2, options);
    let (a, b) = (nodes.nodes[0].base(), nodes.nodes[1].base());
    let app = setup_broker(&nodes, &idp);
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
