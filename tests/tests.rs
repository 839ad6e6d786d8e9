//! One integration-test binary, a module per topic (ripgrep's layout), the
//! harness apart from the tests (`harness/`: no test module imports another).
//!
//! - `harness`: the real binary in a temporary home over real TCP (`Home`,
//!   `Server`, `Client`, log capture), the in-process app (`harness::in_process`),
//!   stub HTTP servers (`harness::stub_http`), the one Prometheus text parser,
//!   polling with a deadline, and the fixtures of the `ops_*` modules.
//! - `api_*`: through the real `App` (`oidcvault::app`, the factory `main` uses),
//!   with `actix_web::test::init_service` (`api_apps`: the sign-in broker's
//!   applications);
//! - `binary_*`: through the real binary over real TCP, for the guarantees:
//!   durability across `kill -9` and backup by copy (`binary_durability`), the
//!   master key (`binary_master_key`), nothing secret at rest or in the logs
//!   (`binary_secrets`), the command line (`binary_cli`), revocation and domain
//!   removal effective before their answer under 64 clients, through the
//!   authentication cache (`binary_revocation`);
//! - `ui`: the admin page's files and headers, in process; `browser`: the page,
//!   and a sign-in through the broker at a real OpenID Provider's login form, in
//!   headless Chromium against the real binary (ignored by a plain `cargo test`,
//!   run by `scripts/test.sh`).
//! - `crash`: a kill -9 loop and 64 concurrent clients against the real binary;
//! - `proptests`: property tests of the OIDC routes and the decoders;
//! - `sso_state`: the sign-in broker's transactions and codes through the vault
//!   (take-once under concurrency, audited redemptions);
//! - `limits`: abuse limits in process; `limits_tcp`: over TCP;
//! - `disk_full`: writes on a full (tmpfs) disk; skipped with a message without
//!   root, failing instead with `CI=true`.
//! - `ops_*`: operations through the real binary: backup and restore
//!   (`ops_backup`), the audit trail (`ops_audit`), key rotation
//!   (`ops_rotation`), passphrase change (`ops_passphrase`), `verify`
//!   (`ops_verify`), TLS (`ops_tls`), `/metrics` (`ops_metrics`), the Grafana
//!   dashboard's queries against a live `/metrics` (`ops_dashboard`);
//! - `ops_hardening`: private files, secrets out of the environment, the master
//!   key apart from the data, the backup path rule, the KDF cap, bounded counters.
//! - `outbound`: the SSRF guard and the outbound client against stub servers
//!   (`harness::stub_http`) on loopback; `discovery`: resolve on save, refresh and
//!   the connection test, against stubs and (ignored by a plain `cargo test`, run
//!   by `scripts/test.sh`) a real OpenID Provider from npm.
//! - `sso`: the sign-in broker against stub OpenID Providers
//!   (`harness::stub_idp`), in process and through the real binary (`sso::binary`:
//!   a code is redeemed at most once across `kill -9`).
//! - `cluster`: two oidcvault nodes on a real three-member etcd cluster
//!   (`harness::etcd`, `harness::cluster`): what one node writes or revokes the
//!   other sees, `kill -9` of the etcd leader, of two members and of a node
//!   under load, concurrent writes, rotation, a sign-in across nodes, and the
//!   move sled -> etcd -> backup -> sled.
// Tests and benchmarks may unwrap: a panic is their failure report.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

mod harness;

mod api_admin;
mod api_apps;
mod api_oidc;
mod api_ops;
mod binary_cli;
mod binary_credentials;
mod binary_durability;
mod binary_master_key;
mod binary_revocation;
mod binary_secrets;
mod browser;
mod cluster;
mod crash;
mod discovery;
mod disk_full;
mod limits;
mod limits_tcp;
mod ops_audit;
mod ops_backup;
mod ops_dashboard;
mod ops_hardening;
mod ops_metrics;
mod ops_passphrase;
mod ops_progress;
mod ops_rotation;
mod ops_systemd;
mod ops_tls;
mod ops_verify;
mod outbound;
mod proptests;
mod sso;
mod sso_state;
mod ui;
