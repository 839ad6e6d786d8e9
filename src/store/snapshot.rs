//! What a backup reads: a consistent, point-in-time copy of every tree, taken
//! while the gate is held exclusively.

use std::path::Path;

use super::{fsutil, Store, StoreError};

/// What a snapshot wrote.
#[derive(Debug, Default, Clone, Copy)]
pub struct SnapshotStats {
    pub records: u64,
    pub bytes: u64,
}

impl Store {
    /// Write a consistent, point-in-time copy of the store to `dest` (a new sled
    /// directory), with `extra_files` of the data directory copied beside it (the
    /// keyring). Writers are held off only while the state is read into memory.
    pub fn snapshot_to(
        &self,
        dest: &Path,
        extra_files: &[&str],
    ) -> Result<SnapshotStats, StoreError> {
        self.snapshot_with(dest, extra_files, &crate::progress::NoProgress)
    }

    /// [`Store::snapshot_to`], reporting its phases and the records copied.
    pub fn snapshot_with(
        &self,
        dest: &Path,
        extra_files: &[&str],
        progress: &dyn crate::progress::Progress,
    ) -> Result<SnapshotStats, StoreError> {
        progress.start("reading a consistent state", None);
        type Dump = Vec<(Vec<u8>, Vec<(sled::IVec, sled::IVec)>)>;
        let (dump, extras): (Dump, Vec<(String, Vec<u8>)>) = self.exclusive(|| {
            let mut dump = Vec::new();
            for name in self.db.tree_names() {
                // The broker's ephemeral state stays behind (see `sso`).
                if super::sso::SSO_TREES
                    .iter()
                    .any(|t| t.as_bytes() == &name[..])
                {
                    continue;
                }
                let tree = self.db.open_tree(&name)?;
                let kvs = tree.iter().collect::<Result<Vec<_>, _>>()?;
                dump.push((name.to_vec(), kvs));
            }
            let mut extras = Vec::new();
            for f in extra_files {
                let path = self.dir.join(f);
                let bytes =
                    std::fs::read(&path).map_err(|source| StoreError::Io { path, source })?;
                extras.push(((*f).to_owned(), bytes));
            }
            Ok::<_, StoreError>((dump, extras))
        })?;
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| StoreError::Io { path, source }
        };
        let total: u64 = dump.iter().map(|(_, kvs)| kvs.len() as u64).sum();
        progress.finish(&format!("consistent state read ({total} records)"));
        fsutil::create_private_dir(dest).map_err(io(dest))?;
        let mut stats = SnapshotStats::default();
        progress.start("copying records", Some(total));
        {
            let copy = sled::Config::new()
                .path(dest)
                .cache_capacity(8 << 20)
                .open()?;
            for (name, kvs) in &dump {
                let tree = copy.open_tree(name)?;
                for (k, v) in kvs {
                    tree.insert(k, v.clone())?;
                    stats.records += 1;
                    progress.advance(1);
                }
            }
            copy.flush()?;
        }
        for (name, bytes) in &extras {
            fsutil::write_atomic(&dest.join(name), bytes).map_err(io(dest))?;
        }
        fsutil::sync_tree(dest).map_err(io(dest))?;
        stats.bytes = fsutil::dir_size(dest).map_err(io(dest))?;
        progress.finish(&format!(
            "records copied and synced ({} records, {} bytes)",
            stats.records, stats.bytes
        ));
        Ok(stats)
    }
}
