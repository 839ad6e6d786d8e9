//! `/sso/callback`: the identity provider sends the browser back. The
//! transaction is taken once (whoever comes second finds nothing), the browser
//! must be the one that started it (its binding cookie), then the code is
//! exchanged at the token endpoint the secret is bound to, the ID token is
//! checked (`oidc::rp`), the e-mail must be in the enterprise domain, and a
//! one-time code goes back to the application. Every refusal is audited
//! (`sso.login`, with its reason) and counted; none mints a code.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use zeroize::Zeroizing;

use super::profile::profile_json;
use super::verify::Verified;
use super::{binding_hash, with_query, Broker};
use crate::oidc::rp;
use crate::outbound::Outbound;
use crate::time::now_micros;
use crate::vault::{
    CodeGrant, Domain, LoginEvent, LoginPurpose, LoginTransaction, TakenLogin, Vault,
};

/// The query of `/sso/callback`, each parameter at most once.
pub type CallbackParams = HashMap<String, String>;

/// Where the browser goes next.
#[derive(Debug)]
pub enum Finished {
    /// Back to the application (its code and state, or an OAuth error).
    Redirect(String),
    /// A "Try sign-in" from the admin page: its result, shown in the browser.
    Test(TestResult),
    /// No application to go back to: an error page.
    Page { status: u16, message: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckStatus {
    Ok,
    Failed,
    Skipped,
}

impl CheckStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CheckStatus::Ok => "ok",
            CheckStatus::Failed => "failed",
            CheckStatus::Skipped => "skipped",
        }
    }
}

/// One check of a sign-in, as the "Try sign-in" page shows it.
#[derive(Debug, Clone)]
pub struct Check {
    pub name: &'static str,
    pub status: CheckStatus,
    pub detail: String,
}

/// The checks of a sign-in, in the order they run.
pub const CHECKS: [&str; 11] = [
    "state",
    "cookie",
    "iss",
    "token_exchange",
    "signature",
    "issuer",
    "audience",
    "expiry",
    "nonce",
    "email_domain",
    "email_verified",
];

#[derive(Debug)]
pub struct TestResult {
    pub domain: String,
    pub succeeded: bool,
    pub checks: Vec<Check>,
    /// The profile the application would receive (pretty JSON).
    pub profile: Option<Zeroizing<String>>,
}

/// A sign-in refused: what the application is told, and why (for the audit
/// trail and the metrics).
#[derive(Debug)]
pub(super) struct Refusal {
    /// The OAuth error for the application.
    pub(super) error: &'static str,
    /// A stable reason code.
    pub(super) reason: &'static str,
    pub(super) description: String,
}

impl Refusal {
    pub(super) fn new(
        error: &'static str,
        reason: &'static str,
        description: impl Into<String>,
    ) -> Self {
        Self {
            error,
            reason,
            description: description.into(),
        }
    }
}

/// The checks list as it fills.
pub(super) struct Checks(pub(super) Vec<Check>);

impl Checks {
    pub(super) fn set(
        &mut self,
        name: &'static str,
        status: CheckStatus,
        detail: impl Into<String>,
    ) {
        let detail = detail.into();
        match self.0.iter_mut().find(|c| c.name == name) {
            Some(c) => {
                c.status = status;
                c.detail = detail;
            }
            None => self.0.push(Check {
                name,
                status,
                detail,
            }),
        }
    }
    pub(super) fn ok(&mut self, name: &'static str, detail: impl Into<String>) {
        self.set(name, CheckStatus::Ok, detail);
    }
    pub(super) fn failed(&mut self, name: &'static str, detail: impl Into<String>) {
        self.set(name, CheckStatus::Failed, detail);
    }
}

/// A provider's text, cut and on one line, for the application's error_description.
fn cut(text: &str, max: usize) -> String {
    let one_line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(max)
        .collect();
    one_line
}

