//! Which redirect URIs an application may register.
//!
//! A redirect URI is compared exactly (character for character) with the one
//! an application sends at sign-in, so it is checked as written, against a
//! grammar narrower than RFC 3986 and the URL standard, with no normalisation:
//!
//! ```text
//! uri   = "https://" host [":" port] [path] ["?" query]
//!       | "http://" loopback [":" port] [path] ["?" query]
//! host  = dns-name | ipv4 | "[::1]"
//! loopback = "localhost" | ipv4 in 127.0.0.0/8 | "[::1]"
//! dns-name = labels of 1..=63 letters, digits and inner hyphens, separated by
//!            dots; the last one starts with a letter
//! ipv4  = four decimal numbers 0..=255 without leading zeros
//! port  = 1..=65535 without leading zeros
//! path  = "/" *(unreserved | sub-delims | ":" | "@" | "/" | "%" HEXDIG HEXDIG)
//! query = *(the same | "?")
//! ```
//!
//! No credentials, no fragment (RFC 6749 §3.1.2), no white space, at most 2048
//! characters; the result must also parse as a URL. The OpenAPI document
//! states the same grammar as a pattern (`api::openapi::REDIRECT_URI_PATTERN`),
//! so a client (and the fuzzer) can tell in advance what is accepted.

const MAX_CHARS: usize = 2048;
const BLANK: &str = "This field may not be blank.";
const INVALID_URL: &str = "Enter a valid URL.";
const HTTPS_ONLY: &str = "Enter an https URL (http is accepted for loopback hosts only).";
const BAD_HOST: &str =
    "Enter a host name or an IPv4 address (of IPv6 addresses, only [::1] is accepted).";

enum Host {
    Loopback,
    Other,
}

fn ipv4(host: &str) -> Option<[u8; 4]> {
    let parts: Vec<&str> = host.split('.').collect();
    let mut out = [0u8; 4];
    if parts.len() != 4 {
        return None;
    }
    for (slot, part) in out.iter_mut().zip(parts) {
        let canonical = !part.is_empty()
            && part.len() <= 3
            && part.bytes().all(|b| b.is_ascii_digit())
            && (part == "0" || !part.starts_with('0'));
        *slot = if canonical { part.parse().ok()? } else { None? };
    }
    Some(out)
}

fn dns_name(host: &str) -> bool {
    let labels: Vec<&str> = host.split('.').collect();
    let label_ok = |l: &&str| {
        (1..=63).contains(&l.len())
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    labels.iter().all(label_ok)
        && labels
            .last()
            .is_some_and(|l| l.bytes().next().is_some_and(|b| b.is_ascii_alphabetic()))
}

fn host(host: &str) -> Result<Host, String> {
    if host == "localhost" || host == "[::1]" {
        return Ok(Host::Loopback);
    }
    if let Some(ip) = ipv4(host) {
        return Ok(if ip[0] == 127 {
            Host::Loopback
        } else {
            Host::Other
        });
    }
    if dns_name(host) {
        Ok(Host::Other)
    } else {
        Err(BAD_HOST.into())
    }
}

fn port(port: &str) -> bool {
    !port.starts_with('0')
        && (1..=5).contains(&port.len())
        && port.bytes().all(|b| b.is_ascii_digit())
        && port.parse::<u16>().is_ok()
}

/// Path and query: RFC 3986's characters of a path (and `?` in the query),
/// `%` only as the start of an escape.
fn path_and_query(rest: &str) -> bool {
    let (path, query) = match rest.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (rest, None),
    };
    let allowed = |c: u8, extra: &[u8]| {
        c.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/".contains(&c) || extra.contains(&c)
    };
    let chars_ok = |s: &str, extra: &[u8]| {
        let b = s.as_bytes();
        let mut i = 0;
        while let Some(&c) = b.get(i) {
            if c == b'%' {
                let hex = |j: usize| b.get(j).is_some_and(u8::is_ascii_hexdigit);
                if !(hex(i + 1) && hex(i + 2)) {
                    return false;
                }
                i += 3;
            } else if allowed(c, extra) {
                i += 1;
            } else {
                return false;
            }
        }
        true
    };
    (path.is_empty() || path.starts_with('/'))
        && chars_ok(path, b"")
        && query.is_none_or(|q| chars_ok(q, b"?"))
}

