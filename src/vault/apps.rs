//! The sign-in broker's applications: create (client secret shown once,
//! stored as a hash), list, find, authenticate, remove.
//!
//! Redirect URIs are registered exactly as given and compared exactly later
//! (no normalisation: what is matched is what the operator saw); which ones
//! are accepted is `redirect_uri`'s job: `https` (`http` only for loopback
//! hosts), no credentials, no fragment.

use super::{audit, redirect_uri, App, AppSecret, FieldErrors, Vault, VaultError};
use crate::crypto::{app_secret, AppSecretHash};
use crate::store::{AppRecord, AuditRecord, NewApp, StoreError};
use crate::time::now_micros;

const APP_NAME_MAX_CHARS: usize = 100;
const REDIRECT_URIS_MAX: usize = 10;

const BLANK: &str = "This field may not be blank.";

/// The name, trimmed: not blank, at most [`APP_NAME_MAX_CHARS`] characters as
/// given.
fn check_name(raw: &str) -> Result<&str, String> {
    let name = raw.trim();
    if name.is_empty() {
        return Err(BLANK.into());
    }
    if raw.chars().count() > APP_NAME_MAX_CHARS {
        return Err(format!(
            "Ensure this field has no more than {APP_NAME_MAX_CHARS} characters."
        ));
    }
    Ok(name)
}

/// Every problem of the list at once: its length, then each URI (messages
/// prefixed with the URI's index, from 0, as DRF keys a list's errors).
fn check_redirect_uris(uris: &[String]) -> Result<(), Vec<String>> {
    if uris.is_empty() {
        return Err(vec!["This list may not be empty.".into()]);
    }
    if uris.len() > REDIRECT_URIS_MAX {
        return Err(vec![format!(
            "Ensure this field has no more than {REDIRECT_URIS_MAX} elements."
        )]);
    }
    let mut errors = Vec::new();
    for (i, uri) in uris.iter().enumerate() {
        if let Err(m) = redirect_uri::check(uri) {
            errors.push(format!("Item {i}: {m}"));
        } else if uris.iter().take(i).any(|u| u == uri) {
            errors.push(format!("Item {i}: This redirect URI is already listed."));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// Both fields checked; the trimmed name when they pass.
pub(super) fn validate<'a>(name: &'a str, uris: &[String]) -> Result<&'a str, FieldErrors> {
    let mut errors = FieldErrors::new();
    let name = check_name(name).map_err(|m| errors.insert("name".into(), vec![m]));
    if let Err(m) = check_redirect_uris(uris) {
        errors.insert("redirect_uris".into(), m);
    }
    match name {
        Ok(name) if errors.is_empty() => Ok(name),
        _ => Err(errors),
    }
}

fn app_event(at: i64, actor: Option<u64>, action: &str, r: &AppRecord) -> AuditRecord {
    let mut e = audit::event(at, actor, action, None);
    e.detail = Some(format!(
        "app {} client_id {} name {:?} redirect_uris {}",
        r.id,
        r.client_id,
        r.name,
        r.redirect_uris.join(" ")
    ));
    e
}

impl Vault {
    /// Create an application. Its client secret is returned once and never
    /// stored (only its hash).
    pub async fn create_app(
        &self,
        name: &str,
        redirect_uris: &[String],
        actor: Option<u64>,
    ) -> Result<(App, AppSecret), VaultError> {
        let name = validate(name, redirect_uris).map_err(VaultError::Invalid)?;
        let now = now_micros();
        let new = NewApp {
            name,
            redirect_uris,
            now,
        };
        let event = |r: &AppRecord| app_event(now, actor, "app.create", r);
        let created = self
            .store
            .create_app(
                &new,
                |_| {
                    let (secret, hash) = app_secret::generate_secret();
                    (app_secret::generate_client_id(), hash.0, AppSecret(secret))
                },
                event,
            )
            .await;
        let (record, secret) = match created {
            Ok(v) => v,
            // 128 random bits collided: not expected; nothing was written.
            Err(StoreError::ClientIdTaken) => {
                return Err(VaultError::Operation(
                    "the new client id was taken; nothing was created, try again".into(),
                ))
            }
            Err(e) => return Err(e.into()),
        };
        audit::log_line(&event(&record));
        Ok((App::from(record), secret))
    }

    pub fn list_apps(&self) -> Result<Vec<App>, VaultError> {
        Ok(self.store.list_apps()?.into_iter().map(App::from).collect())
    }

    pub fn app(&self, id: u64) -> Result<Option<App>, VaultError> {
        Ok(self.store.app(id)?.map(App::from))
    }

    pub fn app_by_client_id(&self, client_id: &str) -> Result<Option<App>, VaultError> {
        Ok(self.store.app_by_client_id(client_id)?.map(App::from))
    }

    /// The application these credentials are; `None` for an unknown client id
    /// or a wrong secret (compared in constant time; which of the two is not
    /// said).
    pub fn authenticate_app(
        &self,
        client_id: &str,
        secret: &str,
    ) -> Result<Option<App>, VaultError> {
        let presented = app_secret::parse_secret(secret);
        let Some(record) = self.store.app_by_client_id(client_id)? else {
            return Ok(None);
        };
        let stored = AppSecretHash(record.secret_hash);
        Ok(presented
            .is_some_and(|p| p.matches(&stored))
            .then(|| App::from(record)))
    }

    /// Remove an application; false when there was none. Its client id is
    /// gone with it, so its pending sign-ins and unredeemed codes fail.
    pub async fn remove_app(&self, id: u64, actor: Option<u64>) -> Result<bool, VaultError> {
        let now = now_micros();
        let event = |r: &AppRecord| app_event(now, actor, "app.remove", r);
        let removed = self.store.remove_app(id, event).await?;
        if let Some(r) = &removed {
            audit::log_line(&event(r));
        }
        Ok(removed.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_fields_are_checked_at_once() {
        let uris = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            validate("  Portal ", &uris(&["https://a.example/cb"])),
            Ok("Portal")
        );
        let e = validate(" ", &uris(&[])).unwrap_err();
        assert_eq!(e["name"], [BLANK]);
        assert_eq!(e["redirect_uris"], ["This list may not be empty."]);
        let e = validate(&"n".repeat(101), &uris(&["https://a.example/cb"])).unwrap_err();
        assert!(e["name"][0].contains("100"), "{e:?}");
        assert_eq!(
            validate(&"n".repeat(100), &uris(&["https://a.example/"])),
            Ok(&*"n".repeat(100))
        );
        let eleven: Vec<String> = (0..11).map(|i| format!("https://a.example/{i}")).collect();
        let e = validate("x", &eleven).unwrap_err();
        assert!(e["redirect_uris"][0].contains("10 elements"), "{e:?}");
        assert!(validate("x", &eleven[..10]).is_ok());
        let e = validate(
            "x",
            &uris(&[
                "https://a.example/cb",
                "http://a.example/cb",
                "https://a.example/cb",
            ]),
        )
        .unwrap_err();
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e["redirect_uris"][0].starts_with("Item 1: Enter an https URL"),
            "{e:?}"
        );
        assert_eq!(
            e["redirect_uris"][1],
            "Item 2: This redirect URI is already listed."
        );
    }
}
