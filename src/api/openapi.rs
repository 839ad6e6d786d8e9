//! The OpenAPI 3.1 document served at `/api/v1/openapi.json`.
//!
//! Written here beside the routes and kept honest by tests: every path and method
//! it lists is served, every other method on those paths answers 405, and the
//! `EnterpriseOIDCConfig` schema keeps every property of the seed's. The sign-in
//! broker's operations are in `openapi/sso.rs`.

use serde_json::{json, Map, Value};

mod sso;

use super::admin::{DOMAIN, DOMAINS, TOKEN, TOKENS};
use super::admin_ops::{AUDIT, BACKUP, KEYS, KEYS_ROTATE};
use super::apps::{APP, APPS};
use super::health::{HEALTHZ, METRICS, OPENAPI, READYZ};
use super::oidc_config::PATH as OIDC_CONFIG;
use super::provider::{REFRESH as OIDC_REFRESH, TEST as OIDC_TEST};
use super::ui::{APP_CSS, APP_JS, ICON, INDEX, OPS_JS, SSO_JS};
use super::whoami::WHOAMI;
use super::DOMAIN_HEADER;

fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    })
}

fn validation_response() -> Value {
    json!({
        "description": "Validation failed: field name → messages (or `detail` for malformed JSON).",
        "content": {"application/json": {"schema": {"oneOf": [
            {"$ref": "#/components/schemas/ValidationError"},
            {"$ref": "#/components/schemas/Error"}
        ]}}}
    })
}

fn json_body(schema_ref: &str, example: Value) -> Value {
    json!({
        "required": true,
        "content": {"application/json": {
            "schema": {"$ref": schema_ref},
            "example": example
        }}
    })
}

fn with_links(mut response: Value, links: Value) -> Value {
    response["links"] = links;
    response
}

fn ok_json(description: &str, schema: Value) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": schema}}})
}

/// A response with a `Retry-After` header (seconds).
fn retry_after_response(description: &str) -> Value {
    let mut r = error_response(description);
    r["headers"] = json!({"Retry-After": {
        "description": "Seconds to wait before trying again.",
        "schema": {"type": "integer", "minimum": 1}
    }});
    r
}

/// Errors every authenticated operation can answer.
fn common_errors(responses: &mut Value, with_body: bool) {
    if let Some(map) = responses.as_object_mut() {
        map.insert("401".into(), unauthorized_response());
        map.insert(
            "429".into(),
            retry_after_response(
                "Too many failed authentications from this client address (limits.auth_failures_per_window).",
            ),
        );
        map.insert(
            "431".into(),
            error_response("Request headers larger than limits.max_header_bytes."),
        );
        map.insert(
            "403".into(),
            error_response("Token not allowed here (a domain token on an admin route, or naming another domain)."),
        );
        if with_body {
            map.insert(
                "408".into(),
                error_response("The body did not arrive within limits.request_body_timeout_secs."),
            );
            map.insert("413".into(), error_response("Body larger than 64 KiB."));
            map.insert("415".into(), error_response("Content type is not JSON."));
        }
        map.insert(
            "503".into(),
            retry_after_response(
                "The disk holding the data directory is full (the change was not made), or an \
                 earlier write to disk failed and the server must be restarted, or (a route \
                 that fetches from a provider) outbound.max_concurrent_fetches fetches are \
                 already running (nothing was fetched or stored; try again).",
            ),
        );
    }
}

fn op(id: &str, summary: &str, mut responses: Value, with_body: bool, extra: Value) -> Value {
    common_errors(&mut responses, with_body);
    let mut o = json!({
        "operationId": id,
        "summary": summary,
        "security": [{"bearer": []}],
        "responses": responses,
    });
    if let (Some(o), Some(extra)) = (o.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            o.insert(k.clone(), v.clone());
        }
    }
    o
}

fn unauthorized_response() -> Value {
    let mut r = error_response("Missing or invalid token.");
    r["headers"] = json!({"WWW-Authenticate": {
        "description": "`Bearer realm=\"oidcvault\"`, with `error=\"invalid_token\"` for a token that is not valid.",
        "schema": {"type": "string", "pattern": "^Bearer "}
    }});
    r
}

