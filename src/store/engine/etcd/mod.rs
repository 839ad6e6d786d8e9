//! The etcd engine: the store's trees kept in an etcd cluster that several
//! oidcvault nodes share (`storage.backend = "etcd"`).
//!
//! Layout: every key is `<prefix><tree name>/<key bytes>`; the trees keyed by
//! names ([`Tree::keys_are_names`](super::Tree::keys_are_names): domain names, client ids) are keyed by the
//! hex SHA-256 of the name instead, so that no plaintext name shows in etcd's
//! keys (its logs, `etcdctl get --keys-only`, a snapshot's key list). Values
//! are the store's records as they come (sealed where they hold secrets);
//! this module never logs them nor puts them in an error.
//!
//! Transactions are software transactional memory over etcd's MVCC
//! (`stm`): reads at one revision, writes buffered, and one etcd Txn at
//! commit that compares the mod revision of every key read; when another
//! writer got there first the body runs again. Duties ([`Engine::try_duty`](super::Engine::try_duty))
//! are keys bound to a lease kept alive by this process (`duty`).
//!
//! The client is asynchronous (tonic); the engine's methods are blocking. It
//! runs its own small tokio runtime and each call waits on a channel for the
//! answer, bounded by `timeout_secs`: the caller's thread is never made to
//! drive a runtime (actix workers are runtime threads themselves), and a
//! cluster that does not answer gives [`EngineError::Unavailable`](super::EngineError::Unavailable), not a hang.
//!
//! Built only with the `etcd` cargo feature (on by default); the
//! configuration ([`config`]) is always built.

pub mod config;

#[cfg(feature = "etcd")]
mod client;
#[cfg(feature = "etcd")]
mod duty;
#[cfg(feature = "etcd")]
mod stm;
#[cfg(test)]
#[cfg(feature = "etcd")]
mod testing;
#[cfg(test)]
#[cfg(feature = "etcd")]
mod tests;

pub use config::{EtcdConfig, ReadConsistency};

#[cfg(feature = "etcd")]
pub use client::EtcdEngine;
