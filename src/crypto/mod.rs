//! All cryptography of oidcvault, and nothing else.
//!
//! Nothing here is hand-written crypto: Argon2id comes from `argon2`, AES-256-GCM
//! from `aes-gcm`, SHA-256 from `sha2`, constant-time comparison from `subtle`,
//! randomness from the operating system through `rand::rngs::OsRng`. This module
//! only decides *how* they are combined (key hierarchy, envelope layout, associated
//! data) and keeps key material and plaintext in zeroizing types whose `Debug`
//! never prints a value.
//!
//! Key hierarchy:
//! ```text
//! master passphrase / key file ──Argon2id(salt, params)──▶ KEK (never stored)
//! KEK ──AES-256-GCM──▶ keyring file (data/keyring): data keys by term
//! data key[term] ──AES-256-GCM, AAD = domain id + field + bound origin──▶ each client_secret
//! ```
//! Because records are sealed under data keys, a passphrase change only re-wraps
//! the keyring, and a key rotation only adds a term.

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

pub mod app_secret;
mod audit;
mod envelope;
mod kdf;
mod keyring;
mod secret;
pub mod sso;
pub mod token;

pub use app_secret::AppSecretHash;
pub use audit::AuditKey;
pub use envelope::{envelope_term, envelope_version, Field, SealContext};
pub use kdf::KdfParams;
pub use keyring::{Kek, Keyring, KeyringFile, KEYRING_FILE_NAME};
pub use secret::{mask_secret, MasterSecret, SecretString};
pub use token::{GeneratedToken, TokenHash, TokenString};

/// Errors of the crypto layer. Messages never contain key material or plaintext.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("key derivation parameters out of bounds: {0}")]
    KdfParams(String),
    #[error("key derivation failed: {0}")]
    Kdf(String),
    #[error("the master key does not unlock the keyring (authentication tag mismatch)")]
    WrongMasterKey,
    #[error("keyring file is malformed: {0}")]
    MalformedKeyring(String),
    #[error("unsupported keyring format version {0}")]
    KeyringVersion(u8),
    #[error("sealed secret is malformed: {0}")]
    MalformedEnvelope(&'static str),
    #[error("sealed secret has unsupported format version {0}")]
    EnvelopeVersion(u8),
    #[error("sealed secret names key term {0}, which the keyring does not hold")]
    UnknownTerm(u32),
    #[error("sealed secret failed authentication: tampered, or moved from another record")]
    Tampered,
    #[error("encryption failed")]
    Encrypt,
}
