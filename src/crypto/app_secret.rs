//! Credentials of the applications that ask the sign-in broker for sign-ins:
//! a public client id (`ova_` + 16 random bytes, base64url) and a client secret
//! (`ovs_` + 32 random bytes, base64url), shown once.
//!
//! As for API tokens (`token`), only SHA-256 of the secret's random part is
//! stored, under a label of its own (so a token's hash can never stand for an
//! application secret's), and compared in constant time. A slow hash is not
//! needed: the input is 256 uniformly random bits, not a password. The secret
//! carries no id: the application is found by its client id, which the
//! application always sends with it.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::token::{decode_random, labelled_hash, random_encoded};

const CLIENT_ID_PREFIX: &str = "ova_";
const CLIENT_ID_RANDOM_LEN: usize = 16;
const SECRET_PREFIX: &str = "ovs_";
const SECRET_RANDOM_LEN: usize = 32;
/// base64url without padding of [`SECRET_RANDOM_LEN`] bytes.
const SECRET_ENCODED_LEN: usize = 43;
const LABEL: &[u8] = b"oidcvault/app-secret/v1\0";

/// SHA-256 of a client secret's random part (what is stored).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct AppSecretHash(pub [u8; 32]);

impl fmt::Debug for AppSecretHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AppSecretHash(..)")
    }
}

impl AppSecretHash {
    fn of(random: &[u8]) -> Self {
        Self(labelled_hash(LABEL, random))
    }

    /// Constant-time comparison.
    pub fn matches(&self, other: &AppSecretHash) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

/// A new client id: public, not a secret.
pub fn generate_client_id() -> String {
    let mut random = [0u8; CLIENT_ID_RANDOM_LEN];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut random);
    format!("{CLIENT_ID_PREFIX}{}", URL_SAFE_NO_PAD.encode(random))
}

/// A new client secret (wiped on drop) and the hash to store for it.
pub fn generate_secret() -> (Zeroizing<String>, AppSecretHash) {
    let (random, encoded) = random_encoded::<SECRET_RANDOM_LEN>();
    let secret = Zeroizing::new(format!("{SECRET_PREFIX}{}", encoded.as_str()));
    (secret, AppSecretHash::of(random.as_slice()))
}

/// The hash of a presented client secret; `None` when it is not even shaped
/// like one (never says why: the caller answers as for a wrong secret).
pub fn parse_secret(presented: &str) -> Option<AppSecretHash> {
    let encoded = presented.strip_prefix(SECRET_PREFIX)?;
    let raw = decode_random::<SECRET_RANDOM_LEN>(encoded, SECRET_ENCODED_LEN)?;
    Some(AppSecretHash::of(&raw))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_secret_parses_to_its_hash_and_no_other() {
        let (secret, hash) = generate_secret();
        assert!(
            secret.starts_with("ovs_") && secret.len() == 4 + 43,
            "{}",
            secret.len()
        );
        assert!(parse_secret(&secret).unwrap().matches(&hash));
        let (other, other_hash) = generate_secret();
        assert_ne!(*secret, *other);
        assert!(!parse_secret(&other).unwrap().matches(&hash));
        assert!(!other_hash.matches(&hash));
        assert_eq!(format!("{hash:?}"), "AppSecretHash(..)");
    }

    /// The same random part under the token's label hashes differently: a
    /// token's stored hash never authenticates an application.
    #[test]
    fn the_hash_is_domain_separated_from_tokens() {
        let random = [7u8; 32];
        assert_ne!(
            AppSecretHash::of(&random).0,
            labelled_hash(b"oidcvault/token/v1\0", &random)
        );
        let token = crate::crypto::token::generate(1);
        // `ovt_<id>_<random>`; the random part may hold `_` itself (base64url).
        let random_part = token
            .token
            .expose()
            .splitn(3, '_')
            .nth(2)
            .unwrap()
            .to_owned();
        let as_secret = parse_secret(&format!("ovs_{random_part}")).unwrap();
        assert!(!as_secret.matches(&AppSecretHash(token.hash.0)));
    }

    #[test]
    fn malformed_secrets_are_refused() {
        let (good, _) = generate_secret();
        for bad in [
            "",
            "ovs_",
            "ovs_AAAA",
            &good[..good.len() - 1],
            &format!("{}A", good.as_str()),
            &good.replace("ovs_", "ovt_"),
            &good.replace("ovs_", ""),
            &format!("ovs_{}", "*".repeat(43)),
        ] {
            assert!(parse_secret(bad).is_none(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn client_ids_are_prefixed_random_and_url_safe() {
        let (a, b) = (generate_client_id(), generate_client_id());
        assert_ne!(a, b);
        assert!(a.starts_with("ova_") && a.len() == 4 + 22, "{a}");
        assert!(a[4..]
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
    }
}
