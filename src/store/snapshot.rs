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
        fsutil::create_private_dir(dest).map_err(io(dest))?;
        let mut stats = SnapshotStats::default();
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
                }
            }
            copy.flush()?;
        }
        for (name, bytes) in &extras {
            fsutil::write_atomic(&dest.join(name), bytes).map_err(io(dest))?;
        }
        fsutil::sync_tree(dest).map_err(io(dest))?;
        stats.bytes = fsutil::dir_size(dest).map_err(io(dest))?;
        Ok(stats)
    }
}
