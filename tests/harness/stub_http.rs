//! A tiny HTTP/1.1 server on loopback for the outbound and discovery tests
//! (std `TcpListener`, a thread per connection, optional TLS through rustls):
//! it serves what a handler decides, including the misbehaviours the SSRF guard
//! must survive (redirects, oversized and slow answers, silence). It records
//! every request, so a test can tell that a refused fetch never reached it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// One request as the server read it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What to answer.
pub enum Reply {
    /// `status` with an `application/json` body.
    Json(u16, String),
    /// Anything: status, extra headers, body (Content-Length is added unless
    /// `chunked_without_length`, which sends the body with no length at all).
    Raw {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
        no_length: bool,
    },
    /// Headers at once, then the body one byte per `every`, `bytes` in all.
    Trickle { every: Duration, bytes: usize },
    /// Read the request, then say nothing for this long.
    Silence(Duration),
}

impl Reply {
    pub fn redirect(status: u16, location: &str) -> Self {
        Reply::Raw {
            status,
            headers: vec![("Location".into(), location.into())],
            body: Vec::new(),
            no_length: false,
        }
    }

    pub fn text(status: u16, content_type: &str, body: &str) -> Self {
        Reply::Raw {
            status,
            headers: vec![("Content-Type".into(), content_type.into())],
            body: body.as_bytes().to_vec(),
            no_length: false,
        }
    }
}

pub type Handler = Arc<dyn Fn(&Recorded) -> Reply + Send + Sync>;

pub struct Stub {
    pub addr: SocketAddr,
    tls: bool,
    requests: Arc<Mutex<Vec<Recorded>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

fn read_request(stream: &mut dyn ReadWrite) -> Option<Recorded> {
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

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        301 => "Moved Permanently",
        302 => "Found",
        307 => "Temporary Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        _ => "Whatever",
    }
}

fn respond(stream: &mut dyn ReadWrite, reply: Reply) {
    match reply {
        Reply::Json(status, body) => respond(
            stream,
            Reply::Raw {
                status,
                headers: vec![("Content-Type".into(), "application/json".into())],
                body: body.into_bytes(),
                no_length: false,
            },
        ),
        Reply::Raw {
            status,
            headers,
            body,
            no_length,
        } => {
            let mut head = format!(
                "HTTP/1.1 {status} {}\r\nConnection: close\r\n",
                reason(status)
            );
            for (n, v) in headers {
                head.push_str(&format!("{n}: {v}\r\n"));
            }
            if !no_length {
                head.push_str(&format!("Content-Length: {}\r\n", body.len()));
            }
            head.push_str("\r\n");
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(&body);
            let _ = stream.flush();
        }
        Reply::Trickle { every, bytes } => {
            let head = format!(
                "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Type: application/json\r\n\
                 Content-Length: {bytes}\r\n\r\n"
            );
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.flush();
            for _ in 0..bytes {
                std::thread::sleep(every);
                if stream.write_all(b" ").and_then(|_| stream.flush()).is_err() {
                    return;
                }
            }
        }
        Reply::Silence(d) => std::thread::sleep(d),
    }
}

impl Stub {
    /// Serve plain HTTP on `ip` (a loopback address) and any free port.
    pub fn start(ip: &str, handler: impl Fn(&Recorded) -> Reply + Send + Sync + 'static) -> Self {
        Self::start_inner(ip, None, Arc::new(handler))
    }

    /// Serve HTTPS with `tls`.
    pub fn start_tls(
        ip: &str,
        tls: Arc<rustls::ServerConfig>,
        handler: impl Fn(&Recorded) -> Reply + Send + Sync + 'static,
    ) -> Self {
        Self::start_inner(ip, Some(tls), Arc::new(handler))
    }

    fn start_inner(ip: &str, tls: Option<Arc<rustls::ServerConfig>>, handler: Handler) -> Self {
        let listener = TcpListener::bind((ip, 0)).expect("bind the stub server on loopback");
        let addr = listener.local_addr().unwrap();
        let requests: Arc<Mutex<Vec<Recorded>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let is_tls = tls.is_some();
        let thread = {
            let (requests, stop) = (requests.clone(), stop.clone());
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = conn else { continue };
                    let (handler, requests, tls) = (handler.clone(), requests.clone(), tls.clone());
                    std::thread::spawn(move || {
                        let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
                        let serve = |s: &mut dyn ReadWrite| {
                            if let Some(req) = read_request(&mut *s) {
                                requests.lock().unwrap().push(req.clone());
                                respond(&mut *s, handler(&req));
                            }
                        };
                        match tls {
                            None => {
                                let mut s = stream;
                                serve(&mut s);
                            }
                            Some(cfg) => {
                                let Ok(conn) = rustls::ServerConnection::new(cfg) else {
                                    return;
                                };
                                let mut s = rustls::StreamOwned::new(conn, stream);
                                serve(&mut s);
                                s.conn.send_close_notify();
                                let _ = s.flush();
                            }
                        }
                    });
                }
            })
        };
        Self {
            addr,
            tls: is_tls,
            requests,
            stop,
            thread: Some(thread),
        }
    }

    /// `http(s)://<addr><path>`.
    pub fn url(&self, path: &str) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}{path}", self.addr)
    }

    /// `http://<addr>` (an issuer, for instance).
    pub fn origin(&self) -> String {
        self.url("")
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }

    pub fn hits(&self) -> usize {
        self.requests.lock().unwrap().len()
    }
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

impl Drop for Stub {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A loopback port with nothing listening on it (bound, then released).
pub fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A CA and a server certificate for `127.0.0.1` signed by it: (CA PEM, server config).
pub fn tls_for_loopback() -> (String, Arc<rustls::ServerConfig>) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "oidcvault test CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    let key = rustls::pki_types::PrivateKeyDer::try_from(leaf_key.serialize_der()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![leaf.der().clone()], key)
    .unwrap();
    (ca_cert.pem(), Arc::new(config))
}
