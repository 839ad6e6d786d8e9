//! The leak detector: every encoding in which a secret could sit in a file or a
//! log unencrypted, and a fast search for them.

use std::collections::HashMap;

use super::text::{b64, hex};

/// Every form in which `secret` could sit in a file or a log unencrypted: raw,
/// hex (both cases), base64 (both alphabets) of the substrings at byte offsets
/// 0, 1 and 2 cut to whole 3-byte groups, so one of them is aligned with whatever
/// base64 encoding might hold it.
pub(crate) fn encodings(label: &str, secret: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut out = vec![
        (format!("{label} (raw)"), secret.to_vec()),
        (format!("{label} (hex)"), hex(secret, false).into_bytes()),
        (format!("{label} (HEX)"), hex(secret, true).into_bytes()),
    ];
    for offset in 0..3 {
        let whole = (secret.len().saturating_sub(offset)) / 3 * 3;
        if whole < 9 {
            continue;
        }
        let piece = &secret[offset..offset + whole];
        out.push((
            format!("{label} (base64 at offset {offset})"),
            b64(piece, false).into_bytes(),
        ));
        out.push((
            format!("{label} (base64url at offset {offset})"),
            b64(piece, true).into_bytes(),
        ));
    }
    out
}

/// Which of `needles` (all at least 8 bytes) occur in `haystack`. One pass with an
/// index on the first 8 bytes, so megabytes stay fast in an unoptimised build.
pub(crate) fn find_needles<'a>(haystack: &[u8], needles: &'a [(String, Vec<u8>)]) -> Vec<&'a str> {
    let mut index: HashMap<[u8; 8], Vec<usize>> = HashMap::new();
    for (i, (_, n)) in needles.iter().enumerate() {
        assert!(
            n.len() >= 8,
            "needle {:?} is too short to search",
            needles[i].0
        );
        index.entry(n[..8].try_into().unwrap()).or_default().push(i);
    }
    let mut found = vec![false; needles.len()];
    if haystack.len() >= 8 {
        for pos in 0..=haystack.len() - 8 {
            let key: [u8; 8] = haystack[pos..pos + 8].try_into().unwrap();
            if let Some(candidates) = index.get(&key) {
                for &i in candidates {
                    if haystack[pos..].starts_with(&needles[i].1) {
                        found[i] = true;
                    }
                }
            }
        }
    }
    needles
        .iter()
        .zip(found)
        .filter(|(_, f)| *f)
        .map(|((label, _), _)| label.as_str())
        .collect()
}

/// The base64url random part of `ovt_<id>_<random>` (which may itself contain `_`).
pub(crate) fn token_random_part(token: &str) -> &str {
    token
        .strip_prefix("ovt_")
        .and_then(|rest| rest.split_once('_'))
        .map_or("", |(_, random)| random)
}
