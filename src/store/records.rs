//! On-disk records. Versioned (`[version: u8] ‖ bincode`), and kept apart from the
//! API's types: the API never serializes these, and these never carry plaintext.
//!
//! Audit entries are the exception to "one type per tree": version 1 is a bare
//! [`AuditRecord`] (written before the trail was chained: no MAC), version 2 an
//! [`AuditEntry`] (an event or a pruning checkpoint, with its MAC; see
//! `store` for the chain).

use bincode::{Decode, Encode};

use super::StoreError;
use crate::origin::origin_of;

/// No record is anywhere near this; a corrupt length prefix must not allocate more.
const DECODE_LIMIT: usize = 1 << 20;
#[cfg(test)]
pub(super) const DECODE_LIMIT_FOR_TESTS: usize = DECODE_LIMIT;

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<DECODE_LIMIT>()
}

/// A record type and its on-disk format version (the first byte of every
/// stored value). A change to a record's layout bumps its version and keeps a
/// reader for the older ones in [`Versioned::decode_older`].
pub trait Versioned: Encode + Decode<()> + Sized {
    const VERSION: u8;

    /// Decode a body written under an older `version`, with the bytes used;
    /// `None` for a version this build does not know.
    fn decode_older(_version: u8, _body: &[u8]) -> Option<Result<(Self, usize), String>> {
        None
    }
}

impl Versioned for DomainRecord {
    const VERSION: u8 = 1;
}

impl Versioned for TokenRecord {
    const VERSION: u8 = 1;
}

impl Versioned for AppRecord {
    const VERSION: u8 = 1;
}

/// Version 1: the unauthenticated events written before the chain (legacy);
/// still written by a store opened without an audit MAC (benchmarks, tests).
impl Versioned for AuditRecord {
    const VERSION: u8 = 1;
}

impl Versioned for AuditEntry {
    const VERSION: u8 = 2;
}

#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct DomainRecord {
    pub id: u64,
    /// Lower-case host name.
    pub name: String,
    pub created_at: i64,
    /// Ids of the tokens scoped to this domain, so removal can take them along
    /// inside one transaction.
    pub token_ids: Vec<u64>,
}

/// Version 2 (the current one). Fields are encoded in declaration order.
/// Version 1 had neither `discovered_endpoints` (added later at its end without
/// a version bump: such records simply end earlier) nor `secret_origin`; see
/// `ConfigRecordV1`.
#[derive(Clone, PartialEq, Eq, Encode, Decode)]
pub struct ConfigRecord {
    pub id: u64,
    pub domain_id: u64,
    pub client_id: String,
    /// Sealed envelope (see `crypto::envelope`); never plaintext.
    pub secret_sealed: Vec<u8>,
    /// The masked form, kept so that a read never decrypts.
    pub secret_masked: String,
    pub discovery_url: Option<String>,
    pub authorization_endpoint: Option<String>,
    pub token_endpoint: Option<String>,
    pub userinfo_endpoint: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    /// Names of the endpoint fields managed by OIDC discovery (filled from the
    /// discovery document and kept current by a refresh); an endpoint not listed
    /// was set by hand, or is empty.
    pub discovered_endpoints: Vec<String>,
    /// The origin of the token endpoint the secret was written for: the only
    /// origin the secret may ever be sent to. Also in the sealed envelope's
    /// associated data (envelope version 2), so an edit on disk fails to open.
    /// `None`: the secret was written without a token endpoint; it is sent nowhere.
    pub secret_origin: Option<String>,
}

impl Versioned for ConfigRecord {
    const VERSION: u8 = 2;

    fn decode_older(version: u8, body: &[u8]) -> Option<Result<(Self, usize), String>> {
        (version == 1).then(|| {
            bincode::decode_from_slice::<ConfigRecordV1, _>(body, config())
                .map(|(r, used)| (r.into(), used))
                .map_err(|e| e.to_string())
        })
    }
}

/// The layout of version 1, for reading records written before version 2.
struct ConfigRecordV1 {
    id: u64,
    domain_id: u64,
    client_id: String,
    secret_sealed: Vec<u8>,
    secret_masked: String,
    discovery_url: Option<String>,
    authorization_endpoint: Option<String>,
    token_endpoint: Option<String>,
    userinfo_endpoint: Option<String>,
    created_at: i64,
    updated_at: i64,
    discovered_endpoints: Vec<String>,
}

