//! Operational hardening (issue 11), through the real binary where the
//! guarantee is about the process, in process where it is about the vault:
//! files private to the appliance's user, secrets out of the process
//! environment, the master key apart from the data directory (symbolic links
//! followed), the backup path rule of `oidcvault backup` through a server, the
//! cap on a keyring's Argon2id parameters, and counters read from disk that do
//! not wrap.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::json;

use oidcvault::config::Config;
use oidcvault::vault::{ConfigPatch, VaultError};
use oidcvault::Vault;

use crate::harness::stub_http::{Reply, Stub};
use crate::harness::{
    assert_one_line_failure, config_toml, random_hex, tail, Home, EXIT_TIMEOUT, OTHER_PASSPHRASE,
    PASSPHRASE, REFUSE_TIMEOUT,
};

const PASSPHRASE_ENV: &str = "OIDCVAULT_MASTER_PASSPHRASE";
const PASSPHRASE_FILE_ENV: &str = "OIDCVAULT_MASTER_PASSPHRASE_FILE";
const TOKEN_ENV: &str = "OIDCVAULT_TOKEN";
const NEW_PASSPHRASE_ENV: &str = "OIDCVAULT_NEW_MASTER_PASSPHRASE";

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o7777
}

fn set_mode(p: &Path, m: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
}

/// Every folder (root included) and file under `root`, with its mode.
fn modes(root: &Path) -> Vec<(PathBuf, bool, u32)> {
    let mut out = vec![(root.to_path_buf(), true, mode(root))];
    for entry in std::fs::read_dir(root).unwrap() {
        let path = entry.unwrap().path();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        if meta.is_dir() {
            out.extend(modes(&path));
        } else if meta.is_file() {
            out.push((path.clone(), false, mode(&path)));
        }
    }
    out
}

/// Every folder under `root` is 0700 and every file 0600.
fn assert_private(what: &str, root: &Path) {
    let all = modes(root);
    assert!(all.len() > 1, "{what}: {} is empty", root.display());
    let wrong: Vec<String> = all
        .iter()
        .filter(|(_, dir, m)| *m != if *dir { 0o700 } else { 0o600 })
        .map(|(p, _, m)| format!("{} {m:o}", p.display()))
        .collect();
    assert!(wrong.is_empty(), "{what}: not private: {wrong:#?}");
}

/// Make a whole tree readable by others again: folders 0755, files 0644.
fn make_public(root: &Path) {
    for (path, dir, _) in modes(root) {
        set_mode(&path, if dir { 0o755 } else { 0o644 });
    }
}

// ---- files private to the appliance's user ---------------------------------------------

#[test]
fn a_readable_data_directory_and_backups_are_made_private_at_start() {
    let home = Home::new(Some(PASSPHRASE));
    let operator = home.run_ok(&["token", "create", "--operator"]);
    // A fresh data directory, made by the binary, is private at once.
    assert_private("a fresh data directory", &home.data_dir());
    let mut server = home.start();
    let backup = server.expect(201, "POST", "/api/v1/admin/backup", &operator, None, None);
    server.stop();
    let backups = home.path().join("backups");
    let made = PathBuf::from(backup["path"].as_str().unwrap());
    assert!(made.starts_with(&backups), "{backup}");
    assert_private("a backup written by the server", &backups);

    // As a checkout leaves `data/` (0755) and as sled made its files (0644)
    // before the umask, with a leftover temporary file of the keyring.
    let leftover = home.data_dir().join("keyring.tmp");
    std::fs::write(&leftover, b"left by an interrupted write").unwrap();
    make_public(&home.data_dir());
    make_public(&backups);
    let expected = modes(&home.data_dir()).len() + modes(&backups).len();
    // A wrong master key changes nothing on disk, modes included.
    let before = modes(&home.data_dir());
    let wrong = home.run_with(
        Some(Some(OTHER_PASSPHRASE)),
        &[],
        &["domain", "list"],
        REFUSE_TIMEOUT,
    );
    assert!(wrong.failed(), "{}", wrong.describe());
    assert_eq!(
        modes(&home.data_dir()),
        before,
        "a wrong master key changed modes"
    );
    let mut server = home.start();
    server.stop();
    assert_private("the data directory after a start", &home.data_dir());
    assert_private("storage.backup_dir after a start", &backups);
    let log = server.log();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("private to this user"))
        .collect();
    assert_eq!(
        lines.len(),
        1,
        "one log line says so:\n{}",
        tail(&log, 4000)
    );
    assert!(
        lines[0].contains(&format!("made {expected} paths")),
        "the line counts the {expected} paths: {}",
        lines[0]
    );

    // Offline commands do the same.
    make_public(&home.data_dir());
    home.run_ok(&["domain", "list"]);
    assert_private(
        "the data directory after an offline command",
        &home.data_dir(),
    );
}

