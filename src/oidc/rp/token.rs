//! The code exchange at the token endpoint (OIDC Core §3.1.3) and the
//! userinfo request (§5.3). The client secret is sent only to the origin it is
//! bound to ([`may_send_secret`]), only in wiped buffers, and a redirect is an
//! error, never followed (the outbound client follows none on a POST).

use serde_json::Value;
use zeroize::Zeroizing;

use super::{fetch_is_temporary, shown, RpError, SLOT_WAIT};
use crate::crypto::SecretString;
use crate::oidc::connection_test::{
    basic_authorization, may_send_secret, quote, secret_spellings, token_form,
};
use crate::outbound::{FetchError, FormBody, Outbound};

/// One code exchange.
#[derive(Debug, Clone, Copy)]
pub struct TokenRequest<'a> {
    pub token_endpoint: &'a str,
    /// The only origin the client secret may go to (`None`: nowhere).
    pub bound_origin: Option<&'a str>,
    pub client_id: &'a str,
    pub code: &'a str,
    pub redirect_uri: &'a str,
    pub code_verifier: &'a str,
    /// The discovery document's `token_endpoint_auth_methods_supported`.
    pub auth_methods: Option<&'a [String]>,
}

/// The tokens of a successful exchange; wiped when dropped, never shown.
pub struct TokenResponse {
    pub id_token: Zeroizing<String>,
    pub access_token: Option<Zeroizing<String>>,
}

