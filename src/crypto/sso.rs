//! The sign-in broker's hashes, each SHA-256 under a label of its own (so a
//! hash made for one purpose never matches another's): the store keys of its
//! random values (a `state`, a one-time code: the values themselves are never
//! stored), the browser binding a transaction keeps, and the stable profile id.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::token::labelled_hash;

/// Where a login transaction is stored: a hash of the IdP `state`.
pub fn state_key(state: &str) -> [u8; 32] {
    labelled_hash(b"oidcvault/sso/state\0", state.as_bytes())
}

/// Where a one-time code's grant is stored: a hash of the code.
pub fn code_key(code: &str) -> [u8; 32] {
    labelled_hash(b"oidcvault/sso/code\0", code.as_bytes())
}

/// What a transaction keeps of the browser's binding cookie.
pub fn browser_binding(value: &str) -> [u8; 32] {
    labelled_hash(b"oidcvault/sso/browser\0", value.as_bytes())
}

/// Constant-time equality (a cookie's hash, a PKCE challenge).
pub fn same(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// The stable id of a user: the same for one (issuer, sub), whatever else
/// changes (e-mail, name, the appliance's keys). `usr_` and 128 bits of hex.
pub fn user_id(issuer: &str, sub: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"oidcvault/profile/v1\0");
    // Length-prefixed: ("a", "bc") and ("ab", "c") differ.
    h.update((issuer.len() as u64).to_be_bytes());
    h.update(issuer.as_bytes());
    h.update(sub.as_bytes());
    let digest = h.finalize();
    let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!("usr_{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_separated_per_purpose_and_hide_the_value() {
        assert_ne!(state_key("x"), code_key("x"));
        assert_ne!(code_key("x"), browser_binding("x"));
        assert_eq!(code_key("x"), code_key("x"));
    }

    #[test]
    fn the_user_id_is_stable_per_issuer_and_sub_only() {
        let a = user_id("https://idp.example", "alice");
        assert_eq!(a, user_id("https://idp.example", "alice"));
        assert_ne!(a, user_id("https://idp.example", "bob"));
        assert_ne!(a, user_id("https://other.example", "alice"));
        assert_ne!(user_id("a", "bc"), user_id("ab", "c"));
        assert_eq!(a.len(), 4 + 32);
    }

    #[test]
    fn same_compares_whole_values() {
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"ab"));
    }
}
