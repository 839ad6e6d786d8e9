//! `oidcvault verify`: it names every record that fails to open, a config copied
//! under another domain, the first broken audit event, and legacy events.
//!
//! Through the real binary over real TCP; the fixtures (tenants, versions of a
//! config, writer threads, key status and audit polls) are `crate::harness::ops`.

use std::time::Instant;

use serde_json::{json, Value};

use crate::harness::ops::*;
use crate::harness::{lower, Home, PASSPHRASE};

#[test]
fn verify_names_every_record_that_fails_to_open() {
    let started = Instant::now();
    let (home, operator) = operator_home();
    let mut server = home.start();
    let tenants = add_tenants(&server, &operator, "broken", 3);
    let written = write_all(&server, &tenants, "broken", 1);
    server.stop();
    let keyring = home.data_dir().join("keyring");
    let before_rotation = std::fs::read(&keyring).unwrap();
    home.run_ok(&["key", "rotate"]);
    // The keyring from before the rotation lacks the term every secret is under now.
    std::fs::write(&keyring, &before_rotation).unwrap();
    let out = home.run(&["verify"]);
    assert!(
        out.failed(),
        "verify passed with a keyring that opens no secret\n{}",
        out.describe()
    );
    let printed = parse_json("verify", &out.stdout);
    assert_eq!(
        (
            &printed["configs"],
            &printed["secrets_opened"],
            &printed["failures"]
        ),
        (&json!(3), &json!(0), &json!(3)),
        "verify printed {printed}"
    );
    for (t, v) in tenants.iter().zip(&written) {
        let (domain, record) = (&v["enterprise_domain"], &v["id"]);
        assert!(
            out.stderr
                .lines()
                .any(|l| l.contains(&format!("domain {domain}"))
                    && l.contains(&format!("record {record}"))),
            "no line names {} (domain {domain}, record {record})\n{}",
            t.name,
            out.describe()
        );
        assert!(!out
            .stderr
            .contains(&Version::new("broken", &t.name, 1).secret));
    }
    let last = out.stderr.lines().last().unwrap_or_default();
    assert!(
        last.contains('3') && lower(last).contains("failed"),
        "the last line should count the failures: {last:?}"
    );
    eprintln!(
        "verify_names_every_record_that_fails_to_open: {:?}",
        started.elapsed()
    );
}

// ---- the audit chain and the key a record is stored under (issue 11 items 6, 8) -------

/// The data directory's sled store, opened directly (the server must be stopped):
/// what an attacker with write access to `data/` can do.
fn raw_store(home: &Home) -> sled::Db {
    sled::Config::new()
        .path(home.data_dir())
        .cache_capacity(8 << 20)
        .open()
        .unwrap()
}

fn key_id(k: &[u8]) -> u64 {
    u64::from_be_bytes(k.try_into().unwrap())
}

/// A config record copied, bytes and all, under another domain's key opens (its
/// envelope is bound to the domain it names), so `verify` must judge it by the
/// key it is stored under; re-encryption must not re-seal it for either domain.
#[test]
fn verify_names_a_config_copied_under_another_domain_and_rotation_leaves_it() {
    let (home, operator) = operator_home();
    let mut server = home.start();
    let tenants = add_tenants(&server, &operator, "copied", 2);
    let written = write_all(&server, &tenants, "copied", 1);
    server.stop();
    let a = written[0]["enterprise_domain"].as_u64().unwrap();
    let b = written[1]["enterprise_domain"].as_u64().unwrap();
    let copied = {
        let db = raw_store(&home);
        let configs = db.open_tree("configs").unwrap();
        let bytes = configs.get(a.to_be_bytes()).unwrap().unwrap();
        configs.insert(b.to_be_bytes(), bytes.clone()).unwrap();
        db.flush().unwrap();
        bytes
    };
    let out = home.run(&["verify"]);
    assert!(
        out.failed(),
        "verify passed a copied record\n{}",
        out.describe()
    );
    assert!(
        out.stderr
            .lines()
            .any(|l| l.contains(&format!("stored under domain {b}"))
                && l.contains(&format!("names domain {a}"))),
        "no line names the copy\n{}",
        out.describe()
    );
    // A rotation re-encrypts the genuine record but not the copy, and keeps the
    // term the copy is under.
    home.run_ok(&["key", "rotate"]);
    let db = raw_store(&home);
    let configs = db.open_tree("configs").unwrap();
    assert_eq!(configs.get(b.to_be_bytes()).unwrap().unwrap(), copied);
    assert_ne!(configs.get(a.to_be_bytes()).unwrap().unwrap(), copied);
    drop(configs);
    drop(db);
    let out = home.run(&["verify"]);
    assert!(out.failed(), "{}", out.describe());
    assert!(
        out.stderr.contains(&format!("stored under domain {b}")),
        "{}",
        out.describe()
    );
}

