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

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Deserialize;

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

/// Addresses tracked at once. Beyond, entries whose window is over are dropped
/// first, then entries that are not blocked, oldest window first; a blocked entry
/// is never dropped before its window ends (see [`AuthLimiter::begin`]).
const MAX_TRACKED: usize = 65_536;
/// When the table is full, unblocked entries are evicted down to this many, so the
/// next evictions are far apart (each one scans the table).
const EVICT_DOWN_TO: usize = MAX_TRACKED - MAX_TRACKED / 8;

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

struct Window {
    /// Tells windows of one address apart, so an attempt released late does not
    /// touch a window that replaced its own.
    id: u64,
    started: Instant,
    /// Failed attempts, plus attempts in progress (counted before their token is
    /// checked, given back when it proves valid).
    failures: u32,
}

struct Table {
    windows: HashMap<IpAddr, Window>,
    next_id: u64,
    /// Set when the table was found full of blocked entries: until then, no new
    /// address can be counted, so none is admitted (and no scan is repeated).
    full_until: Option<Instant>,
}

/// Failed authentications per client address, in fixed windows.
///
/// Check and count are one step: [`AuthLimiter::begin`] refuses an address over
/// its allowance and otherwise counts the attempt as a failure *before* the token
/// is checked, under one lock; a valid token gives it back
/// ([`AuthAttempt::release`]). So a parallel burst of bad tokens from one address
/// gets at most the allowance through, however the requests interleave. (A valid
/// request holds its count only while its token is checked, which runs without
/// yielding to other requests, so at most one per worker is in flight at once.)
pub struct AuthLimiter {
    max: u32,
    window: Duration,
    table: Mutex<Table>,
}

/// One authentication attempt, counted as a failure unless released. Dropping it
/// keeps it counted (fail closed).
#[must_use = "release the attempt when the token proves valid, or it counts as a failure"]
pub struct AuthAttempt<'a> {
    counted: Option<(&'a AuthLimiter, IpAddr, u64)>,
}

impl AuthAttempt<'_> {
    /// The attempt was not a failed guess (a valid token, no token at all, or the
    /// store could not answer): give its count back.
    pub fn release(self) {
        if let Some((limiter, key, id)) = self.counted {
            limiter.release(key, id);
        }
    }

    /// The token was refused: the attempt stays counted.
    pub fn failed(self) {}
}

impl AuthLimiter {
    pub fn new(max: u32, window: Duration) -> Self {
        Self {
            max,
            window,
            table: Mutex::new(Table {
                windows: HashMap::new(),
                next_id: 0,
                full_until: None,
            }),
        }
    }

