//! `bench load`: oidcvault against its HTTP ceiling and its storage ceiling, side by
//! side, same wrk, same requests, at 1, 32 and 256 connections, GET and POST.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};

use crate::populate;
use crate::util::{self, ms, Cred, Server, Workload};
use crate::Args;

const TARGETS: [&str; 3] = ["oidcvault", "http_ceiling", "storage_ceiling"];

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

    let mut oidcvault_cmd = util::command(util::binary("oidcvault")?);
    oidcvault_cmd
        .arg("--config")
        .arg(&config_path)
        .arg("serve")
        .env("OIDCVAULT_MASTER_PASSPHRASE", util::PASSPHRASE)
        .env("OIDCVAULT_LOG__LEVEL", &log_level);
    let addr = util::free_addr()?;
    oidcvault_cmd.env("OIDCVAULT_SERVER__BIND", &addr);
    let oidcvault = Server::spawn_at(
        "oidcvault",
        oidcvault_cmd,
        &work.join("oidcvault.log"),
        Some("/readyz"),
        Some(addr),
    )?;
    let mut http_cmd = util::command(util::binary("baseline_http")?);
    http_cmd.arg("127.0.0.1:0");
    let http = Server::spawn("http_ceiling", http_cmd, &work.join("http.log"), None)?;
    let mut store_cmd = util::command(util::binary("baseline_store")?);
    store_cmd
        .arg(work.join("baseline-store"))
        .arg("127.0.0.1:0");
    let store = Server::spawn("storage_ceiling", store_cmd, &work.join("store.log"), None)?;
    let servers: BTreeMap<&str, &Server> = [
        ("oidcvault", &oidcvault),
        ("http_ceiling", &http),
        ("storage_ceiling", &store),
    ]
    .into_iter()
    .collect();

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
        for name in TARGETS {
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
                let mut order = TARGETS.to_vec();
                order.rotate_left(round % TARGETS.len());
                for name in order {
                    let mut v =
                        util::run_wrk(servers[name], script, out, c, wrk_threads, duration)?;
                    v["target"] = json!(name);
                    v["method"] = json!(method);
                    v["conns"] = json!(c);
                    v["round"] = json!(round);
                    println!(
                        "   {method:<4} c={c:<3} {name:<16} {:>8.0} req/s  p50 {:>7.2} ms  p99 {:>7.2} ms  errors {}  cpu {}",
                        v["rps"].as_f64().unwrap_or(0.0),
                        ms(&v, "p50_us"),
                        ms(&v, "p99_us"),
                        v["errors"],
                        v["cpu"]
                    );
                    if v["errors"].as_f64().unwrap_or(0.0) > 0.0 {
                        eprintln!("   WARNING: {name} answered errors: {v}");
                    }
                    runs.push(v);
                }
            }
        }
    }

    for s in [oidcvault, http, store] {
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
            "post_body": util::EXAMPLE_BODY,
        },
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

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    match xs.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => xs[n / 2],
        n => (xs[n / 2 - 1] + xs[n / 2]) / 2.0,
    }
}