#[test]
fn a_data_directory_that_cannot_be_made_private_is_refused_with_the_chmod_to_run() {
    // /proc/1 is 0555 and no one, not even root, can change its mode.
    let home = Home::new(Some(PASSPHRASE));
    home.write_config(&config_toml().replace(
        "data_dir = \"data\"",
        "data_dir = \"data\"\nbackup_dir = \"/proc/1\"",
    ));
    let out = home.run(&["domain", "list"]);
    let line = assert_one_line_failure("a backup_dir that cannot be made private", &out);
    assert!(line.contains("run: chmod -R go-rwx /proc/1"), "{line}");
}

// ---- secrets out of the process environment ----------------------------------------------

#[test]
fn the_running_server_holds_no_secret_in_its_environment() {
    let home = Home::new(Some(PASSPHRASE));
    let operator = home.run_ok(&["token", "create", "--operator"]);
    let new_passphrase = format!("new-passphrase-{}", random_hex(12));
    let mut server = home.start_with(
        None,
        &[
            (TOKEN_ENV, operator.as_str()),
            (NEW_PASSPHRASE_ENV, new_passphrase.as_str()),
        ],
    );
    // It opened the keyring with the passphrase, so it was handed over.
    server.expect(200, "GET", "/api/v1/admin/domains/", &operator, None, None);
    let environ = std::fs::read(format!("/proc/{}/environ", server.pid())).unwrap();
    let text = String::from_utf8_lossy(&environ);
    for (what, needle) in [
        ("the master passphrase", PASSPHRASE),
        ("the operator token", operator.as_str()),
        ("the new passphrase", new_passphrase.as_str()),
        ("a secret variable's name", PASSPHRASE_ENV),
        ("a secret variable's name", TOKEN_ENV),
        ("a secret variable's name", NEW_PASSPHRASE_ENV),
    ] {
        assert!(
            !text.contains(needle),
            "/proc/<pid>/environ of the server holds {what}"
        );
    }
    // The rest of the environment is still there (the config layer reads it).
    assert!(text.contains("PATH="), "the environment was emptied");
    server.stop();
}

// ---- the master key apart from the data directory --------------------------------------

fn home_dir_with_config(extra: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(
        &path,
        format!(
            "[storage]\ndata_dir = \"data\"\ncache_capacity_mib = 8\n\
             [security]\nkdf_memory_kib = 19456\nkdf_iterations = 2\nkdf_parallelism = 1\n{extra}\
             [outbound]\nenabled = false\nresolve_discovery_on_save = false\n"
        ),
    )
    .unwrap();
    (dir, path)
}

fn open_with(path: &Path, env: &[(&str, &str)]) -> Result<Vault, VaultError> {
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let config = Config::load_with_env(Some(path), &env).unwrap();
    Vault::open(&config, &env).map(|(v, _)| v)
}

fn assert_refused_inside(what: &str, r: Result<Vault, VaultError>, setting: &str) {
    match r {
        Ok(v) => {
            v.shutdown();
            panic!("{what}: opened");
        }
        Err(e) => {
            let e = e.to_string();
            assert!(
                e.contains(setting) && e.contains("inside the data directory"),
                "{what}: {e}"
            );
        }
    }
}

#[test]
fn a_key_file_reached_through_a_symbolic_link_into_data_is_refused() {
    let (dir, path) = home_dir_with_config("master_key_file = \"keys/master.key\"\n");
    std::fs::create_dir(dir.path().join("data")).unwrap();
    set_mode(&dir.path().join("data"), 0o700);
    std::os::unix::fs::symlink(dir.path().join("data"), dir.path().join("keys")).unwrap();
    assert_refused_inside(
        "keys/ -> data/",
        open_with(&path, &[]),
        "security.master_key_file",
    );
    assert!(
        !dir.path().join("data/master.key").exists(),
        "a key file was written into the data directory"
    );
    // The data directory itself behind a link: the same.
    let (dir, path) = home_dir_with_config("master_key_file = \"real/master.key\"\n");
    std::fs::create_dir(dir.path().join("real")).unwrap();
    set_mode(&dir.path().join("real"), 0o700);
    std::os::unix::fs::symlink(dir.path().join("real"), dir.path().join("data")).unwrap();
    assert_refused_inside(
        "data/ -> real/",
        open_with(&path, &[]),
        "security.master_key_file",
    );
}

