//! A three-member etcd cluster on loopback for `bench load --backend etcd`:
//! Debian's `etcd` (package etcd-server, 3.4), each member with its own data
//! directory and free ports, fsync on (the real durability), stopped with the
//! driver.

use std::fs::File;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::util;

pub struct Cluster {
    members: Vec<Child>,
    /// `http://127.0.0.1:PORT` of each member's client URL.
    pub endpoints: Vec<String>,
}

impl Cluster {
    /// Start `n` members under `dir` and wait until every one is healthy.
    pub fn start(dir: &Path, n: usize) -> Result<Self, String> {
        let etcd = which("etcd").ok_or(
            "etcd is not installed (Debian: apt-get install etcd-server etcd-client; scripts/bench.sh does)",
        )?;
        let mut clients = Vec::new();
        let mut peers = Vec::new();
        for _ in 0..n {
            clients.push(format!("http://{}", util::free_addr()?));
            peers.push(format!("http://{}", util::free_addr()?));
        }
        let initial: Vec<String> = peers
            .iter()
            .enumerate()
            .map(|(i, p)| format!("m{i}={p}"))
            .collect();
        let initial = initial.join(",");
        let mut members = Vec::new();
        for i in 0..n {
            let data = dir.join(format!("m{i}"));
            std::fs::create_dir_all(&data).map_err(|e| format!("{}: {e}", data.display()))?;
            let log = dir.join(format!("m{i}.log"));
            let out = File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
            let err = out.try_clone().map_err(|e| e.to_string())?;
            let child = util::command(&etcd)
                .arg("--name")
                .arg(format!("m{i}"))
                .arg("--data-dir")
                .arg(&data)
                .arg("--listen-client-urls")
                .arg(&clients[i])
                .arg("--advertise-client-urls")
                .arg(&clients[i])
                .arg("--listen-peer-urls")
                .arg(&peers[i])
                .arg("--initial-advertise-peer-urls")
                .arg(&peers[i])
                .arg("--initial-cluster")
                .arg(&initial)
                .arg("--initial-cluster-token")
                .arg("oidcvault-bench")
                .arg("--initial-cluster-state")
                .arg("new")
                .arg("--logger")
                .arg("zap")
                .arg("--log-level")
                .arg("warn")
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err)
                .spawn()
                .map_err(|e| format!("cannot start etcd: {e}"))?;
            members.push(child);
        }
        let cluster = Self {
            members,
            endpoints: clients,
        };
        cluster.wait_healthy(Duration::from_secs(60), dir)?;
        Ok(cluster)
    }

    fn wait_healthy(&self, limit: Duration, dir: &Path) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        loop {
            let ok = Command::new("etcdctl")
                .env("ETCDCTL_API", "3")
                .arg("--endpoints")
                .arg(self.endpoints.join(","))
                .arg("endpoint")
                .arg("health")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map_err(|e| format!("cannot run etcdctl (apt-get install etcd-client): {e}"))?
                .success();
            if ok {
                return Ok(());
            }
            if Instant::now() > deadline {
                let logs: String = (0..self.members.len())
                    .map(|i| {
                        std::fs::read_to_string(dir.join(format!("m{i}.log"))).unwrap_or_default()
                    })
                    .collect();
                return Err(format!("the etcd cluster did not become healthy:\n{logs}"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn pids(&self) -> Vec<u32> {
        self.members.iter().map(Child::id).collect()
    }

    /// Total size of the members' data directories (bytes).
    pub fn disk_bytes(dir: &Path) -> u64 {
        util::disk_usage(dir).0
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for m in &self.members {
            let _ = Command::new("kill")
                .args(["-TERM", &m.id().to_string()])
                .status();
        }
        for m in &mut self.members {
            let deadline = Instant::now() + Duration::from_secs(10);
            while matches!(m.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = m.kill();
            let _ = m.wait();
        }
    }
}

fn which(name: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    })
}
