//! Through the real binary over real TCP: the contract's guarantees (durability
//! across `kill -9`, wrong master key, backup by copy, nothing secret at rest or in
//! the logs) and the command line's behaviour.
//!
//! The harness (`Home`, `Server`, `Client`) is shared with `crash`, `limits` and
//! `disk_full` (the items they use are `pub(crate)`).
//!
//! Every test gets its own temporary "home": a folder with a `config.toml` (free
//! port, minimum Argon2 cost) and `data/` beside it. Children never inherit the
//! developer's `OIDCVAULT_*` variables.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tempfile::TempDir;

const BIN: &str = env!("CARGO_BIN_EXE_oidcvault");
pub(crate) const PASSPHRASE: &str = "correct-horse-battery-staple-1";
pub(crate) const OTHER_PASSPHRASE: &str = "incorrect-donkey-battery-staple-2";
pub(crate) const CONFIG_PATH: &str = "/api/v1/enterprises/oidc/config/";
/// How long a server gets to print its address, or any process to exit.
const START_TIMEOUT: Duration = Duration::from_secs(30);
pub(crate) const EXIT_TIMEOUT: Duration = Duration::from_secs(30);
/// A command that must be refused quickly (a wrong key is seen before anything else).
pub(crate) const REFUSE_TIMEOUT: Duration = Duration::from_secs(15);

// ---- small helpers -------------------------------------------------------------------

pub(crate) fn random_hex(n_bytes: usize) -> String {
    let mut buf = vec![0u8; n_bytes];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .expect("read /dev/urandom");
    hex(&buf, false)
}

fn hex(bytes: &[u8], upper: bool) -> String {
    bytes
        .iter()
        .map(|b| {
            if upper {
                format!("{b:02X}")
            } else {
                format!("{b:02x}")
            }
        })
        .collect()
}

/// Base64 without padding, standard or URL-safe alphabet.
fn b64(bytes: &[u8], url_safe: bool) -> String {
    use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
    use base64::Engine;
    if url_safe {
        URL_SAFE_NO_PAD.encode(bytes)
    } else {
        STANDARD_NO_PAD.encode(bytes)
    }
}

/// Decode base64 leniently (either alphabet; padding, whitespace and non-zero
/// trailing bits ignored), as an attacker reading a file would.
fn b64_decode(text: &str) -> Vec<u8> {
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    use base64::{alphabet, Engine};
    let lenient = GeneralPurpose::new(
        &alphabet::URL_SAFE,
        GeneralPurposeConfig::new()
            .with_decode_allow_trailing_bits(true)
            .with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    let normalized: String = text
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '=')
        .map(|c| match c {
            '+' => '-',
            '/' => '_',
            other => other,
        })
        .collect();
    lenient.decode(normalized).expect("valid base64")
}

/// Remove ANSI escape sequences (the log formatter may colour its output).
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// The last `n` characters of a (long) log, for assertion messages.
pub(crate) fn tail(s: &str, n: usize) -> String {
    let count = s.chars().count();
    if count <= n {
        s.to_owned()
    } else {
        let rest: String = s.chars().skip(count - n).collect();
        format!("[... {} characters before ...]\n{rest}", count - n)
    }
}

/// Every form in which `secret` could sit in a file or a log unencrypted: raw,
/// hex (both cases), base64 (both alphabets) of the substrings at byte offsets
/// 0, 1 and 2 cut to whole 3-byte groups, so one of them is aligned with whatever
/// base64 encoding might hold it.
fn encodings(label: &str, secret: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut out = vec![
        (format!("{label} (raw)"), secret.to_vec()),
        (format!("{label} (hex)"), hex(secret, false).into_bytes()),
        (format!("{label} (HEX)"), hex(secret, true).into_bytes()),
    ];
    for offset in 0..3 {
        let whole = (secret.len().saturating_sub(offset)) / 3 * 3;
        if whole < 9 {
            continue;
        }
        let piece = &secret[offset..offset + whole];
        out.push((
            format!("{label} (base64 at offset {offset})"),
            b64(piece, false).into_bytes(),
        ));
        out.push((
            format!("{label} (base64url at offset {offset})"),
            b64(piece, true).into_bytes(),
        ));
    }
    out
}

/// Which of `needles` (all at least 8 bytes) occur in `haystack`. One pass with an
/// index on the first 8 bytes, so megabytes stay fast in an unoptimised build.
fn find_needles<'a>(haystack: &[u8], needles: &'a [(String, Vec<u8>)]) -> Vec<&'a str> {
    let mut index: HashMap<[u8; 8], Vec<usize>> = HashMap::new();
    for (i, (_, n)) in needles.iter().enumerate() {
        assert!(
            n.len() >= 8,
            "needle {:?} is too short to search",
            needles[i].0
        );
        index.entry(n[..8].try_into().unwrap()).or_default().push(i);
    }
    let mut found = vec![false; needles.len()];
    if haystack.len() >= 8 {
        for pos in 0..=haystack.len() - 8 {
            let key: [u8; 8] = haystack[pos..pos + 8].try_into().unwrap();
            if let Some(candidates) = index.get(&key) {
                for &i in candidates {
                    if haystack[pos..].starts_with(&needles[i].1) {
                        found[i] = true;
                    }
                }
            }
        }
    }
    needles
        .iter()
        .zip(found)
        .filter(|(_, f)| *f)
        .map(|((label, _), _)| label.as_str())
        .collect()
}

/// Every entry under `root` (relative path → `None` for a directory, the bytes for
/// a file), recursively.
pub(crate) fn snapshot(root: &Path) -> BTreeMap<PathBuf, Option<Vec<u8>>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Option<Vec<u8>>>) {
        let entries =
            std::fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
        for entry in entries {
            let entry = entry.unwrap();
            let path = entry.path();
            let rel = path.strip_prefix(root).unwrap().to_path_buf();
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                out.insert(rel, None);
                walk(root, &path, out);
            } else {
                let bytes = std::fs::read(&path)
                    .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
                out.insert(rel, Some(bytes));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// What differs between two snapshots, one line per entry; empty when identical.
pub(crate) fn snapshot_diff(
    before: &BTreeMap<PathBuf, Option<Vec<u8>>>,
    after: &BTreeMap<PathBuf, Option<Vec<u8>>>,
) -> Vec<String> {
    let mut diff = Vec::new();
    for (path, old) in before {
        match after.get(path) {
            None => diff.push(format!("removed: {}", path.display())),
            Some(new) if new != old => diff.push(format!(
                "changed: {} ({} -> {} bytes)",
                path.display(),
                old.as_ref().map_or(0, Vec::len),
                new.as_ref().map_or(0, Vec::len)
            )),
            Some(_) => {}
        }
    }
    for path in after.keys().filter(|p| !before.contains_key(*p)) {
        diff.push(format!("added: {}", path.display()));
    }
    diff
}

pub(crate) fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    std::fs::set_permissions(to, std::fs::metadata(from).unwrap().permissions()).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap_or_else(|e| {
                panic!(
                    "copy {} -> {}: {e}",
                    entry.path().display(),
                    target.display()
                )
            });
        }
    }
}