#[test]
fn a_passphrase_file_inside_data_is_refused_directly_and_through_a_link() {
    let (dir, path) = home_dir_with_config("");
    open_with(&path, &[(PASSPHRASE_ENV, PASSPHRASE)])
        .unwrap()
        .shutdown();
    let inside = dir.path().join("data/passphrase");
    std::fs::write(&inside, PASSPHRASE).unwrap();
    set_mode(&inside, 0o600);
    assert_refused_inside(
        "the passphrase file in data/",
        open_with(&path, &[(PASSPHRASE_FILE_ENV, inside.to_str().unwrap())]),
        PASSPHRASE_FILE_ENV,
    );
    std::os::unix::fs::symlink(dir.path().join("data"), dir.path().join("secrets")).unwrap();
    let linked = dir.path().join("secrets/passphrase");
    assert_refused_inside(
        "secrets/ -> data/",
        open_with(&path, &[(PASSPHRASE_FILE_ENV, linked.to_str().unwrap())]),
        PASSPHRASE_FILE_ENV,
    );
    // Outside the data directory it opens.
    let outside = dir.path().join("passphrase");
    std::fs::rename(&inside, &outside).unwrap();
    open_with(&path, &[(PASSPHRASE_FILE_ENV, outside.to_str().unwrap())])
        .unwrap()
        .shutdown();
}

// ---- `oidcvault backup` through a running server -------------------------------------------

/// A stub "server" that answers a backup request with `path`.
fn stub_answering(path: &str) -> Stub {
    let body = json!({
        "name": "oidcvault-backup-x",
        "path": path,
        "records": 1,
        "bytes": 1,
        "created_at": "2026-01-01T00:00:00Z",
    })
    .to_string();
    Stub::start("127.0.0.1", move |_| Reply::Json(201, body.clone()))
}

#[test]
fn backup_through_a_server_moves_nothing_from_outside_the_backup_dir() {
    let home = Home::new(Some(PASSPHRASE));
    let operator = home.run_ok(&["token", "create", "--operator"]);
    // The real server holds the data directory, so `backup` asks "the server":
    // here a stub at the address the command is given.
    let mut server = home.start();
    let victim = home.path().join("victim");
    std::fs::create_dir(&victim).unwrap();
    std::fs::write(victim.join("precious"), b"keep me").unwrap();
    let backups = home.path().join("backups");
    std::fs::create_dir(&backups).unwrap();
    let link = backups.join("oidcvault-backup-link");
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    let dotdot = format!("{}/../victim", backups.display());
    for answered in [
        victim.to_str().unwrap(),
        link.to_str().unwrap(),
        dotdot.as_str(),
        backups.to_str().unwrap(),
        "",
    ] {
        let stub = stub_answering(answered);
        let dest = home.path().join("dest");
        let out = home.run_with(
            None,
            &[
                (TOKEN_ENV, operator.as_str()),
                ("OIDCVAULT_SERVER__BIND", &stub.addr.to_string()),
            ],
            &["backup", dest.to_str().unwrap()],
            EXIT_TIMEOUT,
        );
        let line = assert_one_line_failure(&format!("the server answered {answered:?}"), &out);
        assert!(line.contains("storage.backup_dir"), "{line}");
        assert_eq!(stub.hits(), 1, "the request was not sent to the stub");
        assert_eq!(
            std::fs::read(victim.join("precious")).ok().as_deref(),
            Some(&b"keep me"[..]),
            "answered {answered:?}: the victim folder was moved or removed"
        );
        assert!(link.exists() && backups.exists());
        assert!(
            !dest.exists(),
            "answered {answered:?}: {} made",
            dest.display()
        );
    }
    server.stop();
}

