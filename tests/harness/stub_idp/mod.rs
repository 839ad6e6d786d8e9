//! A stub OpenID Provider on loopback for the sign-in broker's tests, built on
//! [`super::stub_http`]: a discovery document a test can change, a JWK set of
//! keys generated at start (rotatable at run time), an authorization endpoint
//! that records the request and answers at once (302 back with `code` and
//! `state`, or `error=access_denied`), a token endpoint that checks what a real
//! provider checks (client credentials by basic or post, the code once, the
//! `redirect_uri`, the PKCE verifier against the recorded S256 challenge) and
//! answers an ID token built from per-test knobs (claims overrides, and how it is
//! signed: the right key, another key, `alg: none`, an algorithm the document
//! does not list, a `kid` the JWK set does not have), or hangs; and a userinfo
//! endpoint. Everything it receives is recorded, so a test can tell what the
//! broker sent and that a refused sign-in never got as far as the provider.
//!
//! Keys are ECDSA (P-256 for ES256, and one P-384 key for ES384, the "algorithm
//! not listed") generated with `rcgen`, signed with `jsonwebtoken`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use jsonwebtoken::Algorithm;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use super::stub_http::{Recorded, Reply, Stub};

mod keys;
use keys::Key;

pub const WELL_KNOWN: &str = "/.well-known/openid-configuration";
/// The broker's client at this provider (what the enterprise domain's config holds).
pub const CLIENT_ID: &str = "stub-idp-client";
pub const CLIENT_SECRET: &str = "stub-idp-client-secret-0123456789";
/// The user the provider signs in by default.
pub const SUB: &str = "stub-user-0001";
pub const EMAIL: &str = "alice@acme.com";

/// Seconds since the epoch.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn random_hex(bytes: usize) -> String {
    (0..bytes)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect()
}

/// How the token endpoint signs the ID token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signing {
    /// The current key of the JWK set, ES256.
    Good,
    /// Another P-256 key, with the current key's `kid`: a bad signature.
    OtherKey,
    /// `alg: none`, no signature (the current `kid` in the header).
    AlgNone,
    /// ES384 by a P-384 key the JWK set does publish, while the document lists ES256 only.
    UnlistedAlg,
    /// A P-256 key whose `kid` the JWK set never has.
    UnknownKid,
    /// HS256 with the client secret as the key (what OIDC allows for HS*, and
    /// what a broker that verifies with keys of the JWK set must never accept).
    Hs256ClientSecret,
}

/// What the authorization endpoint does with a well-formed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// 302 to `redirect_uri` with a code and the state.
    Code,
    /// 302 to `redirect_uri` with `error=access_denied`, this description and the state.
    Deny(String),
}

/// The `iss` parameter (RFC 9207) on the authorization response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IssParam {
    Omit,
    /// The issuer.
    Issuer,
    /// Another value.
    Wrong(String),
}

/// Which client authentication the token endpoint accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    Basic,
    Post,
    Either,
}

/// One authorization request, as the provider received it.
#[derive(Debug, Clone, Default)]
pub struct AuthorizeRequest {
    pub query: Vec<(String, String)>,
}