/// One redirect URI (see the module doc for the rules); the message says why not.
pub(super) fn check(value: &str) -> Result<(), String> {
    if value.trim().is_empty() {
        return Err(BLANK.into());
    }
    if value.chars().count() > MAX_CHARS {
        return Err(format!(
            "Ensure this field has no more than {MAX_CHARS} characters."
        ));
    }
    if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(INVALID_URL.into());
    }
    let (https, rest) = if let Some(rest) = value.strip_prefix("https://") {
        (true, rest)
    } else if let Some(rest) = value.strip_prefix("http://") {
        (false, rest)
    } else {
        // Another scheme (or this one written otherwise, which would never
        // match what an application sends).
        return Err(match url::Url::parse(value) {
            Ok(u) if !matches!(u.scheme(), "http" | "https") => HTTPS_ONLY.into(),
            _ => INVALID_URL.into(),
        });
    };
    if value.contains('#') {
        return Err("Redirect URIs must not contain a fragment.".into());
    }
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    if authority.contains('@') {
        return Err("URLs must not contain credentials.".into());
    }
    let (host_part, port_part) = match authority.strip_prefix('[') {
        Some(v6) => match v6.split_once(']') {
            Some((inner, after)) => (&authority[..inner.len() + 2], after),
            None => return Err(INVALID_URL.into()),
        },
        None => authority.split_at(authority.find(':').unwrap_or(authority.len())),
    };
    if let Some(p) = port_part.strip_prefix(':') {
        if !port(p) {
            return Err("Enter a port from 1 to 65535 (no leading zeros).".into());
        }
    } else if !port_part.is_empty() {
        return Err(INVALID_URL.into());
    }
    let loopback = matches!(host(host_part)?, Host::Loopback);
    if !https && !loopback {
        return Err(HTTPS_ONLY.into());
    }
    if !path_and_query(tail) || url::Url::parse(value).is_err() {
        return Err(INVALID_URL.into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted() {
        for ok in [
            "https://app.example.com/callback",
            "https://App.Example.com:8443/cb?tenant=1&x=a%20b",
            "https://app.example.com",
            "https://app.example.com?x=1",
            "https://a.example/c/b;p=1/(x)*'!$,+=:@~",
            "https://localhost/cb",
            "https://10.0.0.5/cb",
            "https://xn--bcher-kva.example/cb",
            "https://[::1]:65535/cb",
            "http://localhost:3000/cb",
            "http://127.0.0.1/cb",
            "http://127.8.9.10:9/cb",
            "http://[::1]:8080/cb",
        ] {
            assert_eq!(check(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn refused_with_a_reason() {
        for (bad, says) in [
            ("", "blank"),
            ("   ", "blank"),
            ("app.example.com/cb", "valid URL"),
            ("/cb", "valid URL"),
            ("HTTPS://app.example.com/cb", "valid URL"),
            ("https:app.example.com/cb", "valid URL"),
            ("https:/app.example.com/cb", "valid URL"),
            ("https://app.example.com/a b", "valid URL"),
            ("https://app.example.com/\u{7}", "valid URL"),
            ("https://app.example.com/é", "valid URL"),
            ("https://app.example.com/a\"b", "valid URL"),
            ("https://app.example.com/a%zz", "valid URL"),
            ("https://app.example.com/a%2", "valid URL"),
            ("https://app.example.com/cb#frag", "fragment"),
            ("https://app.example.com/cb#", "fragment"),
            ("https://user:pw@app.example.com/cb", "credentials"),
            ("https://@app.example.com/cb", "credentials"),
            ("http://app.example.com/cb", "https"),
            ("http://10.0.0.1/cb", "https"),
            ("http://LOCALHOST/cb", "https"),
            ("http://localhost.example.com/cb", "https"),
            ("ftp://app.example.com/", "https"),
            ("javascript:alert(1)", "https"),
            ("com.example.app:/callback", "https"),
            ("https://0.V*/cb", "host name"),
            ("https://bücher.example/cb", "host name"),
            ("https://-a.example/cb", "host name"),
            ("https://a.example./cb", "host name"),
            ("https://a..example/cb", "host name"),
            ("https://a.123/cb", "host name"),
            ("https://1.2.3/cb", "host name"),
            ("https://01.2.3.4/cb", "host name"),
            ("https://256.2.3.4/cb", "host name"),
            (
                &format!("https://{}.example/cb", "a".repeat(64)),
                "host name",
            ),
            ("https://[2001:db8::1]/cb", "host name"),
            ("http://[::ffff:127.0.0.1]/cb", "host name"),
            ("https://[::1/cb", "valid URL"),
            ("https://[::1]x/cb", "valid URL"),
            ("https://a.example:0/cb", "port"),
            ("https://a.example:080/cb", "port"),
            ("https://a.example:65536/cb", "port"),
            ("https://a.example:/cb", "port"),
            ("https://a.example:8443x/cb", "port"),
        ] {
            let e = check(bad).expect_err(bad);
            assert!(e.contains(says), "{bad:?}: {e}");
        }
        let long = format!("https://app.example.com/{}", "a".repeat(2048));
        assert!(check(&long).unwrap_err().contains("2048"));
        let longest = format!("https://a.example/{}", "a".repeat(2048 - 18));
        assert_eq!(longest.chars().count(), 2048);
        assert_eq!(check(&longest), Ok(()));
    }
}
