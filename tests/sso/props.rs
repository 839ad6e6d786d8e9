//! Property: any query string to `/sso/authorize` and `/sso/callback`, through
//! the real app, is a 4xx page or a redirect to a registered URI (or, for a valid
//! authorization request, to the provider's authorization endpoint): never a
//! 5xx, never a redirect anywhere else. Cases mix the real values (the
//! application, its URI, the domain, states of pending sign-ins with their
//! provider codes) with garbage. `PROPTEST_CASES` raises the count.

use actix_web::test::TestRequest;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

use super::*;
use crate::app;

fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One query parameter: a known name or any, a value from `values` or any; or
/// raw text (not encoded) of the characters a query may hold.
fn param(names: Vec<&'static str>, values: Vec<String>) -> impl Strategy<Value = String> {
    let name = prop_oneof![
        4 => proptest::sample::select(names).prop_map(str::to_owned),
        1 => "[a-z_]{0,12}",
    ];
    let value = prop_oneof![
        4 => proptest::sample::select(values),
        2 => ".{0,40}",
        1 => Just(String::new()),
    ];
    let encoded = (name, value).prop_map(|(n, v)| {
        url::form_urlencoded::Serializer::new(String::new())
            .append_pair(&n, &v)
            .finish()
    });
    prop_oneof![
        6 => encoded,
        1 => "[a-zA-Z0-9%&=+._~/:?-]{0,30}",
    ]
}

fn query(names: Vec<&'static str>, values: Vec<String>) -> impl Strategy<Value = String> {
    prop::collection::vec(param(names, values), 0..8).prop_map(|p| p.join("&"))
}

#[test]
fn any_query_to_authorize_and_callback_is_a_4xx_or_a_redirect_to_a_registered_uri() {
    let sys = actix_web::rt::System::new();
    let w = sys.block_on(World::new());
    let app = sys.block_on(async { app!(w.env) });
    let creds = sys.block_on(w.setup(&app));
    let idp_authorize = format!("{}/authorize", w.idp.origin());
    // Pending sign-ins: their provider states and codes are real values.
    let browser = std::cell::RefCell::new(Browser::new());
    let mut values: Vec<String> = vec![
        creds.client_id.clone(),
        creds.redirect_uri.clone(),
        format!("{}?x=1", creds.redirect_uri),
        "https://evil.example/".into(),
        DOMAIN.into(),
        "alice@acme.com".into(),
        "S256".into(),
        "plain".into(),
        stub_idp::s256(APP_VERIFIER),
        w.idp.issuer(),
        "access_denied".into(),
    ];
    let mut pending: Vec<String> = Vec::new();
    for i in 0..8 {
        let callback = sys
            .block_on(browser.borrow_mut().follow_app_until(
                &app,
                PUBLIC_URL,
                &w.idp.origin(),
                &authorize_path(&creds, &format!("pending-{i}"), &[]),
                |u| u.contains("/sso/callback"),
            ))
            .unwrap_or_else(|l| panic!("stopped at {l:?}"));
        let u = url::Url::parse(&callback).unwrap();
        values.extend(u.query_pairs().map(|(_, v)| v.into_owned()));
        pending.push(u.query().unwrap_or_default().to_owned());
    }
    // Prefixes that make a case valid as far as they go.
    let valid_authorize = authorize_path(&creds, "prop-state", &[])
        .split_once('?')
        .map(|(_, q)| q.to_owned())
        .unwrap();
    let names = vec![
        "client_id",
        "redirect_uri",
        "state",
        "domain",
        "login_hint",
        "code_challenge",
        "code_challenge_method",
        "code",
        "iss",
        "error",
        "error_description",
    ];
    let strategy = (
        prop_oneof![Just("/sso/authorize"), Just("/sso/callback")],
        query(names, values),
        any::<bool>(),
        prop_oneof![2 => Just(None), 1 => (0..pending.len()).prop_map(Some)],
    );
    let seen = std::cell::RefCell::new(std::collections::BTreeMap::<String, u32>::new());
    let mut runner = TestRunner::new(Config {
        cases: cases(256),
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&strategy, |(path, q, with_cookie, prefix)| {
        let q = match (prefix, path) {
            (None, _) => q,
            (Some(_), "/sso/authorize") => format!("{valid_authorize}&{q}"),
            (Some(i), _) => format!("{}&{q}", pending[i]),
        };
        let uri = format!("{path}?{q}");
        let mut req = TestRequest::get().uri(&uri);
        if with_cookie {
            if let Some(c) = browser.borrow().cookie_header() {
                req = req.insert_header(("Cookie", c));
            }
        }
        let r = sys.block_on(call(&app, req));
        let status = r.status.as_u16();
        let location = r.header("location").unwrap_or_default().to_owned();
        let shown = format!(
            "GET {uri} (cookie: {with_cookie}) -> {status} {location} {}",
            r.raw
        );
        prop_assert!(status < 500, "a 5xx: {shown}");
        prop_assert!(
            !(200..300).contains(&status),
            "a 2xx (expected a page or a redirect): {shown}"
        );
        let kind = if (300..400).contains(&status) {
            let target = location.split('?').next().unwrap_or_default();
            let to_app = target == creds.redirect_uri;
            let to_idp = path == "/sso/authorize" && target == idp_authorize;
            prop_assert!(to_app || to_idp, "a redirect elsewhere: {shown}");
            if to_app {
                "app"
            } else {
                "idp"
            }
        } else {
            "page"
        };
        *seen
            .borrow_mut()
            .entry(format!("{path} {status} {kind}"))
            .or_default() += 1;
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let seen = seen.into_inner();
    eprintln!("sso query property: {seen:?}");
    // The generator reaches the real paths, not only the refusals.
    for needed in [
        "/sso/authorize 400 page",
        "/sso/authorize 302 idp",
        "/sso/callback 400 page",
    ] {
        assert!(
            seen.contains_key(needed),
            "no case gave {needed:?}: the generator misses a path ({seen:?})"
        );
    }
}
