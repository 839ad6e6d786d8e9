//! The blocking part of `/sso/callback` (run on the blocking pool): the
//! provider's discovery document, the code exchange at the token endpoint the
//! secret is bound to, the ID token's checks, userinfo, and the e-mail rules.
//! It fills the checks the "Try sign-in" page shows as it goes.

use super::callback::{CheckStatus, Checks, Refusal};
use super::Broker;
use crate::oidc::rp::{self, IdClaims, IdTokenCheck, RpError, TokenRequest};
use crate::outbound::Outbound;
use crate::time::now_micros;
use crate::vault::{Domain, LoginTransaction, Vault};

/// What the blocking part verified.
pub(super) struct Verified {
    pub(super) issuer: String,
    pub(super) claims: IdClaims,
}

/// Which check an ID-token refusal belongs to.
fn check_of(reason: &str) -> &'static str {
    match reason {
        "wrong_issuer" => "issuer",
        "wrong_audience" | "wrong_azp" => "audience",
        "expired" | "not_yet_valid" | "issued_in_future" => "expiry",
        "wrong_nonce" => "nonce",
        "userinfo_failed" | "userinfo_sub_mismatch" => "email_domain",
        _ => "signature",
    }
}

impl Broker {
    /// The blocking part: the provider's document, the code exchange, the ID
    /// token, userinfo, the e-mail. Fills `checks` as it goes.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn verify(
        &self,
        vault: &Vault,
        outbound: &Outbound,
        domain: &Domain,
        tx: &LoginTransaction,
        code: &str,
        iss: Option<&str>,
        checks: &mut Checks,
    ) -> Result<Verified, Refusal> {
        let internal = |what: &str, e: &dyn std::fmt::Display| {
            let id = crate::logging::correlation_id();
            tracing::error!(error = %e, correlation_id = %id, domain = %domain.name, "sign-in: {what}");
            Refusal::new(
                "server_error",
                "internal",
                format!("the sign-in failed (error id {id})"),
            )
        };
        let bound = match vault.reveal_secret(domain) {
            Ok(Some(b)) => b,
            Ok(None) => {
                return Err(Refusal::new(
                    "server_error",
                    "no_config",
                    "the enterprise domain has no OIDC configuration",
                ))
            }
            Err(e) => return Err(internal("the secret could not be read", &e)),
        };
        let config = &bound.config;
        let Some(discovery_url) = config.discovery_url.as_deref() else {
            return Err(Refusal::new(
                "server_error",
                "no_discovery_url",
                "the enterprise domain's OIDC configuration has no discovery_url (the broker \
                 needs the provider's issuer and keys)",
            ));
        };
        let meta = self.provider(outbound, discovery_url).map_err(|e| {
            tracing::warn!(error = %e, domain = %domain.name, "sign-in: discovery failed");
            let busy = matches!(
                e,
                crate::oidc::discovery::DiscoveryError::Fetch(
                    crate::outbound::FetchError::Busy { .. }
                )
            );
            Refusal::new(
                "temporarily_unavailable",
                if busy {
                    "outbound_busy"
                } else {
                    "discovery_unavailable"
                },
                "the identity provider's discovery document could not be read",
            )
        })?;
        // RFC 9207: the issuer the answer says it comes from (mix-up defence).
        match iss {
            Some(i) if i != meta.issuer => {
                checks.failed("iss", format!("iss {i:?} is not the provider's issuer"));
                return Err(Refusal::new(
                    "access_denied",
                    "wrong_iss_parameter",
                    "the answer came from another identity provider (iss)",
                ));
            }
            Some(_) => checks.ok("iss", "the answer names the provider's issuer (RFC 9207)"),
            None if meta.authorization_response_iss_parameter_supported => {
                checks.failed("iss", "the provider promises iss (RFC 9207) and sent none");
                return Err(Refusal::new(
                    "access_denied",
                    "missing_iss_parameter",
                    "the identity provider's answer has no iss",
                ));
            }
            None => checks.set(
                "iss",
                CheckStatus::Skipped,
                "the provider does not send iss",
            ),
        }
        let Some(token_endpoint) = config.token_endpoint.as_deref() else {
            return Err(Refusal::new(
                "server_error",
                "no_token_endpoint",
                "the enterprise domain's OIDC configuration has no token endpoint",
            ));
        };
        let Some(callback) = self.callback_url() else {
            return Err(Refusal::new(
                "server_error",
                "no_public_url",
                "sign-in is not enabled on this server: set server.public_url",
            ));
        };
        let tokens = rp::exchange_code(
            outbound,
            &TokenRequest {
                token_endpoint,
                bound_origin: config.secret_origin.as_deref(),
                client_id: &config.client_id,
                code,
                redirect_uri: &callback,
                code_verifier: &tx.pkce_verifier,
                auth_methods: meta.token_endpoint_auth_methods_supported.as_deref(),
            },
            &bound.secret,
        );
        drop(bound.secret);
        let tokens = tokens.map_err(|e| {
            checks.failed("token_exchange", e.to_string());
            refusal_of(&e)
        })?;
        checks.ok(
            "token_exchange",
            "the code was exchanged at the bound token endpoint",
        );
        let now_secs = now_micros() / 1_000_000;
        let check = IdTokenCheck {
            issuer: &meta.issuer,
            client_id: &config.client_id,
            nonce: &tx.nonce,
            algs: &meta.id_token_signing_alg_values_supported,
            skew_secs: self.settings.sso.clock_skew_secs,
            now_secs,
        };
        let mut claims = self
            .jwks
            .validate(outbound, &meta.jwks_uri, &tokens.id_token, &check)
            .map_err(|e| {
                checks.failed(check_of(e.reason()), e.to_string());
                refusal_of(&e)
            })?;
        checks.ok(
            "signature",
            "signed by a key of the provider's JWKS, with an allowed algorithm",
        );
        checks.ok("issuer", "iss is the provider's issuer");
        checks.ok("audience", "aud (and azp) name this client");
        checks.ok("expiry", "exp, iat and nbf within the allowed clock skew");
        checks.ok("nonce", "nonce is the sign-in's own");
        if claims.email.is_none() {
            let url = config
                .userinfo_endpoint
                .as_deref()
                .or(meta.userinfo_endpoint.as_deref());
            if let (Some(url), Some(token)) = (url, tokens.access_token.as_deref()) {
                let info = rp::userinfo(outbound, url, token).map_err(|e| {
                    checks.failed("email_domain", e.to_string());
                    refusal_of(&e)
                })?;
                if info.get("sub").and_then(|s| s.as_str()) != Some(claims.sub.as_str()) {
                    checks.failed("email_domain", "userinfo is about another user (sub)");
                    return Err(Refusal::new(
                        "access_denied",
                        "userinfo_sub_mismatch",
                        "the provider's userinfo is about another user",
                    ));
                }
                merge_userinfo(&mut claims, &info);
            }
        }
        let Some(email) = claims.email.clone() else {
            checks.failed(
                "email_domain",
                "neither the ID token nor userinfo has an e-mail",
            );
            return Err(Refusal::new(
                "access_denied",
                "no_email",
                "the identity provider gave no e-mail address",
            ));
        };
        if !rp::email_in_domain(&email, &domain.name) {
            checks.failed(
                "email_domain",
                format!("{email} is not in {} or a subdomain", domain.name),
            );
            return Err(Refusal::new(
                "access_denied",
                "email_outside_domain",
                format!(
                    "the e-mail address is not in the enterprise domain {}",
                    domain.name
                ),
            ));
        }
        checks.ok("email_domain", format!("{email} is in {}", domain.name));
        match claims.email_verified {
            Some(false) if !self.settings.sso.allow_unverified_email => {
                checks.failed(
                    "email_verified",
                    "the provider says the e-mail is not verified",
                );
                return Err(Refusal::new(
                    "access_denied",
                    "email_not_verified",
                    "the identity provider says the e-mail address is not verified",
                ));
            }
            Some(false) => checks.ok(
                "email_verified",
                "not verified, allowed by sso.allow_unverified_email",
            ),
            Some(true) => checks.ok("email_verified", "verified"),
            None => checks.ok("email_verified", "the provider does not say (accepted)"),
        }
        Ok(Verified {
            issuer: meta.issuer.clone(),
            claims,
        })
    }
}

