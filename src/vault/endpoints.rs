//! Endpoints from OIDC discovery: which stored endpoints discovery manages,
//! how a save merges a fetched discovery document with what the request gives,
//! and the refresh that keeps managed endpoints current.
//!
//! An endpoint is *managed by discovery* when its value came from the discovery
//! document (its name is in `ConfigRecord::discovered_endpoints`); otherwise it
//! was set by hand, or is empty. Rules, for each of `authorization_endpoint`,
//! `token_endpoint` and `userinfo_endpoint`:
//! - a request that sets the endpoint to a new value sets it by hand; posting
//!   back the stored value of a managed endpoint leaves it managed (so a GET body
//!   can be posted back);
//! - when the request sets `discovery_url` (and resolve-on-save is on), an
//!   endpoint it leaves unset (absent or `null`) is managed and takes the
//!   document's value, except that an absent endpoint set by hand keeps its value:
//!   explicit endpoints win;
//! - otherwise (no discovery in the request) `null` clears and absent keeps;
//! - a refresh updates managed and empty endpoints from the document and never
//!   touches one set by hand (it reports the difference instead).

use std::sync::Mutex;

use super::{audit, Domain, OidcConfig, Patch, Vault, VaultError};
use crate::store::{AuditRecord, ConfigRecord};
use crate::time::now_micros;

/// The endpoint fields discovery can fill, in their API order.
pub(super) const ENDPOINTS: [&str; 3] = [
    "authorization_endpoint",
    "token_endpoint",
    "userinfo_endpoint",
];

/// The endpoints a discovery document names (already checked by the guard).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Discovered {
    pub authorization_endpoint: Option<String>,
    pub token_endpoint: Option<String>,
    pub userinfo_endpoint: Option<String>,
}

impl Discovered {
    pub fn get(&self, field: &str) -> Option<&String> {
        match field {
            "authorization_endpoint" => self.authorization_endpoint.as_ref(),
            "token_endpoint" => self.token_endpoint.as_ref(),
            _ => self.userinfo_endpoint.as_ref(),
        }
    }
}

/// Where a save takes the endpoints from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum EndpointSource {
    /// As the request gives them: a string sets, `null` clears, absent keeps.
    #[default]
    AsGiven,
    /// The request sets `discovery_url` with resolve-on-save on: endpoints it
    /// leaves unset are managed by discovery. `Some` carries the document just
    /// fetched; `None` means no fetch was needed (the managed values stand).
    Discovery(Option<Discovered>),
}

fn endpoint(r: &ConfigRecord, field: &str) -> Option<String> {
    match field {
        "authorization_endpoint" => r.authorization_endpoint.clone(),
        "token_endpoint" => r.token_endpoint.clone(),
        _ => r.userinfo_endpoint.clone(),
    }
}

fn set_endpoint(r: &mut ConfigRecord, field: &str, value: Option<String>) {
    match field {
        "authorization_endpoint" => r.authorization_endpoint = value,
        "token_endpoint" => r.token_endpoint = value,
        _ => r.userinfo_endpoint = value,
    }
}

fn patch_of<'a>(p: &'a super::ConfigPatch, field: &str) -> &'a Patch<String> {
    match field {
        "authorization_endpoint" => &p.authorization_endpoint,
        "token_endpoint" => &p.token_endpoint,
        _ => &p.userinfo_endpoint,
    }
}

fn is_managed(r: Option<&ConfigRecord>, field: &str) -> bool {
    r.is_some_and(|r| r.discovered_endpoints.iter().any(|f| f == field))
}

/// Whether, with discovery in the request, `field` ends up managed by discovery.
fn becomes_managed(patch: &Patch<String>, current: Option<&ConfigRecord>, field: &str) -> bool {
    let cur = current.and_then(|c| endpoint(c, field));
    let managed = is_managed(current, field);
    match patch {
        Patch::Set(v) => managed && cur.as_ref() == Some(v),
        Patch::Keep => managed || cur.is_none(),
        Patch::Clear => true,
    }
}

