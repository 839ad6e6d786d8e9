//! `bench load --backend etcd`: oidcvault on a three-member etcd cluster
//! (loopback) against the etcd ceiling (`baseline_etcd`: the same etcd calls
//! with nothing else), with one node and with two nodes (two processes, the
//! load split across both), GET and POST at 1, 32 and 256 connections.
//!
//! The cluster, the oidcvault nodes and the ceilings are started once and
//! stay up through the run; a one-node run loads node A only. Two-node runs
//! use two wrk processes at half the connections each (one connection: one
//! wrk against node A), run at the same time; their requests are summed,
//! p50 is the mean of the two weighted by requests, p99 the larger.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::{json, Value};

use crate::etcd::Cluster;
use crate::populate;
use crate::util::{self, ms, Cred, Server, Workload};
use crate::Args;

const OIDCVAULT: &str = "oidcvault";
const CEILING: &str = "etcd_ceiling";

pub fn run(args: &Args) -> Result<(), String> {
    let duration: u64 = args.get("duration", 5)?;
    let conns = args.list("conns", &[1, 32, 256])?;
    let rounds: usize = args.get("rounds", 3)?;
    let n_domains: usize = args.get("domains", 256)?;
    let wrk_threads: usize = args.get("wrk-threads", 1)?;
    let log_level: String = args.get("log-level", "info".to_owned())?;
    let nodes = args.list("nodes", &[1, 2])?;
    let targets_arg: String = args.get("targets", format!("{OIDCVAULT},{CEILING}"))?;
    let targets: Vec<&str> = [OIDCVAULT, CEILING]
        .into_iter()
        .filter(|t| targets_arg.split(',').any(|x| x.trim() == *t))
        .collect();
    if targets.is_empty() || nodes.is_empty() || nodes.iter().any(|&n| n == 0 || n > 2) {
        return Err("--targets oidcvault,etcd_ceiling and --nodes 1,2 (1 or 2 each)".into());
    }
    let max_nodes = nodes.iter().copied().max().unwrap_or(1);
    let (results_dir, work) = util::dirs("load-etcd")?;
    let machine = util::machine();
    println!(
        "== load benchmark, etcd backend: {duration} s per run, connections {conns:?}, nodes {nodes:?}, {rounds} round(s), {n_domains} domains, targets {targets:?}"
    );
    println!("   machine: {machine}");

    let etcd_dir = work.join("etcd");
    let cluster = Cluster::start(&etcd_dir, 3)?;
    println!("   etcd cluster up: {}", cluster.endpoints.join(" "));

    // oidcvault's data, through the library (the real store, on etcd); the
    // ceiling creates its own records when the check below POSTs each domain.
    let mut homes = Vec::new();
    let creds = if targets.contains(&OIDCVAULT) {
        for i in 0..max_nodes {
            homes.push(write_home(
                &work.join(format!("oidcvault-{i}")),
                &cluster.endpoints,
            )?);
        }
        let loaded = populate::populate(&homes[0], n_domains)?;
        println!(
            "   loaded {n_domains} domains with tokens and configs in {:.1} s (after a {} ms KDF)",
            loaded.seconds, loaded.kdf_ms
        );
        loaded.creds
    } else {
        (0..n_domains)
            .map(|i| Cred {
                domain: populate::domain_name(i),
                token: "not-checked-by-the-ceiling".into(),
            })
            .collect()
    };

    let mut servers: BTreeMap<&str, Vec<Server>> = BTreeMap::new();
    if targets.contains(&OIDCVAULT) {
        let mut list = Vec::new();
        for (i, home) in homes.iter().enumerate() {
            let mut cmd = util::command(util::binary("oidcvault")?);
            let addr = util::free_addr()?;
            cmd.arg("--config")
                .arg(home)
                .arg("serve")
                .env("OIDCVAULT_MASTER_PASSPHRASE", util::PASSPHRASE)
                .env("OIDCVAULT_LOG__LEVEL", &log_level)
                .env("OIDCVAULT_SERVER__BIND", &addr);
            let log = work.join(format!("oidcvault-{i}.log"));
            list.push(Server::spawn_at(
                &format!("oidcvault-{i}"),
                cmd,
                &log,
                Some("/readyz"),
                Some(addr),
            )?);
        }
        servers.insert(OIDCVAULT, list);
    }
    if targets.contains(&CEILING) {
        let mut list = Vec::new();
        for i in 0..max_nodes {
            let mut cmd = util::command(util::binary("baseline_etcd")?);
            cmd.arg(cluster.endpoints.join(",")).arg("127.0.0.1:0");
            let log = work.join(format!("ceiling-{i}.log"));
            list.push(Server::spawn(
                &format!("etcd_ceiling-{i}"),
                cmd,
                &log,
                None,
            )?);
        }
        servers.insert(CEILING, list);
    }

    // Every server answers 200 and the document; the ceiling's records are
    // created by one POST per domain (through its first process).
    let agent = util::agent(Duration::from_secs(10));
    for (name, list) in &servers {
        let all = if *name == CEILING { creds.len() } else { 1 };
        for cred in &creds[..all] {
            check(&list[0], &agent, "POST", cred)?;
        }
        for s in list {
            check(s, &agent, "POST", &creds[0])?;
            check(s, &agent, "GET", &creds[0])?;
        }
    }

    let mut scripts: BTreeMap<&str, Vec<(PathBuf, PathBuf)>> = BTreeMap::new();
    for method in ["GET", "POST"] {
        let mut list = Vec::new();
        for i in 0..max_nodes {
            let w = Workload::Fixed(if method == "GET" { "GET" } else { "POST" });
            list.push(util::prepare_wrk(
                &work,
                &format!("{method}-{i}"),
                &creds,
                &w,
            )?);
        }
        scripts.insert(method, list);
    }

    let setups: Vec<(&str, usize)> = targets
        .iter()
        .flat_map(|t| nodes.iter().map(move |&n| (*t, n)))
        .collect();
    let etcd_pids = cluster.pids();
    let mut runs: Vec<Value> = Vec::new();
    for method in ["GET", "POST"] {
        let scripts = &scripts[method];
        for &(name, n) in &setups {
            run_split(&servers[name][..n], scripts, 32, wrk_threads, 2, &etcd_pids)?;
        }
        for round in 0..rounds {
            let mut levels = conns.clone();
            if round % 2 == 1 {
                levels.reverse();
            }
            for c in levels {
                let mut order = setups.clone();
                order.rotate_left(round % setups.len());
                for (name, n) in order {
                    let mut v = run_split(
                        &servers[name][..n],
                        scripts,
                        c,
                        wrk_threads,
                        duration,
                        &etcd_pids,
                    )?;
                    v["target"] = json!(name);
                    v["nodes"] = json!(n);
                    v["method"] = json!(method);
                    v["conns"] = json!(c);
                    v["round"] = json!(round);
                    println!(
                        "   {method:<4} c={c:<3} {name:<12} x{n} {:>8.0} req/s  p50 {:>7.2} ms  p99 {:>7.2} ms  errors {} non-2xx {}  cpu {}",
                        v["rps"].as_f64().unwrap_or(0.0),
                        ms(&v, "p50_us"),
                        ms(&v, "p99_us"),
                        v["errors"],
                        v["status"],
                        v["cpu"]
                    );
                    if v["errors"].as_f64().unwrap_or(0.0) > 0.0 {
                        eprintln!("   WARNING: {name} x{n} answered errors");
                    }
                    runs.push(v);
                }
            }
        }
    }

    for (_, list) in servers {
        for s in list {
            s.stop()?;
        }
    }
    drop(cluster);
    let etcd_bytes = Cluster::disk_bytes(&etcd_dir);

    let summary = summarize(&runs, &conns, &nodes);
    let report = json!({
        "benchmark": "load-etcd",
        "machine": machine,
        "loadavg_at_end": util::loadavg(),
        "settings": {
            "nice": util::nice(),
            "duration_secs": duration, "conns": conns, "rounds": rounds, "nodes": nodes,
            "domains": n_domains, "wrk_threads": wrk_threads, "oidcvault_log_level": log_level,
            "post_body": util::EXAMPLE_BODY, "etcd_members": 3,
            "etcd_version": etcd_version(),
        },
        "etcd_data_bytes_at_end": etcd_bytes,
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
    util::write(&results_dir.join(format!("load-etcd-{stamp}.json")), &text)?;
    util::write(&results_dir.join("load-etcd.json"), &text)?;
    util::write(&results_dir.join("load-etcd.md"), &md)?;
    println!(
        "written to {}/load-etcd.json and load-etcd.md",
        results_dir.display()
    );
    Ok(())
}

/// A home folder for an oidcvault node on the cluster: shipped defaults but
/// for the listen address and the storage backend.
fn write_home(home: &Path, endpoints: &[String]) -> Result<PathBuf, String> {
    std::fs::create_dir_all(home).map_err(|e| format!("{}: {e}", home.display()))?;
    let path = home.join("config.toml");
    let list: Vec<String> = endpoints.iter().map(|e| format!("\"{e}\"")).collect();
    util::write(
        &path,
        &format!(
            "# Shipped defaults, the etcd backend on the benchmark's cluster.\n\
             [server]\nbind = \"127.0.0.1:0\"\n[storage]\nbackend = \"etcd\"\ndata_dir = \"data\"\n\
             [storage.etcd]\nendpoints = [{}]\n",
            list.join(", ")
        ),
    )?;
    Ok(path)
}

fn etcd_version() -> String {
    std::process::Command::new("etcd")
        .arg("--version")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .to_owned()
        })
        .unwrap_or_default()
}

