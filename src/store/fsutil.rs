//! Small durable-filesystem helpers for files beside the sled store.
//!
//! Everything oidcvault writes is private to its user: the command line sets
//! the umask to 077 at start (`crate::startup`), new folders are made 0700 and
//! new files 0600 here whatever the umask, and [`make_private_trees`] brings an
//! existing data or backup directory (a checkout's `data/` is 0755, sled made
//! its files 0644 before the umask) to the same.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// fsync a directory, so that entries created or renamed in it survive a power cut.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Create `path` afresh (mode 0600), write `bytes`, fsync. A file left there
/// (a temporary file of an interrupted write) is removed first rather than
/// truncated, so the new file never inherits its mode or owner.
pub fn write_file_synced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// Write `bytes` to `path` atomically and durably: a temporary file in the same
/// directory (mode 0600), fsync, rename over `path`, fsync the directory. At every
/// instant `path` holds either the old or the new contents.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no parent"))?;
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    write_file_synced(&tmp, bytes)?;
    fs::rename(&tmp, path)?;
    sync_dir(dir)
}

/// Create a directory (and parents) with mode 0700 if it does not exist.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// How many folders and files [`make_private_trees`] narrowed.
pub type Tightened = usize;

/// A tree that could not be made private: the command that would.
#[derive(Debug, thiserror::Error)]
#[error(
    "{} is readable by other users and cannot be made private ({source}); run: chmod -R go-rwx {}",
    path.display(),
    shell_quote(root)
)]
pub struct NotPrivate {
    pub path: PathBuf,
    pub root: PathBuf,
    pub source: io::Error,
}

/// `path` as one shell word.
fn shell_quote(path: &Path) -> String {
    let text = path.display().to_string();
    if !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+,:@%".contains(&b))
    {
        text
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

/// Remove the group and other permission bits of every folder and file under
/// each of `roots` (0755 -> 0700, 0644 -> 0600), the roots included; a root
/// that does not exist is skipped, symbolic links under a root are not
/// followed. Returns how many paths changed.
pub fn make_private_trees(roots: &[&Path]) -> Result<Tightened, NotPrivate> {
    fn walk(
        root: &Path,
        path: &Path,
        meta: &fs::Metadata,
        count: &mut usize,
    ) -> Result<(), NotPrivate> {
        let fail = |source: io::Error| NotPrivate {
            path: path.to_path_buf(),
            root: root.to_path_buf(),
            source,
        };
        let mode = meta.permissions().mode();
        if mode & 0o077 != 0 {
            fs::set_permissions(path, fs::Permissions::from_mode(mode & !0o077 & 0o7777))
                .map_err(fail)?;
            *count += 1;
        }
        if meta.is_dir() {
            for entry in fs::read_dir(path).map_err(fail)? {
                let entry = entry.map_err(fail)?;
                let child = entry.path();
                let child_meta = fs::symlink_metadata(&child).map_err(|source| NotPrivate {
                    path: child.clone(),
                    root: root.to_path_buf(),
                    source,
                })?;
                if !child_meta.file_type().is_symlink() {
                    walk(root, &child, &child_meta, count)?;
                }
            }
        }
        Ok(())
    }
    let mut count = 0;
    for root in roots {
        let meta = match fs::metadata(root) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(source) => {
                return Err(NotPrivate {
                    path: root.to_path_buf(),
                    root: root.to_path_buf(),
                    source,
                })
            }
        };
        walk(root, root, &meta, &mut count)?;
    }
    Ok(count)
}

/// fsync every file and folder under `root` (a freshly written copy), deepest
/// first, so the whole tree survives a power cut.
pub fn sync_tree(root: &Path) -> io::Result<()> {
    for entry in fs::read_dir(root)? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            sync_tree(&path)?;
        } else {
            File::open(&path)?.sync_all()?;
        }
    }
    sync_dir(root)
}

/// Total size in bytes of the files under `root`.
pub fn dir_size(root: &Path) -> io::Result<u64> {
    let mut total = 0;
    for entry in fs::read_dir(root)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() {
            dir_size(&entry.path())?
        } else {
            meta.len()
        };
    }
    Ok(total)
}

