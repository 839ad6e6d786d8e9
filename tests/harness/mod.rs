//! The harness of the integration tests, apart from the tests themselves
//! (ripgrep's layout): test modules import it from here, none from another test
//! module.
//!
//! - Through the real binary over real TCP: [`Home`] (a temporary folder with a
//!   `config.toml` and `data/` beside it, and the binary run in it), [`Server`]
//!   (a running `oidcvault serve`, its log captured), [`Client`] (HTTP, one
//!   connection per request); [`files`] (folder snapshots and copies), [`leaks`]
//!   (the leak detector), [`text`]; [`ops`] (fixtures of the `ops_*` modules).
//! - In process: [`in_process`] (a vault in a temporary directory and the real
//!   `App`, request helpers).
//! - [`stub_http`]: a tiny HTTP server on loopback standing in for providers;
//!   [`stub_idp`]: a stub OpenID Provider on it (keys, ID tokens, knobs), and
//!   [`sso_browser`]: a browser that follows a sign-in through the broker.
//! - [`oidc_provider`]: a real OpenID Provider (panva's `oidc-provider`, run by
//!   node) on loopback, for the discovery tests and the browser sign-in.
//! - [`prometheus`]: the one strict parser of `/metrics` text.
//! - [`poll`]: waiting for a state, with a deadline and what was seen.
//! - [`etcd`]: a real etcd cluster on loopback (members killed and restarted);
//!   [`cluster`]: oidcvault nodes on it (one prefix and master key, own homes);
//!   [`cluster_sso`]: sign-ins that start on one node and finish on another.

use std::time::Duration;

pub(crate) mod client;
pub(crate) mod cluster;
pub(crate) mod cluster_sso;
pub(crate) mod etcd;
pub(crate) mod files;
pub(crate) mod home;
pub(crate) mod in_process;
pub(crate) mod leaks;
pub(crate) mod oidc_provider;
pub(crate) mod ops;
pub(crate) mod poll;
pub(crate) mod prometheus;
pub(crate) mod server;
pub(crate) mod sso_browser;
pub(crate) mod stub_http;
pub(crate) mod stub_idp;
pub(crate) mod text;

pub(crate) use client::{tls_agent, Client, Resp};
pub(crate) use files::{copy_dir, snapshot, snapshot_diff};
pub(crate) use home::{
    assert_one_line_failure, assert_refused_for_master_key, config_toml, Home, Output,
};
pub(crate) use server::{parse_listening, Server};
pub(crate) use text::{lower, random_hex, tail};

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_oidcvault");
pub(crate) const PASSPHRASE: &str = "correct-horse-battery-staple-1";
pub(crate) const OTHER_PASSPHRASE: &str = "incorrect-donkey-battery-staple-2";
pub(crate) const CONFIG_PATH: &str = "/api/v1/enterprises/oidc/config/";
/// How long a server gets to print its address, or any process to exit.
pub(crate) const START_TIMEOUT: Duration = Duration::from_secs(30);
pub(crate) const EXIT_TIMEOUT: Duration = Duration::from_secs(30);
/// A command that must be refused quickly (a wrong key is seen before anything else).
pub(crate) const REFUSE_TIMEOUT: Duration = Duration::from_secs(15);
