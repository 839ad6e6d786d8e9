//! One integration-test binary, a module per topic (ripgrep's layout).
//!
//! - `api_*`: through the real `App` (`oidcvault::app`, the factory `main` uses),
//!   with `actix_web::test::init_service`;
//! - `binary`: through the real binary over real TCP, for the guarantees
//!   (durability across `kill -9`, wrong master key, backups, nothing at rest);
//! - `ui`: the admin page's files and headers, in process; `browser`: the page in
//!   headless Chromium against the real binary (ignored by a plain `cargo test`,
//!   run by `scripts/test.sh`).
//! - `crash`: a kill -9 loop and 64 concurrent clients against the real binary;
//! - `proptests`: property tests of the OIDC routes and the decoders;
//! - `limits`: abuse limits, in-process and over TCP;
//! - `disk_full`: writes on a full (tmpfs) disk; skipped with a message without root.
//! - `ops_hardening`: private files, secrets out of the environment, the master
//!   key apart from the data, the backup path rule, the KDF cap, bounded counters.
//! - `outbound`: the SSRF guard and the outbound client against stub servers
//!   (`stub_http`) on loopback; `discovery`: resolve on save, refresh and the
//!   connection test, against stubs and (ignored by a plain `cargo test`, run by
//!   `scripts/test.sh`) a real OpenID Provider from npm.
// Tests and benchmarks may unwrap: a panic is their failure report.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

mod stub_http;
mod util;

mod api_admin;
mod api_oidc;
mod api_ops;
mod binary;
mod browser;
mod crash;
mod discovery;
mod disk_full;
mod limits;
mod ops;
mod ops_hardening;
mod outbound;
mod proptests;
mod ui;
