//! The sign-in broker's part of the OpenAPI document (`api::sso`): the three
//! browser/application routes under `/sso/` (no bearer token: a browser, or an
//! application with its client credentials), and the two admin routes.
//!
//! The browser routes answer redirects and HTML pages, which a JSON Schema
//! says little about: the `302` and its `Location`, and the page's status and
//! media type, are what the fuzzer can hold the server to.

use serde_json::{json, Map, Value};

use super::super::sso::{AUTHORIZE, CALLBACK, SIGN_IN_TEST, SSO_INFO, TOKEN};
use super::super::DOMAIN_HEADER;
use super::{error_response, json_body, ok_json, op, validation_response, DOMAIN_NAME_PATTERN};

/// The headers every broker answer carries (`api::sso::private`).
fn no_store() -> Value {
    json!({"Cache-Control": {"description": "`no-store`: codes, states and profiles are never cached.",
        "required": true, "schema": {"const": "no-store"}}})
}

fn set_cookie() -> Value {
    json!({"description": "The browser-binding cookie: `oidcvault_sso` (`__Host-oidcvault_sso`, \
        `Secure`, when `server.public_url` is https), `HttpOnly`, `SameSite=Lax`, `Path=/`, \
        `Max-Age` = `sso.transaction_ttl_secs`. The callback must come back to the browser \
        that holds it (login CSRF).",
        "schema": {"type": "string"}})
}

/// An HTML page of the browser routes (`<h1>Sign-in failed</h1>` and a reason).
fn page(description: &str) -> Value {
    json!({"description": description, "headers": no_store(),
        "content": {"text/html": {"schema": {"type": "string"}}}})
}

fn found(description: &str, with_cookie: bool) -> Value {
    let mut headers = json!({"Location": {"description": "Where the browser goes next.",
        "required": true, "schema": {"type": "string", "format": "uri"}}});
    if with_cookie {
        headers["Set-Cookie"] = set_cookie();
    }
    if let (Some(h), Some(extra)) = (headers.as_object_mut(), no_store().as_object()) {
        h.extend(extra.clone());
    }
    json!({"description": description, "headers": headers})
}

fn too_large_head() -> Value {
    error_response("Request headers larger than limits.max_header_bytes.")
}

fn query(name: &str, required: bool, description: &str, schema: Value) -> Value {
    json!({"name": name, "in": "query", "required": required, "description": description,
        "schema": schema})
}

fn authorize() -> Value {
    json!({
        "operationId": "sso-authorize",
        "summary": "Start an enterprise user's sign-in (the application sends the browser here)",
        "description": "The application (registered with `POST /api/v1/admin/apps/`) and its `redirect_uri` are checked first: an unknown `client_id` or a `redirect_uri` that is not registered exactly is a 400 page, never a redirect. After that every error goes back to the `redirect_uri` with `error` (`invalid_request`, `server_error`, `temporarily_unavailable`), `error_description` and the application's `state`. The enterprise domain is `domain`, or the part after `@` of `login_hint` (which is passed on to the identity provider). On success: a login transaction (IdP `state`, `nonce`, PKCE S256) bound to the browser by a cookie, and a 302 to the domain's authorization endpoint with `redirect_uri = <server.public_url>/sso/callback`. Each parameter at most once. Sign-ins started per client address are limited (`sso.authorize_per_address_per_minute`), and so are pending ones (`sso.max_pending_transactions`).",
        "security": [],
        "parameters": [
            query("client_id", true, "The application's client id.",
                json!({"type": "string", "minLength": 1, "example": "ova_AAAAAAAAAAAAAAAAAAAAAA"})),
            query("redirect_uri", true, "One of the application's registered redirect URIs, character for character.",
                json!({"type": "string", "minLength": 1, "example": "https://billing.example.com/oidc/callback"})),
            query("state", false, "The application's own value, handed back with the code or the error (at most 1024 bytes).",
                json!({"type": "string", "maxLength": 1024})),
            query("domain", false, "The enterprise domain (or give `login_hint`).",
                json!({"type": "string", "pattern": DOMAIN_NAME_PATTERN, "maxLength": 253, "example": "acme.com"})),
            query("login_hint", false, "The user's e-mail address: names the domain when `domain` is absent, and is passed on to the identity provider.",
                json!({"type": "string", "example": "alice@acme.com"})),
            query("code_challenge", false, "PKCE (RFC 7636): the S256 challenge the application will prove at `/sso/token`.",
                json!({"type": "string", "pattern": "^[A-Za-z0-9_-]{43}$"})),
            query("code_challenge_method", false, "`S256` with `code_challenge` (`plain` is refused).",
                json!({"type": "string", "enum": ["S256"]})),
            query("response_type", false, "`code` if given.",
                json!({"type": "string", "enum": ["code"]})),
        ],
        "responses": {
            "302": found("To the identity provider (with the binding cookie), or back to the application's `redirect_uri` with `error`, `error_description` and `state`.", true),
            "400": page("An unknown application, a `redirect_uri` not registered for it, or a parameter given twice: a page, no redirect."),
            "431": too_large_head(),
            "500": page("The store could not be read: a page (the application is not known to be safe to redirect to)."),
        }
    })
}

