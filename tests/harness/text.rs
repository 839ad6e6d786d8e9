//! Text helpers of the harness: random values, the encodings the leak detector
//! looks for, ANSI stripping and log tails for assertion messages.

use std::io::Read;

pub(crate) fn random_hex(n_bytes: usize) -> String {
    let mut buf = vec![0u8; n_bytes];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .expect("read /dev/urandom");
    hex(&buf, false)
}

pub(crate) fn hex(bytes: &[u8], upper: bool) -> String {
    bytes
        .iter()
        .map(|b| {
            if upper {
                format!("{b:02X}")
            } else {
                format!("{b:02x}")
            }
        })
        .collect()
}

/// Base64 without padding, standard or URL-safe alphabet.
pub(crate) fn b64(bytes: &[u8], url_safe: bool) -> String {
    use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
    use base64::Engine;
    if url_safe {
        URL_SAFE_NO_PAD.encode(bytes)
    } else {
        STANDARD_NO_PAD.encode(bytes)
    }
}

/// Decode base64 leniently (either alphabet; padding, whitespace and non-zero
/// trailing bits ignored), as an attacker reading a file would.
pub(crate) fn b64_decode(text: &str) -> Vec<u8> {
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    use base64::{alphabet, Engine};
    let lenient = GeneralPurpose::new(
        &alphabet::URL_SAFE,
        GeneralPurposeConfig::new()
            .with_decode_allow_trailing_bits(true)
            .with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    let normalized: String = text
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '=')
        .map(|c| match c {
            '+' => '-',
            '/' => '_',
            other => other,
        })
        .collect();
    lenient.decode(normalized).expect("valid base64")
}

/// Remove ANSI escape sequences (the log formatter may colour its output).
pub(crate) fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// The last `n` characters of a (long) log, for assertion messages.
pub(crate) fn tail(s: &str, n: usize) -> String {
    let count = s.chars().count();
    if count <= n {
        s.to_owned()
    } else {
        let rest: String = s.chars().skip(count - n).collect();
        format!("[... {} characters before ...]\n{rest}", count - n)
    }
}

pub(crate) fn lower(s: &str) -> String {
    s.to_lowercase()
}