pub(crate) fn config_toml() -> String {
    "[server]\n\
     bind = \"127.0.0.1:0\"\n\
     shutdown_timeout_secs = 5\n\
     \n\
     [storage]\n\
     data_dir = \"data\"\n\
     \n\
     [security]\n\
     kdf_memory_kib = 19456\n\
     kdf_iterations = 2\n\
     kdf_parallelism = 1\n\
     \n\
     [outbound]\n\
     enabled = false\n\
     resolve_discovery_on_save = false\n"
        .to_owned()
}

// ---- processes -------------------------------------------------------------------------

/// A finished command.
pub(crate) struct Output {
    pub(crate) status: Option<ExitStatus>,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
    elapsed: Duration,
}

impl Output {
    pub(crate) fn success(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    pub(crate) fn failed(&self) -> bool {
        self.status.is_some_and(|s| !s.success())
    }

    pub(crate) fn describe(&self) -> String {
        let status = match self.status {
            Some(s) => format!("{s}"),
            None => "still running at the deadline (killed)".to_owned(),
        };
        format!(
            "exit: {status} after {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.elapsed,
            tail(&self.stdout, 4000),
            tail(&self.stderr, 8000)
        )
    }
}

/// Wait for `child` to exit, polling, at most `timeout`.
fn wait_bounded(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn read_all_in_thread(mut r: impl Read + Send + 'static) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        strip_ansi(&String::from_utf8_lossy(&buf))
    })
}

/// An appliance home: a temporary folder with `config.toml`, `data/` beside it.
pub(crate) struct Home {
    dir: TempDir,
    passphrase: Option<String>,
}

impl Home {
    /// A home with the test config; `passphrase` `None` uses the key-file default.
    pub(crate) fn new(passphrase: Option<&str>) -> Self {
        let home = Self::empty(passphrase);
        home.write_config(&config_toml());
        home
    }

    /// A home without a config file yet.
    fn empty(passphrase: Option<&str>) -> Self {
        Self {
            dir: tempfile::Builder::new()
                .prefix("oidcvault-binary-")
                .tempdir()
                .unwrap(),
            passphrase: passphrase.map(str::to_owned),
        }
    }

    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }

    fn config_path(&self) -> PathBuf {
        self.path().join("config.toml")
    }

    pub(crate) fn data_dir(&self) -> PathBuf {
        self.path().join("data")
    }

    fn key_file(&self) -> PathBuf {
        self.path().join("master.key")
    }

    pub(crate) fn write_config(&self, text: &str) {
        std::fs::write(self.config_path(), text).unwrap();
    }

    /// The binary with `--config`, a clean `OIDCVAULT_*` environment, the home's
    /// passphrase (or `passphrase` when given: `Some(None)` means none at all).
    fn command(
        &self,
        passphrase: Option<Option<&str>>,
        env: &[(&str, &str)],
        args: &[&str],
    ) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.arg("--config").arg(self.config_path()).args(args);
        cmd.current_dir(self.path());
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("OIDCVAULT_") {
                cmd.env_remove(&name);
            }
        }
        let passphrase = passphrase.unwrap_or(self.passphrase.as_deref());
        if let Some(p) = passphrase {
            cmd.env("OIDCVAULT_MASTER_PASSPHRASE", p);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Run a command to its end (killed after `timeout`), capturing its output.
    pub(crate) fn run_with(
        &self,
        passphrase: Option<Option<&str>>,
        env: &[(&str, &str)],
        args: &[&str],
        timeout: Duration,
    ) -> Output {
        let started = Instant::now();
        let mut child = self
            .command(passphrase, env, args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {BIN}: {e}"));
        let out = read_all_in_thread(child.stdout.take().unwrap());
        let err = read_all_in_thread(child.stderr.take().unwrap());
        let status = wait_bounded(&mut child, timeout);
        if status.is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
        Output {
            status,
            stdout: out.join().unwrap(),
            stderr: err.join().unwrap(),
            elapsed: started.elapsed(),
        }
    }

    pub(crate) fn run(&self, args: &[&str]) -> Output {
        self.run_with(None, &[], args, EXIT_TIMEOUT)
    }

    /// Run a command that must succeed; its stdout, trimmed.
    pub(crate) fn run_ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.success(),
            "`oidcvault {}` failed\n{}",
            args.join(" "),
            out.describe()
        );
        out.stdout.trim().to_owned()
    }

    pub(crate) fn start(&self) -> Server {
        self.start_with(None, &[])
    }

    /// Start `serve` and wait until it prints its address.
    pub(crate) fn start_with(
        &self,
        passphrase: Option<Option<&str>>,
        env: &[(&str, &str)],
    ) -> Server {
        let mut child = self
            .command(passphrase, env, &["serve"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {BIN}: {e}"));
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        let reader = {
            let log = log.clone();
            std::thread::spawn(move || {
                let mut r = BufReader::new(stderr);
                let mut line = Vec::new();
                let mut sent = false;
                loop {
                    line.clear();
                    match r.read_until(b'\n', &mut line) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                    let text = strip_ansi(&String::from_utf8_lossy(&line));
                    log.lock().unwrap().push_str(&text);
                    if !sent {
                        if let Some(addr) = parse_listening(&text) {
                            sent = tx.send(addr).is_ok();
                        }
                    }
                }
            })
        };
        let mut server = Server {
            child,
            client: Client::new(String::new()),
            log,
            reader: Some(reader),
            exit: None,
        };
        match rx.recv_timeout(START_TIMEOUT) {
            Ok(base) => {
                server.client = Client::new(base);
                server
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = server.wait_exit(EXIT_TIMEOUT);
                panic!(
                    "the server exited ({status:?}) without listening\n--- stderr ---\n{}",
                    server.log()
                );
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let status = server.kill9();
                panic!(
                    "the server printed no \"listening on http://\" within {START_TIMEOUT:?} \
                     (killed: {status})\n--- stderr ---\n{}",
                    server.log()
                );
            }
        }
    }
}

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

/// An HTTP answer.
pub(crate) struct Resp {
    pub(crate) status: u16,
    pub(crate) body: String,
}

impl Resp {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.body))
    }
}

