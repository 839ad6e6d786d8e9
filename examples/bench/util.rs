//! Processes, wrk, /proc readings and files shared by the load and scale benchmarks.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub const CONFIG_PATH: &str = "/api/v1/enterprises/oidc/config/";
/// The seed's example body (its client examples, in every language).
pub const EXAMPLE_BODY: &str =
    r#"{"client_id":"enterprise-app-123","client_secret":"s3cr3tP@ssw0rd!"}"#;
pub const PASSPHRASE: &str = "benchmark master passphrase";

/// `target/release` (this binary lives in `target/release/examples`).
pub fn release_dir() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    exe.parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .ok_or_else(|| "cannot locate the target directory".into())
}

/// Scheduling priority (`nice -n`) of the servers and of wrk: negative, so
/// that other work on a shared machine disturbs the measurement less (needs
/// root; otherwise `nice` says so and runs them at the normal priority).
static NICE: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(-5);

pub fn set_nice(n: i32) {
    NICE.store(n, std::sync::atomic::Ordering::Relaxed);
}

pub fn nice() -> i32 {
    NICE.load(std::sync::atomic::Ordering::Relaxed)
}

/// `program` run under `nice -n N` (same pid: nice execs it).
pub fn command(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut cmd = niced();
    cmd.arg(program);
    cmd
}

/// `nice -n N`, the program and its arguments still to be added.
pub fn niced() -> Command {
    let mut cmd = Command::new("nice");
    cmd.arg("-n").arg(nice().to_string());
    cmd
}

/// The goals table of a results file: `| <header> | value | met |`.
pub fn goal_rows(header: &str, goals: &Value) -> String {
    let mut s = format!("| {header} | value | met |\n|---|---:|---|\n");
    for g in goals.as_array().into_iter().flatten() {
        s.push_str(&format!(
            "| {} | {:.2} | {} |\n",
            g["goal"].as_str().unwrap_or(""),
            g["value"].as_f64().unwrap_or(f64::NAN),
            if g["met"].as_bool().unwrap_or(false) {
                "yes"
            } else {
                "**no**"
            }
        ));
    }
    s
}

pub fn binary(name: &str) -> Result<PathBuf, String> {
    let dir = release_dir()?;
    let path = if name == "oidcvault" {
        dir.join(name)
    } else {
        dir.join("examples").join(name)
    };
    if path.exists() {
        Ok(path)
    } else {
        Err(format!(
            "{} is missing: build it first (scripts/bench.sh does)",
            path.display()
        ))
    }
}

/// `target/bench-results` and a fresh `target/bench-work/<name>`.
pub fn dirs(work_name: &str) -> Result<(PathBuf, PathBuf), String> {
    let target = release_dir()?
        .parent()
        .map(Path::to_path_buf)
        .ok_or("no target dir")?;
    let results = target.join("bench-results");
    let work = target.join("bench-work").join(work_name);
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
    std::fs::create_dir_all(&results).map_err(|e| format!("{}: {e}", results.display()))?;
    Ok((results, work))
}

pub fn write(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

// ---- the machine and its noise ---------------------------------------------------

pub fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("?")
        .trim()
        .to_owned();
    let mem_kib = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("MemTotal"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    json!({
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu_model": model,
        "memory_gib": (mem_kib as f64 / 1048576.0 * 10.0).round() / 10.0,
        "kernel": kernel.trim(),
        "loadavg_at_start": loadavg(),
    })
}

pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Clock ticks per second of /proc (USER_HZ; 100 on Linux).
const HZ: f64 = 100.0;

/// Busy ticks of the whole machine (all but idle and iowait).
pub fn machine_busy_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(cpu) = stat.lines().next() else {
        return 0;
    };
    let f: Vec<u64> = cpu
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal
    f.iter()
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, v)| v)
        .sum()
}

/// utime + stime of a process, or (for `self_children`) of this process's
/// waited-for children (cutime + cstime).
pub fn proc_ticks(path: &str, children: bool) -> u64 {
    let stat = std::fs::read_to_string(path).unwrap_or_default();
    // Fields after the command name, which is in parentheses.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // rest[0] is field 3 (state); utime is field 14 → index 11.
    let (a, b) = if children { (13, 14) } else { (11, 12) };
    f.get(a).copied().unwrap_or(0) + f.get(b).copied().unwrap_or(0)
}

