//! On-disk records. Versioned (`[version: u8] ‖ bincode`), and kept apart from the
//! API's types: the API never serializes these, and these never carry plaintext.

use bincode::{Decode, Encode};

use super::StoreError;

const RECORD_VERSION: u8 = 1;
/// No record is anywhere near this; a corrupt length prefix must not allocate more.
const DECODE_LIMIT: usize = 1 << 20;

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<DECODE_LIMIT>()
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

/// Fields are encoded in declaration order. `discovered_endpoints` was added
/// after version 1 shipped, at the end: a record written before it simply ends
/// earlier, and decodes with an empty list (see the `Decode` impl below).
#[derive(Clone, PartialEq, Eq, Encode)]
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
}

impl<Context> Decode<Context> for ConfigRecord {
    fn decode<D: bincode::de::Decoder<Context = Context>>(
        d: &mut D,
    ) -> Result<Self, bincode::error::DecodeError> {
        use bincode::de::read::Reader;
        let id = Decode::decode(d)?;
        let domain_id = Decode::decode(d)?;
        let client_id = Decode::decode(d)?;
        let secret_sealed = Decode::decode(d)?;
        let secret_masked = Decode::decode(d)?;
        let discovery_url = Decode::decode(d)?;
        let authorization_endpoint = Decode::decode(d)?;
        let token_endpoint = Decode::decode(d)?;
        let userinfo_endpoint = Decode::decode(d)?;
        let created_at = Decode::decode(d)?;
        let updated_at = Decode::decode(d)?;
        // Written by later code only: absent from records written before it.
        let discovered_endpoints = if d.reader().peek_read(1).is_some() {
            Decode::decode(d)?
        } else {
            Vec::new()
        };
        Ok(Self {
            id,
            domain_id,
            client_id,
            secret_sealed,
            secret_masked,
            discovery_url,
            authorization_endpoint,
            token_endpoint,
            userinfo_endpoint,
            created_at,
            updated_at,
            discovered_endpoints,
        })
    }
}
bincode::impl_borrow_decode!(ConfigRecord);

impl std::fmt::Debug for ConfigRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigRecord")
            .field("id", &self.id)
            .field("domain_id", &self.domain_id)
            .field("client_id", &self.client_id)
            .field("secret_masked", &self.secret_masked)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
pub enum TokenScope {
    Operator,
    Domain(u64),
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

pub(super) fn encode<T: Encode>(record: &T) -> Vec<u8> {
    let mut out = vec![RECORD_VERSION];
    // Encoding into a Vec cannot fail for these plain types.
    if let Ok(body) = bincode::encode_to_vec(record, config()) {
        out.extend_from_slice(&body);
    }
    out
}

pub(super) fn decode<T: Decode<()>>(
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
    if *version != RECORD_VERSION {
        return Err(corrupt(format!("unsupported record version {version}")));
    }
    let (record, used) =
        bincode::decode_from_slice(body, config()).map_err(|e| corrupt(e.to_string()))?;
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
        let bytes = encode(&r);
        assert_eq!(bytes[0], RECORD_VERSION);
        let back: DomainRecord = decode("domains", &3u64.to_be_bytes(), &bytes).unwrap();
        assert_eq!(back, r);
        let mut future = bytes.clone();
        future[0] = 2;
        let err = decode::<DomainRecord>("domains", &3u64.to_be_bytes(), &future).unwrap_err();
        assert!(err.to_string().contains("domains/3"), "{err}");
    }

    /// The layout of a config record before `discovered_endpoints` existed.
    #[derive(Encode)]
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
    }

    #[test]
    fn config_records_written_before_discovered_endpoints_still_decode() {
        let old = ConfigRecordV1 {
            id: 1,
            domain_id: 2,
            client_id: "app".into(),
            secret_sealed: vec![1, 2, 3],
            secret_masked: "********".into(),
            discovery_url: Some("https://idp.example.com/.well-known/openid-configuration".into()),
            authorization_endpoint: None,
            token_endpoint: Some("https://idp.example.com/token".into()),
            userinfo_endpoint: None,
            created_at: 5,
            updated_at: 6,
        };
        let bytes = encode(&old);
        let r: ConfigRecord = decode("configs", &2u64.to_be_bytes(), &bytes).unwrap();
        assert_eq!(r.client_id, "app");
        assert_eq!(
            r.token_endpoint.as_deref(),
            Some("https://idp.example.com/token")
        );
        assert_eq!(r.updated_at, 6);
        assert!(r.discovered_endpoints.is_empty());
        // And the new layout round-trips, the list included.
        let mut new = r.clone();
        new.discovered_endpoints = vec!["token_endpoint".into()];
        let back: ConfigRecord = decode("configs", b"k", &encode(&new)).unwrap();
        assert_eq!(back, new);
        // A truncated new record is an error, not a silent default.
        let full = encode(&new);
        assert!(decode::<ConfigRecord>("configs", b"k", &full[..full.len() - 1]).is_err());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for len in 0..64 {
            let junk: Vec<u8> = (0..len).map(|i| (i * 37 + 1) as u8).collect();
            let _ = decode::<ConfigRecord>("configs", b"k", &junk);
            let _ = decode::<TokenRecord>("tokens", b"k", &junk);
        }
        let mut huge = vec![RECORD_VERSION];
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
        }
    }

    fn decode_all(bytes: &[u8]) {
        let _ = decode::<ConfigRecord>("configs", b"k", bytes);
        let _ = decode::<DomainRecord>("domains", b"k", bytes);
        let _ = decode::<TokenRecord>("tokens", b"k", bytes);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1000, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            decode_all(&bytes);
            let mut versioned = vec![RECORD_VERSION];
            versioned.extend_from_slice(&bytes);
            decode_all(&versioned);
        }

        #[test]
        fn mutations_of_real_records(at in 0usize..200, xor in 1u8..=255, kind in 0..3) {
            let domain = DomainRecord { id: 3, name: "acme.com".into(), created_at: 5, token_ids: vec![1, 2, 3] };
            let token = TokenRecord { id: 4, hash: [7; 32], scope: TokenScope::Domain(3), created_at: 6 };
            for mut m in [encode(&sample_config()), encode(&domain), encode(&token)] {
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
