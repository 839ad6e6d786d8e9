//! Progress of the long offline commands through the real binary, stderr not a
//! terminal: one line per phase on stderr, stdout unchanged (one JSON document).

use crate::harness::ops::{add_tenants, operator_home, parse_json, write_all};

/// Every line of `stderr` that starts with `<command>: `, in order.
fn phase_lines<'a>(stderr: &'a str, command: &str) -> Vec<&'a str> {
    let prefix = format!("{command}: ");
    stderr.lines().filter(|l| l.starts_with(&prefix)).collect()
}

#[test]
fn verify_rotate_and_backup_print_a_line_per_phase() {
    let (home, operator) = operator_home();
    let mut server = home.start();
    let tenants = add_tenants(&server, &operator, "progress", 3);
    write_all(&server, &tenants, "p", 1);
    server.stop();

    let out = home.run(&["verify"]);
    assert!(out.success(), "{}", out.describe());
    let v = parse_json("verify stdout", &out.stdout);
    let events = v["audit_events"].as_u64().unwrap();
    assert_eq!(
        phase_lines(&out.stderr, "verify"),
        [
            "verify: domains checked (3)".to_owned(),
            "verify: configs checked (3, 3 secrets opened)".to_owned(),
            "verify: tokens and applications checked (4 tokens, 0 applications)".to_owned(),
            format!("verify: audit chain checked ({events} events)"),
        ],
        "{}",
        out.describe()
    );

    let out = home.run(&["key", "rotate"]);
    assert!(out.success(), "{}", out.describe());
    let status = parse_json("key rotate stdout", &out.stdout);
    let term = status["active_term"].as_u64().unwrap();
    assert_eq!(
        phase_lines(&out.stderr, "key rotate"),
        [
            format!("key rotate: new term {term} active"),
            "key rotate: secrets re-encrypted (3)".to_owned(),
        ],
        "{}",
        out.describe()
    );

    let dest = home.path().join("copy");
    let out = home.run(&["backup", dest.to_str().unwrap()]);
    assert!(out.success(), "{}", out.describe());
    let info = parse_json("backup stdout", &out.stdout);
    let (records, bytes) = (
        info["records"].as_u64().unwrap(),
        info["bytes"].as_u64().unwrap(),
    );
    let lines = phase_lines(&out.stderr, "backup");
    assert_eq!(lines.len(), 2, "{}", out.describe());
    assert!(
        lines[0].starts_with("backup: consistent state read ("),
        "{lines:?}"
    );
    assert_eq!(
        lines[1],
        format!("backup: records copied and synced ({records} records, {bytes} bytes)")
    );
}
