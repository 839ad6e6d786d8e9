//! Where a stored client secret may go: the origin binding.
//!
//! A client secret is bound, when it is written, to the origin (`scheme://host
//! [:port]`) of the token endpoint it was written with (`ConfigRecord::
//! secret_origin`, also in the sealed envelope's associated data). It is only
//! ever sent to that origin: the connection test (and any later use of the
//! secret) checks the URL it is about to send to against the binding, whatever
//! the stored endpoints say by then. So that the stored configuration does not
//! drift away from its secret, the writes follow three rules:
//!
//! - a save that moves the token endpoint to another origin, or the discovery
//!   URL to another origin (which decides the token endpoint when none is set),
//!   must carry `client_secret` (400 on `client_secret` otherwise): whoever
//!   points the configuration elsewhere must know the secret that goes there;
//! - clearing an endpoint needs no secret (nothing is sent to an empty one);
//! - a discovery refresh never moves the token endpoint to another origin: it
//!   keeps the stored one and reports it under `kept`, until a new secret is
//!   written.
//!
//! Without a token endpoint when the secret is written, the secret is bound to
//! nothing and is not sent anywhere until it is written again with one.

use super::{field_error, FieldErrors};
use crate::origin::origin_of;
use crate::store::ConfigRecord;

/// The origin a secret written for `record`'s current endpoints is bound to.
pub(super) fn origin_for(record: &ConfigRecord) -> Option<String> {
    record.token_endpoint.as_deref().and_then(origin_of)
}

fn describe(origin: Option<&str>) -> &str {
    origin.unwrap_or("none (it was written without a token endpoint)")
}

/// A save that keeps the stored secret: refused (400 on `client_secret`) when
/// it moves the token endpoint or the discovery URL to another origin.
pub(super) fn check_kept_secret(
    cur: &ConfigRecord,
    next: &ConfigRecord,
) -> Result<(), FieldErrors> {
    // The common update leaves both URLs as they were: nothing moves, nothing
    // to parse.
    if next.token_endpoint == cur.token_endpoint && next.discovery_url == cur.discovery_url {
        return Ok(());
    }
    let bound = cur.secret_origin.as_deref();
    let token_now = origin_for(next);
    if let Some(new) = token_now.as_deref() {
        if token_now != origin_for(cur) && Some(new) != bound {
            return Err(field_error(
                "client_secret",
                format!(
                    "The token endpoint moves to {new}, but the stored client secret is bound to \
                     {} and is never sent anywhere else. Send client_secret in the same request \
                     to bind a secret to the new token endpoint.",
                    describe(bound)
                ),
            ));
        }
    }
    check_discovery_move(cur, next.discovery_url.as_deref())
}

/// The discovery half of [`check_kept_secret`]: also asked before a discovery
/// document is fetched for a save, so that a save refused anyway fetches nothing.
pub(super) fn check_discovery_move(
    cur: &ConfigRecord,
    next: Option<&str>,
) -> Result<(), FieldErrors> {
    let disc_before = cur.discovery_url.as_deref().and_then(origin_of);
    let disc_now = next.and_then(origin_of);
    match disc_now.as_deref() {
        Some(new) if disc_now != disc_before => Err(field_error(
            "client_secret",
            format!(
                "The discovery URL moves to another origin ({new}); the provider it names \
                 decides where the client secret goes. Send client_secret in the same \
                 request (the stored secret stays bound to {}).",
                describe(cur.secret_origin.as_deref())
            ),
        )),
        _ => Ok(()),
    }
}

/// Why a refresh keeps the stored token endpoint instead of `fresh`, if it must.
pub(super) fn refresh_refusal(record: &ConfigRecord, fresh: Option<&str>) -> Option<String> {
    let fresh = fresh?;
    let new = origin_of(fresh);
    (new.as_deref() != record.secret_origin.as_deref()).then(|| {
        format!(
            "the client secret is bound to {}: write a new client_secret to move the token \
             endpoint to {}",
            describe(record.secret_origin.as_deref()),
            new.as_deref().unwrap_or(fresh)
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(token: Option<&str>, discovery: Option<&str>) -> ConfigRecord {
        ConfigRecord {
            id: 1,
            domain_id: 1,
            client_id: "c".into(),
            secret_sealed: vec![],
            secret_masked: String::new(),
            discovery_url: discovery.map(Into::into),
            authorization_endpoint: None,
            token_endpoint: token.map(Into::into),
            userinfo_endpoint: None,
            created_at: 1,
            updated_at: 1,
            discovered_endpoints: vec![],
            secret_origin: token.and_then(origin_of),
        }
    }

    #[test]
    fn moving_the_token_endpoint_elsewhere_needs_the_secret() {
        let cur = record(Some("https://idp.example.com/token"), None);
        let same_origin = record(Some("https://idp.example.com/oauth2/token"), None);
        assert!(check_kept_secret(&cur, &same_origin).is_ok());
        for elsewhere in [
            "https://attacker.example/t",
            "https://idp.example.com:8443/token",
            "http://idp.example.com/token",
            "https://sub.idp.example.com/token",
        ] {
            let e = check_kept_secret(&cur, &record(Some(elsewhere), None)).unwrap_err();
            assert!(
                e["client_secret"][0].contains("bound to https://idp.example.com"),
                "{e:?}"
            );
        }
        // Clearing needs no secret; setting it back to the bound origin neither.
        let cleared = record(None, None);
        assert!(check_kept_secret(&cur, &cleared).is_ok());
        let mut cleared_cur = cleared.clone();
        cleared_cur.secret_origin = cur.secret_origin.clone();
        assert!(check_kept_secret(&cleared_cur, &cur).is_ok());
        // Bound to nothing: any token endpoint needs the secret.
        let unbound = record(None, None);
        assert!(check_kept_secret(&unbound, &same_origin).is_err());
    }

    #[test]
    fn moving_the_discovery_url_elsewhere_needs_the_secret() {
        let d = "https://idp.example.com/.well-known/openid-configuration";
        let cur = record(Some("https://idp.example.com/token"), Some(d));
        let tenant = record(
            Some("https://idp.example.com/token"),
            Some("https://idp.example.com/t2/.well-known/openid-configuration"),
        );
        assert!(check_kept_secret(&cur, &tenant).is_ok());
        let evil = record(
            Some("https://idp.example.com/token"),
            Some("https://attacker.example/.well-known/openid-configuration"),
        );
        assert!(check_kept_secret(&cur, &evil).is_err());
        // From none to some is a move too.
        let none = record(Some("https://idp.example.com/token"), None);
        assert!(check_kept_secret(&none, &cur).is_err());
        // Clearing is not.
        assert!(check_kept_secret(&cur, &none).is_ok());
    }

    #[test]
    fn a_refresh_keeps_the_token_endpoint_on_its_origin() {
        let cur = record(Some("https://idp.example.com/token"), None);
        assert_eq!(
            refresh_refusal(&cur, Some("https://idp.example.com/t2")),
            None
        );
        assert_eq!(refresh_refusal(&cur, None), None);
        let why = refresh_refusal(&cur, Some("https://attacker.example/t")).unwrap();
        assert!(why.contains("https://attacker.example"), "{why}");
        assert!(refresh_refusal(&record(None, None), Some("https://idp.example.com/t")).is_some());
    }
}
