//! The connection test: checks, without a user, that discovery answers and is
//! consistent, that each endpoint answers (over TLS unless allowlisted), that
//! the JWKS loads, and that the token endpoint accepts the client's
//! credentials: a token request with a deliberately invalid authorization code
//! answers `invalid_grant` when the client authenticated, `invalid_client` when
//! it did not. The client secret goes only to the origin it is bound to
//! ([`may_send_secret`]).
//!
//! Blocking (outbound HTTP is): async callers use `actix_web::web::block`.
//!
//! One room, over 600 lines: the test's six steps share the provider-text
//! quoting, the credential spellings and the origin check, and about 100 of
//! the lines are its unit tests.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use rand::RngCore;
use serde_json::Value;
use zeroize::Zeroizing;

use super::discovery::{fetch, ProviderMetadata};
use crate::crypto::SecretString;
use crate::origin::origin_of;
use crate::outbound::{FormBody, Outbound};

/// Provider text quoted in an answer is cut to this many characters.
const PROVIDER_TEXT_MAX: usize = 500;
/// Sent as `redirect_uri` with the deliberately invalid code: never visited.
pub const TEST_REDIRECT_URI: &str = "https://oidcvault.invalid/connection-test";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepStatus {
    Pass,
    Fail,
    Skip,
}

impl StepStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            StepStatus::Pass => "pass",
            StepStatus::Fail => "fail",
            StepStatus::Skip => "skip",
        }
    }
}

/// The provider's own error answer (RFC 6749 §5.2), quoted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderError {
    pub status: u16,
    pub error: Option<String>,
    pub error_description: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub name: &'static str,
    pub status: StepStatus,
    pub url: Option<String>,
    pub detail: String,
    pub provider_error: Option<ProviderError>,
}

impl Step {
    fn new(name: &'static str, status: StepStatus, url: Option<&str>, detail: String) -> Self {
        Self {
            name,
            status,
            url: url.map(str::to_owned),
            detail,
            provider_error: None,
        }
    }
}

/// What the connection test needs of a stored configuration.
#[derive(Debug, Clone)]
pub struct TestInput {
    pub discovery_url: Option<String>,
    pub authorization_endpoint: Option<String>,
    pub token_endpoint: Option<String>,
    pub userinfo_endpoint: Option<String>,
    pub client_id: String,
    /// The only origin the client secret may be sent to (`None`: nowhere).
    pub secret_origin: Option<String>,
}

/// Every spelling of the credentials a provider might echo back: the secret
/// raw, form- and percent-encoded, in base64 and base64url (padded or not), and
/// the HTTP Basic credentials (`id:secret`, form-encoded first, as sent, and
/// raw), encoded the same ways. Longest first, so that a longer form is
/// replaced before a shorter one inside it.
pub(crate) fn secret_spellings(client_id: &str, secret: &SecretString) -> Vec<Zeroizing<String>> {
    use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
    let raw = secret.expose();
    if raw.is_empty() {
        return Vec::new();
    }
    let form = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let basic_sent = Zeroizing::new(format!("{}:{}", form(client_id), form(raw)));
    let basic_raw = Zeroizing::new(format!("{client_id}:{raw}"));
    let mut out: Vec<Zeroizing<String>> = Vec::new();
    for text in [raw, basic_sent.as_str(), basic_raw.as_str()] {
        out.push(Zeroizing::new(text.to_owned()));
        out.push(Zeroizing::new(form(text)));
        let pct = utf8_percent_encode(text, NON_ALPHANUMERIC).to_string();
        out.push(Zeroizing::new(pct.to_ascii_lowercase()));
        out.push(Zeroizing::new(pct));
        for engine in [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD] {
            out.push(Zeroizing::new(engine.encode(text.as_bytes())));
        }
    }
    out.sort_by_key(|s| std::cmp::Reverse(s.len()));
    out.dedup_by(|a, b| a.as_str() == b.as_str());
    out
}

/// Quote provider text: every spelling of the credentials redacted (before
/// anything is cut, so no part of one survives at the cut), control characters
/// dropped, then cut.
pub(crate) fn quote(text: &str, spellings: &[Zeroizing<String>]) -> String {
    let redact = |mut s: String| {
        for needle in spellings {
            if s.contains(needle.as_str()) {
                s = s.replace(needle.as_str(), "[redacted]");
            }
        }
        s
    };
    // Twice: once as given, once with control characters gone (which could
    // otherwise split a spelling in two).
    let clean: String = redact(text.to_owned())
        .chars()
        .filter(|c| !c.is_control())
        .collect();
    redact(clean).chars().take(PROVIDER_TEXT_MAX).collect()
}

