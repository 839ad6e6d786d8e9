//! Passphrase change interrupted at every step: exactly one of the two
//! passphrases opens the store.
//!
//! Through the real binary over real TCP; the fixtures (tenants, versions of a
//! config, writer threads, key status and audit polls) are `crate::harness::ops`.
//!
//! Crashes are provoked with the binary's test hook `OIDCVAULT_FAILPOINT=<name>`,
//! which makes the process exit with code 86 at that point. The hook exists in
//! debug builds only (what `cargo test` builds); under `cargo test --release`
//! the tests that need it are ignored, and scripts/test.sh checks that the
//! release binary does not hold it.

use std::path::Path;
use std::time::Instant;

use serde_json::Value;

use crate::harness::ops::*;
use crate::harness::{
    assert_one_line_failure, assert_refused_for_master_key, copy_dir, lower, snapshot,
    snapshot_diff, Home, EXIT_TIMEOUT, OTHER_PASSPHRASE, PASSPHRASE, REFUSE_TIMEOUT,
};

// ---- 4. passphrase change ------------------------------------------------------------

/// `domain list` with `passphrase`: its output.
fn domain_list_with(home: &Home, passphrase: &str) -> crate::harness::Output {
    home.run_with(
        Some(Some(passphrase)),
        &[],
        &["domain", "list"],
        REFUSE_TIMEOUT,
    )
}

/// Exactly one of OLD / NEW opens the store, `opens`; the other is refused as a
/// wrong master key without changing a byte; the one that opens serves every
/// config.
fn assert_exactly_one_opens(
    what: &str,
    home: &Home,
    opens: &str,
    tenants: &[Tenant],
    originals: &[Value],
) {
    let refused = if opens == PASSPHRASE {
        OTHER_PASSPHRASE
    } else {
        PASSPHRASE
    };
    let name = |p: &str| if p == PASSPHRASE { "OLD" } else { "NEW" };
    let out = domain_list_with(home, opens);
    assert!(
        out.success(),
        "{what}: {} should open the store\n{}",
        name(opens),
        out.describe()
    );
    let list = parse_json("domain list", &out.stdout);
    assert_eq!(list.as_array().map(Vec::len), Some(tenants.len()), "{list}");

    let before = snapshot(&home.data_dir());
    let out = domain_list_with(home, refused);
    assert_refused_for_master_key(
        &format!("{what}: {}", name(refused)),
        &out,
        &[PASSPHRASE, OTHER_PASSPHRASE],
    );
    assert!(
        lower(&out.stderr).contains("wrong master key"),
        "{what}: {} refused without the wrong-master-key message\n{}",
        name(refused),
        out.describe()
    );
    let line = assert_one_line_failure(&format!("{what}: {}", name(refused)), &out);
    assert!(!line.is_empty());
    let diff = snapshot_diff(&before, &snapshot(&home.data_dir()));
    assert!(diff.is_empty(), "{what}: the refused open changed {diff:?}");

    let counts = home.run_with(Some(Some(opens)), &[], &["verify"], EXIT_TIMEOUT);
    assert!(counts.success(), "{what}: verify\n{}", counts.describe());
    let counts = parse_json("verify", &counts.stdout);
    assert_verify_counts(
        &counts,
        tenants.len() as u64,
        tenants.len() as u64,
        tenants.len() as u64 + 1,
    );
    let mut server = home.start_with(Some(Some(opens)), &[]);
    assert_configs(what, &server, tenants, originals);
    server.stop();
}

#[test]
#[cfg_attr(
    not(debug_assertions),
    ignore = "the failpoint hook exists in debug builds only (src/vault/keys.rs)"
)]
fn passphrase_change_interrupted_at_every_step_leaves_exactly_one_that_opens() {
    let started = Instant::now();
    let (template, operator) = operator_home();
    let mut server = template.start();
    let tenants = add_tenants(&server, &operator, "pass", 3);
    let originals = write_all(&server, &tenants, "pass", 1);
    server.stop();

    for (step, failpoint) in KEYRING_FAILPOINTS.iter().enumerate() {
        let what = format!("change-passphrase stopped at {failpoint}");
        let home = Home::new(Some(PASSPHRASE));
        copy_dir(&template.data_dir(), &home.data_dir());
        let out = home.run_with(
            None,
            &[
                (NEW_PASSPHRASE_ENV, OTHER_PASSPHRASE),
                (FAILPOINT, failpoint),
            ],
            &["key", "change-passphrase"],
            EXIT_TIMEOUT,
        );
        assert_eq!(
            out.status.and_then(|s| s.code()),
            Some(FAILPOINT_EXIT),
            "{what}: no failpoint exit\n{}",
            out.describe()
        );
        let opens = if step < 2 {
            PASSPHRASE
        } else {
            OTHER_PASSPHRASE
        };
        assert_exactly_one_opens(&what, &home, opens, &tenants, &originals);
    }

    // Not interrupted: NEW opens, OLD is refused, and no record was rewritten.
    let home = Home::new(Some(PASSPHRASE));
    copy_dir(&template.data_dir(), &home.data_dir());
    let records_before = snapshot(&home.data_dir());
    let out = home.run_with(
        None,
        &[(NEW_PASSPHRASE_ENV, OTHER_PASSPHRASE)],
        &["key", "change-passphrase"],
        EXIT_TIMEOUT,
    );
    assert!(out.success(), "change-passphrase\n{}", out.describe());
    assert!(
        !out.stderr.contains(PASSPHRASE) && !out.stderr.contains(OTHER_PASSPHRASE),
        "{}",
        out.describe()
    );
    let changed: Vec<String> = snapshot_diff(&records_before, &snapshot(&home.data_dir()))
        .into_iter()
        .filter(|d| !d.starts_with("changed: keyring ") && !d.contains(" snap."))
        .collect();
    // No record rewritten: besides the keyring only sled's own snapshot file (which
    // any open and close rewrites) may differ.
    assert!(
        changed.is_empty(),
        "change-passphrase changed more than the keyring: {changed:?}"
    );
    assert_ne!(
        records_before.get(Path::new("keyring")),
        snapshot(&home.data_dir()).get(Path::new("keyring")),
        "the keyring file did not change"
    );
    assert_exactly_one_opens(
        "change-passphrase completed",
        &home,
        OTHER_PASSPHRASE,
        &tenants,
        &originals,
    );

    // A new passphrase that is too short: refused, nothing changed.
    let home = Home::new(Some(PASSPHRASE));
    copy_dir(&template.data_dir(), &home.data_dir());
    let keyring_before = std::fs::read(home.data_dir().join("keyring")).unwrap();
    let out = home.run_with(
        None,
        &[(NEW_PASSPHRASE_ENV, "short")],
        &["key", "change-passphrase"],
        EXIT_TIMEOUT,
    );
    let line = assert_one_line_failure("a too-short new passphrase", &out);
    assert!(
        lower(&line).contains("shorter") && lower(&line).contains("nothing"),
        "{line:?}"
    );
    assert_eq!(
        std::fs::read(home.data_dir().join("keyring")).unwrap(),
        keyring_before,
        "the keyring changed"
    );
    let out = domain_list_with(&home, PASSPHRASE);
    assert!(
        out.success(),
        "OLD after a refused change\n{}",
        out.describe()
    );
    eprintln!(
        "passphrase_change_interrupted_at_every_step_leaves_exactly_one_that_opens: {:?}",
        started.elapsed()
    );
}