impl AuthorizeRequest {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One token request and what the provider made of it (`"ok"` or the reason).
#[derive(Debug, Clone)]
pub struct TokenRequest {
    /// `"basic"`, `"post"`, `"both"` or `"none"`.
    pub auth: &'static str,
    pub form: Vec<(String, String)>,
    pub outcome: String,
}

impl TokenRequest {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.form
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

struct Issued {
    request: AuthorizeRequest,
    used: bool,
}

/// Everything a test can turn, and everything the provider saw.
pub struct Knobs {
    pub doc: Value,
    pub signing: Signing,
    /// Merged over the default claims; `null` removes a claim.
    pub claims: Map<String, Value>,
    /// Merged over the default userinfo answer (`sub`, `email`, ...); `null` removes.
    pub userinfo: Map<String, Value>,
    pub answer: Answer,
    pub iss: IssParam,
    pub auth: Auth,
    /// The token endpoint reads the request, then says nothing for this long.
    pub hang: Option<Duration>,
    /// The token endpoint answers this (status, JSON body) instead of a token.
    pub token_error: Option<(u16, String)>,
    /// Codes may be exchanged more than once (a provider that does not enforce
    /// one-time codes: what the broker guarantees must not rest on it).
    pub reusable_codes: bool,
    /// The userinfo endpoint answers this status (and an error) instead.
    pub userinfo_status: Option<u16>,
    keys: Vec<Key>,
    /// Index in `keys` of the key that signs (`Signing::Good`).
    current: usize,
    /// Published in the JWK set (indices in `keys`).
    published: Vec<usize>,
    other: Key,
    stray: Key,
    es384: Key,
    codes: HashMap<String, Issued>,
    access_tokens: HashMap<String, String>,
    pub authorizes: Vec<AuthorizeRequest>,
    pub tokens: Vec<TokenRequest>,
}

/// The stub provider; stops when dropped.
pub struct StubIdp {
    pub stub: Stub,
    knobs: Arc<Mutex<Knobs>>,
}

impl StubIdp {
    pub fn start() -> Self {
        let es384 = Key::generate("es384-key", Algorithm::ES384);
        let knobs = Arc::new(Mutex::new(Knobs {
            doc: Value::Null,
            signing: Signing::Good,
            claims: Map::new(),
            userinfo: Map::new(),
            answer: Answer::Code,
            iss: IssParam::Omit,
            auth: Auth::Either,
            hang: None,
            token_error: None,
            reusable_codes: false,
            userinfo_status: None,
            keys: vec![Key::generate("key-1", Algorithm::ES256)],
            current: 0,
            published: vec![0],
            other: Key::generate("other-key", Algorithm::ES256),
            stray: Key::generate("stray-key", Algorithm::ES256),
            es384,
            codes: HashMap::new(),
            access_tokens: HashMap::new(),
            authorizes: Vec::new(),
            tokens: Vec::new(),
        }));
        let served = knobs.clone();
        let stub = Stub::start("127.0.0.1", move |r| {
            let (path, query) = r.path.split_once('?').unwrap_or((r.path.as_str(), ""));
            let mut k = served.lock().unwrap();
            match path {
                WELL_KNOWN => Reply::Json(200, k.doc.to_string()),
                "/jwks" => Reply::Json(200, k.jwks().to_string()),
                "/authorize" => k.authorize(query),
                "/token" => {
                    if let Some(d) = k.hang {
                        k.tokens.push(TokenRequest {
                            auth: "none",
                            form: parse_form(&r.body),
                            outcome: "hung".into(),
                        });
                        drop(k);
                        return Reply::Silence(d);
                    }
                    k.token(r)
                }
                "/userinfo" => k.userinfo_answer(r),
                _ => Reply::text(404, "text/html", "not found"),
            }
        });
        let o = stub.origin();
        knobs.lock().unwrap().doc = json!({
            "issuer": o,
            "authorization_endpoint": format!("{o}/authorize"),
            "token_endpoint": format!("{o}/token"),
            "userinfo_endpoint": format!("{o}/userinfo"),
            "jwks_uri": format!("{o}/jwks"),
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["ES256"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "code_challenge_methods_supported": ["S256"],
            "scopes_supported": ["openid", "email", "profile"],
        });
        Self { stub, knobs }
    }

    /// The knobs, locked: `idp.knobs().signing = Signing::AlgNone;`.
    pub fn knobs(&self) -> MutexGuard<'_, Knobs> {
        self.knobs.lock().unwrap()
    }

    pub fn issuer(&self) -> String {
        self.stub.origin()
    }

    pub fn origin(&self) -> String {
        self.stub.origin()
    }

    pub fn discovery_url(&self) -> String {
        self.stub.url(WELL_KNOWN)
    }

    /// Set (or with `null`, remove) a field of the discovery document.
    pub fn set_doc(&self, key: &str, value: Value) {
        let mut k = self.knobs();
        match value {
            Value::Null => {
                if let Some(o) = k.doc.as_object_mut() {
                    o.remove(key);
                }
            }
            v => k.doc[key] = v,
        }
    }

    /// Override claims of the ID tokens to come (`null` removes one).
    pub fn claims(&self, overrides: Value) {
        let mut k = self.knobs();
        if let Value::Object(o) = overrides {
            k.claims.extend(o);
        }
    }

    pub fn userinfo(&self, overrides: Value) {
        let mut k = self.knobs();
        if let Value::Object(o) = overrides {
            k.userinfo.extend(o);
        }
    }

    pub fn signing(&self, s: Signing) {
        self.knobs().signing = s;
    }

    /// Advertise RFC 9207 and send `iss` as given.
    pub fn iss_param(&self, iss: IssParam) {
        self.set_doc(
            "authorization_response_iss_parameter_supported",
            json!(iss != IssParam::Omit),
        );
        self.knobs().iss = iss;
    }

    /// The token endpoint takes only `client_secret_post`, and the document says so.
    pub fn post_only(&self) {
        self.set_doc(
            "token_endpoint_auth_methods_supported",
            json!(["client_secret_post"]),
        );
        self.knobs().auth = Auth::Post;
    }