/// CPU accounting over a run: the server, the load generator, and everything
/// else on the machine (other engineers' builds: the noise).
pub struct CpuMeter {
    busy: u64,
    server: u64,
    children: u64,
    server_pid: u32,
    started: Instant,
}

impl CpuMeter {
    pub fn start(server_pid: u32) -> Self {
        Self {
            busy: machine_busy_ticks(),
            server: proc_ticks(&format!("/proc/{server_pid}/stat"), false),
            children: proc_ticks("/proc/self/stat", true),
            server_pid,
            started: Instant::now(),
        }
    }

    /// Cores used by the server, by wrk (a waited-for child) and by others.
    pub fn stop(&self) -> Value {
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        let busy = machine_busy_ticks().saturating_sub(self.busy);
        let server = proc_ticks(&format!("/proc/{}/stat", self.server_pid), false)
            .saturating_sub(self.server);
        let client = proc_ticks("/proc/self/stat", true).saturating_sub(self.children);
        let other = busy.saturating_sub(server + client);
        let cores = |t: u64| ((t as f64 / HZ / secs) * 100.0).round() / 100.0;
        json!({
            "server_cores": cores(server),
            "wrk_cores": cores(client),
            "other_cores": cores(other),
        })
    }
}

pub fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    (
        status_field(&status, "VmRSS:"),
        status_field(&status, "VmHWM:"),
    )
}

/// The number after `name` in a `/proc/.../status` text (0 when absent).
pub fn status_field(status: &str, name: &str) -> u64 {
    status
        .lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The median (NaN when empty).
pub fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    match xs.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => xs[n / 2],
        n => (xs[n / 2 - 1] + xs[n / 2]) / 2.0,
    }
}

/// (apparent bytes, allocated bytes) of every file under `dir`.
pub fn disk_usage(dir: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let mut apparent = 0;
    let mut allocated = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(m) = e.metadata() else { continue };
            if m.is_dir() {
                stack.push(e.path());
            } else {
                apparent += m.len();
                allocated += m.blocks() * 512;
            }
        }
    }
    (apparent, allocated)
}

// ---- servers ---------------------------------------------------------------------

pub struct Server {
    pub name: String,
    child: Child,
    pub addr: String,
    pub log: PathBuf,
    /// From spawn to the listening line (and, for oidcvault, `/readyz` 200).
    pub startup: Duration,
}

impl Server {
    /// Spawn `cmd` with its output in `log`, wait for `listening on http://ADDR`,
    /// then for `ready_path` (if any) to answer 200.
    pub fn spawn(
        name: &str,
        cmd: Command,
        log: &Path,
        ready_path: Option<&str>,
    ) -> Result<Self, String> {
        Self::spawn_at(name, cmd, log, ready_path, None)
    }

