//! The audit trail: one event per change, stored atomically with the change it
//! records, and one structured log line each (target `oidcvault::audit`).
//! Events carry ids, names and field names, and for a client secret a keyed
//! fingerprint: never a secret or a token.
//!
//! The trail is tamper-evident: the store chains every event with an HMAC under
//! the keyring's audit key (see `store` and `crypto::audit`), and `verify`
//! ([`Vault::verify`]) checks the chain and names the first event that breaks it.

use super::{Domain, Vault, VaultError};
use crate::crypto::AuditKey;
use crate::store::{AuditMac, AuditRecord};
use crate::time::{format_micros, now_micros};

/// The store chains the trail under the keyring's audit key (the store itself
/// never holds a key).
impl AuditMac for AuditKey {
    fn mac(&self, parts: &[&[u8]]) -> [u8; 32] {
        AuditKey::mac(self, parts)
    }
}

/// An audit event as the API and the CLI show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    pub id: u64,
    pub at: i64,
    pub actor: Option<u64>,
    pub action: String,
    pub domain_id: Option<u64>,
    pub domain: Option<String>,
    pub fields: Vec<String>,
    pub secret_fingerprint: Option<String>,
    pub detail: Option<String>,
}

/// Filters and paging of [`Vault::audit`].
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    /// Only events of this domain (by name).
    pub domain: Option<String>,
    /// Only events of this action (`config.update`), or, ending in `.`, of
    /// every action under that prefix (`sso.`).
    pub action: Option<String>,
    /// Only events at or after this time (microseconds since the epoch).
    pub since: Option<i64>,
    /// Only events before this time.
    pub until: Option<i64>,
    /// Cursor: only events after this id.
    pub after: Option<u64>,
    pub limit: usize,
}

/// Whether `action` passes the filter `wanted`: equal to it, or, when `wanted`
/// ends in `.` (`sso.`), starting with it. A prefix and not a glob: the
/// actions form a two-level namespace (`config.update`, `sso.login`), and an
/// operator asks either for one action or for one family.
pub(super) fn action_matches(wanted: &str, action: &str) -> bool {
    if wanted.ends_with('.') {
        action.starts_with(wanted)
    } else {
        action == wanted
    }
}

/// Whether `filter` is a well-formed action filter: dot-separated words of
/// `a-z`, `0-9` and `_`, with an optional trailing `.` (a prefix), at most 64
/// characters (the API's `action` parameter; the OpenAPI document states the
/// same as a `pattern`).
pub fn valid_action_filter(filter: &str) -> bool {
    let body = filter.strip_suffix('.').unwrap_or(filter);
    filter.len() <= 64
        && !body.is_empty()
        && body.split('.').all(|w| {
            !w.is_empty()
                && w.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        })
}

pub(super) fn event(
    at: i64,
    actor: Option<u64>,
    action: &str,
    domain: Option<&Domain>,
) -> AuditRecord {
    AuditRecord {
        at,
        actor,
        action: action.to_owned(),
        domain_id: domain.map(|d| d.id),
        domain: domain.map(|d| d.name.clone()),
        fields: Vec::new(),
        secret_fingerprint: None,
        detail: None,
    }
}

/// The structured log line of an event.
///
/// Values as an operator reads and greps them (`actor=3 domain=acme.com
/// fields=client_id,token_endpoint`), not Rust's `Debug`: a field without a
/// value (no actor for the command line, no domain for a key rotation) is left
/// out of the line; the free-text `detail` is quoted.
pub(super) fn log_line(e: &AuditRecord) {
    let fields = e.fields.join(",");
    tracing::info!(
        target: "oidcvault::audit",
        at = %format_micros(e.at),
        actor = e.actor,
        action = %e.action,
        domain_id = e.domain_id,
        domain = e.domain.as_deref().map(tracing::field::display),
        fields = (!fields.is_empty()).then_some(tracing::field::display(&fields)),
        secret_fingerprint = e.secret_fingerprint.as_deref().map(tracing::field::display),
        detail = e.detail.as_deref(),
        "audit"
    );
}

impl Vault {
    /// Append an event that changes no record (rotation, backup).
    pub(super) async fn record(&self, e: AuditRecord) -> Result<(), VaultError> {
        self.store.append_audit(&e).await?;
        log_line(&e);
        Ok(())
    }

    /// A page of events, oldest first, and the cursor of the next page.
    pub fn audit(&self, q: &AuditQuery) -> Result<(Vec<AuditEvent>, Option<u64>), VaultError> {
        let limit = q.limit.clamp(1, 1000);
        let domain = q
            .domain
            .as_ref()
            .map(|d| d.trim().trim_end_matches('.').to_ascii_lowercase());
        let page = self.store.audit_page(q.after, limit + 1, |r| {
            domain.as_ref().is_none_or(|d| r.domain.as_ref() == Some(d))
                && q.action
                    .as_deref()
                    .is_none_or(|a| action_matches(a, &r.action))
                && q.since.is_none_or(|s| r.at >= s)
                && q.until.is_none_or(|u| r.at < u)
        })?;
        let more = page.len() > limit;
        let events: Vec<AuditEvent> = page
            .into_iter()
            .take(limit)
            .map(|(id, r)| AuditEvent {
                id,
                at: r.at,
                actor: r.actor,
                action: r.action,
                domain_id: r.domain_id,
                domain: r.domain,
                fields: r.fields,
                secret_fingerprint: r.secret_fingerprint,
                detail: r.detail,
            })
            .collect();
        let next = if more {
            events.last().map(|e| e.id)
        } else {
            None
        };
        Ok((events, next))
    }

    /// Remove events older than the retention setting.
    pub async fn prune_audit(&self) -> Result<usize, VaultError> {
        // Saturating: `audit.retention_days` is bounded by the configuration, and
        // an overflow here would move the cut-off into the future (every event).
        let keep_micros = i64::from(self.audit_retention_days).saturating_mul(86_400 * 1_000_000);
        Ok(self
            .store
            .prune_audit(now_micros().saturating_sub(keep_micros))
            .await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn action_filter_is_exact_or_a_prefix_ending_in_a_dot() {
        assert!(action_matches("sso.login", "sso.login"));
        assert!(!action_matches("sso.login", "sso.login_extra"));
        assert!(!action_matches("sso", "sso.login"));
        assert!(action_matches("sso.", "sso.login"));
        assert!(action_matches("sso.", "sso.code_redeem"));
        assert!(!action_matches("sso.", "sso"));
        assert!(!action_matches("config.", "key.rotate"));
        assert!(action_matches("backup", "backup"));
    }

    #[test]
    fn action_filter_syntax() {
        for ok in [
            "backup",
            "sso.",
            "config.update",
            "sso.code_redeem",
            "a.b.c",
            "k2.",
            &"a".repeat(64),
        ] {
            assert!(valid_action_filter(ok), "{ok}");
        }
        for bad in [
            "",
            ".",
            "sso..",
            ".sso",
            "sso*",
            "SSO.login",
            "a..b",
            "sso. ",
            "é",
            &"a".repeat(65),
        ] {
            assert!(!valid_action_filter(bad), "{bad:?}");
        }
    }
}