#[test]
fn backup_never_sends_the_operator_token_over_plain_http_off_this_machine() {
    let home = Home::new(Some(PASSPHRASE));
    let operator = home.run_ok(&["token", "create", "--operator"]);
    let mut server = home.start();
    for bind in ["192.0.2.1:8080", "[2001:db8::1]:80", "oidcvault.example:80"] {
        let dest = home.path().join("dest");
        let started = Instant::now();
        let out = home.run_with(
            None,
            &[
                (TOKEN_ENV, operator.as_str()),
                ("OIDCVAULT_SERVER__BIND", bind),
            ],
            &["backup", dest.to_str().unwrap()],
            REFUSE_TIMEOUT,
        );
        let line = assert_one_line_failure(&format!("server.bind {bind}"), &out);
        assert!(
            line.contains("plain HTTP") && line.contains("loopback"),
            "{bind}: {line}"
        );
        assert!(!line.contains(&operator), "{line}");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{bind}: refused only after {:?} (a connection was tried?)",
            started.elapsed()
        );
        assert!(!dest.exists());
    }
    server.stop();
}

// ---- the cap on a keyring's Argon2id parameters -----------------------------------------

/// bincode's variable-length encoding of a u32 (standard configuration).
fn varint(v: u32) -> Vec<u8> {
    if v < 251 {
        vec![v as u8]
    } else if v <= u32::from(u16::MAX) {
        let mut out = vec![251];
        out.extend_from_slice(&(v as u16).to_le_bytes());
        out
    } else {
        let mut out = vec![252];
        out.extend_from_slice(&v.to_le_bytes());
        out
    }
}

#[test]
fn a_keyring_asking_for_huge_kdf_parameters_is_refused_before_deriving() {
    let home = Home::new(Some(PASSPHRASE));
    home.run_ok(&["domain", "add", "acme.com"]);
    let keyring = home.data_dir().join("keyring");
    let bytes = std::fs::read(&keyring).unwrap();
    // "OVKR", version 1, then the parameters: memory 19456 KiB, 2 passes, 1 lane.
    let params: Vec<u8> = [varint(19456), varint(2), varint(1)].concat();
    assert_eq!(&bytes[..5], b"OVKR\x01");
    assert_eq!(
        &bytes[5..5 + params.len()],
        &params[..],
        "unexpected layout"
    );
    // 4 GiB and 64 passes: the most the format's own bounds allow.
    let huge: Vec<u8> = [varint(4 * 1024 * 1024), varint(64), varint(1)].concat();
    let tampered = [&bytes[..5], &huge[..], &bytes[5 + params.len()..]].concat();
    std::fs::write(&keyring, tampered).unwrap();
    let started = Instant::now();
    let out = home.run_with(None, &[], &["domain", "list"], REFUSE_TIMEOUT);
    let line = assert_one_line_failure("a keyring asking for 4 GiB and 64 passes", &out);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "refused only after {:?}",
        started.elapsed()
    );
    assert!(
        line.contains("security.kdf_memory_kib") && line.contains("security.kdf_iterations"),
        "{line}"
    );
    // A configuration that allows them would run them: the cap is the larger
    // of the configured value and the documented ceiling, nothing else.
    let cap_ok = Config::load_with_env(
        Some(&home.path().join("config.toml")),
        &[
            (
                "OIDCVAULT_SECURITY__KDF_MEMORY_KIB".into(),
                "4194304".into(),
            ),
            ("OIDCVAULT_SECURITY__KDF_ITERATIONS".into(), "64".into()),
        ],
    )
    .unwrap();
    assert_eq!(cap_ok.kdf_cap().m_cost_kib, 4 * 1024 * 1024);
}

// ---- counters read from disk ---------------------------------------------------------------

#[actix_web::test]
async fn a_corrupt_term_counter_makes_the_term_due_and_never_wraps() {
    let (_dir, path) = home_dir_with_config("");
    let env = [(PASSPHRASE_ENV, PASSPHRASE)];
    let vault = open_with(&path, &env).unwrap();
    vault.store().reserve_term_uses(1, u64::MAX).unwrap();
    vault.shutdown();
    drop(vault);
    let vault = open_with(&path, &env).unwrap();
    let domain = vault.add_domain("acme.com", None).await.unwrap();
    let patch = ConfigPatch {
        client_id: Some("client".into()),
        client_secret: Some(oidcvault::crypto::SecretString::new("s3cr3t-value".into())),
        ..ConfigPatch::default()
    };
    vault.upsert_config(&domain, patch, None).await.unwrap();
    let status = vault.key_status().unwrap();
    assert_eq!(
        status.active_term_encryptions,
        u64::MAX,
        "the count wrapped"
    );
    vault.maintenance_step().await.unwrap();
    assert_eq!(vault.keyring().active_term(), 2, "the term was not rotated");
    assert!(vault.key_status().unwrap().active_term_encryptions < 10);
    vault.shutdown();
}
