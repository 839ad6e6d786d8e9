//! A "browser" for the sign-in broker's tests: follows the redirects of
//! `/sso/authorize` → the provider's authorization endpoint → `/sso/callback`,
//! keeping the broker's cookies (by hand: name=value, removed by `Max-Age=0`),
//! and stops where the flow ends: a redirect to anywhere that is neither the
//! broker nor the provider (the application, with `code`/`state` or `error`), or
//! a page (any answer that is not a redirect). The broker is the real binary over
//! TCP ([`Browser::follow_tcp`]) or the in-process app ([`Browser::follow_app`],
//! whose origin is `server.public_url`); the provider is always reached over TCP.
//! Every hop is kept, so a failing test prints the whole path.

use std::fmt::Write as _;

use actix_web::body::MessageBody;
use actix_web::dev::{Service, ServiceResponse};
use actix_web::test::TestRequest;

/// The most redirects a sign-in may take before the browser gives up.
const MAX_HOPS: usize = 10;

/// Where a sign-in ended.
#[derive(Debug, Clone)]
pub enum Landing {
    /// A redirect to a URL outside the broker and the provider (the application).
    App {
        url: String,
        params: Vec<(String, String)>,
    },
    /// A page: an answer that is not a redirect, at `url`.
    Page {
        url: String,
        status: u16,
        content_type: String,
        body: String,
    },
}

impl Landing {
    /// A query parameter of the application redirect (`None` on a page).
    pub fn param(&self, name: &str) -> Option<&str> {
        match self {
            Landing::App { params, .. } => params
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str()),
            Landing::Page { .. } => None,
        }
    }

    pub fn url(&self) -> &str {
        match self {
            Landing::App { url, .. } | Landing::Page { url, .. } => url,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            Landing::App { .. } => None,
            Landing::Page { status, .. } => Some(*status),
        }
    }
}

/// One answer, whoever gave it.
#[derive(Debug)]
struct Hop {
    status: u16,
    location: Option<String>,
    set_cookies: Vec<String>,
    content_type: String,
    body: String,
}

/// A browser: a cookie jar for the broker's origin and the path so far.
#[derive(Debug, Default, Clone)]
pub struct Browser {
    /// The broker's cookies, name and value.
    pub cookies: Vec<(String, String)>,
    /// Every request and its answer, for failure messages.
    pub hops: Vec<String>,
}

fn origin_of(url: &str) -> String {
    url::Url::parse(url)
        .map(|u| u.origin().ascii_serialization())
        .unwrap_or_default()
}

impl Browser {
    pub fn new() -> Self {
        Self::default()
    }

    /// `Cookie:` header value, or `None` with an empty jar.
    pub fn cookie_header(&self) -> Option<String> {
        (!self.cookies.is_empty()).then(|| {
            self.cookies
                .iter()
                .map(|(n, v)| format!("{n}={v}"))
                .collect::<Vec<_>>()
                .join("; ")
        })
    }

    /// The path so far, one hop a line.
    pub fn trace(&self) -> String {
        self.hops.join("\n")
    }

    /// Keep the cookies of `Set-Cookie` values of the broker.
    pub fn keep_cookies(&mut self, set_cookies: &[String]) {
        for sc in set_cookies {
            let mut parts = sc.split(';');
            let Some((name, value)) = parts.next().and_then(|p| p.split_once('=')) else {
                continue;
            };
            let (name, value) = (name.trim().to_owned(), value.trim().to_owned());
            let expired = parts.any(|a| {
                let a = a.trim().to_ascii_lowercase();
                a == "max-age=0" || a.starts_with("max-age=-")
            });
            self.cookies.retain(|(n, _)| *n != name);
            if !expired && !value.is_empty() {
                self.cookies.push((name, value));
            }
        }
    }

