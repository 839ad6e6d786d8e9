//! Types that hold plaintext secrets: zeroized on drop, redacted in `Debug`.

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use zeroize::Zeroizing;

/// A plaintext secret string (a client secret as it arrives in a request).
///
/// The buffer is wiped when the value is dropped; `Debug` prints `<redacted>`.
/// There is deliberately no `Display` and no `Serialize`.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretString(Zeroizing<String>);

impl SecretString {
    pub fn new(value: String) -> Self {
        Self(Zeroizing::new(value))
    }

    /// The plaintext. Callers must not copy it into a non-zeroizing buffer.
    pub fn expose(&self) -> &str {
        self.0.as_str()
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretString(<redacted>)")
    }
}

impl<'de> Deserialize<'de> for SecretString {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SecretVisitor;
        impl Visitor<'_> for SecretVisitor {
            type Value = SecretString;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<SecretString, E> {
                Ok(SecretString::new(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<SecretString, E> {
                Ok(SecretString::new(v))
            }
        }
        deserializer.deserialize_str(SecretVisitor)
    }
}

/// The operator's master passphrase or key-file contents: input to Argon2id only.
pub struct MasterSecret(Zeroizing<Vec<u8>>);

impl MasterSecret {
    pub fn new(bytes: Zeroizing<Vec<u8>>) -> Self {
        Self(bytes)
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// Length in characters (for the weak-passphrase check).
    pub fn char_len(&self) -> usize {
        String::from_utf8_lossy(&self.0).chars().count()
    }
}

impl fmt::Debug for MasterSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterSecret(<redacted>)")
    }
}

/// The masked form of a secret: eight `*`, then the last four characters for
/// secrets of 12 characters or more, nothing more for shorter ones.
pub fn mask_secret(secret: &str) -> String {
    const STARS: &str = "********";
    let count = secret.chars().count();
    if count >= 12 {
        let tail: String = secret.chars().skip(count - 4).collect();
        format!("{STARS}{tail}")
    } else {
        STARS.to_owned()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn mask_follows_the_contract() {
        assert_eq!(mask_secret("s3cr3tP@ssw0rd!"), "********0rd!");
        assert_eq!(mask_secret("abcdefghijkl"), "********ijkl");
        assert_eq!(mask_secret("abcdefghijk"), "********");
        assert_eq!(mask_secret(""), "********");
        // Characters, not bytes: a multi-byte tail is kept whole.
        assert_eq!(mask_secret("ééééééééé€€€€"), "********€€€€");
    }

    #[test]
    fn debug_is_redacted() {
        let s = SecretString::new("hunter2-very-secret".into());
        assert_eq!(format!("{s:?}"), "SecretString(<redacted>)");
        let m = MasterSecret::new(Zeroizing::new(b"passphrase-value".to_vec()));
        assert!(!format!("{m:?}").contains("passphrase-value"));
    }

    #[test]
    fn deserializes_from_json_string_only() {
        let s: SecretString = serde_json::from_str("\"a\\nb\"").unwrap();
        assert_eq!(s.expose(), "a\nb");
        assert!(serde_json::from_str::<SecretString>("12").is_err());
    }
}
