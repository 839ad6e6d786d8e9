//! Copies of the whole store, engine to engine: a backup (a new sled data
//! directory, [`Store::snapshot_with`]) and [`Store::copy_into`] (a sled
//! directory loaded into an empty etcd prefix, or etcd written as a sled
//! backup). Both read a consistent, point-in-time state through the engine's
//! `dump` (taken while the gate is held exclusively; etcd: at one revision),
//! leave out the broker's ephemeral trees (a redeemed code must not live
//! again) and the name indexes, which are rebuilt from the records they index
//! (an engine may keep them under a digest of the name: see
//! [`Tree::keys_are_names`]).

use std::path::Path;

use super::engine::{Dump, Op, Tree};
use super::gate::META_KEYRING;
use super::records::decode;
use super::{fsutil, AppRecord, DomainRecord, Store, StoreError, StoreOptions};

/// What a snapshot wrote.
#[derive(Debug, Default, Clone, Copy)]
pub struct SnapshotStats {
    pub records: u64,
    pub bytes: u64,
}

/// Plain writes per engine write while copying (an etcd transaction takes
/// at most 128 operations).
const COPY_CHUNK: usize = 64;

/// The trees a copy carries (the name indexes are rebuilt, the ephemeral
/// trees stay behind).
fn copied_trees() -> Vec<Tree> {
    Tree::ALL
        .into_iter()
        .filter(|t| !t.is_ephemeral() && !t.keys_are_names())
        .collect()
}