    /// Record a hop; the next URL to go to, or where the flow ended.
    fn after(&mut self, url: &str, hop: Hop, broker: &str) -> Result<String, Landing> {
        let mut line = format!("GET {url} -> {}", hop.status);
        if let Some(l) = &hop.location {
            let _ = write!(line, " Location: {l}");
        }
        for c in &hop.set_cookies {
            let _ = write!(line, " Set-Cookie: {c}");
        }
        if hop.location.is_none() {
            let _ = write!(line, " {}", super::text::tail(&hop.body, 300));
        }
        self.hops.push(line);
        if origin_of(url) == broker {
            self.keep_cookies(&hop.set_cookies);
        }
        match (hop.status, hop.location) {
            (300..=399, Some(location)) => {
                let next = url::Url::parse(url)
                    .and_then(|base| base.join(&location))
                    .map(String::from)
                    .unwrap_or(location);
                Ok(next)
            }
            (status, _) => Err(Landing::Page {
                url: url.to_owned(),
                status,
                content_type: hop.content_type,
                body: hop.body,
            }),
        }
    }

    /// Whether the flow is over at `url` (not the broker, not the provider).
    fn landed(&self, url: &str, broker: &str, idp: &str) -> Option<Landing> {
        let o = origin_of(url);
        (o != broker && o != idp).then(|| Landing::App {
            url: url.to_owned(),
            params: url::Url::parse(url)
                .map(|u| u.query_pairs().into_owned().collect())
                .unwrap_or_default(),
        })
    }

    fn panic_too_long(&self) -> ! {
        panic!(
            "more than {MAX_HOPS} redirects; the path:\n{}",
            self.trace()
        )
    }

    /// Start at `start` (a path of the broker at `broker_base`, the real binary,
    /// or an absolute URL) and follow the flow over TCP.
    pub fn follow_tcp(&mut self, broker_base: &str, idp_origin: &str, start: &str) -> Landing {
        let broker = origin_of(broker_base);
        let mut url = if start.starts_with('/') {
            format!("{broker_base}{start}")
        } else {
            start.to_owned()
        };
        for _ in 0..MAX_HOPS {
            if let Some(l) = self.landed(&url, &broker, idp_origin) {
                return l;
            }
            let cookie = (origin_of(&url) == broker)
                .then(|| self.cookie_header())
                .flatten();
            let hop = get_tcp(&url, cookie.as_deref());
            match self.after(&url, hop, &broker) {
                Ok(next) => url = next,
                Err(page) => return page,
            }
        }
        self.panic_too_long()
    }

    /// As [`Browser::follow_tcp`], the broker being the in-process `app` whose
    /// `server.public_url` is `public_url`.
    pub async fn follow_app<S, B>(
        &mut self,
        app: &S,
        public_url: &str,
        idp_origin: &str,
        start: &str,
    ) -> Landing
    where
        S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
        B: MessageBody,
    {
        match self
            .follow_app_until(app, public_url, idp_origin, start, |_| false)
            .await
        {
            Ok(url) => unreachable!("stopped at {url}"),
            Err(landing) => landing,
        }
    }

    /// As [`Browser::follow_app`], but stops before requesting a URL for which
    /// `stop` is true, and returns it (a tab that has not come back yet).
    pub async fn follow_app_until<S, B>(
        &mut self,
        app: &S,
        public_url: &str,
        idp_origin: &str,
        start: &str,
        stop: impl Fn(&str) -> bool,
    ) -> Result<String, Landing>
    where
        S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
        B: MessageBody,
    {
        let broker = origin_of(public_url);
        let mut url = if start.starts_with('/') {
            format!("{broker}{start}")
        } else {
            start.to_owned()
        };
        for _ in 0..MAX_HOPS {
            if let Some(l) = self.landed(&url, &broker, idp_origin) {
                return Err(l);
            }
            if stop(&url) {
                return Ok(url);
            }
            let hop = if origin_of(&url) == broker {
                let parsed = url::Url::parse(&url).expect("a broker URL");
                let path = match parsed.query() {
                    Some(q) => format!("{}?{q}", parsed.path()),
                    None => parsed.path().to_owned(),
                };
                let mut req = TestRequest::get().uri(&path);
                if let Some(c) = self.cookie_header() {
                    req = req.insert_header(("Cookie", c));
                }
                let res = actix_web::test::call_service(app, req.to_request()).await;
                let h = res.headers().clone();
                let one = |n: &str| h.get(n).and_then(|v| v.to_str().ok()).map(str::to_owned);
                let status = res.status().as_u16();
                let body = actix_web::test::read_body(res).await;
                Hop {
                    status,
                    location: one("location"),
                    set_cookies: h
                        .get_all("set-cookie")
                        .filter_map(|v| v.to_str().ok().map(str::to_owned))
                        .collect(),
                    content_type: one("content-type").unwrap_or_default(),
                    body: String::from_utf8_lossy(&body).into_owned(),
                }
            } else {
                let u = url.clone();
                actix_web::web::block(move || get_tcp(&u, None))
                    .await
                    .expect("the provider request")
            };
            match self.after(&url, hop, &broker) {
                Ok(next) => url = next,
                Err(page) => return Err(page),
            }
        }
        self.panic_too_long()
    }
}

