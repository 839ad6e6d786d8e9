//! OpenID Connect Discovery 1.0, over [`crate::outbound`].
//!
//! Blocking (outbound HTTP is): async callers use `actix_web::web::block`.
//!
//! [`fetch`] reads a provider's discovery document, checks that its `issuer` is
//! the URL it came from (Discovery 1.0 §4.3: the issuer is the discovery URL
//! less `/.well-known/openid-configuration`, compared as strings), and puts
//! every endpoint it names through the same SSRF guard as the fetch.

use std::fmt;

use serde_json::{Map, Value};

use crate::outbound::{FetchError, Outbound, Response};

/// The path a discovery URL ends with.
pub const WELL_KNOWN: &str = "/.well-known/openid-configuration";
/// The longest URL stored (as the API's URL fields).
const URL_MAX_CHARS: usize = 2048;

/// A provider's metadata, as far as oidcvault uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderMetadata {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: Option<String>,
    pub userinfo_endpoint: Option<String>,
    pub jwks_uri: String,
    /// `None` when the document does not say (the default is client_secret_basic).
    pub token_endpoint_auth_methods_supported: Option<Vec<String>>,
    /// The JWS algorithms the provider signs ID tokens with; empty when the
    /// document does not say (the sign-in broker then assumes RS256, the
    /// Discovery 1.0 default).
    pub id_token_signing_alg_values_supported: Vec<String>,
    /// RFC 9207: the provider puts `iss` in its authorization responses, so
    /// the broker must check it (`false` when the document does not say).
    pub authorization_response_iss_parameter_supported: bool,
}

/// Why a discovery URL cannot be used. Each message says what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiscoveryError {
    NotWellKnown,
    Fetch(FetchError),
    Status {
        url: String,
        status: u16,
    },
    NotJson {
        url: String,
        content_type: Option<String>,
    },
    NotDiscovery {
        url: String,
        problem: String,
    },
    IssuerMismatch {
        issuer: String,
        expected: String,
    },
    Endpoint {
        field: String,
        problem: String,
    },
}

impl fmt::Display for DiscoveryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DiscoveryError::NotWellKnown => write!(
                f,
                "Enter the provider's discovery URL: its issuer followed by {WELL_KNOWN}, \
                 without query or fragment."
            ),
            DiscoveryError::Fetch(e) => {
                write!(f, "The discovery document could not be fetched: {e}.")
            }
            DiscoveryError::Status { url, status } => write!(
                f,
                "{url} answered HTTP {status}, not a discovery document; check the URL \
                 (the issuer followed by {WELL_KNOWN})."
            ),
            DiscoveryError::NotJson { url, content_type } => write!(
                f,
                "{url} did not answer with a JSON discovery document (content type {}); \
                 check the URL (the issuer followed by {WELL_KNOWN}).",
                content_type.as_deref().unwrap_or("none")
            ),
            DiscoveryError::NotDiscovery { url, problem } => write!(
                f,
                "{url} is not an OpenID Connect discovery document: {problem}."
            ),
            DiscoveryError::IssuerMismatch { issuer, expected } => write!(
                f,
                "The document's issuer {issuer:?} does not match the URL it came from \
                 (expected {expected:?}); OpenID Connect Discovery requires them to be \
                 identical. Use the provider's own discovery URL: {issuer}{WELL_KNOWN}."
            ),
            DiscoveryError::Endpoint { field, problem } => write!(
                f,
                "The discovery document's {field} cannot be used: {problem}."
            ),
        }
    }
}

impl std::error::Error for DiscoveryError {}

/// The issuer a discovery URL stands for: the URL less [`WELL_KNOWN`].
pub fn expected_issuer(discovery_url: &str) -> Result<String, DiscoveryError> {
    let url = url::Url::parse(discovery_url).map_err(|_| DiscoveryError::NotWellKnown)?;
    if url.query().is_some() || url.fragment().is_some() {
        return Err(DiscoveryError::NotWellKnown);
    }
    discovery_url
        .strip_suffix(WELL_KNOWN)
        .filter(|issuer| !issuer.is_empty() && !issuer.ends_with('/'))
        .map(str::to_owned)
        .ok_or(DiscoveryError::NotWellKnown)
}

/// Discovery 1.0 §4.3: the issuer must be identical to the URL the document was
/// fetched under, less the well-known suffix. §4.1 has the suffix appended after
/// removing a terminating `/` of the issuer, so an issuer with exactly that one
/// terminating `/` matches too.
pub fn issuer_matches(issuer: &str, expected: &str) -> bool {
    issuer == expected || issuer.strip_suffix('/') == Some(expected)
}

fn string_field(
    obj: &Map<String, Value>,
    name: &str,
    url: &str,
) -> Result<Option<String>, DiscoveryError> {
    match obj.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(DiscoveryError::NotDiscovery {
            url: url.to_owned(),
            problem: format!("{name} is not a string"),
        }),
    }
}