impl std::fmt::Display for Resp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HTTP {} {}", self.status, self.body)
    }
}

/// HTTP to one server: no connection reuse, so a killed server cannot leave a
/// stale pooled connection behind and no request is ever retried.
#[derive(Clone)]
pub(crate) struct Client {
    pub(crate) base: String,
    pub(crate) agent: ureq::Agent,
}

impl Client {
    pub(crate) fn new(base: String) -> Self {
        let agent = ureq::AgentBuilder::new()
            .max_idle_connections(0)
            .timeout_connect(Duration::from_secs(5))
            .timeout(Duration::from_secs(20))
            .build();
        Self { base, agent }
    }

    /// A request; `Err` only for transport failures (status codes are `Ok`).
    pub(crate) fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        domain: Option<&str>,
        body: Option<&Value>,
    ) -> Result<Resp, String> {
        let mut req = self.agent.request(method, &format!("{}{path}", self.base));
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
        let response = match result {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(ureq::Error::Transport(t)) => return Err(format!("{method} {path}: {t}")),
        };
        let status = response.status();
        let body = response
            .into_string()
            .map_err(|e| format!("{method} {path}: reading the body: {e}"))?;
        Ok(Resp { status, body })
    }
}

/// A running `oidcvault serve`; killed (SIGKILL) when dropped.
pub(crate) struct Server {
    child: Child,
    pub(crate) client: Client,
    log: Arc<Mutex<String>>,
    reader: Option<JoinHandle<()>>,
    exit: Option<ExitStatus>,
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

/// The base64url random part of `ovt_<id>_<random>` (which may itself contain `_`).
fn token_random_part(token: &str) -> &str {
    token
        .strip_prefix("ovt_")
        .and_then(|rest| rest.split_once('_'))
        .map_or("", |(_, random)| random)
}

pub(crate) fn lower(s: &str) -> String {
    s.to_lowercase()
}

/// A refusal: non-zero exit within the bound, one line on stderr naming the master
/// key, no secret echoed, nothing on stdout.
pub(crate) fn assert_refused_for_master_key(what: &str, out: &Output, secrets: &[&str]) {
    assert!(
        out.failed(),
        "{what}: expected a non-zero exit within {REFUSE_TIMEOUT:?}\n{}",
        out.describe()
    );
    assert!(
        lower(&out.stderr).contains("master"),
        "{what}: stderr does not name the master key\n{}",
        out.describe()
    );
    assert!(
        out.stdout.trim().is_empty(),
        "{what}: printed something on stdout\n{}",
        out.describe()
    );
    for s in secrets {
        assert!(
            !out.stderr.contains(s) && !out.stdout.contains(s),
            "{what}: the output contains the secret {s:?}\n{}",
            out.describe()
        );
    }
}

/// A failing CLI command: non-zero, exactly one non-empty line on stderr, nothing
/// on stdout. Returns the line.
pub(crate) fn assert_one_line_failure(what: &str, out: &Output) -> String {
    assert!(
        out.failed(),
        "{what}: expected a non-zero exit\n{}",
        out.describe()
    );
    let lines: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert_eq!(
        lines.len(),
        1,
        "{what}: expected exactly one line on stderr\n{}",
        out.describe()
    );
    assert!(
        out.stdout.trim().is_empty(),
        "{what}: printed something on stdout\n{}",
        out.describe()
    );
    lines[0].to_owned()
}

// ---- 1. durability across kill -9 -----------------------------------------------------

struct Tenant {
    name: String,
    token: String,
}

/// One write: everything it sets is derived from (cycle, domain, seq), and the
/// secret's last four characters (the visible part of the mask) are the sequence
/// number, so the stored mask identifies the write.
#[derive(Clone, Debug, PartialEq)]
struct Written {
    client_id: String,
    secret: String,
    masked: String,
    discovery_url: String,
}

impl Written {
    fn new(cycle: u32, domain: &str, seq: u32) -> Self {
        let secret = format!("kill9-secret-c{cycle}-{domain}-{seq:04}");
        let masked = format!("********{}", &secret[secret.len() - 4..]);
        Self {
            client_id: format!("client-c{cycle}-{domain}-{seq:04}"),
            secret,
            masked,
            discovery_url: format!("https://{domain}/.well-known/openid-configuration?seq={seq}"),
        }
    }

    fn body(&self) -> Value {
        json!({
            "client_id": self.client_id,
            "client_secret": self.secret,
            "discovery_url": self.discovery_url,
        })
    }

