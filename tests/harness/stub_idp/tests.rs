//! The stub provider on its own: tokens that verify, the exchange's checks,
//! denial, `iss`, hanging.

use super::*;

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{DecodingKey, Validation};

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new().redirects(0).build()
}

fn get_json(url: &str) -> Value {
    agent().get(url).call().unwrap().into_json().unwrap()
}

fn verify(token: &str, jwks: &Value, alg: Algorithm) -> Result<Value, jsonwebtoken::errors::Error> {
    let set: JwkSet = serde_json::from_value(jwks.clone()).unwrap();
    let header = jsonwebtoken::decode_header(token)?;
    let kid = header.kid.unwrap_or_default();
    let jwk = set
        .find(&kid)
        .ok_or(jsonwebtoken::errors::ErrorKind::InvalidKeyFormat)?;
    let key = DecodingKey::from_jwk(jwk)?;
    let mut v = Validation::new(alg);
    v.set_audience(&[CLIENT_ID]);
    v.set_required_spec_claims(&["exp", "iss", "aud"]);
    jsonwebtoken::decode::<Value>(token, &key, &v).map(|d| d.claims)
}

/// Authorize, then redeem at the token endpoint; the token endpoint's answer.
fn flow(idp: &StubIdp, verifier: &str, basic: bool) -> (u16, Value) {
    let authorize = with_params(
        &format!("{}/authorize", idp.origin()),
        &[
            ("client_id", CLIENT_ID),
            ("redirect_uri", "http://127.0.0.1:9/cb"),
            ("state", "st-1"),
            ("nonce", "n-1"),
            ("code_challenge", &s256("the-verifier")),
            ("code_challenge_method", "S256"),
        ],
    )
    .unwrap();
    let r = agent().get(&authorize).call().unwrap();
    assert_eq!(r.status(), 302);
    let location = url::Url::parse(r.header("location").unwrap()).unwrap();
    let q: HashMap<String, String> = location.query_pairs().into_owned().collect();
    assert_eq!(q["state"], "st-1", "{location}");
    let code = q["code"].clone();
    let mut req = agent().post(&format!("{}/token", idp.origin()));
    let mut form = vec![
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", "http://127.0.0.1:9/cb"),
        ("code_verifier", verifier),
    ];
    if basic {
        req = req.set(
            "Authorization",
            &format!(
                "Basic {}",
                STANDARD.encode(format!("{CLIENT_ID}:{CLIENT_SECRET}"))
            ),
        );
    } else {
        form.push(("client_id", CLIENT_ID));
        form.push(("client_secret", CLIENT_SECRET));
    }
    match req.send_form(&form) {
        Ok(r) => (r.status(), r.into_json().unwrap()),
        Err(ureq::Error::Status(s, r)) => (s, r.into_json().unwrap()),
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn stub_idp_issues_verifiable_tokens_and_checks_the_exchange() {
    let idp = StubIdp::start();
    let doc = get_json(&idp.discovery_url());
    assert_eq!(doc["issuer"], idp.issuer());
    let jwks = get_json(doc["jwks_uri"].as_str().unwrap());

    let (status, body) = flow(&idp, "the-verifier", true);
    assert_eq!(status, 200, "{body}");
    let token = body["id_token"].as_str().unwrap();
    let claims = verify(token, &jwks, Algorithm::ES256).expect("a good signature");
    assert_eq!(claims["nonce"], "n-1");
    assert_eq!(claims["email"], EMAIL);
    assert_eq!(idp.last_authorize().get("nonce"), Some("n-1"));
    assert_eq!(idp.tokens().last().unwrap().auth, "basic");

    // Userinfo with the access token.
    let at = body["access_token"].as_str().unwrap();
    let ui: Value = agent()
        .get(&format!("{}/userinfo", idp.origin()))
        .set("Authorization", &format!("Bearer {at}"))
        .call()
        .unwrap()
        .into_json()
        .unwrap();
    assert_eq!(ui["sub"], SUB);

    // A wrong verifier, and post credentials when only basic is accepted.
    let (status, body) = flow(&idp, "another-verifier", false);
    assert_eq!(
        (status, &body["error"]),
        (400, &json!("invalid_grant")),
        "{body}"
    );
    idp.knobs().auth = Auth::Basic;
    let (status, body) = flow(&idp, "the-verifier", false);
    assert_eq!(
        (status, &body["error"]),
        (401, &json!("invalid_client")),
        "{body}"
    );
    idp.knobs().auth = Auth::Either;

    // Another key under the current kid: the signature does not verify.
    idp.signing(Signing::OtherKey);
    let (_, body) = flow(&idp, "the-verifier", false);
    let err = verify(body["id_token"].as_str().unwrap(), &jwks, Algorithm::ES256);
    assert!(err.is_err(), "{err:?}");
    // alg none: no signature at all.
    idp.signing(Signing::AlgNone);
    let (_, body) = flow(&idp, "the-verifier", false);
    let t = body["id_token"].as_str().unwrap();
    assert!(t.ends_with('.'), "{t}");
    // ES384 with a published key verifies as ES384.
    idp.signing(Signing::UnlistedAlg);
    let (_, body) = flow(&idp, "the-verifier", false);
    verify(body["id_token"].as_str().unwrap(), &jwks, Algorithm::ES384).expect("ES384");
    // Claims overrides; null removes.
    idp.signing(Signing::Good);
    idp.claims(json!({"email": null, "aud": ["x", CLIENT_ID], "azp": "x"}));
    let (_, body) = flow(&idp, "the-verifier", false);
    let t = body["id_token"].as_str().unwrap();
    let c = verify(t, &jwks, Algorithm::ES256).unwrap();
    assert!(c.get("email").is_none(), "{c}");
    assert_eq!(c["azp"], "x");

    // Rotation: the new kid is published, the old one withdrawn.
    let old = idp.kid();
    let new = idp.rotate();
    let jwks2 = get_json(&format!("{}/jwks", idp.origin()));
    let kids: Vec<&str> = jwks2["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert!(
        kids.contains(&new.as_str()) && !kids.contains(&old.as_str()),
        "{kids:?}"
    );
    let (_, body) = flow(&idp, "the-verifier", true);
    let t = body["id_token"].as_str().unwrap();
    assert!(
        verify(t, &jwks, Algorithm::ES256).is_err(),
        "old set lacks the kid"
    );
    verify(t, &jwks2, Algorithm::ES256).expect("the rotated set verifies");
}

#[test]
fn stub_idp_denies_and_sends_iss_when_told() {
    let idp = StubIdp::start();
    idp.knobs().answer = Answer::Deny("user said no".into());
    idp.iss_param(IssParam::Issuer);
    let url = with_params(
        &format!("{}/authorize", idp.origin()),
        &[
            ("client_id", CLIENT_ID),
            ("redirect_uri", "http://127.0.0.1:9/cb?x=1"),
            ("state", "s"),
        ],
    )
    .unwrap();
    let r = agent().get(&url).call().unwrap();
    let location = url::Url::parse(r.header("location").unwrap()).unwrap();
    let q: HashMap<String, String> = location.query_pairs().into_owned().collect();
    assert_eq!(q["error"], "access_denied");
    assert_eq!(q["error_description"], "user said no");
    assert_eq!(q["x"], "1");
    assert_eq!(q["iss"], idp.issuer());
    assert!(!q.contains_key("code"));
    let doc = get_json(&idp.discovery_url());
    assert_eq!(doc["authorization_response_iss_parameter_supported"], true);
    // An unknown client gets an error page, no redirect.
    let r = agent()
        .get(&format!(
            "{}/authorize?client_id=nobody&redirect_uri=http://x/",
            idp.origin()
        ))
        .call();
    assert!(matches!(r, Err(ureq::Error::Status(400, _))), "{r:?}");
}

#[test]
fn stub_idp_token_endpoint_hangs_when_told() {
    let idp = StubIdp::start();
    idp.knobs().hang = Some(Duration::from_secs(3));
    let started = std::time::Instant::now();
    let r = ureq::AgentBuilder::new()
        .timeout(Duration::from_millis(500))
        .build()
        .post(&format!("{}/token", idp.origin()))
        .send_form(&[("grant_type", "authorization_code")]);
    assert!(r.is_err(), "an answer from a hanging endpoint");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(idp.tokens()[0].outcome, "hung");
}
