//! ID-token validation and the JWKS cache, with fixed keys (an EC P-256 key
//! from rcgen, the RSA test key) and a JWKS served by a closure that counts
//! its fetches (and once through the loopback HTTP stub).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use serde_json::{json, Value};

use super::super::test_support::{jwks, outbound, Reply, Stub, TestKey};
use super::*;

const ISS: &str = "https://idp.example";
const CID: &str = "client-1";
const NONCE: &str = "n-0S6_WzA2Mj";
const NOW: i64 = 1_800_000_000;
const SKEW: u64 = 120;
const URI: &str = "https://idp.example/jwks";

fn claims() -> Value {
    json!({"iss": ISS, "aud": CID, "sub": "u-1", "exp": NOW + 300, "iat": NOW - 5,
           "nonce": NONCE, "email": "ann@acme.com", "email_verified": true, "name": "Ann",
           "given_name": "A", "family_name": "N", "groups": ["x"]})
}

fn with(changes: Value) -> Value {
    let mut c = claims();
    for (k, v) in changes.as_object().unwrap() {
        if v.is_null() {
            c.as_object_mut().unwrap().remove(k);
        } else {
            c[k] = v.clone();
        }
    }
    c
}

fn check(algs: &[String]) -> IdTokenCheck<'_> {
    IdTokenCheck {
        issuer: ISS,
        client_id: CID,
        nonce: NONCE,
        algs,
        skew_secs: SKEW,
        now_secs: NOW,
    }
}

/// A provider's JWKS document, swappable, counting fetches.
struct Provider {
    doc: Mutex<Result<Value, String>>,
    fetches: AtomicUsize,
}

impl Provider {
    fn new(doc: Value) -> Self {
        Self {
            doc: Mutex::new(Ok(doc)),
            fetches: AtomicUsize::new(0),
        }
    }

    fn set(&self, doc: Result<Value, String>) {
        *self.doc.lock().unwrap() = doc;
    }

    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }

    fn validate(
        &self,
        cache: &JwksCache,
        token: &str,
        algs: &[String],
    ) -> Result<IdClaims, RpError> {
        let fetch = |uri: &str| {
            assert_eq!(uri, URI);
            self.fetches.fetch_add(1, Ordering::SeqCst);
            self.doc.lock().unwrap().clone()
        };
        cache.validate_with(&fetch, URI, token, &check(algs))
    }
}

fn algs(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn reason(r: Result<IdClaims, RpError>) -> &'static str {
    match r {
        Ok(c) => panic!("accepted: {c:?}"),
        Err(e) => {
            assert!(!e.to_string().contains(NONCE), "{e}");
            e.reason()
        }
    }
}

#[test]
fn valid_tokens_give_their_claims() {
    let (ec, rsa) = (TestKey::ec("ec-1"), TestKey::rsa("rsa-1"));
    let p = Provider::new(jwks(&[&ec, &rsa]));
    let cache = JwksCache::new(Duration::from_secs(30));
    let both = algs(&["RS256", "ES256"]);
    let c = p.validate(&cache, &ec.sign(&claims()), &both).unwrap();
    assert_eq!(c.sub, "u-1");
    assert_eq!(c.email.as_deref(), Some("ann@acme.com"));
    assert_eq!(c.email_verified, Some(true));
    assert_eq!(c.name.as_deref(), Some("Ann"));
    assert_eq!(c.given_name.as_deref(), Some("A"));
    assert_eq!(c.family_name.as_deref(), Some("N"));
    assert_eq!(c.claims["groups"], json!(["x"]));
    let c = p.validate(&cache, &rsa.sign(&claims()), &both).unwrap();
    assert_eq!(c.sub, "u-1");
    // The empty discovery list means RS256.
    p.validate(&cache, &rsa.sign(&claims()), &[]).unwrap();
    assert_eq!(p.fetches(), 1, "one fetch, then the cache");
    // email_verified as a string; a float exp.
    let c = p
        .validate(
            &cache,
            &ec.sign(&with(
                json!({"email_verified": "false", "exp": (NOW + 10) as f64 + 0.5}),
            )),
            &both,
        )
        .unwrap();
    assert_eq!(c.email_verified, Some(false));
    // No kid: the one key that fits the algorithm.
    let p = Provider::new(jwks(&[&ec]));
    let cache = JwksCache::new(Duration::from_secs(30));
    p.validate(&cache, &ec.sign_without_kid(&claims()), &both)
        .unwrap();
}

