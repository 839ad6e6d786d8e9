//! The sign-in broker's records as the vault keeps them: login transactions
//! and one-time codes, sealed under the data key (the AES-GCM associated data
//! binds each to its record key, field and domain), stored under a SHA-256 of
//! their random value, and taken once (see `store::sso`). The broker decides;
//! this file only keeps, takes and audits.

use bincode::{Decode, Encode};
use zeroize::Zeroizing;

use super::{audit, Domain, Vault, VaultError};
use crate::crypto::sso as sso_keys;
use crate::crypto::{envelope_term, Field, SealContext};
use crate::store::{Abort, AuditRecord, SsoRecord, SsoTree, Taken};
use crate::time::now_micros;

/// Why a sign-in was started, and where its result goes.
#[derive(Clone, PartialEq, Eq, Encode, Decode)]
pub enum LoginPurpose {
    /// An application's sign-in: the result goes back to its redirect URI.
    App {
        app_id: u64,
        redirect_uri: String,
        /// The application's own `state`, handed back verbatim.
        state: String,
        /// The application's PKCE S256 challenge, when it sent one.
        code_challenge: Option<String>,
    },
    /// The admin page's "Try sign-in": the result is shown, no code is minted.
    Test { actor: u64 },
}

/// A sign-in between `/sso/authorize` and `/sso/callback`.
pub struct LoginTransaction {
    pub domain_id: u64,
    pub purpose: LoginPurpose,
    pub nonce: Zeroizing<String>,
    pub pkce_verifier: Zeroizing<String>,
    /// SHA-256 of the browser's binding cookie.
    pub browser: [u8; 32],
    pub started_at: i64,
    pub expires_at: i64,
}

impl std::fmt::Debug for LoginTransaction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginTransaction")
            .field("domain_id", &self.domain_id)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// What a one-time code stands for, until an application redeems it.
pub struct CodeGrant {
    pub domain_id: u64,
    pub app_id: u64,
    pub redirect_uri: String,
    pub code_challenge: Option<String>,
    /// The profile, as JSON (the answer of `/sso/token`).
    pub profile: Zeroizing<String>,
    pub expires_at: i64,
}

impl std::fmt::Debug for CodeGrant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CodeGrant")
            .field("domain_id", &self.domain_id)
            .field("app_id", &self.app_id)
            .finish_non_exhaustive()
    }
}

/// What taking a login transaction found.
#[derive(Debug)]
pub enum TakenLogin {
    Found(LoginTransaction),
    Expired,
    Unknown,
}

/// What redeeming a code found (each outcome is audited).
#[derive(Debug)]
pub enum Redemption {
    Granted(CodeGrant),
    /// A valid code that the caller may not have: `check` said why. It is used
    /// up all the same (a code shown to the wrong party is burnt).
    Refused(&'static str),
    Expired,
    /// Redeemed before: a replay.
    Spent,
    Unknown,
}

/// The facts of one sign-in for its `sso.login` audit event: never a code,
/// token or state.
#[derive(Debug, Default)]
pub struct LoginEvent<'a> {
    pub outcome: &'a str,
    pub reason: Option<&'a str>,
    pub app_id: Option<u64>,
    pub sub: Option<&'a str>,
    pub email: Option<&'a str>,
    /// The admin page's "Try sign-in", not an application's sign-in.
    pub test: bool,
}

#[derive(Encode, Decode)]
struct TransactionBody {
    purpose: LoginPurpose,
    nonce: String,
    pkce_verifier: String,
    browser: [u8; 32],
    started_at: i64,
}

#[derive(Encode, Decode)]
struct GrantBody {
    /// The enterprise domain's name, for the redemption's audit event.
    domain: String,
    app_id: u64,
    redirect_uri: String,
    code_challenge: Option<String>,
    profile: String,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn bincode_config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<{ 256 * 1024 }>()
}

impl Vault {
    /// Seal a broker record's body, bound to its key, field and domain.
    fn seal_sso(
        &self,
        field: Field,
        key: &[u8; 32],
        domain_id: u64,
        body: &impl Encode,
    ) -> Result<Vec<u8>, VaultError> {
        let plain =
            Zeroizing::new(bincode::encode_to_vec(body, bincode_config()).map_err(|e| {
                VaultError::Operation(format!("cannot encode a sign-in record: {e}"))
            })?);
        let keyring = self.keyring();
        self.count_encryption(keyring.active_term(), false)?;
        let binding = hex(key);
        Ok(keyring.seal(
            &plain,
            SealContext {
                domain_id,
                field,
                origin: Some(&binding),
            },
        )?)
    }

