//! The command line's behaviour while a server runs and on errors.
//!
//! Through the real binary over real TCP, with the harness of `crate::harness`
//! (`Home`, `Server`, `Client`): every test gets its own temporary home.

use std::time::Instant;

use serde_json::Value;

use crate::harness::text::lower;
use crate::harness::{
    assert_one_line_failure, config_toml, Home, CONFIG_PATH, EXIT_TIMEOUT, PASSPHRASE,
};

// ---- 5. command line -------------------------------------------------------------------

#[test]
fn cli_commands_behave_while_serving_and_on_errors() {
    let started = Instant::now();
    let home = Home::new(Some(PASSPHRASE));

    let added = home.run_ok(&["domain", "add", "Acme.Test"]);
    let added: Value = serde_json::from_str(&added)
        .unwrap_or_else(|e| panic!("domain add printed no JSON object ({e}): {added:?}"));
    assert!(
        added["id"].is_u64() && added["domain"] == "acme.test" && added["created_at"].is_string(),
        "domain add printed {added}"
    );
    let token = home.run_ok(&["token", "create", "--domain", "acme.test"]);
    assert!(
        token.starts_with("ovt_") && !token.contains(char::is_whitespace),
        "token create printed {token:?}"
    );
    let list_before = home.run_ok(&["domain", "list"]);

    let mut server = home.start();
    // The running server holds data/: an offline write is refused, pointing to the API.
    let out = home.run(&["domain", "add", "x.test"]);
    let line = assert_one_line_failure("`domain add x.test` while serving", &out);
    assert!(
        lower(&line).contains("in use") && lower(&line).contains("admin api"),
        "`domain add x.test` while serving: the line should say the data directory is in use \
         and point to the admin API, got: {line:?}"
    );
    // The server is unaffected.
    let r = server.call("GET", "/readyz", None, None, None);
    assert_eq!(r.status, 200, "readyz after a refused offline command: {r}");
    let r = server.call("GET", CONFIG_PATH, Some(&token), None, None);
    assert_eq!(r.status, 404, "GET with no config yet: {r}");
    server.stop();

    // Nothing half-written by the refused command.
    let list = home.run_ok(&["domain", "list"]);
    let parsed: Value = serde_json::from_str(&list)
        .unwrap_or_else(|e| panic!("domain list printed no JSON ({e}): {list:?}"));
    let array = parsed
        .as_array()
        .unwrap_or_else(|| panic!("domain list printed no JSON array: {list}"));
    assert_eq!(array.len(), 1, "domain list: {list}");
    assert_eq!(array[0], added, "domain list: {list}");
    assert_eq!(list, list_before, "domain list changed");

    let out = home.run(&["token", "create", "--domain", "nosuch.test"]);
    let line = assert_one_line_failure("`token create --domain nosuch.test`", &out);
    assert!(lower(&line).contains("not found"), "{line:?}");

    let out = home.run(&["domain", "add", "not a domain"]);
    let line = assert_one_line_failure("`domain add \"not a domain\"`", &out);
    assert!(lower(&line).contains("domain"), "{line:?}");
    assert_eq!(
        home.run_ok(&["domain", "list"]),
        list_before,
        "domain list changed"
    );

    let tokens = home.run_ok(&["token", "list"]);
    let tokens: Value = serde_json::from_str(&tokens).unwrap();
    assert_eq!(
        tokens.as_array().map(Vec::len),
        Some(1),
        "token list: {tokens}"
    );
    assert!(
        !tokens.to_string().contains(&token),
        "token list shows the token"
    );

    // An unknown key in config.toml is refused and named; nothing is created.
    let bad = Home::empty(Some(PASSPHRASE));
    bad.write_config(&config_toml().replace("[storage]", "listen_backlogx = 1\n\n[storage]"));
    let out = bad.run(&["domain", "list"]);
    let line = assert_one_line_failure("an unknown key in config.toml", &out);
    assert!(
        line.contains("listen_backlogx"),
        "the unknown key is not named: {line:?}"
    );
    assert!(
        !bad.data_dir().exists(),
        "data/ was created despite a bad config"
    );

    // The same for an environment override of an unknown key.
    let out = home.run_with(
        None,
        &[("OIDCVAULT_SERVER__BINDD", "127.0.0.1:0")],
        &["domain", "list"],
        EXIT_TIMEOUT,
    );
    let line = assert_one_line_failure("OIDCVAULT_SERVER__BINDD", &out);
    assert!(
        lower(&line).contains("bindd"),
        "the unknown key is not named: {line:?}"
    );

    // A passphrase that is too short is refused, naming the master key.
    let short = Home::new(Some("short"));
    let out = short.run(&["domain", "list"]);
    let line = assert_one_line_failure("a short passphrase", &out);
    assert!(lower(&line).contains("master"), "{line:?}");
    assert!(
        !short.data_dir().exists(),
        "data/ was created with a short passphrase"
    );

    eprintln!(
        "cli_commands_behave_while_serving_and_on_errors: {:?}",
        started.elapsed()
    );
}