    /// Start an authentication attempt from `ip`: `Err(retry_after)` while `ip` is
    /// over its allowance, else the attempt, already counted as a failure.
    ///
    /// Fails closed: with the table unusable (a poisoned lock), or full of
    /// blocked addresses so that a new one could not be counted, the attempt is
    /// refused. An attacker cannot lift its own block by filling the table from
    /// other addresses: blocked entries are never evicted before their window
    /// ends; the cost is that, while `MAX_TRACKED` addresses are all blocked at
    /// once, addresses not already tracked are refused too (until the first of
    /// those windows ends).
    pub fn begin(&self, ip: IpAddr) -> Result<AuthAttempt<'_>, Duration> {
        self.begin_at(ip, Instant::now())
    }

    fn begin_at(&self, ip: IpAddr, now: Instant) -> Result<AuthAttempt<'_>, Duration> {
        if self.max == 0 {
            return Ok(AuthAttempt { counted: None });
        }
        let Ok(mut table) = self.table.lock() else {
            report_poisoned("failed-authentication", &AUTH_POISON_REPORTED);
            return Err(self.window);
        };
        let key = client_key(ip);
        let window = self.window;
        if !table.windows.contains_key(&key) && table.windows.len() >= MAX_TRACKED {
            self.make_room(&mut table, now)?;
        }
        let Table {
            windows, next_id, ..
        } = &mut *table;
        let w = windows.entry(key).or_insert_with(|| {
            *next_id += 1;
            Window {
                id: *next_id,
                started: now,
                failures: 0,
            }
        });
        if now.saturating_duration_since(w.started) >= window {
            *next_id += 1;
            *w = Window {
                id: *next_id,
                started: now,
                failures: 0,
            };
        }
        if w.failures >= self.max {
            let ends = w.started + window;
            return Err(ends.saturating_duration_since(now));
        }
        w.failures += 1;
        Ok(AuthAttempt {
            counted: Some((self, key, w.id)),
        })
    }

    /// Free a slot for a new address in a full table, or `Err(retry_after)` when
    /// every entry is blocked.
    fn make_room(&self, table: &mut Table, now: Instant) -> Result<(), Duration> {
        if let Some(until) = table.full_until {
            if until > now {
                return Err(until - now);
            }
            table.full_until = None;
        }
        let (window, max) = (self.window, self.max);
        table
            .windows
            .retain(|_, w| now.saturating_duration_since(w.started) < window);
        if table.windows.len() < MAX_TRACKED {
            return Ok(());
        }
        let mut open: Vec<(Instant, IpAddr)> = table
            .windows
            .iter()
            .filter(|(_, w)| w.failures < max)
            .map(|(k, w)| (w.started, *k))
            .collect();
        open.sort_unstable();
        let excess = table.windows.len() - EVICT_DOWN_TO;
        for (_, key) in open.iter().take(excess) {
            table.windows.remove(key);
        }
        if table.windows.len() < MAX_TRACKED {
            return Ok(());
        }
        // Every entry is blocked: refuse new addresses until the first block ends.
        let until = table
            .windows
            .values()
            .map(|w| w.started + window)
            .min()
            .unwrap_or(now + window);
        table.full_until = Some(until);
        tracing::warn!(
            tracked = table.windows.len(),
            "failed-authentication table full of blocked addresses; refusing new addresses \
             until the first block ends"
        );
        Err(until.saturating_duration_since(now))
    }

    fn release(&self, key: IpAddr, id: u64) {
        let Ok(mut table) = self.table.lock() else {
            report_poisoned("failed-authentication", &AUTH_POISON_REPORTED);
            return;
        };
        if let Some(w) = table.windows.get_mut(&key) {
            if w.id == id {
                w.failures = w.failures.saturating_sub(1);
                if w.failures == 0 {
                    table.windows.remove(&key);
                }
            }
        }
    }

    /// Addresses currently tracked (for tests and monitoring).
    pub fn tracked(&self) -> usize {
        self.table.lock().map_or(0, |t| t.windows.len())
    }
}

/// Open connections per client address (the same key as failed authentication:
/// an IPv4 address or an IPv6 /64), capped at
/// `limits.max_connections_per_address` so that one address cannot hold every
/// connection slot. Counted when a connection is accepted (actix's `on_connect`,
/// see [`on_connect`]); a [`ConnectionSlot`] gives its count back when the
/// connection ends.
pub struct ConnectionLimiter {
    max: u32,
    open: Mutex<HashMap<IpAddr, u32>>,
}

/// One counted connection; dropped with the connection's data when it closes.
pub struct ConnectionSlot {
    limiter: Arc<ConnectionLimiter>,
    key: IpAddr,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let Ok(mut open) = self.limiter.open.lock() else {
            report_poisoned("connection", &CONNECTION_POISON_REPORTED);
            return;
        };
        if let Some(n) = open.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.key);
            }
        }
    }
}

impl ConnectionLimiter {
    pub fn new(max: u32) -> Self {
        Self {
            max,
            open: Mutex::new(HashMap::new()),
        }
    }

    /// Count a new connection from `ip`: `None` when that address already holds
    /// its allowance (or the table is unusable: fail closed).
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<ConnectionSlot> {
        let Ok(mut open) = self.open.lock() else {
            report_poisoned("connection", &CONNECTION_POISON_REPORTED);
            return None;
        };
        let key = client_key(ip);
        let n = open.entry(key).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(ConnectionSlot {
            limiter: Arc::clone(self),
            key,
        })
    }

    /// Connections open from `ip`'s address (for tests and monitoring).
    pub fn open(&self, ip: IpAddr) -> u32 {
        self.open
            .lock()
            .map_or(0, |o| o.get(&client_key(ip)).copied().unwrap_or(0))
    }
}

