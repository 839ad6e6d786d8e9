//! The providers' signing keys, cached per `jwks_uri`.
//!
//! A key set is fetched on first use and again when it is older than
//! [`KEYS_MAX_AGE`] (so a key the provider withdrew stops verifying). An ID
//! token whose `kid` is not in the cached set triggers exactly one refetch (the
//! provider rotated its keys), and fetches of one URI happen at most once per
//! `min_refetch`, successful or not: tokens with made-up `kid`s cannot turn the
//! broker into a request amplifier against the provider, and a provider that
//! is down is not hammered.
//!
//! Shared by every worker: a short lock on the map of URIs, then a lock per
//! URI, held across that URI's fetch only (callers for the same provider wait
//! for one fetch instead of each making their own; other providers are not
//! held up).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::DecodingKey;
use serde_json::Value;

use super::{shown, RpError};
use crate::outbound::Outbound;

/// Cached keys older than this are fetched again before use.
const KEYS_MAX_AGE: Duration = Duration::from_secs(3600);
/// Keys beyond this many in one set are ignored.
const MAX_KEYS: usize = 100;

/// Fetches a JWK set document (the outbound client; tests inject one).
pub(super) type FetchJwks<'a> = dyn Fn(&str) -> Result<Value, String> + 'a;

/// One usable verification key of a set.
#[derive(Clone)]
struct CachedKey {
    kid: Option<String>,
    /// The key's own `alg`, when it names one.
    alg: Option<String>,
    /// `RSA`, `EC P-256`, `EC P-384` or `OKP Ed25519`.
    kind: &'static str,
    key: DecodingKey,
}

impl CachedKey {
    /// Whether this key can verify a JWS with header `alg` (the key's type and
    /// curve fit the algorithm, and its own `alg`, if any, is that one).
    fn fits(&self, alg: &str) -> bool {
        let kind_fits = match alg {
            "RS256" | "RS384" | "RS512" | "PS256" | "PS384" | "PS512" => self.kind == "RSA",
            "ES256" => self.kind == "EC P-256",
            "ES384" => self.kind == "EC P-384",
            "EdDSA" => self.kind == "OKP Ed25519",
            _ => false,
        };
        kind_fits && self.alg.as_deref().is_none_or(|a| a == alg)
    }
}

#[derive(Default)]
struct Entry {
    keys: Option<Arc<Vec<CachedKey>>>,
    /// The last successful fetch.
    fetched_at: Option<Instant>,
    /// The last fetch, successful or not (the rate limit).
    attempted_at: Option<Instant>,
}

/// The key sets of every provider, per `jwks_uri`. `Send + Sync`: one per
/// server, shared by the workers.
pub struct JwksCache {
    min_refetch: Duration,
    max_age: Duration,
    entries: Mutex<HashMap<String, Arc<Mutex<Entry>>>>,
}

