//! One integration-test binary, a module per topic (ripgrep's layout).
//!
//! - `api_*`: through the real `App` (`oidcvault::app`, the factory `main` uses),
//!   with `actix_web::test::init_service`;
//! - `binary`: through the real binary over real TCP, for the guarantees
//!   (durability across `kill -9`, wrong master key, backups, nothing at rest);
//! - `crash`: a kill -9 loop and 64 concurrent clients against the real binary;
//! - `proptests`: property tests of the OIDC routes and the decoders;
//! - `limits`: abuse limits, in-process and over TCP;
//! - `disk_full`: writes on a full (tmpfs) disk; skipped with a message without root.

mod util;

mod api_admin;
mod api_oidc;
mod binary;
mod crash;
mod disk_full;
mod limits;
mod proptests;
