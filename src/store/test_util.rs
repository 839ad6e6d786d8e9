//! Helpers the unit tests of the store share (a store in a temporary
//! directory, records, an audit MAC, a trail written by every kind of writer).

use std::path::Path;

use super::engine::{Op, Tree};
use super::{AuditMac, AuditRecord, ConfigRecord, Store, StoreOptions, TokenScope};

/// Open the store in `dir`. A test that reopens the directory it just shut
/// down may find sled's file lock still held for a moment: sled releases it
/// when its own background threads let go of the database, after the last
/// handle is dropped (a new process, as in production, never meets this). So a
/// lock held is retried for a few seconds; any other error fails at once.
pub(super) fn open(dir: &Path) -> Store {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match Store::open(
            dir,
            &StoreOptions {
                cache_capacity_bytes: 8 << 20,
                auth_cache_bytes: 1 << 20,
                commit_metrics: None,
            },
        ) {
            Err(super::StoreError::InUse { .. }) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return other.unwrap(),
        }
    }
}

pub(super) fn ev() -> AuditRecord {
    AuditRecord {
        at: 1,
        actor: None,
        action: "test".into(),
        domain_id: None,
        domain: None,
        fields: vec![],
        secret_fingerprint: None,
        detail: None,
    }
}

pub(super) fn config(id: u64, domain_id: u64, client_id: &str) -> (ConfigRecord, AuditRecord) {
    (config_record(id, domain_id, client_id), ev())
}

pub(super) fn config_record(id: u64, domain_id: u64, client_id: &str) -> ConfigRecord {
    ConfigRecord {
        id,
        domain_id,
        client_id: client_id.into(),
        secret_sealed: vec![1, 2, 3],
        secret_masked: "********".into(),
        discovery_url: None,
        authorization_endpoint: None,
        token_endpoint: None,
        userinfo_endpoint: None,
        created_at: 1,
        updated_at: 1,
        discovered_endpoints: Vec::new(),
        secret_origin: None,
    }
}

#[derive(Debug)]
pub(super) struct TestMac(pub(super) [u8; 32]);

impl AuditMac for TestMac {
    fn mac(&self, parts: &[&[u8]]) -> [u8; 32] {
        use hmac::{Hmac, Mac};
        let mut m = <Hmac<sha2::Sha256> as Mac>::new_from_slice(&self.0).unwrap();
        for p in parts {
            m.update(p);
        }
        m.finalize().into_bytes().into()
    }
}

pub(super) const KEY: TestMac = TestMac([7; 32]);

pub(super) fn open_chained(dir: &Path) -> Store {
    let store = open(dir);
    store
        .set_audit_mac(std::sync::Arc::new(TestMac(KEY.0)))
        .unwrap();
    store
}

pub(super) fn numbered(n: u64) -> AuditRecord {
    AuditRecord {
        at: n as i64,
        detail: Some(format!("event {n}")),
        ..ev()
    }
}

/// A trail written by every kind of writer, ids 1..=10.
pub(super) async fn trail(store: &Store) {
    let d = store.create_domain("a.example", 1, |_| ev()).await.unwrap(); // 1
    store
        .upsert_config(d.id, |_, id| Ok::<_, ()>(config(id, d.id, "one"))) // 2
        .await
        .unwrap();
    store
        .upsert_config(d.id, |_, id| Ok::<_, ()>(config(id, d.id, "two"))) // 3
        .await
        .unwrap();
    let (t, _) = store
        .create_token(TokenScope::Domain(d.id), 1, |_| ([1; 32], ()), |_| ev()) // 4
        .await
        .unwrap();
    store.revoke_token(t.id, |_| ev()).await.unwrap(); // 5
    assert!(store.delete_config(d.id, ev()).await.unwrap()); // 6
    assert!(!store.delete_config(d.id, ev()).await.unwrap()); // (id 7 taken, no event)
    for n in 8..=10 {
        store.append_audit(&numbered(n)).await.unwrap();
    }
    store.remove_domain(d.id, |_| ev()).await.unwrap(); // 11
}

pub(super) fn ids(store: &Store) -> Vec<u64> {
    store
        .engine
        .dump(&[Tree::Audit])
        .unwrap()
        .remove(0)
        .1
        .into_iter()
        .map(|(k, _)| u64::from_be_bytes(k.as_slice().try_into().unwrap()))
        .collect()
}

pub(super) fn broken(store: &Store) -> Option<(Option<u64>, String)> {
    store.verify_audit_chain(&KEY).unwrap().broken
}

pub(super) fn raw(store: &Store, id: u64) -> Vec<u8> {
    store
        .engine
        .get(Tree::Audit, &id.to_be_bytes())
        .unwrap()
        .unwrap()
}

/// A plain write, as a test tampering with the store makes it.
pub(super) fn op(tree: Tree, key: &[u8], value: Option<&[u8]>) -> Op {
    Op {
        tree,
        key: key.to_vec(),
        value: value.map(<[u8]>::to_vec),
    }
}

/// Write (or remove) the entry of id `id` in `tree` behind the store's back.
pub(super) fn put(store: &Store, tree: Tree, id: u64, value: Option<&[u8]>) {
    store
        .engine
        .write(&[op(tree, &id.to_be_bytes(), value)])
        .unwrap();
}
