//! Outbound HTTP: the only way oidcvault talks to another server (OIDC discovery
//! and the connection test). Blocking (`ureq` 2 over rustls), so async callers
//! run it through `actix_web::web::block`.
//!
//! Every fetch goes through the SSRF guard ([`guard`]): the URL is checked
//! (https only unless allowlisted, no credentials), its host is resolved once
//! and every address checked, and the connection goes to exactly those
//! addresses (a pinned resolver, so a second DNS answer cannot switch it).
//! Redirects are followed by hand, within the same origin only (scheme, host
//! and port), each hop checked again; a POST follows none. Connect and total
//! timeouts bound a fetch, DNS included, and the body is read through `take`,
//! so no more than `outbound.max_response_bytes` is ever buffered. No proxy
//! from the environment is used.
//!
//! Outbound work is bounded: at most `outbound.max_concurrent_fetches` fetches
//! run at once over the whole server, and as many DNS lookups are in flight
//! (a lookup has no timeout of its own, so one given up at the deadline keeps
//! its slot until its thread ends). One more fails at once with
//! [`FetchError::Busy`] (the API answers 503 with `Retry-After`) instead of
//! queueing or starting another thread: a slow or hanging provider or resolver
//! cannot pile up threads or hold every blocking worker.
//!
//! One room, over 600 lines: the client, its pinned resolver, the redirect
//! loop and the fetch and lookup slots all guard the same path (the SSRF
//! guard's URL and address rules are apart, in [`guard`]).

mod config;
pub mod guard;

pub use config::OutboundConfig;

use std::fmt;
use std::io::Read;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use url::Url;

pub use guard::{classify, AddressClass, Policy, Refused};

/// Resolves a host name to addresses (the system resolver; tests inject one).
pub type ResolveFn = dyn Fn(&str, u16) -> std::io::Result<Vec<IpAddr>> + Send + Sync;

const USER_AGENT: &str = concat!("oidcvault/", env!("CARGO_PKG_VERSION"));

/// The outbound client's settings, as plain values (from `[outbound]`).
#[derive(Debug, Clone)]
pub struct Settings {
    pub connect_timeout: Duration,
    pub timeout: Duration,
    pub max_response_bytes: u64,
    pub max_redirects: u32,
    /// Fetches at once (and DNS lookups in flight) over every clone of the client.
    pub max_concurrent_fetches: usize,
    pub allow_http_hosts: Vec<String>,
    pub allow_private_hosts: Vec<String>,
    /// PEM file of extra trusted CA certificates.
    pub extra_ca_file: Option<std::path::PathBuf>,
    pub resolve_discovery_on_save: bool,
    /// Off: every fetch is refused before any DNS lookup or connection.
    pub enabled: bool,
}

impl Settings {
    /// From the `[outbound]` section; `extra_ca_file` is its CA file, resolved
    /// against the config file's folder by the caller.
    pub fn new(c: &OutboundConfig, extra_ca_file: Option<std::path::PathBuf>) -> Self {
        Self {
            connect_timeout: Duration::from_secs(c.connect_timeout_secs),
            timeout: Duration::from_secs(c.timeout_secs),
            max_response_bytes: c.max_response_bytes,
            max_redirects: c.max_redirects,
            max_concurrent_fetches: c.max_concurrent_fetches as usize,
            allow_http_hosts: c.allow_http_hosts.clone(),
            allow_private_hosts: c.allow_private_hosts.clone(),
            extra_ca_file,
            resolve_discovery_on_save: c.resolve_discovery_on_save,
            enabled: c.enabled,
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self::new(&OutboundConfig::default(), None)
    }
}

/// The outbound HTTP client with its guard.
#[derive(Clone)]
pub struct Outbound {
    policy: Policy,
    connect_timeout: Duration,
    timeout: Duration,
    max_response_bytes: u64,
    max_redirects: u32,
    resolve_discovery_on_save: bool,
    enabled: bool,
    tls: Arc<rustls::ClientConfig>,
    resolver: Arc<ResolveFn>,
    /// Fetches running now (shared by every clone).
    fetches: Arc<Slots>,
    /// DNS lookup threads alive now, abandoned ones included (shared by every clone).
    lookups: Arc<Slots>,
}

/// A counting limit without waiting: at most `max` [`Slot`]s exist at a time;
/// a slot is given back when dropped (so a thread that owns one gives it back
/// when it ends, however it ends).
#[derive(Debug)]
struct Slots {
    used: AtomicUsize,
    max: usize,
}

impl Slots {
    fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            used: AtomicUsize::new(0),
            max,
        })
    }

    /// A slot, or `None` when all `max` are taken.
    fn try_take(self: &Arc<Self>) -> Option<Slot> {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot(self.clone()))
    }
}