fn callback() -> Value {
    json!({
        "operationId": "sso-callback",
        "summary": "The identity provider's redirect back (register `<server.public_url>/sso/callback` at the IdP)",
        "description": "Takes the login transaction of `state` exactly once, checks the browser's cookie, `iss` (RFC 9207) when the provider advertises it, exchanges the code at the domain's token endpoint (the one the client secret is bound to), validates the ID token (signature by the provider's JWKS, algorithm, `iss`, `aud`/`azp`, `exp`/`iat`/`nbf` within `sso.clock_skew_secs`, `nonce`), asks userinfo when the ID token has no e-mail, and requires the e-mail in the enterprise domain (and not `email_verified: false` unless `sso.allow_unverified_email`). Then a 302 to the application's `redirect_uri` with a one-time `code` (60 s) and its `state`; a refusal after the transaction is found goes back the same way with `error` (`access_denied`, `server_error`, `temporarily_unavailable`). A transaction started by the admin page's \"Try sign-in\" ends on a 200 result page instead (`<h1>Sign-in test: succeeded|failed</h1>`, `<table id=\"checks\">`, `<pre id=\"profile\">`), and mints no code. Every outcome is audited as `sso.login`.",
        "security": [],
        "parameters": [
            query("state", true, "The IdP `state` the sign-in was started with.", json!({"type": "string", "minLength": 1})),
            query("code", false, "The identity provider's authorization code.", json!({"type": "string"})),
            query("iss", false, "RFC 9207: the identity provider's issuer.", json!({"type": "string"})),
            query("error", false, "The identity provider's error (e.g. `access_denied`).", json!({"type": "string"})),
            query("error_description", false, "The identity provider's text for `error`.", json!({"type": "string"})),
        ],
        "responses": {
            "200": page("The \"Try sign-in\" result page: each check and, on success, the profile."),
            "302": found("Back to the application's `redirect_uri` with `code` and `state`, or with `error`, `error_description` and `state`.", false),
            "400": page("No `state`, an unknown, expired or already used one, another browser's (or no) cookie, a parameter given twice, or the application or domain was removed meanwhile: a page, no redirect."),
            "429": page("Too many refused callbacks from this client address."),
            "431": too_large_head(),
            "500": page("The store could not be read or written: a page with an error id."),
        }
    })
}

fn oauth_error(description: &str, errors: &[&str]) -> Value {
    json!({"description": description, "headers": no_store(),
        "content": {"application/json": {"schema": {"type": "object", "properties": {
            "error": {"type": "string", "enum": errors},
            "error_description": {"type": "string"}},
            "required": ["error", "error_description"]}}}})
}