/// Whether a save with `patch` must fetch the discovery document: the request
/// sets a new discovery URL, or an endpoint becomes managed that was not.
pub fn needs_fetch(patch: &super::ConfigPatch, current: Option<&OidcConfig>) -> bool {
    let record = current.map(|cur| ConfigRecord {
        id: cur.id,
        domain_id: cur.domain_id,
        client_id: String::new(),
        secret_sealed: Vec::new(),
        secret_masked: String::new(),
        discovery_url: cur.discovery_url.clone(),
        authorization_endpoint: cur.authorization_endpoint.clone(),
        token_endpoint: cur.token_endpoint.clone(),
        userinfo_endpoint: cur.userinfo_endpoint.clone(),
        created_at: cur.created_at,
        updated_at: cur.updated_at,
        discovered_endpoints: cur.discovered_endpoints.clone(),
        secret_origin: cur.secret_origin.clone(),
    });
    needs_fetch_record(patch, record.as_ref())
}

/// [`needs_fetch`] on the stored record: asked again inside the write, so that
/// a decision made on an earlier snapshot is never applied to a newer record.
pub(super) fn needs_fetch_record(
    patch: &super::ConfigPatch,
    current: Option<&ConfigRecord>,
) -> bool {
    let Patch::Set(url) = &patch.discovery_url else {
        return false;
    };
    let Some(cur) = current else {
        return true;
    };
    if cur.discovery_url.as_ref() != Some(url) {
        return true;
    }
    ENDPOINTS
        .iter()
        .any(|f| becomes_managed(patch_of(patch, f), Some(cur), f) && !is_managed(Some(cur), f))
}

/// Apply the request's endpoints (and a fetched document) onto `next`, whose
/// other fields are already updated; `current` is the stored record.
pub(super) fn merge_endpoints(
    patch: &super::ConfigPatch,
    current: Option<&ConfigRecord>,
    mut next: ConfigRecord,
) -> ConfigRecord {
    let mut managed_now = Vec::new();
    for field in ENDPOINTS {
        let p = patch_of(patch, field);
        let cur = current.and_then(|c| endpoint(c, field));
        let managed = is_managed(current, field);
        let (value, now_managed) = match (&patch.endpoint_source, p) {
            (EndpointSource::Discovery(doc), _) if becomes_managed(p, current, field) => {
                let value = match doc {
                    Some(d) => d.get(field).cloned(),
                    None => cur,
                };
                (value, true)
            }
            (_, Patch::Keep) => (cur, managed),
            (_, Patch::Clear) => (None, false),
            (_, Patch::Set(v)) => {
                if managed && cur.as_ref() == Some(v) {
                    (cur, true)
                } else {
                    (Some(v.clone()), false)
                }
            }
        };
        set_endpoint(&mut next, field, value);
        if now_managed {
            managed_now.push(field.to_owned());
        }
    }
    next.discovered_endpoints = managed_now;
    next
}

/// The audit detail of a save that took endpoints from discovery.
pub(super) fn save_detail(patch: &super::ConfigPatch, record: &ConfigRecord) -> Option<String> {
    match &patch.endpoint_source {
        EndpointSource::Discovery(Some(_)) => Some(format!(
            "endpoints from discovery: {}",
            if record.discovered_endpoints.is_empty() {
                "none".to_owned()
            } else {
                record.discovered_endpoints.join(", ")
            }
        )),
        _ => None,
    }
}

/// One endpoint a refresh changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointChange {
    pub field: &'static str,
    pub old: Option<String>,
    pub new: Option<String>,
}

/// One endpoint a refresh did not follow: set by hand, or a token endpoint the
/// document moves to another origin than the client secret is bound to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointKept {
    pub field: &'static str,
    pub value: Option<String>,
    pub discovered: Option<String>,
    /// Why, in words for the operator.
    pub reason: String,
}

/// The reason of an endpoint kept because it was set by hand.
pub(super) const KEPT_SET_BY_HAND: &str = "set by hand: a refresh never overwrites it";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshReport {
    pub changed: Vec<EndpointChange>,
    pub kept: Vec<EndpointKept>,
    pub config: OidcConfig,
}

/// What a refresh did, as its transaction committed it.
type Outcome = (Vec<EndpointChange>, Vec<EndpointKept>, AuditRecord);