/// The application's error for a protocol refusal.
fn refusal_of(e: &RpError) -> Refusal {
    let error = if e.is_temporary() {
        "temporarily_unavailable"
    } else if e.reason() == "not_bound" {
        "server_error"
    } else {
        "access_denied"
    };
    let description = match e.reason() {
        "not_bound" => "the client secret may not be sent to this token endpoint".to_owned(),
        "outbound_busy" => {
            tracing::warn!(
                "sign-in refused: every outbound slot stayed in use \
                 (outbound.max_concurrent_fetches); raise it if this recurs"
            );
            "the appliance is too busy to reach the identity provider; try again".to_owned()
        }
        r if e.is_temporary() => format!("the identity provider did not answer in time ({r})"),
        r => format!("the sign-in was refused ({r})"),
    };
    Refusal::new(error, e.reason(), description)
}

/// Fill what the ID token lacks from userinfo (the ID token's own claims win).
fn merge_userinfo(claims: &mut IdClaims, info: &serde_json::Value) {
    let text = |k: &str| info.get(k).and_then(|v| v.as_str()).map(str::to_owned);
    if claims.email.is_none() {
        claims.email = text("email");
        if claims.email_verified.is_none() {
            claims.email_verified = info.get("email_verified").and_then(|v| v.as_bool());
        }
    }
    claims.name = claims.name.take().or_else(|| text("name"));
    claims.given_name = claims.given_name.take().or_else(|| text("given_name"));
    claims.family_name = claims.family_name.take().or_else(|| text("family_name"));
    if let Some(obj) = info.as_object() {
        for (k, v) in obj {
            claims.claims.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::CHECKS;

    #[test]
    fn each_id_token_refusal_names_its_check() {
        for (reason, check) in [
            ("bad_signature", "signature"),
            ("alg_none", "signature"),
            ("wrong_issuer", "issuer"),
            ("wrong_azp", "audience"),
            ("expired", "expiry"),
            ("wrong_nonce", "nonce"),
        ] {
            assert_eq!(check_of(reason), check, "{reason}");
            assert!(CHECKS.contains(&check));
        }
    }
}