fn token() -> Value {
    let mut unauthorized = oauth_error(
        "`invalid_client`: no client authentication, an unknown client, a wrong secret, \
         another scheme than Basic, or too many failed authentications from this address \
         (then with `Retry-After`).",
        &["invalid_client"],
    );
    unauthorized["headers"]["WWW-Authenticate"] = json!({"description": "`Basic realm=\"oidcvault\"`.",
        "required": true, "schema": {"type": "string", "pattern": "^Basic "}});
    unauthorized["headers"]["Retry-After"] = json!({"description": "Seconds to wait, when the address is over its allowance of failed authentications.",
        "schema": {"type": "integer", "minimum": 1}});
    let mut ok = ok_json(
        "The verified profile of the signed-in user. The code is used up.",
        json!({"$ref": "#/components/schemas/SsoTokenResponse"}),
    );
    ok["headers"] = no_store();
    json!({
        "operationId": "sso-token",
        "summary": "Redeem a one-time code for the user's profile (the application, server to server)",
        "description": "OAuth 2.0 token-endpoint conventions (RFC 6749 §3.2, §4.1.3, §5.2; PKCE per RFC 7636). The application authenticates with HTTP Basic (its `client_id` and `client_secret`, each form-urlencoded first, RFC 6749 §2.3.1), or with `client_id` and `client_secret` in the body instead: one method, not both. `redirect_uri` must be the one the sign-in started with, and `code_verifier` is required exactly when a `code_challenge` was sent. A code is redeemable once and lives `sso.code_ttl_secs` (60 s): the redemption is durable before the profile is answered, and a code presented wrongly (another application, another `redirect_uri`, a wrong verifier) is used up all the same. Recorded in the audit trail as `sso.code_redeem` (a second presentation: `sso.code_replay`). Any body problem (not form-encoded, too large, a parameter given twice) is a 400 `invalid_request`, as RFC 6749 has it.",
        "security": [{"basic": []}],
        "requestBody": {
            "required": true,
            "content": {"application/x-www-form-urlencoded": {
                "schema": {"$ref": "#/components/schemas/SsoTokenRequest"},
                "example": {"grant_type": "authorization_code", "code": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
                    "redirect_uri": "https://billing.example.com/oidc/callback"}
            }}
        },
        "responses": {
            "200": ok,
            "400": oauth_error("RFC 6749 §5.2: `invalid_request` (a missing or malformed parameter, both authentication methods, a body that is not form-encoded), `invalid_grant` (an unknown, expired, used or mismatched code), `unsupported_grant_type`.",
                &["invalid_request", "invalid_grant", "unsupported_grant_type"]),
            "401": unauthorized,
            "431": too_large_head(),
            "500": oauth_error("`server_error`: the store could not be read or written (with an error id); the code may be used up.", &["server_error"]),
        }
    })
}

fn info() -> Value {
    let mut o = op(
        "sso-info",
        "The sign-in broker's public URL and the callback URL to register at identity providers",
        json!({"200": ok_json("`null` while `server.public_url` is unset (the broker then starts no sign-in).",
            json!({"$ref": "#/components/schemas/SsoInfo"}))}),
        false,
        json!({"description": "Any valid token (domain or operator)."}),
    );
    if let Some(r) = o["responses"].as_object_mut() {
        r.remove("403");
    }
    o
}

fn sign_in_test() -> Value {
    let mut ok = ok_json(
        "Open `authorization_url` in a new tab of this browser: the identity provider returns \
         to `/sso/callback`, which shows each check and the profile (no code is minted).",
        json!({"$ref": "#/components/schemas/SignInTest"}),
    );
    ok["headers"] = json!({"Set-Cookie": set_cookie()});
    let mut body = json_body(
        "#/components/schemas/SignInTestRequest",
        json!({"login_hint": "alice@acme.com"}),
    );
    body["required"] = json!(false);
    op(
        "oidc-sign-in-test",
        "Start a real sign-in against the domain's identity provider (the admin page's \"Try sign-in\")",
        json!({"200": ok,
               "400": validation_response(),
               "404": error_response("Enterprise domain not found.")}),
        true,
        json!({"description": "As the configuration routes: a domain token, or an operator token naming the domain in `X-Enterprise-Domain`. Needs `server.public_url` and a stored configuration with an `authorization_endpoint`: otherwise a 400 `detail` saying which is missing. The body is optional; `login_hint` is passed on to the identity provider. The transaction is bound to this browser by the same cookie as `/sso/authorize` (call it with `fetch`, same origin, so the browser keeps the cookie).",
               "requestBody": body}),
    )
}