impl<Context> Decode<Context> for ConfigRecordV1 {
    fn decode<D: bincode::de::Decoder<Context = Context>>(
        d: &mut D,
    ) -> Result<Self, bincode::error::DecodeError> {
        use bincode::de::read::Reader;
        Ok(Self {
            id: Decode::decode(d)?,
            domain_id: Decode::decode(d)?,
            client_id: Decode::decode(d)?,
            secret_sealed: Decode::decode(d)?,
            secret_masked: Decode::decode(d)?,
            discovery_url: Decode::decode(d)?,
            authorization_endpoint: Decode::decode(d)?,
            token_endpoint: Decode::decode(d)?,
            userinfo_endpoint: Decode::decode(d)?,
            created_at: Decode::decode(d)?,
            updated_at: Decode::decode(d)?,
            // Added at the end of version 1 without a bump: absent from the
            // records written before it.
            discovered_endpoints: if d.reader().peek_read(1).is_some() {
                Decode::decode(d)?
            } else {
                Vec::new()
            },
        })
    }
}

impl From<ConfigRecordV1> for ConfigRecord {
    /// A secret written before the origin binding takes its record's current
    /// token endpoint's origin (the migration rule).
    fn from(r: ConfigRecordV1) -> Self {
        let secret_origin = r.token_endpoint.as_deref().and_then(origin_of);
        Self {
            id: r.id,
            domain_id: r.domain_id,
            client_id: r.client_id,
            secret_sealed: r.secret_sealed,
            secret_masked: r.secret_masked,
            discovery_url: r.discovery_url,
            authorization_endpoint: r.authorization_endpoint,
            token_endpoint: r.token_endpoint,
            userinfo_endpoint: r.userinfo_endpoint,
            created_at: r.created_at,
            updated_at: r.updated_at,
            discovered_endpoints: r.discovered_endpoints,
            secret_origin,
        }
    }
}

impl std::fmt::Debug for ConfigRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigRecord")
            .field("id", &self.id)
            .field("domain_id", &self.domain_id)
            .field("client_id", &self.client_id)
            .field("secret_masked", &self.secret_masked)
            .field("secret_origin", &self.secret_origin)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
pub enum TokenScope {
    Operator,
    Domain(u64),
}

/// A sign-in broker record (a login transaction or a one-time code): its
/// enterprise domain and expiry in clear (sweeps need no key), the rest sealed
/// by the vault (the store never sees it). Keyed by a SHA-256 of its random
/// value, so the value itself is never stored.
#[derive(Clone, PartialEq, Eq, Encode, Decode)]
pub struct SsoRecord {
    pub domain_id: u64,
    /// Microseconds since the epoch; the record is void from then on.
    pub expires_at: i64,
    pub sealed: Vec<u8>,
}

impl std::fmt::Debug for SsoRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SsoRecord")
            .field("domain_id", &self.domain_id)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

impl Versioned for SsoRecord {
    const VERSION: u8 = 1;
}

#[derive(Clone, PartialEq, Eq, Encode, Decode)]
pub struct TokenRecord {
    pub id: u64,
    /// SHA-256 of the token's random part.
    pub hash: [u8; 32],
    pub scope: TokenScope,
    pub created_at: i64,
}

impl std::fmt::Debug for TokenRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenRecord")
            .field("id", &self.id)
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

/// An application of the sign-in broker (`apps`), found by `client_id` through
/// `app_client_ids`.
#[derive(Clone, PartialEq, Eq, Encode, Decode)]
pub struct AppRecord {
    pub id: u64,
    pub name: String,
    /// Public: `ova_` and 22 characters of base64url.
    pub client_id: String,
    /// SHA-256 of the client secret's random part (see `crypto::app_secret`).
    pub secret_hash: [u8; 32],
    /// Compared exactly (no normalisation) with what an application sends.
    pub redirect_uris: Vec<String>,
    pub created_at: i64,
}

impl std::fmt::Debug for AppRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppRecord")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("client_id", &self.client_id)
            .field("redirect_uris", &self.redirect_uris)
            .field("created_at", &self.created_at)
            .finish_non_exhaustive()
    }
}

