//! The sealed-secret envelope stored in each OIDC config record.
//!
//! Layout (all integers big-endian):
//! ```text
//! [version: u8 = 2][term: u32][nonce: 12 bytes][AES-256-GCM ciphertext ‖ 16-byte tag]
//! ```
//! The associated data binds the ciphertext to the envelope header, the domain id,
//! the field name and (from version 2) the origin the secret may be sent to, so a
//! ciphertext copied onto another domain's record (or into another field), or a
//! record whose bound origin was edited on disk, fails authentication instead of
//! decrypting. Version 1 envelopes (written before the origin binding) still open:
//! their associated data has no origin; the next write of the secret, or a
//! re-encryption after a key rotation, seals it as version 2.

use aes_gcm::aead::{Aead, AeadCore, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use rand::rngs::OsRng;
use zeroize::Zeroizing;

use super::{CryptoError, Keyring};

pub(super) const ENVELOPE_VERSION: u8 = 2;
/// Envelopes written before the origin binding: still opened, never written.
const ENVELOPE_VERSION_1: u8 = 1;
const HEADER_LEN: usize = 1 + 4;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;

/// Which field of a record a ciphertext belongs to (part of the associated data).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    ClientSecret,
    /// A sign-in broker's login transaction (nonce, PKCE verifier, the
    /// application's state); its `origin` slot carries the record's key.
    SsoTransaction,
    /// A one-time code's grant (the signed-in user's profile); its `origin`
    /// slot carries the record's key.
    SsoCode,
}

impl Field {
    fn name(self) -> &'static [u8] {
        match self {
            Field::ClientSecret => b"client_secret",
            Field::SsoTransaction => b"sso_transaction",
            Field::SsoCode => b"sso_code",
        }
    }
}

/// The record a ciphertext belongs to, and where its plaintext may be sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SealContext<'a> {
    pub domain_id: u64,
    pub field: Field,
    /// The origin (`scheme://host[:port]`) the secret is bound to: the only place
    /// it may ever be sent. `None`: bound nowhere (it is never sent).
    pub origin: Option<&'a str>,
}

impl SealContext<'_> {
    fn aad(&self, header: &[u8]) -> Vec<u8> {
        let legacy = header.first() == Some(&ENVELOPE_VERSION_1);
        let origin = self.origin.unwrap_or_default().as_bytes();
        let mut aad = Vec::with_capacity(64 + origin.len());
        aad.extend_from_slice(if legacy {
            b"oidcvault/secret/v1\0"
        } else {
            b"oidcvault/secret/v2\0"
        });
        aad.extend_from_slice(header);
        aad.extend_from_slice(&self.domain_id.to_be_bytes());
        aad.extend_from_slice(self.field.name());
        if !legacy {
            // Length-prefixed, with a presence byte: `None` and `Some("")` differ,
            // and no origin can be extended into another.
            aad.push(u8::from(self.origin.is_some()));
            aad.extend_from_slice(&(origin.len() as u64).to_be_bytes());
            aad.extend_from_slice(origin);
        }
        aad
    }
}

impl Keyring {
    /// Seal `plaintext` under the active term with a fresh random 96-bit nonce.
    pub fn seal(&self, plaintext: &[u8], ctx: SealContext) -> Result<Vec<u8>, CryptoError> {
        let term = self.active_term();
        let cipher = self.cipher(term).ok_or(CryptoError::UnknownTerm(term))?;
        let mut header = [0u8; HEADER_LEN];
        let (version, term_bytes) = header.split_at_mut(1);
        version.copy_from_slice(&[ENVELOPE_VERSION]);
        term_bytes.copy_from_slice(&term.to_be_bytes());
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let aad = ctx.aad(&header);
        let ciphertext = cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext,
                    aad: &aad,
                },
            )
            .map_err(|_| CryptoError::Encrypt)?;
        let mut out = Vec::with_capacity(HEADER_LEN + NONCE_LEN + ciphertext.len());
        out.extend_from_slice(&header);
        out.extend_from_slice(nonce.as_slice());
        out.extend_from_slice(&ciphertext);
        Ok(out)
    }

    /// Open an envelope made by [`Keyring::seal`] for the same context.
    pub fn open(
        &self,
        envelope: &[u8],
        ctx: SealContext,
    ) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        if envelope.len() < HEADER_LEN + NONCE_LEN + TAG_LEN {
            return Err(CryptoError::MalformedEnvelope("too short"));
        }
        let (header, rest) = envelope.split_at(HEADER_LEN);
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        let (version, term_bytes) = header.split_at(1);
        if version != [ENVELOPE_VERSION] && version != [ENVELOPE_VERSION_1] {
            return Err(CryptoError::EnvelopeVersion(
                version.first().copied().unwrap_or_default(),
            ));
        }
        let term_arr: [u8; 4] = term_bytes
            .try_into()
            .map_err(|_| CryptoError::MalformedEnvelope("bad header"))?;
        let term = u32::from_be_bytes(term_arr);
        let cipher = self.cipher(term).ok_or(CryptoError::UnknownTerm(term))?;
        let aad = ctx.aad(header);
        let plaintext = cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: &aad,
                },
            )
            .map_err(|_| CryptoError::Tampered)?;
        Ok(Zeroizing::new(plaintext))
    }
}