    fn open_sso<T: Decode<()>>(
        &self,
        field: Field,
        key: &[u8; 32],
        record: &SsoRecord,
    ) -> Result<T, VaultError> {
        let binding = hex(key);
        let plain = self.open_sealed(
            &record.sealed,
            SealContext {
                domain_id: record.domain_id,
                field,
                origin: Some(&binding),
            },
        )?;
        let (body, _) = bincode::decode_from_slice(&plain, bincode_config())
            .map_err(|e| VaultError::Operation(format!("a sign-in record does not decode: {e}")))?;
        Ok(body)
    }

    /// Sign-ins started and not yet finished.
    pub fn pending_logins(&self) -> usize {
        self.store.sso_pending()
    }

    /// Keep a login transaction under its IdP `state` until it is taken or expires.
    pub fn begin_login(&self, state: &str, tx: &LoginTransaction) -> Result<(), VaultError> {
        // Sealed under the keyring in force: when another node of a cluster
        // changed it, the store refuses the write and it is sealed again.
        self.with_current_keyring_sync(|| self.put_login(state, tx))
    }

    fn put_login(&self, state: &str, tx: &LoginTransaction) -> Result<(), VaultError> {
        let key = sso_keys::state_key(state);
        let body = TransactionBody {
            purpose: tx.purpose.clone(),
            nonce: tx.nonce.to_string(),
            pkce_verifier: tx.pkce_verifier.to_string(),
            browser: tx.browser,
            started_at: tx.started_at,
        };
        let sealed = self.seal_sso(Field::SsoTransaction, &key, tx.domain_id, &body);
        let mut body = body;
        zeroize::Zeroize::zeroize(&mut body.nonce);
        zeroize::Zeroize::zeroize(&mut body.pkce_verifier);
        let record = SsoRecord {
            domain_id: tx.domain_id,
            expires_at: tx.expires_at,
            sealed: sealed?,
        };
        Ok(self.store.put_transaction(&key, &record)?)
    }

    /// Take the login transaction of an IdP `state`: once (durably), whoever asks.
    pub async fn take_login(&self, state: &str) -> Result<TakenLogin, VaultError> {
        let key = sso_keys::state_key(state);
        let record = match self.store.take_transaction(&key, now_micros()).await? {
            Taken::Found(r) => r,
            Taken::Expired(_) => return Ok(TakenLogin::Expired),
            Taken::Spent | Taken::Unknown => return Ok(TakenLogin::Unknown),
        };
        let body: TransactionBody = self.open_sso(Field::SsoTransaction, &key, &record)?;
        Ok(TakenLogin::Found(LoginTransaction {
            domain_id: record.domain_id,
            purpose: body.purpose,
            nonce: Zeroizing::new(body.nonce),
            pkce_verifier: Zeroizing::new(body.pkce_verifier),
            browser: body.browser,
            started_at: body.started_at,
            expires_at: record.expires_at,
        }))
    }

    /// Keep a one-time code's grant, with the sign-in's `sso.login` event, in
    /// one durable write.
    pub async fn mint_code(
        &self,
        code: &str,
        grant: &CodeGrant,
        domain: &Domain,
        event: &LoginEvent<'_>,
    ) -> Result<(), VaultError> {
        self.with_current_keyring(|| self.put_code(code, grant, domain, event))
            .await
    }

    async fn put_code(
        &self,
        code: &str,
        grant: &CodeGrant,
        domain: &Domain,
        event: &LoginEvent<'_>,
    ) -> Result<(), VaultError> {
        let key = sso_keys::code_key(code);
        let mut body = GrantBody {
            domain: domain.name.clone(),
            app_id: grant.app_id,
            redirect_uri: grant.redirect_uri.clone(),
            code_challenge: grant.code_challenge.clone(),
            profile: grant.profile.to_string(),
        };
        let sealed = self.seal_sso(Field::SsoCode, &key, grant.domain_id, &body);
        zeroize::Zeroize::zeroize(&mut body.profile);
        let record = SsoRecord {
            domain_id: grant.domain_id,
            expires_at: grant.expires_at,
            sealed: sealed?,
        };
        let event = login_event(now_micros(), Some(domain), event);
        self.store.put_code(&key, &record, &event).await?;
        audit::log_line(&event);
        Ok(())
    }