fn check(server: &Server, agent: &ureq::Agent, method: &str, cred: &Cred) -> Result<(), String> {
    let (status, body) = util::request(agent, method, &server.url(), cred)?;
    if status != 200 || !body.contains("\"client_id\":\"enterprise-app-123\"") {
        return Err(format!(
            "{}: {method} answered {status} {body:?}; log:\n{}",
            server.name,
            server.log_text()
        ));
    }
    Ok(())
}

/// wrk against `servers` at once, `conns` split across them (all on the
/// first when there are fewer connections than servers); merged summary and
/// CPU (servers, etcd members, wrk, everything else).
fn run_split(
    servers: &[Server],
    scripts: &[(PathBuf, PathBuf)],
    conns: usize,
    threads: usize,
    secs: u64,
    etcd_pids: &[u32],
) -> Result<Value, String> {
    let shares: Vec<usize> = if conns < servers.len() {
        vec![conns]
    } else {
        let n = servers.len();
        (0..n)
            .map(|i| conns / n + usize::from(i < conns % n))
            .collect()
    };
    let ticks = |pids: &[u32]| -> u64 {
        pids.iter()
            .map(|p| util::proc_ticks(&format!("/proc/{p}/stat"), false))
            .sum()
    };
    let server_pids: Vec<u32> = servers.iter().map(Server::pid).collect();
    let busy0 = util::machine_busy_ticks();
    let (srv0, etcd0) = (ticks(&server_pids), ticks(etcd_pids));
    let child0 = util::proc_ticks("/proc/self/stat", true);
    let started = std::time::Instant::now();
    let mut children = Vec::new();
    for (i, &c) in shares.iter().enumerate() {
        let (script, out) = &scripts[i];
        let _ = std::fs::remove_file(out);
        let child = util::command("wrk")
            .arg(format!("-t{}", threads.clamp(1, c)))
            .arg(format!("-c{c}"))
            .arg(format!("-d{secs}s"))
            .arg("--timeout")
            .arg("10s")
            .arg("-s")
            .arg(script)
            .arg(servers[i].url())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run wrk (apt-get install wrk): {e}"))?;
        children.push(child);
    }
    let mut parts = Vec::new();
    for (i, child) in children.into_iter().enumerate() {
        let output = child.wait_with_output().map_err(|e| e.to_string())?;
        if !output.status.success() {
            return Err(format!(
                "wrk failed: {}\n{}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        let out = &scripts[i].1;
        let text = std::fs::read_to_string(out)
            .map_err(|e| format!("wrk wrote no summary to {}: {e}", out.display()))?;
        let v: Value =
            serde_json::from_str(text.trim()).map_err(|e| format!("wrk summary {text:?}: {e}"))?;
        parts.push(v);
    }
    let elapsed = started.elapsed().as_secs_f64().max(1e-3);
    let busy = util::machine_busy_ticks().saturating_sub(busy0);
    let srv = ticks(&server_pids).saturating_sub(srv0);
    let etcd = ticks(etcd_pids).saturating_sub(etcd0);
    let client = util::proc_ticks("/proc/self/stat", true).saturating_sub(child0);
    let other = busy.saturating_sub(srv + etcd + client);
    let cores = |t: u64| ((t as f64 / 100.0 / elapsed) * 100.0).round() / 100.0;

    let f = |v: &Value, k: &str| v[k].as_f64().unwrap_or(0.0);
    let requests: f64 = parts.iter().map(|v| f(v, "requests")).sum();
    let rps: f64 = parts
        .iter()
        .map(|v| f(v, "requests") / (f(v, "duration_us") / 1e6).max(1e-6))
        .sum();
    let errors: f64 = parts
        .iter()
        .map(|v| {
            ["connect", "read", "write", "status", "timeout"]
                .iter()
                .map(|k| f(v, k))
                .sum::<f64>()
        })
        .sum();
    let weighted = |k: &str| {
        parts
            .iter()
            .map(|v| f(v, k) * f(v, "requests"))
            .sum::<f64>()
            / requests.max(1.0)
    };
    let max = |k: &str| parts.iter().map(|v| f(v, k)).fold(0.0, f64::max);
    Ok(json!({
        "requests": requests,
        "rps": rps.round(),
        "errors": errors,
        "status": parts.iter().map(|v| f(v, "status")).sum::<f64>(),
        "p50_us": weighted("p50_us").round(),
        "p99_us": max("p99_us"),
        "mean_us": weighted("mean_us"),
        "connections": shares,
        "parts": parts,
        "cpu": {
            "server_cores": cores(srv),
            "etcd_cores": cores(etcd),
            "wrk_cores": cores(client),
            "other_cores": cores(other),
        },
        "loadavg_after": util::loadavg(),
    }))
}

/// Per method, connection count and node count: medians over rounds of each
/// target, and oidcvault / ceiling taken within each round, then the median.
fn summarize(runs: &[Value], conns: &[usize], nodes: &[usize]) -> Value {
    let of = |method: &str, c: usize, n: usize, target: &str| -> Vec<&Value> {
        runs.iter()
            .filter(|r| {
                r["method"] == method && r["conns"] == c && r["nodes"] == n && r["target"] == target
            })
            .collect()
    };
    let mut rows = Vec::new();
    for method in ["GET", "POST"] {
        for &n in nodes {
            for &c in conns {
                let mut row = json!({"method": method, "conns": c, "nodes": n});
                for t in [OIDCVAULT, CEILING] {
                    let rs = of(method, c, n, t);
                    if rs.is_empty() {
                        continue;
                    }
                    let m =
                        |k: &str| util::median(rs.iter().filter_map(|r| r[k].as_f64()).collect());
                    let cpu = |k: &str| {
                        util::median(rs.iter().filter_map(|r| r["cpu"][k].as_f64()).collect())
                    };
                    row[t] = json!({
                        "rps": m("rps"),
                        "p50_ms": m("p50_us") / 1000.0,
                        "p99_ms": m("p99_us") / 1000.0,
                        "server_cores": cpu("server_cores"),
                        "etcd_cores": cpu("etcd_cores"),
                        "other_cores": cpu("other_cores"),
                    });
                }
                let ratios: Vec<f64> = of(method, c, n, OIDCVAULT)
                    .into_iter()
                    .filter_map(|o| {
                        let ceiling = of(method, c, n, CEILING)
                            .into_iter()
                            .find(|x| x["round"] == o["round"])?;
                        Some(o["rps"].as_f64()? / ceiling["rps"].as_f64()?)
                    })
                    .collect();
                row["ratio_vs_etcd_ceiling"] = json!(util::median(ratios));
                rows.push(row);
            }
        }
    }
    json!({ "rows": rows })
}

fn markdown(summary: &Value) -> String {
    let mut s = String::from(
        "| method | nodes | conns | oidcvault req/s | p50 ms | p99 ms | etcd ceiling req/s | p50 | p99 | oidcvault / ceiling | CPU oidcvault / ceiling / etcd (cores) | other load (cores) |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|\n",
    );
    for r in summary["rows"].as_array().into_iter().flatten() {
        let f = |t: &str, k: &str| r[t][k].as_f64().unwrap_or(f64::NAN);
        let other = f(OIDCVAULT, "other_cores").max(f(CEILING, "other_cores"));
        s.push_str(&format!(
            "| {} | {} | {} | {:.0} | {:.2} | {:.2} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} / {:.2} / {:.2}–{:.2} | ≤ {:.2} |\n",
            r["method"].as_str().unwrap_or(""),
            r["nodes"],
            r["conns"],
            f(OIDCVAULT, "rps"), f(OIDCVAULT, "p50_ms"), f(OIDCVAULT, "p99_ms"),
            f(CEILING, "rps"), f(CEILING, "p50_ms"), f(CEILING, "p99_ms"),
            r["ratio_vs_etcd_ceiling"].as_f64().unwrap_or(f64::NAN),
            f(OIDCVAULT, "server_cores"), f(CEILING, "server_cores"),
            f(OIDCVAULT, "etcd_cores"), f(CEILING, "etcd_cores"),
            other,
        ));
    }
    s
}