/// What a refresh would do to `current` given the document `doc`.
fn plan_refresh(
    current: &ConfigRecord,
    doc: &Discovered,
) -> (ConfigRecord, Vec<EndpointChange>, Vec<EndpointKept>) {
    let mut next = current.clone();
    let mut changed = Vec::new();
    let mut kept = Vec::new();
    let mut managed_now = Vec::new();
    for field in ENDPOINTS {
        let cur = endpoint(current, field);
        let fresh = doc.get(field).cloned();
        let managed = is_managed(Some(current), field);
        let bound_elsewhere = (field == "token_endpoint" && cur != fresh)
            .then(|| super::binding::refresh_refusal(current, fresh.as_deref()))
            .flatten();
        if let (Some(reason), true) = (bound_elsewhere, managed || cur.is_none()) {
            // The secret never follows the endpoint to another origin.
            if managed {
                managed_now.push(field.to_owned());
            }
            kept.push(EndpointKept {
                field,
                value: cur,
                discovered: fresh,
                reason,
            });
        } else if managed || cur.is_none() {
            if fresh.is_some() || managed {
                managed_now.push(field.to_owned());
            }
            if cur != fresh {
                changed.push(EndpointChange {
                    field,
                    old: cur,
                    new: fresh.clone(),
                });
                set_endpoint(&mut next, field, fresh);
            }
        } else if cur != fresh {
            kept.push(EndpointKept {
                field,
                value: cur,
                discovered: fresh,
                reason: KEPT_SET_BY_HAND.to_owned(),
            });
        }
    }
    next.discovered_endpoints = managed_now;
    (next, changed, kept)
}

impl Vault {
    /// Apply a freshly fetched discovery document (from `discovery_url`) to a
    /// domain's config: managed and empty endpoints follow it, endpoints set by
    /// hand are kept and reported. Writes (with an audit event `config.refresh`)
    /// only when something changed.
    pub async fn refresh_discovery(
        &self,
        domain: &Domain,
        discovery_url: &str,
        doc: &Discovered,
        actor: Option<u64>,
    ) -> Result<RefreshReport, VaultError> {
        let changed_url = || {
            VaultError::Invalid(super::field_error(
                "discovery_url",
                "The discovery URL changed while it was being refreshed; try again.",
            ))
        };
        let Some(snapshot) = self.store.config(domain.id)? else {
            return Err(VaultError::NotFound);
        };
        if snapshot.discovery_url.as_deref() != Some(discovery_url) {
            return Err(changed_url());
        }
        let (next, changed, kept) = plan_refresh(&snapshot, doc);
        if changed.is_empty() && next.discovered_endpoints == snapshot.discovered_endpoints {
            return Ok(RefreshReport {
                changed,
                kept,
                config: snapshot.into(),
            });
        }
        let now = now_micros();
        let outcome: Mutex<Option<Outcome>> = Mutex::new(None);
        let build = |current: Option<&ConfigRecord>,
                     _id: u64|
         -> Result<(ConfigRecord, AuditRecord), VaultError> {
            let Some(current) = current else {
                return Err(VaultError::NotFound);
            };
            if current.discovery_url.as_deref() != Some(discovery_url) {
                return Err(changed_url());
            }
            let (mut next, changed, kept) = plan_refresh(current, doc);
            next.updated_at = now.max(current.updated_at.saturating_add(1));
            let mut event = audit::event(now, actor, "config.refresh", Some(domain));
            event.fields = changed.iter().map(|c| c.field.to_owned()).collect();
            event.detail = Some(format!("discovery refresh from {discovery_url}"));
            *outcome
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) =
                Some((changed, kept, event.clone()));
            Ok((next, event))
        };
        let (record, _) = self.store.upsert_config(domain.id, build).await?;
        let Some((changed, kept, event)) = outcome
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
        else {
            return Err(VaultError::Operation("refresh: no outcome recorded".into()));
        };
        audit::log_line(&event);
        Ok(RefreshReport {
            changed,
            kept,
            config: record.into(),
        })
    }

    /// Before a save fetches the discovery document of `patch`: refuse (400 on
    /// `client_secret`) a save that keeps the stored secret while moving the
    /// discovery URL to another origin, so nothing is fetched for it.
    pub fn check_discovery_binding(
        &self,
        domain: &Domain,
        patch: &super::ConfigPatch,
    ) -> Result<(), VaultError> {
        let Some(cur) = self.store.config(domain.id)? else {
            return Ok(());
        };
        let new_secret = patch
            .client_secret
            .as_ref()
            .is_some_and(|s| s.expose() != cur.secret_masked);
        if new_secret {
            return Ok(());
        }
        let next = patch.discovery_url.apply(cur.discovery_url.clone());
        super::binding::check_discovery_move(&cur, next.as_deref()).map_err(VaultError::Invalid)
    }

    /// Record, before any outbound request, that an outbound job starts:
    /// `config.test.start` (before the secret is decrypted) or
    /// `config.refresh.start`, naming where it goes. Durable before it returns,
    /// so a dropped connection cannot lose it.
    pub async fn record_outbound_start(
        &self,
        domain: &Domain,
        actor: Option<u64>,
        action: &'static str,
        detail: String,
    ) -> Result<(), VaultError> {
        let mut event = audit::event(now_micros(), actor, action, Some(domain));
        event.detail = Some(detail);
        self.record(event).await
    }

    /// Record that a connection test ran (it decrypted the client secret).
    pub async fn record_connection_test(
        &self,
        domain: &Domain,
        actor: Option<u64>,
        outcome: String,
    ) -> Result<(), VaultError> {
        let mut event = audit::event(now_micros(), actor, "config.test", Some(domain));
        event.detail = Some(outcome);
        self.record(event).await
    }
}