impl Broker {
    /// Finish a sign-in at the IdP's return.
    pub async fn callback(
        self: Arc<Self>,
        vault: Arc<Vault>,
        outbound: Outbound,
        params: CallbackParams,
        cookie: Option<String>,
        ip: Option<IpAddr>,
    ) -> Finished {
        let page = |status, message: &str| Finished::Page {
            status,
            message: message.to_owned(),
        };
        let Some(state) = params.get("state").filter(|s| !s.is_empty()) else {
            return page(400, "The identity provider's answer has no state.");
        };
        let taken = vault.take_login(state).await;
        let tx = match taken {
            Ok(TakenLogin::Found(tx)) => tx,
            Ok(other) => {
                // Anonymous callers can hit this: counted per address, and past
                // the allowance not audited (the trail is no flood target).
                if self.charge(ip).is_err() {
                    return page(429, "Too many failed sign-ins from this address.");
                }
                let (reason, message) = if matches!(other, TakenLogin::Expired) {
                    (
                        "expired_state",
                        "This sign-in took too long and has expired. Start again from the \
                         application.",
                    )
                } else {
                    (
                        "unknown_state",
                        "This sign-in is unknown or was already completed. Start again from \
                         the application.",
                    )
                };
                self.refused(&vault, None, None, false, reason).await;
                return page(400, message);
            }
            Err(e) => {
                let id = crate::logging::correlation_id();
                tracing::error!(error = %e, correlation_id = %id, "sign-in: the transaction could not be taken");
                return page(
                    500,
                    &format!("The sign-in failed (error id {id}). Try again."),
                );
            }
        };
        let mut checks = Checks(Vec::new());
        checks.ok("state", "the sign-in was found, and taken once");
        let domain = match vault.domain_by_id(tx.domain_id) {
            Ok(Some(d)) => d,
            Ok(None) => {
                self.refused(&vault, None, app_of(&tx), is_test(&tx), "domain_removed")
                    .await;
                return page(400, "The enterprise domain of this sign-in was removed.");
            }
            Err(e) => {
                tracing::error!(error = %e, "sign-in: the domain could not be read");
                return page(500, "The sign-in failed. Try again.");
            }
        };
        // The browser must be the one the sign-in started in (login CSRF): a
        // mismatch goes nowhere, not even back to the application.
        let same_browser = cookie
            .as_deref()
            .is_some_and(|c| crate::crypto::sso::same(&binding_hash(c), &tx.browser));
        if !same_browser {
            self.refused(
                &vault,
                Some(&domain),
                app_of(&tx),
                is_test(&tx),
                "browser_mismatch",
            )
            .await;
            return page(
                400,
                "This sign-in was started in another browser (or its cookie is missing). \
                 Start again from the application, in this browser.",
            );
        }
        checks.ok("cookie", "the browser is the one the sign-in started in");
        // The application (a removed one gets nothing).
        let app = match &tx.purpose {
            LoginPurpose::App {
                app_id,
                redirect_uri,
                state,
                code_challenge,
            } => match vault.app(*app_id) {
                Ok(Some(_)) => Some(AppTarget {
                    app_id: *app_id,
                    redirect_uri: redirect_uri.clone(),
                    state: state.clone(),
                    code_challenge: code_challenge.clone(),
                }),
                Ok(None) => {
                    self.refused(
                        &vault,
                        Some(&domain),
                        Some(*app_id),
                        false,
                        "application_removed",
                    )
                    .await;
                    return page(400, "The application of this sign-in was removed.");
                }
                Err(e) => {
                    tracing::error!(error = %e, "sign-in: the application could not be read");
                    return page(500, "The sign-in failed. Try again.");
                }
            },
            LoginPurpose::Test { .. } => None,
        };
        let outcome = if let Some(error) = params.get("error") {
            let text = match params.get("error_description") {
                Some(d) => format!("{}: {}", cut(error, 64), cut(d, 200)),
                None => cut(error, 64),
            };
            checks.failed(
                "token_exchange",
                format!("the identity provider answered {text}"),
            );
            Err(Refusal::new(
                "access_denied",
                "idp_error",
                format!("the identity provider refused the sign-in ({text})"),
            ))
        } else if let Some(code) = params.get("code").filter(|c| !c.is_empty()) {
            let broker = self.clone();
            let (vault2, domain2) = (vault.clone(), domain.clone());
            let (code, iss) = (Zeroizing::new(code.clone()), params.get("iss").cloned());
            let started = Instant::now();
            let joined = tokio::task::spawn_blocking(move || {
                let mut checks = checks;
                let r = broker.verify(
                    &vault2,
                    &outbound,
                    &domain2,
                    &tx,
                    &code,
                    iss.as_deref(),
                    &mut checks,
                );
                (r, checks)
            })
            .await;
            self.observe_idp(started.elapsed());
            match joined {
                Ok((r, c)) => {
                    checks = c;
                    r
                }
                Err(e) => {
                    tracing::error!(error = %e, "sign-in: the verification task failed");
                    checks = Checks(Vec::new());
                    Err(Refusal::new(
                        "server_error",
                        "internal",
                        "the sign-in failed",
                    ))
                }
            }
        } else {
            checks.failed("token_exchange", "the identity provider sent no code");
            Err(Refusal::new(
                "invalid_request",
                "no_code",
                "the identity provider's answer has neither a code nor an error",
            ))
        };
        self.finish(&vault, &domain, app, outcome, checks).await
    }

    /// Audit and count a refusal that has no application to go back to.
    async fn refused(
        &self,
        vault: &Vault,
        domain: Option<&Domain>,
        app_id: Option<u64>,
        test: bool,
        reason: &'static str,
    ) {
        self.count("failure", reason);
        let event = LoginEvent {
            outcome: "failure",
            reason: Some(reason),
            app_id,
            test,
            ..LoginEvent::default()
        };
        if let Err(e) = vault.record_login(domain, &event).await {
            tracing::error!(error = %e, "sign-in: the audit event could not be written");
        }
    }