/// The limits as the HTTP layer uses them (app data).
pub struct Limits {
    pub config: LimitsConfig,
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
            config,
            auth,
            connections,
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn v4(n: u32) -> IpAddr {
        IpAddr::V4(std::net::Ipv4Addr::from(n))
    }

    /// One failed attempt, as `authenticate` makes it.
    fn fail(l: &AuthLimiter, ip: IpAddr, at: Instant) -> Result<(), Duration> {
        l.begin_at(ip, at).map(AuthAttempt::failed)
    }

    #[test]
    fn an_address_is_refused_after_its_allowance_and_others_are_not() {
        let l = AuthLimiter::new(3, Duration::from_secs(60));
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(fail(&l, ip("10.0.0.1"), t0).is_ok());
        }
        let wait = l.begin_at(ip("10.0.0.1"), t0 + Duration::from_secs(10));
        assert_eq!(wait.err(), Some(Duration::from_secs(50)));
        assert!(fail(&l, ip("10.0.0.2"), t0).is_ok());
        // The window ends: allowed again, and counting starts over.
        let later = t0 + Duration::from_secs(61);
        assert!(fail(&l, ip("10.0.0.1"), later).is_ok());
        assert!(fail(&l, ip("10.0.0.1"), later).is_ok());
        assert!(l.begin_at(ip("10.0.0.1"), later).is_ok());
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_v4_as_v4() {
        let l = AuthLimiter::new(2, Duration::from_secs(60));
        let t0 = Instant::now();
        fail(&l, ip("2001:db8:1:2::1"), t0).unwrap();
        fail(&l, ip("2001:db8:1:2:ffff::9"), t0).unwrap();
        assert!(l.begin_at(ip("2001:db8:1:2::77"), t0).is_err());
        assert!(l.begin_at(ip("2001:db8:1:3::1"), t0).is_ok());
        fail(&l, ip("::ffff:192.0.2.1"), t0).unwrap();
        fail(&l, ip("192.0.2.1"), t0).unwrap();
        assert!(l.begin_at(ip("192.0.2.1"), t0).is_err());
    }

