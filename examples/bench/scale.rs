//! `bench scale`: N domains with a token and a config each; startup time (the
//! Argon2 derivation apart), resident memory after start and after mixed load,
//! bytes on disk per domain; and how each grows from the first N to the last.

use std::time::Duration;

use serde_json::{json, Value};

use crate::populate;
use crate::util::{self, Server, Workload};
use crate::Args;

/// Share of POSTs in the mixed load (the rest are GETs), random domains.
const POST_FRACTION: f64 = 0.2;
const MIXED_CONNS: usize = 32;

pub fn run(args: &Args) -> Result<(), String> {
    let sizes = args.list("domains", &[10_000, 100_000])?;
    let mixed_secs: u64 = args.get("mixed-secs", 20)?;
    let (results_dir, work) = util::dirs("scale")?;
    let machine = util::machine();
    println!("== scale benchmark: {sizes:?} domains, {mixed_secs} s of mixed load ({}% POST, {MIXED_CONNS} connections)", POST_FRACTION * 100.0);
    println!("   machine: {machine}");
    let mut rows = Vec::new();
    for &n in &sizes {
        let row = measure(&work, n, mixed_secs)?;
        println!("   {n} domains: {row}");
        rows.push(row);
        // The data of a size is not needed once measured.
        let _ = std::fs::remove_dir_all(work.join(format!("n{n}")));
    }
    let mut growth = json!({});
    if let (Some(first), Some(last)) = (rows.first(), rows.last()) {
        for key in [
            "startup_ms_without_kdf",
            "rss_after_start_mib",
            "rss_after_load_mib",
            "disk_bytes_per_domain",
            "disk_bytes_per_domain_after_load",
        ] {
            let a = first[key].as_f64().unwrap_or(f64::NAN);
            let b = last[key].as_f64().unwrap_or(f64::NAN);
            growth[key] = json!((b / a * 100.0).round() / 100.0);
        }
        growth["domains"] = json!(
            last["domains"].as_f64().unwrap_or(0.0) / first["domains"].as_f64().unwrap_or(1.0)
        );
    }
    let goals = rows.last().map(|r| {
        let startup = r["startup_ms_without_kdf"].as_f64().unwrap_or(f64::NAN);
        let rss = r["rss_after_load_mib"].as_f64().unwrap_or(f64::NAN)
            .max(r["rss_after_start_mib"].as_f64().unwrap_or(f64::NAN));
        let disk = r["disk_bytes_per_domain_after_load"].as_f64().unwrap_or(f64::NAN)
            .max(r["disk_bytes_per_domain"].as_f64().unwrap_or(f64::NAN));
        json!([
            {"goal": "startup < 1 s plus the KDF", "value": startup / 1000.0, "met": startup < 1000.0},
            {"goal": "resident memory < 150 MiB", "value": rss, "met": rss < 150.0},
            {"goal": "< 2 KiB on disk per domain", "value": disk, "met": disk < 2048.0},
        ])
    });
    let report = json!({
        "benchmark": "scale",
        "machine": machine,
        "loadavg_at_end": util::loadavg(),
        "settings": {"nice": util::nice(), "mixed_secs": mixed_secs, "mixed_conns": MIXED_CONNS, "post_fraction": POST_FRACTION},
        "rows": rows,
        "growth_last_over_first": growth,
        "goals": goals,
    });
    let md = markdown(&report);
    println!("\n{md}");
    let text = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
    util::write(&results_dir.join("scale.json"), &text)?;
    util::write(&results_dir.join("scale.md"), &md)?;
    println!(
        "written to {}/scale.json and scale.md",
        results_dir.display()
    );
    Ok(())
}