fn id_param() -> Value {
    json!([{"name": "id", "in": "path", "required": true,
            "schema": {"type": "integer", "minimum": 1, "maximum": u64::MAX, "example": 1}}])
}

/// "Not blank": at least one character that is not white space as Rust's
/// `char::is_whitespace` (Unicode White_Space) has it, which `trim` removes.
pub const NOT_BLANK_PATTERN: &str =
    r"[^\t\n\u000b\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]";

/// An enterprise domain name as the server accepts it: DNS labels of letters,
/// digits and inner hyphens, at least two, the last one starting with a letter,
/// optionally one trailing dot; case-insensitive (stored lower-case).
pub const DOMAIN_NAME_PATTERN: &str = "^(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\\.)+[A-Za-z](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\\.?$";

/// A redirect URI exactly as the server accepts it (`vault::redirect_uri`
/// states the grammar), except that labels starting with `xn--` (IDNA) are
/// left out here, since not every such label is valid.
pub const REDIRECT_URI_PATTERN: &str = concat!(
    r"^(?:https://(?:",
    // a DNS name
    r"(?:(?![Xx][Nn]--)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*",
    r"(?![Xx][Nn]--)[A-Za-z](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?",
    // an IPv4 address, or [::1]
    r"|(?:(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])\.){3}(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])",
    r"|\[::1\])",
    // plain http: loopback only
    r"|http://(?:localhost|\[::1\]",
    r"|127(?:\.(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])){3}))",
    // port 1-65535
    r"(?::(?:[1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]))?",
    r"(?:/(?:[A-Za-z0-9._~!$&'()*+,;=:@/-]|%[0-9A-Fa-f]{2})*)?",
    r"(?:\?(?:[A-Za-z0-9._~!$&'()*+,;=:@/?-]|%[0-9A-Fa-f]{2})*)?$"
);

