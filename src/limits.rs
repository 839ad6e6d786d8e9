//! Abuse limits: what one client can cost the appliance.
//!
//! - **Failed authentication** is counted per client address (IPv4 address, IPv6
//!   /64 prefix); past `limits.auth_failures_per_window` failures within
//!   `limits.auth_failure_window_secs`, that address gets 429 with `Retry-After`
//!   on every authenticated route until the window ends, *before* its token is
//!   looked at, so guessing stops paying. Other addresses are served as usual.
//! - **Slow or stalled clients** time out: the request head must arrive within
//!   `limits.request_head_timeout_secs` (actix answers 408 and closes), the body
//!   within `limits.request_body_timeout_secs` (408 JSON), an idle keep-alive
//!   connection is closed after `limits.keep_alive_secs`.
//! - **Oversized requests** are refused early: a request head over
//!   `limits.max_header_bytes` gets 431 before any authentication or handler runs
//!   (actix itself refuses heads over 128 KiB or 96 headers with 431 while
//!   parsing); bodies over 64 KiB get 413 from `Content-Length` before a byte of
//!   the body is read, or as soon as a chunked body passes the limit.
//! - **Connections** are capped at `limits.max_connections`; further ones wait in
//!   the listen backlog until a slot frees (stalled ones free theirs at the timeouts).
//! - **Disk space**: writes are refused with 503 while the data directory's file
//!   system has less than `limits.disk_reserve_mib` free (see `store`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, ResponseError};
use serde::Deserialize;

use crate::api::ApiError;

/// The `[limits]` section of the configuration.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Failed authentications one client address may make per window; 0 disables.
    pub auth_failures_per_window: u32,
    /// Length of that window, in seconds.
    pub auth_failure_window_secs: u64,
    /// Seconds a new connection has to deliver its whole request head.
    pub request_head_timeout_secs: u64,
    /// Seconds a request has to deliver its whole body, once the head is in.
    pub request_body_timeout_secs: u64,
    /// Seconds an idle keep-alive connection stays open.
    pub keep_alive_secs: u64,
    /// Seconds a client gets to close its side after the server closes a connection.
    pub disconnect_timeout_secs: u64,
    /// Largest request head (request line and headers), in bytes; 431 beyond.
    pub max_header_bytes: usize,
    /// Connections held open at once, over all workers.
    pub max_connections: usize,
    /// Free space (MiB) the data directory's file system must keep; writes get
    /// 503 below it, so the store never runs into a full disk. 0 disables.
    pub disk_reserve_mib: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            auth_failures_per_window: 20,
            auth_failure_window_secs: 60,
            request_head_timeout_secs: 5,
            request_body_timeout_secs: 10,
            keep_alive_secs: 15,
            disconnect_timeout_secs: 2,
            max_header_bytes: 16 * 1024,
            max_connections: 1024,
            disk_reserve_mib: 32,
        }
    }
}

/// actix-http refuses request heads of 128 KiB or more on its own.
pub const ACTIX_MAX_HEAD_BYTES: usize = 131_072;

impl LimitsConfig {
    /// A message naming the setting at fault, for values that cannot work.
    pub fn validate(&self) -> Result<(), String> {
        let secs = [
            ("auth_failure_window_secs", self.auth_failure_window_secs),
            ("request_head_timeout_secs", self.request_head_timeout_secs),
            ("request_body_timeout_secs", self.request_body_timeout_secs),
            ("keep_alive_secs", self.keep_alive_secs),
            ("disconnect_timeout_secs", self.disconnect_timeout_secs),
        ];
        for (name, v) in secs {
            if !(1..=3600).contains(&v) {
                return Err(format!("limits.{name} = {v} is outside 1..=3600"));
            }
        }
        if !(1024..ACTIX_MAX_HEAD_BYTES).contains(&self.max_header_bytes) {
            return Err(format!(
                "limits.max_header_bytes = {} is outside 1024..{ACTIX_MAX_HEAD_BYTES}",
                self.max_header_bytes
            ));
        }
        if !(1..=1_000_000).contains(&self.max_connections) {
            return Err(format!(
                "limits.max_connections = {} is outside 1..=1000000",
                self.max_connections
            ));
        }
        if self.disk_reserve_mib > 1 << 20 {
            return Err(format!(
                "limits.disk_reserve_mib = {} is over 1 TiB",
                self.disk_reserve_mib
            ));
        }
        Ok(())
    }