impl std::fmt::Debug for JwksCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwksCache")
            .field("min_refetch", &self.min_refetch)
            .field("max_age", &self.max_age)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves consistent data (each field is
    // written whole), so a poisoned lock is used as it is.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The usable verification keys of a JWK set document: signature keys
/// (`use` absent or `sig`; `key_ops`, if any, with `verify`) of type RSA, EC
/// (P-256, P-384) or OKP (Ed25519). Symmetric (`oct`) keys, encryption keys and
/// keys that do not parse are skipped.
fn usable_keys(doc: &Value) -> Result<Vec<CachedKey>, String> {
    let keys = doc
        .get("keys")
        .and_then(Value::as_array)
        .ok_or("not a JWK set: no \"keys\" array in a JSON object")?;
    let mut out = Vec::new();
    for raw in keys.iter().take(MAX_KEYS) {
        let text = |k: &str| raw.get(k).and_then(Value::as_str);
        if text("use").is_some_and(|u| u != "sig") {
            continue;
        }
        if let Some(ops) = raw.get("key_ops") {
            let verify = ops
                .as_array()
                .is_some_and(|a| a.iter().any(|o| o.as_str() == Some("verify")));
            if !verify {
                continue;
            }
        }
        let kind = match (text("kty"), text("crv")) {
            (Some("RSA"), _) => "RSA",
            (Some("EC"), Some("P-256")) => "EC P-256",
            (Some("EC"), Some("P-384")) => "EC P-384",
            (Some("OKP"), Some("Ed25519")) => "OKP Ed25519",
            _ => continue,
        };
        let Ok(jwk) = serde_json::from_value::<Jwk>(raw.clone()) else {
            continue;
        };
        let Ok(key) = DecodingKey::from_jwk(&jwk) else {
            continue;
        };
        out.push(CachedKey {
            kid: text("kid").map(str::to_owned),
            alg: text("alg").map(str::to_owned),
            kind,
            key,
        });
    }
    Ok(out)
}

/// GET a JWK set through the guarded client.
pub(super) fn fetch_jwks(out: &Outbound, uri: &str) -> Result<Value, String> {
    let resp = out
        .patiently(super::SLOT_WAIT, || {
            out.get(uri, "application/jwk-set+json, application/json")
        })
        .map_err(|e| e.to_string())?;
    if resp.status != 200 {
        return Err(format!(
            "{} answered HTTP {} instead of a JWK set",
            shown(uri),
            resp.status
        ));
    }
    resp.json()
        .ok_or_else(|| format!("{} did not answer JSON", shown(uri)))
}

impl JwksCache {
    /// `min_refetch`: the least time between two fetches of one `jwks_uri`
    /// (e.g. 30 s).
    pub fn new(min_refetch: Duration) -> Self {
        Self {
            min_refetch,
            max_age: KEYS_MAX_AGE.max(min_refetch),
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn entry(&self, uri: &str) -> Arc<Mutex<Entry>> {
        lock(&self.entries)
            .entry(uri.to_owned())
            .or_default()
            .clone()
    }

    fn may_fetch(&self, e: &Entry) -> bool {
        e.attempted_at
            .is_none_or(|t| t.elapsed() >= self.min_refetch)
    }

    /// Fetch `uri` now into `e` (the caller checked the rate limit).
    fn refresh(&self, e: &mut Entry, uri: &str, fetch: &FetchJwks<'_>) -> Result<(), String> {
        let now = Instant::now();
        e.attempted_at = Some(now);
        let keys = usable_keys(&fetch(uri)?)?;
        e.keys = Some(Arc::new(keys));
        e.fetched_at = Some(now);
        Ok(())
    }

    /// The keys of `uri` that may verify a JWS with header `kid` and `alg`:
    /// the one with that `kid` (or, for a token without `kid`, every key that
    /// fits `alg`), refetching once when none is found.
    pub(super) fn keys_for(
        &self,
        uri: &str,
        fetch: &FetchJwks<'_>,
        kid: Option<&str>,
        alg: &str,
    ) -> Result<Vec<DecodingKey>, RpError> {
        let entry = self.entry(uri);
        let mut e = lock(&entry);
        let mut fetched = false;
        let stale = e.fetched_at.is_none_or(|t| t.elapsed() >= self.max_age);
        if stale && self.may_fetch(&e) {
            fetched = true;
            if let Err(why) = self.refresh(&mut e, uri, fetch) {
                // Stale keys still verify until a fetch succeeds.
                if e.keys.is_none() {
                    return Err(RpError::JwksUnavailable(why));
                }
            }
        }
        let matching = |e: &Entry| -> Vec<DecodingKey> {
            e.keys
                .iter()
                .flat_map(|keys| keys.iter())
                .filter(|k| kid.is_none_or(|want| k.kid.as_deref() == Some(want)))
                .filter(|k| k.fits(alg))
                .map(|k| k.key.clone())
                .collect()
        };
        if e.keys.is_none() {
            return Err(RpError::JwksUnavailable(format!(
                "{} could not be fetched, and is tried again at most every {} s",
                shown(uri),
                self.min_refetch.as_secs()
            )));
        }
        let found = matching(&e);
        if !found.is_empty() {
            return Ok(found);
        }
        if !fetched && self.may_fetch(&e) {
            self.refresh(&mut e, uri, fetch)
                .map_err(RpError::JwksUnavailable)?;
            let found = matching(&e);
            if !found.is_empty() {
                return Ok(found);
            }
        }
        Err(RpError::UnknownKid {
            jwks_uri: shown(uri),
            kid: kid.map_or_else(|| "none".to_owned(), shown),
            alg: shown(alg),
        })
    }
}