    /// The outcome, to the application (or the test page), audited.
    async fn finish(
        &self,
        vault: &Vault,
        domain: &Domain,
        app: Option<AppTarget>,
        outcome: Result<Verified, Refusal>,
        mut checks: Checks,
    ) -> Finished {
        let now = now_micros();
        let built = outcome.and_then(|v| {
            profile_json(domain, &v.issuer, &v.claims, now)
                .map(|p| (v, p))
                .map_err(|_| {
                    Refusal::new("server_error", "internal", "the profile could not be built")
                })
        });
        let (verified, profile) = match built {
            Ok(x) => x,
            Err(refusal) => {
                self.count("failure", refusal.reason);
                let event = LoginEvent {
                    outcome: "failure",
                    reason: Some(refusal.reason),
                    app_id: app.as_ref().map(|a| a.app_id),
                    test: app.is_none(),
                    ..LoginEvent::default()
                };
                if let Err(e) = vault.record_login(Some(domain), &event).await {
                    tracing::error!(error = %e, "sign-in: the audit event could not be written");
                }
                return match app {
                    Some(a) => redirect_error(&a, refusal.error, &refusal.description),
                    None => test_page(domain, false, checks, None),
                };
            }
        };
        let event = LoginEvent {
            outcome: "success",
            reason: None,
            app_id: app.as_ref().map(|a| a.app_id),
            sub: Some(&verified.claims.sub),
            email: verified.claims.email.as_deref(),
            test: app.is_none(),
        };
        let Some(app) = app else {
            self.count("success", "sign_in_test");
            if let Err(e) = vault.record_login(Some(domain), &event).await {
                tracing::error!(error = %e, "sign-in: the audit event could not be written");
            }
            let pretty = serde_json::from_str::<serde_json::Value>(&profile)
                .ok()
                .and_then(|v| serde_json::to_string_pretty(&v).ok())
                .map(Zeroizing::new);
            checks.set(
                "state",
                CheckStatus::Ok,
                "the sign-in was found, and taken once",
            );
            return test_page(domain, true, checks, pretty);
        };
        let code = rp::random_value();
        let ttl = i64::try_from(self.settings.sso.code_ttl_secs)
            .unwrap_or(60)
            .saturating_mul(1_000_000);
        let grant = CodeGrant {
            domain_id: domain.id,
            app_id: app.app_id,
            redirect_uri: app.redirect_uri.clone(),
            code_challenge: app.code_challenge.clone(),
            profile,
            expires_at: now.saturating_add(ttl),
        };
        if let Err(e) = vault.mint_code(&code, &grant, domain, &event).await {
            let id = crate::logging::correlation_id();
            tracing::error!(error = %e, correlation_id = %id, "sign-in: the code could not be stored");
            self.count("failure", "internal");
            return redirect_error(
                &app,
                "server_error",
                &format!("the sign-in failed (error id {id})"),
            );
        }
        self.count("success", "signed_in");
        let mut pairs = vec![("code", code.as_str())];
        if !app.state.is_empty() {
            pairs.push(("state", app.state.as_str()));
        }
        match with_query(&app.redirect_uri, &pairs) {
            Some(url) => Finished::Redirect(url),
            None => Finished::Page {
                status: 500,
                message: "The application's redirect URI is not a URL.".into(),
            },
        }
    }
}

/// Where an application's sign-in goes back to.
#[derive(Debug)]
struct AppTarget {
    app_id: u64,
    redirect_uri: String,
    state: String,
    code_challenge: Option<String>,
}

fn is_test(tx: &LoginTransaction) -> bool {
    matches!(tx.purpose, LoginPurpose::Test { .. })
}

fn app_of(tx: &LoginTransaction) -> Option<u64> {
    match &tx.purpose {
        LoginPurpose::App { app_id, .. } => Some(*app_id),
        LoginPurpose::Test { .. } => None,
    }
}

/// The application's error, with its state.
fn redirect_error(app: &AppTarget, error: &str, description: &str) -> Finished {
    let mut pairs = vec![("error", error), ("error_description", description)];
    if !app.state.is_empty() {
        pairs.push(("state", app.state.as_str()));
    }
    match with_query(&app.redirect_uri, &pairs) {
        Some(url) => Finished::Redirect(url),
        None => Finished::Page {
            status: 500,
            message: "The application's redirect URI is not a URL.".into(),
        },
    }
}

fn test_page(
    domain: &Domain,
    succeeded: bool,
    mut checks: Checks,
    profile: Option<Zeroizing<String>>,
) -> Finished {
    for name in CHECKS {
        if !checks.0.iter().any(|c| c.name == name) {
            checks.set(name, CheckStatus::Skipped, "not reached");
        }
    }
    checks.0.sort_by_key(|c| {
        CHECKS
            .iter()
            .position(|n| *n == c.name)
            .unwrap_or(CHECKS.len())
    });
    Finished::Test(TestResult {
        domain: domain.name.clone(),
        succeeded,
        checks: checks.0,
        profile,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_text_is_cut_to_one_line() {
        assert_eq!(cut("a\nb\rc", 10), "a b c");
        assert_eq!(cut(&"x".repeat(500), 200).len(), 200);
    }
}
