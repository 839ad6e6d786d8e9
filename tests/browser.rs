//! The admin page in a real browser: runs `tests/browser/admin-page.test.mjs`
//! (playwright-core driving Debian's headless Chromium) against this build's
//! binary on loopback. It needs Chromium and the npm package, which
//! `scripts/test.sh` installs, so a plain `cargo test` lists it as ignored;
//! `scripts/test.sh` always runs it:
//!
//! ```sh
//! cargo test --test integration browser:: -- --ignored
//! ```
//!
//! Screenshots of each main screen go to `target/browser-screenshots/`.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_oidcvault");
const CHROMIUM: &str = "/usr/bin/chromium";
/// The whole scenario takes about 15 s; this bounds a hung browser.
const TIMEOUT: Duration = Duration::from_secs(300);

fn screenshots_dir() -> PathBuf {
    // BIN is <target>/<profile>/oidcvault.
    let target = Path::new(BIN)
        .parent()
        .and_then(Path::parent)
        .expect("the binary sits in <target>/<profile>/");
    target.join("browser-screenshots")
}

#[test]
#[ignore = "needs headless Chromium and playwright-core: scripts/test.sh installs them and runs \
            this (cargo test --test integration browser:: -- --ignored)"]
fn admin_page_in_headless_chromium() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = repo.join("tests/browser");
    let missing: Vec<String> = [
        (
            Path::new(CHROMIUM).to_path_buf(),
            "apt-get install chromium chromium-driver",
        ),
        (
            dir.join("node_modules/playwright-core/package.json"),
            "cd tests/browser && npm ci",
        ),
    ]
    .into_iter()
    .filter(|(path, _)| !path.exists())
    .map(|(path, fix)| format!("{} (fix: {fix})", path.display()))
    .collect();
    assert!(
        missing.is_empty(),
        "the browser test needs: {missing:?}; scripts/test.sh installs both"
    );
    let shots = screenshots_dir();
    let started = Instant::now();
    let mut child = Command::new("node")
        .args([
            "--test",
            "--test-reporter=spec",
            "--test-concurrency=1",
            "admin-page.test.mjs",
        ])
        .current_dir(&dir)
        .env("OIDCVAULT_BIN", BIN)
        .env("CHROMIUM", CHROMIUM)
        .env("OIDCVAULT_SCREENSHOTS", &shots)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run node (needed for the browser test): {e}"));
    let read = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let out = read(Box::new(child.stdout.take().unwrap()));
    let err = read(Box::new(child.stderr.take().unwrap()));
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for node") {
            break Some(status);
        }
        if started.elapsed() > TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let (out, err) = (out.join().unwrap(), err.join().unwrap());
    let report = format!(
        "--- node --test admin-page.test.mjs: {status:?} after {:?} ---\n{out}\n--- stderr ---\n{err}\n\
         screenshots: {}",
        started.elapsed(),
        shots.display()
    );
    assert!(
        status.is_some_and(|s| s.success()),
        "the browser test failed\n{report}"
    );
    println!("{report}");
}
