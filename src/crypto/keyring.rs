//! The data-key keyring and its on-disk, passphrase-wrapped form.
//!
//! File layout (`data/keyring`):
//! ```text
//! "OVKR" [format version: u8 = 1] bincode(KeyringFileBody)
//! ```
//! The body carries the Argon2id parameters and salt in the clear (they are not
//! secret, and are needed to derive the KEK), a nonce, and the keyring sealed with
//! AES-256-GCM under the KEK. The associated data covers the magic, the version,
//! the parameters and the salt, so none of them can be altered without the tag
//! failing. A wrong master key is detected by that same tag.

use std::collections::BTreeMap;
use std::fmt;

use aes_gcm::aead::{Aead, AeadCore, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use bincode::{Decode, Encode};
use rand::rngs::OsRng;
use rand::RngCore;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use super::{CryptoError, KdfParams, MasterSecret};

pub const KEYRING_FILE_NAME: &str = "keyring";
const MAGIC: &[u8; 4] = b"OVKR";
const FORMAT_VERSION: u8 = 1;
/// Decoding limit: a keyring file is a few hundred bytes; refuse to allocate more
/// than this for anything read from disk.
const DECODE_LIMIT: usize = 1 << 20;

fn bincode_config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<DECODE_LIMIT>()
}

/// One data key in memory.
#[derive(Clone)]
struct TermKey {
    key: Zeroizing<[u8; 32]>,
    cipher: Aes256Gcm,
    created_at_micros: i64,
}

/// The unlocked data keys, by term. Only the active term seals; every term opens.
/// Also holds the key of the audit trail's secret fingerprints.
#[derive(Clone)]
pub struct Keyring {
    active: u32,
    keys: BTreeMap<u32, TermKey>,
    mac_key: Zeroizing<[u8; 32]>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("active_term", &self.active)
            .field("terms", &self.keys.keys().collect::<Vec<_>>())
            .field("keys", &"<redacted>")
            .finish()
    }
}

fn random_key() -> Zeroizing<[u8; 32]> {
    let mut key = Zeroizing::new([0u8; 32]);
    OsRng.fill_bytes(key.as_mut());
    key
}

fn term_key(key: Zeroizing<[u8; 32]>, created_at_micros: i64) -> TermKey {
    let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(key.as_slice()));
    TermKey {
        key,
        cipher,
        created_at_micros,
    }
}

impl Keyring {
    /// A new keyring with one random data key at term 1.
    pub fn generate() -> Self {
        let mut mac_key = Zeroizing::new([0u8; 32]);
        OsRng.fill_bytes(mac_key.as_mut());
        let mut keys = BTreeMap::new();
        keys.insert(1, term_key(random_key(), crate::time::now_micros()));
        Self {
            active: 1,
            keys,
            mac_key,
        }
    }

    /// A copy with a new random data key at the next term, made active. The
    /// term numbers come from disk: at the last one there is no next (an
    /// error, never a wrap onto term 0 or an existing term).
    pub fn rotated(&self) -> Result<Self, CryptoError> {
        let mut next = self.clone();
        let term = self
            .keys
            .keys()
            .next_back()
            .copied()
            .unwrap_or(0)
            .checked_add(1)
            .ok_or_else(|| CryptoError::MalformedKeyring("no key term number is left".into()))?;
        next.keys
            .insert(term, term_key(random_key(), crate::time::now_micros()));
        next.active = term;
        Ok(next)
    }

    /// A copy without `term`; `None` when `term` is the active one.
    pub fn without_term(&self, term: u32) -> Option<Self> {
        if term == self.active {
            return None;
        }
        let mut next = self.clone();
        next.keys.remove(&term);
        Some(next)
    }

    /// When a term's key was created (microseconds since the epoch).
    pub fn term_created_at(&self, term: u32) -> Option<i64> {
        self.keys.get(&term).map(|k| k.created_at_micros)
    }

    /// A keyed fingerprint of a secret (HMAC-SHA-256 under a keyring key, bound to
    /// the domain and field), so an audit trail can tell whether a secret changed
    /// without holding anything that reveals it.
    pub fn fingerprint(&self, domain_id: u64, field: &str, secret: &[u8]) -> String {
        use hmac::{Hmac, Mac};
        let mut mac = match <Hmac<sha2::Sha256> as Mac>::new_from_slice(self.mac_key.as_slice()) {
            Ok(m) => m,
            Err(_) => return String::new(),
        };
        mac.update(b"oidcvault/fingerprint/v1\0");
        mac.update(&domain_id.to_be_bytes());
        mac.update(field.as_bytes());
        mac.update(b"\0");
        mac.update(secret);
        let tag = mac.finalize().into_bytes();
        tag.iter().take(16).map(|b| format!("{b:02x}")).collect()
    }

