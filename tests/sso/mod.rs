//! The sign-in broker (`/sso/authorize`, `/sso/callback`, `/sso/token`) against
//! stub OpenID Providers on loopback (`harness::stub_idp`), a "browser" following
//! the redirects (`harness::sso_browser`), and the application's side done by the
//! test (it redeems the code with its credentials):
//!
//! - `flow`: the happy path (the provider's request, the cookie, the profile, a
//!   stable `id`), two tabs at once, `client_secret_post`, userinfo;
//! - `refusals`: every ID token, provider answer and browser the broker must
//!   refuse: the application gets its `error` and `state`, no code, and an
//!   `sso.login` audit event names the reason;
//! - `more_refusals`: refusals beyond the list (the provider's token
//!   responses and failures, HS256, required claims, code injection, userinfo);
//! - `token`: `/sso/token` (RFC 6749 §5.2 errors, one redemption per code);
//! - `hardening`: what the contract implies beyond the list (the
//!   `__Host-` cookie, the secret only to the bound token endpoint, injection
//!   through the provider's words, removed applications, concurrent callbacks,
//!   bounds and expiries);
//! - `props`: any query string to `/sso/authorize` and `/sso/callback` is a 4xx
//!   page or a redirect to a registered URI or the provider, never a 5xx;
//! - `admin`: the callback URL to register, "Try sign-in" (each check, no
//!   code), the sign-in metrics;
//! - `binary`: through the real binary over TCP: a sign-in end to end, and
//!   `kill -9` during redemptions never lets a code be redeemed twice.
//!
//! In process, `server.public_url` is an address nothing listens on: the browser
//! hands requests to that origin to the in-process app.

use actix_web::body::MessageBody;
use actix_web::dev::{Service, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::test::TestRequest;
use base64::Engine;
use serde_json::{json, Value};

use crate::harness::in_process::*;
use crate::harness::sso_browser::{Browser, Landing};
use crate::harness::stub_idp::{self, StubIdp};

mod admin;
mod binary;
mod flow;
mod hardening;
mod more_refusals;
mod props;
mod readme;
mod refusals;
mod token;

/// The broker's public URL in process (never listened on).
const PUBLIC_URL: &str = "http://127.0.0.1:18443";
/// The enterprise domain the stub provider's users belong to.
const DOMAIN: &str = "acme.com";
/// The application's registered redirect URI (nothing listens there either: the
/// browser stops at it).
const APP_REDIRECT: &str = "http://127.0.0.1:3999/callback";
const APPS: &str = "/api/v1/admin/apps/";
const AUTHORIZE: &str = "/sso/authorize";
const TOKEN: &str = "/sso/token";
/// The application's PKCE verifier, when a test sends a challenge.
const APP_VERIFIER: &str = "app-side-pkce-verifier-0123456789-abcdefghijklmnop";

/// `[server] public_url`, `[sso]` and outbound to loopback (the stub provider),
/// with a short outbound timeout (the hanging token endpoint).
fn config(public_url: &str) -> String {
    config_with(public_url, "")
}

/// As [`config`], with `sso_extra` lines in `[sso]`.
fn config_with(public_url: &str, sso_extra: &str) -> String {
    // No per-address limit unless the test sets one (in process, requests have
    // no address anyway; over TCP they all come from 127.0.0.1).
    let limit = if sso_extra.contains("authorize_per_address_per_minute") {
        ""
    } else {
        "authorize_per_address_per_minute = 100000\n"
    };
    format!(
        "[server]\npublic_url = \"{public_url}\"\n\
         [sso]\nclock_skew_secs = 120\n{limit}{sso_extra}\
         [outbound]\nresolve_discovery_on_save = true\n\
         allow_http_hosts = [\"127.0.0.1\"]\nallow_private_hosts = [\"127.0.0.1\"]\n\
         connect_timeout_secs = 2\ntimeout_secs = 3\n"
    )
}

/// An application as `POST /api/v1/admin/apps/` returned it.
#[derive(Debug, Clone)]
struct AppCreds {
    id: u64,
    client_id: String,
    client_secret: String,
    redirect_uri: String,
}

impl AppCreds {
    fn from_json(v: &Value) -> Self {
        Self {
            id: v["id"].as_u64().unwrap_or_else(|| panic!("no id in {v}")),
            client_id: v["client_id"].as_str().unwrap().to_owned(),
            client_secret: v["client_secret"].as_str().unwrap().to_owned(),
            redirect_uri: v["redirect_uris"][0].as_str().unwrap().to_owned(),
        }
    }

    fn basic(&self) -> String {
        basic(&self.client_id, &self.client_secret)
    }
}

fn basic(id: &str, secret: &str) -> String {
    let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", enc(id), enc(secret)))
    )
}