#[test]
fn signatures_and_algorithms() {
    let ec = TestKey::ec("k1");
    let impostor = TestKey::ec("k1");
    let p = Provider::new(jwks(&[&ec]));
    let cache = JwksCache::new(Duration::from_secs(30));
    let es = algs(&["ES256"]);
    assert_eq!(
        reason(p.validate(&cache, &impostor.sign(&claims()), &es)),
        "bad_signature"
    );
    // A payload swapped under a valid signature.
    let good = ec.sign(&claims());
    let other = ec.sign(&with(json!({"sub": "admin"})));
    let parts: Vec<&str> = good.split('.').collect();
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        other.split('.').nth(1).unwrap(),
        parts[2]
    );
    assert_eq!(reason(p.validate(&cache, &forged, &es)), "bad_signature");

    let b64 = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
    for none in ["none", "None", "NONE"] {
        let t = format!(
            "{}.{}.",
            b64(&json!({"alg": none, "kid": "k1"})),
            b64(&claims())
        );
        assert_eq!(
            reason(p.validate(&cache, &t, &algs(&["none", "ES256"]))),
            "alg_none"
        );
    }
    // Signed, but with an algorithm the discovery document does not list.
    assert_eq!(
        reason(p.validate(&cache, &good, &algs(&["RS256"]))),
        "alg_not_allowed"
    );
    assert_eq!(reason(p.validate(&cache, &good, &[])), "alg_not_allowed");
    // HS256 (e.g. keyed with the public key's bytes) is never accepted.
    let hs = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims(),
        &jsonwebtoken::EncodingKey::from_secret(b"public").unwrap(),
    )
    .unwrap();
    assert_eq!(
        reason(p.validate(&cache, &hs, &algs(&["HS256", "ES256"]))),
        "alg_not_allowed"
    );
    // A listed algorithm the key does not fit (an ES256 key for an RS256 header).
    let t = format!(
        "{}.{}.{}",
        b64(&json!({"alg": "RS256", "kid": "k1"})),
        parts[1],
        parts[2]
    );
    assert_eq!(
        reason(p.validate(&cache, &t, &algs(&["RS256", "ES256"]))),
        "unknown_kid"
    );

    for bad in [
        "",
        "abc",
        "a.b",
        "a.b.c.d.e",
        "!!.e30.x",
        "e30.e30.x",
        &"a".repeat(70_000),
    ] {
        assert_eq!(
            reason(p.validate(&cache, bad, &es)),
            "malformed_id_token",
            "{bad:.20}"
        );
    }
    let crit = format!(
        "{}.{}.{}",
        b64(&json!({"alg": "ES256", "kid": "k1", "crit": ["x"], "x": 1})),
        parts[1],
        parts[2]
    );
    assert_eq!(reason(p.validate(&cache, &crit, &es)), "malformed_id_token");
}

#[test]
fn issuer_audience_and_azp() {
    let k = TestKey::ec("k1");
    let p = Provider::new(jwks(&[&k]));
    let cache = JwksCache::new(Duration::from_secs(30));
    let es = algs(&["ES256"]);
    let run = |changes: Value| p.validate(&cache, &k.sign(&with(changes)), &es);
    assert_eq!(
        reason(run(json!({"iss": "https://evil.example"}))),
        "wrong_issuer"
    );
    assert_eq!(
        reason(run(json!({"iss": "https://idp.example/"}))),
        "wrong_issuer"
    );
    assert_eq!(reason(run(json!({"iss": [ISS, "x"]}))), "wrong_issuer");
    assert_eq!(reason(run(json!({"iss": null}))), "wrong_issuer");
    assert_eq!(reason(run(json!({"aud": "client-2"}))), "wrong_audience");
    assert_eq!(
        reason(run(json!({"aud": ["client-2", "client-3"]}))),
        "wrong_audience"
    );
    assert_eq!(reason(run(json!({"aud": null}))), "wrong_audience");
    // Several audiences: azp must name this client.
    assert_eq!(reason(run(json!({"aud": [CID, "other"]}))), "wrong_azp");
    assert_eq!(
        reason(run(json!({"aud": [CID, "other"], "azp": "other"}))),
        "wrong_azp"
    );
    run(json!({"aud": [CID, "other"], "azp": CID})).unwrap();
    run(json!({"aud": [CID]})).unwrap();
    assert_eq!(reason(run(json!({"azp": "other"}))), "wrong_azp");
    assert_eq!(reason(run(json!({"sub": null}))), "malformed_id_token");
    assert_eq!(reason(run(json!({"sub": ""}))), "malformed_id_token");
    let e = run(json!({"iss": "https://evil.example"})).unwrap_err();
    assert!(e.to_string().contains("evil.example"), "{e}");
}