    fn matches(&self, v: &Value) -> bool {
        v["client_id"] == self.client_id.as_str()
            && v["client_secret_masked"] == self.masked.as_str()
            && v["client_secret"] == self.masked.as_str()
            && v["discovery_url"] == self.discovery_url.as_str()
    }
}

#[derive(Default, Debug)]
struct Ledger {
    seq: u32,
    /// The last write answered 200.
    acked: Option<Written>,
    /// A write sent after it that got no answer (the server was killed).
    pending: Option<Written>,
    acks_this_cycle: usize,
}

const WRITER_THREADS: usize = 3;
const MIN_ACKS: usize = 6;

/// Write from several threads until every domain has `MIN_ACKS` acknowledged
/// writes, then SIGKILL the server while the writers are still writing.
fn write_then_kill9(
    server: &mut Server,
    tenants: &[Tenant],
    ledgers: &Mutex<Vec<Ledger>>,
    cycle: u32,
) -> String {
    for l in ledgers.lock().unwrap().iter_mut() {
        l.pending = None;
        l.acks_this_cycle = 0;
    }
    let errors = Mutex::new(Vec::<String>::new());
    let stop = AtomicBool::new(false);
    let client = server.client();
    let mut enough = false;
    let mut killed = None;
    std::thread::scope(|scope| {
        for t in 0..WRITER_THREADS {
            let (client, errors, stop) = (client.clone(), &errors, &stop);
            scope.spawn(move || {
                let mine: Vec<usize> = (t..tenants.len()).step_by(WRITER_THREADS).collect();
                'writing: while !stop.load(Ordering::SeqCst) {
                    for &i in &mine {
                        let w = {
                            let mut l = ledgers.lock().unwrap();
                            l[i].seq += 1;
                            Written::new(cycle, &tenants[i].name, l[i].seq)
                        };
                        let sent = client.call(
                            "POST",
                            CONFIG_PATH,
                            Some(&tenants[i].token),
                            None,
                            Some(&w.body()),
                        );
                        match sent {
                            Ok(r) if r.status == 200 => {
                                let v = r.json();
                                if !w.matches(&v) || r.body.contains(&w.secret) {
                                    errors.lock().unwrap().push(format!(
                                        "{}: wrote {w:?}, answer {r}",
                                        tenants[i].name
                                    ));
                                    break 'writing;
                                }
                                let mut l = ledgers.lock().unwrap();
                                l[i].acked = Some(w);
                                l[i].acks_this_cycle += 1;
                            }
                            Ok(r) => {
                                errors
                                    .lock()
                                    .unwrap()
                                    .push(format!("{}: wrote {w:?}, answer {r}", tenants[i].name));
                                break 'writing;
                            }
                            Err(_) => {
                                // No answer: the server is gone. This write may or
                                // may not have been applied.
                                ledgers.lock().unwrap()[i].pending = Some(w);
                                break 'writing;
                            }
                        }
                    }
                }
            });
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline && errors.lock().unwrap().is_empty() {
            if ledgers
                .lock()
                .unwrap()
                .iter()
                .all(|l| l.acks_this_cycle >= MIN_ACKS)
            {
                enough = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        // Writers are still running: some request is likely in flight.
        killed = Some(server.kill9());
        stop.store(true, Ordering::SeqCst);
    });
    let log = server.log();
    let errors = errors.into_inner().unwrap();
    assert!(
        errors.is_empty(),
        "cycle {cycle}: unexpected answers while writing:\n{}\n--- server stderr ---\n{}",
        errors.join("\n"),
        tail(&log, 8000)
    );
    let counts: Vec<usize> = ledgers
        .lock()
        .unwrap()
        .iter()
        .map(|l| l.acks_this_cycle)
        .collect();
    assert!(
        enough,
        "cycle {cycle}: not every domain got {MIN_ACKS} acknowledged writes in 30 s: {counts:?}\n\
         --- server stderr ---\n{}",
        tail(&log, 8000)
    );
    let killed = killed.unwrap();
    assert_eq!(
        killed.signal(),
        Some(9),
        "cycle {cycle}: the server was not killed by SIGKILL: {killed}"
    );
    eprintln!("cycle {cycle}: acknowledged writes per domain before kill -9: {counts:?}");
    log
}

/// After a restart each domain must hold its last acknowledged write (or the one
/// unanswered write sent after it), whole. Returns (id, created_at) per domain.
fn verify_after_restart(
    server: &Server,
    tenants: &[Tenant],
    ledgers: &Mutex<Vec<Ledger>>,
    cycle: u32,
    killed_log: &str,
) -> Vec<(Value, Value, Value)> {
    let mut ledgers = ledgers.lock().unwrap();
    let unanswered = ledgers.iter().filter(|l| l.pending.is_some()).count();
    let mut applied = 0;
    let mut out = Vec::new();
    for (tenant, ledger) in tenants.iter().zip(ledgers.iter_mut()) {
        let r = server.call("GET", CONFIG_PATH, Some(&tenant.token), None, None);
        let acked = ledger.acked.clone().expect("an acknowledged write");
        let ok = r.status == 200 && {
            let v = r.json();
            if acked.matches(&v) {
                true
            } else if ledger.pending.as_ref().is_some_and(|p| p.matches(&v)) {
                // The unanswered write made it: it is now the latest value.
                ledger.acked = ledger.pending.take();
                applied += 1;
                true
            } else {
                false
            }
        };
        assert!(
            ok,
            "cycle {cycle}: after kill -9 and restart, {} answers {r}\n\
             last acknowledged write: {acked:?}\nunanswered write after it: {:?}\n\
             --- stderr of the killed server ---\n{}\n--- stderr of the restarted server ---\n{}",
            tenant.name,
            ledger.pending,
            tail(killed_log, 6000),
            tail(&server.log(), 6000)
        );
        let v = r.json();
        assert!(
            !r.body.contains(&acked.secret),
            "{}: the answer carries the plaintext secret: {r}",
            tenant.name
        );
        out.push((
            v["id"].clone(),
            v["enterprise_domain"].clone(),
            v["created_at"].clone(),
        ));
    }
    eprintln!(
        "cycle {cycle}: {unanswered} write(s) were unanswered at kill -9, {applied} of them \
         found applied after the restart"
    );
    out
}

#[test]
fn acknowledged_writes_survive_kill_9() {
    let started = Instant::now();
    let home = Home::new(Some(PASSPHRASE));
    home.run_ok(&["domain", "add", "acme.test"]);
    let acme = home.run_ok(&["token", "create", "--domain", "acme.test"]);
    let operator = home.run_ok(&["token", "create", "--operator"]);

    let mut server = home.start();
    let mut tenants = vec![Tenant {
        name: "acme.test".into(),
        token: acme,
    }];
    // Domains and tokens created over the admin API must survive kill -9 too.
    for i in 1..6 {
        let name = format!("tenant{i}.test");
        server.add_domain(&operator, &name);
        let token = server.create_token(&operator, &name);
        tenants.push(Tenant { name, token });
    }
    let ledgers = Mutex::new(
        (0..tenants.len())
            .map(|_| Ledger::default())
            .collect::<Vec<_>>(),
    );

    let mut first_seen: Option<Vec<(Value, Value, Value)>> = None;
    for cycle in 1..=2 {
        let killed_log = write_then_kill9(&mut server, &tenants, &ledgers, cycle);
        server = home.start();
        let seen = verify_after_restart(&server, &tenants, &ledgers, cycle, &killed_log);
        // id, enterprise_domain and created_at stay fixed across updates and restarts.
        if let Some(first) = &first_seen {
            assert_eq!(
                first, &seen,
                "cycle {cycle}: (id, enterprise_domain, created_at) per domain changed"
            );
        }
        first_seen = Some(seen);
    }
    // The operator token (CLI) still works after two kills.
    let domains = server.expect(200, "GET", "/api/v1/admin/domains/", &operator, None, None);
    assert_eq!(
        domains.as_array().map(Vec::len),
        Some(tenants.len()),
        "domains after two kills: {domains}"
    );
    server.stop();
    eprintln!(
        "acknowledged_writes_survive_kill_9: {:?}",
        started.elapsed()
    );
}

// ---- 2. wrong master key --------------------------------------------------------------

#[test]
fn wrong_passphrase_is_refused_and_changes_nothing() {
    let started = Instant::now();
    let home = Home::new(Some(PASSPHRASE));
    home.run_ok(&["domain", "add", "acme.test"]);
    home.run_ok(&["token", "create", "--domain", "acme.test"]);
    let before = snapshot(&home.data_dir());
    assert!(
        before.len() > 1,
        "data/ holds almost nothing: {:?}",
        before.keys()
    );

    for args in [
        &["serve"][..],
        &["domain", "list"],
        &["domain", "add", "x.test"],
    ] {
        let out = home.run_with(Some(Some(OTHER_PASSPHRASE)), &[], args, REFUSE_TIMEOUT);
        assert_refused_for_master_key(
            &format!("`oidcvault {}` with another passphrase", args.join(" ")),
            &out,
            &[PASSPHRASE, OTHER_PASSPHRASE],
        );
        let diff = snapshot_diff(&before, &snapshot(&home.data_dir()));
        assert!(
            diff.is_empty(),
            "`oidcvault {}` with a wrong passphrase changed data/:\n{}\n{}",
            args.join(" "),
            diff.join("\n"),
            out.describe()
        );
    }
    // The right passphrase still opens it, with its data.
    let list = home.run_ok(&["domain", "list"]);
    assert!(list.contains("acme.test"), "domain list: {list}");
    eprintln!(
        "wrong_passphrase_is_refused_and_changes_nothing: {:?}",
        started.elapsed()
    );
}

#[test]
fn wrong_key_file_is_refused_and_changes_nothing() {
    let started = Instant::now();
    let home = Home::new(None);
    home.run_ok(&["domain", "add", "acme.test"]);
    let key = home.key_file();
    let original_key = std::fs::read(&key).expect("master.key was created");
    let before = snapshot(&home.data_dir());

    // Another valid-looking key: 32 random bytes in base64, mode 0600.
    let mut other = vec![0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut other))
        .unwrap();
    let other_key = format!("{}=\n", b64(&other, false));
    std::fs::write(&key, &other_key).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();

    let original_text = String::from_utf8_lossy(&original_key).trim().to_owned();
    for args in [&["serve"][..], &["domain", "list"]] {
        let out = home.run_with(None, &[], args, REFUSE_TIMEOUT);
        assert_refused_for_master_key(
            &format!("`oidcvault {}` with another master.key", args.join(" ")),
            &out,
            &[&original_text, other_key.trim()],
        );
        let diff = snapshot_diff(&before, &snapshot(&home.data_dir()));
        assert!(
            diff.is_empty(),
            "`oidcvault {}` with a wrong key file changed data/:\n{}\n{}",
            args.join(" "),
            diff.join("\n"),
            out.describe()
        );
        assert_eq!(
            std::fs::read_to_string(&key).unwrap(),
            other_key,
            "the key file itself was rewritten"
        );
    }
    // With no key file at all it is refused too: it must not create a new key for
    // an existing data directory.
    std::fs::remove_file(&key).unwrap();
    let out = home.run_with(None, &[], &["domain", "list"], REFUSE_TIMEOUT);
    assert_refused_for_master_key("`domain list` with master.key missing", &out, &[]);
    assert!(
        !key.exists(),
        "a new master.key was created for an existing data/"
    );
    assert!(snapshot_diff(&before, &snapshot(&home.data_dir())).is_empty());

    // Restoring the original key opens it again.
    std::fs::write(&key, &original_key).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let list = home.run_ok(&["domain", "list"]);
    assert!(list.contains("acme.test"), "domain list: {list}");
    eprintln!(
        "wrong_key_file_is_refused_and_changes_nothing: {:?}",
        started.elapsed()
    );
}

// ---- 3. backup by copy ----------------------------------------------------------------

#[test]
fn a_copy_of_data_taken_while_stopped_is_a_full_replica() {
    let started = Instant::now();
    let home = Home::new(Some(PASSPHRASE));
    let operator = home.run_ok(&["token", "create", "--operator"]);
    let mut server = home.start();
    let mut tenants = Vec::new();
    for i in 0..3 {
        let name = format!("backup{i}.test");
        server.add_domain(&operator, &name);
        let token = server.create_token(&operator, &name);
        let body = json!({
            "client_id": format!("backup-client-{i}"),
            "client_secret": format!("backup-secret-{i}-{}", random_hex(8)),
            "token_endpoint": format!("https://{name}/oauth2/token"),
        });
        server.expect(200, "POST", CONFIG_PATH, &token, None, Some(&body));
        // An update, so created_at and updated_at differ.
        let update = json!({ "client_id": format!("backup-client-{i}-v2") });
        server.expect(200, "POST", CONFIG_PATH, &token, None, Some(&update));
        tenants.push((name, token));
    }
    let originals: Vec<Value> = tenants
        .iter()
        .map(|(_, token)| server.expect(200, "GET", CONFIG_PATH, token, None, None))
        .collect();
    server.stop();

    let copy = Home::new(Some(PASSPHRASE));
    copy_dir(&home.data_dir(), &copy.data_dir());
    let mut replica = copy.start();
    for ((name, token), original) in tenants.iter().zip(&originals) {
        // The domain token works on the replica, and the operator names the domain.
        let by_token = replica.expect(200, "GET", CONFIG_PATH, token, None, None);
        let by_operator = replica.expect(200, "GET", CONFIG_PATH, &operator, Some(name), None);
        for got in [&by_token, &by_operator] {
            assert_eq!(
                got, original,
                "{name}: the replica answers differently from the original"
            );
        }
        for field in ["id", "client_id", "client_secret_masked", "created_at"] {
            assert!(
                !original[field].is_null(),
                "{name}: {field} missing in {original}"
            );
        }
    }
    replica.stop();

    // The copy alone, with another passphrase: refused, unchanged.
    let before = snapshot(&copy.data_dir());
    let out = copy.run_with(
        Some(Some(OTHER_PASSPHRASE)),
        &[],
        &["serve"],
        REFUSE_TIMEOUT,
    );
    assert_refused_for_master_key(
        "`serve` on the copy with another passphrase",
        &out,
        &[PASSPHRASE, OTHER_PASSPHRASE],
    );
    let diff = snapshot_diff(&before, &snapshot(&copy.data_dir()));
    assert!(
        diff.is_empty(),
        "the refused start changed the copy: {diff:?}"
    );
    // And without any passphrase (key-file mode, no key file): refused as well.
    let out = copy.run_with(Some(None), &[], &["serve"], REFUSE_TIMEOUT);
    assert_refused_for_master_key("`serve` on the copy with no master key", &out, &[]);
    assert!(
        !copy.key_file().exists(),
        "a key file was created for the copy"
    );
    eprintln!(
        "a_copy_of_data_taken_while_stopped_is_a_full_replica: {:?}",
        started.elapsed()
    );
}

// ---- 4. secrets at rest and in logs ----------------------------------------------------

#[test]
fn no_secret_at_rest_or_in_trace_logs() {
    let started = Instant::now();
    let home = Home::new(Some(PASSPHRASE));
    let cli_domain = home.run(&["domain", "add", "cli.test"]);
    assert!(cli_domain.success(), "{}", cli_domain.describe());
    let cli_token_out = home.run(&["token", "create", "--domain", "cli.test"]);
    assert!(cli_token_out.success(), "{}", cli_token_out.describe());
    let operator_out = home.run(&["token", "create", "--operator"]);
    assert!(operator_out.success(), "{}", operator_out.describe());
    let cli_token = cli_token_out.stdout.trim().to_owned();
    let operator = operator_out.stdout.trim().to_owned();
    for (what, out, token) in [
        ("token create --domain", &cli_token_out, &cli_token),
        ("token create --operator", &operator_out, &operator),
    ] {
        assert!(
            token.starts_with("ovt_") && !out.stderr.contains(token.as_str()),
            "{what}: {}",
            out.describe()
        );
    }

    let mut server = home.start_with(None, &[("OIDCVAULT_LOG", "trace")]);
    let mut secrets = Vec::new();
    let mut tokens = vec![cli_token.clone(), operator.clone()];
    let mut domains = vec![("cli.test".to_owned(), cli_token.clone())];
    for i in 0..3 {
        let name = format!("secret{i}.test");
        server.add_domain(&operator, &name);
        let token = server.create_token(&operator, &name);
        tokens.push(token.clone());
        domains.push((name, token));
    }
    let mut answers = Vec::new();
    for (name, token) in &domains {
        let first = format!("Zebra-Quokka-{}-secret", random_hex(12));
        let second = format!("Zebra-Quokka-{}-secret", random_hex(12));
        let body = json!({ "client_id": format!("id-{name}"), "client_secret": first });
        answers.push(server.expect(200, "POST", CONFIG_PATH, token, None, Some(&body)));
        // The second secret through the operator token naming the domain.
        let body = json!({ "client_secret": second });
        answers.push(server.expect(200, "POST", CONFIG_PATH, &operator, Some(name), Some(&body)));
        answers.push(server.expect(200, "GET", CONFIG_PATH, token, None, None));
        secrets.push(first);
        secrets.push(second);
    }
    // Rejected credentials are not logged either.
    let forged = format!(
        "ovt_1_{}",
        b64(random_hex(32).as_bytes(), true).get(..43).unwrap()
    );
    let r = server.call("GET", CONFIG_PATH, Some(&forged), None, None);
    assert_eq!(r.status, 401, "a forged token: {r}");
    tokens.push(forged);
    answers.push(server.expect(200, "GET", "/api/v1/admin/tokens/", &operator, None, None));
    server.stop();
    let log = server.log();
    assert!(
        log.lines().count() > 10,
        "suspiciously few log lines at trace level:\n{log}"
    );

    // No HTTP answer carried a secret or (after creation) a token.
    for answer in &answers {
        let text = answer.to_string();
        for s in secrets.iter().chain(&tokens) {
            assert!(
                !text.contains(s.as_str()),
                "an answer contains {s:?}: {text}"
            );
        }
    }

    // Nothing in the logs: secrets, tokens (whole or their random part), passphrase.
    let mut log_needles = Vec::new();
    for s in &secrets {
        log_needles.push((format!("client secret {s:?}"), s.as_bytes().to_vec()));
    }
    for t in &tokens {
        log_needles.push((format!("token {t:?}"), t.as_bytes().to_vec()));
        let random = token_random_part(t);
        if random.len() >= 8 {
            log_needles.push((
                format!("random part of token {t:?}"),
                random.as_bytes().to_vec(),
            ));
        }
    }
    log_needles.push(("the passphrase".into(), PASSPHRASE.as_bytes().to_vec()));
    let leaked = find_needles(log.as_bytes(), &log_needles);
    assert!(
        leaked.is_empty(),
        "the trace-level log contains: {leaked:?}\n--- log ---\n{}",
        tail(&log, 20000)
    );

    // Nothing at rest under data/, in any common encoding.
    let mut needles = Vec::new();
    for s in &secrets {
        needles.extend(encodings(&format!("client secret {s:?}"), s.as_bytes()));
    }
    for t in &tokens {
        needles.extend(encodings(&format!("token {t:?}"), t.as_bytes()));
        let random = token_random_part(t);
        needles.extend(encodings(
            &format!("random bytes of token {t:?}"),
            &b64_decode(random),
        ));
    }
    needles.extend(encodings("the passphrase", PASSPHRASE.as_bytes()));
    let files = snapshot(&home.data_dir());
    let mut total = 0;
    for (path, bytes) in &files {
        let Some(bytes) = bytes else { continue };
        total += bytes.len();
        let found = find_needles(bytes, &needles);
        assert!(
            found.is_empty(),
            "data/{} contains {found:?}",
            path.display()
        );
    }
    assert!(total > 0, "data/ is empty: {:?}", files.keys());
    eprintln!(
        "no_secret_at_rest_or_in_trace_logs: {} files, {total} bytes, {} log lines, {:?}",
        files.len(),
        log.lines().count(),
        started.elapsed()
    );
}

/// The leak detector itself: a secret embedded at any offset in a buffer that is
/// then hex- or base64-encoded is found, and an unrelated buffer is not flagged.
#[test]
fn leak_detector_finds_every_encoding() {
    let secret = format!("Zebra-Quokka-{}-secret", random_hex(12));
    let needles = encodings("secret", secret.as_bytes());
    for prefix in 0..6 {
        let mut plain = b"{\"k\":\"".to_vec();
        plain.extend(std::iter::repeat_n(b'x', prefix));
        plain.extend(secret.as_bytes());
        plain.extend(b"\"}");
        for (form, encoded) in [
            ("raw", plain.clone()),
            ("hex", hex(&plain, false).into_bytes()),
            ("HEX", hex(&plain, true).into_bytes()),
            ("base64", b64(&plain, false).into_bytes()),
            ("base64url", b64(&plain, true).into_bytes()),
        ] {
            let mut file = b"some header bytes ".to_vec();
            file.extend(&encoded);
            file.extend(b" trailing");
            assert!(
                !find_needles(&file, &needles).is_empty(),
                "{form} at offset {prefix} not found"
            );
        }
    }
    let other = format!("Zebra-Quokka-{}-secret", random_hex(12));
    assert!(find_needles(other.as_bytes(), &needles).is_empty());
    assert_eq!(b64_decode(&b64(secret.as_bytes(), true)), secret.as_bytes());
}

// ---- 5. command line -------------------------------------------------------------------

#[test]
fn cli_commands_behave_while_serving_and_on_errors() {
    let started = Instant::now();
    let home = Home::new(Some(PASSPHRASE));

    let added = home.run_ok(&["domain", "add", "Acme.Test"]);
    let added: Value = serde_json::from_str(&added)
        .unwrap_or_else(|e| panic!("domain add printed no JSON object ({e}): {added:?}"));
    assert!(
        added["id"].is_u64() && added["domain"] == "acme.test" && added["created_at"].is_string(),
        "domain add printed {added}"
    );
    let token = home.run_ok(&["token", "create", "--domain", "acme.test"]);
    assert!(
        token.starts_with("ovt_") && !token.contains(char::is_whitespace),
        "token create printed {token:?}"
    );
    let list_before = home.run_ok(&["domain", "list"]);

    let mut server = home.start();
    // The running server holds data/: an offline write is refused, pointing to the API.
    let out = home.run(&["domain", "add", "x.test"]);
    let line = assert_one_line_failure("`domain add x.test` while serving", &out);
    assert!(
        lower(&line).contains("in use") && lower(&line).contains("admin api"),
        "`domain add x.test` while serving: the line should say the data directory is in use \
         and point to the admin API, got: {line:?}"
    );
    // The server is unaffected.
    let r = server.call("GET", "/readyz", None, None, None);
    assert_eq!(r.status, 200, "readyz after a refused offline command: {r}");
    let r = server.call("GET", CONFIG_PATH, Some(&token), None, None);
    assert_eq!(r.status, 404, "GET with no config yet: {r}");
    server.stop();

    // Nothing half-written by the refused command.
    let list = home.run_ok(&["domain", "list"]);
    let parsed: Value = serde_json::from_str(&list)
        .unwrap_or_else(|e| panic!("domain list printed no JSON ({e}): {list:?}"));
    let array = parsed
        .as_array()
        .unwrap_or_else(|| panic!("domain list printed no JSON array: {list}"));
    assert_eq!(array.len(), 1, "domain list: {list}");
    assert_eq!(array[0], added, "domain list: {list}");
    assert_eq!(list, list_before, "domain list changed");

    let out = home.run(&["token", "create", "--domain", "nosuch.test"]);
    let line = assert_one_line_failure("`token create --domain nosuch.test`", &out);
    assert!(lower(&line).contains("not found"), "{line:?}");

    let out = home.run(&["domain", "add", "not a domain"]);
    let line = assert_one_line_failure("`domain add \"not a domain\"`", &out);
    assert!(lower(&line).contains("domain"), "{line:?}");
    assert_eq!(
        home.run_ok(&["domain", "list"]),
        list_before,
        "domain list changed"
    );

    let tokens = home.run_ok(&["token", "list"]);
    let tokens: Value = serde_json::from_str(&tokens).unwrap();
    assert_eq!(
        tokens.as_array().map(Vec::len),
        Some(1),
        "token list: {tokens}"
    );
    assert!(
        !tokens.to_string().contains(&token),
        "token list shows the token"
    );

    // An unknown key in config.toml is refused and named; nothing is created.
    let bad = Home::empty(Some(PASSPHRASE));
    bad.write_config(&config_toml().replace("[storage]", "listen_backlogx = 1\n\n[storage]"));
    let out = bad.run(&["domain", "list"]);
    let line = assert_one_line_failure("an unknown key in config.toml", &out);
    assert!(
        line.contains("listen_backlogx"),
        "the unknown key is not named: {line:?}"
    );
    assert!(
        !bad.data_dir().exists(),
        "data/ was created despite a bad config"
    );

    // The same for an environment override of an unknown key.
    let out = home.run_with(
        None,
        &[("OIDCVAULT_SERVER__BINDD", "127.0.0.1:0")],
        &["domain", "list"],
        EXIT_TIMEOUT,
    );
    let line = assert_one_line_failure("OIDCVAULT_SERVER__BINDD", &out);
    assert!(
        lower(&line).contains("bindd"),
        "the unknown key is not named: {line:?}"
    );

    // A passphrase that is too short is refused, naming the master key.
    let short = Home::new(Some("short"));
    let out = short.run(&["domain", "list"]);
    let line = assert_one_line_failure("a short passphrase", &out);
    assert!(lower(&line).contains("master"), "{line:?}");
    assert!(
        !short.data_dir().exists(),
        "data/ was created with a short passphrase"
    );

    eprintln!(
        "cli_commands_behave_while_serving_and_on_errors: {:?}",
        started.elapsed()
    );
}

// ---- 6. key-file default ---------------------------------------------------------------

#[test]
fn first_start_creates_a_private_master_key_and_later_runs_reuse_it() {
    let started = Instant::now();
    let home = Home::new(None);
    let key = home.key_file();
    assert!(!key.exists());

    let mut server = home.start();
    let ready = server.call("GET", "/readyz", None, None, None);
    assert_eq!(ready.status, 200, "readyz: {ready}");
    server.stop();
    let first_log = server.log();
    let meta = std::fs::metadata(&key).unwrap_or_else(|e| {
        panic!("no master.key beside config.toml ({e})\n--- stderr ---\n{first_log}")
    });
    assert_eq!(
        meta.permissions().mode() & 0o777,
        0o600,
        "master.key mode is {:o}",
        meta.permissions().mode() & 0o777
    );
    let key_bytes = std::fs::read(&key).unwrap();
    let key_text = String::from_utf8_lossy(&key_bytes).trim().to_owned();
    let warning = first_log.lines().find(|l| {
        let l = lower(l);
        l.contains("master key")
            && (l.contains("back it up") || l.contains("backup") || l.contains("back up"))
    });
    assert!(
        warning.is_some_and(|l| l.contains("WARN")),
        "no warning to back up the new master key on stderr:\n{first_log}"
    );
    assert!(
        !first_log.contains(&key_text),
        "the log shows the key:\n{first_log}"
    );
    assert!(!key.starts_with(home.data_dir()));

    // A second run (offline command) reuses it: no new key, no warning.
    let out = home.run(&["domain", "add", "keyfile.test"]);
    assert!(out.success(), "{}", out.describe());
    assert!(
        !lower(&out.stderr).contains("back it up"),
        "{}",
        out.describe()
    );
    let token = home.run_ok(&["token", "create", "--domain", "keyfile.test"]);
    assert_eq!(
        std::fs::read(&key).unwrap(),
        key_bytes,
        "master.key changed"
    );

    // And the server again.
    let mut server = home.start();
    let body = json!({ "client_id": "kf", "client_secret": "key-file-mode-secret" });
    server.expect(200, "POST", CONFIG_PATH, &token, None, Some(&body));
    server.stop();
    let log = server.log();
    assert!(!lower(&log).contains("created a new master key"), "{log}");
    assert_eq!(
        std::fs::read(&key).unwrap(),
        key_bytes,
        "master.key changed"
    );

    // The key is nowhere under data/ (text or raw bytes).
    let mut needles = encodings("master.key text", key_text.as_bytes());
    needles.extend(encodings("master.key bytes", &b64_decode(&key_text)));
    needles.extend(encodings("client secret", b"key-file-mode-secret"));
    for (path, bytes) in snapshot(&home.data_dir()) {
        let Some(bytes) = bytes else { continue };
        let found = find_needles(&bytes, &needles);
        assert!(
            found.is_empty(),
            "data/{} contains {found:?}",
            path.display()
        );
    }

    // A key file readable by others is refused.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = home.run_with(None, &[], &["domain", "list"], REFUSE_TIMEOUT);
    let line = assert_one_line_failure("master.key with mode 0644", &out);
    assert!(lower(&line).contains("master"), "{line:?}");
    eprintln!(
        "first_start_creates_a_private_master_key_and_later_runs_reuse_it: {:?}",
        started.elapsed()
    );
}

// ---- 5. outbound: the connection test's secret stays out of logs and answers ---------

/// The connection test decrypts the client secret and sends it to the provider
/// (client_secret_basic, then client_secret_post): at `trace` level no log line,
/// and no answer, carries it in any encoding. The provider is a stub on loopback.
#[test]
fn connection_test_keeps_the_secret_out_of_trace_logs() {
    use crate::stub_http::{Reply, Stub};
    let secret = format!("Zebra-Quokka-{}-secret", random_hex(12));
    let doc = Arc::new(Mutex::new(Value::Null));
    let (served, expected) = (doc.clone(), secret.clone());
    let idp = Stub::start("127.0.0.1", move |r| {
        let body = String::from_utf8_lossy(&r.body).into_owned();
        let authenticated = r.header("authorization").is_some_and(|h| {
            b64_decode(h.trim_start_matches("Basic ")).ends_with(expected.as_bytes())
        }) || body.contains(&format!("client_secret={expected}"));
        match r.path.as_str() {
            "/.well-known/openid-configuration" => {
                Reply::Json(200, served.lock().unwrap().to_string())
            }
            "/jwks" => Reply::Json(200, r#"{"keys":[{"kty":"EC","kid":"a"}]}"#.into()),
            "/token" if r.method == "POST" && authenticated => {
                Reply::Json(400, r#"{"error":"invalid_grant"}"#.into())
            }
            "/token" if r.method == "POST" => {
                Reply::Json(401, r#"{"error":"invalid_client"}"#.into())
            }
            _ => Reply::Json(400, r#"{"error":"invalid_request"}"#.into()),
        }
    });
    let o = idp.origin();
    *doc.lock().unwrap() = json!({
        "issuer": o, "authorization_endpoint": format!("{o}/auth"),
        "token_endpoint": format!("{o}/token"), "jwks_uri": format!("{o}/jwks"),
    });
    let home = Home::new(Some(PASSPHRASE));
    home.write_config(&config_toml().replace(
        "enabled = false\nresolve_discovery_on_save = false",
        "resolve_discovery_on_save = true\nallow_http_hosts = [\"127.0.0.1\"]\n\
         allow_private_hosts = [\"127.0.0.1\"]\ntimeout_secs = 5",
    ));
    let operator = home.run_ok(&["token", "create", "--operator"]);
    let mut server = home.start_with(None, &[("OIDCVAULT_LOG", "trace")]);
    server.add_domain(&operator, "acme.com");
    let body = json!({"client_id": "app", "client_secret": secret,
                      "discovery_url": format!("{o}/.well-known/openid-configuration")});
    let mut answers = vec![server.expect(
        200,
        "POST",
        CONFIG_PATH,
        &operator,
        Some("acme.com"),
        Some(&body),
    )];
    assert_eq!(
        answers[0]["token_endpoint"],
        format!("{o}/token"),
        "{}",
        answers[0]
    );
    let test_path = "/api/v1/enterprises/oidc/config/test/";
    for methods in [json!(null), json!(["client_secret_post"])] {
        doc.lock().unwrap()["token_endpoint_auth_methods_supported"] = methods;
        let t = server.expect(
            200,
            "POST",
            test_path,
            &operator,
            Some("acme.com"),
            Some(&json!({})),
        );
        let client = t["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == "client_authentication")
            .unwrap()
            .clone();
        assert_eq!(client["status"], "pass", "{t}");
        answers.push(t);
    }
    server.stop();
    let log = server.log();
    assert!(
        log.contains("config.test"),
        "the test is audited and logged:\n{}",
        tail(&log, 4000)
    );
    // The HTTP client's own debug lines (ureq's request head) are in the log, with
    // the credentials header redacted: the check below looks at them too.
    assert!(
        log.contains("POST /token") && log.contains("Authorization: ***"),
        "{}",
        tail(&log, 8000)
    );
    let needles = encodings("the client secret", secret.as_bytes());
    let leaked = find_needles(log.as_bytes(), &needles);
    assert!(
        leaked.is_empty(),
        "the trace-level log contains {leaked:?}\n{}",
        tail(&log, 20000)
    );
    for a in &answers {
        let found = find_needles(a.to_string().as_bytes(), &needles);
        assert!(found.is_empty(), "an answer contains {found:?}: {a}");
    }
    let posts = idp
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST")
        .count();
    assert_eq!(posts, 2, "one token request per test");
}
