//! `bench signin`: sign-ins per second through the broker (authorize, the IdP,
//! callback, the application's token request) against a stub IdP on loopback
//! (`idp.rs`, its own process, fixed key), the CPU the broker spends per
//! sign-in beside the IdP's, and the baseline measured in the same run: the same
//! browsers doing only the IdP round trips (authorize + token exchange), no
//! broker. Sign-ins / round trips is what the broker costs a user's browser in
//! throughput; broker CPU / IdP CPU what it costs the machine.
//!
//! Setup goes through the real binary and its API, as an operator would: an
//! operator token (`oidcvault token create --operator`), the domain, its OIDC
//! config by discovery URL (fetched by the server from the stub), the
//! application (`POST /api/v1/admin/apps/`). oidcvault runs with the shipped
//! defaults but for `server.public_url` (its own loopback address), outbound
//! http to 127.0.0.1 allowed, and the per-address authorize limit lifted (every
//! browser here comes from 127.0.0.1).

use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{json, Value};

use crate::browser::{self, Browser, Ctx, Tally, STEP_NAMES};
use crate::idp::{self, Keys};
use crate::signin_report::{markdown, summarize};
use crate::util::{self, Server};
use crate::Args;

const DOMAIN: &str = "bench-signin.example.com";
const IDP_CLIENT_ID: &str = "oidcvault-bench";
const APP_REDIRECT_URI: &str = "http://127.0.0.1/bench-app/callback";
/// What browsers loop: whole sign-ins, or the IdP round trips alone (the baseline).
pub const KINDS: [&str; 2] = ["signin", "idp_only"];

/// `bench signin-idp`: the stub IdP process.
pub fn serve_idp(args: &Args) -> Result<(), String> {
    idp::serve(
        idp::Settings {
            client_id: args.get("client-id", IDP_CLIENT_ID.to_owned())?,
            client_secret: std::env::var("BENCH_IDP_CLIENT_SECRET")
                .map_err(|_| "BENCH_IDP_CLIENT_SECRET is not set")?,
            domain: args.get("domain", DOMAIN.to_owned())?,
        },
        args.get("workers", 0)?,
    )
}