    #[test]
    fn attempts_in_flight_count_so_a_burst_cannot_pass_the_allowance() {
        // Every attempt of a burst has started before any has finished: the
        // interleaving that let a parallel burst through when checking and
        // counting were two steps.
        let l = AuthLimiter::new(5, Duration::from_secs(60));
        let t0 = Instant::now();
        let started: Vec<_> = (0..50).map(|_| l.begin_at(ip("10.0.0.9"), t0)).collect();
        assert_eq!(started.iter().filter(|a| a.is_ok()).count(), 5);
        for a in started.into_iter().flatten() {
            a.failed();
        }
        assert!(l.begin_at(ip("10.0.0.9"), t0).is_err());

        // The same with real threads.
        let l = AuthLimiter::new(5, Duration::from_secs(60));
        let admitted = std::sync::atomic::AtomicU32::new(0);
        let barrier = std::sync::Barrier::new(8);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    barrier.wait();
                    for _ in 0..10 {
                        if let Ok(a) = l.begin(ip("10.0.0.9")) {
                            admitted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            a.failed();
                        }
                    }
                });
            }
        });
        assert_eq!(admitted.into_inner(), 5);
    }

    #[test]
    fn a_valid_attempt_is_given_back() {
        let l = AuthLimiter::new(3, Duration::from_secs(60));
        let t0 = Instant::now();
        for _ in 0..100 {
            l.begin_at(ip("10.0.0.1"), t0).unwrap().release();
        }
        assert_eq!(l.tracked(), 0, "valid attempts leave nothing behind");
        fail(&l, ip("10.0.0.1"), t0).unwrap();
        fail(&l, ip("10.0.0.1"), t0).unwrap();
        l.begin_at(ip("10.0.0.1"), t0).unwrap().release();
        assert!(fail(&l, ip("10.0.0.1"), t0).is_ok(), "still one left");
        assert!(l.begin_at(ip("10.0.0.1"), t0).is_err());
        // An attempt released after its window was replaced leaves the new
        // window alone.
        let l = AuthLimiter::new(2, Duration::from_secs(60));
        let old = l.begin_at(ip("10.0.0.2"), t0).unwrap();
        let later = t0 + Duration::from_secs(61);
        fail(&l, ip("10.0.0.2"), later).unwrap();
        old.release();
        fail(&l, ip("10.0.0.2"), later).unwrap();
        assert!(l.begin_at(ip("10.0.0.2"), later).is_err());
    }

    #[test]
    fn a_flood_of_other_addresses_does_not_lift_a_block() {
        let l = AuthLimiter::new(3, Duration::from_secs(60));
        let t0 = Instant::now();
        let attacker = ip("192.0.2.66");
        for _ in 0..3 {
            fail(&l, attacker, t0).unwrap();
        }
        // More new addresses than the table holds, each one failure (not blocked),
        // all after the attacker's window started.
        for i in 0..(MAX_TRACKED as u32 + 100) {
            let at = t0 + Duration::from_micros(u64::from(i) + 1);
            fail(&l, v4(0x0a00_0000 + i), at).unwrap();
        }
        assert!(l.tracked() <= MAX_TRACKED, "{}", l.tracked());
        let at = t0 + Duration::from_secs(1);
        assert!(l.begin_at(attacker, at).is_err(), "the block was lifted");
        // The newest address is still counted.
        let newest = v4(0x0a00_0000 + MAX_TRACKED as u32 + 99);
        fail(&l, newest, at).unwrap();
        fail(&l, newest, at).unwrap();
        assert!(l.begin_at(newest, at).is_err());
    }

    #[test]
    fn a_table_full_of_blocked_addresses_refuses_new_ones_until_a_block_ends() {
        let l = AuthLimiter::new(1, Duration::from_secs(60));
        let t0 = Instant::now();
        for i in 0..MAX_TRACKED as u32 {
            fail(&l, v4(0x0a00_0000 + i), t0).unwrap();
        }
        let at = t0 + Duration::from_secs(10);
        // Every block stays; a new address cannot be counted, so it is refused.
        assert_eq!(
            l.begin_at(ip("192.0.2.1"), at).err(),
            Some(Duration::from_secs(50))
        );
        assert!(l.begin_at(v4(0x0a00_0000), at).is_err());
        assert_eq!(l.tracked(), MAX_TRACKED);
        // Once the blocks end, new addresses are counted again.
        let after = t0 + Duration::from_secs(60);
        assert!(fail(&l, ip("192.0.2.1"), after).is_ok());
        assert!(l.tracked() <= MAX_TRACKED);
    }

    fn poison<T>(m: &Mutex<T>) {
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
    fn zero_disables() {
        let off = AuthLimiter::new(0, Duration::from_secs(60));
        for _ in 0..100 {
            fail(&off, ip("10.0.0.1"), Instant::now()).unwrap();
        }
        assert!(off.begin(ip("10.0.0.1")).is_ok());
        assert_eq!(off.tracked(), 0);
    }

    #[test]
    fn connections_are_capped_per_address_and_given_back() {
        let c = Arc::new(ConnectionLimiter::new(2));
        let a = c.admit(ip("10.0.0.1")).unwrap();
        let b = c.admit(ip("10.0.0.1")).unwrap();
        assert!(c.admit(ip("10.0.0.1")).is_none());
        assert!(c.admit(ip("::ffff:10.0.0.1")).is_none(), "mapped v4 is v4");
        let other = c.admit(ip("10.0.0.2"));
        assert!(other.is_some(), "another address is admitted");
        drop(a);
        assert_eq!(c.open(ip("10.0.0.1")), 1);
        let again = c.admit(ip("10.0.0.1"));
        assert!(again.is_some());
        drop((b, again, other));
        assert_eq!(c.open(ip("10.0.0.1")), 0);
        assert!(c.open.lock().unwrap().is_empty(), "nothing left behind");
        // IPv6: per /64.
        let _v6 = c.admit(ip("2001:db8::1")).unwrap();
        let _v6b = c.admit(ip("2001:db8::2")).unwrap();
        assert!(c.admit(ip("2001:db8::ffff")).is_none());
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
