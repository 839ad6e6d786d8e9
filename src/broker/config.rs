//! The `[sso]` section: how long the broker's state lives, how much clock skew
//! an ID token may have, and its abuse bounds.

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SsoConfig {
    /// Seconds an ID token's `exp`, `iat` and `nbf` may be off.
    pub clock_skew_secs: u64,
    /// Seconds a user has to finish signing in at the identity provider.
    pub transaction_ttl_secs: u64,
    /// Seconds an application has to redeem its one-time code.
    pub code_ttl_secs: u64,
    /// Accept an ID token that says `email_verified: false`.
    pub allow_unverified_email: bool,
    /// Sign-ins started and not yet finished, over all users; more get 503.
    pub max_pending_transactions: usize,
    /// Sign-ins one client address (IPv4, or IPv6 /64) may start per minute; 0
    /// disables.
    pub authorize_per_address_per_minute: u32,
}

impl Default for SsoConfig {
    fn default() -> Self {
        Self {
            clock_skew_secs: 120,
            transaction_ttl_secs: 600,
            code_ttl_secs: 60,
            allow_unverified_email: false,
            max_pending_transactions: 10_000,
            authorize_per_address_per_minute: 60,
        }
    }
}

impl SsoConfig {
    /// A message naming the setting at fault, for values that cannot work or
    /// would weaken the broker.
    pub fn validate(&self) -> Result<(), String> {
        if self.clock_skew_secs > 600 {
            return Err(format!(
                "sso.clock_skew_secs = {} is more than 600: an expired ID token would be \
                 accepted for that long; fix the clocks (NTP) instead",
                self.clock_skew_secs
            ));
        }
        if !(30..=3600).contains(&self.transaction_ttl_secs) {
            return Err(format!(
                "sso.transaction_ttl_secs = {} is outside 30..=3600",
                self.transaction_ttl_secs
            ));
        }
        if !(5..=600).contains(&self.code_ttl_secs) {
            return Err(format!(
                "sso.code_ttl_secs = {} is outside 5..=600 (a one-time code should live \
                 seconds: the application redeems it at once)",
                self.code_ttl_secs
            ));
        }
        if self.max_pending_transactions == 0 {
            return Err("sso.max_pending_transactions must be at least 1".into());
        }
        Ok(())
    }
}

/// `server.public_url`, checked: an absolute http(s) URL without query or
/// fragment (https unless the host is loopback). Returns it without a trailing
/// slash, so `<public_url>/sso/callback` is well formed.
pub fn check_public_url(raw: &str) -> Result<String, String> {
    let url = url::Url::parse(raw)
        .map_err(|e| format!("server.public_url = {raw:?} is not an absolute URL ({e})"))?;
    let loopback = match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(a)) => a.is_loopback(),
        Some(url::Host::Ipv6(a)) => a.is_loopback(),
        None => false,
    };
    match url.scheme() {
        "https" => {}
        "http" if loopback => {}
        _ => {
            return Err(format!(
                "server.public_url = {raw:?} must be https (http only for a loopback host): \
                 the broker's cookie and the IdP's redirect carry sign-in state"
            ))
        }
    }
    if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
        return Err(format!(
            "server.public_url = {raw:?} must not have a query, a fragment or user info"
        ));
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_are_named() {
        SsoConfig::default().validate().unwrap();
        let e = SsoConfig {
            clock_skew_secs: 3600,
            ..SsoConfig::default()
        }
        .validate()
        .unwrap_err();
        assert!(e.contains("sso.clock_skew_secs"), "{e}");
        let e = SsoConfig {
            code_ttl_secs: 3600,
            ..SsoConfig::default()
        }
        .validate()
        .unwrap_err();
        assert!(e.contains("sso.code_ttl_secs"), "{e}");
    }

    #[test]
    fn public_url_must_be_https_or_loopback() {
        assert_eq!(
            check_public_url("https://sso.example.com/").unwrap(),
            "https://sso.example.com"
        );
        assert_eq!(
            check_public_url("https://example.com/oidcvault/").unwrap(),
            "https://example.com/oidcvault"
        );
        assert_eq!(
            check_public_url("http://127.0.0.1:8080").unwrap(),
            "http://127.0.0.1:8080"
        );
        for bad in [
            "http://sso.example.com",
            "sso.example.com",
            "https://sso.example.com/?a=b",
            "https://u:p@sso.example.com",
            "ftp://127.0.0.1",
        ] {
            assert!(check_public_url(bad).is_err(), "{bad}");
        }
    }
}
