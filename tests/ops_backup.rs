//! Online backup under write load and to another file system, offline backup
//! and restore, and a restored backup's audit trail.
//!
//! Through the real binary over real TCP; the fixtures (tenants, versions of a
//! config, writer threads, key status and audit polls) are `crate::harness::ops`.

use std::path::Path;
use std::time::Instant;

use serde_json::{json, Value};

use crate::harness::ops::*;
use crate::harness::{assert_one_line_failure, lower, tail, CONFIG_PATH, EXIT_TIMEOUT};

// ---- 1. online backup ------------------------------------------------------------------

#[test]
fn online_backup_under_write_load_holds_every_acknowledged_write() {
    let started = Instant::now();
    let (home, operator) = operator_home();
    let mut server = home.start();
    let tenants = add_tenants(&server, &operator, "backup", LOAD_DOMAINS);
    let addr = addr_of(&server);
    let with_server: [(&str, &str); 2] = [
        (TOKEN_ENV, operator.as_str()),
        ("OIDCVAULT_SERVER__BIND", addr.as_str()),
    ];

    let load = Load::start(&server.client(), &tenants, "backup", LOAD_THREADS);
    load.wait_until(&server, "3 acknowledged writes per domain", |l| {
        l.iter().all(|d| d.acks.len() >= 3)
    });
    let dest = home.path().join("online-copy");
    let dest_arg = dest.to_str().unwrap();
    let backup_began = Instant::now();
    let out = home.run_with(None, &with_server, &["backup", dest_arg], EXIT_TIMEOUT);
    let backup_ended = Instant::now();
    assert!(
        out.success(),
        "`oidcvault backup` against the running server failed\n{}\n--- server stderr ---\n{}",
        out.describe(),
        tail(&server.log(), 6000)
    );
    // The writers went on during and after the backup.
    load.wait_until(&server, "2 writes per domain after the backup", |l| {
        l.iter().all(|d| d.acked_after(backup_ended) >= 2)
    });
    let ledgers = load.finish(&server);
    let during = ledgers
        .iter()
        .map(|l| {
            l.acks
                .iter()
                .filter(|(_, t)| *t > backup_began && *t < backup_ended)
                .count()
        })
        .sum::<usize>();
    eprintln!(
        "online backup took {:?}; {during} writes were acknowledged while it ran; {:?} writes in all",
        backup_ended - backup_began,
        ledgers.iter().map(|l| l.sent).collect::<Vec<_>>()
    );

    let printed = parse_json("backup", &out.stdout);
    assert_eq!(printed["path"], dest_arg, "backup printed {printed}");
    assert!(
        printed["records"].as_u64().is_some_and(|n| n > 0)
            && printed["name"].as_str().is_some_and(|n| !n.is_empty()),
        "backup printed {printed}"
    );
    assert!(
        dest.join("keyring").is_file(),
        "no keyring in the copy: {:?}",
        entries(&dest)
    );
    // The server wrote under storage.backup_dir; the CLI moved it out: nothing left.
    let leftovers = entries(&home.path().join("backups"));
    assert!(leftovers.is_empty(), "left in backup_dir: {leftovers:?}");

    // Refusals while the server runs: one line each, nothing written.
    let occupied = home.path().join("occupied");
    std::fs::create_dir(&occupied).unwrap();
    std::fs::write(occupied.join("keep.txt"), "keep").unwrap();
    let out = home.run_with(
        None,
        &with_server,
        &["backup", occupied.to_str().unwrap()],
        EXIT_TIMEOUT,
    );
    let line = assert_one_line_failure("backup into a non-empty folder", &out);
    assert!(lower(&line).contains("not empty"), "{line:?}");
    assert_eq!(entries(&occupied), vec!["keep.txt".to_owned()]);
    let elsewhere = home.path().join("elsewhere");
    let out = home.run_with(
        None,
        &[("OIDCVAULT_SERVER__BIND", addr.as_str())],
        &["backup", elsewhere.to_str().unwrap()],
        EXIT_TIMEOUT,
    );
    let line = assert_one_line_failure("backup without OIDCVAULT_TOKEN while serving", &out);
    assert!(
        line.contains(TOKEN_ENV) && lower(&line).contains("running server"),
        "the line should name {TOKEN_ENV} and the running server: {line:?}"
    );
    let out = home.run_with(
        None,
        &[
            (TOKEN_ENV, tenants[0].token.as_str()),
            ("OIDCVAULT_SERVER__BIND", addr.as_str()),
        ],
        &["backup", elsewhere.to_str().unwrap()],
        EXIT_TIMEOUT,
    );
    let line = assert_one_line_failure("backup with a domain token", &out);
    assert!(line.contains("403"), "{line:?}");
    assert!(!line.contains(&tenants[0].token), "{line:?}");
    assert!(!elsewhere.exists());
    assert!(entries(&home.path().join("backups")).is_empty());

    // The admin API writes under storage.backup_dir only, whatever the request says.
    let evil = home.path().join("evil");
    let evil_arg = evil.to_str().unwrap();
    let made = server.expect(
        201,
        "POST",
        &format!("/api/v1/admin/backup?path={evil_arg}&dest={evil_arg}"),
        &operator,
        None,
        Some(&json!({ "path": evil_arg, "dest": evil_arg, "name": "../evil" })),
    );
    let made_path = Path::new(made["path"].as_str().unwrap_or_default());
    assert!(
        made_path.starts_with(home.path().join("backups")) && made_path.is_dir(),
        "the backup was written to {made}"
    );
    assert!(!evil.exists(), "a path from the request was used");
    assert_eq!(entries(&home.path().join("backups")).len(), 1);
    assert_eq!(
        server
            .call(
                "POST",
                "/api/v1/admin/backup",
                Some(&tenants[0].token),
                None,
                None
            )
            .status,
        403,
        "a domain token asked for a backup"
    );

    // One audit event per backup, by the operator token, and one log line each.
    let events = audit_all(&server, &operator, "");
    let backups = events_with_action(&events, "backup");
    assert_eq!(backups.len(), 2, "backup events: {backups:?}");
    for b in &backups {
        assert_eq!(b["actor"], operator_token_id(&server, &operator), "{b}");
    }
    server.stop();
    let log = server.log();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("oidcvault::audit") && l.contains("action=backup "))
        .collect();
    assert_eq!(lines.len(), 2, "audit log lines of the backups: {lines:#?}");

    // The copy is a data directory: same passphrase, a config pointing at it.
    let copy = home_for_data(&dest);
    let counts = verify_ok(&copy);
    assert_verify_counts(
        &counts,
        LOAD_DOMAINS as u64,
        LOAD_DOMAINS as u64,
        LOAD_DOMAINS as u64 + 1,
    );
    let mut replica = copy.start();
    let mut writes_in_copy = 0u64;
    for (t, l) in tenants.iter().zip(&ledgers) {
        let got = replica.expect(200, "GET", CONFIG_PATH, &t.token, None, None);
        let seq = seq_of(&got).unwrap_or_else(|| panic!("{}: no sequence in {got}", t.name));
        let must = l
            .last_acked_before(backup_began)
            .expect("writes before the backup");
        assert!(
            seq >= must && seq <= l.sent,
            "{}: the copy holds write {seq}, but write {must} was acknowledged before the backup \
             began (and {} were sent)\nledger: {:?}",
            t.name,
            l.sent,
            l.acks.iter().map(|a| a.0).collect::<Vec<_>>()
        );
        let want = Version::new("backup", &t.name, seq);
        assert!(want.matches(&got), "{}: {got} is not {want:?}", t.name);
        writes_in_copy += u64::from(seq);
    }
    // Each write left one audit event: 1 operator token + a domain and a token per
    // tenant + every write the copy holds (a domain's writes apply in sequence).
    assert_eq!(
        counts["audit_events"],
        json!(1 + 2 * LOAD_DOMAINS as u64 + writes_in_copy),
        "audit events in the copy: {counts}"
    );
    replica.stop();
    eprintln!(
        "online_backup_under_write_load_holds_every_acknowledged_write: {:?}",
        started.elapsed()
    );
}

