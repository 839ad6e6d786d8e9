//! Abuse limits (`[limits]`) through the real binary over TCP, for what only a
//! socket shows: slow and stalled clients timed out, a cap on connections and
//! on connections per address (plain and TLS), a parallel burst of bad tokens
//! from a second client address (127.0.0.2); each with a legitimate client
//! served while the abusive one is refused. The in-process half is `limits`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::poll;
use crate::harness::server::accept_queue;
use crate::harness::{config_toml, parse_listening, tail, Home, Server, CONFIG_PATH, PASSPHRASE};

// ---- through the binary -----------------------------------------------------------------

/// One HTTP exchange over a raw socket.
struct Raw {
    status: u16,
    head: String,
    body: String,
}

impl Raw {
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

impl std::fmt::Debug for Raw {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}\n\n{}", self.head, self.body)
    }
}

/// A TCP connection to `server` from the loopback address `from` (127.0.0.2 is
/// another client address; Linux routes all of 127/8 to the loopback device).
fn connect_from(from: &str, server: SocketAddr) -> TcpStream {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    s.bind(&SocketAddr::new(from.parse().unwrap(), 0).into())
        .unwrap_or_else(|e| panic!("bind {from}: {e}"));
    s.connect_timeout(&server.into(), Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connect to {server} from {from}: {e}"));
    let s: TcpStream = s.into();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

/// Read until the peer closes (or the read timeout): the whole answer.
fn read_answer(s: &mut TcpStream) -> Option<Raw> {
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some(Raw {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    })
}

fn raw_request(from: &str, server: SocketAddr, request: &str) -> Raw {
    let mut s = connect_from(from, server);
    s.write_all(request.as_bytes()).unwrap();
    read_answer(&mut s).unwrap_or_else(|| panic!("no answer to {request:?}"))
}

fn get_config(token: &str) -> String {
    format!(
        "GET {CONFIG_PATH} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\n\
         Connection: close\r\n\r\n"
    )
}

/// A server with small limits: 1 worker, 8 connections, 1 s timeouts.
fn start_limited(home: &Home) -> (Server, SocketAddr) {
    start_with(
        home,
        1,
        "auth_failures_per_window = 5\n\
         auth_failure_window_secs = 60\n\
         request_head_timeout_secs = 1\n\
         request_body_timeout_secs = 1\n\
         keep_alive_secs = 1\n\
         disconnect_timeout_secs = 1\n\
         max_header_bytes = 4096\n\
         max_connections = 8\n",
    )
}

/// A server with `workers` workers and `limits` as its `[limits]` section.
fn start_with(home: &Home, workers: usize, limits: &str) -> (Server, SocketAddr) {
    let config = config_toml().replace("[server]\n", &format!("[server]\nworkers = {workers}\n"))
        + "\n[limits]\n"
        + limits;
    home.write_config(&config);
    let server = home.start();
    let addr = server
        .log()
        .lines()
        .find_map(parse_listening)
        .expect("listening address")
        .trim_start_matches("http://")
        .parse()
        .unwrap();
    (server, addr)
}

/// Wait until the server has taken every connection to `addr` off its accept
/// queue (so the ones just opened are counted before the test goes on); fails
/// after 10 s naming `what` and the queue length seen.
fn wait_accepted(addr: SocketAddr, what: &str) {
    poll::until(
        &format!("the server to accept {what} (its accept queue empty)"),
        Duration::from_secs(10),
        Duration::from_millis(10),
        || match accept_queue(addr)? {
            0 => Ok(()),
            n => Err(format!(
                "{n} connections still in the accept queue of {addr}"
            )),
        },
    );
}

fn legit_is_served(addr: SocketAddr, token: &str, what: &str, server: &Server) {
    let r = raw_request("127.0.0.1", addr, &get_config(token));
    assert_eq!(
        r.status,
        404,
        "{what}: a legitimate client was not served: {r:?}\n--- server stderr ---\n{}",
        tail(&server.log(), 4000)
    );
}

#[test]
fn abusive_clients_are_refused_while_a_legitimate_one_is_served() {
    let home = Home::new(Some(PASSPHRASE));
    home.run_ok(&["domain", "add", "acme.test"]);
    let token = home.run_ok(&["token", "create", "--domain", "acme.test"]);
    let (mut server, addr) = start_limited(&home);

    // 1. Guessing tokens from 127.0.0.2: 401 five times, then 429 with
    //    Retry-After, while 127.0.0.1 with its valid token is served throughout.
    let bad = "ovt_1_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    for i in 0..5 {
        let r = raw_request("127.0.0.2", addr, &get_config(bad));
        assert_eq!(r.status, 401, "guess {i}: {r:?}");
        legit_is_served(addr, &token, "during the guesses", &server);
    }
    let r = raw_request("127.0.0.2", addr, &get_config(bad));
    assert_eq!(r.status, 429, "{r:?}");
    let retry: u64 = r
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{r:?}");
    assert!(r.json()["detail"].is_string(), "{r:?}");
    let r = raw_request("127.0.0.2", addr, &get_config(&token));
    assert_eq!(
        r.status, 429,
        "the limited address, even with a valid token: {r:?}"
    );
    legit_is_served(addr, &token, "while 127.0.0.2 is limited", &server);

    // 2. Oversized head: 431 with a JSON body; the legitimate client is served.
    let padding = "p".repeat(5000);
    let r = raw_request(
        "127.0.0.3",
        addr,
        &format!(
            "GET {CONFIG_PATH} HTTP/1.1\r\nHost: t\r\nX-Padding: {padding}\r\n\
             Connection: close\r\n\r\n"
        ),
    );
    assert_eq!(r.status, 431, "{r:?}");
    assert!(
        r.json()["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("4096"),
        "{r:?}"
    );
    // Past actix's own 128 KiB limit it is refused while parsing, also 431.
    let huge = "h".repeat(140 * 1024);
    let r = raw_request(
        "127.0.0.3",
        addr,
        &format!("GET / HTTP/1.1\r\nHost: t\r\nX-Padding: {huge}\r\n\r\n"),
    );
    assert_eq!(r.status, 431, "{r:?}");
    legit_is_served(addr, &token, "after oversized heads", &server);

    // 3. Oversized body: 413 from Content-Length alone, before a byte of the
    //    body is sent (the client still has it all to send).
    let mut s = connect_from("127.0.0.3", addr);
    s.write_all(
        format!(
            "POST {CONFIG_PATH} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/json\r\nContent-Length: 10485760\r\n\r\n"
        )
        .as_bytes(),
    )
    .unwrap();
    let r = read_answer(&mut s).expect("an answer before the body");
    assert_eq!(r.status, 413, "{r:?}");

    // 4. Stalled clients: a head that never ends gets 408 from actix and is
    //    closed; a body that stops coming gets our 408 JSON. Both within a few
    //    seconds of the 1 s limits, and the legitimate client is served meanwhile.
    let started = Instant::now();
    let mut head_staller = connect_from("127.0.0.4", addr);
    head_staller
        .write_all(format!("GET {CONFIG_PATH} HTTP/1.1\r\nHost: t\r\n").as_bytes())
        .unwrap();
    let mut body_staller = connect_from("127.0.0.4", addr);
    body_staller
        .write_all(
            format!(
                "POST {CONFIG_PATH} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\n\
                 Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"client_id\""
            )
            .as_bytes(),
        )
        .unwrap();
    legit_is_served(addr, &token, "while two clients stall", &server);
    let r = read_answer(&mut head_staller);
    let head_closed = started.elapsed();
    assert!(
        r.as_ref().is_none_or(|r| r.status == 408),
        "stalled head: {r:?}"
    );
    let r = read_answer(&mut body_staller).expect("an answer to the stalled body");
    let body_closed = started.elapsed();
    assert_eq!(r.status, 408, "stalled body: {r:?}");
    assert!(r.json()["detail"].is_string(), "{r:?}");
    assert!(
        head_closed < Duration::from_secs(10) && body_closed < Duration::from_secs(10),
        "stalled connections were held for {head_closed:?} / {body_closed:?} with 1 s limits"
    );
    // 4b. An idle keep-alive connection is closed after keep_alive_secs.
    let mut idle = connect_from("127.0.0.4", addr);
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let t = Instant::now();
    let mut buf = Vec::new();
    let _ = idle.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "an idle keep-alive connection stayed open {:?}",
        t.elapsed()
    );

    // 5. Connection cap: 8 connections that send nothing fill the server (one
    //    worker, max_connections = 8). A new client waits in the backlog instead
    //    of being served, until the idle ones time out (1 s); then it is served.
    //    The hogs themselves time out after 1 s (the head timeout), so an attempt
    //    only proves something if the waiting client's first read ends before
    //    that: on a loaded machine (the whole suite in parallel) the setup can
    //    take longer, and then the attempt is made again with fresh hogs.
    let (hogs, mut waiting, t) = {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let hogs: Vec<TcpStream> = (0..8).map(|_| connect_from("127.0.0.5", addr)).collect();
            let hogs_at = Instant::now();
            wait_accepted(addr, "the 8 idle connections");
            let t = Instant::now();
            let mut waiting = connect_from("127.0.0.1", addr);
            waiting.write_all(get_config(&token).as_bytes()).unwrap();
            waiting
                .set_read_timeout(Some(Duration::from_millis(400)))
                .unwrap();
            let mut first = [0u8; 1];
            let early = waiting.read(&mut first);
            let meaningful = hogs_at.elapsed() < Duration::from_millis(900);
            if early.is_err() || !meaningful {
                if early.is_err() {
                    break (hogs, waiting, t);
                }
                // Inconclusive: the hogs may have timed out already.
                assert!(
                    attempt < 5,
                    "the machine is too slow to hold 8 idle connections for 0.9 s ({attempt} \
                     attempts)"
                );
                drop(hogs);
                drop(waiting);
                std::thread::sleep(Duration::from_millis(1500));
                continue;
            }
            panic!(
                "served at once although 8 connections held every slot: {early:?} after {:?} \
                 (the hogs connected {:?} before)",
                t.elapsed(),
                hogs_at.elapsed()
            );
        }
    };
    waiting
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut rest = Vec::new();
    let _ = waiting.read_to_end(&mut rest);
    let text = String::from_utf8_lossy(&rest);
    let waited = t.elapsed();
    assert!(
        text.contains(" 404 ") || text.starts_with("TTP/1.1 404"),
        "the waiting client was not served once slots freed (after {waited:?}): {text:?}\n\
         --- server stderr ---\n{}",
        tail(&server.log(), 4000)
    );
    // The hogs were closed by the server (EOF or an actix 408).
    for mut h in hogs {
        h.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut b = Vec::new();
        let r = h.read_to_end(&mut b);
        assert!(
            r.is_ok(),
            "an idle connection was not closed by the server: {r:?}"
        );
    }
    eprintln!(
        "limits: stalled head closed after {head_closed:?}, stalled body answered 408 after \
         {body_closed:?}, capped client served after {waited:?}"
    );
    server.stop();
}

