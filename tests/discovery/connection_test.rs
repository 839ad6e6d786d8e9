//! The connection test against a stub provider on loopback.

use actix_web::http::StatusCode;
use serde_json::{json, Value};

use super::*;

#[actix_web::test]
async fn connection_test_against_a_stub_provider() {
    let idp = Idp::start();
    let env = env();
    let (_, token) = env.domain("acme.com").await;
    let app = app!(env);
    let r = call(
        &app,
        post_json(
            CONFIG_PATH,
            &token,
            &create_body(&idp.discovery_url(), json!({})),
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");

    let t = call(&app, post_json(TEST, &token, "")).await;
    assert_eq!(t.status, StatusCode::OK, "{t:?}");
    assert_eq!(t.body["ok"], true, "{:#}", t.body);
    assert_schema(&served("ConnectionTest"), &t.body, "test answer");
    let validator = jsonschema::validator_for(&served("ConnectionTest")).unwrap();
    assert!(
        !validator.is_valid(&json!({"ok": true, "steps": [{"name": "x"}]})),
        "the schema can fail"
    );
    let names: Vec<&str> = t.body["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "discovery",
            "authorization_endpoint",
            "token_endpoint",
            "userinfo_endpoint",
            "jwks",
            "client_authentication"
        ]
    );
    let client = step(&t.body, "client_authentication");
    assert_eq!(client["status"], "pass");
    assert_eq!(client["provider_error"]["error"], "invalid_grant");
    assert!(
        client["detail"]
            .as_str()
            .unwrap()
            .contains("client_secret_basic"),
        "{client}"
    );
    assert!(!t.raw.contains(SECRET), "{}", t.raw);
    // The token request: basic credentials, a deliberately invalid code, a redirect_uri.
    let token_req = idp
        .stub
        .requests()
        .into_iter()
        .find(|r| r.method == "POST")
        .unwrap();
    let form = String::from_utf8(token_req.body.clone()).unwrap();
    assert!(
        form.contains("grant_type=authorization_code")
            && form.contains("code=oidcvault-connection-test-")
            && form.contains("redirect_uri="),
        "{form}"
    );
    assert!(
        !form.contains("client_secret"),
        "basic auth sends no secret in the body: {form}"
    );

    // The provider says it takes client_secret_post only: the test uses it.
    idp.set(
        "token_endpoint_auth_methods_supported",
        json!(["client_secret_post"]),
    );
    let t = call(&app, post_json(TEST, &token, "")).await;
    let client = step(&t.body, "client_authentication");
    assert_eq!(client["status"], "pass", "{client}");
    assert!(
        client["detail"]
            .as_str()
            .unwrap()
            .contains("client_secret_post"),
        "{client}"
    );
    // ... and neither: the client step says so.
    idp.set(
        "token_endpoint_auth_methods_supported",
        json!(["private_key_jwt"]),
    );
    let t = call(&app, post_json(TEST, &token, "")).await;
    let client = step(&t.body, "client_authentication");
    assert_eq!(client["status"], "fail", "{client}");
    assert!(
        client["detail"]
            .as_str()
            .unwrap()
            .contains("private_key_jwt"),
        "{client}"
    );
    idp.set("token_endpoint_auth_methods_supported", Value::Null);

    // A wrong secret fails the client step only, with the provider's own words.
    let r = call(
        &app,
        post_json(
            CONFIG_PATH,
            &token,
            r#"{"client_secret": "a-wrong-secret-value"}"#,
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let t = call(&app, post_json(TEST, &token, "")).await;
    assert_eq!(t.body["ok"], false);
    let client = step(&t.body, "client_authentication");
    assert_eq!(client["status"], "fail");
    assert_eq!(client["provider_error"]["error"], "invalid_client");
    assert_eq!(
        client["provider_error"]["error_description"],
        "client authentication failed"
    );
    assert_eq!(client["provider_error"]["status"], 401);
    assert_schema(&served("ConnectionTest"), &t.body, "failed test answer");
    for other in [
        "discovery",
        "authorization_endpoint",
        "token_endpoint",
        "jwks",
    ] {
        assert_eq!(
            step(&t.body, other)["status"],
            "pass",
            "{other}: {:#}",
            t.body
        );
    }
    assert!(!t.raw.contains("a-wrong-secret-value"));

    // A JWK set without keys fails its step.
    idp.set("jwks_uri", json!(idp.url("/nokeys")));
    let t = call(&app, post_json(TEST, &token, "")).await;
    assert_eq!(step(&t.body, "jwks")["status"], "fail");

    // Every test is in the audit trail, without the secret.
    let events = audit_actions(&env).await;
    let tests: Vec<&Value> = events
        .iter()
        .filter(|e| e["action"] == "config.test")
        .collect();
    assert_eq!(tests.len(), 5, "{events:?}");
    assert_eq!(tests[0]["detail"], "passed");
    assert_eq!(tests[3]["detail"], "failed: client_authentication");
    assert!(!format!("{events:?}").contains(SECRET));
}