pub fn run(args: &Args) -> Result<(), String> {
    let duration: u64 = args.get("duration", 5)?;
    let conns = args.list("conns", &[1, 8, 32])?;
    let rounds: usize = args.get("rounds", 2)?;
    let users: u64 = args.get("users", 1000)?;
    let idp_workers: usize = args.get("idp-workers", 0)?;
    let log_level: String = args.get("log-level", "info".to_owned())?;
    let max_fetches: u32 = args.get("max-concurrent-fetches", 16)?;
    let (results_dir, work) = util::dirs("signin")?;
    // The browsers run in this process: the same priority as the servers.
    if let Err(e) = rustix::process::nice(util::nice()) {
        eprintln!("   (could not renice the browsers: {e})");
    }
    let machine = util::machine();
    println!(
        "== sign-in benchmark: {duration} s per run, connections {conns:?}, {rounds} round(s)"
    );
    println!("   machine: {machine}");
    let crypto = es256_costs()?;
    println!("   ES256 in this process: {crypto}");

    // The stub IdP, its own process.
    let idp_secret = idp::random_value();
    let mut cmd = util::command(std::env::current_exe().map_err(|e| e.to_string())?);
    cmd.args([
        "signin-idp",
        "--client-id",
        IDP_CLIENT_ID,
        "--domain",
        DOMAIN,
    ])
    .args(["--workers", &idp_workers.to_string()])
    .env("BENCH_IDP_CLIENT_SECRET", &idp_secret);
    let stub = Server::spawn("stub_idp", cmd, &work.join("idp.log"), None)?;
    let issuer = format!("http://{}", stub.addr);

    // oidcvault: an operator token first (the CLI, store not yet in use).
    let addr = util::free_addr()?;
    let home = work.join("oidcvault");
    std::fs::create_dir_all(&home).map_err(|e| e.to_string())?;
    let config_path = home.join("config.toml");
    util::write(&config_path, &server_config(&addr, max_fetches))?;
    let operator = operator_token(&config_path)?;
    let mut cmd = util::command(util::binary("oidcvault")?);
    cmd.arg("--config")
        .arg(&config_path)
        .arg("serve")
        .env("OIDCVAULT_MASTER_PASSPHRASE", util::PASSPHRASE)
        .env("OIDCVAULT_LOG__LEVEL", &log_level);
    let server = Server::spawn_at(
        "oidcvault",
        cmd,
        &work.join("oidcvault.log"),
        Some("/readyz"),
        Some(addr.clone()),
    )?;
    let ctx =
        setup(&server, &operator, &issuer, &idp_secret, users).map_err(|e| with_log(&server, e))?;
    check_stub(&ctx)?;
    // One sign-in alone, checked end to end, before any load.
    let first = Browser::new()
        .sign_in(&ctx)
        .map_err(|e| with_log(&server, format!("the first sign-in failed: {e}")))?;
    println!("   first sign-in ok, steps (µs) {first:?}");

    // Warm both paths up (results discarded).
    for kind in KINDS {
        measure(&ctx, kind, 8, 2, &server, &stub);
    }
    let mut runs = Vec::new();
    for round in 0..rounds {
        let mut levels = conns.clone();
        if round % 2 == 1 {
            levels.reverse();
        }
        for &c in &levels {
            let mut order = KINDS.to_vec();
            order.rotate_left(round % 2);
            for kind in order {
                let mut v = measure(&ctx, kind, c, duration, &server, &stub);
                v["round"] = json!(round);
                println!(
                    "   {kind:<8} c={c:<3} {:>7.1}/s  p50 {:>7.2} ms  p99 {:>7.2} ms  failures {}  µs CPU per op: oidcvault {:.0}, stub IdP {:.0}, browsers {:.0}; other load {} cores",
                    v["rate"].as_f64().unwrap_or(0.0),
                    v["p50_ms"].as_f64().unwrap_or(f64::NAN),
                    v["p99_ms"].as_f64().unwrap_or(f64::NAN),
                    v["failures"],
                    v["cpu"]["oidcvault_us_per_op"].as_f64().unwrap_or(f64::NAN),
                    v["cpu"]["idp_us_per_op"].as_f64().unwrap_or(f64::NAN),
                    v["cpu"]["browsers_us_per_op"].as_f64().unwrap_or(f64::NAN),
                    v["cpu"]["other_cores"],
                );
                if v["failures"].as_u64().unwrap_or(0) > 0 {
                    eprintln!("   WARNING: failures: {}", v["failure_samples"]);
                }
                runs.push(v);
            }
        }
    }

    let log = server.log_text();
    let problems: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .collect();
    let log_lines = log.lines().count();
    server.stop()?;
    stub.stop()?;
    if !problems.is_empty() {
        eprintln!(
            "   oidcvault logged {} WARN/ERROR lines; the first:\n{}",
            problems.len(),
            problems
                .iter()
                .take(10)
                .copied()
                .collect::<Vec<_>>()
                .join("\n")
        );
    }

    let summary = summarize(&runs, &conns);
    let report = json!({
        "benchmark": "signin",
        "machine": machine,
        "loadavg_at_end": util::loadavg(),
        "settings": {
            "nice": util::nice(), "duration_secs": duration, "conns": conns,
            "rounds": rounds, "users": users, "idp_workers": idp_workers,
            "oidcvault_log_level": log_level, "max_concurrent_fetches": max_fetches,
        },
        "es256": crypto,
        "first_sign_in_steps_us": first,
        "oidcvault_log": {"lines": log_lines, "warn_or_error": problems.len(),
                          "first_problems": problems.iter().take(20).collect::<Vec<_>>()},
        "runs": runs,
        "summary": summary,
    });
    let md = markdown(&summary, &report);
    println!("\n{md}");
    let text = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
    util::write(&results_dir.join("signin.json"), &text)?;
    util::write(&results_dir.join("signin.md"), &md)?;
    println!(
        "written to {}/signin.json and signin.md",
        results_dir.display()
    );
    Ok(())
}

fn with_log(server: &Server, e: String) -> String {
    let log = server.log_text();
    let tail: Vec<&str> = log.lines().rev().take(30).collect();
    format!(
        "{e}\n--- last lines of {}:\n{}",
        server.log.display(),
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    )
}

fn server_config(addr: &str, max_fetches: u32) -> String {
    format!(
        "# Shipped defaults, but: the public URL is this loopback address, outbound\n\
         # http to the stub IdP on 127.0.0.1 is allowed, and every browser comes from\n\
         # 127.0.0.1, so the per-address authorize limit is lifted.\n\
         [server]\nbind = \"{addr}\"\npublic_url = \"http://{addr}\"\n\
         [storage]\ndata_dir = \"data\"\n\
         [outbound]\nallow_http_hosts = [\"127.0.0.1\"]\nallow_private_hosts = [\"127.0.0.1\"]\n\
         max_concurrent_fetches = {max_fetches}\n\
         [sso]\nauthorize_per_address_per_minute = 0\n"
    )
}