    /// A new signing key with a new `kid` replaces the current one in the JWK
    /// set (the old one is withdrawn). Returns the new `kid`.
    pub fn rotate(&self) -> String {
        let mut k = self.knobs();
        let kid = format!("key-{}", k.keys.len() + 1);
        k.keys.push(Key::generate(&kid, Algorithm::ES256));
        let i = k.keys.len() - 1;
        k.current = i;
        k.published = vec![i];
        kid
    }

    /// The current signing key's `kid`.
    pub fn kid(&self) -> String {
        let k = self.knobs();
        k.keys[k.current].kid.clone()
    }

    pub fn authorizes(&self) -> Vec<AuthorizeRequest> {
        self.knobs().authorizes.clone()
    }

    pub fn last_authorize(&self) -> AuthorizeRequest {
        self.authorizes()
            .pop()
            .expect("the provider got no authorization request")
    }

    pub fn tokens(&self) -> Vec<TokenRequest> {
        self.knobs().tokens.clone()
    }

    /// Requests to a path (`/jwks`, `/token`, `/userinfo`, ...).
    pub fn hits(&self, path: &str) -> usize {
        self.stub
            .requests()
            .iter()
            .filter(|r| r.path.split('?').next() == Some(path))
            .count()
    }
}

pub fn parse_form(body: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

fn oauth_error(status: u16, error: &str, description: &str) -> Reply {
    Reply::Json(
        status,
        json!({"error": error, "error_description": description}).to_string(),
    )
}

pub fn s256(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// `base` with these parameters added to its query.
fn with_params(base: &str, params: &[(&str, &str)]) -> Option<String> {
    let mut url = url::Url::parse(base).ok()?;
    {
        let mut q = url.query_pairs_mut();
        for (n, v) in params {
            q.append_pair(n, v);
        }
    }
    Some(url.into())
}

impl Knobs {
    fn issuer(&self) -> String {
        self.doc["issuer"].as_str().unwrap_or_default().to_owned()
    }

    fn jwks(&self) -> Value {
        let mut keys: Vec<Value> = self
            .published
            .iter()
            .map(|&i| self.keys[i].jwk.clone())
            .collect();
        keys.push(self.es384.jwk.clone());
        json!({ "keys": keys })
    }

    fn authorize(&mut self, query: &str) -> Reply {
        let request = AuthorizeRequest {
            query: parse_form(query.as_bytes()),
        };
        self.authorizes.push(request.clone());
        let (Some(redirect_uri), Some(CLIENT_ID)) =
            (request.get("redirect_uri"), request.get("client_id"))
        else {
            return Reply::text(
                400,
                "text/html",
                "<h1>unknown client or no redirect_uri</h1>",
            );
        };
        let state = request.get("state").unwrap_or_default().to_owned();
        let mut params: Vec<(&str, String)> = Vec::new();
        match &self.answer {
            Answer::Code => {
                let code = format!("stubcode-{}", random_hex(16));
                params.push(("code", code.clone()));
                self.codes.insert(
                    code,
                    Issued {
                        request: request.clone(),
                        used: false,
                    },
                );
            }
            Answer::Deny(description) => {
                params.push(("error", "access_denied".into()));
                params.push(("error_description", description.clone()));
            }
        }
        params.push(("state", state));
        match &self.iss {
            IssParam::Omit => {}
            IssParam::Issuer => params.push(("iss", self.issuer())),
            IssParam::Wrong(w) => params.push(("iss", w.clone())),
        }
        let borrowed: Vec<(&str, &str)> = params.iter().map(|(n, v)| (*n, v.as_str())).collect();
        match with_params(redirect_uri, &borrowed) {
            Some(location) => Reply::redirect(302, &location),
            None => Reply::text(400, "text/html", "<h1>bad redirect_uri</h1>"),
        }
    }

    /// The client the request authenticates as, or why not.
    fn client_auth(&self, r: &Recorded, form: &[(String, String)]) -> Result<&'static str, String> {
        let get = |n: &str| form.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
        let basic = r
            .header("authorization")
            .and_then(|h| h.strip_prefix("Basic "))
            .map(|b| {
                let raw = STANDARD.decode(b.trim()).unwrap_or_default();
                let text = String::from_utf8_lossy(&raw).into_owned();
                let (id, secret) = text.split_once(':').unwrap_or((&text, ""));
                // RFC 6749 §2.3.1: both form-urlencoded before the base64.
                let dec = |s: &str| {
                    url::form_urlencoded::parse(format!("v={s}").as_bytes())
                        .next()
                        .map(|(_, v)| v.into_owned())
                        .unwrap_or_default()
                };
                (dec(id), dec(secret))
            });
        let post = get("client_secret").map(|s| (get("client_id").unwrap_or_default(), s));
        let (how, id, secret) = match (basic, post) {
            (Some(_), Some(_)) => return Err("both basic and post credentials".into()),
            (Some((id, s)), None) => ("basic", id, s),
            (None, Some((id, s))) => ("post", id.to_owned(), s.to_owned()),
            (None, None) => return Err("no client credentials".into()),
        };
        let allowed = match self.auth {
            Auth::Either => true,
            Auth::Basic => how == "basic",
            Auth::Post => how == "post",
        };
        if !allowed {
            return Err(format!("{how} authentication is not accepted"));
        }
        if id != CLIENT_ID || secret != CLIENT_SECRET {
            return Err(format!("wrong client credentials by {how}"));
        }
        Ok(how)
    }

    fn token(&mut self, r: &Recorded) -> Reply {
        let form = parse_form(&r.body);
        let outcome = self.check_token_request(r, &form);
        let auth = self.client_auth(r, &form).unwrap_or("none");
        let reply = match &outcome {
            Ok(issued) => match self.token_error.clone() {
                Some((status, body)) => Reply::Json(status, body),
                None => {
                    let id_token = self.id_token(issued.get("nonce"));
                    let access = format!("stub-at-{}", random_hex(16));
                    let sub = self
                        .claims
                        .get("sub")
                        .and_then(Value::as_str)
                        .unwrap_or(SUB)
                        .to_owned();
                    self.access_tokens.insert(access.clone(), sub);
                    Reply::Json(
                        200,
                        json!({
                            "access_token": access,
                            "token_type": "Bearer",
                            "expires_in": 300,
                            "id_token": id_token,
                        })
                        .to_string(),
                    )
                }
            },
            Err((status, error, why)) => oauth_error(*status, error, why),
        };
        self.tokens.push(TokenRequest {
            auth,
            form,
            outcome: match outcome {
                Ok(_) => "ok".into(),
                Err((_, _, why)) => why,
            },
        });
        reply
    }

    /// The authorization request of the code, or (status, error, why).
    fn check_token_request(
        &mut self,
        r: &Recorded,
        form: &[(String, String)],
    ) -> Result<AuthorizeRequest, (u16, &'static str, String)> {
        let get = |n: &str| form.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
        self.client_auth(r, form)
            .map_err(|why| (401, "invalid_client", why))?;
        if get("grant_type") != Some("authorization_code") {
            return Err((400, "unsupported_grant_type", "grant_type".into()));
        }
        let code = get("code").unwrap_or_default();
        let issued =
            self.codes
                .get_mut(code)
                .ok_or((400, "invalid_grant", "unknown code".to_owned()))?;
        if issued.used && !self.reusable_codes {
            return Err((400, "invalid_grant", "code already used".into()));
        }
        issued.used = true;
        let request = issued.request.clone();
        if get("redirect_uri") != request.get("redirect_uri") {
            return Err((400, "invalid_grant", "redirect_uri differs".into()));
        }
        match (request.get("code_challenge"), get("code_verifier")) {
            (None, None) => {}
            (Some(c), Some(v)) if s256(v) == c => {}
            (Some(_), Some(_)) => {
                return Err((400, "invalid_grant", "code_verifier does not match".into()))
            }
            (Some(_), None) => return Err((400, "invalid_grant", "no code_verifier".into())),
            (None, Some(_)) => {
                return Err((
                    400,
                    "invalid_grant",
                    "code_verifier without challenge".into(),
                ))
            }
        }
        Ok(request)
    }

    fn userinfo_answer(&self, r: &Recorded) -> Reply {
        let token = r
            .header("authorization")
            .and_then(|h| h.strip_prefix("Bearer "))
            .unwrap_or_default();
        let Some(sub) = self.access_tokens.get(token.trim()) else {
            return Reply::Json(401, r#"{"error":"invalid_token"}"#.into());
        };
        if let Some(status) = self.userinfo_status {
            return Reply::Json(status, r#"{"error":"server_error"}"#.into());
        }
        let mut answer = json!({
            "sub": sub,
            "email": EMAIL,
            "email_verified": true,
            "name": "Alice Example",
        });
        if let Value::Object(map) = &mut answer {
            for (name, v) in &self.userinfo {
                if v.is_null() {
                    map.remove(name);
                } else {
                    map.insert(name.clone(), v.clone());
                }
            }
        }
        Reply::Json(200, answer.to_string())
    }
}

#[cfg(test)]
mod tests;
