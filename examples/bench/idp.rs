//! The sign-in benchmark's stub identity provider: just enough OpenID Connect for
//! the broker's authorization-code flow, as cheap as it can honestly be, so that
//! what the benchmark measures is the broker.
//!
//! It runs as its own process (`bench signin-idp ...`, started by `bench signin`)
//! so that its CPU can be read from `/proc/<pid>/stat` apart from the driver's.
//! actix-web, one worker per core (as oidcvault and the HTTP ceiling). One EC
//! P-256 key, generated at start (rcgen), signs every ID token (ES256, jsonwebtoken).
//!
//! - `GET /.well-known/openid-configuration`: the discovery document.
//! - `GET /jwks`: the public key.
//! - `GET /authorize`: no login page; checks the request (client id, response
//!   type, redirect URI, state, nonce, PKCE S256) and answers 302 straight back
//!   to `redirect_uri` with a one-time code, the `state` and `iss` (RFC 9207,
//!   advertised). The user is the `login_hint` when it is an address in the
//!   domain, else `user@<domain>`.
//! - `POST /token`: client_secret_basic only; the code once (60 s), its
//!   redirect URI, the PKCE verifier; answers an ID token (iss, aud = client id,
//!   sub, email in the domain, email_verified true, nonce, iat, exp) and an
//!   access token.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use jsonwebtoken::jwk::{Jwk, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rand::RngCore as _;
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

pub const WELL_KNOWN: &str = "/.well-known/openid-configuration";
pub const KID: &str = "bench-es256-1";
const CODE_TTL: Duration = Duration::from_secs(60);

/// 32 random bytes, base64url (codes, states, nonces, verifiers).
pub fn random_value() -> String {
    let mut b = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut b);
    URL_SAFE_NO_PAD.encode(b)
}

/// RFC 7636 S256.
pub fn s256(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// `Authorization: Basic` value for a client (RFC 6749 §2.3.1: each part
/// form-urlencoded first).
pub fn basic(client_id: &str, secret: &str) -> String {
    format!(
        "Basic {}",
        STANDARD.encode(format!(
            "{}:{}",
            form_encode(client_id),
            form_encode(secret)
        ))
    )
}

pub fn form_encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn form_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// Seconds since the epoch.
pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The signing key and what the provider publishes about it.
pub struct Keys {
    encoding: EncodingKey,
    /// `{"keys": [...]}`
    pub jwks: String,
}

impl Keys {
    /// A fresh P-256 key (rcgen's default algorithm: ECDSA P-256 SHA-256).
    pub fn generate() -> Result<Self, String> {
        let pair = rcgen::KeyPair::generate().map_err(|e| format!("rcgen: {e}"))?;
        let encoding = EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes())
            .map_err(|e| format!("EC key: {e}"))?;
        let mut jwk =
            Jwk::from_encoding_key(&encoding, Algorithm::ES256).map_err(|e| format!("JWK: {e}"))?;
        jwk.common.key_id = Some(KID.to_owned());
        jwk.common.public_key_use = Some(PublicKeyUse::Signature);
        let jwks = serde_json::to_string(&JwkSet { keys: vec![jwk] }).map_err(|e| e.to_string())?;
        Ok(Self { encoding, jwks })
    }

    /// An ES256 JWS of `claims`, with the key's `kid`.
    pub fn sign(&self, claims: &Value) -> Result<String, String> {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(KID.to_owned());
        jsonwebtoken::encode(&header, claims, &self.encoding).map_err(|e| format!("sign: {e}"))
    }
}

/// What the provider is told at start.
pub struct Settings {
    pub client_id: String,
    pub client_secret: String,
    /// The e-mail domain of its users.
    pub domain: String,
}

struct Grant {
    client_id: String,
    redirect_uri: String,
    nonce: String,
    code_challenge: Option<String>,
    email: String,
    expires: Instant,
}

struct Idp {
    issuer: String,
    discovery: String,
    keys: Keys,
    settings: Settings,
    codes: Mutex<HashMap<String, Grant>>,
}

/// The discovery document of a provider whose issuer is `issuer`.
pub fn discovery_document(issuer: &str) -> Value {
    json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/authorize"),
        "token_endpoint": format!("{issuer}/token"),
        "jwks_uri": format!("{issuer}/jwks"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic"],
        "code_challenge_methods_supported": ["S256"],
        "scopes_supported": ["openid", "email", "profile"],
        "authorization_response_iss_parameter_supported": true,
    })
}

