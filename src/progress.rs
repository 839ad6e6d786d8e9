//! Progress of long operations (`verify`, `key rotate`, `backup`), reported by
//! the vault and the store through [`Progress`] and drawn by whoever calls them:
//! the command line draws bars on a terminal and one line per phase otherwise
//! (`crate::cli`), the server draws nothing ([`NoProgress`]). Nothing below the
//! command line knows how it is shown.

/// Receives the phases of a long operation, one at a time: [`Progress::start`],
/// any number of [`Progress::advance`], then [`Progress::finish`].
pub trait Progress: Send + Sync {
    /// A phase begins (`what`: "checking configs"); `total` items when known.
    fn start(&self, what: &str, total: Option<u64>);
    /// `n` more items of the current phase are done.
    fn advance(&self, n: u64);
    /// The phase is over: `done` says what it did ("configs checked (3)").
    fn finish(&self, done: &str);
}

/// Reports nothing.
pub struct NoProgress;

impl Progress for NoProgress {
    fn start(&self, _what: &str, _total: Option<u64>) {}
    fn advance(&self, _n: u64) {}
    fn finish(&self, _done: &str) {}
}