/// `app add|list|remove` through the real binary: JSON on stdout with the
/// secret once, one line on stderr for a failure, refused while a server holds
/// the data directory (which then serves what the commands stored).
#[test]
fn app_commands_add_list_remove_and_refuse_while_serving() {
    let home = Home::new(Some(PASSPHRASE));
    let operator = home.run_ok(&["token", "create", "--operator"]);
    let added = home.run_ok(&[
        "app",
        "add",
        "Billing portal",
        "--redirect-uri",
        "https://billing.example.com/cb",
        "--redirect-uri",
        "http://127.0.0.1:8080/cb",
    ]);
    let added: Value = serde_json::from_str(&added)
        .unwrap_or_else(|e| panic!("app add printed no JSON object ({e}): {added:?}"));
    let secret = added["client_secret"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        added["id"].is_u64()
            && added["name"] == "Billing portal"
            && added["client_id"]
                .as_str()
                .is_some_and(|c| c.starts_with("ova_"))
            && secret.starts_with("ovs_")
            && added["redirect_uris"]
                == serde_json::json!([
                    "https://billing.example.com/cb",
                    "http://127.0.0.1:8080/cb"
                ])
            && added["created_at"].is_string(),
        "app add printed {added}"
    );
    let id = added["id"].as_u64().unwrap().to_string();

    let list = home.run_ok(&["app", "list"]);
    let parsed: Value = serde_json::from_str(&list)
        .unwrap_or_else(|e| panic!("app list printed no JSON ({e}): {list:?}"));
    assert_eq!(parsed.as_array().map(Vec::len), Some(1), "app list: {list}");
    assert_eq!(
        parsed[0]["client_id"], added["client_id"],
        "app list: {list}"
    );
    assert!(!list.contains(&secret), "app list shows the secret: {list}");

    // Invalid input: one line naming the field, nothing stored.
    for (args, says) in [
        (
            vec![
                "app",
                "add",
                "X",
                "--redirect-uri",
                "http://x.example.com/cb",
            ],
            "redirect_uris",
        ),
        (
            vec![
                "app",
                "add",
                " ",
                "--redirect-uri",
                "https://x.example.com/cb",
            ],
            "name",
        ),
    ] {
        let out = home.run(&args);
        let line = assert_one_line_failure(&args.join(" "), &out);
        assert!(line.contains(says), "{args:?}: {line:?}");
    }
    let out = home.run(&["app", "add", "X"]);
    let line = assert_one_line_failure("`app add X` without --redirect-uri", &out);
    assert!(lower(&line).contains("redirect-uri"), "{line:?}");
    assert_eq!(home.run_ok(&["app", "list"]), list, "app list changed");

    let verify: Value = serde_json::from_str(&home.run_ok(&["verify"])).unwrap();
    assert_eq!(verify["apps"], 1, "verify: {verify}");

    // The server serves what the command stored, and holds data/ against it.
    let mut server = home.start();
    let served = server.expect(200, "GET", "/api/v1/admin/apps/", &operator, None, None);
    assert_eq!(served, parsed, "the API lists what `app list` printed");
    for args in [
        vec![
            "app",
            "add",
            "Y",
            "--redirect-uri",
            "https://y.example.com/cb",
        ],
        vec!["app", "list"],
        vec!["app", "remove", &id],
    ] {
        let out = home.run(&args);
        let line = assert_one_line_failure(&format!("`{}` while serving", args.join(" ")), &out);
        assert!(
            lower(&line).contains("in use") && lower(&line).contains("admin api"),
            "`{}` while serving: {line:?}",
            args.join(" ")
        );
    }
    server.stop();
    assert_eq!(home.run_ok(&["app", "list"]), list, "app list changed");

    let out = home.run(&["app", "remove", &id]);
    assert!(out.success(), "app remove\n{}", out.describe());
    assert!(out.stdout.trim().is_empty(), "{}", out.describe());
    assert_eq!(home.run_ok(&["app", "list"]), "[]");
    let out = home.run(&["app", "remove", &id]);
    let line = assert_one_line_failure("`app remove` of a removed app", &out);
    assert!(
        line.contains(&format!("no application with id {id}")),
        "{line:?}"
    );
}