    /// The key of the audit trail's MACs (derived from the fingerprint key,
    /// which rotation keeps: see `crypto::audit`).
    pub fn audit_key(&self) -> super::AuditKey {
        super::AuditKey::derive(&self.mac_key)
    }

    pub fn active_term(&self) -> u32 {
        self.active
    }

    pub fn terms(&self) -> impl Iterator<Item = u32> + '_ {
        self.keys.keys().copied()
    }

    pub(super) fn cipher(&self, term: u32) -> Option<&Aes256Gcm> {
        self.keys.get(&term).map(|k| &k.cipher)
    }

    fn to_plain(&self) -> PlainKeyring {
        PlainKeyring {
            active_term: self.active,
            mac_key: *self.mac_key,
            keys: self
                .keys
                .iter()
                .map(|(term, k)| PlainKey {
                    term: *term,
                    key: *k.key,
                    created_at_micros: k.created_at_micros,
                })
                .collect(),
        }
    }

    fn from_plain(plain: &PlainKeyring) -> Result<Self, CryptoError> {
        let mut keys = BTreeMap::new();
        for k in &plain.keys {
            keys.insert(k.term, term_key(Zeroizing::new(k.key), k.created_at_micros));
        }
        if !keys.contains_key(&plain.active_term) {
            return Err(CryptoError::MalformedKeyring(
                "active term has no key".into(),
            ));
        }
        Ok(Self {
            active: plain.active_term,
            keys,
            mac_key: Zeroizing::new(plain.mac_key),
        })
    }
}

/// The keyring as serialized before wrapping. Wiped on drop.
#[derive(Encode, Decode, Zeroize, ZeroizeOnDrop)]
struct PlainKeyring {
    active_term: u32,
    mac_key: [u8; 32],
    keys: Vec<PlainKey>,
}

#[derive(Encode, Decode, Zeroize, ZeroizeOnDrop)]
struct PlainKey {
    term: u32,
    key: [u8; 32],
    created_at_micros: i64,
}

#[derive(Encode, Decode, Clone, PartialEq, Eq)]
struct KeyringFileBody {
    kdf: KdfParams,
    salt: Vec<u8>,
    nonce: [u8; 12],
    sealed: Vec<u8>,
}

/// The key-encryption key with the parameters and salt it was derived with:
/// everything needed to wrap a keyring again. Never stored.
pub struct Kek {
    key: Zeroizing<[u8; 32]>,
    kdf: KdfParams,
    salt: Vec<u8>,
}

impl fmt::Debug for Kek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Kek")
            .field("kdf", &self.kdf)
            .field("key", &"<redacted>")
            .finish_non_exhaustive()
    }
}

impl Kek {
    /// Derive from `secret` with the given parameters and salt (slow: Argon2id).
    pub fn derive(
        secret: &MasterSecret,
        kdf: KdfParams,
        salt: Vec<u8>,
    ) -> Result<Self, CryptoError> {
        let key = kdf.derive(secret, &salt)?;
        Ok(Self { key, kdf, salt })
    }

    /// Derive from `secret` under a fresh random salt (a new installation, or a
    /// passphrase change).
    pub fn derive_new_salt(secret: &MasterSecret, kdf: KdfParams) -> Result<Self, CryptoError> {
        let mut salt = vec![0u8; KdfParams::SALT_LEN];
        OsRng.fill_bytes(&mut salt);
        Self::derive(secret, kdf, salt)
    }
}

/// The keyring file as stored: parameters, salt, and the wrapped keyring.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyringFile {
    body: KeyringFileBody,
}

impl fmt::Debug for KeyringFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyringFile")
            .field("kdf", &self.body.kdf)
            .finish_non_exhaustive()
    }
}

fn file_aad(kdf: &KdfParams, salt: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let mut aad = Vec::with_capacity(64);
    aad.extend_from_slice(MAGIC);
    aad.push(FORMAT_VERSION);
    let params = bincode::encode_to_vec((kdf, salt), bincode_config())
        .map_err(|e| CryptoError::MalformedKeyring(e.to_string()))?;
    aad.extend_from_slice(&params);
    Ok(aad)
}

