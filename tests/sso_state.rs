//! The sign-in broker's state through the vault (`vault::sso`): a login
//! transaction and a one-time code are each taken by exactly one of many
//! concurrent callers, a code presented wrongly is used up, and every
//! redemption is audited. (The flows themselves: `tests/sso/`.)

use std::sync::Arc;

use oidcvault::vault::{
    AuditQuery, CodeGrant, LoginEvent, LoginPurpose, LoginTransaction, Redemption, TakenLogin,
};
use oidcvault::Vault;
use zeroize::Zeroizing;

use crate::harness::in_process::Env;

fn transaction(domain_id: u64, expires_in_micros: i64) -> LoginTransaction {
    let now = oidcvault::time::now_micros();
    LoginTransaction {
        domain_id,
        purpose: LoginPurpose::App {
            app_id: 7,
            redirect_uri: "https://app.example/cb".into(),
            state: "app-state".into(),
            code_challenge: None,
        },
        nonce: Zeroizing::new("nonce-0123456789".into()),
        pkce_verifier: Zeroizing::new("verifier-0123456789".into()),
        browser: [9; 32],
        started_at: now,
        expires_at: now + expires_in_micros,
    }
}

fn grant(domain_id: u64, app_id: u64) -> CodeGrant {
    CodeGrant {
        domain_id,
        app_id,
        redirect_uri: "https://app.example/cb".into(),
        code_challenge: None,
        profile: Zeroizing::new(r#"{"email":"alice@acme.example"}"#.into()),
        expires_at: oidcvault::time::now_micros() + 60_000_000,
    }
}

fn actions(vault: &Vault) -> Vec<(String, Option<String>)> {
    let (events, _) = vault
        .audit(&AuditQuery {
            limit: 1000,
            ..AuditQuery::default()
        })
        .unwrap();
    events.into_iter().map(|e| (e.action, e.detail)).collect()
}

#[actix_web::test]
async fn a_transaction_round_trips_sealed_and_is_taken_once() {
    let env = Env::new();
    let (domain, _) = env.domain("acme.example").await;
    env.vault
        .begin_login("idp-state-1", &transaction(domain.id, 60_000_000))
        .unwrap();
    assert_eq!(env.vault.pending_logins(), 1);
    let TakenLogin::Found(tx) = env.vault.take_login("idp-state-1").await.unwrap() else {
        panic!("the transaction was not found");
    };
    assert_eq!(tx.nonce.as_str(), "nonce-0123456789");
    assert_eq!(tx.pkce_verifier.as_str(), "verifier-0123456789");
    assert_eq!(tx.browser, [9; 32]);
    assert!(matches!(tx.purpose, LoginPurpose::App { app_id: 7, .. }));
    assert!(matches!(
        env.vault.take_login("idp-state-1").await.unwrap(),
        TakenLogin::Unknown
    ));
    assert_eq!(env.vault.pending_logins(), 0);
    env.vault
        .begin_login("idp-state-2", &transaction(domain.id, -1))
        .unwrap();
    assert!(matches!(
        env.vault.take_login("idp-state-2").await.unwrap(),
        TakenLogin::Expired
    ));
}

/// 64 callers race for one state and for one code: exactly one wins each.
#[actix_web::test]
async fn one_of_many_concurrent_callers_takes_a_state_or_redeems_a_code() {
    let env = Env::new();
    let (domain, _) = env.domain("acme.example").await;
    env.vault
        .begin_login("contended", &transaction(domain.id, 60_000_000))
        .unwrap();
    let vault: Arc<Vault> = env.vault.clone().into_inner();
    let mut takes = Vec::new();
    for _ in 0..64 {
        let v = vault.clone();
        takes.push(actix_web::rt::spawn(async move {
            matches!(
                v.take_login("contended").await.unwrap(),
                TakenLogin::Found(_)
            )
        }));
    }
    let mut found = 0;
    for t in takes {
        found += usize::from(t.await.unwrap());
    }
    assert_eq!(found, 1, "exactly one caller takes the transaction");

    let event = LoginEvent {
        outcome: "success",
        ..LoginEvent::default()
    };
    env.vault
        .mint_code("code-contended", &grant(domain.id, 3), &domain, &event)
        .await
        .unwrap();
    let mut redeems = Vec::new();
    for _ in 0..64 {
        let v = vault.clone();
        redeems.push(actix_web::rt::spawn(async move {
            matches!(
                v.redeem_code("code-contended", 3, |_| Ok(()))
                    .await
                    .unwrap(),
                Redemption::Granted(_)
            )
        }));
    }
    let mut granted = 0;
    for r in redeems {
        granted += usize::from(r.await.unwrap());
    }
    assert_eq!(granted, 1, "exactly one redemption is granted");
    let replays = actions(&env.vault)
        .into_iter()
        .filter(|(a, _)| a == "sso.code_replay")
        .count();
    assert_eq!(replays, 63, "every other redemption is audited as a replay");
}

#[actix_web::test]
async fn a_code_presented_wrongly_is_used_up_and_each_outcome_audited() {
    let env = Env::new();
    let (domain, _) = env.domain("acme.example").await;
    let event = LoginEvent {
        outcome: "success",
        app_id: Some(3),
        sub: Some("alice"),
        email: Some("alice@acme.example"),
        ..LoginEvent::default()
    };
    env.vault
        .mint_code("code-a", &grant(domain.id, 3), &domain, &event)
        .await
        .unwrap();
    // Another application: refused, and the code is gone for its own one too.
    let r = env
        .vault
        .redeem_code("code-a", 4, |_| Ok(()))
        .await
        .unwrap();
    assert!(
        matches!(r, Redemption::Refused("code_for_another_application")),
        "{r:?}"
    );
    let r = env
        .vault
        .redeem_code("code-a", 3, |_| Ok(()))
        .await
        .unwrap();
    assert!(matches!(r, Redemption::Spent), "{r:?}");
    // The caller's own check (a redirect URI, a PKCE verifier) burns it too.
    env.vault
        .mint_code("code-b", &grant(domain.id, 3), &domain, &event)
        .await
        .unwrap();
    let r = env
        .vault
        .redeem_code("code-b", 3, |_| Err("wrong_code_verifier"))
        .await
        .unwrap();
    assert!(
        matches!(r, Redemption::Refused("wrong_code_verifier")),
        "{r:?}"
    );
    let r = env
        .vault
        .redeem_code("never-minted", 3, |_| Ok(()))
        .await
        .unwrap();
    assert!(matches!(r, Redemption::Unknown), "{r:?}");

    let events = actions(&env.vault);
    let login = events
        .iter()
        .find(|(a, _)| a == "sso.login")
        .expect("sso.login event");
    let detail = login.1.as_deref().unwrap_or_default();
    assert!(
        detail.contains("outcome=success") && detail.contains("alice@acme.example"),
        "{detail}"
    );
    let details: Vec<&str> = events
        .iter()
        .filter(|(a, _)| a.starts_with("sso.code_"))
        .filter_map(|(_, d)| d.as_deref())
        .collect();
    for want in [
        "reason=code_for_another_application",
        "reason=replayed",
        "reason=wrong_code_verifier",
        "reason=unknown_code",
    ] {
        assert!(
            details.iter().any(|d| d.contains(want)),
            "{want} in {details:?}"
        );
    }
    // No code value in any event.
    for (_, d) in &events {
        let d = d.as_deref().unwrap_or_default();
        assert!(!d.contains("code-a") && !d.contains("code-b"), "{d}");
    }
}