/// The query parameters of `GET /api/v1/admin/audit/` (a function of its own:
/// the whole document in one `json!` would pass the macro's recursion limit).
fn audit_params() -> Value {
    json!([
        {"name": "domain", "in": "query", "required": false, "schema": {"type": "string"}, "description": "Only events of this domain."},
        {"name": "action", "in": "query", "required": false, "schema": {"type": "string", "minLength": 1, "maxLength": 64, "pattern": "^[a-z0-9_]+([.][a-z0-9_]+)*[.]?$"}, "description": "Only events of this action: `config.update` matches exactly that action; a value ending in a dot is a prefix, `sso.` matching `sso.login`, `sso.code_redeem` and `sso.code_replay`. Actions: `domain.add`, `domain.remove`, `token.create`, `token.revoke`, `config.create`, `config.update`, `config.delete`, `config.refresh.start`, `config.refresh`, `config.test.start`, `config.test`, `app.create`, `app.remove`, `key.rotate`, `key.drop`, `backup`, `sso.login`, `sso.code_redeem`, `sso.code_replay`. A value not of this form is a 400 on `action`."},
        {"name": "since", "in": "query", "required": false, "schema": {"type": "string", "format": "date-time"}, "description": "Only events at or after this time (RFC 3339)."},
        {"name": "until", "in": "query", "required": false, "schema": {"type": "string", "format": "date-time"}, "description": "Only events before this time (RFC 3339)."},
        {"name": "cursor", "in": "query", "required": false, "schema": {"type": "string", "pattern": "^[0-9]{1,19}$"}, "description": "`next` of the previous page (an event id: a 64-bit integer; the pattern admits the 19-digit ones, more than the trail will hold)."},
        {"name": "limit", "in": "query", "required": false, "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}}
    ])
}

/// A script of the admin page.
fn ui_script(id: &str, summary: &str) -> Value {
    json!({"get": {"operationId": id, "summary": summary, "security": [],
        "responses": {"200": {"description": "JavaScript.",
            "content": {"text/javascript": {"schema": {"type": "string"}}}}}}})
}

/// Any valid token may ask who it is: no 403.
fn whoami_op() -> Value {
    let mut o = op(
        "auth-whoami",
        "Who the presented token is: its kind, id and (a domain token) domain",
        json!({"200": ok_json("The token's kind, id and domain.", json!({"$ref": "#/components/schemas/WhoAmI"}))}),
        false,
        json!({"description": "Any valid token (domain or operator). Lets a client tell the two kinds apart without calling a route it may not use."}),
    );
    if let Some(r) = o["responses"].as_object_mut() {
        r.remove("403");
    }
    o
}

/// The admin page's files (a part of its own: the whole document in one
/// `json!` would pass the macro's recursion limit).
fn ui_paths() -> Map<String, Value> {
    let paths = json!({
        INDEX: {"get": {"operationId": "ui-index", "summary": "The admin page", "security": [],
            "responses": {"200": {"description": "HTML page.", "content": {"text/html": {"schema": {"type": "string"}}}}}}},
        APP_JS: ui_script("ui-script", "The admin page's script"),
        SSO_JS: ui_script("ui-script-sso", "The admin page's script for sign-in: applications, callback URL, Try sign-in"),
        OPS_JS: ui_script("ui-script-ops", "The admin page's script for operators: the audit trail and the key terms"),
        APP_CSS: {"get": {"operationId": "ui-style", "summary": "The admin page's style sheet", "security": [],
            "responses": {"200": {"description": "CSS.", "content": {"text/css": {"schema": {"type": "string"}}}}}}},
        ICON: {"get": {"operationId": "ui-icon", "summary": "The admin page's icon", "security": [],
            "responses": {"200": {"description": "SVG image.", "content": {"image/svg+xml": {"schema": {"type": "string"}}}}}}}
    });
    match paths {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

pub fn document() -> Value {
    let mut doc = base_document();
    if let Some(paths) = doc["paths"].as_object_mut() {
        paths.extend(ui_paths());
        paths.extend(sso::paths());
    }
    if let Some(schemas) = doc["components"]["schemas"].as_object_mut() {
        schemas.extend(sso::schemas());
    }
    doc["components"]["securitySchemes"]["basic"] = sso::basic_scheme();
    doc
}

fn base_document() -> Value {
    let domain_header = json!([{
        "name": DOMAIN_HEADER,
        "in": "header",
        "required": false,
        "description": "With an operator token: the enterprise domain to act on. With a domain token: optional, must name the token's own domain.",
        "schema": {"type": "string", "example": "acme.com"}
    }]);
    let discovery_header = domain_header.clone();
    let config_ref = json!({"$ref": "#/components/schemas/EnterpriseOIDCConfig"});
    let domain_name = json!({"type": "string", "pattern": DOMAIN_NAME_PATTERN, "maxLength": 253,
        "example": "acme.com"});
    let seed_example =
        json!({"client_id": "enterprise-app-123", "client_secret": "s3cr3tP@ssw0rd!"});

    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "oidcvault",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Keeps each enterprise domain's OIDC single-sign-on configuration, and completes its users' sign-ins for registered applications (the sign-in broker, `/sso/`). The client secret is encrypted at rest, only ever returned masked, and sent only to the token endpoint it is bound to."
        },
        "paths": {
            OIDC_CONFIG: {
                "parameters": domain_header,
                "get": op("oidc-config-retrieve", "Get the OIDC configuration of the enterprise domain",
                    json!({"200": ok_json("The stored configuration.", config_ref.clone()),
                           "404": error_response("Enterprise domain not found, or no configuration.")}),
                    false, json!({})),
                "post": op("oidc-config-create", "Create or Update OIDC Configuration",
                    json!({"200": with_links(ok_json("The stored configuration (secret masked).", config_ref.clone()), json!({
                               "GetConfig": {"operationId": "oidc-config-retrieve",
                                   "description": "The configuration just stored."},
                               "DeleteConfig": {"operationId": "oidc-config-destroy",
                                   "description": "Delete the configuration just stored."}})),
                           "400": validation_response(),
                           "404": error_response("Enterprise domain not found")}),
                    true,
                    json!({"description": "Create or update OIDC configuration for the enterprise domain. On update, a field left out keeps its value, `null` clears a URL field, and a `client_secret` equal to the stored masked form leaves the secret unchanged. When the request sets a new `discovery_url` (and `outbound.resolve_discovery_on_save` is on), the server fetches the discovery document, checks that its `issuer` is the URL less `/.well-known/openid-configuration`, and fills the endpoints the request leaves unset (absent or `null`); endpoints given explicitly win. A URL that does not answer, is not a discovery document, has another issuer, or names an endpoint the outbound guard refuses: 400 on `discovery_url`, nothing stored.",
                           "requestBody": json_body("#/components/schemas/EnterpriseOIDCConfig", seed_example)})),
                "delete": op("oidc-config-destroy", "Delete the OIDC configuration of the enterprise domain",
                    json!({"204": {"description": "Deleted."},
                           "404": error_response("Enterprise domain not found, or no configuration.")}),
                    false, json!({})),
            },
            OIDC_REFRESH: {
                "parameters": discovery_header.clone(),
                "post": op("oidc-config-refresh", "Re-read the discovery document and update the endpoints it manages",
                    json!({"200": ok_json("What changed, what was kept (set by hand), and the stored configuration.", json!({"$ref": "#/components/schemas/DiscoveryRefresh"})),
                           "400": validation_response(),
                           "404": error_response("Enterprise domain not found, or no configuration.")}),
                    false,
                    json!({"description": "Endpoints filled from discovery (and empty ones) follow the document; an endpoint set by hand is never overwritten, only reported under `kept`. No request body. A change is recorded in the audit trail as `config.refresh`. 400 on `discovery_url` when none is configured or it cannot be used."})),
            },
            OIDC_TEST: {
                "parameters": discovery_header,
                "post": op("oidc-config-test", "Test the stored configuration against the identity provider, without a user",
                    json!({"200": ok_json("Each step with pass, fail or skip, and the provider's own error text.", json!({"$ref": "#/components/schemas/ConnectionTest"})),
                           "404": error_response("Enterprise domain not found, or no configuration.")}),
                    false,
                    json!({"description": "Steps: `discovery` (reachable, issuer consistent, endpoints pass the outbound guard), `authorization_endpoint`, `token_endpoint`, `userinfo_endpoint` (each answers, over TLS unless allowlisted), `jwks` (the JWK set loads and has keys), `client_authentication` (a token request with a deliberately invalid code: `invalid_grant` means the client authenticated, `invalid_client` that it did not; client_secret_basic, or client_secret_post when the provider offers only that). The client secret is decrypted for this request only. No request body. Recorded in the audit trail as `config.test`."})),
            },
            DOMAINS: {
                "get": op("admin-domains-list", "List enterprise domains",
                    json!({"200": ok_json("All domains.", json!({"type": "array", "items": {"$ref": "#/components/schemas/Domain"}}))}),
                    false, json!({})),
                "post": op("admin-domains-create", "Add an enterprise domain",
                    json!({"201": with_links(ok_json("Created.", json!({"$ref": "#/components/schemas/Domain"})), json!({
                               "RemoveDomain": {"operationId": "admin-domains-destroy",
                                   "parameters": {"id": "$response.body#/id"}}})),
                           "400": validation_response()}),
                    true,
                    json!({"requestBody": json_body("#/components/schemas/DomainCreate", json!({"domain": "acme.com"}))})),
            },
            DOMAIN: {
                "parameters": id_param(),
                "delete": op("admin-domains-destroy", "Remove a domain with its configuration and tokens",
                    json!({"204": {"description": "Removed."}, "404": error_response("No such domain.")}),
                    false, json!({})),
            },
            TOKENS: {
                "get": op("admin-tokens-list", "List tokens (never their values)",
                    json!({"200": ok_json("All tokens.", json!({"type": "array", "items": {"$ref": "#/components/schemas/Token"}}))}),
                    false, json!({})),
                "post": op("admin-tokens-create", "Create a domain or operator token (shown once)",
                    json!({"201": with_links(ok_json("Created; `token` is shown only here.", json!({"$ref": "#/components/schemas/TokenCreated"})), json!({
                               "RevokeToken": {"operationId": "admin-tokens-destroy",
                                   "parameters": {"id": "$response.body#/id"}}})),
                           "400": validation_response()}),
                    true,
                    json!({"requestBody": json_body("#/components/schemas/TokenCreate", json!({"operator": true}))})),
            },
            TOKEN: {
                "parameters": id_param(),
                "delete": op("admin-tokens-destroy", "Revoke a token",
                    json!({"204": {"description": "Revoked."}, "404": error_response("No such token.")}),
                    false, json!({})),
            },
            APPS: {
                "get": op("admin-apps-list", "List the sign-in broker's applications (never their secrets)",
                    json!({"200": ok_json("All applications.", json!({"type": "array", "items": {"$ref": "#/components/schemas/App"}}))}),
                    false, json!({})),
                "post": op("admin-apps-create", "Register an application that may ask for sign-ins (client secret shown once)",
                    json!({"201": with_links(ok_json("Created; `client_secret` is shown only here.", json!({"$ref": "#/components/schemas/AppCreated"})), json!({
                               "RemoveApp": {"operationId": "admin-apps-destroy",
                                   "parameters": {"id": "$response.body#/id"}}})),
                           "400": validation_response()}),
                    true,
                    json!({"description": "`name`: not blank (surrounding whitespace is trimmed), at most 100 characters. `redirect_uris`: 1 to 10 distinct absolute URLs of at most 2048 characters each, registered exactly as given (a sign-in's `redirect_uri` must equal one of them character for character): `https`, or `http` for loopback hosts only (127.0.0.0/8, `[::1]`, `localhost`), scheme in lower case; the host a DNS name, an IPv4 address or `[::1]`; a port from 1 to 65535; path and query of RFC 3986 characters (percent-escapes allowed); no credentials; no fragment: the `pattern` of `AppCreate` states exactly this. Field errors name `name` or `redirect_uris` (a URI's messages start with `Item <index>:`, from 0). The client secret is stored only as a hash: keep it from this answer. Recorded in the audit trail as `app.create`.",
                           "requestBody": json_body("#/components/schemas/AppCreate",
                               json!({"name": "Billing portal", "redirect_uris": ["https://billing.example.com/oidc/callback"]}))})),
            },
            APP: {
                "parameters": id_param(),
                "delete": op("admin-apps-destroy", "Remove an application: its pending sign-ins and unredeemed codes stop working",
                    json!({"204": {"description": "Removed."}, "404": error_response("No such application.")}),
                    false, json!({"description": "Recorded in the audit trail as `app.remove`."})),
            },
            KEYS: {
                "get": op("admin-keys-status", "Data-key terms and re-encryption progress",
                    json!({"200": ok_json("Key status.", json!({"$ref": "#/components/schemas/KeyStatus"}))}),
                    false, json!({})),
            },
            KEYS_ROTATE: {
                "post": op("admin-keys-rotate", "Add a data-key term; re-encryption runs in the background",
                    json!({"200": ok_json("The new key status.", json!({"$ref": "#/components/schemas/KeyStatus"}))}),
                    false, json!({})),
            },
            AUDIT: {
                "parameters": audit_params(),
                "get": op("admin-audit-list", "The audit trail, oldest first, with cursor paging",
                    json!({"200": ok_json("A page of events.", json!({"$ref": "#/components/schemas/AuditPage"})),
                           "400": validation_response()}),
                    false, json!({})),
            },
            BACKUP: {
                "post": op("admin-backup-create", "Write a consistent backup under storage.backup_dir",
                    json!({"201": ok_json("The backup written.", json!({"$ref": "#/components/schemas/Backup"}))}),
                    false, json!({})),
            },
            WHOAMI: {
                "get": whoami_op(),
            },
            METRICS: {
                "get": op("metrics", "Prometheus metrics (text format); operator token",
                    json!({"200": {"description": "Prometheus text exposition format 0.0.4.",
                        "content": {"text/plain": {"schema": {"type": "string"}}}}}),
                    false,
                    json!({"description": "Request counts and latency, group-commit figures, store size, domain and config counts, key terms. An operator token only (a domain token: 403): the figures describe every domain. Configure the scraper with `authorization: {type: Bearer, credentials_file: ...}`."})),
            },
            HEALTHZ: {"get": {"operationId": "healthz", "summary": "Liveness", "security": [],
                "responses": {"200": ok_json("Serving.", json!({"type": "object",
                    "properties": {"status": {"const": "ok"}}, "required": ["status"]})),
                    "431": error_response("Request headers larger than limits.max_header_bytes.")}}},
            READYZ: {"get": {"operationId": "readyz", "summary": "Readiness: store open, keys unlocked, writes durable", "security": [],
                "responses": {"200": ok_json("Ready.", json!({"type": "object",
                    "properties": {"status": {"const": "ready"}}, "required": ["status"]})),
                    "431": error_response("Request headers larger than limits.max_header_bytes."),
                    "503": ok_json("Not ready: the last write to disk failed, or the storage cluster (etcd) is unreachable or without quorum.", json!({"type": "object",
                        "properties": {"status": {"const": "unavailable"}, "detail": {"type": "string"}},
                        "required": ["status", "detail"]}))}}},
            OPENAPI: {"get": {"operationId": "openapi", "summary": "This document", "security": [],
                "responses": {"200": ok_json("OpenAPI 3.1 document.", json!({"type": "object",
                    "required": ["openapi", "info", "paths"]})),
                    "431": error_response("Request headers larger than limits.max_header_bytes.")}}},
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                "description": "A domain token or an operator token (`ovt_<id>_<random>`)."}},
            "schemas": {
                "EnterpriseOIDCConfig": {
                    "type": "object",
                    "title": "EnterpriseOIDCConfig",
                    "properties": {
                        "id": {"type": "integer", "readOnly": true},
                        "enterprise_domain": {"type": "integer", "readOnly": true},
                        "client_id": {"type": "string", "minLength": 1, "maxLength": 255,
                            "pattern": NOT_BLANK_PATTERN, "example": "enterprise-app-123",
                            "description": "Not blank; surrounding whitespace is trimmed."},
                        "client_secret": {"type": "string", "minLength": 1, "maxLength": 4096,
                            "pattern": NOT_BLANK_PATTERN, "example": "s3cr3tP@ssw0rd!",
                            "description": "Write-accepted: the plaintext is accepted on write (not blank, at most 4096 bytes of UTF-8) and stored encrypted. Returned masked, never in plaintext. Posting the masked form back leaves the stored secret unchanged."},
                        "client_secret_masked": {"type": "string", "readOnly": true,
                            "description": "Eight `*` followed by the last four characters for secrets of 12 characters or more; eight `*` alone otherwise."},
                        "discovery_url": {"type": ["string", "null"], "format": "uri", "maxLength": 2048,
                            "description": "OIDC Discovery URL (e.g. /.well-known/openid-configuration)"},
                        "authorization_endpoint": {"type": ["string", "null"], "format": "uri", "maxLength": 2048},
                        "token_endpoint": {"type": ["string", "null"], "format": "uri", "maxLength": 2048},
                        "userinfo_endpoint": {"type": ["string", "null"], "format": "uri", "maxLength": 2048},
                        "created_at": {"type": "string", "format": "date-time", "readOnly": true},
                        "updated_at": {"type": "string", "format": "date-time", "readOnly": true}
                    },
                    "required": ["id", "enterprise_domain", "client_id", "client_secret",
                                 "client_secret_masked", "created_at", "updated_at"]
                },
                "DiscoveryRefresh": {"type": "object", "properties": {
                    "discovery_url": {"type": "string", "format": "uri"},
                    "issuer": {"type": "string"},
                    "changed": {"type": "array", "items": {"type": "object", "properties": {
                        "field": {"type": "string", "enum": ["authorization_endpoint", "token_endpoint", "userinfo_endpoint"]},
                        "old": {"type": ["string", "null"]}, "new": {"type": ["string", "null"]}},
                        "required": ["field", "old", "new"]}},
                    "kept": {"type": "array", "items": {"type": "object", "properties": {
                        "field": {"type": "string"}, "value": {"type": ["string", "null"]},
                        "discovered": {"type": ["string", "null"]}, "reason": {"type": "string"}},
                        "required": ["field", "value", "discovered", "reason"]}},
                    "discovered_endpoints": {"type": "array", "items": {"type": "string"},
                        "description": "The endpoints now managed by discovery (the others were set by hand, or are empty)."},
                    "config": {"$ref": "#/components/schemas/EnterpriseOIDCConfig"}},
                    "required": ["discovery_url", "issuer", "changed", "kept", "discovered_endpoints", "config"]},
                "ConnectionTest": {"type": "object", "properties": {
                    "ok": {"type": "boolean", "description": "No step failed."},
                    "tested_at": {"type": "string", "format": "date-time"},
                    "steps": {"type": "array", "items": {"type": "object", "properties": {
                        "name": {"type": "string", "enum": ["discovery", "authorization_endpoint", "token_endpoint", "userinfo_endpoint", "jwks", "client_authentication"]},
                        "status": {"type": "string", "enum": ["pass", "fail", "skip"]},
                        "url": {"type": ["string", "null"]},
                        "detail": {"type": "string"},
                        "provider_error": {"oneOf": [{"type": "null"}, {"type": "object", "properties": {
                            "status": {"type": "integer"},
                            "error": {"type": ["string", "null"]},
                            "error_description": {"type": ["string", "null"]}},
                            "required": ["status", "error", "error_description"]}]}},
                        "required": ["name", "status", "url", "detail", "provider_error"]}}},
                    "required": ["ok", "tested_at", "steps"]},
                "Error": {"type": "object", "properties": {"detail": {"type": "string"},
                    "correlation_id": {"type": "string"}}, "required": ["detail"]},
                "ValidationError": {"type": "object",
                    "additionalProperties": {"type": "array", "items": {"type": "string"}}},
                "Domain": {"type": "object", "properties": {
                    "id": {"type": "integer", "minimum": 1}, "domain": {"type": "string", "example": "acme.com"},
                    "created_at": {"type": "string", "format": "date-time"}},
                    "required": ["id", "domain", "created_at"]},
                "DomainCreate": {"type": "object", "properties": {"domain": domain_name.clone()},
                    "required": ["domain"]},
                "Token": {"type": "object", "properties": {
                    "id": {"type": "integer", "minimum": 1}, "domain": {"type": ["string", "null"]},
                    "created_at": {"type": "string", "format": "date-time"}},
                    "required": ["id", "domain", "created_at"]},
                "TokenCreate": {
                    "description": "Either `domain` (an existing enterprise domain; 400 when there is none) or `operator: true`.",
                    "oneOf": [
                        {"type": "object", "title": "DomainTokenCreate",
                         "properties": {"domain": domain_name, "operator": {"enum": [false, null]}},
                         "required": ["domain"]},
                        {"type": "object", "title": "OperatorTokenCreate",
                         "properties": {"operator": {"const": true}, "domain": {"type": "null"}},
                         "required": ["operator"]}
                    ]},
                "KeyStatus": {"type": "object", "properties": {
                    "active_term": {"type": "integer"},
                    "active_term_encryptions": {"type": "integer"},
                    "rotate_after_encryptions": {"type": "integer"},
                    "terms": {"type": "array", "items": {"type": "object", "properties": {
                        "term": {"type": "integer"}, "active": {"type": "boolean"},
                        "created_at": {"type": "string", "format": "date-time"},
                        "configs": {"type": "integer"}},
                        "required": ["term", "active", "created_at", "configs"]}},
                    "total_configs": {"type": "integer"},
                    "progress": {"type": "number", "minimum": 0, "maximum": 1},
                    "reencryption_pending": {"type": "boolean"}},
                    "required": ["active_term", "active_term_encryptions", "rotate_after_encryptions",
                                 "terms", "total_configs", "progress", "reencryption_pending"]},
                "AuditEvent": {"type": "object", "properties": {
                    "id": {"type": "integer"},
                    "at": {"type": "string", "format": "date-time"},
                    "actor": {"type": ["integer", "null"], "description": "Token id of the caller; null for the command line or the server itself."},
                    "action": {"type": "string", "examples": ["config.update"]},
                    "domain_id": {"type": ["integer", "null"]},
                    "domain": {"type": ["string", "null"]},
                    "fields": {"type": "array", "items": {"type": "string"}},
                    "secret_fingerprint": {"type": ["string", "null"], "description": "Keyed HMAC fingerprint of a new client secret: tells whether it changed, reveals nothing."},
                    "detail": {"type": ["string", "null"]}},
                    "required": ["id", "at", "actor", "action", "domain_id", "domain", "fields", "secret_fingerprint", "detail"]},
                "AuditPage": {"type": "object", "properties": {
                    "results": {"type": "array", "items": {"$ref": "#/components/schemas/AuditEvent"}},
                    "next": {"type": ["string", "null"]}},
                    "required": ["results", "next"]},
                "Backup": {"type": "object", "properties": {
                    "name": {"type": "string"}, "path": {"type": "string"},
                    "records": {"type": "integer"}, "bytes": {"type": "integer"},
                    "created_at": {"type": "string", "format": "date-time"}},
                    "required": ["name", "path", "records", "bytes", "created_at"]},
                "WhoAmI": {"type": "object", "properties": {
                    "kind": {"type": "string", "enum": ["operator", "domain"]},
                    "token_id": {"type": "integer", "minimum": 1},
                    "domain": {"type": ["string", "null"], "description": "The domain of a domain token; null for an operator token."}},
                    "required": ["kind", "token_id", "domain"]},
                "App": {"type": "object", "properties": {
                    "id": {"type": "integer", "minimum": 1},
                    "name": {"type": "string", "example": "Billing portal"},
                    "client_id": {"type": "string", "pattern": "^ova_[A-Za-z0-9_-]{22}$"},
                    "redirect_uris": {"type": "array", "items": {"type": "string"}},
                    "created_at": {"type": "string", "format": "date-time"}},
                    "required": ["id", "name", "client_id", "redirect_uris", "created_at"]},
                "AppCreated": {"type": "object", "properties": {
                    "id": {"type": "integer", "minimum": 1},
                    "name": {"type": "string"},
                    "client_id": {"type": "string", "pattern": "^ova_[A-Za-z0-9_-]{22}$"},
                    "client_secret": {"type": "string", "pattern": "^ovs_[A-Za-z0-9_-]{43}$",
                        "description": "Shown only in this answer; stored as a hash."},
                    "redirect_uris": {"type": "array", "items": {"type": "string"}},
                    "created_at": {"type": "string", "format": "date-time"}},
                    "required": ["id", "name", "client_id", "client_secret", "redirect_uris", "created_at"]},
                "AppCreate": {"type": "object", "properties": {
                    "name": {"type": "string", "minLength": 1, "maxLength": 100,
                        "pattern": NOT_BLANK_PATTERN, "example": "Billing portal"},
                    "redirect_uris": {"type": "array", "minItems": 1, "maxItems": 10, "uniqueItems": true,
                        "items": {"type": "string", "maxLength": 2048, "pattern": REDIRECT_URI_PATTERN,
                            "example": "https://billing.example.com/oidc/callback"}}},
                    "required": ["name", "redirect_uris"]},
                "TokenCreated": {"type": "object", "properties": {
                    "id": {"type": "integer", "minimum": 1},
                    "token": {"type": "string", "pattern": "^ovt_[0-9]+_[A-Za-z0-9_-]{43}$"},
                    "domain": {"type": ["string", "null"]},
                    "created_at": {"type": "string", "format": "date-time"}},
                    "required": ["id", "token", "domain", "created_at"]}
            }
        }
    })
}