impl KeyringFile {
    /// Wrap `keyring` under `kek`, with a fresh nonce.
    pub fn wrap(keyring: &Keyring, kek: &Kek) -> Result<Self, CryptoError> {
        let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(kek.key.as_slice()));
        let plain = keyring.to_plain();
        let encoded = Zeroizing::new(
            bincode::encode_to_vec(&plain, bincode_config())
                .map_err(|e| CryptoError::MalformedKeyring(e.to_string()))?,
        );
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let aad = file_aad(&kek.kdf, &kek.salt)?;
        let sealed = cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: &encoded,
                    aad: &aad,
                },
            )
            .map_err(|_| CryptoError::Encrypt)?;
        let mut nonce_arr = [0u8; 12];
        nonce_arr.copy_from_slice(nonce.as_slice());
        Ok(Self {
            body: KeyringFileBody {
                kdf: kek.kdf,
                salt: kek.salt.clone(),
                nonce: nonce_arr,
                sealed,
            },
        })
    }

    /// Derive the KEK from `secret` and unwrap the keyring. A wrong secret fails
    /// the authentication tag: [`CryptoError::WrongMasterKey`]. The KEK is
    /// returned too, so the keyring can be re-wrapped (rotation) without the
    /// passphrase.
    pub fn unlock(&self, secret: &MasterSecret) -> Result<(Keyring, Kek), CryptoError> {
        let kek = Kek::derive(secret, self.body.kdf, self.body.salt.clone())?;
        let keyring = self.unwrap_with(&kek)?;
        Ok((keyring, kek))
    }

    /// Unwrap under a KEK already derived (no Argon2 run): a node of a cluster
    /// reloading the keyring another node rotated. A keyring wrapped under other
    /// parameters or another salt (a passphrase change) cannot be opened so:
    /// [`CryptoError::WrongMasterKey`] (the node needs the new master secret).
    pub fn unwrap_with(&self, kek: &Kek) -> Result<Keyring, CryptoError> {
        if kek.kdf != self.body.kdf || kek.salt != self.body.salt {
            return Err(CryptoError::WrongMasterKey);
        }
        let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(kek.key.as_slice()));
        let aad = file_aad(&self.body.kdf, &self.body.salt)?;
        let plain_bytes = Zeroizing::new(
            cipher
                .decrypt(
                    Nonce::from_slice(&self.body.nonce),
                    Payload {
                        msg: &self.body.sealed,
                        aad: &aad,
                    },
                )
                .map_err(|_| CryptoError::WrongMasterKey)?,
        );
        let (plain, _): (PlainKeyring, usize) =
            bincode::decode_from_slice(&plain_bytes, bincode_config())
                .map_err(|e| CryptoError::MalformedKeyring(e.to_string()))?;
        Keyring::from_plain(&plain)
    }

    pub fn kdf(&self) -> KdfParams {
        self.body.kdf
    }

    pub fn to_bytes(&self) -> Result<Vec<u8>, CryptoError> {
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(MAGIC);
        out.push(FORMAT_VERSION);
        let body = bincode::encode_to_vec(&self.body, bincode_config())
            .map_err(|e| CryptoError::MalformedKeyring(e.to_string()))?;
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// Parse and bounds-check a keyring file. Never panics on any input.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        let rest = bytes
            .strip_prefix(MAGIC.as_slice())
            .ok_or_else(|| CryptoError::MalformedKeyring("not an oidcvault keyring".into()))?;
        let (version, body) = rest
            .split_first()
            .ok_or_else(|| CryptoError::MalformedKeyring("truncated".into()))?;
        if *version != FORMAT_VERSION {
            return Err(CryptoError::KeyringVersion(*version));
        }
        let (body, used): (KeyringFileBody, usize) =
            bincode::decode_from_slice(body, bincode_config())
                .map_err(|e| CryptoError::MalformedKeyring(e.to_string()))?;
        if used != rest.len() - 1 {
            return Err(CryptoError::MalformedKeyring("trailing bytes".into()));
        }
        body.kdf.validate()?;
        if !(16..=64).contains(&body.salt.len()) {
            return Err(CryptoError::MalformedKeyring(format!(
                "salt length {} outside 16..=64",
                body.salt.len()
            )));
        }
        Ok(Self { body })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use super::super::{Field, SealContext};
    use super::*;

    const FAST: KdfParams = KdfParams {
        m_cost_kib: KdfParams::MIN_M_COST_KIB,
        t_cost: 2,
        p_cost: 1,
    };

    fn secret(s: &str) -> MasterSecret {
        MasterSecret::new(Zeroizing::new(s.as_bytes().to_vec()))
    }

    fn wrap(kr: &Keyring, pass: &str) -> KeyringFile {
        let kek = Kek::derive_new_salt(&secret(pass), FAST).unwrap();
        KeyringFile::wrap(kr, &kek).unwrap()
    }

    #[test]
    fn rotation_adds_a_term_and_old_terms_still_open_until_dropped() {
        let kr = Keyring::generate();
        let ctx = SealContext {
            domain_id: 9,
            field: Field::ClientSecret,
            origin: None,
        };
        let old = kr.seal(b"old", ctx).unwrap();
        let next = kr.rotated().unwrap();
        assert_eq!(next.active_term(), 2);
        let new = next.seal(b"new", ctx).unwrap();
        assert_eq!(super::super::envelope_term(&new), Some(2));
        assert_eq!(&*next.open(&old, ctx).unwrap(), b"old");
        assert!(
            next.without_term(2).is_none(),
            "the active term cannot be dropped"
        );
        let dropped = next.without_term(1).unwrap();
        assert!(matches!(
            dropped.open(&old, ctx),
            Err(CryptoError::UnknownTerm(1))
        ));
        assert_eq!(&*dropped.open(&new, ctx).unwrap(), b"new");
        // Re-wrapping with the same KEK keeps every term and the MAC key.
        let (unlocked, kek) = wrap(&next, "a long passphrase")
            .unlock(&secret("a long passphrase"))
            .unwrap();
        let again = KeyringFile::wrap(&unlocked, &kek).unwrap();
        let (reopened, _) = again.unlock(&secret("a long passphrase")).unwrap();
        assert_eq!(reopened.terms().collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(
            reopened.fingerprint(1, "client_secret", b"x"),
            next.fingerprint(1, "client_secret", b"x")
        );
    }

    #[test]
    fn the_last_term_number_does_not_wrap() {
        let kr = Keyring::generate();
        let mut plain = kr.to_plain();
        plain.keys[0].term = u32::MAX;
        plain.active_term = u32::MAX;
        let last = Keyring::from_plain(&plain).unwrap();
        assert!(matches!(
            last.rotated(),
            Err(CryptoError::MalformedKeyring(_))
        ));
    }

    #[test]
    fn fingerprints_are_keyed_and_bound() {
        let a = Keyring::generate();
        let b = Keyring::generate();
        let f = a.fingerprint(1, "client_secret", b"s3cr3t");
        assert_eq!(f.len(), 32);
        assert_eq!(f, a.fingerprint(1, "client_secret", b"s3cr3t"));
        assert_ne!(f, a.fingerprint(2, "client_secret", b"s3cr3t"));
        assert_ne!(f, a.fingerprint(1, "client_secret", b"s3cr3T"));
        assert_ne!(f, b.fingerprint(1, "client_secret", b"s3cr3t"));
    }

    #[test]
    fn wrap_unlock_round_trip_keeps_keys() {
        let kr = Keyring::generate();
        let ctx = SealContext {
            domain_id: 1,
            field: Field::ClientSecret,
            origin: None,
        };
        let sealed = kr.seal(b"value", ctx).unwrap();
        let file = wrap(&kr, "a long passphrase");
        let bytes = file.to_bytes().unwrap();
        let reread = KeyringFile::from_bytes(&bytes).unwrap();
        assert_eq!(reread, file);
        let (unlocked, _) = reread.unlock(&secret("a long passphrase")).unwrap();
        assert_eq!(unlocked.active_term(), 1);
        assert_eq!(&*unlocked.open(&sealed, ctx).unwrap(), b"value");
    }

    #[test]
    fn wrong_passphrase_is_detected() {
        let file = wrap(&Keyring::generate(), "a long passphrase");
        assert!(matches!(
            file.unlock(&secret("another passphrase")),
            Err(CryptoError::WrongMasterKey)
        ));
    }

    #[test]
    fn tampered_parameters_fail_the_tag() {
        let file = wrap(&Keyring::generate(), "a long passphrase");
        let mut other = file.clone();
        other.body.kdf.t_cost = 3;
        assert!(other.unlock(&secret("a long passphrase")).is_err());
        let mut other = file.clone();
        other.body.salt[0] ^= 1;
        assert!(other.unlock(&secret("a long passphrase")).is_err());
    }

    #[test]
    fn garbage_and_out_of_bounds_files_are_refused() {
        assert!(KeyringFile::from_bytes(b"").is_err());
        assert!(KeyringFile::from_bytes(b"OVKR").is_err());
        assert!(KeyringFile::from_bytes(b"OVKR\x02").is_err());
        let file = wrap(&Keyring::generate(), "a long passphrase");
        let bytes = file.to_bytes().unwrap();
        for cut in 0..bytes.len() {
            assert!(
                KeyringFile::from_bytes(&bytes[..cut]).is_err(),
                "cut at {cut}"
            );
        }
        let mut weak = file.clone();
        weak.body.kdf.m_cost_kib = 8;
        assert!(KeyringFile::from_bytes(&weak.to_bytes().unwrap()).is_err());
    }

    #[test]
    fn debug_shows_no_key_material() {
        let kr = Keyring::generate();
        let dbg = format!("{kr:?}");
        assert!(dbg.contains("<redacted>"));
        let raw: [u8; 32] = *kr.keys.get(&1).unwrap().key;
        let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        assert!(!dbg.contains(&hex));
        assert!(!dbg.contains(&format!("{raw:?}")));
    }
}
