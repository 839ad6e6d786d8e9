//! README's Python example of an application, run as it is printed: its
//! `start` sends a (test) browser through the real binary and the stub provider,
//! its `finish` checks the state and redeems the code at `/sso/token`. A change
//! to the broker that breaks the documented integration fails here.

use std::process::Command;

use super::binary::{broker_home, setup};
use super::APP_REDIRECT;
use crate::harness::sso_browser::Browser;
use crate::harness::stub_idp::{self, StubIdp};

/// The Python block after "The same in Python" in README.md.
fn readme_python() -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let after = readme
        .split_once("The same in Python")
        .expect("README.md has the Python example")
        .1;
    let block = after
        .split_once("```python\n")
        .expect("a ```python block")
        .1;
    block
        .split_once("```")
        .expect("the block ends")
        .0
        .to_owned()
}

/// Run `driver` after the README's code, with its constants set for this run.
fn python(example: &str, setup: &str, driver: &str, dir: &std::path::Path) -> String {
    let script = dir.join("app.py");
    std::fs::write(&script, format!("{example}\n{setup}\n{driver}\n")).unwrap();
    let out = Command::new("python3")
        .arg(&script)
        .output()
        .expect("python3 (the machine's; scripts/test.sh needs it too)");
    assert!(
        out.status.success(),
        "python3 failed:\n{}\n--- script ---\n{}",
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(&script).unwrap_or_default()
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn the_readme_python_example_signs_a_user_in() {
    let example = readme_python();
    let idp = StubIdp::start();
    let (home, _) = broker_home();
    let operator = home.run_ok(&["token", "create", "--operator"]);
    home.run_ok(&["domain", "add", super::DOMAIN]);
    let server = home.start();
    let creds = setup(&server, &operator, &idp);
    let base = server.client().base.clone();
    let work = tempfile::tempdir().unwrap();
    let session = work.path().join("session.json");
    let consts = format!(
        "BROKER, CLIENT_ID, CLIENT_SECRET, REDIRECT = {base:?}, {:?}, {:?}, {APP_REDIRECT:?}\n\
         SESSION = {:?}",
        creds.client_id,
        creds.client_secret,
        session.display().to_string()
    );
    // The "Sign in" button: the URL to send the browser to (the session kept on disk).
    let url = python(
        &example,
        &consts,
        &format!(
            "session = {{}}\nprint(start(session, {:?}))\njson.dump(session, open(SESSION, 'w'))",
            stub_idp::EMAIL
        ),
        work.path(),
    );
    assert!(url.starts_with(&format!("{base}/sso/authorize?")), "{url}");
    let mut browser = Browser::new();
    let landing = browser.follow_tcp(&base, &idp.origin(), &url);
    assert!(
        landing.url().starts_with(APP_REDIRECT) && landing.param("code").is_some(),
        "{landing:?}\n{}",
        browser.trace()
    );
    let query: std::collections::BTreeMap<&str, &str> = ["code", "state"]
        .iter()
        .filter_map(|k| landing.param(k).map(|v| (*k, v)))
        .collect();
    // The redirect_uri handler: the profile.
    let profile = python(
        &example,
        &consts,
        &format!(
            "session = json.load(open(SESSION))\n\
             print(json.dumps(finish(session, {})))",
            serde_json::to_string(&query).unwrap()
        ),
        work.path(),
    );
    let profile: serde_json::Value = serde_json::from_str(&profile).expect(&profile);
    assert_eq!(profile["email"], stub_idp::EMAIL, "{profile:#}");
    assert_eq!(profile["domain"], super::DOMAIN, "{profile:#}");
    assert!(profile["id"]
        .as_str()
        .is_some_and(|i| i.starts_with("usr_")));
}
