//! The authentication request (OIDC Core §3.1.2.1): where the browser is sent.

use super::RpError;

/// The parameters the broker chose for one sign-in.
#[derive(Debug, Clone, Copy)]
pub struct AuthorizeRequest<'a> {
    pub endpoint: &'a str,
    pub client_id: &'a str,
    pub redirect_uri: &'a str,
    pub state: &'a str,
    pub nonce: &'a str,
    pub code_challenge: &'a str,
    pub login_hint: Option<&'a str>,
}

/// The names this request sets: any of them already in the endpoint's own
/// query is replaced (RFC 6749 §3.1: a parameter is sent at most once).
const OURS: [&str; 9] = [
    "response_type",
    "client_id",
    "redirect_uri",
    "scope",
    "state",
    "nonce",
    "code_challenge",
    "code_challenge_method",
    "login_hint",
];

/// The authorization URL: the endpoint with its own query parameters kept
/// (RFC 6749 §3.1) and the code-flow parameters added: `response_type=code`,
/// `scope=openid email profile`, PKCE `S256`.
pub fn authorization_url(r: &AuthorizeRequest) -> Result<String, RpError> {
    let bad = |why: &str| RpError::BadAuthorizationEndpoint(why.to_owned());
    let mut url = url::Url::parse(r.endpoint).map_err(|_| bad("not an absolute URL"))?;
    if !matches!(url.scheme(), "https" | "http") {
        return Err(bad("not an http(s) URL"));
    }
    if url.fragment().is_some() {
        return Err(bad("it has a fragment (RFC 6749 §3.1 forbids one)"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("it has credentials in it"));
    }
    let kept: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(k, _)| !OURS.contains(&k.as_ref()))
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    {
        let mut q = url.query_pairs_mut();
        q.clear();
        q.extend_pairs(kept);
        q.append_pair("response_type", "code");
        q.append_pair("client_id", r.client_id);
        q.append_pair("redirect_uri", r.redirect_uri);
        q.append_pair("scope", "openid email profile");
        q.append_pair("state", r.state);
        q.append_pair("nonce", r.nonce);
        q.append_pair("code_challenge", r.code_challenge);
        q.append_pair("code_challenge_method", "S256");
        if let Some(hint) = r.login_hint {
            q.append_pair("login_hint", hint);
        }
    }
    Ok(url.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(endpoint: &str) -> AuthorizeRequest<'_> {
        AuthorizeRequest {
            endpoint,
            client_id: "my client",
            redirect_uri: "https://vault.example/sso/callback",
            state: "st",
            nonce: "no",
            code_challenge: "ch",
            login_hint: Some("ann@acme.com"),
        }
    }

    #[test]
    fn the_endpoints_own_query_is_kept_and_ours_added_once() {
        let u = authorization_url(&req(
            "https://idp.example/authorize?tenant=a%20b&scope=evil&prompt=login",
        ))
        .unwrap();
        let parsed = url::Url::parse(&u).unwrap();
        let pairs: Vec<(String, String)> = parsed.query_pairs().into_owned().collect();
        let get = |k: &str| {
            let v: Vec<&str> = pairs
                .iter()
                .filter(|(n, _)| n == k)
                .map(|(_, v)| v.as_str())
                .collect();
            assert!(v.len() <= 1, "{k} sent {} times: {u}", v.len());
            v.first().map(|s| s.to_string())
        };
        assert_eq!(parsed.path(), "/authorize");
        assert_eq!(get("tenant").as_deref(), Some("a b"));
        assert_eq!(get("prompt").as_deref(), Some("login"));
        assert_eq!(get("scope").as_deref(), Some("openid email profile"));
        assert_eq!(get("response_type").as_deref(), Some("code"));
        assert_eq!(get("client_id").as_deref(), Some("my client"));
        assert_eq!(
            get("redirect_uri").as_deref(),
            Some("https://vault.example/sso/callback")
        );
        assert_eq!(get("state").as_deref(), Some("st"));
        assert_eq!(get("nonce").as_deref(), Some("no"));
        assert_eq!(get("code_challenge").as_deref(), Some("ch"));
        assert_eq!(get("code_challenge_method").as_deref(), Some("S256"));
        assert_eq!(get("login_hint").as_deref(), Some("ann@acme.com"));

        let no_hint = AuthorizeRequest {
            login_hint: None,
            ..req("https://idp.example/authorize")
        };
        let u = authorization_url(&no_hint).unwrap();
        assert!(!u.contains("login_hint"), "{u}");
    }

    #[test]
    fn unusable_endpoints_are_refused() {
        for bad in [
            "idp.example/authorize",
            "javascript:alert(1)",
            "https://idp.example/authorize#frag",
            "https://user:pw@idp.example/authorize",
        ] {
            let e = authorization_url(&req(bad)).unwrap_err();
            assert_eq!(e.reason(), "bad_authorization_endpoint", "{bad}: {e}");
        }
    }
}
