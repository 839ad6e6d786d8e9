//! Open connections counted per client address (see [`ConnectionLimiter`]).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use super::{client_key, report_poisoned, CONNECTION_POISON_REPORTED};

/// Open connections per client address (the same key as failed authentication:
/// an IPv4 address or an IPv6 /64), capped at
/// `limits.max_connections_per_address` so that one address cannot hold every
/// connection slot. Counted when a connection is accepted (actix's `on_connect`,
/// see `api::middleware::on_connect`); a [`ConnectionSlot`] gives its count back when the
/// connection ends.
pub struct ConnectionLimiter {
    max: u32,
    pub(super) open: Mutex<HashMap<IpAddr, u32>>,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
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
}
