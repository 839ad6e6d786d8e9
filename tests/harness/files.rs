//! Folder snapshots and copies: what a command changed on disk, and a data
//! directory copied while the server is stopped.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Every entry under `root` (relative path → `None` for a directory, the bytes for
/// a file), recursively.
pub(crate) fn snapshot(root: &Path) -> BTreeMap<PathBuf, Option<Vec<u8>>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Option<Vec<u8>>>) {
        let entries =
            std::fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
        for entry in entries {
            let entry = entry.unwrap();
            let path = entry.path();
            let rel = path.strip_prefix(root).unwrap().to_path_buf();
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                out.insert(rel, None);
                walk(root, &path, out);
            } else {
                let bytes = std::fs::read(&path)
                    .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
                out.insert(rel, Some(bytes));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// What differs between two snapshots, one line per entry; empty when identical.
pub(crate) fn snapshot_diff(
    before: &BTreeMap<PathBuf, Option<Vec<u8>>>,
    after: &BTreeMap<PathBuf, Option<Vec<u8>>>,
) -> Vec<String> {
    let mut diff = Vec::new();
    for (path, old) in before {
        match after.get(path) {
            None => diff.push(format!("removed: {}", path.display())),
            Some(new) if new != old => diff.push(format!(
                "changed: {} ({} -> {} bytes)",
                path.display(),
                old.as_ref().map_or(0, Vec::len),
                new.as_ref().map_or(0, Vec::len)
            )),
            Some(_) => {}
        }
    }
    for path in after.keys().filter(|p| !before.contains_key(*p)) {
        diff.push(format!("added: {}", path.display()));
    }
    diff
}

pub(crate) fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    std::fs::set_permissions(to, std::fs::metadata(from).unwrap().permissions()).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap_or_else(|e| {
                panic!(
                    "copy {} -> {}: {e}",
                    entry.path().display(),
                    target.display()
                )
            });
        }
    }
}
