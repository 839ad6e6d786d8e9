//! The OpenID Connect protocol side: talking to an enterprise's identity
//! provider through the SSRF-guarded outbound client ([`crate::outbound`]).
//! Knows nothing of the vault or the API: it takes and returns plain values.
//!
//! - [`discovery`]: fetch and check a provider's discovery document;
//! - [`connection_test`]: test a stored configuration against its provider
//!   without a user (the client secret goes only to its bound origin);
//! - [`rp`]: the relying party of the sign-in broker (authorization request,
//!   code exchange, ID-token validation against the cached JWKS, userinfo).

pub mod connection_test;
pub mod discovery;
pub mod rp;