/// The broker's paths, to merge into the document's `paths`.
pub(super) fn paths() -> Map<String, Value> {
    let domain_header = json!([{
        "name": DOMAIN_HEADER,
        "in": "header",
        "required": false,
        "description": "With an operator token: the enterprise domain to act on. With a domain token: optional, must name the token's own domain.",
        "schema": {"type": "string", "example": "acme.com"}
    }]);
    let mut paths = Map::new();
    paths.insert(AUTHORIZE.into(), json!({"get": authorize()}));
    paths.insert(CALLBACK.into(), json!({"get": callback()}));
    paths.insert(TOKEN.into(), json!({"post": token()}));
    paths.insert(SSO_INFO.into(), json!({"get": info()}));
    paths.insert(
        SIGN_IN_TEST.into(),
        json!({"parameters": domain_header, "post": sign_in_test()}),
    );
    paths
}

/// The broker's component schemas.
pub(super) fn schemas() -> Map<String, Value> {
    let nullable = json!({"type": ["string", "null"]});
    let schemas = json!({
        "SsoInfo": {"type": "object", "properties": {
            "public_url": {"type": ["string", "null"], "format": "uri", "example": "https://sso.example.com"},
            "callback_url": {"type": ["string", "null"], "format": "uri", "example": "https://sso.example.com/sso/callback"}},
            "required": ["public_url", "callback_url"]},
        "SignInTest": {"type": "object", "properties": {
            "authorization_url": {"type": "string", "format": "uri"}},
            "required": ["authorization_url"]},
        "SignInTestRequest": {"type": "object", "properties": {
            "login_hint": {"type": ["string", "null"], "example": "alice@acme.com"}}},
        "SsoTokenRequest": {"type": "object",
            "description": "Form fields (`application/x-www-form-urlencoded`), each at most once (RFC 6749 §3.2); other fields are ignored.",
            "additionalProperties": {"type": "string"},
            "properties": {
                "grant_type": {"type": "string", "enum": ["authorization_code"]},
                "code": {"type": "string", "minLength": 1},
                "redirect_uri": {"type": "string", "minLength": 1},
                "code_verifier": {"type": "string", "pattern": "^[A-Za-z0-9._~-]{43,128}$",
                    "description": "Required when the sign-in sent a `code_challenge`; refused otherwise."},
                "client_id": {"type": "string", "minLength": 1,
                    "description": "With `client_secret`, instead of HTTP Basic; with Basic, it may be given but must be the same."},
                "client_secret": {"type": "string", "minLength": 1,
                    "description": "Only without HTTP Basic (one authentication method)."}},
            "required": ["grant_type", "code", "redirect_uri"]},
        "SsoTokenResponse": {"type": "object", "properties": {
            "profile": {"$ref": "#/components/schemas/SsoProfile"}},
            "required": ["profile"]},
        "SsoProfile": {"type": "object",
            "description": "The verified identity. Personal data: keep it as such.",
            "properties": {
                "id": {"type": "string", "pattern": "^usr_[0-9a-f]{32}$",
                    "description": "Stable for one (issuer, sub): the application's key for this user."},
                "enterprise_domain": {"type": "integer", "minimum": 1,
                    "description": "The enterprise domain's id (as `enterprise_domain` of the configuration)."},
                "domain": {"type": "string", "example": "acme.com"},
                "issuer": {"type": "string", "format": "uri"},
                "sub": {"type": "string"},
                "email": nullable,
                "email_verified": {"type": ["boolean", "null"]},
                "name": nullable,
                "given_name": nullable,
                "family_name": nullable,
                "claims": {"type": "object", "additionalProperties": true,
                    "description": "Every claim of the ID token, except those that only served the broker's checks (`nonce`, `at_hash`, `c_hash`, `s_hash`)."},
                "authenticated_at": {"type": "string", "format": "date-time"}},
            "required": ["id", "enterprise_domain", "domain", "issuer", "sub", "email",
                "email_verified", "name", "given_name", "family_name", "claims", "authenticated_at"]}
    });
    match schemas {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// The `basic` security scheme of `/sso/token`.
pub(super) fn basic_scheme() -> Value {
    json!({"type": "http", "scheme": "basic",
        "description": "An application's `client_id` and `client_secret` (from `POST /api/v1/admin/apps/`), each form-urlencoded before the Basic encoding (RFC 6749 §2.3.1). `/sso/token` also takes them as form fields instead."})
}