/// An optional array of strings (entries that are not strings are left out).
fn string_list(
    obj: &Map<String, Value>,
    name: &str,
    url: &str,
) -> Result<Option<Vec<String>>, DiscoveryError> {
    match obj.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(a)) => Ok(Some(
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
        )),
        Some(_) => Err(DiscoveryError::NotDiscovery {
            url: url.to_owned(),
            problem: format!("{name} is not an array"),
        }),
    }
}

/// Parse and check a discovery document's body (no network use).
pub fn parse_document(
    discovery_url: &str,
    resp: &Response,
) -> Result<ProviderMetadata, DiscoveryError> {
    let url = discovery_url.to_owned();
    if resp.status != 200 {
        return Err(DiscoveryError::Status {
            url,
            status: resp.status,
        });
    }
    let Ok(Value::Object(obj)) = serde_json::from_slice::<Value>(&resp.body) else {
        return Err(DiscoveryError::NotJson {
            url,
            content_type: resp.content_type.clone(),
        });
    };
    let missing = |name: &str| DiscoveryError::NotDiscovery {
        url: url.clone(),
        problem: format!("it has no {name}"),
    };
    let issuer = string_field(&obj, "issuer", &url)?.ok_or_else(|| missing("issuer"))?;
    let expected = expected_issuer(discovery_url)?;
    if !issuer_matches(&issuer, &expected) {
        return Err(DiscoveryError::IssuerMismatch { issuer, expected });
    }
    let authorization_endpoint = string_field(&obj, "authorization_endpoint", &url)?
        .ok_or_else(|| missing("authorization_endpoint"))?;
    let jwks_uri = string_field(&obj, "jwks_uri", &url)?.ok_or_else(|| missing("jwks_uri"))?;
    let token_endpoint = string_field(&obj, "token_endpoint", &url)?;
    let userinfo_endpoint = string_field(&obj, "userinfo_endpoint", &url)?;
    let methods = string_list(&obj, "token_endpoint_auth_methods_supported", &url)?;
    let algs = string_list(&obj, "id_token_signing_alg_values_supported", &url)?;
    let iss_parameter = match obj.get("authorization_response_iss_parameter_supported") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(DiscoveryError::NotDiscovery {
                url,
                problem: "authorization_response_iss_parameter_supported is not a boolean".into(),
            })
        }
    };
    Ok(ProviderMetadata {
        issuer,
        authorization_endpoint,
        token_endpoint,
        userinfo_endpoint,
        jwks_uri,
        token_endpoint_auth_methods_supported: methods,
        id_token_signing_alg_values_supported: algs.unwrap_or_default(),
        authorization_response_iss_parameter_supported: iss_parameter,
    })
}

/// Put every endpoint of a document through the guard (URL rules and the
/// addresses its host resolves to), each distinct origin once.
fn check_endpoints(outbound: &Outbound, meta: &ProviderMetadata) -> Result<(), DiscoveryError> {
    let mut checked: Vec<String> = Vec::new();
    let fields = [
        ("authorization_endpoint", Some(&meta.authorization_endpoint)),
        ("token_endpoint", meta.token_endpoint.as_ref()),
        ("userinfo_endpoint", meta.userinfo_endpoint.as_ref()),
        ("jwks_uri", Some(&meta.jwks_uri)),
    ];
    for (field, value) in fields {
        let Some(value) = value else { continue };
        let problem = |p: String| DiscoveryError::Endpoint {
            field: field.to_owned(),
            problem: p,
        };
        if value.chars().count() > URL_MAX_CHARS {
            return Err(problem(format!(
                "it is longer than {URL_MAX_CHARS} characters"
            )));
        }
        let url = outbound
            .policy()
            .check_url(value)
            .map_err(|r| problem(format!("{value} is refused: {r}")))?;
        let origin = url.origin().ascii_serialization();
        if checked.contains(&origin) {
            continue;
        }
        outbound.check(value).map_err(|e| problem(e.to_string()))?;
        checked.push(origin);
    }
    Ok(())
}

/// Fetch and check a provider's discovery document.
pub fn fetch(outbound: &Outbound, discovery_url: &str) -> Result<ProviderMetadata, DiscoveryError> {
    fetch_patiently(outbound, discovery_url, std::time::Duration::ZERO)
}

