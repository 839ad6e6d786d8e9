//! A real etcd cluster on loopback for the cluster tests (Debian's
//! `etcd-server`, installed by `scripts/test.sh`): `n` members, each with its
//! own client and peer port and temporary data directory, short heartbeat and
//! election timeouts so a lost leader is replaced within a second or two.
//!
//! [`EtcdCluster::kill9`] and [`EtcdCluster::restart`] are what the fault tests
//! do to it; a restarted member keeps its data directory and flags
//! (`--initial-cluster-state existing`). Each member's log goes to a file in the
//! cluster's folder, printed (its tail) when a test fails while the cluster is
//! alive (the folder is then kept), and every member is killed when the cluster
//! is dropped.
//!
//! Ports are picked free (bound, then released) per cluster, so tests run in
//! parallel; if another process takes one in between, the start is retried
//! with new ports.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

use super::stub_http::closed_port;
use super::text::{random_hex, tail};

/// The etcd server binary (Debian's `etcd-server` puts it in /usr/bin).
pub(crate) const ETCD: &str = "etcd";
/// How long a (re)started cluster gets to become healthy.
pub(crate) const HEALTHY_TIMEOUT: Duration = Duration::from_secs(30);
/// Raft heartbeat and election timeout (ms), given explicitly: etcd's own
/// defaults, already short on loopback (a killed leader was replaced in
/// 1.1-2.5 s here). Half of them (50/500) elected in 0.7 s here, but would risk
/// spurious elections (503s no test expects) on a machine busy with the rest
/// of the suite.
const HEARTBEAT_MS: u32 = 100;
const ELECTION_MS: u32 = 1000;
const START_ATTEMPTS: usize = 3;

/// One member: its name, URLs, data directory, log file and process (if running).
struct Member {
    name: String,
    client_url: String,
    peer_url: String,
    data_dir: PathBuf,
    log_path: PathBuf,
    child: Option<Child>,
}

/// A running etcd cluster; every member is killed (SIGKILL) when dropped.
pub(crate) struct EtcdCluster {
    dir: TempDir,
    token: String,
    members: Vec<Member>,
}

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .max_idle_connections(0)
        .timeout_connect(Duration::from_secs(1))
        .timeout(Duration::from_secs(2))
        .build()
}

impl EtcdCluster {
    /// Start `n` members and wait until every one answers healthy. Panics,
    /// printing the members' logs, when etcd is missing or does not come up.
    pub(crate) fn start(n: usize) -> Self {
        assert!(n >= 1, "a cluster needs a member");
        let mut last = String::new();
        for attempt in 1..=START_ATTEMPTS {
            let mut cluster = Self::spawn(n);
            match cluster.wait_healthy_all(HEALTHY_TIMEOUT) {
                Ok(()) => return cluster,
                Err(seen) => {
                    last = format!("attempt {attempt}: {seen}\n{}", cluster.logs());
                    // A port taken in between (bind: address already in use):
                    // try again with new ones; anything else is reported.
                    if !last.contains("address already in use") {
                        break;
                    }
                }
            }
        }
        panic!("the etcd cluster did not become healthy\n{last}");
    }

