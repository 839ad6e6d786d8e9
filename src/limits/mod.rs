//! Abuse limits: what one client can cost the appliance.
//!
//! - **Failed authentication** is counted per client address (IPv4 address, IPv6
//!   /64 prefix); past `limits.auth_failures_per_window` failures within
//!   `limits.auth_failure_window_secs`, that address gets 429 with `Retry-After`
//!   on every authenticated route until the window ends, *before* its token is
//!   looked at, so guessing stops paying. Other addresses are served as usual.
//!   Checking and counting are one locked step (a parallel burst gets no more
//!   than the allowance through), a block survives any flood of other addresses,
//!   and the limiter fails closed (see [`AuthLimiter`]).
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
//!   One client address may hold at most `limits.max_connections_per_address` of
//!   them: a connection beyond is closed as soon as it is accepted (no answer), so
//!   one address cannot take every slot while others wait.
//! - **Disk space**: writes are refused with 503 while the data directory's file
//!   system has less than `limits.disk_reserve_mib` free (see `store`).
//!
//! This module is plain logic and the `[limits]` section; the HTTP glue (the
//! request-head middleware and the connection hook) is `api::middleware`.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

mod auth;
mod connections;

pub use auth::{AuthAttempt, AuthLimiter};
pub use connections::{ConnectionLimiter, ConnectionSlot};

use serde::Deserialize;

/// The `[limits]` section of the configuration.
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq)]
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
    /// Connections one client address (IPv4, or IPv6 /64) may hold open at once;
    /// more are closed as soon as they are accepted. A client that opens a
    /// connection per request briefly holds two (the server reaps the closed one
    /// after it has accepted the next), so the default leaves room: 256, a
    /// quarter of the default `max_connections`.
    pub max_connections_per_address: u32,
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
            max_connections_per_address: 256,
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
        if !(1..=1_000_000).contains(&self.max_connections_per_address) {
            return Err(format!(
                "limits.max_connections_per_address = {} is outside 1..=1000000",
                self.max_connections_per_address
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

/// Logs a poisoned lock once per table and process (it cannot heal; every later
/// call would log it again).
fn report_poisoned(what: &str, reported: &std::sync::atomic::AtomicBool) {
    if !reported.swap(true, std::sync::atomic::Ordering::Relaxed) {
        tracing::error!(
            "the {what} table is unusable after an internal panic; refusing (fail closed) \
             until the server is restarted"
        );
    }
}
static AUTH_POISON_REPORTED: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);
static CONNECTION_POISON_REPORTED: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// The limits as the HTTP layer uses them (app data).
pub struct Limits {
    /// As at start: the settings a reload changes are read from `auth` and
    /// [`Limits::body_timeout`].
    pub config: LimitsConfig,
    body_timeout_secs: std::sync::atomic::AtomicU64,
    pub auth: AuthLimiter,
    pub connections: Arc<ConnectionLimiter>,
}

impl Limits {
    pub fn new(config: LimitsConfig) -> Self {
        let auth = AuthLimiter::new(
            config.auth_failures_per_window,
            Duration::from_secs(config.auth_failure_window_secs),
        );
        let connections = Arc::new(ConnectionLimiter::new(config.max_connections_per_address));
        Self {
            body_timeout_secs: config.request_body_timeout_secs.into(),
            config,
            auth,
            connections,
        }
    }

    pub fn body_timeout(&self) -> Duration {
        Duration::from_secs(
            self.body_timeout_secs
                .load(std::sync::atomic::Ordering::Relaxed),
        )
    }

    /// Apply what a running server can take of `new` (SIGHUP): the
    /// failed-authentication allowance and window, and the body timeout.
    /// Returns the names of the settings that changed and were applied.
    pub fn apply(&self, old: &LimitsConfig, new: &LimitsConfig) -> Vec<&'static str> {
        let mut applied = Vec::new();
        if old.auth_failures_per_window != new.auth_failures_per_window {
            applied.push("limits.auth_failures_per_window");
        }
        if old.auth_failure_window_secs != new.auth_failure_window_secs {
            applied.push("limits.auth_failure_window_secs");
        }
        if !applied.is_empty() {
            self.auth.set(
                new.auth_failures_per_window,
                Duration::from_secs(new.auth_failure_window_secs),
            );
        }
        if old.request_body_timeout_secs != new.request_body_timeout_secs {
            self.body_timeout_secs.store(
                new.request_body_timeout_secs,
                std::sync::atomic::Ordering::Relaxed,
            );
            applied.push("limits.request_body_timeout_secs");
        }
        applied
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self::new(LimitsConfig::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn poison<T>(m: &std::sync::Mutex<T>) {
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _guard = m.lock();
            panic!("poisoning the lock on purpose");
        }));
        assert!(m.is_poisoned());
    }

    #[test]
    fn a_poisoned_table_fails_closed() {
        let l = AuthLimiter::new(3, Duration::from_secs(60));
        let a = l.begin(ip("10.0.0.1")).unwrap();
        poison(&l.table);
        assert_eq!(l.begin(ip("10.0.0.1")).err(), Some(Duration::from_secs(60)));
        assert!(l.begin(ip("10.0.0.2")).is_err());
        a.release(); // no panic

        let c = Arc::new(ConnectionLimiter::new(4));
        let slot = c.admit(ip("10.0.0.1"));
        assert!(slot.is_some());
        poison(&c.open);
        assert!(c.admit(ip("10.0.0.2")).is_none());
        drop(slot); // no panic
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
        let bad = LimitsConfig {
            max_connections_per_address: 0,
            ..LimitsConfig::default()
        };
        assert!(bad
            .validate()
            .unwrap_err()
            .contains("max_connections_per_address"));
        let c = LimitsConfig {
            max_connections: 10,
            ..LimitsConfig::default()
        };
        assert_eq!(c.max_connections_per_worker(3), 4);
        assert_eq!(c.max_connections_per_worker(20), 1);
    }
}