/// Copy a directory tree (files and folders) to `to`, which must not exist.
pub fn copy_tree(from: &Path, to: &Path) -> io::Result<()> {
    create_private_dir(to)?;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else {
            fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// Files a fresh checkout keeps in the otherwise empty `data/` folder.
const PLACEHOLDERS: &[&str] = &[".gitignore", ".gitkeep"];

/// True when `dir` does not exist, or holds nothing but git placeholders.
pub fn is_absent_or_empty(dir: &Path) -> io::Result<bool> {
    match fs::read_dir(dir) {
        Ok(entries) => {
            for entry in entries {
                let name = entry?.file_name();
                if !PLACEHOLDERS.iter().any(|p| name == *p) {
                    return Ok(false);
                }
            }
            Ok(true)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert!(!dir.path().join("f.tmp").exists());
    }

    fn mode(p: &Path) -> u32 {
        fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn a_leftover_temporary_file_does_not_lend_its_mode() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("keyring");
        let tmp = dir.path().join("keyring.tmp");
        fs::write(&tmp, b"left by an interrupted write").unwrap();
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o644)).unwrap();
        write_atomic(&p, b"new").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"new");
        assert_eq!(mode(&p), 0o600);
        fs::write(&tmp, b"x").unwrap();
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o666)).unwrap();
        write_file_synced(&tmp, b"fresh").unwrap();
        assert_eq!(mode(&tmp), 0o600);
        assert_eq!(fs::read(&tmp).unwrap(), b"fresh");
    }

    #[test]
    fn trees_are_made_private_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("data");
        fs::create_dir_all(root.join("blobs")).unwrap();
        fs::write(root.join("db"), b"x").unwrap();
        fs::write(root.join("blobs/1"), b"x").unwrap();
        fs::write(root.join("conf"), b"x").unwrap();
        fs::set_permissions(root.join("conf"), fs::Permissions::from_mode(0o600)).unwrap();
        for p in [&root, &root.join("blobs")] {
            fs::set_permissions(p, fs::Permissions::from_mode(0o755)).unwrap();
        }
        for p in ["db", "blobs/1"] {
            fs::set_permissions(root.join(p), fs::Permissions::from_mode(0o644)).unwrap();
        }
        // A symbolic link out of the tree is left alone, and so is its target.
        let outside = dir.path().join("outside");
        fs::write(&outside, b"x").unwrap();
        fs::set_permissions(&outside, fs::Permissions::from_mode(0o644)).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("link")).unwrap();
        let missing = dir.path().join("missing");
        assert_eq!(make_private_trees(&[&root, &missing]).unwrap(), 4);
        assert_eq!(mode(&root), 0o700);
        assert_eq!(mode(&root.join("blobs")), 0o700);
        assert_eq!(mode(&root.join("db")), 0o600);
        assert_eq!(mode(&root.join("blobs/1")), 0o600);
        assert_eq!(mode(&root.join("conf")), 0o600);
        assert_eq!(mode(&outside), 0o644);
        assert_eq!(make_private_trees(&[&root]).unwrap(), 0);
    }

    #[test]
    fn the_chmod_to_run_is_one_shell_word() {
        assert_eq!(
            shell_quote(Path::new("/srv/oidcvault/data")),
            "/srv/oidcvault/data"
        );
        assert_eq!(shell_quote(Path::new("/srv/my data")), "'/srv/my data'");
        assert_eq!(shell_quote(Path::new("/srv/it's")), r"'/srv/it'\''s'");
    }

    #[test]
    fn placeholders_count_as_empty() {
        let dir = tempfile::tempdir().unwrap();
        assert!(is_absent_or_empty(&dir.path().join("missing")).unwrap());
        fs::write(dir.path().join(".gitignore"), "*\n").unwrap();
        assert!(is_absent_or_empty(dir.path()).unwrap());
        fs::write(dir.path().join("db"), "x").unwrap();
        assert!(!is_absent_or_empty(dir.path()).unwrap());
    }
}
