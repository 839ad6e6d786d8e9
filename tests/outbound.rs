//! The SSRF guard and the outbound client, against stub servers on loopback.
//!
//! Non-loopback address classes are exercised through `Outbound::check`, which
//! never opens a connection, so no packet can leave loopback even if the guard
//! were wrong; loopback classes go through real fetches, with a stub listening
//! on the refused address to show that nothing reached it.

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use oidcvault::outbound::{AddressClass, Busy, FetchError, Outbound, Refused, Settings};

use crate::harness::stub_http::{closed_port, tls_for_loopback, Reply, Stub};

fn settings(http: &[&str], private: &[&str]) -> Settings {
    Settings {
        connect_timeout: Duration::from_secs(2),
        timeout: Duration::from_secs(3),
        max_response_bytes: 4096,
        max_redirects: 2,
        max_concurrent_fetches: 16,
        allow_http_hosts: http.iter().map(|s| s.to_string()).collect(),
        allow_private_hosts: private.iter().map(|s| s.to_string()).collect(),
        extra_ca_file: None,
        resolve_discovery_on_save: true,
        enabled: true,
    }
}

/// `outbound.enabled = false`: refused before any name is looked up.
#[test]
fn disabled_outbound_looks_up_and_connects_to_nothing() {
    let looked_up = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = looked_up.clone();
    let out = Outbound::new(&Settings {
        enabled: false,
        ..settings(&["127.0.0.1"], &["127.0.0.1"])
    })
    .expect("outbound client")
    .with_resolver(move |_, _| {
        seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(vec!["93.184.215.14".parse().unwrap()])
    });
    for url in [
        "https://idp.example.com/.well-known/openid-configuration",
        "http://127.0.0.1:9/x",
    ] {
        let err = out.get(url, "application/json").expect_err("disabled");
        assert!(
            err.to_string().contains("outbound.enabled = false"),
            "{url}: {err}"
        );
        assert!(out.check(url).is_err(), "{url}");
    }
    assert_eq!(
        looked_up.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "a name was looked up"
    );
}

fn client(http: &[&str], private: &[&str]) -> Outbound {
    Outbound::new(&settings(http, private)).expect("outbound client")
}

