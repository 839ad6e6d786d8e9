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
struct TermKey {
    key: Zeroizing<[u8; 32]>,
    cipher: Aes256Gcm,
    created_at_micros: i64,
}

/// The unlocked data keys, by term. Only the active term seals; every term opens.
pub struct Keyring {
    active: u32,
    keys: BTreeMap<u32, TermKey>,
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
        let mut key = Zeroizing::new([0u8; 32]);
        OsRng.fill_bytes(key.as_mut());
        let mut keys = BTreeMap::new();
        keys.insert(1, term_key(key, crate::time::now_micros()));
        Self { active: 1, keys }
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
        })
    }
}

/// The keyring as serialized before wrapping. Wiped on drop.
#[derive(Encode, Decode, Zeroize, ZeroizeOnDrop)]
struct PlainKeyring {
    active_term: u32,
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
    /// Wrap `keyring` under a KEK derived from `secret` with a fresh random salt.
    pub fn wrap(
        keyring: &Keyring,
        secret: &MasterSecret,
        kdf: KdfParams,
    ) -> Result<Self, CryptoError> {
        let mut salt = vec![0u8; KdfParams::SALT_LEN];
        OsRng.fill_bytes(&mut salt);
        let kek = kdf.derive(secret, &salt)?;
        let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(kek.as_slice()));
        let plain = keyring.to_plain();
        let encoded = Zeroizing::new(
            bincode::encode_to_vec(&plain, bincode_config())
                .map_err(|e| CryptoError::MalformedKeyring(e.to_string()))?,
        );
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let aad = file_aad(&kdf, &salt)?;
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
                kdf,
                salt,
                nonce: nonce_arr,
                sealed,
            },
        })
    }

    /// Derive the KEK from `secret` and unwrap the keyring. A wrong secret fails
    /// the authentication tag: [`CryptoError::WrongMasterKey`].
    pub fn unlock(&self, secret: &MasterSecret) -> Result<Keyring, CryptoError> {
        let kek = self.body.kdf.derive(secret, &self.body.salt)?;
        let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(kek.as_slice()));
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

    #[test]
    fn wrap_unlock_round_trip_keeps_keys() {
        let kr = Keyring::generate();
        let ctx = SealContext {
            domain_id: 1,
            field: Field::ClientSecret,
        };
        let sealed = kr.seal(b"value", ctx).unwrap();
        let file = KeyringFile::wrap(&kr, &secret("a long passphrase"), FAST).unwrap();
        let bytes = file.to_bytes().unwrap();
        let reread = KeyringFile::from_bytes(&bytes).unwrap();
        assert_eq!(reread, file);
        let unlocked = reread.unlock(&secret("a long passphrase")).unwrap();
        assert_eq!(unlocked.active_term(), 1);
        assert_eq!(&*unlocked.open(&sealed, ctx).unwrap(), b"value");
    }

    #[test]
    fn wrong_passphrase_is_detected() {
        let file =
            KeyringFile::wrap(&Keyring::generate(), &secret("a long passphrase"), FAST).unwrap();
        assert!(matches!(
            file.unlock(&secret("another passphrase")),
            Err(CryptoError::WrongMasterKey)
        ));
    }

    #[test]
    fn tampered_parameters_fail_the_tag() {
        let file =
            KeyringFile::wrap(&Keyring::generate(), &secret("a long passphrase"), FAST).unwrap();
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
        let file =
            KeyringFile::wrap(&Keyring::generate(), &secret("a long passphrase"), FAST).unwrap();
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
