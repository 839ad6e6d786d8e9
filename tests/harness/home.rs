//! An appliance home (a temporary folder with `config.toml`, `data/` beside it)
//! and the binary run in it: commands to their end, or `serve` as a [`Server`].
//! Children never inherit the developer's `OIDCVAULT_*` variables.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::client::Client;
use super::server::{parse_listening, Server};
use super::text::{lower, strip_ansi, tail};
use super::{BIN, EXIT_TIMEOUT, REFUSE_TIMEOUT, START_TIMEOUT};

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
pub(super) fn wait_bounded(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
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
    pub(crate) fn empty(passphrase: Option<&str>) -> Self {
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

    pub(crate) fn key_file(&self) -> PathBuf {
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