/// Per method and connection count: each target's median over rounds, the
/// ratios, and the goals.
fn summarize(runs: &[Value], conns: &[usize]) -> Value {
    let pick = |method: &str, c: usize, target: &str, key: &str| -> f64 {
        median(
            runs.iter()
                .filter(|r| r["method"] == method && r["conns"] == c && r["target"] == target)
                .filter_map(|r| r[key].as_f64())
                .collect(),
        )
    };
    let mut rows = Vec::new();
    for method in ["GET", "POST"] {
        for &c in conns {
            let mut row = json!({"method": method, "conns": c});
            for t in TARGETS {
                row[t] = json!({
                    "rps": pick(method, c, t, "rps"),
                    "p50_ms": pick(method, c, t, "p50_us") / 1000.0,
                    "p99_ms": pick(method, c, t, "p99_us") / 1000.0,
                    "other_cores": median(runs.iter()
                        .filter(|r| r["method"] == method && r["conns"] == c && r["target"] == t)
                        .filter_map(|r| r["cpu"]["other_cores"].as_f64()).collect()),
                });
            }
            // Ratios within each round (the three runs back to back, so under
            // about the same noise), then the median over rounds.
            let round_ratio = |ceiling: &str| -> f64 {
                let rps = |round: u64, target: &str| {
                    runs.iter()
                        .find(|r| {
                            r["method"] == method
                                && r["conns"] == c
                                && r["round"] == round
                                && r["target"] == target
                        })
                        .and_then(|r| r["rps"].as_f64())
                };
                let rounds: std::collections::BTreeSet<u64> = runs
                    .iter()
                    .filter(|r| r["method"] == method && r["conns"] == c)
                    .filter_map(|r| r["round"].as_u64())
                    .collect();
                median(
                    rounds
                        .into_iter()
                        .filter_map(|round| Some(rps(round, "oidcvault")? / rps(round, ceiling)?))
                        .collect(),
                )
            };
            row["ratio_vs_http_ceiling"] = json!(round_ratio("http_ceiling"));
            row["ratio_vs_storage_ceiling"] = json!(round_ratio("storage_ceiling"));
            rows.push(row);
        }
    }
    let find = |method: &str, c: usize| {
        rows.iter()
            .find(|r| r["method"] == method && r["conns"] == c)
    };
    let mut goals = Vec::new();
    if let Some(r) = find("GET", 32) {
        let v = r["ratio_vs_http_ceiling"].as_f64().unwrap_or(f64::NAN);
        goals.push(json!({"goal": "GET at 32 connections >= 0.8 x HTTP ceiling", "value": v, "met": v >= 0.8}));
    }
    if let Some(r) = find("POST", 32) {
        let v = r["ratio_vs_storage_ceiling"].as_f64().unwrap_or(f64::NAN);
        goals.push(json!({"goal": "durable POST at 32 connections >= 0.7 x storage ceiling", "value": v, "met": v >= 0.7}));
    }
    if let (Some(a), Some(b)) = (find("POST", 32), find("POST", 256)) {
        let v = b["oidcvault"]["rps"].as_f64().unwrap_or(f64::NAN)
            / a["oidcvault"]["rps"].as_f64().unwrap_or(f64::NAN);
        goals.push(json!({"goal": "POST throughput at 256 connections / at 32 >= 1 (no collapse)", "value": v, "met": v >= 1.0}));
    }
    for method in ["GET", "POST"] {
        if let Some(r) = find(method, 32) {
            let v = r["oidcvault"]["p99_ms"].as_f64().unwrap_or(f64::NAN);
            goals.push(json!({"goal": format!("{method} p99 at 32 connections < 10 ms"), "value": v, "met": v < 10.0}));
        }
    }
    json!({"rows": rows, "goals": goals})
}

fn markdown(summary: &Value) -> String {
    let mut s = String::from(
        "| method | conns | oidcvault req/s | p50 ms | p99 ms | HTTP ceiling req/s | p50 | p99 | storage ceiling req/s | p50 | p99 | oidcvault / HTTP | oidcvault / storage | other load (cores) |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in summary["rows"].as_array().into_iter().flatten() {
        let f = |t: &str, k: &str| r[t][k].as_f64().unwrap_or(f64::NAN);
        let other = TARGETS
            .iter()
            .map(|t| f(t, "other_cores"))
            .fold(0.0f64, f64::max);
        s.push_str(&format!(
            "| {} | {} | {:.0} | {:.2} | {:.2} | {:.0} | {:.2} | {:.2} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | ≤ {:.2} |\n",
            r["method"].as_str().unwrap_or(""),
            r["conns"],
            f("oidcvault", "rps"), f("oidcvault", "p50_ms"), f("oidcvault", "p99_ms"),
            f("http_ceiling", "rps"), f("http_ceiling", "p50_ms"), f("http_ceiling", "p99_ms"),
            f("storage_ceiling", "rps"), f("storage_ceiling", "p50_ms"), f("storage_ceiling", "p99_ms"),
            r["ratio_vs_http_ceiling"].as_f64().unwrap_or(f64::NAN),
            r["ratio_vs_storage_ceiling"].as_f64().unwrap_or(f64::NAN),
            other,
        ));
    }
    s.push('\n');
    s.push_str(&util::goal_rows("goal", &summary["goals"]));
    s
}