/// `oidcvault verify` checks the audit chain and names the first event that
/// breaks it: one edited on disk, then the end of the trail cut off.
#[test]
fn verify_names_the_first_broken_audit_event() {
    let (home, operator) = operator_home();
    let mut server = home.start();
    let tenants = add_tenants(&server, &operator, "chain", 2);
    write_all(&server, &tenants, "chain", 1);
    server.stop();
    let clean = verify_ok(&home);
    assert_eq!(clean["audit_broken_at"], Value::Null, "{clean}");
    assert_eq!(clean["audit_events"], 7, "{clean}");
    // Edit the first token.create event: same length, so it still decodes.
    let (edited, original) = {
        let db = raw_store(&home);
        let audit = db.open_tree("audit").unwrap();
        let (k, v) = audit
            .iter()
            .map(Result::unwrap)
            .find(|(_, v)| v.windows(12).any(|w| w == b"token.create"))
            .unwrap();
        let at = v.windows(12).position(|w| w == b"token.create").unwrap();
        let mut forged = v.to_vec();
        forged[at + 9] = b'4';
        audit.insert(&k, forged).unwrap();
        db.flush().unwrap();
        (key_id(&k), (k, v))
    };
    let out = home.run(&["verify"]);
    assert!(
        out.failed(),
        "verify passed an edited event\n{}",
        out.describe()
    );
    assert_eq!(parse_json("verify", &out.stdout)["audit_broken_at"], edited);
    assert!(
        out.stderr
            .contains(&format!("audit trail broken at event {edited}")),
        "{}",
        out.describe()
    );
    // Put it back, then cut the last event off.
    let last = {
        let db = raw_store(&home);
        let audit = db.open_tree("audit").unwrap();
        audit.insert(original.0, original.1).unwrap();
        let (k, _) = audit.last().unwrap().unwrap();
        audit.remove(&k).unwrap();
        db.flush().unwrap();
        key_id(&k)
    };
    let out = home.run(&["verify"]);
    assert!(
        out.failed(),
        "verify passed a cut trail\n{}",
        out.describe()
    );
    assert_eq!(parse_json("verify", &out.stdout)["audit_broken_at"], last);
}

/// A trail written before the chain (version 1 events, no MAC, no anchor): verify
/// reports its events as unauthenticated legacy ones, not as a failure, and the
/// chain starts after the last of them.
#[test]
fn verify_reports_legacy_audit_events_and_chains_after_them() {
    let home = Home::new(Some(PASSPHRASE));
    home.run_ok(&["domain", "add", "before.test"]);
    {
        let db = raw_store(&home);
        let audit = db.open_tree("audit").unwrap();
        audit.clear().unwrap();
        db.open_tree("meta").unwrap().remove(b"audit/head").unwrap();
        for id in 1u64..=3 {
            let event = oidcvault::store::AuditRecord {
                at: id as i64,
                actor: None,
                action: "domain.create".into(),
                domain_id: Some(1),
                domain: Some("before.test".into()),
                fields: vec![],
                secret_fingerprint: None,
                detail: None,
            };
            let mut bytes = vec![1u8];
            bytes.extend(bincode::encode_to_vec(&event, bincode::config::standard()).unwrap());
            audit.insert(id.to_be_bytes(), bytes).unwrap();
        }
        db.flush().unwrap();
    }
    home.run_ok(&["domain", "add", "after.test"]);
    let out = home.run(&["verify"]);
    assert!(!out.failed(), "{}", out.describe());
    let printed = parse_json("verify", &out.stdout);
    assert_eq!(
        (&printed["audit_events"], &printed["audit_legacy_events"]),
        (&json!(4), &json!(3)),
        "{printed}"
    );
    assert!(
        out.stderr.contains("unauthenticated legacy events: 3"),
        "{}",
        out.describe()
    );
    // A legacy event after the chain began is a failure.
    {
        let db = raw_store(&home);
        let audit = db.open_tree("audit").unwrap();
        let v = audit.get(1u64.to_be_bytes()).unwrap().unwrap();
        audit.insert(9u64.to_be_bytes(), v).unwrap();
        db.flush().unwrap();
    }
    let out = home.run(&["verify"]);
    assert!(out.failed(), "{}", out.describe());
    assert_eq!(parse_json("verify", &out.stdout)["audit_broken_at"], 9);
}