    fn spawn(n: usize) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("oidcvault-etcd-")
            .tempdir()
            .unwrap();
        let members: Vec<Member> = (0..n)
            .map(|i| Member {
                name: format!("m{i}"),
                client_url: format!("http://127.0.0.1:{}", closed_port()),
                peer_url: format!("http://127.0.0.1:{}", closed_port()),
                data_dir: dir.path().join(format!("m{i}.etcd")),
                log_path: dir.path().join(format!("m{i}.log")),
                child: None,
            })
            .collect();
        let mut cluster = Self {
            dir,
            token: format!("oidcvault-test-{}", random_hex(6)),
            members,
        };
        for i in 0..n {
            cluster.launch(i, "new");
        }
        cluster
    }

    fn initial_cluster(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn launch(&mut self, i: usize, state: &str) {
        let initial = self.initial_cluster();
        let m = &mut self.members[i];
        let log = File::options()
            .create(true)
            .append(true)
            .open(&m.log_path)
            .unwrap();
        let child = Command::new(ETCD)
            .args(["--name", &m.name])
            .arg("--data-dir")
            .arg(&m.data_dir)
            .args(["--listen-client-urls", &m.client_url])
            .args(["--advertise-client-urls", &m.client_url])
            .args(["--listen-peer-urls", &m.peer_url])
            .args(["--initial-advertise-peer-urls", &m.peer_url])
            .args(["--initial-cluster", &initial])
            .args(["--initial-cluster-token", &self.token])
            .args(["--initial-cluster-state", state])
            .args(["--heartbeat-interval", &HEARTBEAT_MS.to_string()])
            .args(["--election-timeout", &ELECTION_MS.to_string()])
            .args(["--logger", "zap", "--log-outputs", "stderr"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start `{ETCD}` ({e}): install Debian's etcd-server and etcd-client \
                     (scripts/test.sh does)"
                )
            });
        m.child = Some(child);
    }

    /// The client URLs of every member (running or not), in member order.
    pub(crate) fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client_url.clone()).collect()
    }

    pub(crate) fn len(&self) -> usize {
        self.members.len()
    }

    /// The folder holding the members' data directories and logs.
    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }

    pub(crate) fn is_running(&mut self, i: usize) -> bool {
        match &mut self.members[i].child {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// SIGKILL member `i` and reap it.
    pub(crate) fn kill9(&mut self, i: usize) {
        let m = &mut self.members[i];
        if let Some(mut c) = m.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start member `i` again on its data directory, with the same flags.
    pub(crate) fn restart(&mut self, i: usize) {
        assert!(
            !self.is_running(i),
            "member {i} is still running: kill it first"
        );
        self.launch(i, "existing");
    }

    /// Member `i`'s `/health`: `Ok` when it answers `"health":"true"`.
    pub(crate) fn health(&self, i: usize) -> Result<(), String> {
        let url = format!("{}/health", self.members[i].client_url);
        match agent().get(&url).call() {
            Ok(r) => {
                let body = r.into_string().unwrap_or_default();
                let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
                if v["health"] == "true" {
                    Ok(())
                } else {
                    Err(format!("{url}: {body}"))
                }
            }
            Err(ureq::Error::Status(s, r)) => Err(format!(
                "{url}: HTTP {s} {}",
                r.into_string().unwrap_or_default()
            )),
            Err(e) => Err(format!("{url}: {e}")),
        }
    }

    /// Wait until every running member is healthy; `Err` says what was seen
    /// (or that a member exited).
    pub(crate) fn wait_healthy(&mut self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut seen = Vec::new();
            for i in 0..self.len() {
                if let Some(c) = &mut self.members[i].child {
                    if let Ok(Some(status)) = c.try_wait() {
                        return Err(format!("member m{i} exited: {status}"));
                    }
                    if let Err(e) = self.health(i) {
                        seen.push(e);
                    }
                }
            }
            if seen.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "not healthy after {timeout:?}: {}",
                    seen.join("; ")
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// As [`EtcdCluster::wait_healthy`], every member being expected to run.
    pub(crate) fn wait_healthy_all(&mut self, timeout: Duration) -> Result<(), String> {
        let down: Vec<usize> = (0..self.len()).filter(|i| !self.is_running(*i)).collect();
        if !down.is_empty() {
            return Err(format!("members {down:?} are not running"));
        }
        self.wait_healthy(timeout)
    }

    /// Panics (with the logs) unless every member is running and healthy within
    /// [`HEALTHY_TIMEOUT`].
    pub(crate) fn assert_healthy(&mut self) {
        if let Err(e) = self.wait_healthy_all(HEALTHY_TIMEOUT) {
            panic!("etcd cluster: {e}\n{}", self.logs());
        }
    }

    /// Member `i`'s status from the v3 JSON gateway
    /// (`POST /v3/maintenance/status`): its own id and the leader's id.
    fn status(&self, i: usize) -> Result<(String, String), String> {
        let url = format!("{}/v3/maintenance/status", self.members[i].client_url);
        let r = agent()
            .post(&url)
            .send_string("{}")
            .map_err(|e| format!("{url}: {e}"))?;
        let body = r.into_string().map_err(|e| format!("{url}: {e}"))?;
        let v: Value = serde_json::from_str(&body).map_err(|e| format!("{url}: {e}: {body}"))?;
        let id = |x: &Value| match x {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        };
        match (id(&v["header"]["member_id"]), id(&v["leader"])) {
            (Some(me), Some(leader)) if leader != "0" => Ok((me, leader)),
            _ => Err(format!("{url}: no leader in {body}")),
        }
    }

    /// The index of the current leader, as the running members agree on it;
    /// `Err` says what they answered.
    pub(crate) fn leader(&mut self) -> Result<usize, String> {
        let mut ids = Vec::new();
        let mut leaders = Vec::new();
        let mut seen = Vec::new();
        for i in 0..self.len() {
            if !self.is_running(i) {
                ids.push(None);
                continue;
            }
            match self.status(i) {
                Ok((me, leader)) => {
                    ids.push(Some(me));
                    leaders.push(leader);
                }
                Err(e) => {
                    ids.push(None);
                    seen.push(e);
                }
            }
        }
        leaders.dedup();
        match leaders.as_slice() {
            [one] => ids
                .iter()
                .position(|id| id.as_deref() == Some(one.as_str()))
                .ok_or_else(|| format!("leader {one} is no running member ({ids:?})")),
            [] => Err(format!("no member names a leader: {}", seen.join("; "))),
            many => Err(format!("members disagree on the leader: {many:?}")),
        }
    }

    /// Poll [`EtcdCluster::leader`] until it names a member for which `ok`
    /// holds; panics with the logs after `timeout`.
    pub(crate) fn wait_leader(&mut self, timeout: Duration, ok: impl Fn(usize) -> bool) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            let seen = match self.leader() {
                Ok(l) if ok(l) => return l,
                Ok(l) => format!("leader m{l}"),
                Err(e) => e,
            };
            if Instant::now() >= deadline {
                panic!(
                    "no acceptable etcd leader after {timeout:?}; last seen: {seen}\n{}",
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The tail of every member's log, for failure messages.
    pub(crate) fn logs(&self) -> String {
        self.members
            .iter()
            .map(|m| {
                let text = std::fs::read_to_string(&m.log_path).unwrap_or_default();
                format!(
                    "--- etcd {} ({}) log: {} ---\n{}",
                    m.name,
                    m.client_url,
                    m.log_path.display(),
                    tail(&text, 2000)
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // Kept for whoever debugs the failure (the logs name their files).
            self.dir.disable_cleanup(true);
            eprintln!(
                "{}\n(etcd members' folder kept: {})",
                self.logs(),
                self.path().display()
            );
        }
        for i in 0..self.members.len() {
            self.kill9(i);
        }
    }
}