/// The KDF time the server logs at startup. Log lines reach the file up to 10 ms
/// after they are written (the server batches them), so wait for it a little.
fn logged_kdf_ms(server: &Server) -> f64 {
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    loop {
        if let Some(ms) = kdf_ms(&server.log_text()) {
            return ms;
        }
        if std::time::Instant::now() > deadline {
            return f64::NAN;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn kdf_ms(log: &str) -> Option<f64> {
    let rest = log.split("kdf_ms=").nth(1)?;
    rest.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

fn mib(kib: u64) -> f64 {
    (kib as f64 / 1024.0 * 10.0).round() / 10.0
}

fn start(home: &std::path::Path, log: &str) -> Result<Server, String> {
    let mut cmd = util::command(util::binary("oidcvault")?);
    cmd.arg("--config")
        .arg(home.join("config.toml"))
        .arg("serve")
        .env("OIDCVAULT_MASTER_PASSPHRASE", util::PASSPHRASE);
    let addr = util::free_addr()?;
    cmd.env("OIDCVAULT_SERVER__BIND", &addr);
    Server::spawn_at(
        "oidcvault",
        cmd,
        &home.join(log),
        Some("/readyz"),
        Some(addr),
    )
}

/// What the bytes of `data/` are (issue 15): per tree, the entries and their
/// live key + value bytes, beside sled's `size_on_disk` and the allocated size
/// of the directory; then the same two sizes after a reopen (sled cleans
/// segments as it goes, not at open: a reopen tells whether a clean stop or
/// recovery gives space back). The rest of the allocated size is sled's log:
/// superseded versions of pages not yet reclaimed, node overhead, free space
/// in segments.
fn breakdown(data: &std::path::Path) -> Result<Value, String> {
    use oidcvault::store::{Store, StoreOptions, Tree};
    let options = StoreOptions {
        cache_capacity_bytes: 16 << 20,
        auth_cache_bytes: 0,
        commit_metrics: None,
    };
    let store = Store::open(data, &options).map_err(|e| e.to_string())?;
    let mut trees = serde_json::Map::new();
    let mut live = 0u64;
    for tree in Tree::ALL {
        let (mut items, mut keys, mut values) = (0u64, 0u64, 0u64);
        let mut from = std::ops::Bound::Unbounded;
        loop {
            let page = store
                .engine()
                .scan(tree, (from, std::ops::Bound::Unbounded), 4096, false)
                .map_err(|e| e.to_string())?;
            for (k, v) in &page {
                items += 1;
                keys += k.len() as u64;
                values += v.len() as u64;
            }
            match page.last() {
                Some((k, _)) if page.len() == 4096 => from = std::ops::Bound::Excluded(k.clone()),
                _ => break,
            }
        }
        live += keys + values;
        if items > 0 {
            trees.insert(
                tree.name().to_owned(),
                json!({"items": items, "key_bytes": keys, "value_bytes": values}),
            );
        }
    }
    let size_on_disk = store.size_on_disk().map_err(|e| e.to_string())?;
    store.shutdown();
    drop(store);
    let (_, allocated) = util::disk_usage(data);
    let store = Store::open(data, &options).map_err(|e| e.to_string())?;
    let size_on_disk_reopened = store.size_on_disk().map_err(|e| e.to_string())?;
    store.shutdown();
    drop(store);
    let (_, allocated_reopened) = util::disk_usage(data);
    Ok(json!({
        "trees": trees,
        "live_bytes": live,
        "sled_size_on_disk": size_on_disk,
        "allocated": allocated,
        "sled_size_on_disk_after_reopen": size_on_disk_reopened,
        "allocated_after_reopen": allocated_reopened,
    }))
}

fn measure(work: &std::path::Path, n: usize, mixed_secs: u64) -> Result<Value, String> {
    let home = work.join(format!("n{n}"));
    let config = populate::write_home(&home)?;
    let loaded = populate::populate(&config, n)?;
    let data = home.join("data");
    let (apparent, allocated) = util::disk_usage(&data);
    println!(
        "   loaded {n} domains in {:.1} s ({:.0} domains/s); data/ {:.1} MiB",
        loaded.seconds,
        n as f64 / loaded.seconds,
        allocated as f64 / 1048576.0
    );
    let loaded_breakdown = breakdown(&data)?;
    println!("   as loaded: {loaded_breakdown}");

    // Cold-ish start (the files were just written, so they are in the page cache).
    let server = start(&home, "server-1.log")?;
    let startup_ms = server.startup.as_secs_f64() * 1000.0;
    let kdf = logged_kdf_ms(&server);
    std::thread::sleep(Duration::from_millis(500));
    let (rss_start, _) = util::rss_kib(server.pid());

    let (script, out) = util::prepare_wrk(
        &home,
        "mixed",
        &loaded.creds,
        &Workload::Mixed {
            post_fraction: POST_FRACTION,
        },
    )?;
    let load = util::run_wrk(&server, &script, &out, MIXED_CONNS, 1, mixed_secs)?;
    let (rss_load, hwm) = util::rss_kib(server.pid());
    server.stop()?;
    let (apparent_after, allocated_after) = util::disk_usage(&data);
    let load_breakdown = breakdown(&data)?;
    println!("   after the load: {load_breakdown}");

    // A second start on the same data: is startup stable?
    let again = start(&home, "server-2.log")?;
    let startup2_ms = again.startup.as_secs_f64() * 1000.0;
    let kdf2 = logged_kdf_ms(&again);
    again.stop()?;

    Ok(json!({
        "domains": n,
        "loader_secs": (loaded.seconds * 10.0).round() / 10.0,
        "loader_domains_per_sec": (n as f64 / loaded.seconds).round(),
        "startup_ms": startup_ms.round(),
        "kdf_ms": kdf,
        "startup_ms_without_kdf": (startup_ms - kdf).round(),
        "second_startup_ms_without_kdf": (startup2_ms - kdf2).round(),
        "rss_after_start_mib": mib(rss_start),
        "rss_after_load_mib": mib(rss_load),
        "rss_peak_mib": mib(hwm),
        "disk_bytes_allocated": allocated,
        "disk_bytes_apparent": apparent,
        "disk_bytes_per_domain": allocated / n as u64,
        "disk_bytes_per_domain_after_load": allocated_after / n as u64,
        "disk_bytes_apparent_after_load": apparent_after,
        "disk_breakdown_as_loaded": loaded_breakdown,
        "disk_breakdown_after_load": load_breakdown,
        "mixed_load": {
            "rps": load["rps"], "p50_ms": util::ms(&load, "p50_us"), "p99_ms": util::ms(&load, "p99_us"),
            "errors": load["errors"], "requests": load["requests"], "cpu": load["cpu"],
        },
    }))
}

fn markdown(report: &Value) -> String {
    let mut s = String::from(
        "| domains | loader (domains/s) | startup ms (without KDF) | KDF ms | RSS after start MiB | RSS after load MiB | peak RSS MiB | disk B/domain (after load) | mixed load req/s, p99 ms |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|---|\n",
    );
    for r in report["rows"].as_array().into_iter().flatten() {
        s.push_str(&format!(
            "| {} | {} | {} ({}) | {} | {} | {} | {} | {} ({}) | {} req/s, p99 {:.2} ms, {} errors |\n",
            r["domains"], r["loader_domains_per_sec"], r["startup_ms"], r["startup_ms_without_kdf"],
            r["kdf_ms"], r["rss_after_start_mib"], r["rss_after_load_mib"], r["rss_peak_mib"],
            r["disk_bytes_per_domain"], r["disk_bytes_per_domain_after_load"],
            r["mixed_load"]["rps"], r["mixed_load"]["p99_ms"].as_f64().unwrap_or(f64::NAN),
            r["mixed_load"]["errors"],
        ));
    }
    s.push_str(
        "\n| domains | when | live key+value B/domain | of which audit | sled size_on_disk B/domain | the rest (sled's log) |\n\
         |---:|---|---:|---:|---:|---:|\n",
    );
    for r in report["rows"].as_array().into_iter().flatten() {
        let n = r["domains"].as_f64().unwrap_or(f64::NAN);
        for (when, b) in [
            ("as loaded", &r["disk_breakdown_as_loaded"]),
            ("after the load", &r["disk_breakdown_after_load"]),
        ] {
            let live = b["live_bytes"].as_f64().unwrap_or(f64::NAN);
            let audit = &b["trees"]["audit"];
            let audit = audit["key_bytes"].as_f64().unwrap_or(0.0)
                + audit["value_bytes"].as_f64().unwrap_or(0.0);
            let sled = b["sled_size_on_disk"].as_f64().unwrap_or(f64::NAN);
            s.push_str(&format!(
                "| {n} | {when} | {:.0} | {:.0} | {:.0} | {:.0} |\n",
                live / n,
                audit / n,
                sled / n,
                (sled - live) / n
            ));
        }
    }
    s.push_str(&format!(
        "\ngrowth, last / first: {}\n\n",
        report["growth_last_over_first"]
    ));
    s.push_str(&util::goal_rows("goal (largest size)", &report["goals"]));
    s
}