fn bad(status: u16, error: &str, description: &str) -> HttpResponse {
    let code = actix_web::http::StatusCode::from_u16(status)
        .unwrap_or(actix_web::http::StatusCode::BAD_REQUEST);
    HttpResponse::build(code)
        .insert_header(("Cache-Control", "no-store"))
        .json(json!({"error": error, "error_description": description}))
}

async fn discovery(idp: web::Data<Idp>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(idp.discovery.clone())
}

async fn jwks(idp: web::Data<Idp>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(idp.keys.jwks.clone())
}

async fn authorize(idp: web::Data<Idp>, q: web::Query<HashMap<String, String>>) -> HttpResponse {
    let get = |k: &str| q.get(k).map(String::as_str).unwrap_or("");
    if get("client_id") != idp.settings.client_id {
        return bad(400, "invalid_request", "unknown client_id");
    }
    let redirect_uri = get("redirect_uri");
    let Ok(mut target) = url::Url::parse(redirect_uri) else {
        return bad(400, "invalid_request", "redirect_uri is not a URL");
    };
    if get("response_type") != "code" {
        return bad(
            400,
            "unsupported_response_type",
            "response_type must be code",
        );
    }
    if !get("scope").split(' ').any(|s| s == "openid") {
        return bad(400, "invalid_scope", "scope has no openid");
    }
    if get("state").is_empty() || get("nonce").is_empty() {
        return bad(400, "invalid_request", "state and nonce are required");
    }
    let code_challenge = match (q.get("code_challenge"), get("code_challenge_method")) {
        (None, _) => None,
        (Some(c), "S256") => Some(c.clone()),
        (Some(_), _) => return bad(400, "invalid_request", "code_challenge_method must be S256"),
    };
    let hint = get("login_hint").to_ascii_lowercase();
    let email = match hint.rsplit_once('@') {
        Some((local, d)) if !local.is_empty() && d == idp.settings.domain => hint.clone(),
        _ => format!("user@{}", idp.settings.domain),
    };
    let code = random_value();
    let grant = Grant {
        client_id: idp.settings.client_id.clone(),
        redirect_uri: redirect_uri.to_owned(),
        nonce: get("nonce").to_owned(),
        code_challenge,
        email,
        expires: Instant::now() + CODE_TTL,
    };
    {
        let mut codes = idp.codes.lock().unwrap_or_else(|p| p.into_inner());
        // Codes never redeemed (a failed sign-in) go when they expire.
        if codes.len() > 10_000 {
            let now = Instant::now();
            codes.retain(|_, g| g.expires > now);
        }
        codes.insert(code.clone(), grant);
    }
    target
        .query_pairs_mut()
        .append_pair("code", &code)
        .append_pair("state", get("state"))
        .append_pair("iss", &idp.issuer);
    HttpResponse::Found()
        .insert_header(("Location", target.as_str()))
        .insert_header(("Cache-Control", "no-store"))
        .finish()
}

/// (client_id, secret) of an `Authorization: Basic` header.
fn basic_credentials(req: &HttpRequest) -> Option<(String, String)> {
    let value = req.headers().get("Authorization")?.to_str().ok()?;
    let (scheme, b64) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = String::from_utf8(STANDARD.decode(b64.trim()).ok()?).ok()?;
    let (id, secret) = raw.split_once(':')?;
    Some((form_decode(id), form_decode(secret)))
}

