//! Test helpers: a tiny HTTP/1.1 server on loopback (a thread per
//! connection, like tests/harness/stub_http.rs, which the unit tests cannot
//! reach), recording every request, and an outbound client that may use it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::outbound::{Outbound, Settings};

/// An outbound client that may fetch plain http from 127.0.0.1, with a short
/// timeout (2 s) for the hanging-endpoint tests.
pub(super) fn outbound() -> Outbound {
    Outbound::new(&Settings {
        connect_timeout: Duration::from_secs(1),
        timeout: Duration::from_secs(2),
        max_response_bytes: 64 * 1024,
        max_redirects: 2,
        max_concurrent_fetches: 16,
        allow_http_hosts: vec!["127.0.0.1".into()],
        allow_private_hosts: vec!["127.0.0.1".into()],
        extra_ca_file: None,
        resolve_discovery_on_save: true,
        enabled: true,
    })
    .unwrap()
}

/// A URL on a loopback port nobody listens on (just closed).
pub(super) fn closed_port_url(path: &str) -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    format!("http://127.0.0.1:{port}{path}")
}

#[derive(Debug, Clone)]
pub(super) struct Recorded {
    pub(super) method: String,
    pub(super) path: String,
    pub(super) headers: Vec<(String, String)>,
    pub(super) body: Vec<u8>,
}

impl Recorded {
    pub(super) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

pub(super) enum Reply {
    Raw {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// Say nothing for this long.
    Silence(Duration),
}

impl Reply {
    pub(super) fn json(status: u16, body: &str) -> Self {
        Self::text(status, "application/json", body)
    }

    pub(super) fn text(status: u16, content_type: &str, body: &str) -> Self {
        Reply::Raw {
            status,
            headers: vec![("Content-Type".into(), content_type.into())],
            body: body.as_bytes().to_vec(),
        }
    }

    pub(super) fn redirect(status: u16, location: &str) -> Self {
        Reply::Raw {
            status,
            headers: vec![("Location".into(), location.into())],
            body: Vec::new(),
        }
    }
}

type Handler = Arc<dyn Fn(&Recorded) -> Reply + Send + Sync>;

pub(super) struct Stub {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<Recorded>>>,
    stop: Arc<AtomicBool>,
}

fn read_request(stream: &TcpStream) -> Option<Recorded> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_owned();
    let path = parts.next()?.to_owned();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((n, v)) = h.split_once(':') {
            headers.push((n.trim().to_owned(), v.trim().to_owned()));
        }
    }
    let len: usize = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body).ok()?;
    Some(Recorded {
        method,
        path,
        headers,
        body,
    })
}

fn serve(mut stream: TcpStream, handler: Handler, requests: Arc<Mutex<Vec<Recorded>>>) {
    let Some(req) = read_request(&stream) else {
        return;
    };
    requests.lock().unwrap().push(req.clone());
    match handler(&req) {
        Reply::Silence(d) => std::thread::sleep(d),
        Reply::Raw {
            status,
            headers,
            body,
        } => {
            let mut head = format!("HTTP/1.1 {status} X\r\nConnection: close\r\n");
            for (n, v) in headers {
                head.push_str(&format!("{n}: {v}\r\n"));
            }
            head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(&body);
            let _ = stream.flush();
        }
    }
}

impl Stub {
    pub(super) fn start(handler: impl Fn(&Recorded) -> Reply + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let requests: Arc<Mutex<Vec<Recorded>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let handler: Handler = Arc::new(handler);
        {
            let (requests, stop) = (requests.clone(), stop.clone());
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let (h, r) = (handler.clone(), requests.clone());
                    std::thread::spawn(move || serve(stream, h, r));
                }
            });
        }
        Self {
            addr,
            requests,
            stop,
        }
    }

    pub(super) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub(super) fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub(super) fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for Stub {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so that it sees the flag.
        let _ = TcpStream::connect(self.addr);
    }
}

/// A signing key of a test provider, with its public JWK.
pub(super) struct TestKey {
    pub(super) kid: String,
    pub(super) alg: jsonwebtoken::Algorithm,
    enc: jsonwebtoken::EncodingKey,
    pub(super) jwk: serde_json::Value,
}

impl TestKey {
    fn new(kid: &str, alg: jsonwebtoken::Algorithm, enc: jsonwebtoken::EncodingKey) -> Self {
        let mut jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(&enc, alg).unwrap();
        jwk.common.key_id = Some(kid.into());
        let mut jwk = serde_json::to_value(&jwk).unwrap();
        jwk["use"] = "sig".into();
        Self {
            kid: kid.into(),
            alg,
            enc,
            jwk,
        }
    }

    /// A new EC P-256 key (ES256).
    pub(super) fn ec(kid: &str) -> Self {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let enc = jsonwebtoken::EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap();
        Self::new(kid, jsonwebtoken::Algorithm::ES256, enc)
    }

    /// The fixed RSA 2048 test key (RS256): testdata/rsa-test-key.pem, made
    /// with `openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048`
    /// for these tests only.
    pub(super) fn rsa(kid: &str) -> Self {
        let pem = include_str!("testdata/rsa-test-key.pem");
        let enc = jsonwebtoken::EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap();
        Self::new(kid, jsonwebtoken::Algorithm::RS256, enc)
    }

    /// A JWS of `claims` signed with this key, `kid` in the header.
    pub(super) fn sign(&self, claims: &serde_json::Value) -> String {
        let mut header = jsonwebtoken::Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.enc).unwrap()
    }

    /// The same, without `kid`.
    pub(super) fn sign_without_kid(&self, claims: &serde_json::Value) -> String {
        jsonwebtoken::encode(&jsonwebtoken::Header::new(self.alg), claims, &self.enc).unwrap()
    }
}

/// A JWK set document of these keys.
pub(super) fn jwks(keys: &[&TestKey]) -> serde_json::Value {
    serde_json::json!({ "keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>() })
}