    /// actix's `max_connections` is per worker: share the total among them.
    pub fn max_connections_per_worker(&self, workers: usize) -> usize {
        let workers = if workers == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            workers
        };
        self.max_connections.div_ceil(workers).max(1)
    }

    pub fn disk_reserve_bytes(&self) -> u64 {
        self.disk_reserve_mib.saturating_mul(1 << 20)
    }
}

/// Addresses tracked at once; beyond, entries whose window is over are dropped
/// first, then the oldest windows.
const MAX_TRACKED: usize = 65_536;

/// The key a client is counted under: an IPv4 address, or an IPv6 /64 (one host
/// of an attacker usually holds a whole /64).
fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut seg = v6.segments();
                for s in seg.iter_mut().skip(4) {
                    *s = 0;
                }
                IpAddr::V6(seg.into())
            }
        },
    }
}

struct Window {
    started: Instant,
    failures: u32,
}

/// Failed authentications per client address, in fixed windows.
pub struct AuthLimiter {
    max: u32,
    window: Duration,
    windows: Mutex<HashMap<IpAddr, Window>>,
}

impl AuthLimiter {
    pub fn new(max: u32, window: Duration) -> Self {
        Self {
            max,
            window,
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// `Err(retry_after)` while `ip` is over its allowance.
    pub fn check(&self, ip: IpAddr) -> Result<(), Duration> {
        self.check_at(ip, Instant::now())
    }

    fn check_at(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        if self.max == 0 {
            return Ok(());
        }
        let Ok(windows) = self.windows.lock() else {
            return Ok(());
        };
        match windows.get(&client_key(ip)) {
            Some(w) if w.failures >= self.max => {
                let ends = w.started + self.window;
                if ends > now {
                    Err(ends - now)
                } else {
                    Ok(())
                }
            }
            _ => Ok(()),
        }
    }

    /// Count one failed authentication from `ip`.
    pub fn record_failure(&self, ip: IpAddr) {
        self.record_failure_at(ip, Instant::now());
    }

    fn record_failure_at(&self, ip: IpAddr, now: Instant) {
        if self.max == 0 {
            return;
        }
        let Ok(mut windows) = self.windows.lock() else {
            return;
        };
        let key = client_key(ip);
        if !windows.contains_key(&key) && windows.len() >= MAX_TRACKED {
            let window = self.window;
            windows.retain(|_, w| now.duration_since(w.started) < window);
            if windows.len() >= MAX_TRACKED {
                // Still full: drop the oldest half.
                let mut starts: Vec<Instant> = windows.values().map(|w| w.started).collect();
                starts.sort_unstable();
                let cut = starts[starts.len() / 2];
                windows.retain(|_, w| w.started > cut);
            }
        }
        let w = windows.entry(key).or_insert(Window {
            started: now,
            failures: 0,
        });
        if now.duration_since(w.started) >= self.window {
            *w = Window {
                started: now,
                failures: 0,
            };
        }
        w.failures = w.failures.saturating_add(1);
    }

    /// Addresses currently tracked (for tests and monitoring).
    pub fn tracked(&self) -> usize {
        self.windows.lock().map_or(0, |w| w.len())
    }
}

/// The limits as the HTTP layer uses them (app data).
pub struct Limits {
    pub config: LimitsConfig,
    pub auth: AuthLimiter,
}

impl Limits {
    pub fn new(config: LimitsConfig) -> Self {
        let auth = AuthLimiter::new(
            config.auth_failures_per_window,
            Duration::from_secs(config.auth_failure_window_secs),
        );
        Self { config, auth }
    }

    pub fn body_timeout(&self) -> Duration {
        Duration::from_secs(self.config.request_body_timeout_secs)
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self::new(LimitsConfig::default())
    }
}

/// Bytes of a request head as sent: request line and `name: value\r\n` lines.
fn head_bytes(req: &ServiceRequest) -> usize {
    let line = req.method().as_str().len()
        + req.uri().path_and_query().map_or(1, |pq| pq.as_str().len())
        + 12;
    req.headers()
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum::<usize>()
        + line
}

/// Middleware: refuse a request head over `limits.max_header_bytes` with 431,
/// before authentication or any handler.
pub async fn check_request_head(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let max = req
        .app_data::<web::Data<Limits>>()
        .map_or(LimitsConfig::default().max_header_bytes, |l| {
            l.config.max_header_bytes
        });
    if head_bytes(&req) > max {
        let res = ApiError::HeadersTooLarge(max).error_response();
        return Ok(req.into_response(res).map_into_right_body());
    }
    Ok(next.call(req).await?.map_into_left_body())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn an_address_is_refused_after_its_allowance_and_others_are_not() {
        let l = AuthLimiter::new(3, Duration::from_secs(60));
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(l.check_at(ip("10.0.0.1"), t0).is_ok());
            l.record_failure_at(ip("10.0.0.1"), t0);
        }
        let wait = l.check_at(ip("10.0.0.1"), t0 + Duration::from_secs(10));
        assert_eq!(wait, Err(Duration::from_secs(50)));
        assert!(l.check_at(ip("10.0.0.2"), t0).is_ok());
        // The window ends: allowed again, and counting starts over.
        let later = t0 + Duration::from_secs(61);
        assert!(l.check_at(ip("10.0.0.1"), later).is_ok());
        l.record_failure_at(ip("10.0.0.1"), later);
        assert!(l.check_at(ip("10.0.0.1"), later).is_ok());
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_v4_as_v4() {
        let l = AuthLimiter::new(2, Duration::from_secs(60));
        let t0 = Instant::now();
        l.record_failure_at(ip("2001:db8:1:2::1"), t0);
        l.record_failure_at(ip("2001:db8:1:2:ffff::9"), t0);
        assert!(l.check_at(ip("2001:db8:1:2::77"), t0).is_err());
        assert!(l.check_at(ip("2001:db8:1:3::1"), t0).is_ok());
        l.record_failure_at(ip("::ffff:192.0.2.1"), t0);
        l.record_failure_at(ip("192.0.2.1"), t0);
        assert!(l.check_at(ip("192.0.2.1"), t0).is_err());
    }

    #[test]
    fn zero_disables_and_memory_is_bounded() {
        let off = AuthLimiter::new(0, Duration::from_secs(60));
        for _ in 0..100 {
            off.record_failure_at(ip("10.0.0.1"), Instant::now());
        }
        assert!(off.check(ip("10.0.0.1")).is_ok());
        assert_eq!(off.tracked(), 0);

        let l = AuthLimiter::new(1, Duration::from_secs(60));
        let t0 = Instant::now();
        for i in 0..(MAX_TRACKED as u32 + 10) {
            let a = std::net::Ipv4Addr::from(0x0a00_0000 + i);
            l.record_failure_at(IpAddr::V4(a), t0 + Duration::from_micros(u64::from(i)));
        }
        assert!(l.tracked() <= MAX_TRACKED, "{}", l.tracked());
        // The newest address is still counted.
        let newest = std::net::Ipv4Addr::from(0x0a00_0000 + MAX_TRACKED as u32 + 9);
        assert!(l.check_at(IpAddr::V4(newest), t0).is_err());
    }

    #[test]
    fn settings_are_checked() {
        assert!(LimitsConfig::default().validate().is_ok());
        let bad = LimitsConfig {
            max_header_bytes: 200_000,
            ..LimitsConfig::default()
        };
        assert!(bad.validate().unwrap_err().contains("max_header_bytes"));
        let bad = LimitsConfig {
            request_body_timeout_secs: 0,
            ..LimitsConfig::default()
        };
        assert!(bad
            .validate()
            .unwrap_err()
            .contains("request_body_timeout_secs"));
        let c = LimitsConfig {
            max_connections: 10,
            ..LimitsConfig::default()
        };
        assert_eq!(c.max_connections_per_worker(3), 4);
        assert_eq!(c.max_connections_per_worker(20), 1);
    }
}