async fn token(
    idp: web::Data<Idp>,
    req: HttpRequest,
    form: web::Form<HashMap<String, String>>,
) -> HttpResponse {
    let s = &idp.settings;
    match basic_credentials(&req) {
        Some((id, secret)) if id == s.client_id && secret == s.client_secret => {}
        _ => {
            return HttpResponse::Unauthorized()
                .insert_header(("WWW-Authenticate", "Basic realm=\"stub-idp\""))
                .json(json!({"error": "invalid_client"}))
        }
    }
    let get = |k: &str| form.get(k).map(String::as_str).unwrap_or("");
    if get("grant_type") != "authorization_code" {
        return bad(400, "unsupported_grant_type", "authorization_code only");
    }
    let grant = idp
        .codes
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(get("code"));
    let Some(grant) = grant else {
        return bad(400, "invalid_grant", "unknown or used code");
    };
    if grant.expires < Instant::now() || grant.client_id != s.client_id {
        return bad(400, "invalid_grant", "expired code");
    }
    if grant.redirect_uri != get("redirect_uri") {
        return bad(400, "invalid_grant", "redirect_uri differs");
    }
    if let Some(challenge) = &grant.code_challenge {
        if s256(get("code_verifier")) != *challenge {
            return bad(400, "invalid_grant", "wrong code_verifier");
        }
    }
    let now = now_secs();
    let local = grant.email.split('@').next().unwrap_or("user");
    let claims = json!({
        "iss": idp.issuer,
        "aud": s.client_id,
        "sub": format!("sub-{local}"),
        "email": grant.email,
        "email_verified": true,
        "name": format!("Bench {local}"),
        "given_name": "Bench",
        "family_name": local,
        "nonce": grant.nonce,
        "iat": now,
        "exp": now + 600,
    });
    match idp.keys.sign(&claims) {
        Ok(id_token) => HttpResponse::Ok()
            .insert_header(("Cache-Control", "no-store"))
            .json(json!({
                "access_token": random_value(),
                "token_type": "Bearer",
                "expires_in": 600,
                "id_token": id_token,
            })),
        Err(e) => bad(500, "server_error", &e),
    }
}

/// `bench signin-idp`: serve until killed. Prints `listening on http://ADDR`.
pub fn serve(settings: Settings, workers: usize) -> Result<(), String> {
    let keys = Keys::generate()?;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let issuer = format!("http://{addr}");
    let idp = web::Data::new(Idp {
        discovery: discovery_document(&issuer).to_string(),
        issuer,
        keys,
        settings,
        codes: Mutex::new(HashMap::new()),
    });
    actix_web::rt::System::new()
        .block_on(async move {
            let mut server = HttpServer::new(move || {
                App::new()
                    .app_data(idp.clone())
                    .route(WELL_KNOWN, web::get().to(discovery))
                    .route("/jwks", web::get().to(jwks))
                    .route("/authorize", web::get().to(authorize))
                    .route("/token", web::post().to(token))
            })
            .backlog(1024)
            .listen(listener)?;
            if workers > 0 {
                server = server.workers(workers);
            }
            eprintln!("listening on http://{addr}");
            server.run().await
        })
        .map_err(|e| format!("stub IdP: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{DecodingKey, Validation};

    /// A token the stub signs verifies against the JWKS it publishes (what the
    /// broker does), and a token with a changed claim does not.
    #[test]
    fn signed_tokens_verify_against_the_published_jwks() {
        let keys = Keys::generate().unwrap();
        let now = now_secs();
        let claims = json!({"iss": "http://idp", "aud": "c", "sub": "s", "nonce": "n",
                            "email": "a@example.com", "email_verified": true,
                            "iat": now, "exp": now + 60});
        let token = keys.sign(&claims).unwrap();
        let set: JwkSet = serde_json::from_str(&keys.jwks).unwrap();
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.alg, Algorithm::ES256);
        let jwk = set.find(header.kid.as_deref().unwrap()).unwrap();
        let mut v = Validation::new(Algorithm::ES256);
        v.set_audience(&["c"]);
        v.set_issuer(&["http://idp"]);
        let data = jsonwebtoken::decode::<Value>(&token, &DecodingKey::from_jwk(jwk).unwrap(), &v)
            .unwrap();
        assert_eq!(data.claims["nonce"], "n");
        let mut parts: Vec<&str> = token.split('.').collect();
        let other = URL_SAFE_NO_PAD.encode(
            serde_json::to_vec(&json!({"iss": "http://idp", "aud": "c", "sub": "x",
                                       "iat": now, "exp": now + 60}))
            .unwrap(),
        );
        parts[1] = &other;
        let forged = parts.join(".");
        assert!(
            jsonwebtoken::decode::<Value>(&forged, &DecodingKey::from_jwk(jwk).unwrap(), &v)
                .is_err()
        );
    }

    #[test]
    fn basic_credentials_round_trip() {
        let req = actix_web::test::TestRequest::default()
            .insert_header(("Authorization", basic("ova_a-b", "s:e c/r+t")))
            .to_http_request();
        assert_eq!(
            basic_credentials(&req),
            Some(("ova_a-b".into(), "s:e c/r+t".into()))
        );
    }

    #[test]
    fn s256_matches_rfc_7636_appendix_b() {
        assert_eq!(
            s256("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }
}