struct Slot(Arc<Slots>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.used.fetch_sub(1, Ordering::AcqRel);
    }
}

impl fmt::Debug for Outbound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Outbound")
            .field("policy", &self.policy)
            .field("connect_timeout", &self.connect_timeout)
            .field("timeout", &self.timeout)
            .field("max_response_bytes", &self.max_response_bytes)
            .field("max_redirects", &self.max_redirects)
            .field("fetches", &self.fetches)
            .field("lookups", &self.lookups)
            .finish_non_exhaustive()
    }
}

/// The system resolver.
fn system_resolve(host: &str, port: u16) -> std::io::Result<Vec<IpAddr>> {
    Ok((host, port).to_socket_addrs()?.map(|a| a.ip()).collect())
}

fn tls_config(extra_ca_file: Option<&Path>) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = extra_ca_file {
        let shown = path.display();
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .map_err(|e| format!("outbound.extra_ca_file {shown}: {e}"))?
            .collect::<Result<_, _>>()
            .map_err(|e| format!("outbound.extra_ca_file {shown}: {e}"))?;
        if certs.is_empty() {
            return Err(format!(
                "outbound.extra_ca_file {shown}: no PEM certificate in it"
            ));
        }
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| format!("outbound.extra_ca_file {shown}: {e}"))?;
        }
    }
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())
        .map(|b| b.with_root_certificates(roots).with_no_client_auth())
}

/// An answer to a fetch (any status: the caller decides what a status means).
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    /// The `Content-Type` header's media type, lower-cased, without parameters.
    pub content_type: Option<String>,
    pub body: Vec<u8>,
    /// The URL that answered (after same-host redirects).
    pub url: Url,
    /// The `Location` header of a redirect that was not followed.
    pub location: Option<String>,
}

impl Response {
    /// The body as JSON, when it is.
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

/// Why a fetch failed. Messages say what to check; they carry no secret (no
/// request header or body ever goes into one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchError {
    Refused {
        url: String,
        reason: Refused,
    },
    Dns {
        host: String,
        error: String,
    },
    Connect {
        url: String,
        error: String,
    },
    Timeout {
        url: String,
        after: Duration,
    },
    TooLarge {
        url: String,
        limit: u64,
    },
    Redirect {
        url: String,
        reason: String,
    },
    Failed {
        url: String,
        error: String,
    },
    /// Every slot is taken (`outbound.max_concurrent_fetches`): refused at once,
    /// nothing was looked up or sent.
    Busy {
        what: Busy,
        limit: usize,
    },
}

/// Which bound a [`FetchError::Busy`] met.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Busy {
    Fetches,
    Lookups,
}

impl fmt::Display for FetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FetchError::Refused { url, reason } => write!(f, "{url} is refused: {reason}"),
            FetchError::Dns { host, error } => write!(
                f,
                "could not resolve {host} ({error}); check the host name and the appliance's DNS"
            ),
            FetchError::Connect { url, error } => write!(
                f,
                "could not connect to {url} ({error}); check the URL and that the appliance can \
                 reach the provider"
            ),
            FetchError::Timeout { url, after } => write!(
                f,
                "{url} did not answer within {} s (outbound.timeout_secs)",
                after.as_secs_f32()
            ),
            FetchError::TooLarge { url, limit } => write!(
                f,
                "the answer of {url} is larger than {limit} bytes (outbound.max_response_bytes)"
            ),
            FetchError::Redirect { url, reason } => write!(f, "{url} redirects: {reason}"),
            FetchError::Failed { url, error } => write!(f, "fetching {url} failed: {error}"),
            FetchError::Busy { what, limit } => write!(
                f,
                "the server is busy: {limit} {} already (outbound.max_concurrent_fetches); \
                 nothing was sent, try again shortly",
                match what {
                    Busy::Fetches => "outbound fetches are running",
                    Busy::Lookups => "DNS lookups are in flight",
                }
            ),
        }
    }
}

