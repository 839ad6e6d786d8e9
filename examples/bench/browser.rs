//! The sign-in benchmark's "browsers": one thread each, one `ureq` agent each
//! (its own keep-alive connections), redirects not followed (each hop is a
//! step), the broker's cookie kept by hand (ureq's cookie store is a crate
//! feature the server's own outbound client must not get).
//!
//! Two loops: [`Browser::sign_in`], the whole flow through the broker as an
//! application and a browser drive it, and [`Browser::idp_round_trips`], only
//! the two calls a sign-in makes to the identity provider (authorize and token
//! exchange), without the broker: the baseline.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::idp::{basic, random_value, s256};

/// Everything a browser needs to know, fixed at setup.
pub struct Ctx {
    /// `http://ADDR` of oidcvault (its `server.public_url`).
    pub broker: String,
    pub idp_issuer: String,
    pub idp_authorize: String,
    pub idp_token: String,
    pub idp_client_id: String,
    pub idp_client_secret: String,
    /// The enterprise domain (and the users' e-mail domain).
    pub domain: String,
    pub app_client_id: String,
    pub app_client_secret: String,
    pub app_redirect_uri: String,
    /// Users are `user<N>@domain`, N cycling over this many.
    pub users: u64,
    pub next_user: AtomicU64,
}

impl Ctx {
    pub fn callback_url(&self) -> String {
        format!("{}/sso/callback", self.broker)
    }

    fn user(&self) -> String {
        let n = self.next_user.fetch_add(1, Ordering::Relaxed) % self.users.max(1);
        format!("user{n}@{}", self.domain)
    }
}

/// Time of each step of a sign-in, in microseconds: authorize at the broker,
/// authorize at the IdP, the callback (where the broker calls the IdP), the
/// application's token request.
pub type Steps = [u64; 4];
pub const STEP_NAMES: [&str; 4] = ["authorize", "idp_authorize", "callback", "token"];

pub struct Browser {
    agent: ureq::Agent,
    /// `name=value` of the broker's binding cookie, once set.
    cookie: Option<String>,
}

/// A response read to its end (so that the connection goes back to the pool).
struct Answer {
    status: u16,
    location: Option<String>,
    set_cookie: Vec<String>,
    body: String,
}

fn answer(what: &str, r: Result<ureq::Response, ureq::Error>) -> Result<Answer, String> {
    let resp = match r {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => return Err(format!("{what}: {e}")),
    };
    let status = resp.status();
    let location = resp.header("Location").map(str::to_owned);
    let set_cookie = resp
        .all("Set-Cookie")
        .iter()
        .map(|s| s.to_string())
        .collect();
    let body = resp.into_string().unwrap_or_default();
    Ok(Answer {
        status,
        location,
        set_cookie,
        body,
    })
}

