//! A single-member etcd for the engine's tests: Debian's `etcd` (package
//! etcd-server) on free loopback ports, data in a temp dir, killed on drop.
//! Without `etcd` on PATH the tests print a NOTE and pass, except under
//! `CI=true`, where they fail (CI installs it: scripts/test.sh).

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{EtcdConfig, EtcdEngine};
use crate::store::engine::Engine;

pub(super) struct TestEtcd {
    child: Option<Child>,
    dir: tempfile::TempDir,
    client_port: u16,
    peer_port: u16,
    /// Clients must use TLS with a certificate (files in `dir`: ca.pem,
    /// server.pem/-key.pem, client.pem/-key.pem).
    tls: bool,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap()
}

fn etcd_on_path() -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("etcd").is_file()))
}

impl TestEtcd {
    /// A running etcd, or `None` (with a NOTE) when etcd is not installed
    /// and this is not CI.
    pub(super) fn start(test: &str) -> Option<TestEtcd> {
        Self::start_with(test, false)
    }

    /// As [`TestEtcd::start`], serving clients over TLS only, and only
    /// clients with a certificate of its CA.
    pub(super) fn start_tls(test: &str) -> Option<TestEtcd> {
        Self::start_with(test, true)
    }

    fn start_with(test: &str, tls: bool) -> Option<TestEtcd> {
        if !etcd_on_path() {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("{test}: etcd is not on PATH (CI=true): apt-get install etcd-server");
            }
            eprintln!("NOTE: {test} skipped: etcd is not on PATH (apt-get install etcd-server)");
            return None;
        }
        let mut etcd = TestEtcd {
            child: None,
            dir: tempfile::tempdir().unwrap(),
            client_port: free_port(),
            peer_port: free_port(),
            tls,
        };
        if tls {
            etcd.write_certificates();
        }
        etcd.spawn();
        Some(etcd)
    }

    pub(super) fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    pub(super) fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A CA, and a server and a client certificate it signed.
    fn write_certificates(&self) {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, "etcd test CA");
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        std::fs::write(self.file("ca.pem"), ca_cert.pem()).unwrap();
        let issuer = Issuer::new(ca, ca_key);
        for (name, san) in [("server", "127.0.0.1"), ("client", "oidcvault")] {
            let key = KeyPair::generate().unwrap();
            let cert = CertificateParams::new(vec![san.to_owned()])
                .unwrap()
                .signed_by(&key, &issuer)
                .unwrap();
            std::fs::write(self.file(&format!("{name}.pem")), cert.pem()).unwrap();
            std::fs::write(self.file(&format!("{name}-key.pem")), key.serialize_pem()).unwrap();
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("etcd.log")
    }

    /// The end of etcd's log, for a failing test's message.
    pub(super) fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    fn spawn(&mut self) {
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        let mut command = Command::new("etcd");
        if self.tls {
            command
                .arg(format!("--cert-file={}", self.file("server.pem").display()))
                .arg(format!(
                    "--key-file={}",
                    self.file("server-key.pem").display()
                ))
                .arg(format!(
                    "--trusted-ca-file={}",
                    self.file("ca.pem").display()
                ))
                .arg("--client-cert-auth");
        }
        let child = command
            .arg("--name=t")
            .arg(format!(
                "--data-dir={}",
                self.dir.path().join("data").display()
            ))
            .arg(format!("--listen-client-urls={}", self.url()))
            .arg(format!("--advertise-client-urls={}", self.url()))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=t={peer}"))
            .arg("--logger=zap")
            .arg("--log-outputs=stderr")
            .env("ETCD_UNSUPPORTED_ARCH", std::env::consts::ARCH)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        let addr = ("127.0.0.1", self.client_port);
        while TcpStream::connect(addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "etcd did not listen on {} within 20 s; its log:\n{}",
                self.url(),
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL etcd (its data stays for [`TestEtcd::restart`]).
    pub(super) fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start etcd again on the same data and ports.
    pub(super) fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// The engine's configuration for this etcd under `prefix`.
    pub(super) fn config(&self, prefix: &str) -> EtcdConfig {
        let tls = |name: &str| self.tls.then(|| self.file(name));
        EtcdConfig {
            endpoints: vec![self.url()],
            prefix: prefix.into(),
            timeout_secs: 3,
            ca_file: tls("ca.pem"),
            cert_file: tls("client.pem"),
            key_file: tls("client-key.pem"),
            ..EtcdConfig::default()
        }
    }

    /// An engine on this etcd under `prefix`, once etcd answers (it has a
    /// leader).
    pub(super) fn engine(&self, prefix: &str) -> EtcdEngine {
        let engine = EtcdEngine::connect(&self.config(prefix)).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while let Err(e) = engine.ready() {
            assert!(
                Instant::now() < deadline,
                "etcd at {} not ready within 20 s: {e}; its log:\n{}",
                self.url(),
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        engine
    }
}

impl Drop for TestEtcd {
    fn drop(&mut self) {
        self.kill();
    }
}