impl std::error::Error for FetchError {}

fn is_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if matches!(
                io.kind(),
                std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
            ) {
                return true;
            }
        }
        if err.to_string().contains("timed out") {
            return true;
        }
        cur = err.source();
    }
    false
}

/// The request body of a POST: form-encoded bytes, wiped when dropped.
pub type FormBody = zeroize::Zeroizing<Vec<u8>>;

impl Outbound {
    pub fn new(settings: &Settings) -> Result<Self, String> {
        let policy = Policy::new(&settings.allow_http_hosts, &settings.allow_private_hosts)?;
        let tls = tls_config(settings.extra_ca_file.as_deref())?;
        Ok(Self {
            policy,
            connect_timeout: settings.connect_timeout,
            timeout: settings.timeout,
            max_response_bytes: settings.max_response_bytes,
            max_redirects: settings.max_redirects,
            resolve_discovery_on_save: settings.resolve_discovery_on_save,
            enabled: settings.enabled,
            tls: Arc::new(tls),
            resolver: Arc::new(system_resolve),
            fetches: Slots::new(settings.max_concurrent_fetches.max(1)),
            lookups: Slots::new(settings.max_concurrent_fetches.max(1)),
        })
    }

    /// Replace the name resolver (tests: names without DNS).
    pub fn with_resolver(
        mut self,
        resolver: impl Fn(&str, u16) -> std::io::Result<Vec<IpAddr>> + Send + Sync + 'static,
    ) -> Self {
        self.resolver = Arc::new(resolver);
        self
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    pub fn resolve_discovery_on_save(&self) -> bool {
        self.resolve_discovery_on_save
    }

    /// One of the `outbound.max_concurrent_fetches` fetch slots, held until the
    /// fetch returns; `Busy` at once when all are taken.
    fn fetch_slot(&self) -> Result<Slot, FetchError> {
        self.fetches.try_take().ok_or(FetchError::Busy {
            what: Busy::Fetches,
            limit: self.fetches.max,
        })
    }

    /// DNS lookup threads alive now (those given up after a timeout included).
    pub fn lookups_in_flight(&self) -> usize {
        self.lookups.used.load(Ordering::Acquire)
    }

    /// The URL rules of the policy (scheme, credentials, allowlists), as a fetch error.
    fn checked_url(&self, raw: &str) -> Result<Url, FetchError> {
        self.policy
            .check_url(raw)
            .map_err(|reason| FetchError::Refused {
                url: raw.to_owned(),
                reason,
            })
    }

    /// Check a URL without fetching it: the URL rules, then the addresses its
    /// host resolves to. Used for every endpoint a discovery document names.
    pub fn check(&self, raw: &str) -> Result<(), FetchError> {
        let deadline = Instant::now() + self.timeout;
        let url = self.checked_url(raw)?;
        self.resolve_checked(&url, deadline).map(|_| ())
    }

    /// Resolve a checked URL's host once, within the deadline, and check every
    /// address.
    fn resolve_checked(&self, url: &Url, deadline: Instant) -> Result<Vec<SocketAddr>, FetchError> {
        // The one way to the network: nothing is looked up or connected when off.
        if !self.enabled {
            return Err(FetchError::Refused {
                url: url.to_string(),
                reason: Refused::Disabled,
            });
        }
        let port = url.port_or_known_default().unwrap_or(443);
        let addrs: Vec<IpAddr> = match url.host() {
            Some(url::Host::Ipv4(ip)) => vec![IpAddr::V4(ip)],
            Some(url::Host::Ipv6(ip)) => vec![IpAddr::V6(ip)],
            Some(url::Host::Domain(name)) => {
                let name = name.to_owned();
                let resolver = self.resolver.clone();
                let (tx, rx) = std::sync::mpsc::channel();
                let lookup = name.clone();
                // getaddrinfo has no timeout of its own: wait for it at most
                // until the deadline. The thread owns a lookup slot and gives it
                // back when the lookup ends, so lookups that hang past their
                // deadline can never hold more than the limit of threads.
                let busy = || FetchError::Busy {
                    what: Busy::Lookups,
                    limit: self.lookups.max,
                };
                let slot = self.lookups.try_take().ok_or_else(busy)?;
                std::thread::Builder::new()
                    .name("oidcvault-dns".into())
                    .spawn(move || {
                        let _ = tx.send(resolver(&lookup, port));
                        drop(slot);
                    })
                    .map_err(|_| busy())?;
                let wait = deadline.saturating_duration_since(Instant::now());
                match rx.recv_timeout(wait) {
                    Ok(Ok(a)) => a,
                    Ok(Err(e)) => {
                        return Err(FetchError::Dns {
                            host: name,
                            error: e.to_string(),
                        })
                    }
                    Err(_) => {
                        return Err(FetchError::Timeout {
                            url: url.to_string(),
                            after: self.timeout,
                        })
                    }
                }
            }
            None => {
                return Err(FetchError::Refused {
                    url: url.to_string(),
                    reason: Refused::InvalidUrl,
                })
            }
        };
        self.policy
            .check_addresses(url, &addrs)
            .map_err(|reason| FetchError::Refused {
                url: url.to_string(),
                reason,
            })?;
        Ok(addrs
            .into_iter()
            .map(|ip| SocketAddr::new(ip, port))
            .collect())
    }

    /// An agent that connects only to `pinned`, for `url`'s host and port.
    fn agent(&self, url: &Url, pinned: Vec<SocketAddr>, deadline: Instant) -> ureq::Agent {
        let netloc = format!(
            "{}:{}",
            url.host_str().unwrap_or_default(),
            url.port_or_known_default().unwrap_or(443)
        );
        let remaining = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1));
        ureq::AgentBuilder::new()
            .resolver(move |asked: &str| {
                if asked.eq_ignore_ascii_case(&netloc) {
                    Ok(pinned.clone())
                } else {
                    Err(std::io::Error::other(format!(
                        "{asked} was not checked by the outbound guard"
                    )))
                }
            })
            .try_proxy_from_env(false)
            .redirects(0)
            .max_idle_connections(0)
            .timeout_connect(self.connect_timeout.min(remaining))
            .timeout(remaining)
            .user_agent(USER_AGENT)
            .tls_config(self.tls.clone())
            .build()
    }

    fn transport_error(&self, url: &Url, e: &ureq::Transport) -> FetchError {
        let url_s = url.to_string();
        if is_timeout(e) {
            return FetchError::Timeout {
                url: url_s,
                after: self.timeout,
            };
        }
        let mut error = e.kind().to_string();
        if let Some(m) = e.message() {
            error = format!("{error}: {m}");
        }
        if let Some(src) = std::error::Error::source(e) {
            error = format!("{error}: {src}");
        }
        match e.kind() {
            ureq::ErrorKind::Dns | ureq::ErrorKind::ConnectionFailed => {
                FetchError::Connect { url: url_s, error }
            }
            _ => FetchError::Failed { url: url_s, error },
        }
    }

    /// Send one request to a checked URL and read the answer, capped.
    fn send_once(
        &self,
        url: &Url,
        deadline: Instant,
        build: impl FnOnce(&ureq::Agent) -> Result<ureq::Response, Box<ureq::Error>>,
    ) -> Result<Response, FetchError> {
        let pinned = self.resolve_checked(url, deadline)?;
        let agent = self.agent(url, pinned, deadline);
        let resp = match build(&agent).map_err(|e| *e) {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(ureq::Error::Transport(t)) => return Err(self.transport_error(url, &t)),
        };
        self.read(url, resp)
    }

    fn read(&self, url: &Url, resp: ureq::Response) -> Result<Response, FetchError> {
        let too_large = || FetchError::TooLarge {
            url: url.to_string(),
            limit: self.max_response_bytes,
        };
        let declared = resp
            .header("content-length")
            .and_then(|v| v.trim().parse::<u64>().ok());
        if declared.is_some_and(|n| n > self.max_response_bytes) {
            return Err(too_large());
        }
        let status = resp.status();
        let content_type = resp.header("content-type").map(|v| {
            v.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        });
        let location = resp.header("location").map(str::to_owned);
        let mut body = Vec::new();
        resp.into_reader()
            .take(self.max_response_bytes + 1)
            .read_to_end(&mut body)
            .map_err(|e| {
                if is_timeout(&e) {
                    FetchError::Timeout {
                        url: url.to_string(),
                        after: self.timeout,
                    }
                } else {
                    FetchError::Failed {
                        url: url.to_string(),
                        error: format!("reading the answer: {e}"),
                    }
                }
            })?;
        if body.len() as u64 > self.max_response_bytes {
            return Err(too_large());
        }
        Ok(Response {
            status,
            content_type,
            body,
            url: url.clone(),
            location,
        })
    }

    /// Run `fetch` (one of this client's requests), trying again for up to
    /// `max_wait` while every outbound slot is taken
    /// (`outbound.max_concurrent_fetches`). For work that must not fail on a
    /// short burst: a sign-in's callback holds a single-use code from the IdP,
    /// lost if its exchange is refused at once. Any other outcome returns as
    /// it is; the last `Busy` when the wait is over.
    pub fn patiently<T>(
        &self,
        max_wait: Duration,
        fetch: impl Fn() -> Result<T, FetchError>,
    ) -> Result<T, FetchError> {
        let deadline = Instant::now() + max_wait;
        let mut pause = Duration::from_millis(2);
        loop {
            match fetch() {
                Err(FetchError::Busy {
                    what: Busy::Fetches,
                    ..
                }) if Instant::now() + pause < deadline => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(50));
                }
                other => return other,
            }
        }
    }

    /// GET `raw` through the guard, following redirects within the same origin
    /// only (scheme, host and port).
    pub fn get(&self, raw: &str, accept: &str) -> Result<Response, FetchError> {
        let deadline = Instant::now() + self.timeout;
        let mut url = self.checked_url(raw)?;
        let _slot = self.fetch_slot()?;
        let origin = url.clone();
        let origin_host = origin.host_str().unwrap_or_default().to_ascii_lowercase();
        let mut hops = 0;
        loop {
            let resp = self.send_once(&url, deadline, |agent| {
                agent
                    .request_url("GET", &url)
                    .set("Accept", accept)
                    .call()
                    .map_err(Box::new)
            })?;
            let location = resp.location.clone();
            if !(300..400).contains(&resp.status) {
                return Ok(resp);
            }
            let redirect = |reason: String| FetchError::Redirect {
                url: url.to_string(),
                reason,
            };
            let Some(location) = location else {
                return Err(redirect(format!(
                    "HTTP {} without a Location header",
                    resp.status
                )));
            };
            if hops >= self.max_redirects {
                return Err(redirect(format!(
                    "more than {} redirects (outbound.max_redirects)",
                    self.max_redirects
                )));
            }
            let next = url
                .join(&location)
                .map_err(|_| redirect(format!("to an invalid location {location:?}")))?;
            let next_host = next.host_str().unwrap_or_default().to_ascii_lowercase();
            if next_host != origin_host {
                return Err(redirect(format!(
                    "to another host ({next_host}); redirects are followed within the same \
                     origin only: use the final URL"
                )));
            }
            // Same host, but another port or scheme is another service.
            if next.scheme() != origin.scheme()
                || next.port_or_known_default() != origin.port_or_known_default()
            {
                return Err(redirect(format!(
                    "to another port or scheme ({}); redirects are followed within the same \
                     origin (scheme, host and port) only: use the final URL",
                    next.origin().ascii_serialization()
                )));
            }
            url = self
                .policy
                .check_url(next.as_str())
                .map_err(|reason| FetchError::Refused {
                    url: next.to_string(),
                    reason,
                })?;
            hops += 1;
        }
    }

    /// POST a form to `raw` through the guard. Redirects are not followed (a
    /// 3xx is returned as it is): the body may carry client credentials.
    pub fn post_form(
        &self,
        raw: &str,
        authorization: Option<&str>,
        body: &FormBody,
    ) -> Result<Response, FetchError> {
        let deadline = Instant::now() + self.timeout;
        let url = self.checked_url(raw)?;
        let _slot = self.fetch_slot()?;
        self.send_once(&url, deadline, |agent| {
            let mut req = agent
                .request_url("POST", &url)
                .set("Accept", "application/json")
                .set("Content-Type", "application/x-www-form-urlencoded");
            if let Some(a) = authorization {
                req = req.set("Authorization", a);
            }
            req.send_bytes(body).map_err(Box::new)
        })
    }
}