fn ok_stub(ip: &str) -> Stub {
    Stub::start(ip, |r| {
        Reply::Json(200, format!(r#"{{"path": "{}"}}"#, r.path))
    })
}

#[track_caller]
fn refused_class(r: Result<impl std::fmt::Debug, FetchError>, want: AddressClass) {
    match r {
        Err(FetchError::Refused {
            reason: Refused::Address { class, .. },
            ..
        }) if class == want => {}
        other => panic!("expected a refusal as {want:?}, got {other:?}"),
    }
}

#[test]
fn each_internal_address_class_is_refused() {
    // Names resolved by a stub resolver to one address of each class; checked
    // without connecting.
    let table: Vec<(&str, &str, AddressClass)> = vec![
        ("loopback", "127.0.0.1", AddressClass::Loopback),
        ("loopback6", "::1", AddressClass::Loopback),
        ("rfc1918-10", "10.1.2.3", AddressClass::Private),
        ("rfc1918-172", "172.20.0.1", AddressClass::Private),
        ("rfc1918-192", "192.168.0.10", AddressClass::Private),
        ("ula", "fd12::1", AddressClass::UniqueLocal),
        ("linklocal", "169.254.10.10", AddressClass::LinkLocal),
        ("linklocal6", "fe80::1", AddressClass::LinkLocal),
        ("multicast", "224.0.0.251", AddressClass::Multicast),
        ("multicast6", "ff02::fb", AddressClass::Multicast),
        ("unspecified", "0.0.0.0", AddressClass::Unspecified),
        ("unspecified6", "::", AddressClass::Unspecified),
        ("broadcast", "255.255.255.255", AddressClass::Broadcast),
        ("cgnat", "100.64.1.1", AddressClass::SharedCgnat),
        ("metadata", "169.254.169.254", AddressClass::CloudMetadata),
        ("metadata6", "fd00:ec2::254", AddressClass::CloudMetadata),
        ("mapped", "::ffff:10.0.0.1", AddressClass::Private),
        (
            "mapped-metadata",
            "::ffff:169.254.169.254",
            AddressClass::CloudMetadata,
        ),
        ("reserved", "240.1.2.3", AddressClass::Reserved),
        // Oracle Cloud's and GCP's metadata addresses; SIIT's IPv4-translated
        // form (::ffff:0:0:0/96), refused whatever IPv4 address it carries.
        (
            "metadata-oracle",
            "192.0.0.192",
            AddressClass::CloudMetadata,
        ),
        ("ietf-192-0-0", "192.0.0.10", AddressClass::Reserved),
        ("metadata-gcp6", "fd20:ce::254", AddressClass::CloudMetadata),
        ("siit-loopback", "::ffff:0:7f00:1", AddressClass::Loopback),
        (
            "siit-metadata",
            "::ffff:0:a9fe:a9fe",
            AddressClass::CloudMetadata,
        ),
        ("siit-public", "::ffff:0:808:808", AddressClass::Reserved),
    ];
    let map: Vec<(String, IpAddr)> = table
        .iter()
        .map(|(n, ip, _)| (format!("{n}.test"), ip.parse().unwrap()))
        .collect();
    let out = client(&[], &[]).with_resolver(move |host, _| {
        map.iter()
            .find(|(n, _)| n == host)
            .map(|(_, ip)| vec![*ip])
            .ok_or_else(|| std::io::Error::other("unknown test name"))
    });
    for (name, ip, class) in &table {
        refused_class(out.check(&format!("https://{name}.test/x")), *class);
        // The same address written into the URL.
        let literal = if ip.contains(':') {
            format!("https://[{ip}]/x")
        } else {
            format!("https://{ip}/x")
        };
        refused_class(out.check(&literal), *class);
    }
    // Other spellings of an address are the address (the URL parser normalises them).
    for odd in [
        "https://2130706433/",
        "https://0x7f.0.0.1/",
        "https://017700000001/",
        "https://127.1/",
        "https://[::ffff:7f00:1]/",
        "https://[0:0:0:0:0:ffff:127.0.0.1]/",
    ] {
        refused_class(out.check(odd), AddressClass::Loopback);
    }
    refused_class(
        out.check("https://0xa9fea9fe/"),
        AddressClass::CloudMetadata,
    );
    // The message names the address, its class and the setting to change.
    let msg = out
        .check("https://rfc1918-10.test/")
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("10.1.2.3") && msg.contains("private") && msg.contains("allow_private_hosts"),
        "{msg}"
    );
    // A public address passes the check.
    let public = client(&[], &[]).with_resolver(|_, _| Ok(vec!["93.184.215.14".parse().unwrap()]));
    assert_eq!(public.check("https://idp.example.com/"), Ok(()));
}

#[test]
fn loopback_fetches_are_refused_before_connecting() {
    let stub = ok_stub("127.0.0.1");
    let port = stub.addr.port();
    let out = client(&["127.0.0.1", "localhost", "::1"], &[]);
    refused_class(
        out.get(&format!("http://127.0.0.1:{port}/x"), "*/*"),
        AddressClass::Loopback,
    );
    let named = out
        .clone()
        .with_resolver(|_, _| Ok(vec!["127.0.0.1".parse().unwrap()]));
    refused_class(
        named.get(&format!("http://localhost:{port}/x"), "*/*"),
        AddressClass::Loopback,
    );
    // Mixed answers: one internal address refuses the whole name.
    let mixed = out.clone().with_resolver(|_, _| {
        Ok(vec![
            "93.184.215.14".parse().unwrap(),
            "127.0.0.1".parse().unwrap(),
        ])
    });
    refused_class(
        mixed.get(&format!("http://localhost:{port}/x"), "*/*"),
        AddressClass::Loopback,
    );
    assert_eq!(stub.hits(), 0, "a refused fetch reached the server");
}

#[test]
fn the_allowlists_admit_exactly_what_they_name() {
    let a = ok_stub("127.0.0.1");
    let b = ok_stub("127.0.0.2");
    let out = client(&["127.0.0.1"], &["127.0.0.1"]);
    let r = out.get(&a.url("/doc"), "*/*").expect("allowlisted address");
    assert_eq!(r.status, 200);
    // 127.0.0.2 is in neither list: plain http is refused first ...
    assert!(matches!(
        out.get(&b.url("/doc"), "*/*"),
        Err(FetchError::Refused {
            reason: Refused::PlainHttp { .. },
            ..
        })
    ));
    // ... and with http allowed, its address is still not.
    let http_only = client(&["127.0.0.2"], &["127.0.0.1"]);
    refused_class(http_only.get(&b.url("/doc"), "*/*"), AddressClass::Loopback);
    // A host-name entry admits that exact name, not another name for the same address.
    let names = client(&["lab.test", "other.test", "sub.lab.test"], &["lab.test"])
        .with_resolver(|_, _| Ok(vec!["127.0.0.2".parse().unwrap()]));
    let port = b.addr.port();
    let r = names
        .get(&format!("http://lab.test:{port}/named"), "*/*")
        .expect("allowlisted name");
    assert_eq!(r.status, 200);
    refused_class(
        names.get(&format!("http://other.test:{port}/x"), "*/*"),
        AddressClass::Loopback,
    );
    refused_class(
        names.get(&format!("http://sub.lab.test:{port}/x"), "*/*"),
        AddressClass::Loopback,
    );
    // A network entry.
    let net = client(&["127.0.0.2"], &["127.0.0.0/31"]);
    refused_class(net.get(&b.url("/x"), "*/*"), AddressClass::Loopback);
    let net = client(&["127.0.0.2"], &["127.0.0.0/30"]);
    assert_eq!(net.get(&b.url("/net"), "*/*").unwrap().status, 200);
    let paths: Vec<String> = b.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(
        paths,
        ["/named", "/net"],
        "only the admitted fetches reached 127.0.0.2"
    );
    let host = b.requests()[0].header("host").map(str::to_owned);
    assert_eq!(host.as_deref(), Some(format!("lab.test:{port}").as_str()));
}

#[test]
fn the_name_is_resolved_once_and_the_connection_pinned() {
    // A rebinding resolver: the first answer is the allowlisted address, every
    // later one another address (where a second server waits).
    let a = Stub::start("127.0.0.1", |r| {
        if r.path == "/hop" {
            Reply::redirect(302, "/landed")
        } else {
            Reply::Json(200, "{}".into())
        }
    });
    let b = ok_stub("127.0.0.2");
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let out = client(&["rebind.test"], &["127.0.0.1"]).with_resolver(move |_, _| {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        Ok(vec![if n == 0 { "127.0.0.1" } else { "127.0.0.2" }
            .parse()
            .unwrap()])
    });
    let port = a.addr.port();
    let r = out
        .get(&format!("http://rebind.test:{port}/doc"), "*/*")
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(calls.load(Ordering::SeqCst), 1, "one resolution per fetch");
    assert_eq!(a.hits(), 1);
    // A redirect is checked again: the second answer is refused.
    refused_class(
        out.get(&format!("http://rebind.test:{port}/hop"), "*/*"),
        AddressClass::Loopback,
    );
    assert_eq!(b.hits(), 0, "the rebound address was reached");
}

#[test]
fn redirects_stay_on_the_same_host() {
    let other = ok_stub("127.0.0.2");
    let other_url = other.url("/stolen");
    let a = Stub::start("127.0.0.1", move |r| match r.path.as_str() {
        "/start" => Reply::redirect(302, "/doc"),
        "/away" => Reply::redirect(302, &other_url),
        "/loop" => Reply::redirect(307, "/loop"),
        "/nowhere" => Reply::redirect(302, ""),
        _ => Reply::Json(200, r#"{"ok": true}"#.into()),
    });
    let port = a.addr.port();
    let out = client(
        &["127.0.0.1", "127.0.0.2", "localhost"],
        &["127.0.0.1", "127.0.0.2"],
    );
    let r = out.get(&a.url("/start"), "*/*").unwrap();
    assert_eq!((r.status, r.url.path()), (200, "/doc"));
    match out.get(&a.url("/away"), "*/*") {
        Err(e @ FetchError::Redirect { .. }) => {
            assert!(e.to_string().contains("another host"), "{e}")
        }
        other => panic!("redirect to another host followed: {other:?}"),
    }
    assert_eq!(other.hits(), 0);
    match out.get(&a.url("/loop"), "*/*") {
        Err(e @ FetchError::Redirect { .. }) => {
            assert!(e.to_string().contains("max_redirects"), "{e}")
        }
        other => panic!("{other:?}"),
    }
    // Another name for the same address is another host, too.
    let named = out
        .clone()
        .with_resolver(|_, _| Ok(vec!["127.0.0.1".parse().unwrap()]));
    let b = Stub::start("127.0.0.1", move |_| {
        Reply::redirect(302, &format!("http://localhost:{port}/doc"))
    });
    assert!(matches!(
        named.get(&b.url("/x"), "*/*"),
        Err(FetchError::Redirect { .. })
    ));
    // A POST follows no redirect at all: the 3xx comes back as it is.
    let body = zeroize::Zeroizing::new(b"a=b".to_vec());
    let r = out.post_form(&a.url("/start"), None, &body).unwrap();
    assert_eq!(r.status, 302);
    assert_eq!(
        a.requests().iter().filter(|r| r.path == "/doc").count(),
        1,
        "only the GET followed /start"
    );
}

/// A redirect may not change the port (nor the scheme): same origin only, so a
/// provider on one port cannot send the fetch to another service on its host.
#[test]
fn redirects_keep_the_origin_port_and_scheme() {
    let other = ok_stub("127.0.0.1");
    let other_port = other.addr.port();
    let a = Stub::start("127.0.0.1", move |r| match r.path.as_str() {
        "/port" => Reply::redirect(302, &format!("http://127.0.0.1:{other_port}/stolen")),
        "/scheme" => Reply::redirect(302, &format!("https://127.0.0.1:{other_port}/stolen")),
        "/same" => Reply::redirect(302, "/doc"),
        _ => Reply::Json(200, r#"{"ok": true}"#.into()),
    });
    let out = client(&["127.0.0.1"], &["127.0.0.1"]);
    for path in ["/port", "/scheme"] {
        match out.get(&a.url(path), "*/*") {
            Err(e @ FetchError::Redirect { .. }) => {
                assert!(e.to_string().contains("same origin"), "{path}: {e}")
            }
            other => panic!("{path}: a redirect to another port was followed: {other:?}"),
        }
    }
    assert_eq!(other.hits(), 0, "the other port was reached");
    // The same origin, written in full with its explicit port, is followed.
    let r = out.get(&a.url("/same"), "*/*").unwrap();
    assert_eq!((r.status, r.url.path()), (200, "/doc"));
}

#[test]
fn oversized_answers_are_refused() {
    let a = Stub::start("127.0.0.1", |r| {
        let n = r
            .path
            .trim_start_matches('/')
            .split('-')
            .next()
            .unwrap()
            .parse::<usize>()
            .unwrap();
        Reply::Raw {
            status: 200,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: vec![b' '; n],
            no_length: r.path.ends_with("-nolength"),
        }
    });
    let out = client(&["127.0.0.1"], &["127.0.0.1"]);
    assert_eq!(out.get(&a.url("/4096"), "*/*").unwrap().body.len(), 4096);
    assert_eq!(
        out.get(&a.url("/4096-nolength"), "*/*").unwrap().body.len(),
        4096
    );
    for path in ["/4097", "/4097-nolength", "/1000000-nolength"] {
        match out.get(&a.url(path), "*/*") {
            Err(e @ FetchError::TooLarge { .. }) => {
                assert!(e.to_string().contains("max_response_bytes"), "{e}")
            }
            other => panic!("{path}: {:?}", other.map(|r| r.body.len())),
        }
    }
}

#[test]
fn slow_and_silent_servers_time_out() {
    let a = Stub::start("127.0.0.1", |r| match r.path.as_str() {
        "/trickle" => Reply::Trickle {
            every: Duration::from_millis(100),
            bytes: 200,
        },
        _ => Reply::Silence(Duration::from_secs(8)),
    });
    let mut s = settings(&["127.0.0.1"], &["127.0.0.1"]);
    s.timeout = Duration::from_secs(1);
    let out = Outbound::new(&s).unwrap();
    for path in ["/trickle", "/silence"] {
        let started = Instant::now();
        let r = out.get(&a.url(path), "*/*");
        let took = started.elapsed();
        assert!(
            matches!(r, Err(FetchError::Timeout { .. })),
            "{path}: {:?}",
            r.map(|r| r.status)
        );
        // The total timeout (1 s) bounds it; the margin is for a loaded machine.
        assert!(took < Duration::from_secs(6), "{path} took {took:?}");
    }
}

#[test]
fn credentials_schemes_and_plain_http_are_refused() {
    let a = ok_stub("127.0.0.1");
    let port = a.addr.port();
    let out = client(&["127.0.0.1"], &["127.0.0.1"]);
    for url in [
        format!("http://user:pw@127.0.0.1:{port}/"),
        format!("http://user@127.0.0.1:{port}/"),
        format!("https://:pw@127.0.0.1:{port}/"),
    ] {
        assert!(
            matches!(
                out.get(&url, "*/*"),
                Err(FetchError::Refused {
                    reason: Refused::Credentials,
                    ..
                })
            ),
            "{url}"
        );
    }
    for url in [
        format!("ftp://127.0.0.1:{port}/"),
        "file:///etc/passwd".to_owned(),
        format!("gopher://127.0.0.1:{port}/"),
    ] {
        assert!(
            matches!(out.get(&url, "*/*"), Err(FetchError::Refused { .. })),
            "{url}"
        );
    }
    let https_only = client(&[], &["127.0.0.1"]);
    assert!(matches!(
        https_only.get(&a.url("/"), "*/*"),
        Err(FetchError::Refused {
            reason: Refused::PlainHttp { .. },
            ..
        })
    ));
    assert_eq!(a.hits(), 0);
}

#[test]
fn an_unreachable_host_is_a_connect_error() {
    let out = client(&["127.0.0.1"], &["127.0.0.1"]);
    let url = format!("http://127.0.0.1:{}/x", closed_port());
    match out.get(&url, "*/*") {
        Err(e @ FetchError::Connect { .. }) => {
            assert!(e.to_string().contains("could not connect"), "{e}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn https_with_an_operator_ca() {
    let (ca_pem, tls) = tls_for_loopback();
    let stub = Stub::start_tls("127.0.0.1", tls, |_| {
        Reply::Json(200, r#"{"tls": true}"#.into())
    });
    // Not an allowlisted http host: https is the only way in.
    let plain = client(&[], &["127.0.0.1"]);
    match plain.get(&stub.url("/doc"), "*/*") {
        Err(e @ FetchError::Connect { .. }) => assert!(
            e.to_string().to_ascii_lowercase().contains("certificate")
                || e.to_string().contains("UnknownIssuer"),
            "{e}"
        ),
        other => panic!("an unknown CA was trusted: {other:?}"),
    }
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("lab-ca.pem");
    std::fs::write(&ca_file, ca_pem).unwrap();
    let mut s = settings(&[], &["127.0.0.1"]);
    s.extra_ca_file = Some(ca_file);
    let trusted = Outbound::new(&s).unwrap();
    let r = trusted
        .get(&stub.url("/doc"), "*/*")
        .expect("trusted through extra_ca_file");
    assert_eq!((r.status, r.url.scheme()), (200, "https"));
    // A file without a certificate is a configuration error that names the setting.
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "not a certificate\n").unwrap();
    s.extra_ca_file = Some(empty);
    let e = Outbound::new(&s).unwrap_err();
    assert!(e.contains("outbound.extra_ca_file"), "{e}");
}

/// A resolver that hangs until released, counting the lookups alive.
#[derive(Default)]
struct HangingResolver {
    released: std::sync::Mutex<bool>,
    wake: std::sync::Condvar,
    alive: AtomicUsize,
    most_alive: AtomicUsize,
    calls: AtomicUsize,
}

impl HangingResolver {
    fn resolve(&self) -> std::io::Result<Vec<IpAddr>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let now = self.alive.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_alive.fetch_max(now, Ordering::SeqCst);
        let mut released = self.released.lock().unwrap();
        while !*released {
            released = self.wake.wait(released).unwrap();
        }
        drop(released);
        self.alive.fetch_sub(1, Ordering::SeqCst);
        Ok(vec!["127.0.0.1".parse().unwrap()])
    }

    fn release(&self) {
        *self.released.lock().unwrap() = true;
        self.wake.notify_all();
    }
}

/// Outbound work is bounded: at most `max_concurrent_fetches` fetches at once,
/// and as many DNS lookup threads alive, lookups given up after the deadline
/// included. One more fails at once with `Busy`, starting no thread.
#[test]
fn fetches_and_hanging_lookups_are_bounded() {
    const N: usize = 2;
    const EXTRA: usize = 3;
    let stub = ok_stub("127.0.0.1");
    let port = stub.addr.port();
    let dns = Arc::new(HangingResolver::default());
    let mut s = settings(&["hang.test"], &["127.0.0.1"]);
    s.timeout = Duration::from_secs(1);
    s.max_concurrent_fetches = N;
    let resolver = dns.clone();
    let out = Outbound::new(&s)
        .unwrap()
        .with_resolver(move |_, _| resolver.resolve());
    let url = format!("http://hang.test:{port}/doc");

    // N + EXTRA fetches at once: N hang in DNS until their deadline, the rest
    // are refused at once (no fetch slot).
    let start = Arc::new(std::sync::Barrier::new(N + EXTRA));
    let threads: Vec<_> = (0..N + EXTRA)
        .map(|_| {
            let (out, url, start) = (out.clone(), url.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                let began = Instant::now();
                let r = out.get(&url, "*/*");
                (r.map(|r| r.status), began.elapsed())
            })
        })
        .collect();
    let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let timed_out = results
        .iter()
        .filter(|(r, _)| matches!(r, Err(FetchError::Timeout { .. })))
        .count();
    let busy: Vec<_> = results
        .iter()
        .filter(|(r, _)| {
            matches!(
                r,
                Err(FetchError::Busy {
                    what: Busy::Fetches,
                    limit: N
                })
            )
        })
        .collect();
    assert_eq!((timed_out, busy.len()), (N, EXTRA), "{results:?}");
    for (r, took) in &busy {
        // Refused at once, not after the 1 s deadline (margin for a loaded machine).
        assert!(*took < Duration::from_millis(900), "{r:?} took {took:?}");
        let msg = r.as_ref().unwrap_err().to_string();
        assert!(msg.contains("outbound.max_concurrent_fetches"), "{msg}");
    }
    // The N lookups given up at the deadline still hang, holding their slots.
    assert_eq!(dns.alive.load(Ordering::SeqCst), N);
    assert_eq!(out.lookups_in_flight(), N);

    // Fetch slots are free again, but no lookup slot is: every further fetch
    // (and check) fails at once and starts no resolver thread.
    let threads: Vec<_> = (0..N + EXTRA)
        .map(|_| {
            let (out, url) = (out.clone(), url.clone());
            std::thread::spawn(move || {
                let began = Instant::now();
                (out.get(&url, "*/*").map(|r| r.status), began.elapsed())
            })
        })
        .collect();
    for t in threads {
        let (r, took) = t.join().unwrap();
        assert!(
            matches!(
                r,
                Err(FetchError::Busy {
                    what: Busy::Lookups,
                    limit: N
                })
            ),
            "{r:?}"
        );
        assert!(took < Duration::from_millis(900), "took {took:?}");
    }
    assert!(matches!(
        out.check("https://hang.test/x"),
        Err(FetchError::Busy {
            what: Busy::Lookups,
            ..
        })
    ));
    assert_eq!(
        dns.calls.load(Ordering::SeqCst),
        N,
        "a lookup thread started"
    );
    assert_eq!(dns.most_alive.load(Ordering::SeqCst), N);
    assert_eq!(stub.hits(), 0);

    // Once the lookups end, their slots come back and fetches work again.
    dns.release();
    let waited = Instant::now();
    while out.lookups_in_flight() > 0 {
        assert!(
            waited.elapsed() < Duration::from_secs(10),
            "lookup slots not given back"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(out.get(&url, "*/*").unwrap().status, 200);
    assert_eq!(stub.hits(), 1);
    assert!(dns.most_alive.load(Ordering::SeqCst) <= N);
}

/// `Outbound::patiently` (a sign-in's requests to its provider): a fetch that
/// finds every slot taken waits for one instead of failing at once, and fails
/// with `Busy` only when the wait is over; other outcomes are not retried.
#[test]
fn a_patient_fetch_waits_for_a_slot_and_gives_up_after_its_wait() {
    let stub = ok_stub("127.0.0.1");
    let port = stub.addr.port();
    let dns = Arc::new(HangingResolver::default());
    let mut s = settings(&["hang.test", "127.0.0.1"], &["127.0.0.1"]);
    s.timeout = Duration::from_secs(2);
    s.max_concurrent_fetches = 1;
    let resolver = dns.clone();
    let out = Outbound::new(&s)
        .unwrap()
        .with_resolver(move |_, _| resolver.resolve());
    // The one slot is held by a fetch hanging in DNS until its 2 s deadline.
    let holder = {
        let out = out.clone();
        std::thread::spawn(move || out.get(&format!("http://hang.test:{port}/doc"), "*/*"))
    };
    let url = format!("http://127.0.0.1:{port}/doc");
    let deadline = Instant::now() + Duration::from_secs(1);
    while out.lookups_in_flight() == 0 {
        assert!(Instant::now() < deadline, "the holder never took the slot");
        std::thread::sleep(Duration::from_millis(5));
    }
    // A short wait gives up with Busy ...
    let began = Instant::now();
    let r = out.patiently(Duration::from_millis(200), || out.get(&url, "*/*"));
    assert!(
        matches!(
            r,
            Err(FetchError::Busy {
                what: Busy::Fetches,
                ..
            })
        ),
        "{:?}",
        r.map(|r| r.status)
    );
    assert!(
        began.elapsed() >= Duration::from_millis(150),
        "{:?}",
        began.elapsed()
    );
    // ... a long one gets the slot once the holder's deadline frees it.
    let r = out.patiently(Duration::from_secs(10), || out.get(&url, "*/*"));
    assert_eq!(r.map(|r| r.status).ok(), Some(200));
    assert!(matches!(
        holder.join().unwrap(),
        Err(FetchError::Timeout { .. })
    ));
    dns.release();
    // Not a busy answer: returned at once, not retried.
    let calls = AtomicUsize::new(0);
    let r: Result<(), FetchError> = out.patiently(Duration::from_secs(10), || {
        calls.fetch_add(1, Ordering::SeqCst);
        Err(FetchError::Refused {
            url: "x".into(),
            reason: Refused::Disabled,
        })
    });
    assert!(r.is_err());
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}
