//! A running `oidcvault serve` (started by [`super::Home::start`]): requests
//! that must get an answer, its log, SIGTERM and SIGKILL.

use std::process::{Child, Command, ExitStatus};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::{json, Value};

use super::client::{Client, Resp};
use super::home::wait_bounded;
use super::text::tail;
use super::EXIT_TIMEOUT;

/// The base URL (`http://addr` or `https://addr`) a server's log line announces.
pub(crate) fn parse_listening(line: &str) -> Option<String> {
    ["http://", "https://"].into_iter().find_map(|scheme| {
        let marker = format!("listening on {scheme}");
        let at = line.find(&marker)? + marker.len();
        let addr: String = line[at..]
            .chars()
            .take_while(|c| !c.is_whitespace() && *c != '"' && *c != ',')
            .collect();
        (!addr.is_empty()).then(|| format!("{scheme}{addr}"))
    })
}

/// A running `oidcvault serve`; killed (SIGKILL) when dropped.
pub(crate) struct Server {
    pub(super) child: Child,
    pub(crate) client: Client,
    pub(super) log: Arc<Mutex<String>>,
    pub(super) reader: Option<JoinHandle<()>>,
    pub(super) exit: Option<ExitStatus>,
}

impl Server {
    /// Everything the server wrote to stderr so far (ANSI stripped).
    pub(crate) fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    pub(crate) fn client(&self) -> Client {
        self.client.clone()
    }

    /// The server's process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A request that must get an answer (any status).
    pub(crate) fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        domain: Option<&str>,
        body: Option<&Value>,
    ) -> Resp {
        self.client
            .call(method, path, token, domain, body)
            .unwrap_or_else(|e| panic!("{e}\n--- server stderr ---\n{}", tail(&self.log(), 8000)))
    }

    /// A request that must answer `status`; its JSON body (`Null` when empty).
    pub(crate) fn expect(
        &self,
        status: u16,
        method: &str,
        path: &str,
        token: &str,
        domain: Option<&str>,
        body: Option<&Value>,
    ) -> Value {
        let r = self.call(method, path, Some(token), domain, body);
        assert_eq!(
            r.status,
            status,
            "{method} {path} (X-Enterprise-Domain: {domain:?}) with {body:?}: expected {status}, got {r}\n\
             --- server stderr ---\n{}",
            tail(&self.log(), 8000)
        );
        if r.body.is_empty() {
            Value::Null
        } else {
            r.json()
        }
    }

    pub(crate) fn add_domain(&self, operator: &str, name: &str) -> Value {
        self.expect(
            201,
            "POST",
            "/api/v1/admin/domains/",
            operator,
            None,
            Some(&json!({ "domain": name })),
        )
    }

    /// A domain token created over the admin API.
    pub(crate) fn create_token(&self, operator: &str, domain: &str) -> String {
        let v = self.expect(
            201,
            "POST",
            "/api/v1/admin/tokens/",
            operator,
            None,
            Some(&json!({ "domain": domain })),
        );
        v["token"]
            .as_str()
            .unwrap_or_else(|| panic!("no token in {v}"))
            .to_owned()
    }

    pub(crate) fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if self.exit.is_none() {
            self.exit = wait_bounded(&mut self.child, timeout);
            if self.exit.is_some() {
                if let Some(r) = self.reader.take() {
                    let _ = r.join();
                }
            }
        }
        self.exit
    }

    /// SIGKILL (`kill -9`) and reap.
    pub(crate) fn kill9(&mut self) -> ExitStatus {
        if let Some(status) = self.exit {
            return status;
        }
        let _ = self.child.kill();
        self.wait_exit(EXIT_TIMEOUT)
            .expect("a SIGKILLed process did not exit")
    }

    /// SIGTERM, then wait for the exit status (SIGKILL and panic on timeout).
    fn terminate(&mut self) -> ExitStatus {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("run kill -TERM");
        assert!(sent.success(), "kill -TERM {pid} failed: {sent}");
        match self.wait_exit(EXIT_TIMEOUT) {
            Some(status) => status,
            None => {
                let status = self.kill9();
                panic!(
                    "no exit within {EXIT_TIMEOUT:?} of SIGTERM (then SIGKILLed: {status})\n\
                     --- stderr ---\n{}",
                    tail(&self.log(), 8000)
                );
            }
        }
    }

    /// SIGTERM, and the exit must be clean (code 0).
    pub(crate) fn stop(&mut self) {
        let status = self.terminate();
        assert_eq!(
            status.code(),
            Some(0),
            "SIGTERM did not end the server cleanly: {status}\n--- stderr ---\n{}",
            tail(&self.log(), 8000)
        );
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.exit.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// How many connections wait in the accept queue of the IPv4 socket listening
/// at `addr`: for a listening socket, `rx_queue` in `/proc/net/tcp` is its
/// accept backlog. Lets a test wait until the server has taken connections off
/// the queue (a state) instead of sleeping for it. `Err` says what was seen.
pub(crate) fn accept_queue(addr: std::net::SocketAddr) -> Result<u64, String> {
    let std::net::SocketAddr::V4(v4) = addr else {
        return Err(format!("{addr} is not IPv4"));
    };
    let local = format!(
        "{:08X}:{:04X}",
        u32::from_ne_bytes(v4.ip().octets()),
        v4.port()
    );
    let table =
        std::fs::read_to_string("/proc/net/tcp").map_err(|e| format!("/proc/net/tcp: {e}"))?;
    for line in table.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // sl local_address rem_address st tx_queue:rx_queue ...; st 0A = LISTEN.
        if fields.len() > 4 && fields[1] == local && fields[3] == "0A" {
            let rx = fields[4].split_once(':').map_or("", |(_, rx)| rx);
            return u64::from_str_radix(rx, 16)
                .map_err(|e| format!("rx_queue {:?} of {addr}: {e}", fields[4]));
        }
    }
    Err(format!(
        "no listening socket {local} ({addr}) in /proc/net/tcp"
    ))
}