fn reachability(
    name: &'static str,
    outbound: &Outbound,
    url: Option<&str>,
    optional: bool,
) -> Step {
    let Some(url) = url else {
        return if optional {
            Step::new(
                name,
                StepStatus::Skip,
                None,
                "Not configured and not in the discovery document (optional).".into(),
            )
        } else {
            Step::new(
                name,
                StepStatus::Fail,
                None,
                "Not configured, and no discovery document names it.".into(),
            )
        };
    };
    match outbound.get(url, "*/*") {
        Ok(resp) => {
            let tls = if resp.url.scheme() == "https" {
                "over TLS"
            } else {
                "over plain http (allowlisted host)"
            };
            Step::new(
                name,
                StepStatus::Pass,
                Some(url),
                format!(
                    "Reachable {tls}: HTTP {} (any answer counts; no user is involved).",
                    resp.status
                ),
            )
        }
        Err(e) => Step::new(name, StepStatus::Fail, Some(url), e.to_string()),
    }
}

fn jwks_step(outbound: &Outbound, jwks_uri: Option<&str>) -> Step {
    const NAME: &str = "jwks";
    let Some(uri) = jwks_uri else {
        return Step::new(
            NAME,
            StepStatus::Skip,
            None,
            "No discovery document, so no jwks_uri to load.".into(),
        );
    };
    let resp = match outbound.get(uri, "application/json, application/jwk-set+json") {
        Ok(r) => r,
        Err(e) => return Step::new(NAME, StepStatus::Fail, Some(uri), e.to_string()),
    };
    if resp.status != 200 {
        return Step::new(
            NAME,
            StepStatus::Fail,
            Some(uri),
            format!("HTTP {} instead of a JWK set.", resp.status),
        );
    }
    let keys = resp
        .json()
        .and_then(|v| v.get("keys").and_then(Value::as_array).cloned());
    match keys {
        None => Step::new(
            NAME,
            StepStatus::Fail,
            Some(uri),
            "Not a JWK set: no \"keys\" array in a JSON object.".into(),
        ),
        Some(k) if k.is_empty() => Step::new(
            NAME,
            StepStatus::Fail,
            Some(uri),
            "The JWK set has no keys: ID tokens could not be verified.".into(),
        ),
        Some(k)
            if k.iter()
                .any(|key| key.get("kty").and_then(Value::as_str).is_none()) =>
        {
            Step::new(
                NAME,
                StepStatus::Fail,
                Some(uri),
                "A key of the JWK set has no \"kty\".".into(),
            )
        }
        Some(k) => {
            let kids: Vec<String> = k
                .iter()
                .filter_map(|key| key.get("kid").and_then(Value::as_str))
                .map(|s| s.chars().take(64).collect())
                .collect();
            Step::new(
                NAME,
                StepStatus::Pass,
                Some(uri),
                format!(
                    "{} key(s) loaded{}.",
                    k.len(),
                    if kids.is_empty() {
                        String::new()
                    } else {
                        format!(" (kid: {})", kids.join(", "))
                    }
                ),
            )
        }
    }
}

/// RFC 6749 §2.3.1: client id and secret are form-urlencoded, then joined by
/// `:` and base64-encoded. Every buffer holding the secret is wiped on drop.
pub(crate) fn basic_authorization(client_id: &str, secret: &SecretString) -> Zeroizing<String> {
    let mut joined = Zeroizing::new(String::with_capacity(
        3 * (client_id.len() + secret.expose().len()) + 1,
    ));
    joined.extend(url::form_urlencoded::byte_serialize(client_id.as_bytes()));
    joined.push(':');
    joined.extend(url::form_urlencoded::byte_serialize(
        secret.expose().as_bytes(),
    ));
    let mut header = Zeroizing::new(String::with_capacity(6 + joined.len().div_ceil(3) * 4 + 4));
    header.push_str("Basic ");
    STANDARD.encode_string(joined.as_bytes(), &mut header);
    header
}