#[cfg(test)]
mod tests {
    use super::super::ConfigPatch;
    use super::*;

    fn record(a: Option<&str>, t: Option<&str>, u: Option<&str>, managed: &[&str]) -> ConfigRecord {
        ConfigRecord {
            id: 1,
            domain_id: 1,
            client_id: "c".into(),
            secret_sealed: vec![],
            secret_masked: String::new(),
            discovery_url: Some("https://idp.example.com/.well-known/openid-configuration".into()),
            authorization_endpoint: a.map(Into::into),
            token_endpoint: t.map(Into::into),
            userinfo_endpoint: u.map(Into::into),
            created_at: 1,
            updated_at: 1,
            discovered_endpoints: managed.iter().map(|s| s.to_string()).collect(),
            secret_origin: t.and_then(crate::origin::origin_of),
        }
    }

    fn doc(a: &str, t: &str, u: Option<&str>) -> Discovered {
        Discovered {
            authorization_endpoint: Some(a.into()),
            token_endpoint: Some(t.into()),
            userinfo_endpoint: u.map(Into::into),
        }
    }

    fn ends(r: &ConfigRecord) -> [Option<&str>; 3] {
        [
            r.authorization_endpoint.as_deref(),
            r.token_endpoint.as_deref(),
            r.userinfo_endpoint.as_deref(),
        ]
    }

    #[test]
    fn create_fills_unset_endpoints_and_explicit_ones_win() {
        let patch = ConfigPatch {
            token_endpoint: Patch::Set("https://hand/token".into()),
            userinfo_endpoint: Patch::Clear,
            endpoint_source: EndpointSource::Discovery(Some(doc(
                "https://d/a",
                "https://d/t",
                Some("https://d/u"),
            ))),
            ..Default::default()
        };
        let blank = record(None, None, None, &[]);
        let r = merge_endpoints(&patch, None, blank);
        assert_eq!(
            ends(&r),
            [
                Some("https://d/a"),
                Some("https://hand/token"),
                Some("https://d/u")
            ]
        );
        assert_eq!(
            r.discovered_endpoints,
            ["authorization_endpoint", "userinfo_endpoint"]
        );
    }

