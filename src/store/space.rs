//! The free-space guard: a write is refused *before* it touches sled when the
//! data directory's file system has less than the configured reserve free.
//!
//! Why before: sled applies a change in memory first and writes its log later;
//! when that write fails (`ENOSPC`), sled keeps the error for good and the memory
//! holds a change that is not on disk. Refusing early keeps memory and disk equal,
//! so a refused write has changed nothing, and writes succeed again as soon as
//! space is back, without a restart. The reserve only has to cover what one batch
//! of writes appends to sled's log (a few KiB) plus what other processes write
//! meanwhile; the default is generous (`limits.disk_reserve_mib`, 32 MiB).

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::StoreError;

/// After a check finds at least this much room above the reserve, writes skip
/// the check for [`SKIP_FOR`]. Why: `statvfs` is a system call on every write
/// (3 % of the request threads' CPU under POST load, BENCHMARKS.md), and with
/// this much room no burst of writes can reach the reserve in that time: at its
/// highest measured POST rate oidcvault's log grows by about 13 MiB a second,
/// 1.3 MiB per 100 ms. Near the reserve, every write checks.
const HEADROOM: u64 = 256 << 20;
const SKIP_FOR: Duration = Duration::from_millis(100);

/// The free-space guard of one store: the reserve, and until when the last
/// check's answer holds.
#[derive(Debug)]
pub(super) struct Guard {
    reserve: AtomicU64,
    origin: Instant,
    /// Nanoseconds after `origin` until which writes need no check (0: check).
    clear_until: AtomicU64,
}

impl Guard {
    pub(super) fn new() -> Self {
        Self {
            reserve: AtomicU64::new(0),
            origin: Instant::now(),
            clear_until: AtomicU64::new(0),
        }
    }

    pub(super) fn set_reserve(&self, bytes: u64) {
        self.reserve.store(bytes, Ordering::Relaxed);
        self.clear_until.store(0, Ordering::Relaxed);
    }

    /// `Ok` when the data directory's file system has at least the reserve free
    /// (for an unprivileged process: statvfs `f_bavail`); a reserve of 0
    /// disables the check. Skipped while a recent check found ample room.
    pub(super) fn check(&self, dir: &Path) -> Result<(), StoreError> {
        let reserve = self.reserve.load(Ordering::Relaxed);
        if reserve == 0 {
            return Ok(());
        }
        let now = u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX);
        if now < self.clear_until.load(Ordering::Relaxed) {
            return Ok(());
        }
        let free = available(dir)?;
        if free < reserve {
            return Err(StoreError::DiskFull { free, reserve });
        }
        if free - reserve >= HEADROOM {
            let until = now.saturating_add(SKIP_FOR.as_nanos() as u64);
            self.clear_until.store(until, Ordering::Relaxed);
        }
        Ok(())
    }
}

fn available(dir: &Path) -> Result<u64, StoreError> {
    fs2::available_space(dir).map_err(|source| StoreError::Io {
        path: dir.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reserve_larger_than_any_disk_refuses_and_zero_disables() {
        let dir = tempfile::tempdir().unwrap();
        let g = Guard::new();
        assert!(g.check(dir.path()).is_ok());
        g.set_reserve(1);
        assert!(g.check(dir.path()).is_ok());
        g.set_reserve(u64::MAX);
        let e = g.check(dir.path()).unwrap_err();
        assert!(matches!(e, StoreError::DiskFull { .. }), "{e:?}");
        assert!(e.to_string().contains("free"), "{e}");
    }

    /// The guard skips checks only after one that found ample room: with a
    /// reserve just below what is free, every write is checked, and a reserve
    /// beyond the disk refuses at once even right after a skip-worthy check.
    #[test]
    fn the_guard_skips_only_with_ample_room() {
        let dir = tempfile::tempdir().unwrap();
        let free = available(dir.path()).unwrap();
        let g = Guard::new();
        assert!(g.check(dir.path()).is_ok(), "reserve 0 disables");
        // Close to the reserve: checked every time, never marked clear.
        g.set_reserve(free.saturating_sub(HEADROOM / 2).max(1));
        assert!(g.check(dir.path()).is_ok());
        assert_eq!(
            g.clear_until.load(Ordering::Relaxed),
            0,
            "no skip near the reserve"
        );
        // A new reserve clears any skip: the next write is checked.
        g.set_reserve(u64::MAX);
        assert!(matches!(
            g.check(dir.path()),
            Err(StoreError::DiskFull { .. })
        ));
        if free > HEADROOM + (1 << 20) {
            g.set_reserve(1 << 20);
            assert!(g.check(dir.path()).is_ok());
            assert!(
                g.clear_until.load(Ordering::Relaxed) > 0,
                "ample room: skip"
            );
        }
    }
}