/// `path?k=v&...`, encoded.
fn with_query(path: &str, params: &[(&str, &str)]) -> String {
    let q: String = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params)
        .finish();
    format!("{path}?{q}")
}

/// The `/sso/authorize` path for `app` with the application `state`, for
/// `domain=acme.com`, plus `extra` parameters.
fn authorize_path(app: &AppCreds, state: &str, extra: &[(&str, &str)]) -> String {
    let mut params = vec![
        ("client_id", app.client_id.as_str()),
        ("redirect_uri", app.redirect_uri.as_str()),
        ("state", state),
    ];
    if !extra
        .iter()
        .any(|(n, _)| *n == "login_hint" || *n == "domain")
    {
        params.push(("domain", DOMAIN));
    }
    params.extend_from_slice(extra);
    with_query(AUTHORIZE, &params)
}

/// The same with an S256 challenge of [`APP_VERIFIER`].
fn authorize_pkce(app: &AppCreds, state: &str) -> String {
    let challenge = stub_idp::s256(APP_VERIFIER);
    authorize_path(
        app,
        state,
        &[
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
        ],
    )
}

/// The test's world: a vault whose broker talks to one stub provider.
struct World {
    env: Env,
    idp: StubIdp,
    operator: String,
    /// A token of the domain (its admin).
    domain_token: String,
    public_url: String,
}

impl World {
    async fn new() -> Self {
        Self::with(PUBLIC_URL, "").await
    }

    /// With another `server.public_url` and `sso_extra` lines in `[sso]`.
    async fn with(public_url: &str, sso_extra: &str) -> Self {
        let idp = StubIdp::start();
        let env = Env::with_config(&config_with(public_url, sso_extra));
        let (_, domain_token) = env.domain(DOMAIN).await;
        let operator = env.operator().await;
        Self {
            env,
            idp,
            operator,
            domain_token,
            public_url: public_url.to_owned(),
        }
    }

    /// Configure the domain with the stub provider and register an application.
    async fn setup<S, B>(&self, app: &S) -> AppCreds
    where
        S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
        B: MessageBody,
    {
        let body = json!({
            "client_id": stub_idp::CLIENT_ID,
            "client_secret": stub_idp::CLIENT_SECRET,
            "discovery_url": self.idp.discovery_url(),
        });
        let r = call(
            app,
            post_json(CONFIG_PATH, &self.operator, &body.to_string())
                .insert_header(("X-Enterprise-Domain", DOMAIN)),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "configure {DOMAIN}: {r:?}");
        self.add_app(app, "Test app", APP_REDIRECT).await
    }

    async fn add_app<S, B>(&self, app: &S, name: &str, redirect_uri: &str) -> AppCreds
    where
        S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
        B: MessageBody,
    {
        let body = json!({"name": name, "redirect_uris": [redirect_uri]});
        let r = call(app, post_json(APPS, &self.operator, &body.to_string())).await;
        assert_eq!(r.status, StatusCode::CREATED, "create an app: {r:?}");
        AppCreds::from_json(&r.body)
    }

    /// A sign-in from `start` in `browser`, to where it ends.
    async fn sign_in<S, B>(&self, app: &S, browser: &mut Browser, start: &str) -> Landing
    where
        S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
        B: MessageBody,
    {
        browser
            .follow_app(app, &self.public_url, &self.idp.origin(), start)
            .await
    }

    /// `sso.login` audit events, oldest first: (detail, whole event).
    fn logins(&self) -> Vec<(String, Value)> {
        self.events("sso.login")
    }

    fn events(&self, action: &str) -> Vec<(String, Value)> {
        let (events, _) = self
            .env
            .vault
            .audit(&oidcvault::vault::AuditQuery {
                limit: 1000,
                ..Default::default()
            })
            .unwrap();
        events
            .into_iter()
            .filter(|e| e.action == action)
            .map(|e| {
                let whole = json!({
                    "action": e.action, "domain": e.domain, "actor": e.actor,
                    "fields": e.fields, "detail": e.detail,
                });
                (e.detail.unwrap_or_default(), whole)
            })
            .collect()
    }
}

/// `POST /sso/token` with Basic credentials of `app`.
async fn redeem<S, B>(
    app: &S,
    creds: &AppCreds,
    code: &str,
    redirect_uri: &str,
    verifier: Option<&str>,
) -> Reply
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    let mut form = vec![
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", redirect_uri),
    ];
    if let Some(v) = verifier {
        form.push(("code_verifier", v));
    }
    post_form(app, Some(&creds.basic()), &form).await
}

