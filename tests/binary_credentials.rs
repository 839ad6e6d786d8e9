//! The master key handed over as a systemd credential (`LoadCredential=`): with
//! `$CREDENTIALS_DIRECTORY` set, `security.master_key_file` names the credential
//! (its last part), read from there and never created there; and `man` and
//! `completions`, which read no configuration (issue 16).
//!
//! Through the real binary, each test in its own temporary home.

use std::os::unix::fs::PermissionsExt;

use crate::harness::{assert_one_line_failure, Home, REFUSE_TIMEOUT};

#[test]
fn the_master_key_comes_from_the_credentials_directory_when_systemd_sets_it() {
    let home = Home::new(None);
    // First start without systemd: the key file is created beside the config.
    home.run_ok(&["domain", "add", "acme.test"]);
    let key = std::fs::read(home.key_file()).expect("master.key was created");

    // The key moves to a credentials directory (systemd makes the copy 0400);
    // none is left at security.master_key_file.
    let creds = tempfile::tempdir().unwrap();
    let cred = creds.path().join("master.key");
    std::fs::write(&cred, &key).unwrap();
    std::fs::set_permissions(&cred, std::fs::Permissions::from_mode(0o400)).unwrap();
    std::fs::remove_file(home.key_file()).unwrap();
    let creds_dir = creds.path().to_str().unwrap();

    let out = home.run_with(
        None,
        &[("CREDENTIALS_DIRECTORY", creds_dir)],
        &["domain", "list"],
        REFUSE_TIMEOUT,
    );
    assert!(
        out.success() && out.stdout.contains("acme.test"),
        "domain list with the key as a credential\n{}",
        out.describe()
    );
    assert!(
        !home.key_file().exists(),
        "a key file was created although the credential was used"
    );

    // Without the variable the (missing) key file is looked for again, and refused.
    let out = home.run_with(None, &[], &["domain", "list"], REFUSE_TIMEOUT);
    let line = assert_one_line_failure("domain list with neither key", &out);
    assert!(line.contains("master key file"), "{line}");
}

#[test]
fn a_missing_credential_is_refused_and_nothing_is_created() {
    let home = Home::new(None);
    let creds = tempfile::tempdir().unwrap();
    let out = home.run_with(
        None,
        &[("CREDENTIALS_DIRECTORY", creds.path().to_str().unwrap())],
        &["domain", "list"],
        REFUSE_TIMEOUT,
    );
    let line = assert_one_line_failure("domain list, the credential missing", &out);
    assert!(
        line.contains("LoadCredential=master.key:") && line.contains("CREDENTIALS_DIRECTORY"),
        "the refusal does not say what to add to the unit: {line}"
    );
    let left: Vec<_> = std::fs::read_dir(creds.path()).unwrap().collect();
    assert!(
        left.is_empty(),
        "created in the credentials directory: {left:?}"
    );
    assert!(!home.key_file().exists(), "a key file was created: {line}");
    assert!(!home.data_dir().exists(), "data/ was initialised: {line}");
}

#[test]
fn man_and_completions_need_no_configuration() {
    let home = Home::new(None);
    home.write_config("this is not toml [");
    let page = home.run_ok(&["man"]);
    assert!(page.contains(".TH oidcvault 1"), "not a man page:\n{page}");
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef oidcvault"),
        ("fish", "complete -c oidcvault"),
    ] {
        let script = home.run_ok(&["completions", shell]);
        assert!(script.contains(marker), "completions {shell}:\n{script}");
    }
    let out = home.run(&["completions", "tcsh"]);
    let line = assert_one_line_failure("completions tcsh", &out);
    assert!(line.contains("tcsh"), "{line}");
    assert!(
        !home.data_dir().exists(),
        "man/completions opened the data directory"
    );
}
