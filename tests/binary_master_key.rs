//! The master key: a wrong passphrase or key file is refused and changes nothing;
//! the key-file default (created private at first start, reused later).
//!
//! Through the real binary over real TCP, with the harness of `crate::harness`
//! (`Home`, `Server`, `Client`): every test gets its own temporary home.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::time::Instant;

use serde_json::json;

use crate::harness::leaks::{encodings, find_needles};
use crate::harness::text::{b64, b64_decode, lower};
use crate::harness::{
    assert_one_line_failure, assert_refused_for_master_key, snapshot, snapshot_diff, Home,
    CONFIG_PATH, OTHER_PASSPHRASE, PASSPHRASE, REFUSE_TIMEOUT,
};

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