/// The token request's form body for the authorization-code grant (with the
/// PKCE verifier when given, and the credentials for client_secret_post).
pub(crate) fn token_form(
    code: &str,
    redirect_uri: &str,
    code_verifier: Option<&str>,
    post_credentials: Option<(&str, &SecretString)>,
) -> FormBody {
    let extra = post_credentials.map_or(0, |(id, s)| 3 * (id.len() + s.expose().len()) + 32)
        + 3 * (code.len() + redirect_uri.len() + code_verifier.map_or(0, str::len));
    let mut body = Zeroizing::new(String::with_capacity(256 + extra));
    let mut pair = |k: &str, v: &str| {
        if !body.is_empty() {
            body.push('&');
        }
        body.push_str(k);
        body.push('=');
        body.extend(url::form_urlencoded::byte_serialize(v.as_bytes()));
    };
    pair("grant_type", "authorization_code");
    pair("code", code);
    pair("redirect_uri", redirect_uri);
    if let Some(verifier) = code_verifier {
        pair("code_verifier", verifier);
    }
    if let Some((id, secret)) = post_credentials {
        pair("client_id", id);
        pair("client_secret", secret.expose());
    }
    let mut bytes = Zeroizing::new(Vec::with_capacity(body.len()));
    bytes.extend_from_slice(body.as_bytes());
    bytes
}

/// Whether the secret may be sent to `url`: only to the origin it is bound to.
/// `Err` says why not, for the operator.
pub fn may_send_secret(url: &str, bound: Option<&str>) -> Result<(), String> {
    let target = origin_of(url);
    match bound {
        Some(b) if target.as_deref() == Some(b) => Ok(()),
        Some(b) => Err(format!(
            "Not sent: the client secret is bound to {b}, the token endpoint it was written \
             with, and is never sent to another origin ({}). If the provider really moved, \
             save the client secret again together with the new token endpoint.",
            target.as_deref().unwrap_or(url)
        )),
        None => Err(format!(
            "Not sent: the client secret was written without a token endpoint, so it is \
             bound to none. Save the client secret again together with the token endpoint \
             ({}) to bind it there.",
            target.as_deref().unwrap_or(url)
        )),
    }
}

fn client_step(
    outbound: &Outbound,
    token_endpoint: Option<&str>,
    methods: Option<&[String]>,
    input: &TestInput,
    secret: &SecretString,
) -> Step {
    const NAME: &str = "client_authentication";
    let client_id = input.client_id.as_str();
    let Some(url) = token_endpoint else {
        return Step::new(
            NAME,
            StepStatus::Fail,
            None,
            "No token endpoint to authenticate the client against.".into(),
        );
    };
    // The one check that keeps the secret where its writer bound it, whatever
    // the stored endpoints or the discovery document say by now.
    if let Err(why) = may_send_secret(url, input.secret_origin.as_deref()) {
        return Step::new(NAME, StepStatus::Fail, Some(url), why);
    }
    let supports = |m: &str| methods.is_none_or(|ms| ms.iter().any(|x| x == m));
    let basic = supports("client_secret_basic");
    if !basic && !supports("client_secret_post") {
        return Step::new(
            NAME,
            StepStatus::Fail,
            Some(url),
            format!(
                "The provider supports neither client_secret_basic nor client_secret_post \
                 (it lists: {}); a client secret cannot authenticate this client.",
                methods.unwrap_or_default().join(", ")
            ),
        );
    }
    let method = if basic {
        "client_secret_basic"
    } else {
        "client_secret_post"
    };
    let mut random = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut random);
    let code: String = format!(
        "oidcvault-connection-test-{}",
        random
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    let result = if basic {
        let header = basic_authorization(client_id, secret);
        outbound.post_form(
            url,
            Some(header.as_str()),
            &token_form(&code, TEST_REDIRECT_URI, None, None),
        )
    } else {
        outbound.post_form(
            url,
            None,
            &token_form(&code, TEST_REDIRECT_URI, None, Some((client_id, secret))),
        )
    };
    let resp = match result {
        Ok(r) => r,
        Err(e) => return Step::new(NAME, StepStatus::Fail, Some(url), e.to_string()),
    };
    let json = resp.json();
    let spellings = secret_spellings(client_id, secret);
    let text = |k: &str| {
        json.as_ref()
            .and_then(|v| v.get(k))
            .and_then(Value::as_str)
            .map(|s| quote(s, &spellings))
    };
    let provider_error = ProviderError {
        status: resp.status,
        error: text("error"),
        error_description: text("error_description"),
    };
    let (status, detail) = match provider_error.error.as_deref() {
        _ if (200..300).contains(&resp.status) => (
            StepStatus::Fail,
            format!("The token endpoint answered HTTP {} to a deliberately invalid code; it should have refused it.", resp.status),
        ),
        Some("invalid_grant") => (
            StepStatus::Pass,
            format!("The client authenticated ({method}): the provider refused only the deliberately invalid code (invalid_grant)."),
        ),
        Some("invalid_client") => (
            StepStatus::Fail,
            format!("The provider did not accept the client credentials ({method}): check client_id and client_secret."),
        ),
        Some("unauthorized_client") => (
            StepStatus::Fail,
            format!("The client authenticated ({method}) but may not use the authorization_code grant: enable it for this client at the provider."),
        ),
        Some(other) => (
            StepStatus::Fail,
            format!("Inconclusive: the provider answered {other:?} instead of invalid_grant or invalid_client."),
        ),
        None if resp.status == 401 => (
            StepStatus::Fail,
            format!("The provider answered HTTP 401 without an OAuth error: the client credentials ({method}) were not accepted."),
        ),
        None if (300..400).contains(&resp.status) => (
            StepStatus::Fail,
            format!("The token endpoint redirects (HTTP {}); a token request is never redirected: configure the final URL.", resp.status),
        ),
        None => (
            StepStatus::Fail,
            format!("The token endpoint answered HTTP {} without an OAuth error (content type {}).", resp.status, resp.content_type.as_deref().unwrap_or("none")),
        ),
    };
    let mut step = Step::new(NAME, status, Some(url), detail);
    step.provider_error = Some(provider_error);
    step
}