#[test]
fn times_within_and_beyond_the_skew() {
    let k = TestKey::ec("k1");
    let p = Provider::new(jwks(&[&k]));
    let cache = JwksCache::new(Duration::from_secs(30));
    let es = algs(&["ES256"]);
    let run = |changes: Value| p.validate(&cache, &k.sign(&with(changes)), &es);
    let skew = SKEW as i64;
    // Expired, but within the skew; then beyond it.
    run(json!({"exp": NOW - skew + 1})).unwrap();
    assert_eq!(reason(run(json!({"exp": NOW - skew}))), "expired");
    assert_eq!(reason(run(json!({"exp": NOW - 3600}))), "expired");
    // Not yet valid.
    run(json!({"nbf": NOW + skew})).unwrap();
    assert_eq!(reason(run(json!({"nbf": NOW + skew + 1}))), "not_yet_valid");
    // Issued in the future.
    run(json!({"iat": NOW + skew})).unwrap();
    assert_eq!(
        reason(run(json!({"iat": NOW + skew + 1}))),
        "issued_in_future"
    );
    // Required, and numbers.
    assert_eq!(reason(run(json!({"exp": null}))), "malformed_id_token");
    assert_eq!(reason(run(json!({"iat": null}))), "malformed_id_token");
    assert_eq!(
        reason(run(json!({"iat": "yesterday"}))),
        "malformed_id_token"
    );
    assert_eq!(reason(run(json!({"nbf": "soon"}))), "malformed_id_token");
}

#[test]
fn the_nonce_must_be_this_sign_ins() {
    let k = TestKey::ec("k1");
    let p = Provider::new(jwks(&[&k]));
    let cache = JwksCache::new(Duration::from_secs(30));
    let es = algs(&["ES256"]);
    let run = |changes: Value| p.validate(&cache, &k.sign(&with(changes)), &es);
    assert_eq!(reason(run(json!({"nonce": "n-other"}))), "wrong_nonce");
    assert_eq!(
        reason(run(json!({"nonce": format!("{NONCE}x")}))),
        "wrong_nonce"
    );
    assert_eq!(reason(run(json!({"nonce": null}))), "wrong_nonce");
    assert_eq!(reason(run(json!({"nonce": 5}))), "wrong_nonce");
    // An empty expected nonce matches nothing, an empty claim included.
    let t = k.sign(&with(json!({"nonce": ""})));
    let fetch = |_: &str| Ok(jwks(&[&k]));
    let c = IdTokenCheck {
        nonce: "",
        ..check(&es)
    };
    assert_eq!(
        reason(cache.validate_with(&fetch, URI, &t, &c)),
        "wrong_nonce"
    );
}

#[test]
fn an_unknown_kid_refetches_once_then_the_rotated_key_verifies() {
    let (k1, k2, k3) = (TestKey::ec("k1"), TestKey::ec("k2"), TestKey::ec("k3"));
    let p = Provider::new(jwks(&[&k1]));
    let cache = JwksCache::new(Duration::ZERO);
    let es = algs(&["ES256"]);
    p.validate(&cache, &k1.sign(&claims()), &es).unwrap();
    assert_eq!(p.fetches(), 1);
    // The provider rotates to k2: one refetch, then it verifies (and is cached).
    p.set(Ok(jwks(&[&k2])));
    p.validate(&cache, &k2.sign(&claims()), &es).unwrap();
    assert_eq!(p.fetches(), 2);
    p.validate(&cache, &k2.sign(&claims()), &es).unwrap();
    assert_eq!(p.fetches(), 2);
    // A kid nowhere: exactly one refetch, then unknown_kid.
    assert_eq!(
        reason(p.validate(&cache, &k3.sign(&claims()), &es)),
        "unknown_kid"
    );
    assert_eq!(p.fetches(), 3);
    // The withdrawn k1 no longer verifies.
    assert_eq!(
        reason(p.validate(&cache, &k1.sign(&claims()), &es)),
        "unknown_kid"
    );
}