/// One entry of the audit trail. Never holds a secret or a token: the secret is
/// represented by a keyed fingerprint only.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct AuditRecord {
    pub at: i64,
    /// Token id of the API caller; `None` for the command line or the server itself.
    pub actor: Option<u64>,
    pub action: String,
    pub domain_id: Option<u64>,
    pub domain: Option<String>,
    /// Names of the fields changed.
    pub fields: Vec<String>,
    pub secret_fingerprint: Option<String>,
    /// Non-secret context (a token id, a key term, a backup name).
    pub detail: Option<String>,
}

/// A chained audit entry (version 2). Stored as `[2] ‖ bincode(prev_id, body) ‖
/// mac`: the fields in declaration order, the MAC last (a fixed array, no length
/// prefix), so the bytes it covers are the stored ones between the two.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct AuditEntry {
    /// Id of the entry this one follows in the chain (0: the chain's start).
    /// Authenticated, so an entry inserted or removed before it is named.
    pub prev_id: u64,
    pub body: AuditBody,
    /// HMAC-SHA-256 under the audit key over the label, this entry's id, the
    /// previous entry's MAC (zeros for a checkpoint) and the bytes of
    /// `(prev_id, body)`.
    pub mac: [u8; 32],
}

#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum AuditBody {
    Event(AuditRecord),
    /// Left by pruning in place of the last event it removed (same id): the chain
    /// goes on from `link`, that event's MAC.
    Checkpoint(AuditCheckpoint),
}

#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct AuditCheckpoint {
    /// Events before this time (microseconds) were removed.
    pub cutoff: i64,
    /// How many events were removed, over every pruning so far.
    pub pruned: u64,
    /// The MAC of the last removed event (zeros when it was a legacy event).
    pub link: [u8; 32],
}

/// The MAC of the chain's start (before the first chained event) and of a
/// legacy event.
pub(super) const GENESIS: [u8; 32] = [0; 32];
/// Domain separation of the audit MACs.
pub(super) const AUDIT_ENTRY_LABEL: &[u8] = b"oidcvault/audit-entry/v2\0";
pub(super) const AUDIT_HEAD_LABEL: &[u8] = b"oidcvault/audit-head/v2\0";

/// A stored audit entry as read back.
#[derive(Debug)]
pub(super) enum StoredAudit<'a> {
    /// Version 1: no MAC.
    Legacy(AuditRecord),
    /// Version 2, with the bytes its MAC covers (after `prev_id` and the id).
    Chained { entry: AuditEntry, signed: &'a [u8] },
}

/// Encode a chained entry: the stored bytes and the bytes its MAC covers are
/// produced once, and `mac` (which holds the key) computes the tag over them.
pub(super) fn encode_chained(
    prev_id: u64,
    body: &AuditBody,
    mac: impl FnOnce(&[u8]) -> [u8; 32],
) -> Result<(Vec<u8>, [u8; 32]), StoreError> {
    let signed = bincode::encode_to_vec((prev_id, body), config())
        .map_err(|e| StoreError::Encode(e.to_string()))?;
    check_limit(signed.len() + 32)?;
    let tag = mac(&signed);
    let mut out = Vec::with_capacity(1 + signed.len() + 32);
    out.push(AuditEntry::VERSION);
    out.extend_from_slice(&signed);
    out.extend_from_slice(&tag);
    Ok((out, tag))
}

/// Read an audit entry of either version.
pub(super) fn decode_audit<'a>(key: &[u8], bytes: &'a [u8]) -> Result<StoredAudit<'a>, StoreError> {
    if bytes.first() == Some(&AuditRecord::VERSION) {
        return decode("audit", key, bytes).map(StoredAudit::Legacy);
    }
    let entry: AuditEntry = decode("audit", key, bytes)?;
    let signed = bytes
        .get(1..bytes.len().saturating_sub(32))
        .unwrap_or_default();
    Ok(StoredAudit::Chained { entry, signed })
}

/// A record whose body bincode cannot encode, or one larger than the decode
/// limit (it could be written but never read back), is refused: nothing is
/// written rather than a record that cannot be read.
pub(super) fn encode<T: Versioned>(record: &T) -> Result<Vec<u8>, StoreError> {
    let body =
        bincode::encode_to_vec(record, config()).map_err(|e| StoreError::Encode(e.to_string()))?;
    check_limit(body.len())?;
    let mut out = Vec::with_capacity(1 + body.len());
    out.push(T::VERSION);
    out.extend_from_slice(&body);
    Ok(out)
}