impl Store {
    /// Write a consistent, point-in-time copy of the store to `dest` (a new sled
    /// directory), with `extra_files` beside it (the keyring file). Writers are
    /// held off only while the state is read into memory.
    ///
    /// An extra file is read from the data directory (sled); a store without
    /// one (etcd) keeps its keyring in `meta` instead, so `extra_files` names
    /// the file the keyring of the same point in time is written to, and the
    /// copy, a sled data directory, keeps it there (and not in its `meta`).
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
        let (mut dump, extras) = self.exclusive(|| {
            let dump = self.dump_for_copy()?;
            let mut extras = Vec::new();
            for f in extra_files {
                let bytes = match &self.dir {
                    Some(dir) => {
                        let path = dir.join(f);
                        std::fs::read(&path).map_err(|source| StoreError::Io { path, source })?
                    }
                    None => stored_keyring(&dump).ok_or_else(|| StoreError::Corrupt {
                        tree: "meta",
                        key: "keyring".into(),
                        reason: "the store holds no keyring to back up".into(),
                    })?,
                };
                extras.push(((*f).to_owned(), bytes));
            }
            Ok::<_, StoreError>((dump, extras))
        })?;
        // The copy keeps its keyring as a file, like every sled data directory.
        for (tree, entries) in &mut dump {
            if *tree == Tree::Meta {
                entries.retain(|(k, _)| k.as_slice() != META_KEYRING);
            }
        }
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| StoreError::Io { path, source }
        };
        let total: u64 = dump.iter().map(|(_, kvs)| kvs.len() as u64).sum();
        progress.finish(&format!("consistent state read ({total} records)"));
        let mut stats = {
            let copy = Store::open(
                dest,
                &StoreOptions {
                    cache_capacity_bytes: 8 << 20,
                    auth_cache_bytes: 0,
                    commit_metrics: None,
                },
            )?;
            let stats = load(&copy, &dump, progress);
            // The final flush and fsync of the copy's group commit.
            copy.shutdown();
            stats?
        };
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

    /// Copy every record of this store into `dest`, which must be empty: a
    /// consistent state of this one, without the broker's short-lived records,
    /// with the name indexes rebuilt. Durable on etcd when this returns; on
    /// sled after `dest.durable()` or `dest.shutdown()`.
    pub fn copy_into(&self, dest: &Store) -> Result<SnapshotStats, StoreError> {
        self.copy_into_with(dest, &crate::progress::NoProgress)
    }

    /// [`Store::copy_into`], reporting its phases and the records copied.
    pub fn copy_into_with(
        &self,
        dest: &Store,
        progress: &dyn crate::progress::Progress,
    ) -> Result<SnapshotStats, StoreError> {
        progress.start("reading a consistent state", None);
        let dump = self.exclusive(|| self.dump_for_copy())?;
        let total: u64 = dump.iter().map(|(_, kvs)| kvs.len() as u64).sum();
        progress.finish(&format!("consistent state read ({total} records)"));
        let stats = load(dest, &dump, progress)?;
        progress.finish(&format!("records copied ({} records)", stats.records));
        Ok(stats)
    }

    fn dump_for_copy(&self) -> Result<Dump, StoreError> {
        self.usable()?;
        Ok(self.engine.dump(&copied_trees())?)
    }

    /// No entry in any tree (a keyring in `meta` counts).
    pub fn is_empty(&self) -> Result<bool, StoreError> {
        for tree in Tree::ALL {
            if !self
                .engine
                .scan(tree, super::engine::all(), 1, false)?
                .is_empty()
            {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

/// The keyring `meta` holds in `dump` (a shared store's).
fn stored_keyring(dump: &Dump) -> Option<Vec<u8>> {
    dump.iter()
        .filter(|(tree, _)| *tree == Tree::Meta)
        .flat_map(|(_, entries)| entries.iter())
        .find(|(k, _)| k.as_slice() == META_KEYRING)
        .map(|(_, v)| v.clone())
}

/// Write `dump` into the empty store `dest`, then the name indexes of its
/// domains and applications, then have `dest` read its state again.
fn load(
    dest: &Store,
    dump: &Dump,
    progress: &dyn crate::progress::Progress,
) -> Result<SnapshotStats, StoreError> {
    dest.writable()?;
    if !dest.is_empty()? {
        return Err(StoreError::Engine(
            "the destination of a copy must be empty".into(),
        ));
    }
    let total: u64 = dump.iter().map(|(_, kvs)| kvs.len() as u64).sum();
    progress.start("copying records", Some(total));
    let mut stats = SnapshotStats::default();
    let mut ops = Vec::with_capacity(COPY_CHUNK);
    let flush = |ops: &mut Vec<Op>| -> Result<(), StoreError> {
        if !ops.is_empty() {
            dest.engine.write(ops)?;
            ops.clear();
        }
        Ok(())
    };
    for (tree, kvs) in dump {
        for (k, v) in kvs {
            if let Some(index) = index_of(*tree, k, v) {
                ops.push(index);
            }
            ops.push(Op {
                tree: *tree,
                key: k.clone(),
                value: Some(v.clone()),
            });
            stats.records += 1;
            progress.advance(1);
            if ops.len() >= COPY_CHUNK {
                flush(&mut ops)?;
            }
        }
    }
    flush(&mut ops)?;
    dest.load_state()?;
    Ok(stats)
}

/// The name-index entry a record needs (a domain's name, an application's
/// client id), rebuilt from the record. A record that does not read is copied
/// as it is, without one (`verify` of the copy names it).
fn index_of(tree: Tree, key: &[u8], value: &[u8]) -> Option<Op> {
    let decoded = match tree {
        Tree::Domains => {
            decode::<DomainRecord>("domains", key, value).map(|d| (Tree::DomainNames, d.name))
        }
        Tree::Apps => {
            decode::<AppRecord>("apps", key, value).map(|a| (Tree::AppClientIds, a.client_id))
        }
        _ => return None,
    };
    let (index, name) = match decoded {
        Ok(found) => found,
        Err(e) => {
            tracing::warn!(error = %e, "copied a record that does not read, without its index entry");
            return None;
        }
    };
    Some(Op {
        tree: index,
        key: name.into_bytes(),
        value: Some(key.to_vec()),
    })
}
