//! oidcvault nodes on an [`EtcdCluster`]: each node is the real binary in its
//! own [`Home`] (own data directory, own fixed loopback port so a restart and
//! `server.public_url` keep it), all with `[storage] backend = "etcd"`, the
//! cluster's endpoints, a prefix unique to the test, `timeout_secs = 2`, and the
//! same master key (one key file's content written into every home).
//!
//! Also: a request that reports the `Retry-After` header and turns a transport
//! failure into `Err` (the fault tests must tell a 503 from a killed node).

use std::os::unix::fs::OpenOptionsExt;
use std::time::Duration;

use serde_json::Value;

use super::etcd::EtcdCluster;
use super::stub_http::closed_port;
use super::text::{b64, random_hex, tail};
use super::{Client, Home, Server};

/// The TOML list of the cluster's client URLs.
fn endpoints_toml(endpoints: &[String]) -> String {
    let quoted: Vec<String> = endpoints.iter().map(|e| format!("\"{e}\"")).collect();
    format!("[{}]", quoted.join(", "))
}

/// A node's `config.toml`: the test defaults, the etcd storage, `extra` appended
/// (whole sections, e.g. `[sso]`; `server_extra` goes into `[server]`).
pub(crate) fn node_config(
    port: u16,
    endpoints: &[String],
    prefix: &str,
    server_extra: &str,
    extra: &str,
) -> String {
    format!(
        "[server]\n\
         bind = \"127.0.0.1:{port}\"\n\
         shutdown_timeout_secs = 5\n\
         {server_extra}\
         \n\
         [storage]\n\
         data_dir = \"data\"\n\
         backend = \"etcd\"\n\
         \n\
         [storage.etcd]\n\
         endpoints = {}\n\
         prefix = \"{prefix}\"\n\
         timeout_secs = 2\n\
         \n\
         [security]\n\
         kdf_memory_kib = 19456\n\
         kdf_iterations = 2\n\
         kdf_parallelism = 1\n\
         \n\
         {extra}",
        endpoints_toml(endpoints)
    )
}

/// The default `[outbound]` of the tests (nothing fetched).
pub(crate) const NO_OUTBOUND: &str =
    "[outbound]\nenabled = false\nresolve_discovery_on_save = false\n";

