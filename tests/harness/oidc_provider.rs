//! panva's `oidc-provider` from npm (`tests/oidc-provider/provider.mjs`), run
//! by node on loopback: a real OpenID Provider for the discovery tests and the
//! sign-in broker's browser test. Its knobs are environment variables (listed
//! in provider.mjs); its stderr is kept for a failing test's report.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

/// A running provider; killed when dropped.
pub(crate) struct Provider {
    child: Child,
    pub(crate) port: u16,
    stderr: Option<JoinHandle<String>>,
}

impl Provider {
    /// Start `provider.mjs` on `port` (0: any free port) with `env` (its `OP_*`
    /// knobs) and wait until it serves.
    pub(crate) fn start_with(port: u16, env: &[(&str, &str)]) -> Self {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oidc-provider");
        assert!(
            dir.join("node_modules/oidc-provider/package.json").exists(),
            "the provider tests need oidc-provider from npm: cd tests/oidc-provider && npm ci \
             (scripts/test.sh does it)"
        );
        let mut cmd = Command::new("node");
        cmd.arg("provider.mjs")
            .current_dir(&dir)
            .env("OP_PORT", port.to_string());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run node (needed for the provider tests): {e}"));
        let stdout = child.stdout.take().unwrap();
        let mut err = child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            s
        });
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(p) = line.strip_prefix("listening ") {
                    let _ = tx.send(p.trim().parse::<u16>().ok());
                }
            }
        });
        let mut provider = Self {
            child,
            port: 0,
            stderr: Some(stderr),
        };
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Some(p)) => provider.port = p,
            other => {
                let log = provider.stop_and_log();
                panic!("oidc-provider did not start ({other:?}); stderr:\n{log}");
            }
        }
        provider
    }

    /// `http://127.0.0.1:<port>`.
    pub(crate) fn issuer(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub(crate) fn discovery_url(&self) -> String {
        format!("{}/.well-known/openid-configuration", self.issuer())
    }

    pub(crate) fn stop(mut self) {
        self.kill();
    }

    /// Stop it; what it wrote to stderr.
    pub(crate) fn stop_and_log(&mut self) -> String {
        self.kill();
        self.stderr
            .take()
            .map(|h| h.join().unwrap_or_default())
            .unwrap_or_default()
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        self.kill();
    }
}
