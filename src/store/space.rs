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

use super::StoreError;

/// `Ok` when `dir`'s file system has at least `reserve` bytes free (for an
/// unprivileged process: statvfs `f_bavail`). A reserve of 0 disables the check.
pub fn check(dir: &Path, reserve: u64) -> Result<(), StoreError> {
    if reserve == 0 {
        return Ok(());
    }
    let free = fs2::available_space(dir).map_err(|source| StoreError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    if free < reserve {
        return Err(StoreError::DiskFull { free, reserve });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reserve_larger_than_any_disk_refuses_and_zero_disables() {
        let dir = tempfile::tempdir().unwrap();
        assert!(check(dir.path(), 0).is_ok());
        assert!(check(dir.path(), 1).is_ok());
        let e = check(dir.path(), u64::MAX).unwrap_err();
        assert!(matches!(e, StoreError::DiskFull { .. }), "{e:?}");
        assert!(e.to_string().contains("free"), "{e}");
    }
}