/// `POST /sso/token` with this form and optional `Authorization`.
async fn post_form<S, B>(app: &S, authorization: Option<&str>, form: &[(&str, &str)]) -> Reply
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    let body: String = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish();
    let mut req = TestRequest::post()
        .uri(TOKEN)
        .insert_header(("Content-Type", "application/x-www-form-urlencoded"))
        .set_payload(body);
    if let Some(a) = authorization {
        req = req.insert_header(("Authorization", a.to_owned()));
    }
    call(app, req).await
}

/// A landing at the application with a code and the application's state.
fn expect_code(landing: &Landing, state: &str, browser: &Browser) -> String {
    assert!(
        landing.url().starts_with(APP_REDIRECT) && landing.param("error").is_none(),
        "expected a code at the application, got {landing:?}\npath:\n{}",
        browser.trace()
    );
    assert_eq!(landing.param("state"), Some(state), "{landing:?}");
    landing
        .param("code")
        .unwrap_or_else(|| panic!("no code: {landing:?}\npath:\n{}", browser.trace()))
        .to_owned()
}

/// A refused sign-in: the application gets `error` (one of `errors`) and its
/// state, no code; the newest `sso.login` event is a failure naming `reason`.
fn expect_refused(
    world: &World,
    landing: &Landing,
    browser: &Browser,
    state: &str,
    errors: &[&str],
    reason: &str,
) {
    let path = browser.trace();
    assert!(
        landing.url().starts_with(APP_REDIRECT),
        "expected a redirect to the application, got {landing:?}\npath:\n{path}"
    );
    assert_eq!(landing.param("code"), None, "a code was minted:\n{path}");
    let error = landing.param("error").unwrap_or_default();
    assert!(
        errors.contains(&error),
        "error {error:?}, expected one of {errors:?}: {landing:?}\npath:\n{path}"
    );
    assert_eq!(landing.param("state"), Some(state), "{landing:?}");
    expect_failure_event(world, reason);
}

/// The newest `sso.login` event is a failure whose detail names `reason`.
fn expect_failure_event(world: &World, reason: &str) {
    let logins = world.logins();
    let (detail, whole) = logins
        .last()
        .unwrap_or_else(|| panic!("no sso.login event (looking for {reason:?})"));
    assert!(
        detail.contains(reason) && !detail.contains("success"),
        "the last sso.login event does not name the failure {reason:?}: {whole}\nall: {logins:?}"
    );
}

/// A 400 HTML "Sign-in failed" page, no redirect.
fn expect_error_page(landing: &Landing, browser: &Browser) {
    assert_eq!(
        landing.status(),
        Some(400),
        "expected a 400 page, got {landing:?}\npath:\n{}",
        browser.trace()
    );
    let Landing::Page {
        content_type, body, ..
    } = landing
    else {
        unreachable!()
    };
    assert!(content_type.starts_with("text/html"), "{landing:?}");
    assert!(body.contains("Sign-in failed"), "{body}");
}

/// What the application is told when the ID token or the provider fails (a
/// provider that is down or slow is `temporarily_unavailable` instead).
const BAD_TOKEN: &[&str] = &["access_denied"];
/// ... when the user may not sign in (e-mail outside the domain, unverified).
const DENIED: &[&str] = &["access_denied"];

/// A world, an application, the provider prepared, one sign-in: refused.
async fn refused(prepare: impl FnOnce(&StubIdp), errors: &[&str], reason: &str) -> World {
    let w = World::new().await;
    let app = crate::app!(w.env);
    let creds = w.setup(&app).await;
    prepare(&w.idp);
    let mut browser = Browser::new();
    let landing = w
        .sign_in(
            &app,
            &mut browser,
            &authorize_path(&creds, "st-refused", &[]),
        )
        .await;
    expect_refused(&w, &landing, &browser, "st-refused", errors, reason);
    w
}

/// The same, accepted: a code for the application.
async fn accepted(prepare: impl FnOnce(&StubIdp)) {
    let w = World::new().await;
    let app = crate::app!(w.env);
    let creds = w.setup(&app).await;
    prepare(&w.idp);
    let mut browser = Browser::new();
    let landing = w
        .sign_in(&app, &mut browser, &authorize_path(&creds, "st-ok", &[]))
        .await;
    expect_code(&landing, "st-ok", &browser);
}