/// GET without following redirects; any status is an answer.
fn get_tcp(url: &str, cookie: Option<&str>) -> Hop {
    let agent = ureq::AgentBuilder::new()
        .redirects(0)
        .max_idle_connections(0)
        .timeout(std::time::Duration::from_secs(60))
        .build();
    let mut req = agent.get(url);
    if let Some(c) = cookie {
        req = req.set("Cookie", c);
    }
    let res = match req.call() {
        Ok(r) | Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("GET {url}: {e}"),
    };
    let status = res.status();
    let location = res.header("location").map(str::to_owned);
    let set_cookies = res
        .all("set-cookie")
        .into_iter()
        .map(str::to_owned)
        .collect();
    let content_type = res.header("content-type").unwrap_or_default().to_owned();
    let body = res.into_string().unwrap_or_default();
    Hop {
        status,
        location,
        set_cookies,
        content_type,
        body,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::stub_http::{Reply, Stub};
    use crate::harness::stub_idp::{Answer, StubIdp, CLIENT_ID};

    /// A fake broker over TCP: `/start` sets a cookie and sends the browser to
    /// the provider, whose answer comes back to `/callback`, which needs the
    /// cookie and sends the browser on to the application.
    #[test]
    fn the_browser_follows_a_flow_keeping_the_brokers_cookie() {
        let idp = StubIdp::start();
        let idp_origin = idp.origin();
        let broker = Stub::start("127.0.0.1", {
            let idp_origin = idp_origin.clone();
            move |r| {
                let port_of = |h: Option<&str>| h.unwrap_or_default().to_owned();
                let me = format!("http://{}", port_of(r.header("host")));
                if r.path.starts_with("/start") {
                    let to = format!(
                        "{idp_origin}/authorize?client_id={CLIENT_ID}&state=xyz&redirect_uri={}",
                        url::form_urlencoded::byte_serialize(format!("{me}/callback").as_bytes())
                            .collect::<String>()
                    );
                    Reply::Raw {
                        status: 302,
                        headers: vec![
                            ("Location".into(), to),
                            ("Set-Cookie".into(), "b=1; Path=/; HttpOnly".into()),
                            ("Set-Cookie".into(), "gone=x; Max-Age=0".into()),
                        ],
                        body: Vec::new(),
                        no_length: false,
                    }
                } else if r.header("cookie") == Some("b=1") {
                    Reply::redirect(302, "http://127.0.0.1:9/app?code=c1&state=s")
                } else {
                    Reply::text(400, "text/html", "<h1>Sign-in failed</h1>")
                }
            }
        });
        let mut browser = Browser::new();
        let landing = browser.follow_tcp(&broker.origin(), &idp_origin, "/start");
        assert_eq!(landing.param("code"), Some("c1"), "{}", browser.trace());
        assert_eq!(browser.cookies, vec![("b".to_owned(), "1".to_owned())]);
        assert_eq!(browser.hops.len(), 3, "{}", browser.trace());
        // Without the cookie, the fake broker's page.
        idp.knobs().answer = Answer::Deny("no".into());
        let mut stranger = Browser::new();
        let landing = stranger.follow_tcp(&broker.origin(), &idp_origin, &{
            let cb = browser.hops[1]
                .split(" Location: ")
                .nth(1)
                .unwrap_or_default();
            cb.split(' ').next().unwrap_or_default().to_owned()
        });
        assert_eq!(landing.status(), Some(400), "{}", stranger.trace());
    }
}