#[test]
fn refetches_are_rate_limited_per_uri() {
    let (k1, k2) = (TestKey::ec("k1"), TestKey::ec("k2"));
    let p = Provider::new(jwks(&[&k1]));
    let cache = JwksCache::new(Duration::from_secs(3600));
    let es = algs(&["ES256"]);
    p.validate(&cache, &k1.sign(&claims()), &es).unwrap();
    p.set(Ok(jwks(&[&k1, &k2])));
    for _ in 0..5 {
        assert_eq!(
            reason(p.validate(&cache, &k2.sign(&claims()), &es)),
            "unknown_kid"
        );
    }
    assert_eq!(p.fetches(), 1, "no refetch within min_refetch");
    p.validate(&cache, &k1.sign(&claims()), &es).unwrap();

    // A provider whose JWKS is down: temporary, and not hammered.
    let down = Provider::new(json!({}));
    down.set(Err("connection refused".into()));
    let cache = JwksCache::new(Duration::from_secs(3600));
    for _ in 0..3 {
        let e = down.validate(&cache, &k1.sign(&claims()), &es).unwrap_err();
        assert_eq!(
            (e.reason(), e.is_temporary()),
            ("jwks_unavailable", true),
            "{e}"
        );
    }
    assert_eq!(down.fetches(), 1);
    // Not a JWK set at all.
    let junk = Provider::new(json!({"keys": "no"}));
    let cache = JwksCache::new(Duration::ZERO);
    assert_eq!(
        reason(junk.validate(&cache, &k1.sign(&claims()), &es)),
        "jwks_unavailable"
    );
}

#[test]
fn keys_not_for_signing_or_for_another_alg_are_skipped() {
    let k = TestKey::ec("k1");
    let es = algs(&["ES256"]);
    let token = k.sign(&claims());
    let mut variants = Vec::new();
    for (field, value) in [
        ("use", json!("enc")),
        ("alg", json!("ES384")),
        ("key_ops", json!(["encrypt"])),
        ("crv", json!("P-384")),
    ] {
        let mut jwk = k.jwk.clone();
        jwk[field] = value;
        variants.push(jwk);
    }
    let mut oct = json!({"kty": "oct", "kid": "k1", "k": "c2VjcmV0"});
    variants.push(oct.take());
    for jwk in variants {
        let p = Provider::new(json!({ "keys": [jwk.clone(), {"kty": "weird"}] }));
        let cache = JwksCache::new(Duration::ZERO);
        assert_eq!(
            reason(p.validate(&cache, &token, &es)),
            "unknown_kid",
            "{jwk}"
        );
    }
    // Without `use` (optional in RFC 7517) a key is usable.
    let mut jwk = k.jwk.clone();
    jwk.as_object_mut().unwrap().remove("use");
    let p = Provider::new(json!({ "keys": [{"kty": "weird"}, jwk] }));
    p.validate(&JwksCache::new(Duration::ZERO), &token, &es)
        .unwrap();
}

#[test]
fn the_jwks_is_fetched_through_the_outbound_client() {
    let k = TestKey::rsa("r1");
    let doc = jwks(&[&k]).to_string();
    let stub = Stub::start(move |req| match req.path.as_str() {
        "/jwks" => Reply::json(200, &doc),
        _ => Reply::json(500, "{}"),
    });
    let cache = JwksCache::new(Duration::from_secs(30));
    let rs = algs(&["RS256"]);
    let c = cache
        .validate(
            &outbound(),
            &stub.url("/jwks"),
            &k.sign(&claims()),
            &check(&rs),
        )
        .unwrap();
    assert_eq!(c.sub, "u-1");
    let e = cache
        .validate(
            &outbound(),
            &stub.url("/down"),
            &k.sign(&claims()),
            &check(&rs),
        )
        .unwrap_err();
    assert_eq!(
        (e.reason(), e.is_temporary()),
        ("jwks_unavailable", true),
        "{e}"
    );
    assert_eq!(stub.requests().len(), 2);
}

#[test]
fn the_cache_is_shared_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<JwksCache>();
    let k = TestKey::ec("k1");
    let p = Provider::new(jwks(&[&k]));
    let cache = JwksCache::new(Duration::from_secs(30));
    let token = k.sign(&claims());
    let es = algs(&["ES256"]);
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| p.validate(&cache, &token, &es).unwrap());
        }
    });
    assert_eq!(p.fetches(), 1, "concurrent first uses fetch once");
}