/// The server's backup_dir on another file system than DEST: the CLI cannot
/// rename the copy into place and must copy it whole.
#[test]
fn online_backup_to_another_file_system() {
    use std::os::unix::fs::MetadataExt;
    let started = Instant::now();
    let (home, operator) = operator_home();
    let shm = Path::new("/dev/shm");
    let other_fs = std::fs::metadata(shm)
        .is_ok_and(|m| m.is_dir() && m.dev() != std::fs::metadata(home.path()).unwrap().dev());
    if !other_fs {
        eprintln!(
            "SKIPPED online_backup_to_another_file_system: no /dev/shm on another file \
             system, so a backup across file systems (copied whole, not renamed) was not checked"
        );
        return;
    }
    let backup_dir = tempfile::Builder::new()
        .prefix("oidcvault-ops-")
        .tempdir_in(shm)
        .unwrap();
    let backup_dir_arg = backup_dir.path().to_str().unwrap().to_owned();
    let mut server = home.start_with(None, &[("OIDCVAULT_STORAGE__BACKUP_DIR", &backup_dir_arg)]);
    let tenants = add_tenants(&server, &operator, "xfs", 2);
    let originals = write_all(&server, &tenants, "xfs", 1);
    let dest = home.path().join("copy");
    // The command moves only a folder in its own storage.backup_dir: it is
    // configured like the server.
    let out = home.run_with(
        None,
        &[
            (TOKEN_ENV, operator.as_str()),
            ("OIDCVAULT_SERVER__BIND", addr_of(&server).as_str()),
            ("OIDCVAULT_STORAGE__BACKUP_DIR", &backup_dir_arg),
        ],
        &["backup", dest.to_str().unwrap()],
        EXIT_TIMEOUT,
    );
    assert!(out.success(), "{}", out.describe());
    assert_eq!(
        parse_json("backup", &out.stdout)["path"],
        dest.to_str().unwrap()
    );
    assert!(
        entries(backup_dir.path()).is_empty(),
        "left in backup_dir: {:?}",
        entries(backup_dir.path())
    );
    server.stop();
    let copy = home_for_data(&dest);
    assert_verify_counts(&verify_ok(&copy), 2, 2, 3);
    let mut replica = copy.start();
    assert_configs("the copy", &replica, &tenants, &originals);
    replica.stop();
    eprintln!(
        "online_backup_to_another_file_system: {:?}",
        started.elapsed()
    );
}