/// A parallel burst of bad tokens from one address gets no more than the
/// allowance through (4 workers, so the requests really run at once): checking
/// and counting are one step.
#[test]
fn a_parallel_burst_gets_no_more_than_the_allowance_through() {
    let home = Home::new(Some(PASSPHRASE));
    home.run_ok(&["domain", "add", "acme.test"]);
    let token = home.run_ok(&["token", "create", "--domain", "acme.test"]);
    let (mut server, addr) = start_with(
        &home,
        4,
        "auth_failures_per_window = 5\nauth_failure_window_secs = 600\n",
    );
    let bad = "ovt_1_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let mut statuses = Vec::new();
    // Several rounds, each of 48 requests sent together.
    for _ in 0..3 {
        let barrier = std::sync::Barrier::new(48);
        let round: Vec<u16> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..48)
                .map(|_| {
                    let barrier = &barrier;
                    s.spawn(move || {
                        let mut c = connect_from("127.0.0.2", addr);
                        let request = get_config(bad);
                        barrier.wait();
                        c.write_all(request.as_bytes()).unwrap();
                        read_answer(&mut c).map_or(0, |r| r.status)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        statuses.extend(round);
    }
    let unauthorized = statuses.iter().filter(|&&s| s == 401).count();
    let limited = statuses.iter().filter(|&&s| s == 429).count();
    assert_eq!(
        unauthorized + limited,
        statuses.len(),
        "every request is answered 401 or 429: {statuses:?}"
    );
    assert!(
        unauthorized <= 5,
        "{unauthorized} bad tokens were checked with an allowance of 5: {statuses:?}"
    );
    legit_is_served(addr, &token, "after the burst", &server);
    server.stop();
}

/// One address cannot take every connection: with `max_connections = 8` and
/// `max_connections_per_address = 3`, eight silent connections from 127.0.0.2
/// get three slots (the other five are closed at once, unanswered), and a client
/// at 127.0.0.1 is served at once, although the head timeout (30 s) would keep
/// the silent ones open. Closing them gives their slots back.
#[test]
fn one_address_cannot_take_every_connection() {
    let home = Home::new(Some(PASSPHRASE));
    home.run_ok(&["domain", "add", "acme.test"]);
    let token = home.run_ok(&["token", "create", "--domain", "acme.test"]);
    let (mut server, addr) = start_with(
        &home,
        1,
        "request_head_timeout_secs = 30\n\
         keep_alive_secs = 30\n\
         max_connections = 8\n\
         max_connections_per_address = 3\n",
    );
    let mut hogs: Vec<TcpStream> = (0..8).map(|_| connect_from("127.0.0.2", addr)).collect();
    wait_accepted(addr, "the 8 silent connections from 127.0.0.2");
    // Served within a few seconds, not after the 30 s head timeout.
    let t = Instant::now();
    let mut c = connect_from("127.0.0.1", addr);
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.write_all(get_config(&token).as_bytes()).unwrap();
    let r = read_answer(&mut c);
    assert_eq!(
        r.as_ref().map(|r| r.status),
        Some(404),
        "127.0.0.1 was not served while 127.0.0.2 held its connections (after {:?}): {r:?}\n\
         --- server stderr ---\n{}",
        t.elapsed(),
        tail(&server.log(), 4000)
    );
    // Which hogs were closed by the server: read with a short timeout; a closed
    // one reads EOF (or a reset), a held one times out.
    let mut held = Vec::new();
    let mut closed = 0;
    for mut h in hogs.drain(..) {
        h.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let mut b = [0u8; 64];
        match h.read(&mut b) {
            Ok(0) => closed += 1,
            Ok(n) => panic!("a silent connection got an answer: {:?}", &b[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                held.push(h)
            }
            Err(_) => closed += 1, // reset
        }
    }
    assert_eq!((held.len(), closed), (3, 5), "held / closed");
    // An address at its allowance gets no fourth connection...
    let mut fourth = connect_from("127.0.0.2", addr);
    fourth
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let _ = fourth.write_all(get_config(&token).as_bytes());
    let mut b = Vec::new();
    let _ = fourth.read_to_end(&mut b);
    assert!(b.is_empty(), "{}", String::from_utf8_lossy(&b));
    // ...until it closes one: the slot is given back (once the server has seen
    // the close: retried for up to 5 s on a busy machine).
    drop(held.pop());
    let t = Instant::now();
    let served = loop {
        // A poll (bounded, 5 s), not a wait: retried until the slot is back.
        std::thread::sleep(Duration::from_millis(100));
        let mut s = connect_from("127.0.0.2", addr);
        let _ = s.write_all(get_config(&token).as_bytes());
        match read_answer(&mut s) {
            Some(r) => break Some(r),
            None if t.elapsed() > Duration::from_secs(5) => break None,
            None => {}
        }
    };
    assert_eq!(
        served.as_ref().map(|r| r.status),
        Some(404),
        "no slot given back after closing a connection: {served:?}"
    );
    drop(held);
    server.stop();
}

/// The per-address cap holds over TLS too (actix hands the connection over after
/// the handshake): with `max_connections_per_address = 2`, a third TLS
/// connection from 127.0.0.2 is closed right after its handshake while two are
/// held, and 127.0.0.1 is served.
#[test]
fn the_per_address_cap_holds_over_tls() {
    use rustls::pki_types::pem::PemObject;
    use std::sync::Arc;
    let home = Home::new(Some(PASSPHRASE));
    let generated =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .expect("generate a certificate");
    let (cert, key) = (home.path().join("cert.pem"), home.path().join("key.pem"));
    std::fs::write(&cert, generated.cert.pem()).unwrap();
    std::fs::write(&key, generated.signing_key.serialize_pem()).unwrap();
    let config = config_toml().replace(
        "[server]\n",
        &format!(
            "[server]\nworkers = 1\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
            cert.display(),
            key.display()
        ),
    ) + "\n[limits]\nrequest_head_timeout_secs = 30\nkeep_alive_secs = 30\n\
             max_connections_per_address = 2\n";
    home.write_config(&config);
    let mut server = home.start();
    let addr: SocketAddr = server
        .log()
        .lines()
        .find_map(parse_listening)
        .expect("listening address")
        .trim_start_matches("https://")
        .parse()
        .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(
            rustls::pki_types::CertificateDer::from_pem_slice(generated.cert.pem().as_bytes())
                .unwrap(),
        )
        .unwrap();
    let tls = Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth(),
    );
    // A TLS connection from `from` with its handshake done.
    let open = |from: &str| {
        let mut tcp = connect_from(from, addr);
        let mut conn = rustls::ClientConnection::new(
            tls.clone(),
            rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap(),
        )
        .unwrap();
        while conn.is_handshaking() {
            conn.complete_io(&mut tcp).expect("TLS handshake");
        }
        rustls::StreamOwned::new(conn, tcp)
    };
    // Whether the server closed the connection within half a second.
    let closed = |s: &mut rustls::StreamOwned<rustls::ClientConnection, TcpStream>| {
        s.sock
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let mut b = [0u8; 16];
        match s.read(&mut b) {
            Ok(0) => true,
            Ok(_) => panic!("a silent connection got data"),
            Err(e) => !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
        }
    };
    let mut held = vec![open("127.0.0.2"), open("127.0.0.2")];
    // A margin, not a wait for a state this test can see: the server counts a TLS
    // connection when its side of the handshake ends (after the client's), and
    // nothing outside the process shows that count (the accept queue emptied
    // long before, at the TCP accept).
    std::thread::sleep(Duration::from_millis(200));
    let mut third = open("127.0.0.2");
    assert!(
        closed(&mut third),
        "a third TLS connection from one address was kept"
    );
    for h in &mut held {
        assert!(!closed(h), "a connection within the allowance was closed");
    }
    let mut legit = open("127.0.0.1");
    legit
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    legit
        .sock
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut answer = Vec::new();
    let _ = legit.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    drop(held);
    server.stop();
}
