//! API tokens: `ovt_<id>_<43 chars of base64url>` carrying 256 random bits.
//!
//! Only SHA-256 of the random part is stored. The id in the token lets the server
//! fetch exactly one record and compare the hash in constant time, instead of
//! searching by a secret-derived key. A slow hash is not needed: the input is 256
//! uniformly random bits, not a password.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::rngs::OsRng;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

const PREFIX: &str = "ovt_";
const RANDOM_LEN: usize = 32;

/// SHA-256 of a token's random part (what is stored).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TokenHash(pub [u8; 32]);

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenHash(..)")
    }
}

/// SHA-256 of `random` under a label that names what it is, so a hash stored
/// for one kind of credential never matches another kind's (shared with
/// `app_secret`).
pub(super) fn labelled_hash(label: &[u8], random: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(label);
    h.update(random);
    h.finalize().into()
}

/// `N` random bytes from the operating system and their base64url form (no
/// padding), both wiped on drop (shared with `app_secret`).
pub(super) fn random_encoded<const N: usize>() -> (Zeroizing<[u8; N]>, Zeroizing<String>) {
    let mut random = Zeroizing::new([0u8; N]);
    OsRng.fill_bytes(random.as_mut());
    let encoded = Zeroizing::new(URL_SAFE_NO_PAD.encode(random.as_slice()));
    (random, encoded)
}

/// Decode exactly `N` bytes from `encoded_len` characters of base64url (no
/// padding) into a wiped buffer; `None` for anything else.
pub(super) fn decode_random<const N: usize>(
    encoded: &str,
    encoded_len: usize,
) -> Option<Zeroizing<Vec<u8>>> {
    if encoded.len() != encoded_len {
        return None;
    }
    let raw = Zeroizing::new(URL_SAFE_NO_PAD.decode(encoded).ok()?);
    (raw.len() == N).then_some(raw)
}

impl TokenHash {
    fn of(random: &[u8]) -> Self {
        Self(labelled_hash(b"oidcvault/token/v1\0", random))
    }

    /// Constant-time comparison.
    pub fn matches(&self, other: &TokenHash) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

/// A full token string as shown once to its owner. Wiped on drop, redacted in `Debug`.
pub struct TokenString(Zeroizing<String>);

impl TokenString {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for TokenString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenString(<redacted>)")
    }
}

/// A freshly generated token and the hash to store for it.
#[derive(Debug)]
pub struct GeneratedToken {
    pub token: TokenString,
    pub hash: TokenHash,
}

/// Why a presented token could not even be parsed (never includes the token).
#[derive(Debug, PartialEq, Eq)]
pub struct TokenParseError;

/// Make a new token for record `id`.
pub fn generate(id: u64) -> GeneratedToken {
    let (random, encoded) = random_encoded::<RANDOM_LEN>();
    let token = TokenString(Zeroizing::new(format!("{PREFIX}{id}_{}", encoded.as_str())));
    GeneratedToken {
        token,
        hash: TokenHash::of(random.as_slice()),
    }
}

/// Split a presented token into its record id and the hash of its random part.
pub fn parse(presented: &str) -> Result<(u64, TokenHash), TokenParseError> {
    let rest = presented.strip_prefix(PREFIX).ok_or(TokenParseError)?;
    let (id, random) = rest.split_once('_').ok_or(TokenParseError)?;
    if id.is_empty() || id.len() > 20 || !id.bytes().all(|b| b.is_ascii_digit()) {
        return Err(TokenParseError);
    }
    let id: u64 = id.parse().map_err(|_| TokenParseError)?;
    let raw = decode_random::<RANDOM_LEN>(random, 43).ok_or(TokenParseError)?;
    Ok((id, TokenHash::of(&raw)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn generated_token_parses_to_its_hash() {
        let t = generate(42);
        assert!(t.token.expose().starts_with("ovt_42_"));
        let (id, hash) = parse(t.token.expose()).unwrap();
        assert_eq!(id, 42);
        assert!(hash.matches(&t.hash));
        assert!(!format!("{t:?}").contains(t.token.expose()));
    }

    #[test]
    fn tokens_are_unique() {
        assert_ne!(generate(1).token.expose(), generate(1).token.expose());
    }

    #[test]
    fn malformed_tokens_are_refused() {
        let good = generate(5).token.expose().to_owned();
        for bad in [
            "",
            "ovt_",
            "ovt_5",
            "ovt__abc",
            "Bearer x",
            "ovt_x_AAAA",
            &good[..good.len() - 1],
            &format!("{good}A"),
            &good.replace("ovt_", "xyz_"),
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should not parse");
        }
        // A different random part parses, but to another hash.
        let other = generate(5);
        let (_, h) = parse(other.token.expose()).unwrap();
        let (_, g) = parse(&good).unwrap();
        assert!(!h.matches(&g));
    }
}
