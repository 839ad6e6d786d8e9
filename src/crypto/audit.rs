//! The key of the audit trail's MAC chain (see `store`).
//!
//! Derived from the keyring's fingerprint key, which is random, created with the
//! keyring and kept by every rotation, term drop and passphrase change: so the
//! chain never needs a key that a dropped term took away, and a restored backup
//! (which carries its keyring) verifies under its own key. The derivation is
//! HKDF-Expand (RFC 5869, the `hkdf` crate) with the fingerprint key as the
//! pseudorandom key and a label of its own as the info, which keeps audit MACs
//! and secret fingerprints apart.

use std::fmt;

use hmac::{Hmac, Mac};
use zeroize::Zeroizing;

const LABEL: &[u8] = b"oidcvault/audit-mac-key/v1";

/// The audit MAC key. Wiped on drop; `Debug` prints no key.
#[derive(Clone)]
pub struct AuditKey {
    key: Zeroizing<[u8; 32]>,
}

impl fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuditKey(<redacted>)")
    }
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC takes a key of any length: `new_from_slice` cannot fail for it.
    let Ok(mut mac) = <Hmac<sha2::Sha256> as Mac>::new_from_slice(key) else {
        return [0; 32];
    };
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

impl AuditKey {
    pub(super) fn derive(fingerprint_key: &[u8; 32]) -> Self {
        let mut key = Zeroizing::new([0u8; 32]);
        // A 32-byte pseudorandom key and a 32-byte output: neither call can fail
        // (HKDF refuses only a PRK shorter than the hash, or more than 255 blocks).
        if let Ok(hk) = hkdf::Hkdf::<sha2::Sha256>::from_prk(fingerprint_key) {
            let _ = hk.expand(LABEL, key.as_mut_slice());
        }
        Self { key }
    }

    /// HMAC-SHA-256 of the concatenation of `parts`.
    pub fn mac(&self, parts: &[&[u8]]) -> [u8; 32] {
        hmac(self.key.as_slice(), parts)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use super::super::Keyring;

    /// The derivation is HKDF-Expand's first block, as RFC 5869 defines it
    /// (`T(1) = HMAC(PRK, info ‖ 0x01)`): the crate and the definition agree.
    #[test]
    fn the_key_is_hkdf_expand_of_the_fingerprint_key() {
        let prk = [7u8; 32];
        assert_eq!(
            *super::AuditKey::derive(&prk).key,
            super::hmac(&prk, &[super::LABEL, &[1]])
        );
    }

    #[test]
    fn the_audit_key_survives_rotation_and_term_drops_and_is_per_keyring() {
        let kr = Keyring::generate();
        let tag = kr.audit_key().mac(&[b"event"]);
        let rotated = kr.rotated().unwrap();
        assert_eq!(rotated.audit_key().mac(&[b"event"]), tag);
        let dropped = rotated.without_term(1).unwrap();
        assert_eq!(dropped.audit_key().mac(&[b"event"]), tag);
        assert_eq!(kr.audit_key().mac(&[b"ev", b"ent"]), tag);
        assert_ne!(kr.audit_key().mac(&[b"event!"]), tag);
        assert_ne!(Keyring::generate().audit_key().mac(&[b"event"]), tag);
        // Not the fingerprint key itself.
        assert_ne!(
            kr.fingerprint(0, "", b"event"),
            tag.iter()
                .take(16)
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        );
        assert_eq!(format!("{:?}", kr.audit_key()), "AuditKey(<redacted>)");
    }
}