fn cut(s: &str) -> &str {
    match s.char_indices().nth(300) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// The 302 of a step and its Location, or what came instead.
fn redirect(what: &str, a: &Answer) -> Result<url::Url, String> {
    match (&a.status, &a.location) {
        (302 | 303, Some(loc)) => {
            url::Url::parse(loc).map_err(|e| format!("{what}: Location {loc:?}: {e}"))
        }
        _ => Err(format!(
            "{what}: HTTP {} (Location {:?}) {:?}",
            a.status,
            a.location,
            cut(&a.body)
        )),
    }
}

fn param(url: &url::Url, name: &str) -> Option<String> {
    url.query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

fn starts_with(url: &url::Url, prefix: &str) -> bool {
    url.as_str().starts_with(prefix)
}

fn us(t: Instant) -> u64 {
    t.elapsed().as_micros() as u64
}

impl Browser {
    pub fn new() -> Self {
        Self {
            agent: ureq::AgentBuilder::new()
                .redirects(0)
                .timeout(Duration::from_secs(30))
                .max_idle_connections_per_host(4)
                .build(),
            cookie: None,
        }
    }

    /// One whole sign-in: /sso/authorize → IdP → /sso/callback → the app's
    /// /sso/token. Checks every hop, the state, and the profile's e-mail.
    pub fn sign_in(&mut self, ctx: &Ctx) -> Result<Steps, String> {
        let mut steps = [0u64; 4];
        let state = random_value();
        let verifier = random_value();
        let email = ctx.user();
        let mut url =
            url::Url::parse(&format!("{}/sso/authorize", ctx.broker)).map_err(|e| e.to_string())?;
        url.query_pairs_mut()
            .append_pair("client_id", &ctx.app_client_id)
            .append_pair("redirect_uri", &ctx.app_redirect_uri)
            .append_pair("state", &state)
            .append_pair("login_hint", &email)
            .append_pair("code_challenge", &s256(&verifier))
            .append_pair("code_challenge_method", "S256");

        // 1. The application sends the browser to the broker.
        let t = Instant::now();
        let mut req = self.agent.get(url.as_str());
        if let Some(c) = &self.cookie {
            req = req.set("Cookie", c);
        }
        let a = answer("authorize", req.call())?;
        steps[0] = us(t);
        let to_idp = redirect("authorize", &a)?;
        if let Some(c) = a
            .set_cookie
            .iter()
            .filter_map(|c| c.split(';').next())
            .find(|c| c.contains("oidcvault_sso="))
        {
            self.cookie = Some(c.trim().to_owned());
        }
        if !starts_with(&to_idp, &ctx.idp_authorize) {
            return Err(format!("authorize: redirected to {to_idp}, not the IdP"));
        }
        let cookie = self
            .cookie
            .clone()
            .ok_or("authorize: no oidcvault_sso cookie set")?;

        // 2. The IdP (no login page) sends it back to the broker's callback.
        let t = Instant::now();
        let a = answer("idp authorize", self.agent.get(to_idp.as_str()).call())?;
        steps[1] = us(t);
        let to_callback = redirect("idp authorize", &a)?;
        if !starts_with(&to_callback, &ctx.callback_url()) {
            return Err(format!("idp authorize: redirected to {to_callback}"));
        }

        // 3. The callback: the broker exchanges the code, validates the ID
        //    token, mints a code for the application.
        let t = Instant::now();
        let a = answer(
            "callback",
            self.agent
                .get(to_callback.as_str())
                .set("Cookie", &cookie)
                .call(),
        )?;
        steps[2] = us(t);
        let to_app = redirect("callback", &a)?;
        if !starts_with(&to_app, &ctx.app_redirect_uri) {
            return Err(format!("callback: redirected to {to_app}"));
        }
        if let Some(err) = param(&to_app, "error") {
            return Err(format!(
                "callback: error={err} ({})",
                param(&to_app, "error_description").unwrap_or_default()
            ));
        }
        if param(&to_app, "state").as_deref() != Some(state.as_str()) {
            return Err("callback: the application's state did not come back".into());
        }
        let code = param(&to_app, "code").ok_or("callback: no code")?;

        // 4. The application redeems the code.
        let t = Instant::now();
        let a = answer(
            "token",
            self.agent
                .post(&format!("{}/sso/token", ctx.broker))
                .set(
                    "Authorization",
                    &basic(&ctx.app_client_id, &ctx.app_client_secret),
                )
                .send_form(&[
                    ("grant_type", "authorization_code"),
                    ("code", &code),
                    ("redirect_uri", &ctx.app_redirect_uri),
                    ("code_verifier", &verifier),
                ]),
        )?;
        steps[3] = us(t);
        if a.status != 200 {
            return Err(format!("token: HTTP {} {:?}", a.status, cut(&a.body)));
        }
        let v: Value = serde_json::from_str(&a.body)
            .map_err(|e| format!("token: not JSON ({e}): {:?}", cut(&a.body)))?;
        if v["profile"]["email"].as_str() != Some(email.as_str()) {
            return Err(format!("token: profile for {email} is {}", v["profile"]));
        }
        Ok(steps)
    }

    /// The baseline: what a sign-in costs at the IdP alone. Authorize (302
    /// with a code), then the token exchange with client_secret_basic and the
    /// PKCE verifier; the answer must hold an ID token. Timed as steps 1 (IdP
    /// authorize) and 2 (the token exchange, the IdP's part of a callback).
    pub fn idp_round_trips(&mut self, ctx: &Ctx) -> Result<Steps, String> {
        self.idp_flow(ctx, &random_value()).map(|(steps, _)| steps)
    }

    /// [`Browser::idp_round_trips`] with a given nonce; also the token answer.
    pub fn idp_flow(&mut self, ctx: &Ctx, nonce: &str) -> Result<(Steps, Value), String> {
        let mut steps = [0u64; 4];
        let state = random_value();
        let verifier = random_value();
        let redirect_uri = ctx.callback_url();
        let mut url = url::Url::parse(&ctx.idp_authorize).map_err(|e| e.to_string())?;
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &ctx.idp_client_id)
            .append_pair("redirect_uri", &redirect_uri)
            .append_pair("scope", "openid email profile")
            .append_pair("state", &state)
            .append_pair("nonce", nonce)
            .append_pair("code_challenge", &s256(&verifier))
            .append_pair("code_challenge_method", "S256")
            .append_pair("login_hint", &ctx.user());
        let t = Instant::now();
        let a = answer("idp authorize", self.agent.get(url.as_str()).call())?;
        steps[1] = us(t);
        let back = redirect("idp authorize", &a)?;
        if param(&back, "state").as_deref() != Some(state.as_str()) {
            return Err("idp authorize: state did not come back".into());
        }
        let code = param(&back, "code").ok_or("idp authorize: no code")?;
        let t = Instant::now();
        let a = answer(
            "idp token",
            self.agent
                .post(&ctx.idp_token)
                .set(
                    "Authorization",
                    &basic(&ctx.idp_client_id, &ctx.idp_client_secret),
                )
                .send_form(&[
                    ("grant_type", "authorization_code"),
                    ("code", &code),
                    ("redirect_uri", &redirect_uri),
                    ("code_verifier", &verifier),
                ]),
        )?;
        steps[2] = us(t);
        let v: Value = serde_json::from_str(&a.body).unwrap_or(Value::Null);
        if a.status != 200 || !v["id_token"].is_string() {
            return Err(format!("idp token: HTTP {} {:?}", a.status, cut(&a.body)));
        }
        Ok((steps, v))
    }
}

/// What one browser thread saw during a run.
#[derive(Default)]
pub struct Tally {
    pub latencies_us: Vec<u64>,
    pub step_sums_us: Steps,
    pub failures: u64,
    /// The first few failures, verbatim.
    pub samples: Vec<String>,
}

impl Tally {
    pub fn merge(&mut self, other: Tally) {
        self.latencies_us.extend(other.latencies_us);
        for (a, b) in self.step_sums_us.iter_mut().zip(other.step_sums_us) {
            *a += b;
        }
        self.failures += other.failures;
        for s in other.samples {
            if self.samples.len() < 8 {
                self.samples.push(s);
            }
        }
    }
}

/// Loop `kind` until `deadline`; a failed flow counts and the loop goes on
/// (a fresh browser, as a user would retry).
pub fn run_until(ctx: &Ctx, baseline: bool, deadline: Instant) -> Tally {
    let mut b = Browser::new();
    let mut tally = Tally::default();
    while Instant::now() < deadline {
        let t = Instant::now();
        let r = if baseline {
            b.idp_round_trips(ctx)
        } else {
            b.sign_in(ctx)
        };
        match r {
            Ok(steps) => {
                tally.latencies_us.push(us(t));
                for (a, s) in tally.step_sums_us.iter_mut().zip(steps) {
                    *a += s;
                }
            }
            Err(e) => {
                tally.failures += 1;
                if tally.samples.len() < 3 {
                    tally.samples.push(e);
                }
                b = Browser::new();
                // A broker that refuses at once must not turn the run into a spin.
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
    tally
}