impl std::fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenResponse")
            .field("id_token", &"<redacted>")
            .field(
                "access_token",
                &self.access_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// Exchange an authorization code: client_secret_basic, or client_secret_post
/// when that is all `auth_methods` lists. Refused with [`RpError::NotBound`]
/// (nothing sent) unless the secret is bound to the token endpoint's origin.
pub fn exchange_code(
    out: &Outbound,
    r: &TokenRequest,
    secret: &SecretString,
) -> Result<TokenResponse, RpError> {
    may_send_secret(r.token_endpoint, r.bound_origin).map_err(RpError::NotBound)?;
    let supports = |m: &str| r.auth_methods.is_none_or(|ms| ms.iter().any(|x| x == m));
    let basic = supports("client_secret_basic");
    if !basic && !supports("client_secret_post") {
        let listed = r.auth_methods.unwrap_or_default().join(", ");
        return Err(RpError::UnsupportedAuthMethod(shown(&listed)));
    }
    let verifier = Some(r.code_verifier).filter(|v| !v.is_empty());
    let result = if basic {
        let header = basic_authorization(r.client_id, secret);
        let body = token_form(r.code, r.redirect_uri, verifier, None);
        out.patiently(SLOT_WAIT, || {
            out.post_form(r.token_endpoint, Some(header.as_str()), &body)
        })
    } else {
        let body = token_form(
            r.code,
            r.redirect_uri,
            verifier,
            Some((r.client_id, secret)),
        );
        out.patiently(SLOT_WAIT, || out.post_form(r.token_endpoint, None, &body))
    };
    let resp = result.map_err(|e| match e {
        FetchError::Timeout { .. } => RpError::TokenEndpointTimeout(e),
        FetchError::Busy { .. } => RpError::OutboundBusy(e),
        _ => RpError::TokenEndpointUnreachable(e),
    })?;
    // Anything the provider says is quoted without the secret, the code or
    // the verifier in any spelling.
    let mut spellings = secret_spellings(r.client_id, secret);
    for value in [r.code, r.code_verifier] {
        if !value.is_empty() {
            spellings.push(Zeroizing::new(value.to_owned()));
            spellings.push(Zeroizing::new(
                url::form_urlencoded::byte_serialize(value.as_bytes()).collect(),
            ));
        }
    }
    spellings.sort_by_key(|s| std::cmp::Reverse(s.len()));
    let json = serde_json::from_slice::<Value>(&resp.body).ok();
    if (300..400).contains(&resp.status) {
        return Err(RpError::TokenEndpointError {
            status: resp.status,
            error: Some(
                "a redirect, never followed for a token request: configure the final URL".into(),
            ),
            error_description: None,
        });
    }
    if !(200..300).contains(&resp.status) {
        let text = |k: &str| {
            json.as_ref()
                .and_then(|v| v.get(k))
                .and_then(Value::as_str)
                .map(|s| quote(s, &spellings).chars().take(200).collect())
        };
        return Err(RpError::TokenEndpointError {
            status: resp.status,
            error: text("error"),
            error_description: text("error_description"),
        });
    }
    let Some(Value::Object(mut obj)) = json else {
        return Err(RpError::NoIdToken(format!(
            "HTTP {} without a JSON object (content type {})",
            resp.status,
            resp.content_type
                .as_deref()
                .map(shown)
                .unwrap_or("none".into())
        )));
    };
    let mut take = |k: &str| match obj.remove(k) {
        Some(Value::String(s)) => Some(Zeroizing::new(s)),
        _ => None,
    };
    let id_token = take("id_token").ok_or_else(|| {
        RpError::NoIdToken("no \"id_token\" string in the answer (is \"openid\" granted?)".into())
    })?;
    let access_token = take("access_token");
    Ok(TokenResponse {
        id_token,
        access_token,
    })
}

/// The userinfo claims (OIDC Core §5.3), a JSON object. Sent as a POST with
/// the access token as a Bearer header (§5.3.1: providers support GET and
/// POST; a POST is never redirected by the outbound client, so the token
/// cannot follow a redirect). Comparing its `sub` with the ID token's is the
/// caller's ([`RpError::UserinfoSubMismatch`]).
pub fn userinfo(out: &Outbound, url: &str, access_token: &str) -> Result<Value, RpError> {
    let mut header = Zeroizing::new(String::with_capacity(7 + access_token.len()));
    header.push_str("Bearer ");
    header.push_str(access_token);
    let failed = |detail: String, temporary: bool| RpError::UserinfoFailed { detail, temporary };
    let empty: FormBody = Zeroizing::new(Vec::new());
    let resp = out
        .patiently(SLOT_WAIT, || {
            out.post_form(url, Some(header.as_str()), &empty)
        })
        .map_err(|e| {
            let temporary = fetch_is_temporary(&e);
            failed(e.to_string(), temporary)
        })?;
    if resp.status != 200 {
        return Err(failed(
            format!("HTTP {} from {}", resp.status, shown(url)),
            (500..600).contains(&resp.status),
        ));
    }
    match serde_json::from_slice::<Value>(&resp.body) {
        Ok(v @ Value::Object(_)) => Ok(v),
        _ => Err(failed(
            format!(
                "{} did not answer a JSON object (content type {}; signed or encrypted \
                 userinfo is not supported)",
                shown(url),
                resp.content_type
                    .as_deref()
                    .map(shown)
                    .unwrap_or("none".into())
            ),
            false,
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::test_support::{outbound, Reply, Stub};
    use super::*;

    const SECRET: &str = "s3cr3t/+&=";

    fn request<'a>(endpoint: &'a str, methods: Option<&'a [String]>) -> TokenRequest<'a> {
        TokenRequest {
            token_endpoint: endpoint,
            bound_origin: None,
            client_id: "cid",
            code: "the-code",
            redirect_uri: "https://vault.example/sso/callback",
            code_verifier: "the-verifier",
            auth_methods: methods,
        }
    }

    fn exchange(stub: &Stub, methods: Option<&[String]>) -> Result<TokenResponse, RpError> {
        let endpoint = stub.url("/token");
        let origin = stub.origin();
        let r = TokenRequest {
            bound_origin: Some(&origin),
            ..request(&endpoint, methods)
        };
        exchange_code(&outbound(), &r, &SecretString::new(SECRET.into()))
    }

    fn ok_tokens() -> Reply {
        Reply::json(
            200,
            r#"{"id_token":"a.b.c","access_token":"at","token_type":"Bearer"}"#,
        )
    }

    #[test]
    fn basic_by_default_post_when_that_is_all_listed() {
        let stub = Stub::start(|_| ok_tokens());
        let t = exchange(&stub, None).unwrap();
        assert_eq!(t.id_token.as_str(), "a.b.c");
        assert_eq!(t.access_token.as_deref().map(String::as_str), Some("at"));
        assert!(!format!("{t:?}").contains("a.b.c"));
        let both = vec!["client_secret_post".into(), "client_secret_basic".into()];
        exchange(&stub, Some(&both)).unwrap();
        let post = vec!["private_key_jwt".into(), "client_secret_post".into()];
        exchange(&stub, Some(&post)).unwrap();
        let seen = stub.requests();
        assert_eq!(seen.len(), 3);
        for (i, req) in seen.iter().enumerate() {
            let body = String::from_utf8_lossy(&req.body).to_string();
            assert_eq!(req.method, "POST");
            assert!(body.contains("grant_type=authorization_code&code=the-code&redirect_uri=https%3A%2F%2Fvault.example%2Fsso%2Fcallback&code_verifier=the-verifier"), "{body}");
            if i < 2 {
                let auth = req.header("authorization").unwrap_or_default();
                assert!(auth.starts_with("Basic "), "{auth}");
                assert!(!body.contains("client_secret"), "{body}");
            } else {
                assert_eq!(req.header("authorization"), None);
                assert!(
                    body.ends_with("&client_id=cid&client_secret=s3cr3t%2F%2B%26%3D"),
                    "{body}"
                );
            }
        }

        let neither = vec!["private_key_jwt".into()];
        let e = exchange(&stub, Some(&neither)).unwrap_err();
        assert_eq!(e.reason(), "unsupported_auth_method", "{e}");
        assert_eq!(stub.requests().len(), 3, "nothing sent");
    }

    #[test]
    fn the_secret_goes_nowhere_but_its_bound_origin() {
        let stub = Stub::start(|_| ok_tokens());
        let endpoint = stub.url("/token");
        let secret = SecretString::new(SECRET.into());
        for bound in [
            None,
            Some("https://idp.example"),
            Some("http://127.0.0.1:1"),
        ] {
            let r = TokenRequest {
                bound_origin: bound,
                ..request(&endpoint, None)
            };
            let e = exchange_code(&outbound(), &r, &secret).unwrap_err();
            assert_eq!(e.reason(), "not_bound", "{e}");
            assert!(!e.is_temporary());
        }
        assert!(stub.requests().is_empty(), "nothing may reach the endpoint");
    }

    #[test]
    fn token_endpoint_failures_map() {
        let stub = Stub::start(|req| match req.path.as_str() {
            "/redirect" => Reply::redirect(307, "https://elsewhere.example/token"),
            "/bad" => Reply::json(
                400,
                &format!(
                    r#"{{"error":"invalid_grant","error_description":"code the-code for secret {SECRET} is bad"}}"#
                ),
            ),
            "/down" => Reply::json(503, r#"{"error":"temporarily_unavailable"}"#),
            "/html" => Reply::text(200, "text/html", "<h1>hi</h1>"),
            "/noid" => Reply::json(200, r#"{"access_token":"at"}"#),
            "/hang" => Reply::Silence(Duration::from_secs(5)),
            _ => Reply::json(404, "{}"),
        });
        let origin = stub.origin();
        let secret = SecretString::new(SECRET.into());
        let run = |path: &str| {
            let endpoint = stub.url(path);
            let r = TokenRequest {
                bound_origin: Some(&origin),
                ..request(&endpoint, None)
            };
            exchange_code(&outbound(), &r, &secret).unwrap_err()
        };
        let e = run("/redirect");
        assert_eq!(
            (e.reason(), e.is_temporary()),
            ("token_endpoint_error", false),
            "{e}"
        );
        assert!(e.to_string().contains("307"), "{e}");
        let e = run("/bad");
        assert_eq!(
            (e.reason(), e.is_temporary()),
            ("token_endpoint_error", false),
            "{e}"
        );
        let shown = e.to_string();
        assert!(shown.contains("invalid_grant"), "{shown}");
        assert!(
            !shown.contains("the-code") && !shown.contains(SECRET),
            "{shown}"
        );
        let e = run("/down");
        assert_eq!(
            (e.reason(), e.is_temporary()),
            ("token_endpoint_error", true),
            "{e}"
        );
        let e = run("/html");
        assert_eq!(e.reason(), "no_id_token", "{e}");
        let e = run("/noid");
        assert_eq!(e.reason(), "no_id_token", "{e}");
        let e = run("/hang");
        assert_eq!(
            (e.reason(), e.is_temporary()),
            ("token_endpoint_timeout", true),
            "{e}"
        );

        // Nobody listening: unreachable, temporary.
        let closed = super::super::test_support::closed_port_url("/token");
        let closed_origin = crate::origin::origin_of(&closed).unwrap();
        let r = TokenRequest {
            bound_origin: Some(&closed_origin),
            ..request(&closed, None)
        };
        let e = exchange_code(&outbound(), &r, &secret).unwrap_err();
        assert_eq!(
            (e.reason(), e.is_temporary()),
            ("token_endpoint_unreachable", true),
            "{e}"
        );
    }

    #[test]
    fn userinfo_answers_and_errors() {
        let stub = Stub::start(|req| match req.path.as_str() {
            "/ok" if req.header("authorization") == Some("Bearer at-1") => {
                Reply::json(200, r#"{"sub":"u1","email":"ann@acme.com"}"#)
            }
            "/ok" => Reply::json(401, r#"{"error":"invalid_token"}"#),
            "/down" => Reply::json(502, "{}"),
            "/jwt" => Reply::text(200, "application/jwt", "a.b.c"),
            _ => Reply::json(404, "{}"),
        });
        let v = userinfo(&outbound(), &stub.url("/ok"), "at-1").unwrap();
        assert_eq!(v["email"], "ann@acme.com");
        let e = userinfo(&outbound(), &stub.url("/ok"), "at-2").unwrap_err();
        assert_eq!(
            (e.reason(), e.is_temporary()),
            ("userinfo_failed", false),
            "{e}"
        );
        assert!(!e.to_string().contains("at-2"), "{e}");
        let e = userinfo(&outbound(), &stub.url("/down"), "at-1").unwrap_err();
        assert_eq!(
            (e.reason(), e.is_temporary()),
            ("userinfo_failed", true),
            "{e}"
        );
        let e = userinfo(&outbound(), &stub.url("/jwt"), "at-1").unwrap_err();
        assert_eq!(
            (e.reason(), e.is_temporary()),
            ("userinfo_failed", false),
            "{e}"
        );
        let e = userinfo(
            &outbound(),
            &super::super::test_support::closed_port_url("/u"),
            "at-1",
        )
        .unwrap_err();
        assert_eq!(
            (e.reason(), e.is_temporary()),
            ("userinfo_failed", true),
            "{e}"
        );
    }
}