fn check_limit(len: usize) -> Result<(), StoreError> {
    if len > DECODE_LIMIT {
        return Err(StoreError::Encode(format!(
            "{len} bytes, above the {DECODE_LIMIT}-byte limit of a record"
        )));
    }
    Ok(())
}

pub(super) fn decode<T: Versioned>(
    tree: &'static str,
    key: &[u8],
    bytes: &[u8],
) -> Result<T, StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt {
        tree,
        key: key_label(key),
        reason,
    };
    let (version, body) = bytes
        .split_first()
        .ok_or_else(|| corrupt("empty record".into()))?;
    let (record, used) = if *version == T::VERSION {
        bincode::decode_from_slice(body, config()).map_err(|e| corrupt(e.to_string()))?
    } else {
        T::decode_older(*version, body)
            .ok_or_else(|| corrupt(format!("unsupported record version {version}")))?
            .map_err(corrupt)?
    };
    if used != body.len() {
        return Err(corrupt("trailing bytes".into()));
    }
    Ok(record)
}

/// Keys are big-endian ids or domain names: print ids as numbers.
fn key_label(key: &[u8]) -> String {
    match <[u8; 8]>::try_from(key) {
        Ok(id) => u64::from_be_bytes(id).to_string(),
        Err(_) => String::from_utf8_lossy(key).into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_version_check() {
        let r = DomainRecord {
            id: 3,
            name: "acme.com".into(),
            created_at: 5,
            token_ids: vec![1, 2],
        };
        let bytes = encode(&r).unwrap();
        assert_eq!(bytes[0], DomainRecord::VERSION);
        let back: DomainRecord = decode("domains", &3u64.to_be_bytes(), &bytes).unwrap();
        assert_eq!(back, r);
        let mut future = bytes.clone();
        future[0] = 2;
        let err = decode::<DomainRecord>("domains", &3u64.to_be_bytes(), &future).unwrap_err();
        assert!(err.to_string().contains("domains/3"), "{err}");
    }

    /// The layout of a config record before `discovered_endpoints` existed
    /// (version 1, as first shipped).
    #[derive(Encode)]
    struct ConfigRecordV1First {
        id: u64,
        domain_id: u64,
        client_id: String,
        secret_sealed: Vec<u8>,
        secret_masked: String,
        discovery_url: Option<String>,
        authorization_endpoint: Option<String>,
        token_endpoint: Option<String>,
        userinfo_endpoint: Option<String>,
        created_at: i64,
        updated_at: i64,
    }

    fn v1_bytes(old: &ConfigRecordV1First, discovered: Option<&[&str]>) -> Vec<u8> {
        let mut bytes = vec![1u8];
        bytes.extend(bincode::encode_to_vec(old, config()).unwrap());
        if let Some(d) = discovered {
            let list: Vec<String> = d.iter().map(|s| s.to_string()).collect();
            bytes.extend(bincode::encode_to_vec(list, config()).unwrap());
        }
        bytes
    }

    #[test]
    fn version_1_config_records_still_decode_and_take_their_token_endpoints_origin() {
        let old = ConfigRecordV1First {
            id: 1,
            domain_id: 2,
            client_id: "app".into(),
            secret_sealed: vec![1, 2, 3],
            secret_masked: "********".into(),
            discovery_url: Some("https://idp.example.com/.well-known/openid-configuration".into()),
            authorization_endpoint: None,
            token_endpoint: Some("https://idp.example.com:443/oauth/token?x=1".into()),
            userinfo_endpoint: None,
            created_at: 5,
            updated_at: 6,
        };
        // As first shipped: no discovered_endpoints.
        let r: ConfigRecord =
            decode("configs", &2u64.to_be_bytes(), &v1_bytes(&old, None)).unwrap();
        assert_eq!(r.client_id, "app");
        assert_eq!(r.updated_at, 6);
        assert!(r.discovered_endpoints.is_empty());
        assert_eq!(r.secret_origin.as_deref(), Some("https://idp.example.com"));
        // Version 1 with the list appended.
        let r: ConfigRecord =
            decode("configs", b"k", &v1_bytes(&old, Some(&["token_endpoint"]))).unwrap();
        assert_eq!(r.discovered_endpoints, ["token_endpoint"]);
        // No token endpoint: bound nowhere.
        let none = ConfigRecordV1First {
            token_endpoint: None,
            ..old
        };
        let r: ConfigRecord = decode("configs", b"k", &v1_bytes(&none, None)).unwrap();
        assert_eq!(r.secret_origin, None);
        // Version 2 round-trips every field, and is written as version 2.
        let mut new = r.clone();
        new.discovered_endpoints = vec!["token_endpoint".into()];
        new.secret_origin = Some("https://idp.example.com:8443".into());
        let bytes = encode(&new).unwrap();
        assert_eq!(bytes[0], 2);
        let back: ConfigRecord = decode("configs", b"k", &bytes).unwrap();
        assert_eq!(back, new);
        // A truncated version 2 record is an error, not a silent default.
        assert!(decode::<ConfigRecord>("configs", b"k", &bytes[..bytes.len() - 1]).is_err());
    }

    #[test]
    fn app_records_round_trip_and_never_print_their_hash() {
        let r = AppRecord {
            id: 9,
            name: "Billing portal".into(),
            client_id: "ova_AAAAAAAAAAAAAAAAAAAAAA".into(),
            secret_hash: [0xAB; 32],
            redirect_uris: vec![
                "https://billing.example.com/cb".into(),
                "http://127.0.0.1:8000/cb".into(),
            ],
            created_at: 11,
        };
        let bytes = encode(&r).unwrap();
        assert_eq!(bytes[0], AppRecord::VERSION);
        let back: AppRecord = decode("apps", &9u64.to_be_bytes(), &bytes).unwrap();
        assert_eq!(back, r);
        assert!(decode::<AppRecord>("apps", b"k", &bytes[..bytes.len() - 1]).is_err());
        let shown = format!("{r:?}");
        assert!(shown.contains("Billing portal"), "{shown}");
        assert!(
            !shown.contains("171") && !shown.contains("secret_hash"),
            "{shown}"
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for len in 0..64 {
            let junk: Vec<u8> = (0..len).map(|i| (i * 37 + 1) as u8).collect();
            let _ = decode::<ConfigRecord>("configs", b"k", &junk);
            let _ = decode::<TokenRecord>("tokens", b"k", &junk);
            let _ = decode::<AppRecord>("apps", b"k", &junk);
        }
        let mut huge = vec![DomainRecord::VERSION];
        huge.extend_from_slice(&[0xFF; 16]);
        assert!(decode::<DomainRecord>("domains", b"k", &huge).is_err());
    }
}

#[cfg(test)]
mod properties {
    //! Any bytes fed to the record decoder give an error (or a record), never a
    //! panic or an allocation beyond the decode limit.
    use super::*;
    use proptest::prelude::*;

    fn sample_config() -> ConfigRecord {
        ConfigRecord {
            id: 1,
            domain_id: 2,
            client_id: "enterprise-app-123".into(),
            secret_sealed: vec![1; 60],
            secret_masked: "********0rd!".into(),
            discovery_url: Some("https://idp.example.com/.well-known/openid-configuration".into()),
            authorization_endpoint: None,
            token_endpoint: Some("https://idp.example.com/token".into()),
            userinfo_endpoint: None,
            created_at: 1,
            updated_at: 2,
            discovered_endpoints: Vec::new(),
            secret_origin: Some("https://idp.example.com".into()),
        }
    }

    fn decode_all(bytes: &[u8]) {
        let _ = decode::<ConfigRecord>("configs", b"k", bytes);
        let _ = decode::<DomainRecord>("domains", b"k", bytes);
        let _ = decode::<TokenRecord>("tokens", b"k", bytes);
        let _ = decode::<AppRecord>("apps", b"k", bytes);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1000, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            decode_all(&bytes);
            for version in [1, 2] {
                let mut versioned = vec![version];
                versioned.extend_from_slice(&bytes);
                decode_all(&versioned);
            }
        }

        #[test]
        fn mutations_of_real_records(at in 0usize..200, xor in 1u8..=255, kind in 0..3) {
            let domain = DomainRecord { id: 3, name: "acme.com".into(), created_at: 5, token_ids: vec![1, 2, 3] };
            let token = TokenRecord { id: 4, hash: [7; 32], scope: TokenScope::Domain(3), created_at: 6 };
            for mut m in [encode(&sample_config()).unwrap(), encode(&domain).unwrap(), encode(&token).unwrap()] {
                let at = at % m.len();
                match kind {
                    0 => m[at] ^= xor,
                    1 => m.truncate(at),
                    _ => m.insert(at, xor),
                }
                decode_all(&m);
            }
        }
    }
}