    /// Audit a sign-in that ended without a code (a refusal, or a test).
    pub async fn record_login(
        &self,
        domain: Option<&Domain>,
        event: &LoginEvent<'_>,
    ) -> Result<(), VaultError> {
        self.record(login_event(now_micros(), domain, event)).await
    }

    /// Redeem a one-time code for the application `app_id`: taken once,
    /// durably, with an `sso.code_redeem` event saying how it went (`check`
    /// says whether this caller may have the grant: redirect URI, PKCE).
    pub async fn redeem_code(
        &self,
        code: &str,
        app_id: u64,
        check: impl Fn(&CodeGrant) -> Result<(), &'static str>,
    ) -> Result<Redemption, VaultError> {
        let key = sso_keys::code_key(code);
        let now = now_micros();
        let open = |r: &SsoRecord| -> Result<(String, CodeGrant), VaultError> {
            let body: GrantBody = self.open_sso(Field::SsoCode, &key, r)?;
            Ok((
                body.domain,
                CodeGrant {
                    domain_id: r.domain_id,
                    app_id: body.app_id,
                    redirect_uri: body.redirect_uri,
                    code_challenge: body.code_challenge,
                    profile: Zeroizing::new(body.profile),
                    expires_at: r.expires_at,
                },
            ))
        };
        let judge = |grant: &CodeGrant| -> Result<(), &'static str> {
            if grant.app_id != app_id {
                return Err("code_for_another_application");
            }
            check(grant)
        };
        type Outcome = (
            Option<u64>,
            Option<String>,
            &'static str,
            Option<&'static str>,
        );
        let outcome = |taken: &Taken| -> Outcome {
            match taken {
                Taken::Found(r) | Taken::Expired(r) => match open(r) {
                    Ok((name, _)) if matches!(taken, Taken::Expired(_)) => {
                        (Some(r.domain_id), Some(name), "refused", Some("expired"))
                    }
                    Ok((name, g)) => match judge(&g) {
                        Ok(()) => (Some(r.domain_id), Some(name), "redeemed", None),
                        Err(why) => (Some(r.domain_id), Some(name), "refused", Some(why)),
                    },
                    Err(_) => (Some(r.domain_id), None, "refused", Some("grant_unreadable")),
                },
                Taken::Spent => (None, None, "refused", Some("replayed")),
                Taken::Unknown => (None, None, "refused", Some("unknown_code")),
            }
        };
        // The event the (possibly retried) transaction wrote last, for the log.
        let written = std::cell::RefCell::new(None);
        let taken = self
            .store
            .redeem_code(&key, now, |taken| {
                let (domain_id, domain, result, why) = outcome(taken);
                let action = if matches!(taken, Taken::Spent) {
                    "sso.code_replay"
                } else {
                    "sso.code_redeem"
                };
                let mut e = audit::event(now, None, action, None);
                e.domain_id = domain_id;
                e.domain = domain;
                e.detail = Some(match why {
                    Some(w) => format!("outcome={result} reason={w} app={app_id}"),
                    None => format!("outcome={result} app={app_id}"),
                });
                *written.borrow_mut() = Some(e.clone());
                e
            })
            .await?;
        if let Some(e) = written.into_inner() {
            audit::log_line(&e);
        }
        Ok(match taken {
            Taken::Found(r) => {
                let (_, grant) = open(&r)?;
                match judge(&grant) {
                    Ok(()) => Redemption::Granted(grant),
                    Err(why) => Redemption::Refused(why),
                }
            }
            Taken::Expired(_) => Redemption::Expired,
            Taken::Spent => Redemption::Spent,
            Taken::Unknown => Redemption::Unknown,
        })
    }

    /// Remove broker records whose time is up (the maintenance task).
    pub fn sweep_sign_ins(&self) -> Result<usize, VaultError> {
        Ok(self.store.sweep_sso(now_micros())?)
    }

    /// A domain by id (the broker keeps ids in its records).
    pub fn domain_by_id(&self, id: u64) -> Result<Option<Domain>, VaultError> {
        Ok(self.store.domain(id)?.map(Domain::from))
    }
}