    /// As [`Server::spawn`]; with `addr`, the server is known to listen there
    /// (no listening line needed, e.g. when its log level hides it).
    pub fn spawn_at(
        name: &str,
        mut cmd: Command,
        log: &Path,
        ready_path: Option<&str>,
        addr: Option<String>,
    ) -> Result<Self, String> {
        let out = File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        // The developer's own OIDCVAULT_* variables are not inherited; the ones
        // set on `cmd` are kept.
        let set: Vec<std::ffi::OsString> = cmd.get_envs().map(|(k, _)| k.to_owned()).collect();
        for (k, _) in std::env::vars() {
            if k.starts_with("OIDCVAULT_") && !set.iter().any(|s| *s == *k) {
                cmd.env_remove(k);
            }
        }
        let started = Instant::now();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("cannot start {name}: {e}"))?;
        let mut server = Self {
            name: name.to_owned(),
            child,
            addr: String::new(),
            log: log.to_path_buf(),
            startup: Duration::ZERO,
        };
        let deadline = started + Duration::from_secs(180);
        if let Some(addr) = addr {
            server.addr = addr;
        }
        while server.addr.is_empty() {
            // The whole line: the file may be read while it is being written.
            let text = server.log_text();
            if let Some((addr, _)) = text
                .split("listening on http://")
                .nth(1)
                .and_then(|rest| rest.split_once('\n'))
            {
                server.addr = addr
                    .split(|c: char| c.is_whitespace())
                    .next()
                    .unwrap_or("")
                    .to_owned();
                continue;
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(format!(
                    "{name} exited ({status}) before listening:\n{}",
                    server.log_text()
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{name} did not start in time:\n{}",
                    server.log_text()
                ));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        if let Some(path) = ready_path {
            let agent = agent(Duration::from_millis(500));
            let url = format!("http://{}{path}", server.addr);
            loop {
                if matches!(agent.get(&url).call(), Ok(r) if r.status() == 200) {
                    break;
                }
                if let Ok(Some(status)) = server.child.try_wait() {
                    return Err(format!(
                        "{name} exited ({status}) before it was ready:\n{}",
                        server.log_text()
                    ));
                }
                if Instant::now() > deadline {
                    return Err(format!("{name} never became ready"));
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        server.startup = started.elapsed();
        Ok(server)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn url(&self) -> String {
        format!("http://{}{CONFIG_PATH}", self.addr)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then wait (SIGKILL after a minute).
    pub fn stop(mut self) -> Result<(), String> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) if status.success() => return Ok(()),
                Ok(Some(status)) => {
                    return Err(format!("{} stopped with {status}", self.name));
                }
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    return Err(format!("{} did not stop on SIGTERM", self.name));
                }
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A free port on 127.0.0.1 (bound, then released for the server to take).
pub fn free_addr() -> Result<String, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.to_string())
}

pub fn agent(timeout: Duration) -> ureq::Agent {
    ureq::AgentBuilder::new().timeout(timeout).build()
}

/// One request with the benchmark's headers; (status, body).
pub fn request(
    agent: &ureq::Agent,
    method: &str,
    url: &str,
    cred: &Cred,
) -> Result<(u16, String), String> {
    let req = agent
        .request(method, url)
        .set("Authorization", &format!("Bearer {}", cred.token))
        .set("X-Enterprise-Domain", &cred.domain);
    let resp = if method == "POST" {
        req.set("Content-Type", "application/json")
            .send_string(EXAMPLE_BODY)
    } else {
        req.call()
    };
    match resp {
        Ok(r) => {
            let status = r.status();
            Ok((status, r.into_string().unwrap_or_default()))
        }
        Err(ureq::Error::Status(code, r)) => Ok((code, r.into_string().unwrap_or_default())),
        Err(e) => Err(format!("{method} {url}: {e}")),
    }
}

// ---- wrk -------------------------------------------------------------------------

/// A domain and a token that acts for it.
#[derive(Clone)]
pub struct Cred {
    pub domain: String,
    pub token: String,
}

/// What wrk sends.
pub enum Workload {
    /// Every request the same method; domains round-robin (pre-formatted).
    Fixed(&'static str),
    /// A random domain per request; POST with this probability, else GET.
    Mixed { post_fraction: f64 },
}

fn lua_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The Lua script for wrk: requests (credentials read from `creds_path`, one
/// `token domain` per line: LuaJIT refuses a table literal of 100,000 entries),
/// and a `done` that writes the summary as JSON.
fn wrk_script(creds_path: &Path, workload: &Workload, out: &Path) -> String {
    let mut s = format!(
        "local creds_path = {}\nlocal path = {}\nlocal body = {}\nlocal out_path = {}\n",
        lua_str(&creds_path.display().to_string()),
        lua_str(CONFIG_PATH),
        lua_str(EXAMPLE_BODY),
        lua_str(&out.display().to_string())
    );
    let (method, fraction) = match workload {
        Workload::Fixed(m) => (*m, -1.0),
        Workload::Mixed { post_fraction } => ("MIXED", *post_fraction),
    };
    s.push_str(&format!(
        "local method = {}\nlocal post_fraction = {fraction}\n",
        lua_str(method)
    ));
    s.push_str(
        r#"
local counter = 0
function setup(thread)
  counter = counter + 1
  thread:set("tid", counter)
end

local function make(c, m)
  local h = { ["Authorization"] = "Bearer " .. c[1], ["X-Enterprise-Domain"] = c[2] }
  if m == "POST" then
    h["Content-Type"] = "application/json"
    return wrk.format("POST", path, h, body)
  end
  return wrk.format("GET", path, h)
end

local creds = {}
local reqs = {}
local i = 0
function init(args)
  for line in io.lines(creds_path) do
    local token, domain = line:match("^(%S+) (%S+)$")
    if token then creds[#creds + 1] = { token, domain } end
  end
  assert(#creds > 0, "no credentials in " .. creds_path)
  local t = tid or 1
  math.randomseed(t * 7919)
  if method ~= "MIXED" then
    for k = 1, #creds do reqs[k] = make(creds[k], method) end
  end
  i = (t * 7919) % #creds
end

function request()
  if method == "MIXED" then
    local c = creds[math.random(#creds)]
    if math.random() < post_fraction then return make(c, "POST") end
    return make(c, "GET")
  end
  i = i % #reqs + 1
  return reqs[i]
end

function done(summary, latency, requests)
  local e = summary.errors
  local f = assert(io.open(out_path, "w"))
  f:write(string.format(
    '{"requests":%.0f,"duration_us":%.0f,"bytes":%.0f,"connect":%.0f,"read":%.0f,"write":%.0f,"status":%.0f,"timeout":%.0f,' ..
    '"min_us":%.0f,"mean_us":%.1f,"max_us":%.0f,"p50_us":%.0f,"p90_us":%.0f,"p99_us":%.0f,"p999_us":%.0f}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.mean, latency.max, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9)))
  f:close()
end
"#,
    );
    s
}

/// Write the script for `creds`/`workload` once; reuse it for every run.
pub fn prepare_wrk(
    work: &Path,
    label: &str,
    creds: &[Cred],
    workload: &Workload,
) -> Result<(PathBuf, PathBuf), String> {
    let out = work.join(format!("wrk-{label}.json"));
    let script = work.join(format!("wrk-{label}.lua"));
    let creds_path = work.join(format!("wrk-{label}.creds"));
    let mut lines = String::with_capacity(creds.len() * 80);
    for c in creds {
        lines.push_str(&format!("{} {}\n", c.token, c.domain));
    }
    write(&creds_path, &lines)?;
    let mut f = File::create(&script).map_err(|e| format!("{}: {e}", script.display()))?;
    f.write_all(wrk_script(&creds_path, workload, &out).as_bytes())
        .map_err(|e| e.to_string())?;
    Ok((script, out))
}

/// Run wrk against `server` and return its summary, plus CPU accounting.
pub fn run_wrk(
    server: &Server,
    script: &Path,
    out: &Path,
    conns: usize,
    threads: usize,
    secs: u64,
) -> Result<Value, String> {
    let _ = std::fs::remove_file(out);
    let threads = threads.clamp(1, conns);
    let by_thread = crate::threads::sample(server.pid());
    let meter = CpuMeter::start(server.pid());
    let output = command("wrk")
        .arg(format!("-t{threads}"))
        .arg(format!("-c{conns}"))
        .arg(format!("-d{secs}s"))
        .arg("--timeout")
        .arg("10s")
        .arg("-s")
        .arg(script)
        .arg(server.url())
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run wrk (apt-get install wrk): {e}"))?;
    let cpu = meter.stop();
    let by_thread_after = crate::threads::sample(server.pid());
    if !output.status.success() {
        return Err(format!(
            "wrk failed: {}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let text = std::fs::read_to_string(out).map_err(|e| {
        format!(
            "wrk wrote no summary ({e}):\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    })?;
    let mut v: Value =
        serde_json::from_str(text.trim()).map_err(|e| format!("wrk summary {text:?}: {e}"))?;
    let requests = v["requests"].as_f64().unwrap_or(0.0);
    let secs = v["duration_us"].as_f64().unwrap_or(1.0) / 1e6;
    let errors: f64 = ["connect", "read", "write", "status", "timeout"]
        .iter()
        .map(|k| v[k].as_f64().unwrap_or(0.0))
        .sum();
    v["rps"] = json!((requests / secs).round());
    v["errors"] = json!(errors);
    v["cpu"] = cpu;
    v["cpu_per_request"] = crate::threads::per_request(&by_thread, &by_thread_after, requests);
    v["loadavg_after"] = json!(loadavg());
    Ok(v)
}

pub fn ms(v: &Value, key: &str) -> f64 {
    v[key].as_f64().unwrap_or(f64::NAN) / 1000.0
}