fn operator_token(config: &std::path::Path) -> Result<String, String> {
    let out = std::process::Command::new(util::binary("oidcvault")?)
        .arg("--config")
        .arg(config)
        .args(["token", "create", "--operator"])
        .env("OIDCVAULT_MASTER_PASSPHRASE", util::PASSPHRASE)
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "oidcvault token create --operator: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// One API call; (status, JSON body or Null).
fn api(
    agent: &ureq::Agent,
    method: &str,
    url: &str,
    token: &str,
    domain: Option<&str>,
    body: Option<&Value>,
) -> Result<(u16, Value), String> {
    let mut req = agent
        .request(method, url)
        .set("Authorization", &format!("Bearer {token}"));
    if let Some(d) = domain {
        req = req.set("X-Enterprise-Domain", d);
    }
    let r = match body {
        Some(b) => req.send_json(b.clone()),
        None => req.call(),
    };
    let resp = match r {
        Ok(r) | Err(ureq::Error::Status(_, r)) => r,
        Err(e) => return Err(format!("{method} {url}: {e}")),
    };
    let status = resp.status();
    let text = resp.into_string().unwrap_or_default();
    Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
}

fn expect(what: &str, got: (u16, Value), want: &[u16]) -> Result<Value, String> {
    if want.contains(&got.0) {
        Ok(got.1)
    } else {
        Err(format!("{what}: HTTP {} {}", got.0, got.1))
    }
}

/// Domain, OIDC config (by discovery URL: the server fetches the stub's
/// document) and the application, through the API.
fn setup(
    server: &Server,
    operator: &str,
    issuer: &str,
    idp_secret: &str,
    users: u64,
) -> Result<Ctx, String> {
    let base = format!("http://{}", server.addr);
    let agent = util::agent(Duration::from_secs(30));
    expect(
        "POST /api/v1/admin/domains/",
        api(
            &agent,
            "POST",
            &format!("{base}/api/v1/admin/domains/"),
            operator,
            None,
            Some(&json!({"domain": DOMAIN})),
        )?,
        &[201],
    )?;
    let config = expect(
        "POST the OIDC config",
        api(
            &agent,
            "POST",
            &format!("{base}{}", util::CONFIG_PATH),
            operator,
            Some(DOMAIN),
            Some(&json!({
                "discovery_url": format!("{issuer}{}", idp::WELL_KNOWN),
                "client_id": IDP_CLIENT_ID,
                "client_secret": idp_secret,
            })),
        )?,
        &[200, 201],
    )?;
    if config["token_endpoint"] != json!(format!("{issuer}/token")) {
        return Err(format!(
            "the stored config did not take the stub's endpoints: {config}"
        ));
    }
    let app = expect(
        "POST /api/v1/admin/apps/",
        api(
            &agent,
            "POST",
            &format!("{base}/api/v1/admin/apps/"),
            operator,
            None,
            Some(&json!({"name": "sign-in benchmark", "redirect_uris": [APP_REDIRECT_URI]})),
        )?,
        &[201],
    )?;
    let sso = expect(
        "GET /api/v1/sso/",
        api(
            &agent,
            "GET",
            &format!("{base}/api/v1/sso/"),
            operator,
            None,
            None,
        )?,
        &[200],
    )?;
    let ctx = Ctx {
        broker: base,
        idp_issuer: issuer.to_owned(),
        idp_authorize: format!("{issuer}/authorize"),
        idp_token: format!("{issuer}/token"),
        idp_client_id: IDP_CLIENT_ID.to_owned(),
        idp_client_secret: idp_secret.to_owned(),
        domain: DOMAIN.to_owned(),
        app_client_id: app["client_id"].as_str().ok_or("no client_id")?.to_owned(),
        app_client_secret: app["client_secret"]
            .as_str()
            .ok_or("no client_secret")?
            .to_owned(),
        app_redirect_uri: APP_REDIRECT_URI.to_owned(),
        users,
        next_user: Default::default(),
    };
    if sso["callback_url"] != json!(ctx.callback_url()) {
        return Err(format!("GET /api/v1/sso/ names another callback: {sso}"));
    }
    Ok(ctx)
}

/// The stub alone: its discovery document, and an ID token from one round trip
/// that verifies against its JWKS with the claims the broker checks.
fn check_stub(ctx: &Ctx) -> Result<(), String> {
    let agent = util::agent(Duration::from_secs(10));
    let get = |url: &str| -> Result<Value, String> {
        agent
            .get(url)
            .call()
            .map_err(|e| format!("{url}: {e}"))?
            .into_json()
            .map_err(|e| format!("{url}: {e}"))
    };
    let doc = get(&format!("{}{}", ctx.idp_issuer, idp::WELL_KNOWN))?;
    if doc["issuer"] != json!(ctx.idp_issuer) {
        return Err(format!("stub discovery document: {doc}"));
    }
    let jwks: JwkSet = serde_json::from_value(get(doc["jwks_uri"].as_str().unwrap_or(""))?)
        .map_err(|e| format!("stub JWKS: {e}"))?;
    let nonce = idp::random_value();
    let (_, answer) = Browser::new().idp_flow(ctx, &nonce)?;
    let token = answer["id_token"].as_str().unwrap_or("");
    let header = jsonwebtoken::decode_header(token).map_err(|e| e.to_string())?;
    let jwk = jwks
        .find(header.kid.as_deref().unwrap_or(""))
        .ok_or("stub: the ID token's kid is not in its JWKS")?;
    let mut v = Validation::new(Algorithm::ES256);
    v.set_audience(&[&ctx.idp_client_id]);
    v.set_issuer(&[&ctx.idp_issuer]);
    let key = DecodingKey::from_jwk(jwk).map_err(|e| e.to_string())?;
    let claims = jsonwebtoken::decode::<Value>(token, &key, &v)
        .map_err(|e| format!("stub ID token does not verify: {e}"))?
        .claims;
    let email = claims["email"].as_str().unwrap_or("");
    if claims["nonce"] != json!(nonce)
        || claims["email_verified"] != json!(true)
        || !email.ends_with(&format!("@{}", ctx.domain))
    {
        return Err(format!("stub ID token claims: {claims}"));
    }
    Ok(())
}

/// CPU time this thread has run, in nanoseconds (`/proc/thread-self/schedstat`:
/// exact, unlike the 10 ms ticks of `stat`).
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// What one ES256 signature (the IdP, per sign-in) and one verification (the
/// broker, per sign-in) cost on this machine with jsonwebtoken, in CPU time of
/// this thread (other work on the machine does not inflate it): a yardstick for
/// the CPU figures.
fn es256_costs() -> Result<Value, String> {
    let keys = Keys::generate()?;
    let now = idp::now_secs();
    let claims = json!({"iss": "http://127.0.0.1:1", "aud": IDP_CLIENT_ID, "sub": "sub-user1",
        "email": format!("user1@{DOMAIN}"), "email_verified": true, "nonce": idp::random_value(),
        "iat": now, "exp": now + 600});
    let n = 1000;
    let t = thread_cpu_ns();
    let mut token = String::new();
    for _ in 0..n {
        token = keys.sign(&claims)?;
    }
    let sign_us = (thread_cpu_ns() - t) as f64 / 1e3 / n as f64;
    let set: JwkSet = serde_json::from_str(&keys.jwks).map_err(|e| e.to_string())?;
    let key = DecodingKey::from_jwk(&set.keys[0]).map_err(|e| e.to_string())?;
    let mut v = Validation::new(Algorithm::ES256);
    v.set_audience(&[IDP_CLIENT_ID]);
    let t = thread_cpu_ns();
    for _ in 0..n {
        jsonwebtoken::decode::<Value>(&token, &key, &v).map_err(|e| e.to_string())?;
    }
    let verify_us = (thread_cpu_ns() - t) as f64 / 1e3 / n as f64;
    Ok(json!({"sign_us": sign_us.round(), "verify_us": verify_us.round()}))
}

/// CPU ticks (1/100 s) of oidcvault, the stub IdP, this process (the
/// browsers) and the whole machine.
fn ticks(server: &Server, stub: &Server) -> [u64; 4] {
    [
        util::proc_ticks(&format!("/proc/{}/stat", server.pid()), false),
        util::proc_ticks(&format!("/proc/{}/stat", stub.pid()), false),
        util::proc_ticks("/proc/self/stat", false),
        util::machine_busy_ticks(),
    ]
}

/// `c` browsers looping `kind` for `secs`.
fn measure(ctx: &Ctx, kind: &str, c: usize, secs: u64, server: &Server, stub: &Server) -> Value {
    let baseline = kind == "idp_only";
    let before = ticks(server, stub);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(secs);
    let mut tally = Tally::default();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..c)
            .map(|_| s.spawn(|| browser::run_until(ctx, baseline, deadline)))
            .collect();
        for h in handles {
            match h.join() {
                Ok(t) => tally.merge(t),
                Err(_) => tally.failures += 1,
            }
        }
    });
    let elapsed = started.elapsed().as_secs_f64();
    let after = ticks(server, stub);
    let d: Vec<f64> = before
        .iter()
        .zip(after)
        .map(|(b, a)| a.saturating_sub(*b) as f64 / 100.0)
        .collect();
    let (server_s, idp_s, self_s, busy_s) = (d[0], d[1], d[2], d[3]);
    let ok = tally.latencies_us.len() as f64;
    let per_op = |s: f64| {
        if ok > 0.0 {
            (s * 1e6 / ok).round()
        } else {
            f64::NAN
        }
    };
    let cores = |s: f64| (s / elapsed * 100.0).round() / 100.0;
    tally.latencies_us.sort_unstable();
    let pct = |p: f64| {
        let l = &tally.latencies_us;
        if l.is_empty() {
            return f64::NAN;
        }
        let i = ((l.len() as f64 * p).ceil() as usize).clamp(1, l.len()) - 1;
        l[i] as f64 / 1000.0
    };
    let steps: serde_json::Map<String, Value> = STEP_NAMES
        .iter()
        .zip(tally.step_sums_us)
        .map(|(n, s)| {
            (
                n.to_string(),
                json!(((s as f64 / ok.max(1.0)) / 10.0).round() / 100.0),
            )
        })
        .collect();
    json!({
        "kind": kind, "conns": c, "ok": ok, "failures": tally.failures,
        "failure_samples": tally.samples,
        "secs": elapsed, "rate": (ok / elapsed * 10.0).round() / 10.0,
        "p50_ms": pct(0.5), "p99_ms": pct(0.99),
        "mean_step_ms": steps,
        "cpu": {
            "oidcvault_us_per_op": per_op(server_s), "idp_us_per_op": per_op(idp_s),
            "browsers_us_per_op": per_op(self_s),
            "oidcvault_cores": cores(server_s), "idp_cores": cores(idp_s),
            "browsers_cores": cores(self_s),
            "other_cores": cores((busy_s - server_s - idp_s - self_s).max(0.0)),
        },
        "loadavg_after": util::loadavg(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The stub IdP alone, as the release build of this driver runs it: its
    /// discovery document and JWKS, an ID token that verifies against them with
    /// the claims the broker checks, and a second of the baseline loop without
    /// a failure. (Needs `target/release/examples/bench`: cargo test --release.)
    #[test]
    fn the_stub_idp_and_the_baseline_loop_work() {
        let secret = idp::random_value();
        let mut cmd = std::process::Command::new(util::binary("bench").unwrap());
        cmd.args(["signin-idp", "--workers", "1"])
            .env("BENCH_IDP_CLIENT_SECRET", &secret);
        let dir = tempfile::tempdir().unwrap();
        let stub = Server::spawn("stub_idp", cmd, &dir.path().join("idp.log"), None).unwrap();
        let issuer = format!("http://{}", stub.addr);
        let ctx = Ctx {
            broker: "http://127.0.0.1:9".into(),
            idp_authorize: format!("{issuer}/authorize"),
            idp_token: format!("{issuer}/token"),
            idp_issuer: issuer,
            idp_client_id: IDP_CLIENT_ID.into(),
            idp_client_secret: secret,
            domain: DOMAIN.into(),
            app_client_id: String::new(),
            app_client_secret: String::new(),
            app_redirect_uri: APP_REDIRECT_URI.into(),
            users: 10,
            next_user: Default::default(),
        };
        check_stub(&ctx).unwrap();
        let tally = browser::run_until(&ctx, true, Instant::now() + Duration::from_secs(1));
        assert_eq!(tally.failures, 0, "{:?}", tally.samples);
        assert!(
            tally.latencies_us.len() > 10,
            "{}",
            tally.latencies_us.len()
        );
        // A wrong client secret is refused (the check is not a formality).
        let wrong = Ctx {
            idp_client_secret: "wrong".into(),
            ..ctx
        };
        let e = Browser::new().idp_round_trips(&wrong).unwrap_err();
        assert!(e.contains("401") && e.contains("invalid_client"), "{e}");
        stub.stop().unwrap();
    }
}