/// Run the connection test. The secret is borrowed for this call only.
pub fn test_connection(outbound: &Outbound, input: &TestInput, secret: &SecretString) -> Vec<Step> {
    let mut steps = Vec::new();
    let mut meta: Option<ProviderMetadata> = None;
    match &input.discovery_url {
        None => steps.push(Step::new(
            "discovery",
            StepStatus::Skip,
            None,
            "No discovery_url is configured: the stored endpoints are tested as they are, and \
             the provider's JWKS cannot be located."
                .into(),
        )),
        Some(url) => match fetch(outbound, url) {
            Ok(m) => {
                let mut notes = Vec::new();
                let stored = [
                    (
                        "authorization_endpoint",
                        &input.authorization_endpoint,
                        Some(&m.authorization_endpoint),
                    ),
                    (
                        "token_endpoint",
                        &input.token_endpoint,
                        m.token_endpoint.as_ref(),
                    ),
                    (
                        "userinfo_endpoint",
                        &input.userinfo_endpoint,
                        m.userinfo_endpoint.as_ref(),
                    ),
                ];
                for (field, ours, theirs) in stored {
                    if let Some(ours) = ours {
                        if Some(ours) != theirs {
                            notes.push(format!(
                                "the stored {field} differs from the document's ({}): refresh updates it unless it was set by hand",
                                theirs.map_or("none", String::as_str)
                            ));
                        }
                    }
                }
                let detail = format!(
                    "The issuer {} matches the discovery URL and every endpoint passes the outbound guard{}",
                    m.issuer,
                    if notes.is_empty() { ".".to_owned() } else { format!("; note: {}.", notes.join("; ")) }
                );
                steps.push(Step::new("discovery", StepStatus::Pass, Some(url), detail));
                meta = Some(m);
            }
            Err(e) => steps.push(Step::new(
                "discovery",
                StepStatus::Fail,
                Some(url),
                e.to_string(),
            )),
        },
    }
    let pick =
        |ours: &Option<String>, theirs: Option<&String>| ours.clone().or_else(|| theirs.cloned());
    let authorization = pick(
        &input.authorization_endpoint,
        meta.as_ref().map(|m| &m.authorization_endpoint),
    );
    let token = pick(
        &input.token_endpoint,
        meta.as_ref().and_then(|m| m.token_endpoint.as_ref()),
    );
    let userinfo = pick(
        &input.userinfo_endpoint,
        meta.as_ref().and_then(|m| m.userinfo_endpoint.as_ref()),
    );
    steps.push(reachability(
        "authorization_endpoint",
        outbound,
        authorization.as_deref(),
        false,
    ));
    steps.push(reachability(
        "token_endpoint",
        outbound,
        token.as_deref(),
        false,
    ));
    steps.push(reachability(
        "userinfo_endpoint",
        outbound,
        userinfo.as_deref(),
        true,
    ));
    let jwks = match (&input.discovery_url, &meta) {
        (Some(_), None) => Step::new(
            "jwks",
            StepStatus::Fail,
            None,
            "The discovery document did not load, so the jwks_uri is unknown.".into(),
        ),
        (_, m) => jwks_step(outbound, m.as_ref().map(|m| m.jwks_uri.as_str())),
    };
    steps.push(jwks);
    steps.push(client_step(
        outbound,
        token.as_deref(),
        meta.as_ref()
            .and_then(|m| m.token_endpoint_auth_methods_supported.as_deref()),
        input,
        secret,
    ));
    steps
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_are_form_encoded_first() {
        let secret = SecretString::new("p@ss:w rd/+".into());
        let h = basic_authorization("my client", &secret);
        let decoded = STANDARD.decode(h.strip_prefix("Basic ").unwrap()).unwrap();
        assert_eq!(
            String::from_utf8(decoded).unwrap(),
            "my+client:p%40ss%3Aw+rd%2F%2B"
        );
    }

    #[test]
    fn post_form_carries_credentials_only_when_asked() {
        let secret = SecretString::new("s3cret&x=1".into());
        let body = token_form("abc", TEST_REDIRECT_URI, None, None);
        let text = std::str::from_utf8(&body).unwrap();
        assert!(
            text.starts_with("grant_type=authorization_code&code=abc&redirect_uri=https%3A%2F%2F"),
            "{text}"
        );
        assert!(!text.contains("client_secret"));
        let body = token_form(
            "abc",
            TEST_REDIRECT_URI,
            Some("v-1"),
            Some(("cid", &secret)),
        );
        let text = std::str::from_utf8(&body).unwrap();
        assert!(
            text.ends_with("&code_verifier=v-1&client_id=cid&client_secret=s3cret%26x%3D1"),
            "{text}"
        );
    }

    #[test]
    fn provider_text_is_cut_and_never_echoes_the_secret() {
        let raw = "hunter2 very/secret+=?";
        let secret = SecretString::new(raw.into());
        let spellings = secret_spellings("my client", &secret);
        let pct: String =
            percent_encoding::utf8_percent_encode(raw, percent_encoding::NON_ALPHANUMERIC)
                .to_string();
        let form: String = url::form_urlencoded::byte_serialize(raw.as_bytes()).collect();
        let basic = basic_authorization("my client", &secret);
        let basic_b64 = basic.strip_prefix("Basic ").unwrap().to_owned();
        use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD};
        let echoes = [
            raw.to_owned(),
            pct.clone(),
            pct.to_ascii_lowercase(),
            form,
            STANDARD.encode(raw),
            URL_SAFE.encode(raw),
            URL_SAFE_NO_PAD.encode(raw),
            basic_b64.clone(),
            format!("my client:{raw}"),
            basic.to_string(),
        ];
        for echo in &echoes {
            let q = quote(&format!("bad credentials {echo} for client"), &spellings);
            assert!(q.contains("[redacted]"), "{echo} -> {q}");
            for e in &echoes {
                assert!(!q.contains(e.as_str()), "{e} survives in {q}");
            }
        }
        // A secret split by a control character is found, too.
        let q = quote("x hunter2 very/\u{7}secret+=? y", &spellings);
        assert!(!q.contains("very/secret"), "{q}");
        // Redacted before the cut: no prefix of the secret survives at the end.
        let near_cut = format!("{}{raw}", "x".repeat(PROVIDER_TEXT_MAX - 8));
        let q = quote(&near_cut, &spellings);
        assert!(!q.contains("hunter2 "), "{q}");
        assert_eq!(
            quote(&"x".repeat(5000), &spellings).len(),
            PROVIDER_TEXT_MAX
        );
    }

    #[test]
    fn the_secret_goes_only_to_its_bound_origin() {
        let bound = Some("https://idp.example.com");
        assert!(may_send_secret("https://idp.example.com/oauth/token", bound).is_ok());
        assert!(may_send_secret("https://idp.example.com:443/t", bound).is_ok());
        for elsewhere in [
            "https://attacker.example/t",
            "https://idp.example.com:444/t",
            "http://idp.example.com/t",
            "https://idp.example.com.attacker.example/t",
            "not a url",
        ] {
            let e = may_send_secret(elsewhere, bound).unwrap_err();
            assert!(e.starts_with("Not sent"), "{e}");
        }
        assert!(may_send_secret("https://idp.example.com/t", None).is_err());
    }
}
