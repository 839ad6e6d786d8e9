//! The stub provider's keys and the ID tokens it signs with them (the right
//! key, another key, `alg: none`, an algorithm the document does not list, a
//! `kid` the JWK set does not have, HS256 with the client secret).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use super::{now, Knobs, Signing, CLIENT_ID, CLIENT_SECRET, EMAIL, SUB};

pub(super) struct Key {
    pub(super) kid: String,
    alg: Algorithm,
    enc: EncodingKey,
    pub(super) jwk: Value,
}

impl Key {
    pub(super) fn generate(kid: &str, alg: Algorithm) -> Self {
        let rc_alg = match alg {
            Algorithm::ES384 => &rcgen::PKCS_ECDSA_P384_SHA384,
            _ => &rcgen::PKCS_ECDSA_P256_SHA256,
        };
        let pair = rcgen::KeyPair::generate_for(rc_alg).expect("generate an EC key");
        let enc = EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).expect("EC PEM");
        let mut jwk = Jwk::from_encoding_key(&enc, alg).expect("JWK of the key");
        jwk.common.key_id = Some(kid.to_owned());
        let mut jwk = serde_json::to_value(&jwk).expect("JWK as JSON");
        jwk["use"] = json!("sig");
        Self {
            kid: kid.to_owned(),
            alg,
            enc,
            jwk,
        }
    }

    pub(super) fn sign(&self, kid: &str, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(kid.to_owned());
        jsonwebtoken::encode(&header, claims, &self.enc).expect("sign the ID token")
    }
}

impl Knobs {
    fn claims_for(&self, nonce: Option<&str>) -> Value {
        let t = now();
        let mut claims = json!({
            "iss": self.issuer(),
            "aud": CLIENT_ID,
            "sub": SUB,
            "email": EMAIL,
            "email_verified": true,
            "name": "Alice Example",
            "given_name": "Alice",
            "family_name": "Example",
            "iat": t,
            "exp": t + 300,
            "auth_time": t,
        });
        if let Some(n) = nonce {
            claims["nonce"] = json!(n);
        }
        let Value::Object(map) = &mut claims else {
            unreachable!()
        };
        for (name, v) in &self.claims {
            if v.is_null() {
                map.remove(name);
            } else {
                map.insert(name.clone(), v.clone());
            }
        }
        claims
    }

    pub(super) fn id_token(&self, nonce: Option<&str>) -> String {
        let claims = self.claims_for(nonce);
        let current = &self.keys[self.current];
        match self.signing {
            Signing::Good => current.sign(&current.kid, &claims),
            Signing::OtherKey => self.other.sign(&current.kid, &claims),
            Signing::UnlistedAlg => self.es384.sign(&self.es384.kid, &claims),
            Signing::UnknownKid => self.stray.sign(&self.stray.kid, &claims),
            Signing::Hs256ClientSecret => {
                let mut header = Header::new(Algorithm::HS256);
                header.kid = Some(current.kid.clone());
                let key = EncodingKey::from_secret(CLIENT_SECRET.as_bytes()).expect("HMAC key");
                jsonwebtoken::encode(&header, &claims, &key).expect("sign HS256")
            }
            Signing::AlgNone => {
                let header = json!({"alg": "none", "typ": "JWT", "kid": current.kid});
                format!(
                    "{}.{}.",
                    URL_SAFE_NO_PAD.encode(header.to_string()),
                    URL_SAFE_NO_PAD.encode(claims.to_string())
                )
            }
        }
    }
}