/// The format version of an envelope (1: no origin binding; 2: bound).
pub fn envelope_version(envelope: &[u8]) -> Option<u8> {
    envelope.first().copied()
}

/// The key term an envelope was sealed under, without opening it.
pub fn envelope_term(envelope: &[u8]) -> Option<u32> {
    let bytes: [u8; 4] = envelope.get(1..HEADER_LEN)?.try_into().ok()?;
    Some(u32::from_be_bytes(bytes))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use super::*;

    fn ctx(domain_id: u64) -> SealContext<'static> {
        SealContext {
            domain_id,
            field: Field::ClientSecret,
            origin: Some("https://idp.example.com"),
        }
    }

    #[test]
    fn the_bound_origin_is_authenticated() {
        let kr = Keyring::generate();
        let sealed = kr.seal(b"bound", ctx(5)).unwrap();
        assert_eq!(envelope_version(&sealed), Some(2));
        for other in [
            None,
            Some(""),
            Some("https://attacker.example"),
            Some("https://idp.example.com:8443"),
            Some("http://idp.example.com"),
        ] {
            let moved = SealContext {
                origin: other,
                ..ctx(5)
            };
            assert!(
                matches!(kr.open(&sealed, moved), Err(CryptoError::Tampered)),
                "{other:?}"
            );
        }
        let unbound = SealContext {
            origin: None,
            ..ctx(5)
        };
        let sealed = kr.seal(b"unbound", unbound).unwrap();
        assert!(kr.open(&sealed, ctx(5)).is_err());
        assert_eq!(&*kr.open(&sealed, unbound).unwrap(), b"unbound");
    }

    /// An envelope written before the origin binding (version 1: no origin in
    /// the associated data) still opens, whatever origin the record now has.
    #[test]
    fn version_1_envelopes_still_open() {
        let kr = Keyring::generate();
        let term = kr.active_term();
        let cipher = kr.cipher(term).unwrap();
        let header = [&[ENVELOPE_VERSION_1][..], &term.to_be_bytes()[..]].concat();
        let mut aad = b"oidcvault/secret/v1\0".to_vec();
        aad.extend_from_slice(&header);
        aad.extend_from_slice(&9u64.to_be_bytes());
        aad.extend_from_slice(b"client_secret");
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let ct = cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: b"legacy",
                    aad: &aad,
                },
            )
            .unwrap();
        let envelope = [&header[..], nonce.as_slice(), &ct[..]].concat();
        assert_eq!(&*kr.open(&envelope, ctx(9)).unwrap(), b"legacy");
        let no_origin = SealContext {
            origin: None,
            ..ctx(9)
        };
        assert_eq!(&*kr.open(&envelope, no_origin).unwrap(), b"legacy");
        assert!(kr.open(&envelope, ctx(10)).is_err());
    }

    #[test]
    fn round_trip() {
        let kr = Keyring::generate();
        let sealed = kr.seal(b"s3cr3tP@ssw0rd!", ctx(7)).unwrap();
        assert_eq!(&*kr.open(&sealed, ctx(7)).unwrap(), b"s3cr3tP@ssw0rd!");
        assert_eq!(envelope_term(&sealed), Some(kr.active_term()));
        // The plaintext does not appear in the envelope.
        assert!(!sealed.windows(6).any(|w| w == b"s3cr3t"));
    }

    #[test]
    fn nonces_are_fresh() {
        let kr = Keyring::generate();
        let a = kr.seal(b"same", ctx(1)).unwrap();
        let b = kr.seal(b"same", ctx(1)).unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn any_flipped_byte_fails() {
        let kr = Keyring::generate();
        let sealed = kr.seal(b"a secret value", ctx(3)).unwrap();
        for i in 0..sealed.len() {
            for bit in [0x01u8, 0x80] {
                let mut bad = sealed.clone();
                bad[i] ^= bit;
                assert!(
                    kr.open(&bad, ctx(3)).is_err(),
                    "flipping bit {bit:#x} of byte {i} must fail"
                );
            }
        }
    }

    #[test]
    fn moved_to_another_domain_fails() {
        let kr = Keyring::generate();
        let sealed = kr.seal(b"domain three", ctx(3)).unwrap();
        assert!(matches!(
            kr.open(&sealed, ctx(4)),
            Err(CryptoError::Tampered)
        ));
    }

    #[test]
    fn another_keyring_or_term_fails() {
        let a = Keyring::generate();
        let b = Keyring::generate();
        let sealed = a.seal(b"x", ctx(1)).unwrap();
        assert!(matches!(
            b.open(&sealed, ctx(1)),
            Err(CryptoError::Tampered)
        ));
        // Rewrite the header to name a term the keyring does not hold.
        let mut other_term = sealed.clone();
        other_term[1..5].copy_from_slice(&99u32.to_be_bytes());
        assert!(matches!(
            a.open(&other_term, ctx(1)),
            Err(CryptoError::UnknownTerm(99))
        ));
    }

    #[test]
    fn truncated_or_garbage_input_is_an_error() {
        let kr = Keyring::generate();
        for len in 0..40 {
            let junk = vec![1u8; len];
            assert!(kr.open(&junk, ctx(1)).is_err());
        }
    }
}