    #[test]
    fn a_posted_back_body_keeps_managed_endpoints_managed() {
        let cur = record(
            Some("https://d/a"),
            Some("https://hand/t"),
            None,
            &["authorization_endpoint"],
        );
        let patch = ConfigPatch {
            authorization_endpoint: Patch::Set("https://d/a".into()),
            token_endpoint: Patch::Set("https://hand/t".into()),
            userinfo_endpoint: Patch::Clear,
            ..Default::default()
        };
        let r = merge_endpoints(&patch, Some(&cur), cur.clone());
        assert_eq!(r.discovered_endpoints, ["authorization_endpoint"]);
        assert_eq!(ends(&r), ends(&cur));
        // A new discovery document replaces the managed value only.
        let patch = ConfigPatch {
            endpoint_source: EndpointSource::Discovery(Some(doc(
                "https://n/a",
                "https://n/t",
                None,
            ))),
            ..patch
        };
        let r = merge_endpoints(&patch, Some(&cur), cur.clone());
        assert_eq!(
            ends(&r),
            [Some("https://n/a"), Some("https://hand/t"), None]
        );
    }

    #[test]
    fn without_discovery_null_clears_and_a_new_value_is_set_by_hand() {
        let cur = record(
            Some("https://d/a"),
            Some("https://d/t"),
            None,
            &["authorization_endpoint", "token_endpoint"],
        );
        let patch = ConfigPatch {
            authorization_endpoint: Patch::Clear,
            token_endpoint: Patch::Set("https://hand/t".into()),
            ..Default::default()
        };
        let r = merge_endpoints(&patch, Some(&cur), cur.clone());
        assert_eq!(ends(&r), [None, Some("https://hand/t"), None]);
        assert!(r.discovered_endpoints.is_empty());
    }

    #[test]
    fn fetch_only_when_needed() {
        let cur: OidcConfig =
            record(Some("https://d/a"), Some("https://d/t"), None, &ENDPOINTS).into();
        let same_url = |p: ConfigPatch| ConfigPatch {
            discovery_url: Patch::Set(cur.discovery_url.clone().unwrap()),
            ..p
        };
        assert!(!needs_fetch(&same_url(ConfigPatch::default()), Some(&cur)));
        assert!(needs_fetch(&same_url(ConfigPatch::default()), None));
        let other = ConfigPatch {
            discovery_url: Patch::Set("https://other/.well-known/openid-configuration".into()),
            ..Default::default()
        };
        assert!(needs_fetch(&other, Some(&cur)));
        assert!(!needs_fetch(&ConfigPatch::default(), Some(&cur)));
        // An endpoint set by hand, cleared in a request with the same URL: it
        // becomes managed, so its value must be fetched.
        let hand: OidcConfig = record(
            Some("https://d/a"),
            Some("https://hand/t"),
            None,
            &["authorization_endpoint", "userinfo_endpoint"],
        )
        .into();
        let p = same_url(ConfigPatch {
            token_endpoint: Patch::Clear,
            ..Default::default()
        });
        assert!(needs_fetch(&p, Some(&hand)));
    }

    #[test]
    fn refresh_follows_managed_and_empty_endpoints_and_keeps_hand_set_ones() {
        let cur = record(
            Some("https://d/a"),
            Some("https://hand/t"),
            None,
            &["authorization_endpoint"],
        );
        let (next, changed, kept) = plan_refresh(
            &cur,
            &doc("https://d/a2", "https://d/t", Some("https://d/u")),
        );
        assert_eq!(
            ends(&next),
            [
                Some("https://d/a2"),
                Some("https://hand/t"),
                Some("https://d/u")
            ]
        );
        assert_eq!(
            changed.iter().map(|c| c.field).collect::<Vec<_>>(),
            ["authorization_endpoint", "userinfo_endpoint"]
        );
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].field, "token_endpoint");
        assert_eq!(kept[0].discovered.as_deref(), Some("https://d/t"));
        assert_eq!(
            next.discovered_endpoints,
            ["authorization_endpoint", "userinfo_endpoint"]
        );
        // Nothing new: nothing changed.
        let (_, changed, _) = plan_refresh(
            &next,
            &doc("https://d/a2", "https://d/t", Some("https://d/u")),
        );
        assert!(changed.is_empty());
        // A managed endpoint the document no longer lists is cleared.
        let (n2, changed, _) = plan_refresh(&next, &doc("https://d/a2", "https://d/t", None));
        assert_eq!(changed.len(), 1);
        assert_eq!(n2.userinfo_endpoint, None);
    }
}