/// A master key file's content: 256 random bits, base64, as the binary writes it.
pub(crate) fn master_key_text() -> String {
    let raw = random_hex(32);
    let bytes: Vec<u8> = (0..32)
        .map(|i| u8::from_str_radix(&raw[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    // The binary writes it padded; 32 bytes need one '='.
    format!("{}=\n", b64(&bytes, false))
}

/// Write `text` as `home`'s key file (0600, as the binary requires).
pub(crate) fn write_key_file(home: &Home, text: &str) {
    use std::io::Write;
    let path = home.key_file();
    let _ = std::fs::remove_file(&path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

/// One oidcvault node of a test: its home, its port and, while it runs, its server.
pub(crate) struct Node {
    pub(crate) home: Home,
    pub(crate) port: u16,
    pub(crate) server: Option<Server>,
}

impl Node {
    /// The running server; panics when the node was killed.
    pub(crate) fn server(&self) -> &Server {
        self.server.as_ref().expect("the node is not running")
    }

    pub(crate) fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Start (again) on the same home and port.
    pub(crate) fn start(&mut self) {
        assert!(self.server.is_none(), "the node already runs");
        let server = self.home.start();
        assert_eq!(
            server.client.base,
            self.base(),
            "started on another address"
        );
        self.server = Some(server);
    }

    /// `kill -9` the node (it stays down until [`Node::start`]).
    pub(crate) fn kill9(&mut self) {
        if let Some(mut s) = self.server.take() {
            s.kill9();
        }
    }

    /// SIGTERM; the exit must be clean.
    pub(crate) fn stop(&mut self) {
        if let Some(mut s) = self.server.take() {
            s.stop();
        }
    }

    /// The log so far ("(not running)" when killed).
    pub(crate) fn log(&self) -> String {
        self.server
            .as_ref()
            .map_or_else(|| "(not running)".to_owned(), Server::log)
    }
}

/// Options of [`Nodes::start`].
#[derive(Default)]
pub(crate) struct NodeOptions {
    /// Lines added to `[server]` of every node.
    pub(crate) server_extra: String,
    /// Sections appended to every node's config; [`NO_OUTBOUND`] when empty.
    pub(crate) extra: String,
    /// Ports to bind (one per node); free ones when empty.
    pub(crate) ports: Vec<u16>,
}

/// `n` oidcvault nodes on one etcd cluster, under one prefix and master key,
/// and an operator token (made with the CLI of the first node's home before
/// any server starts).
pub(crate) struct Nodes {
    pub(crate) nodes: Vec<Node>,
    pub(crate) operator: String,
    pub(crate) prefix: String,
    pub(crate) key: String,
}

impl Nodes {
    pub(crate) fn start(etcd: &EtcdCluster, n: usize) -> Self {
        Self::start_with(etcd, n, NodeOptions::default())
    }

    /// Homes for `n` nodes, each with its config and the shared key file; no
    /// server started and no token made yet.
    pub(crate) fn homes(etcd: &EtcdCluster, n: usize, options: &NodeOptions) -> Self {
        let prefix = format!("/oidcvault-test-{}/", random_hex(8));
        let key = master_key_text();
        let extra = if options.extra.is_empty() {
            NO_OUTBOUND
        } else {
            options.extra.as_str()
        };
        let nodes = (0..n)
            .map(|i| {
                let home = Home::new(None);
                let port = options.ports.get(i).copied().unwrap_or_else(closed_port);
                home.write_config(&node_config(
                    port,
                    &etcd.endpoints(),
                    &prefix,
                    &options.server_extra,
                    extra,
                ));
                write_key_file(&home, &key);
                Node {
                    home,
                    port,
                    server: None,
                }
            })
            .collect();
        Self {
            nodes,
            operator: String::new(),
            prefix,
            key,
        }
    }

    /// Homes, an operator token from the first home's CLI, then every node
    /// started (in parallel: each waits for its address).
    pub(crate) fn start_with(etcd: &EtcdCluster, n: usize, options: NodeOptions) -> Self {
        let mut nodes = Self::homes(etcd, n, &options);
        nodes.operator = nodes.nodes[0]
            .home
            .run_ok(&["token", "create", "--operator"]);
        std::thread::scope(|s| {
            for node in &mut nodes.nodes {
                s.spawn(move || node.start());
            }
        });
        nodes
    }

    pub(crate) fn server(&self, i: usize) -> &Server {
        self.nodes[i].server()
    }

    /// Every running node's log tail, after its WARN and ERROR lines (where a
    /// 500's correlation id leads), for failure messages.
    pub(crate) fn logs(&self) -> String {
        self.nodes
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let log = n.log();
                let alarms: Vec<&str> = log
                    .lines()
                    .filter(|l| l.contains(" ERROR ") || l.contains(" WARN "))
                    .take(40)
                    .collect();
                format!(
                    "--- node {i} ({}, etcd prefix {}) ---\nWARN/ERROR lines:\n{}\n--- tail ---\n{}",
                    n.base(),
                    self.prefix,
                    alarms.join("\n"),
                    tail(&log, 4000)
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// SIGTERM every running node; each must exit cleanly.
    pub(crate) fn stop_all(&mut self) {
        for n in &mut self.nodes {
            n.stop();
        }
    }
}

/// An answer with its `Retry-After`.
#[derive(Debug, Clone)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) retry_after: Option<String>,
    pub(crate) body: String,
}

impl Reply {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.body))
    }

    /// A 503 as the contract has it: `Retry-After` set, a JSON `detail`.
    pub(crate) fn is_unavailable(&self) -> bool {
        self.status == 503 && self.retry_after.is_some()
    }
}

impl std::fmt::Display for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "HTTP {} (Retry-After: {:?}) {}",
            self.status, self.retry_after, self.body
        )
    }
}

/// A request to `client`'s server; `Err` only when no answer came.
pub(crate) fn send(
    client: &Client,
    method: &str,
    path: &str,
    token: Option<&str>,
    domain: Option<&str>,
    body: Option<&Value>,
) -> Result<Reply, String> {
    let mut req = client
        .agent
        .request(method, &format!("{}{path}", client.base));
    if let Some(t) = token {
        req = req.set("Authorization", &format!("Bearer {t}"));
    }
    if let Some(d) = domain {
        req = req.set("X-Enterprise-Domain", d);
    }
    let result = match body {
        Some(b) => req.send_json(b),
        None => req.call(),
    };
    let r = match result {
        Ok(r) | Err(ureq::Error::Status(_, r)) => r,
        Err(e) => return Err(format!("{method} {}{path}: {e}", client.base)),
    };
    let status = r.status();
    let retry_after = r.header("Retry-After").map(str::to_owned);
    let body = r
        .into_string()
        .map_err(|e| format!("{method} {path}: reading the body: {e}"))?;
    Ok(Reply {
        status,
        retry_after,
        body,
    })
}

/// A client of `base` with a short timeout (a write stuck behind a lost
/// quorum answers 503 within the 2 s etcd timeout, not after 20 s).
pub(crate) fn short_client(base: &str) -> Client {
    let mut c = Client::new(base.to_owned());
    c.agent = ureq::AgentBuilder::new()
        .max_idle_connections(0)
        .timeout_connect(Duration::from_secs(2))
        .timeout(Duration::from_secs(10))
        .build();
    c
}
