//! The sign-in broker's applications: `apps` (id → record) and
//! `app_client_ids` (client id → id), created and removed together with their
//! audit event in one transaction each, so the index never names an
//! application that is gone (a removed application's client id is simply not
//! found, which ends its pending sign-ins and codes).

use super::engine::Tree;
use super::{
    abort, decode, encode, next_id, store_only, AppRecord, AuditRecord, Store, StoreError,
    META_NEXT_APP,
};

/// What `verify` learns of the applications: how many, and each record or
/// index entry that does not read or does not match its counterpart.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct AppsReport {
    pub apps: u64,
    pub failures: Vec<String>,
}

/// What an application is made of, before it has an id.
#[derive(Debug, Clone)]
pub struct NewApp<'a> {
    pub name: &'a str,
    pub redirect_uris: &'a [String],
    pub now: i64,
}

fn id_of(tree: &'static str, key: &[u8], value: &[u8]) -> Result<u64, StoreError> {
    <[u8; 8]>::try_from(value)
        .map(u64::from_be_bytes)
        .map_err(|_| StoreError::Corrupt {
            tree,
            key: String::from_utf8_lossy(key).into_owned(),
            reason: "id is not 8 bytes".into(),
        })
}

impl Store {
    /// Create an application. `make` gets the new id and returns its client id,
    /// the hash of its secret, and a value handed back to the caller (the secret
    /// itself); it may run more than once (a transaction retried), the last
    /// run's values are the ones stored and returned.
    pub async fn create_app<R>(
        &self,
        new: &NewApp<'_>,
        make: impl Fn(u64) -> (String, [u8; 32], R),
        audit: impl Fn(&AppRecord) -> AuditRecord,
    ) -> Result<(AppRecord, R), StoreError> {
        let trees = [Tree::Meta, Tree::Apps, Tree::AppClientIds, Tree::Audit];
        let r = self.apply_audited(&trees, |tx, slot| {
            let id = next_id(tx, META_NEXT_APP)?;
            let (client_id, secret_hash, extra) = make(id);
            if tx.get(Tree::AppClientIds, client_id.as_bytes())?.is_some() {
                return abort(StoreError::ClientIdTaken);
            }
            let record = AppRecord {
                id,
                name: new.name.to_owned(),
                client_id,
                secret_hash,
                redirect_uris: new.redirect_uris.to_vec(),
                created_at: new.now,
            };
            tx.insert(Tree::Apps, &id.to_be_bytes(), &encode(&record)?)?;
            tx.insert(
                Tree::AppClientIds,
                record.client_id.as_bytes(),
                &id.to_be_bytes(),
            )?;
            slot.write(tx, audit(&record))?;
            Ok((record, extra))
        });
        let out = store_only(r)?;
        self.durable().await?;
        Ok(out)
    }

    pub fn app(&self, id: u64) -> Result<Option<AppRecord>, StoreError> {
        self.read(Tree::Apps, &id.to_be_bytes())
    }

    /// The application with this client id, if any.
    pub fn app_by_client_id(&self, client_id: &str) -> Result<Option<AppRecord>, StoreError> {
        self.usable()?;
        let key = client_id.as_bytes();
        match self.engine.get(Tree::AppClientIds, key)? {
            Some(v) => self.app(id_of("app_client_ids", key, &v)?),
            None => Ok(None),
        }
    }

    pub fn list_apps(&self) -> Result<Vec<AppRecord>, StoreError> {
        self.usable()?;
        self.entries(Tree::Apps)
            .map(|kv| {
                let (k, v) = kv?;
                decode("apps", &k, &v)
            })
            .collect()
    }

    /// Remove an application and its client id; `None` when there was none.
    pub async fn remove_app(
        &self,
        id: u64,
        audit: impl Fn(&AppRecord) -> AuditRecord,
    ) -> Result<Option<AppRecord>, StoreError> {
        let trees = [Tree::Apps, Tree::AppClientIds, Tree::Audit];
        let r = self.apply_audited(&trees, |tx, slot| {
            let key = id.to_be_bytes();
            let Some(bytes) = tx.remove(Tree::Apps, &key)? else {
                return Ok(None);
            };
            let record: AppRecord = decode("apps", &key, &bytes)?;
            tx.remove(Tree::AppClientIds, record.client_id.as_bytes())?;
            slot.write(tx, audit(&record))?;
            Ok(Some(record))
        });
        let removed = store_only(r)?;
        if removed.is_some() {
            self.durable().await?;
        }
        Ok(removed)
    }

