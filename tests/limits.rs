//! Abuse limits (`[limits]`, `src/limits.rs`): failed authentication throttled
//! per client address, slow and stalled clients timed out, oversized heads and
//! bodies refused early, a cap on connections; each with a legitimate client
//! served while the abusive one is refused.
//!
//! In-process through the real app (`app_with_limits`), where the peer address
//! can be set; what only a socket shows (timeouts, the connection cap, a second
//! client address: 127.0.0.2) is in `limits_tcp`, through the real binary.

use std::net::SocketAddr;
use std::time::Instant;

use actix_web::http::StatusCode;
use actix_web::test::TestRequest;
use actix_web::web;

use oidcvault::limits::{Limits, LimitsConfig};

use crate::harness::in_process::*;

// ---- in-process -----------------------------------------------------------------------

fn peer(ip: &str) -> SocketAddr {
    SocketAddr::new(ip.parse().unwrap(), 40000)
}

#[actix_web::test]
async fn failed_authentication_is_limited_per_address_and_others_are_served() {
    let env = Env::new();
    let (_, token) = env.domain("acme.com").await;
    let limits = web::Data::new(Limits::new(LimitsConfig {
        auth_failures_per_window: 3,
        auth_failure_window_secs: 60,
        ..LimitsConfig::default()
    }));
    let app =
        actix_web::test::init_service(oidcvault::app_with_limits(env.data.clone(), limits.clone()))
            .await;
    let bad = "ovt_1_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    for i in 0..3 {
        let r = call(&app, get(CONFIG_PATH, bad).peer_addr(peer("192.0.2.66"))).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "attempt {i}: {r:?}");
    }
    // The fourth attempt, and then anything from that address, even with a valid
    // token: 429 before the token is looked at.
    for t in [bad, token.as_str()] {
        let r = call(&app, get(CONFIG_PATH, t).peer_addr(peer("192.0.2.66"))).await;
        assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{r:?}");
        let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
        assert!((1..=60).contains(&retry), "Retry-After {retry}");
        assert!(
            r.body["detail"]
                .as_str()
                .unwrap()
                .contains("Too many failed"),
            "{r:?}"
        );
    }
    // Meanwhile a legitimate client at another address is served, and another
    // address's own failures are still plain 401s.
    let r = call(&app, get(CONFIG_PATH, &token).peer_addr(peer("192.0.2.7"))).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "no config yet: {r:?}");
    let r = call(
        &app,
        post_json(
            CONFIG_PATH,
            &token,
            r#"{"client_id": "a", "client_secret": "s3cr3tP@ssw0rd!"}"#,
        )
        .peer_addr(peer("192.0.2.7")),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    let r = call(&app, get(CONFIG_PATH, bad).peer_addr(peer("192.0.2.8"))).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{r:?}");
    // A missing token is not a guess: not counted.
    for _ in 0..5 {
        let r = call(
            &app,
            TestRequest::get()
                .uri(CONFIG_PATH)
                .peer_addr(peer("192.0.2.9")),
        )
        .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{r:?}");
    }
    assert_eq!(limits.auth.tracked(), 2);
}

/// An attacker blocked for guessing cannot lift its block by making the limiter
/// forget it: failing from more new addresses than the limiter tracks (65,536)
/// evicts only entries that are not blocked.
#[actix_web::test]
async fn a_flood_of_other_addresses_does_not_lift_a_block() {
    let env = Env::new();
    let (_, token) = env.domain("acme.com").await;
    let limits = web::Data::new(Limits::new(LimitsConfig {
        auth_failures_per_window: 3,
        auth_failure_window_secs: 600,
        ..LimitsConfig::default()
    }));
    let app =
        actix_web::test::init_service(oidcvault::app_with_limits(env.data.clone(), limits.clone()))
            .await;
    let bad = "ovt_1_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let attacker = peer("192.0.2.66");
    for _ in 0..3 {
        let r = call(&app, get(CONFIG_PATH, bad).peer_addr(attacker)).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{r:?}");
    }
    // One bad guess from each of 70,000 other addresses (10.1.0.0 on), through
    // the app, as a many-address attacker would.
    let started = Instant::now();
    for i in 0..70_000u32 {
        let from = SocketAddr::new(std::net::Ipv4Addr::from(0x0a01_0000 + i).into(), 40000);
        let r = call(&app, get(CONFIG_PATH, bad).peer_addr(from)).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "flood {i}: {r:?}");
    }
    eprintln!("flood of 70,000 addresses took {:?}", started.elapsed());
    assert!(limits.auth.tracked() <= 65_536, "{}", limits.auth.tracked());
    for t in [bad, token.as_str()] {
        let r = call(&app, get(CONFIG_PATH, t).peer_addr(attacker)).await;
        assert_eq!(
            r.status,
            StatusCode::TOO_MANY_REQUESTS,
            "the flood lifted the attacker's block: {r:?}"
        );
    }
    // Others are still served.
    let r = call(&app, get(CONFIG_PATH, &token).peer_addr(peer("192.0.2.7"))).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{r:?}");
}

#[actix_web::test]
async fn an_oversized_head_is_refused_before_authentication() {
    let env = Env::new();
    let (_, token) = env.domain("acme.com").await;
    let limits = web::Data::new(Limits::new(LimitsConfig {
        max_header_bytes: 2048,
        ..LimitsConfig::default()
    }));
    let app = actix_web::test::init_service(oidcvault::app_with_limits(env.data, limits)).await;
    let big = "x".repeat(3000);
    // No token at all: still 431, not 401 (refused before anything else).
    let r = call(
        &app,
        TestRequest::get()
            .uri(CONFIG_PATH)
            .insert_header(("X-Padding", big.as_str())),
    )
    .await;
    assert_eq!(
        r.status,
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        "{r:?}"
    );
    assert!(r.body["detail"].as_str().unwrap().contains("2048"), "{r:?}");
    let r = call(&app, get(&format!("{CONFIG_PATH}?{big}"), &token)).await;
    assert_eq!(
        r.status,
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        "{r:?}"
    );
    let r = call(&app, get(CONFIG_PATH, &token)).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "a normal request: {r:?}");
}
