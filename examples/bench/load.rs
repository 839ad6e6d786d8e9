//! `bench load`: oidcvault against its HTTP ceiling, its storage ceiling and its
//! matched baseline (the same storage work as oidcvault's, nothing else), side
//! by side, same wrk, same requests, at 1, 32 and 256 connections, GET and POST;
//! with the servers' CPU per request by thread group (`threads`). The summary
//! and its tables are in `load_report`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};

use crate::load_report::{markdown, summarize, COMPARE, TARGETS};
use crate::util::{self, ms, Cred, Server, Workload};
use crate::Args;
use crate::{matched, populate};

pub fn run(args: &Args) -> Result<(), String> {
    let duration: u64 = args.get("duration", 5)?;
    let conns = args.list("conns", &[1, 32, 256])?;
    let rounds: usize = args.get("rounds", 3)?;
    let n_domains: usize = args.get("domains", 256)?;
    let wrk_threads: usize = args.get("wrk-threads", 1)?;
    // oidcvault's log level (the shipped default is info: one line per request).
    let log_level: String = args.get("log-level", "info".to_owned())?;
    let (results_dir, work) = util::dirs("load")?;
    let machine = util::machine();
    println!(
        "== load benchmark: {} s per run, connections {conns:?}, {rounds} round(s), {n_domains} domains, wrk -t{wrk_threads}",
        duration
    );
    println!("   machine: {machine}");

    // oidcvault's data: domains, tokens and configs, through the library.
    let home = work.join("oidcvault");
    let config_path = populate::write_home(&home)?;
    let loaded = populate::populate(&config_path, n_domains)?;
    let creds = loaded.creds;
    println!(
        "   loaded {n_domains} domains with tokens and configs in {:.1} s (after a {} ms KDF)",
        loaded.seconds, loaded.kdf_ms
    );

    // The matched baseline's copy of that store (before oidcvault opens it).
    let prepared = matched::prepare(&config_path, &creds, &work)?;
    println!(
        "   record sizes (bytes): {} (the matched baseline writes events of the same size)",
        prepared.sizes
    );

    // `--compare BIN`: another oidcvault build (e.g. main's, before a change)
    // on a copy of the same home, as a fifth target in the same rounds.
    let compare: String = args.get("compare", String::new())?;
    let compare_home = work.join("oidcvault-compare");
    if !compare.is_empty() {
        matched::copy_dir(&home, &compare_home)?;
    }
    let spawn_oidcvault = |name: &str, bin: PathBuf, config: &Path| -> Result<Server, String> {
        let mut cmd = util::command(bin);
        cmd.arg("--config")
            .arg(config)
            .arg("serve")
            .env("OIDCVAULT_MASTER_PASSPHRASE", util::PASSPHRASE)
            .env("OIDCVAULT_LOG__LEVEL", &log_level);
        let addr = util::free_addr()?;
        cmd.env("OIDCVAULT_SERVER__BIND", &addr);
        let log = work.join(format!("{name}.log"));
        Server::spawn_at(name, cmd, &log, Some("/readyz"), Some(addr))
    };
    let oidcvault = spawn_oidcvault("oidcvault", util::binary("oidcvault")?, &config_path)?;
    let compared = if compare.is_empty() {
        None
    } else {
        let config = compare_home.join("config.toml");
        Some(spawn_oidcvault(COMPARE, PathBuf::from(&compare), &config)?)
    };
    let mut http_cmd = util::command(util::binary("baseline_http")?);
    http_cmd.arg("127.0.0.1:0");
    let http = Server::spawn("http_ceiling", http_cmd, &work.join("http.log"), None)?;
    let mut store_cmd = util::command(util::binary("baseline_store")?);
    store_cmd
        .arg(work.join("baseline-store"))
        .arg("127.0.0.1:0");
    let store = Server::spawn("storage_ceiling", store_cmd, &work.join("store.log"), None)?;
    let mut matched_cmd = util::command(util::binary("baseline_matched")?);
    matched_cmd
        .arg(&prepared.data_dir)
        .arg(&prepared.seed)
        .arg(prepared.event_bytes.to_string())
        .arg("127.0.0.1:0");
    let matched = Server::spawn(
        "matched_baseline",
        matched_cmd,
        &work.join("matched.log"),
        None,
    )?;
    let mut servers: BTreeMap<&str, &Server> = [
        ("oidcvault", &oidcvault),
        ("http_ceiling", &http),
        ("storage_ceiling", &store),
        ("matched_baseline", &matched),
    ]
    .into_iter()
    .collect();
    let mut targets = TARGETS.to_vec();
    if let Some(c) = &compared {
        servers.insert(COMPARE, c);
        targets.push(COMPARE);
    }

    // Every target answers the same request with 200 and the document; the storage
    // ceiling gets each domain's record (so that its GETs find one).
    let agent = util::agent(Duration::from_secs(10));
    for (name, server) in &servers {
        for (i, cred) in creds.iter().enumerate() {
            if i > 0 && *name != "storage_ceiling" {
                break;
            }
            check(name, server, &agent, "POST", cred)?;
        }
        check(name, server, &agent, "GET", &creds[0])?;
    }

    let mut scripts = BTreeMap::new();
    for method in ["GET", "POST"] {
        let w = if method == "GET" {
            Workload::Fixed("GET")
        } else {
            Workload::Fixed("POST")
        };
        scripts.insert(method, util::prepare_wrk(&work, method, &creds, &w)?);
    }

    let mut runs: Vec<Value> = Vec::new();
    for method in ["GET", "POST"] {
        let (script, out) = &scripts[method];
        // Warm every target up once for this method (results discarded).
        for name in targets.iter().copied() {
            util::run_wrk(servers[name], script, out, 32, wrk_threads, 2)?;
        }
        // Rounds outermost, connection counts alternating in order: every POST
        // stores an audit event, so the store grows through the run, and runs
        // late in it must not all be one connection count's (the first version
        // ran every 32-connection round before every 256 one).
        for round in 0..rounds {
            let mut levels = conns.clone();
            if round % 2 == 1 {
                levels.reverse();
            }
            for c in levels {
                let mut order = targets.clone();
                order.rotate_left(round % targets.len());
                for name in order {
                    let mut v =
                        util::run_wrk(servers[name], script, out, c, wrk_threads, duration)?;
                    v["target"] = json!(name);
                    v["method"] = json!(method);
                    v["conns"] = json!(c);
                    v["round"] = json!(round);
                    println!(
                        "   {method:<4} c={c:<3} {name:<16} {:>8.0} req/s  p50 {:>7.2} ms  p99 {:>7.2} ms  errors {}  cpu {}  {:.1} µs/req",
                        v["rps"].as_f64().unwrap_or(0.0),
                        ms(&v, "p50_us"),
                        ms(&v, "p99_us"),
                        v["errors"],
                        v["cpu"],
                        v["cpu_per_request"]["total"]["cpu_us"].as_f64().unwrap_or(f64::NAN),
                    );
                    if v["errors"].as_f64().unwrap_or(0.0) > 0.0 {
                        eprintln!("   WARNING: {name} answered errors: {v}");
                    }
                    runs.push(v);
                }
            }
        }
    }

    for s in [oidcvault, http, store, matched]
        .into_iter()
        .chain(compared)
    {
        s.stop()?;
    }

    let summary = summarize(&runs, &conns);
    let report = json!({
        "benchmark": "load",
        "machine": machine,
        "loadavg_at_end": util::loadavg(),
        "settings": {
            "nice": util::nice(),
            "duration_secs": duration, "conns": conns, "rounds": rounds,
            "domains": n_domains, "wrk_threads": wrk_threads, "oidcvault_log_level": log_level,
            "compare": compare,
            "post_body": util::EXAMPLE_BODY,
        },
        "record_sizes": prepared.sizes,
        "runs": runs,
        "summary": summary,
    });
    let md = markdown(&summary);
    println!("\n{md}");
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let text = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
    util::write(&results_dir.join(format!("load-{stamp}.json")), &text)?;
    util::write(&results_dir.join("load.json"), &text)?;
    util::write(&results_dir.join("load.md"), &md)?;
    println!("written to {}/load.json and load.md", results_dir.display());
    Ok(())
}

fn check(
    name: &str,
    server: &Server,
    agent: &ureq::Agent,
    method: &str,
    cred: &Cred,
) -> Result<(), String> {
    let (status, body) = util::request(agent, method, &server.url(), cred)?;
    if status != 200 || !body.contains("\"client_id\":\"enterprise-app-123\"") {
        return Err(format!(
            "{name}: {method} answered {status} {body:?}; log:\n{}",
            server.log_text()
        ));
    }
    Ok(())
}
