//! The origin of a URL (`scheme://host[:port]`, default ports left out), as the
//! secret's binding compares them: one definition for the store (migrating old
//! records), the vault (the binding rules), the protocol side (the check where
//! the secret is sent) and the API (audit details).

/// The origin of an absolute URL; `None` for a URL without one (unparseable,
/// or an opaque origin such as `data:`).
pub fn origin_of(url: &str) -> Option<String> {
    let origin = url::Url::parse(url).ok()?.origin();
    origin.is_tuple().then(|| origin.ascii_serialization())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins() {
        assert_eq!(
            origin_of("https://IdP.Example.com:443/t").as_deref(),
            Some("https://idp.example.com")
        );
        assert_eq!(
            origin_of("http://127.0.0.1:8080/t").as_deref(),
            Some("http://127.0.0.1:8080")
        );
        assert_eq!(origin_of("not a url"), None);
        assert_eq!(origin_of("data:text/plain,x"), None);
    }
}
