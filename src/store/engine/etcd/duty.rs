//! Cluster-wide duties: at most one live node does each (re-encryption,
//! pruning, the sign-in sweep).
//!
//! A duty is the key `<prefix>duty/<name>`, created only if absent (a Txn
//! comparing its create revision with 0) and bound to a lease of
//! [`LEASE_TTL_SECS`] that a task of this process keeps alive. The guard
//! revokes the lease when dropped (the next node may take the duty at once);
//! a holder that dies or loses the cluster stops renewing, and etcd deletes
//! the key when the lease expires. [`DutyGuard::held`] turns false as soon as
//! a renewal fails: a holder that cannot prove it still holds the duty stops
//! its work at the next step (another node may have it a few seconds later).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, PutOptions, Txn, TxnOp};

use super::client::EtcdEngine;
use crate::store::engine::{DutyGuard, EngineError};

/// The duty's lease: a dead holder's duty is free again after at most this.
const LEASE_TTL_SECS: i64 = 10;

/// Renewals per lease period.
const RENEWALS_PER_TTL: u32 = 3;

pub(super) fn try_duty(
    engine: &EtcdEngine,
    name: &str,
) -> Result<Option<Box<dyn DutyGuard>>, EngineError> {
    let mut lease = engine.client.lease_client();
    let lease_id = engine
        .run("a duty's lease", async move {
            lease.grant(LEASE_TTL_SECS, None).await
        })?
        .id();
    let key = engine.duty_key(name);
    let holder = format!("pid {}", std::process::id());
    let txn = Txn::new()
        .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
        .and_then([TxnOp::put(
            key,
            holder,
            Some(PutOptions::new().with_lease(lease_id)),
        )]);
    let mut kv = engine.client.kv_client();
    let taken = engine.run("taking a duty", async move { kv.txn(txn).await });
    match taken {
        Ok(resp) if resp.succeeded() => {}
        other => {
            // Held by another node (or the Txn failed): give the lease back.
            revoke(&engine.handle, engine.client.clone(), lease_id);
            return other.map(|_| None);
        }
    }
    let held = Arc::new(AtomicBool::new(true));
    let task = engine.handle.spawn(keep_alive(
        engine.client.clone(),
        lease_id,
        held.clone(),
        engine.timeout,
    ));
    Ok(Some(Box::new(EtcdDuty {
        name: name.to_owned(),
        lease_id,
        held,
        task,
        client: engine.client.clone(),
        handle: engine.handle.clone(),
    })))
}

/// Renew the lease every TTL/3 until a renewal fails or is refused.
async fn keep_alive(client: Client, lease_id: i64, held: Arc<AtomicBool>, timeout: Duration) {
    let period = Duration::from_secs(LEASE_TTL_SECS.unsigned_abs()) / RENEWALS_PER_TTL;
    let mut lease = client.lease_client();
    let renewed = async {
        let (mut keeper, mut stream) = lease.keep_alive(lease_id).await.ok()?;
        loop {
            tokio::time::sleep(period).await;
            keeper.keep_alive().await.ok()?;
            let answer = tokio::time::timeout(timeout, stream.message()).await;
            match answer {
                Ok(Ok(Some(r))) if r.ttl() > 0 => {}
                _ => return None::<()>,
            }
        }
    };
    let _ = renewed.await;
    held.store(false, Ordering::SeqCst);
    tracing::warn!(
        lease_id,
        "a cluster duty was lost: its lease could not be renewed"
    );
}

/// Revoke the lease in the background (never blocks the dropping thread).
fn revoke(handle: &tokio::runtime::Handle, client: Client, lease_id: i64) {
    handle.spawn(async move {
        let mut lease = client.lease_client();
        let _ = tokio::time::timeout(Duration::from_secs(5), lease.revoke(lease_id)).await;
    });
}

struct EtcdDuty {
    name: String,
    lease_id: i64,
    held: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
    client: Client,
    handle: tokio::runtime::Handle,
}

impl std::fmt::Debug for EtcdDuty {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdDuty")
            .field("name", &self.name)
            .field("lease_id", &self.lease_id)
            .field("held", &self.held())
            .finish_non_exhaustive()
    }
}

impl DutyGuard for EtcdDuty {
    fn held(&self) -> bool {
        self.held.load(Ordering::SeqCst) && !self.task.is_finished()
    }
}

impl Drop for EtcdDuty {
    fn drop(&mut self) {
        self.held.store(false, Ordering::SeqCst);
        self.task.abort();
        revoke(&self.handle, self.client.clone(), self.lease_id);
    }
}