fn login_event(at: i64, domain: Option<&Domain>, e: &LoginEvent<'_>) -> AuditRecord {
    let mut r = audit::event(at, None, "sso.login", domain);
    let mut detail = format!("outcome={}", e.outcome);
    if e.test {
        detail.push_str(" purpose=sign_in_test");
    }
    if let Some(reason) = e.reason {
        detail.push_str(&format!(" reason={reason}"));
    }
    if let Some(app) = e.app_id {
        detail.push_str(&format!(" app={app}"));
    }
    if let Some(sub) = e.sub {
        detail.push_str(&format!(" sub={sub:?}"));
    }
    if let Some(email) = e.email {
        detail.push_str(&format!(" email={email:?}"));
    }
    r.detail = Some(detail);
    r
}

/// Re-encryption of the broker's records in flight (part of a key rotation).
impl Vault {
    /// Re-seal every sign-in in flight and every code not yet redeemed that is
    /// not under the active term, so that dropping the old term (right after
    /// the configs are re-encrypted) does not fail them at their callback or
    /// redemption. Returns how many were re-sealed. A record that cannot be
    /// opened is left to fail (and be swept) as it would have anyway.
    pub(super) fn reseal_sign_ins(&self) -> Result<u64, VaultError> {
        let mut resealed = 0;
        for (tree, field) in [
            (SsoTree::Transactions, Field::SsoTransaction),
            (SsoTree::Codes, Field::SsoCode),
        ] {
            let active = self.keyring().active_term();
            let keys = self
                .store
                .sso_records(tree)?
                .into_iter()
                .filter(|(_, r)| envelope_term(&r.sealed) != Some(active))
                .map(|(key, _)| key);
            for key in keys {
                self.count_encryption(self.keyring().active_term(), true)?;
                let binding = hex(&key);
                let changed = self.store.reseal_sso(tree, &key, |record| {
                    let keyring = self.keyring();
                    if envelope_term(&record.sealed) == Some(keyring.active_term()) {
                        return Ok(None);
                    }
                    let ctx = SealContext {
                        domain_id: record.domain_id,
                        field,
                        origin: Some(&binding),
                    };
                    let plain = keyring.open(&record.sealed, ctx)?;
                    Ok::<_, VaultError>(Some(keyring.seal(&plain, ctx)?))
                });
                match changed {
                    Ok(true) => resealed += 1,
                    Ok(false) => {}
                    Err(Abort::Store(e)) => return Err(e.into()),
                    Err(Abort::Caller(e)) => {
                        tracing::warn!(error = %e, "a sign-in record could not be re-encrypted; it will fail");
                    }
                }
            }
        }
        Ok(resealed)
    }

    /// The key terms the broker's records in flight are sealed under.
    pub(super) fn sign_in_terms(&self) -> Result<std::collections::BTreeSet<u32>, VaultError> {
        let mut terms = std::collections::BTreeSet::new();
        for tree in [SsoTree::Transactions, SsoTree::Codes] {
            for (_, record) in self.store.sso_records(tree)? {
                terms.extend(envelope_term(&record.sealed));
            }
        }
        Ok(terms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_hides_the_sealed_values() {
        let tx = LoginTransaction {
            domain_id: 1,
            purpose: LoginPurpose::Test { actor: 1 },
            nonce: Zeroizing::new("nonce-value-xyz".into()),
            pkce_verifier: Zeroizing::new("verifier-value-xyz".into()),
            browser: [0; 32],
            started_at: 0,
            expires_at: 1,
        };
        let s = format!("{tx:?}");
        assert!(
            !s.contains("nonce-value") && !s.contains("verifier-value"),
            "{s}"
        );
        let g = CodeGrant {
            domain_id: 1,
            app_id: 2,
            redirect_uri: "https://app/cb".into(),
            code_challenge: None,
            profile: Zeroizing::new("{\"email\":\"a@b\"}".into()),
            expires_at: 1,
        };
        assert!(!format!("{g:?}").contains("a@b"));
    }
}
