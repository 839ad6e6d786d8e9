//! Online backups: a consistent, point-in-time copy of the data directory that
//! is itself a data directory (it starts as is, with the same master key).

use std::path::{Path, PathBuf};

use super::{audit, Vault, VaultError};
use crate::crypto::KEYRING_FILE_NAME;
use crate::store::fsutil;
use crate::time::{format_micros, now_micros};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupInfo {
    pub name: String,
    pub path: PathBuf,
    pub records: u64,
    pub bytes: u64,
    pub created_at: i64,
}

impl Vault {
    /// Where the server writes backups (`storage.backup_dir`).
    pub fn backup_dir(&self) -> &Path {
        &self.backup_dir
    }

    /// Write a backup to `dest`, which must not exist or be empty. It is written
    /// under `<dest>.partial` and renamed when complete, so a backup that is
    /// there is whole. Blocking: call it off the async workers.
    pub fn write_backup(&self, dest: &Path) -> Result<BackupInfo, VaultError> {
        self.write_backup_with(dest, &crate::progress::NoProgress)
    }

    /// [`Vault::write_backup`], reporting the records copied.
    pub fn write_backup_with(
        &self,
        dest: &Path,
        progress: &dyn crate::progress::Progress,
    ) -> Result<BackupInfo, VaultError> {
        let created_at = now_micros();
        let io = |what: &str, e: std::io::Error| {
            VaultError::Operation(format!("backup to {}: {what}: {e}", dest.display()))
        };
        if !fsutil::is_absent_or_empty(dest).map_err(|e| io("cannot list it", e))? {
            return Err(VaultError::Operation(format!(
                "backup destination {} exists and is not empty",
                dest.display()
            )));
        }
        let name = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "backup".into());
        let mut partial_name = dest.as_os_str().to_owned();
        partial_name.push(".partial");
        let partial = PathBuf::from(partial_name);
        if partial.exists() {
            std::fs::remove_dir_all(&partial).map_err(|e| io("removing an old partial copy", e))?;
        }
        let stats = self
            .store
            .snapshot_with(&partial, &[KEYRING_FILE_NAME], progress)?;
        if dest.exists() {
            std::fs::remove_dir(dest).map_err(|e| io("replacing the empty folder", e))?;
        }
        std::fs::rename(&partial, dest).map_err(|e| io("renaming into place", e))?;
        if let Some(parent) = dest.parent().filter(|p| !p.as_os_str().is_empty()) {
            fsutil::sync_dir(parent).map_err(|e| io("syncing its folder", e))?;
        }
        Ok(BackupInfo {
            name,
            path: dest.to_path_buf(),
            records: stats.records,
            bytes: stats.bytes,
            created_at,
        })
    }

    /// A new backup under `storage.backup_dir`, named by its time. Blocking.
    pub fn write_backup_in_backup_dir(&self) -> Result<BackupInfo, VaultError> {
        fsutil::create_private_dir(&self.backup_dir).map_err(|e| {
            VaultError::Operation(format!(
                "cannot create storage.backup_dir {}: {e}",
                self.backup_dir.display()
            ))
        })?;
        let stamp: String = format_micros(now_micros())
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .collect();
        self.write_backup(&self.backup_dir.join(format!("oidcvault-backup-{stamp}")))
    }

    /// Record a finished backup in the audit trail.
    pub async fn audit_backup(
        &self,
        info: &BackupInfo,
        actor: Option<u64>,
    ) -> Result<(), VaultError> {
        let mut e = audit::event(now_micros(), actor, "backup", None);
        e.detail = Some(format!("{} ({} records)", info.name, info.records));
        self.record(e).await
    }
}