/// [`fetch`], waiting up to `max_wait` for an outbound slot
/// ([`Outbound::patiently`]): for a sign-in, which must not fail on a burst.
pub fn fetch_patiently(
    outbound: &Outbound,
    discovery_url: &str,
    max_wait: std::time::Duration,
) -> Result<ProviderMetadata, DiscoveryError> {
    expected_issuer(discovery_url)?;
    let resp = outbound
        .patiently(max_wait, || outbound.get(discovery_url, "application/json"))
        .map_err(DiscoveryError::Fetch)?;
    let meta = parse_document(discovery_url, &resp)?;
    check_endpoints(outbound, &meta)?;
    Ok(meta)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issuer_is_the_discovery_url_less_the_well_known_suffix() {
        assert_eq!(
            expected_issuer("https://idp.example.com/.well-known/openid-configuration").unwrap(),
            "https://idp.example.com"
        );
        assert_eq!(
            expected_issuer("https://idp.example.com/tenant/v2/.well-known/openid-configuration")
                .unwrap(),
            "https://idp.example.com/tenant/v2"
        );
        for bad in [
            "https://idp.example.com/",
            "https://idp.example.com/.well-known/openid-configuration?p=x",
            "https://idp.example.com/.well-known/openid-configuration#x",
            "https://idp.example.com/.well-known/openid-configuration/",
            "https://idp.example.com//.well-known/openid-configuration",
            "https://idp.example.com/.well-known/oauth-authorization-server",
            "not a url",
        ] {
            assert_eq!(
                expected_issuer(bad),
                Err(DiscoveryError::NotWellKnown),
                "{bad}"
            );
        }
    }

    #[test]
    fn issuer_comparison_is_exact() {
        let e = "https://idp.example.com/tenant";
        assert!(issuer_matches("https://idp.example.com/tenant", e));
        assert!(issuer_matches("https://idp.example.com/tenant/", e));
        for other in [
            "https://IDP.example.com/tenant",
            "https://idp.example.com/tenant//",
            "https://idp.example.com/Tenant",
            "https://idp.example.com",
            "https://idp.example.com:443/tenant",
            "http://idp.example.com/tenant",
        ] {
            assert!(!issuer_matches(other, e), "{other}");
        }
    }

    fn resp(status: u16, ct: &str, body: &str) -> Response {
        Response {
            status,
            content_type: Some(ct.into()),
            body: body.as_bytes().to_vec(),
            url: url::Url::parse("https://idp.example.com/.well-known/openid-configuration")
                .unwrap(),
            location: None,
        }
    }

    #[test]
    fn documents_are_checked() {
        let u = "https://idp.example.com/.well-known/openid-configuration";
        let ok = r#"{"issuer": "https://idp.example.com", "authorization_endpoint": "https://idp.example.com/auth",
                     "token_endpoint": "https://idp.example.com/token", "jwks_uri": "https://idp.example.com/jwks",
                     "token_endpoint_auth_methods_supported": ["client_secret_post"]}"#;
        let m = parse_document(u, &resp(200, "application/json", ok)).unwrap();
        assert_eq!(
            m.token_endpoint.as_deref(),
            Some("https://idp.example.com/token")
        );
        assert_eq!(m.userinfo_endpoint, None);
        assert_eq!(
            m.token_endpoint_auth_methods_supported.unwrap(),
            ["client_secret_post"]
        );
        // Optional: absent means "not said".
        assert!(m.id_token_signing_alg_values_supported.is_empty());
        assert!(!m.authorization_response_iss_parameter_supported);
        let full = ok.replace(
            "\"jwks_uri\"",
            "\"id_token_signing_alg_values_supported\": [\"ES256\", \"RS256\"],
             \"authorization_response_iss_parameter_supported\": true, \"jwks_uri\"",
        );
        let m = parse_document(u, &resp(200, "application/json", &full)).unwrap();
        assert_eq!(m.id_token_signing_alg_values_supported, ["ES256", "RS256"]);
        assert!(m.authorization_response_iss_parameter_supported);
        for wrong in [
            "\"id_token_signing_alg_values_supported\": \"RS256\",",
            "\"authorization_response_iss_parameter_supported\": \"true\",",
        ] {
            let doc = ok.replace("\"jwks_uri\"", &format!("{wrong} \"jwks_uri\""));
            assert!(
                matches!(
                    parse_document(u, &resp(200, "application/json", &doc)),
                    Err(DiscoveryError::NotDiscovery { .. })
                ),
                "{wrong}"
            );
        }

        assert!(matches!(
            parse_document(u, &resp(404, "text/html", "<h1>")),
            Err(DiscoveryError::Status { status: 404, .. })
        ));
        assert!(matches!(
            parse_document(u, &resp(200, "text/html", "<html>")),
            Err(DiscoveryError::NotJson { .. })
        ));
        assert!(matches!(
            parse_document(u, &resp(200, "application/json", "[1]")),
            Err(DiscoveryError::NotJson { .. })
        ));
        let wrong = ok.replace(
            "\"https://idp.example.com\",",
            "\"https://evil.example.com\",",
        );
        let e = parse_document(u, &resp(200, "application/json", &wrong)).unwrap_err();
        assert!(matches!(e, DiscoveryError::IssuerMismatch { .. }), "{e:?}");
        assert!(
            e.to_string()
                .contains("https://evil.example.com/.well-known/openid-configuration"),
            "{e}"
        );
        let no_jwks = ok.replace("\"jwks_uri\"", "\"x\"");
        assert!(matches!(
            parse_document(u, &resp(200, "application/json", &no_jwks)),
            Err(DiscoveryError::NotDiscovery { .. })
        ));
        let bad_type = ok.replace("\"https://idp.example.com/token\"", "5");
        assert!(matches!(
            parse_document(u, &resp(200, "application/json", &bad_type)),
            Err(DiscoveryError::NotDiscovery { .. })
        ));
    }
}