#[test]
fn offline_backup_and_restore_by_replacing_data() {
    let started = Instant::now();
    let (home, operator) = operator_home();
    let mut server = home.start();
    let tenants = add_tenants(&server, &operator, "restore", 3);
    write_all(&server, &tenants, "restore", 1);
    let originals = write_all(&server, &tenants, "restore", 2);
    server.stop();

    // Offline: no token needed, written directly.
    let dest = home.path().join("offline-copy");
    let dest_arg = dest.to_str().unwrap();
    let printed = parse_json("backup", &home.run_ok(&["backup", dest_arg]));
    assert_eq!(printed["path"], dest_arg, "backup printed {printed}");
    assert!(
        printed["records"].as_u64().is_some_and(|n| n > 0),
        "{printed}"
    );
    let out = home.run(&["backup", dest_arg]);
    let line = assert_one_line_failure("offline backup into a non-empty folder", &out);
    assert!(lower(&line).contains("not empty"), "{line:?}");
    let counts = verify_ok(&home_for_data(&dest));
    assert_verify_counts(&counts, 3, 3, 4);
    // operator token, 3 domains, 3 tokens, 6 writes.
    assert_eq!(counts["audit_events"], 13, "{counts}");

    // Changes after the backup, which the restore must undo.
    let mut server = home.start();
    write_all(&server, &tenants[..1], "restore", 3);
    server.add_domain(&operator, "after-backup.test");
    server.stop();

    // The README's restore: stop the server, replace data/ with the copy, start.
    std::fs::remove_dir_all(home.data_dir()).unwrap();
    std::fs::rename(&dest, home.data_dir()).unwrap();
    let mut server = home.start();
    assert_configs("after the restore", &server, &tenants, &originals);
    let domains = server.expect(200, "GET", DOMAINS, &operator, None, None);
    let names: Vec<&str> = domains
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|d| d["domain"].as_str())
        .collect();
    assert_eq!(names, ["restore0.test", "restore1.test", "restore2.test"]);
    server.stop();
    verify_ok(&home);
    eprintln!(
        "offline_backup_and_restore_by_replacing_data: {:?}",
        started.elapsed()
    );
}

/// A restored backup keeps its audit trail whole: events written after the
/// restore are appended after the copied ones and overwrite none of them.
#[test]
fn a_restored_backup_appends_to_its_audit_trail() {
    let started = Instant::now();
    let (home, operator) = operator_home();
    // Several processes open the store before the backup (each reopening moves
    // sled's own id generator).
    home.run_ok(&["domain", "add", "cli0.test"]);
    home.run_ok(&["domain", "add", "cli1.test"]);
    let mut server = home.start();
    let tenants = add_tenants(&server, &operator, "trail", 2);
    write_all(&server, &tenants, "trail", 1);
    let before = audit_all(&server, &operator, "");
    let dest = home.path().join("copy");
    let out = home.run_with(
        None,
        &[
            (TOKEN_ENV, operator.as_str()),
            ("OIDCVAULT_SERVER__BIND", addr_of(&server).as_str()),
        ],
        &["backup", dest.to_str().unwrap()],
        EXIT_TIMEOUT,
    );
    assert!(out.success(), "{}", out.describe());
    server.stop();

    std::fs::remove_dir_all(home.data_dir()).unwrap();
    std::fs::rename(&dest, home.data_dir()).unwrap();
    for round in 0..2 {
        let mut server = home.start();
        server.add_domain(&operator, &format!("restored{round}.test"));
        write_all(&server, &tenants, "trail", 2 + round);
        server.stop();
    }
    let mut server = home.start();
    let after = audit_all(&server, &operator, "");
    server.stop();
    let key = |e: &Value| {
        format!(
            "{} {} {} {}",
            e["at"], e["action"], e["domain"], e["detail"]
        )
    };
    let show = |events: &[Value]| events.iter().map(key).collect::<Vec<_>>().join("\n");
    // 2 rounds of (1 domain + 2 writes).
    assert_eq!(
        after.len(),
        before.len() + 6,
        "the restored store's audit trail:\n{}\n--- the copied trail ---\n{}",
        show(&after),
        show(&before)
    );
    assert_eq!(
        show(&after[..before.len()]),
        show(&before),
        "the copied events are not all there, first and in order"
    );
    let ids: Vec<u64> = after.iter().map(|e| e["id"].as_u64().unwrap()).collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "ids not increasing: {ids:?}"
    );
    eprintln!(
        "a_restored_backup_appends_to_its_audit_trail: {:?}",
        started.elapsed()
    );
}
