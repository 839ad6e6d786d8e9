//! Failed authentication counted per client address, check and count in one
//! locked step (see [`AuthLimiter`]).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{client_key, report_poisoned, AUTH_POISON_REPORTED};

/// Addresses tracked at once. Beyond, entries whose window is over are dropped
/// first, then entries that are not blocked, oldest window first; a blocked entry
/// is never dropped before its window ends (see [`AuthLimiter::begin`]).
const MAX_TRACKED: usize = 65_536;
/// When the table is full, unblocked entries are evicted down to this many, so the
/// next evictions are far apart (each one scans the table).
const EVICT_DOWN_TO: usize = MAX_TRACKED - MAX_TRACKED / 8;

struct Window {
    /// Tells windows of one address apart, so an attempt released late does not
    /// touch a window that replaced its own.
    id: u64,
    started: Instant,
    /// Failed attempts, plus attempts in progress (counted before their token is
    /// checked, given back when it proves valid).
    failures: u32,
    /// Of `failures`, the attempts still in progress.
    pending: u32,
}

fn window_millis(window: Duration) -> u64 {
    u64::try_from(window.as_millis()).unwrap_or(u64::MAX)
}

pub(super) struct Table {
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
///
/// When an address is at its allowance only because some of its attempts are
/// still being checked (many parallel requests of one client, each waiting
/// for a storage cluster's round trip), a new attempt waits for them to settle
/// (up to `wait_for_checks`) rather than being refused: valid ones give their
/// count back and let it in; failed ones block it. The burst guarantee holds:
/// never more than the allowance is checked at once or admitted after it.
pub struct AuthLimiter {
    /// Both can change while the server runs (SIGHUP, see [`AuthLimiter::set`]).
    max: AtomicU32,
    window_millis: AtomicU64,
    pub(super) table: Mutex<Table>,
    /// Signalled whenever an attempt settles (released or failed).
    settled: std::sync::Condvar,
    wait_for_checks: Duration,
}

/// How long an attempt waits for the same address's attempts in progress.
const WAIT_FOR_CHECKS: Duration = Duration::from_secs(3);

/// One authentication attempt, counted as a failure unless released. Dropping it
/// keeps it counted (fail closed).
#[must_use = "release the attempt when the token proves valid, or it counts as a failure"]
pub struct AuthAttempt<'a> {
    counted: Option<(&'a AuthLimiter, IpAddr, u64)>,
}

impl AuthAttempt<'_> {
    /// The attempt was not a failed guess (a valid token, no token at all, or the
    /// store could not answer): give its count back.
    pub fn release(mut self) {
        if let Some((limiter, key, id)) = self.counted.take() {
            limiter.settle(key, id, false);
        }
    }

    /// The token was refused: the attempt stays counted.
    pub fn failed(self) {}
}

impl Drop for AuthAttempt<'_> {
    /// Failed or dropped unreleased: it stays counted (fail closed), and is no
    /// longer in progress.
    fn drop(&mut self) {
        if let Some((limiter, key, id)) = self.counted.take() {
            limiter.settle(key, id, true);
        }
    }
}

impl AuthLimiter {
    pub fn new(max: u32, window: Duration) -> Self {
        Self::with_wait(max, window, WAIT_FOR_CHECKS)
    }

    /// [`AuthLimiter::new`], waiting at most `wait_for_checks` for attempts in
    /// progress (zero: refuse at once).
    pub fn with_wait(max: u32, window: Duration, wait_for_checks: Duration) -> Self {
        Self {
            max: AtomicU32::new(max),
            window_millis: AtomicU64::new(window_millis(window)),
            table: Mutex::new(Table {
                windows: HashMap::new(),
                next_id: 0,
                full_until: None,
            }),
            settled: std::sync::Condvar::new(),
            wait_for_checks,
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

    /// A new allowance and window (a configuration reload). Windows already
    /// running keep their start: a lowered allowance blocks an address over it
    /// at its next attempt; a shorter window ends the running ones sooner.
    pub fn set(&self, max: u32, window: Duration) {
        self.max.store(max, Ordering::Relaxed);
        self.window_millis
            .store(window_millis(window), Ordering::Relaxed);
    }

    fn max(&self) -> u32 {
        self.max.load(Ordering::Relaxed)
    }

    fn window(&self) -> Duration {
        Duration::from_millis(self.window_millis.load(Ordering::Relaxed))
    }

    fn begin_at(&self, ip: IpAddr, now: Instant) -> Result<AuthAttempt<'_>, Duration> {
        if self.max() == 0 {
            return Ok(AuthAttempt { counted: None });
        }
        let Ok(mut table) = self.table.lock() else {
            report_poisoned("failed-authentication", &AUTH_POISON_REPORTED);
            return Err(self.window());
        };
        let key = client_key(ip);
        let waited_since = Instant::now();
        loop {
            let window = self.window();
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
                    pending: 0,
                }
            });
            if now.saturating_duration_since(w.started) >= window {
                *next_id += 1;
                *w = Window {
                    id: *next_id,
                    started: now,
                    failures: 0,
                    pending: 0,
                };
            }
            if w.failures < self.max() {
                w.failures += 1;
                w.pending += 1;
                return Ok(AuthAttempt {
                    counted: Some((self, key, w.id)),
                });
            }
            let ends = w.started + window;
            let left = self.wait_for_checks.saturating_sub(waited_since.elapsed());
            if w.pending == 0 || left.is_zero() {
                return Err(ends.saturating_duration_since(now));
            }
            // At the allowance only through attempts still being checked: wait
            // for one to settle, then decide again.
            table = match self.settled.wait_timeout(table, left) {
                Ok((t, _)) => t,
                Err(_) => {
                    report_poisoned("failed-authentication", &AUTH_POISON_REPORTED);
                    return Err(self.window());
                }
            };
        }
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
        let (window, max) = (self.window(), self.max());
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

    /// An attempt is no longer in progress: given back (`failed` false) or
    /// kept as a failure; waiting attempts of any address decide again.
    fn settle(&self, key: IpAddr, id: u64, failed: bool) {
        let Ok(mut table) = self.table.lock() else {
            report_poisoned("failed-authentication", &AUTH_POISON_REPORTED);
            return;
        };
        if let Some(w) = table.windows.get_mut(&key) {
            if w.id == id {
                w.pending = w.pending.saturating_sub(1);
                if !failed {
                    w.failures = w.failures.saturating_sub(1);
                }
                if w.failures == 0 {
                    table.windows.remove(&key);
                }
            }
        }
        drop(table);
        self.settled.notify_all();
    }

    /// Addresses currently tracked (for tests and monitoring).
    pub fn tracked(&self) -> usize {
        self.table.lock().map_or(0, |t| t.windows.len())
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
        let l = AuthLimiter::with_wait(5, Duration::from_secs(60), Duration::ZERO);
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

    #[test]
    fn zero_disables() {
        let off = AuthLimiter::new(0, Duration::from_secs(60));
        for _ in 0..100 {
            fail(&off, ip("10.0.0.1"), Instant::now()).unwrap();
        }
        assert!(off.begin(ip("10.0.0.1")).is_ok());
        assert_eq!(off.tracked(), 0);
    }
}