    /// Read every application and every client id: each record decodes, its
    /// client id leads back to it, and each client id names an application
    /// that has it (for `verify`).
    pub fn check_apps(&self) -> AppsReport {
        let mut report = AppsReport::default();
        for kv in self.entries(Tree::Apps) {
            let checked = kv.and_then(|(k, v)| {
                let record: AppRecord = decode("apps", &k, &v)?;
                let indexed = self
                    .engine
                    .get(Tree::AppClientIds, record.client_id.as_bytes())?;
                Ok((record, indexed))
            });
            match checked {
                Ok((record, indexed)) => {
                    report.apps += 1;
                    if indexed.as_deref() != Some(&record.id.to_be_bytes()[..]) {
                        report.failures.push(format!(
                            "application {}: its client id {} does not lead back to it \
                             (app_client_ids)",
                            record.id, record.client_id
                        ));
                    }
                }
                Err(e) => report.failures.push(e.to_string()),
            }
        }
        // The index's own entries: each must name an application that exists.
        // Its keys are client ids on sled but may be digests of them (an
        // engine that keeps name keys out of sight, `Tree::keys_are_names`),
        // so a key is compared with the application's client id through a
        // point read of that client id, never read as one.
        let mut entries = 0u64;
        for kv in self.entries(Tree::AppClientIds) {
            let checked = kv.and_then(|(k, v)| {
                let id = id_of("app_client_ids", &k, &v)?;
                let app = self.app(id)?;
                let leads_back = match &app {
                    Some(app) => {
                        self.engine
                            .get(Tree::AppClientIds, app.client_id.as_bytes())?
                            .as_deref()
                            == Some(&id.to_be_bytes()[..])
                    }
                    None => false,
                };
                Ok((String::from_utf8_lossy(&k).into_owned(), id, leads_back))
            });
            entries += 1;
            match checked {
                Ok((_, _, true)) => {}
                Ok((client_id, id, false)) => report.failures.push(format!(
                    "client id {client_id} names application {id}, which does not exist or has \
                     another client id"
                )),
                Err(e) => report.failures.push(e.to_string()),
            }
        }
        if entries > report.apps {
            report.failures.push(format!(
                "app_client_ids holds {entries} entries for {} applications",
                report.apps
            ));
        }
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_util::*;

    fn uris() -> Vec<String> {
        vec!["https://app.example.com/cb".into()]
    }

    #[actix_web::test]
    async fn create_find_list_remove_with_one_event_each() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_chained(dir.path());
        let uris = uris();
        let new = NewApp {
            name: "Portal",
            redirect_uris: &uris,
            now: 5,
        };
        let (a, extra) = store
            .create_app(
                &new,
                |id| (format!("ova_{id}"), [1; 32], "shown once"),
                |_| ev(),
            )
            .await
            .unwrap();
        assert_eq!(extra, "shown once");
        assert_eq!((a.id, a.client_id.as_str(), a.created_at), (1, "ova_1", 5));
        let (b, _) = store
            .create_app(&new, |id| (format!("ova_{id}"), [2; 32], ()), |_| ev())
            .await
            .unwrap();
        assert_eq!(store.app(a.id).unwrap(), Some(a.clone()));
        assert_eq!(store.app_by_client_id("ova_1").unwrap(), Some(a.clone()));
        assert_eq!(store.app_by_client_id("ova_9").unwrap(), None);
        assert_eq!(store.list_apps().unwrap(), vec![a.clone(), b.clone()]);
        // A client id already taken: refused, nothing written.
        let taken = store
            .create_app(&new, |_| ("ova_1".into(), [3; 32], ()), |_| ev())
            .await;
        assert!(matches!(taken, Err(StoreError::ClientIdTaken)), "{taken:?}");
        assert_eq!(store.list_apps().unwrap().len(), 2);

        assert_eq!(store.remove_app(a.id, |_| ev()).await.unwrap(), Some(a));
        assert_eq!(store.app_by_client_id("ova_1").unwrap(), None);
        assert_eq!(store.remove_app(1, |_| ev()).await.unwrap(), None);
        assert_eq!(store.list_apps().unwrap(), vec![b]);
        // Three changes, three events; nothing for the refusal or the no-op.
        assert_eq!(store.audit_page(None, 100, |_| true).unwrap().len(), 3);
        assert_eq!(broken(&store), None);
        assert_eq!(
            store.check_apps(),
            AppsReport {
                apps: 1,
                failures: vec![]
            }
        );
    }

    #[actix_web::test]
    async fn check_apps_names_an_index_that_does_not_match() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let uris = uris();
        let new = NewApp {
            name: "Portal",
            redirect_uris: &uris,
            now: 5,
        };
        let (a, _) = store
            .create_app(&new, |_| ("ova_a".into(), [1; 32], ()), |_| ev())
            .await
            .unwrap();
        store
            .engine
            .write(&[
                op(Tree::AppClientIds, b"ova_a", None),
                op(Tree::AppClientIds, b"ova_ghost", Some(&99u64.to_be_bytes())),
                op(Tree::Apps, &7u64.to_be_bytes(), Some(&[1, 2])),
            ])
            .unwrap();
        let report = store.check_apps();
        assert_eq!(report.apps, 1, "{report:?}");
        assert_eq!(report.failures.len(), 3, "{report:?}");
        for expected in [
            format!("application {}: its client id ova_a", a.id),
            "apps/7".to_owned(),
            "client id ova_ghost names application 99".to_owned(),
        ] {
            assert!(
                report.failures.iter().any(|f| f.contains(&expected)),
                "{expected:?} not in {report:?}"
            );
        }
    }

    /// A backup is a copy of every tree: the applications and their index
    /// come along, and the copy finds an application by its client id.
    #[actix_web::test]
    async fn a_snapshot_carries_the_applications() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let uris = uris();
        let new = NewApp {
            name: "Portal",
            redirect_uris: &uris,
            now: 5,
        };
        let (a, _) = store
            .create_app(&new, |_| ("ova_a".into(), [1; 32], ()), |_| ev())
            .await
            .unwrap();
        let dest = dir.path().join("copy");
        store.snapshot_to(&dest, &[]).unwrap();
        let copy = open(&dest);
        assert_eq!(copy.app_by_client_id("ova_a").unwrap(), Some(a));
        assert_eq!(copy.check_apps().failures, Vec::<String>::new());
    }
}
