//! The summary of `bench load` (medians over rounds, ratios within a round,
//! the goals of issue 15) and its Markdown tables.

use std::collections::BTreeSet;

use serde_json::{json, Value};

use crate::threads::GROUPS;
use crate::util;

pub const TARGETS: [&str; 4] = [
    "oidcvault",
    "http_ceiling",
    "storage_ceiling",
    "matched_baseline",
];
/// With `--compare BIN`: that other oidcvault build, in the same rounds.
pub const COMPARE: &str = "oidcvault_compare";

/// The targets measured: the four, and the compared build when there is one.
fn targets_of<'a>(has_compare: impl Fn() -> bool) -> Vec<&'a str> {
    let mut t = TARGETS.to_vec();
    if has_compare() {
        t.push(COMPARE);
    }
    t
}

/// The bare ceiling a method is held against: HTTP for GET, the single-insert
/// storage ceiling for POST.
pub fn ceiling(method: &str) -> &'static str {
    if method == "GET" {
        "http_ceiling"
    } else {
        "storage_ceiling"
    }
}

/// Per method and connection count: each target's median over rounds, the
/// ratios, and the goals.
pub fn summarize(runs: &[Value], conns: &[usize]) -> Value {
    let targets = targets_of(|| runs.iter().any(|r| r["target"] == COMPARE));
    let mut rows = Vec::new();
    for method in ["GET", "POST"] {
        for &c in conns {
            let of = |t: &str| -> Vec<&Value> {
                runs.iter()
                    .filter(|r| r["method"] == method && r["conns"] == c && r["target"] == t)
                    .collect()
            };
            let pick = |t: &str, path: &[&str]| -> f64 {
                util::median(
                    of(t)
                        .into_iter()
                        .filter_map(|r| path.iter().fold(r, |v, k| &v[*k]).as_f64())
                        .collect(),
                )
            };
            let mut row = json!({"method": method, "conns": c});
            for &t in &targets {
                let mut cpu = serde_json::Map::new();
                for g in GROUPS.iter().chain(["total"].iter()) {
                    let mut m = serde_json::Map::new();
                    for k in ["cpu_us", "user_us", "sys_us", "vcsw", "ivcsw"] {
                        m.insert(k.into(), json!(pick(t, &["cpu_per_request", g, k])));
                    }
                    cpu.insert((*g).to_owned(), Value::Object(m));
                }
                row[t] = json!({
                    "rps": pick(t, &["rps"]),
                    "p50_ms": pick(t, &["p50_us"]) / 1000.0,
                    "p99_ms": pick(t, &["p99_us"]) / 1000.0,
                    "other_cores": pick(t, &["cpu", "other_cores"]),
                    "cpu_per_request": cpu,
                });
            }
            // Ratios within each round (the runs back to back, so under about
            // the same noise), then the median over rounds.
            let round_ratio = |key: &str, base: &str| -> f64 {
                let value = |round: u64, target: &str| {
                    runs.iter()
                        .find(|r| {
                            r["method"] == method
                                && r["conns"] == c
                                && r["round"] == round
                                && r["target"] == target
                        })
                        .and_then(|r| r[key].as_f64())
                };
                let rounds: BTreeSet<u64> = runs
                    .iter()
                    .filter(|r| r["method"] == method && r["conns"] == c)
                    .filter_map(|r| r["round"].as_u64())
                    .collect();
                util::median(
                    rounds
                        .into_iter()
                        .filter_map(|round| Some(value(round, "oidcvault")? / value(round, base)?))
                        .collect(),
                )
            };
            row["ratio_vs_http_ceiling"] = json!(round_ratio("rps", "http_ceiling"));
            row["ratio_vs_storage_ceiling"] = json!(round_ratio("rps", "storage_ceiling"));
            row["ratio_vs_matched_baseline"] = json!(round_ratio("rps", "matched_baseline"));
            row["ratio_vs_ceiling"] = json!(round_ratio("rps", ceiling(method)));
            row["p99_ratio_vs_matched_baseline"] = json!(round_ratio("p99_us", "matched_baseline"));
            if targets.contains(&COMPARE) {
                row["ratio_vs_compare"] = json!(round_ratio("rps", COMPARE));
                row["p99_ratio_vs_compare"] = json!(round_ratio("p99_us", COMPARE));
            }
            rows.push(row);
        }
    }
    let goals = goals(&rows);
    json!({"rows": rows, "goals": goals})
}

/// The targets of issue 15.
fn goals(rows: &[Value]) -> Vec<Value> {
    let find = |method: &str, c: usize| {
        rows.iter()
            .find(|r| r["method"] == method && r["conns"] == c)
    };
    let num = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    let mut goals = Vec::new();
    let mut goal = |name: String, v: f64, met: bool| {
        goals.push(json!({"goal": name, "value": v, "met": met}));
    };
    if let Some(r) = find("GET", 32) {
        let v = num(&r["ratio_vs_http_ceiling"]);
        goal(
            "GET at 32 connections >= 0.8 x HTTP ceiling".into(),
            v,
            v >= 0.8,
        );
    }
    if let Some(r) = find("POST", 32) {
        let v = num(&r["ratio_vs_matched_baseline"]);
        goal(
            "durable POST at 32 connections >= 0.8 x matched storage baseline".into(),
            v,
            v >= 0.8,
        );
        let v = num(&r["ratio_vs_storage_ceiling"]);
        goal(
            "durable POST at 32 connections >= 0.5 x single-insert storage ceiling".into(),
            v,
            v >= 0.5,
        );
    }
    if let (Some(a), Some(b)) = (find("POST", 32), find("POST", 256)) {
        let v = num(&b["oidcvault"]["rps"]) / num(&a["oidcvault"]["rps"]);
        goal(
            "POST throughput at 256 connections / at 32 >= 1 (no collapse)".into(),
            v,
            v >= 1.0,
        );
    }
    for method in ["GET", "POST"] {
        if let Some(r) = find(method, 32) {
            let v = num(&r["oidcvault"]["p99_ms"]);
            goal(
                format!("{method} p99 at 32 connections < 10 ms"),
                v,
                v < 10.0,
            );
        }
    }
    if let Some(r) = find("POST", 256) {
        let v = num(&r["p99_ratio_vs_matched_baseline"]);
        goal(
            "POST p99 at 256 connections <= 2 x the matched baseline's".into(),
            v,
            v <= 2.0,
        );
    }
    goals
}

pub fn markdown(summary: &Value) -> String {
    let rows: Vec<&Value> = summary["rows"].as_array().into_iter().flatten().collect();
    let f = |r: &Value, t: &str, k: &str| r[t][k].as_f64().unwrap_or(f64::NAN);
    let num = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    let targets = targets_of(|| rows.iter().any(|r| r.get(COMPARE).is_some()));
    let mut s = String::from(
        "Throughput (req/s, median over rounds) and ratios (within a round, median):\n\n\
         | method | conns | oidcvault | matched baseline | HTTP ceiling | storage ceiling | oidcvault / matched (our code) | oidcvault / ceiling (whole product) | oidcvault / HTTP | oidcvault / storage | other load (cores) |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in &rows {
        let other = TARGETS
            .iter()
            .map(|t| f(r, t, "other_cores"))
            .fold(0.0f64, f64::max);
        s.push_str(&format!(
            "| {} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.2} | {:.2} ({}) | {:.2} | {:.2} | ≤ {:.2} |\n",
            r["method"].as_str().unwrap_or(""),
            r["conns"],
            f(r, "oidcvault", "rps"),
            f(r, "matched_baseline", "rps"),
            f(r, "http_ceiling", "rps"),
            f(r, "storage_ceiling", "rps"),
            num(&r["ratio_vs_matched_baseline"]),
            num(&r["ratio_vs_ceiling"]),
            if r["method"] == "GET" { "HTTP" } else { "storage" },
            num(&r["ratio_vs_http_ceiling"]),
            num(&r["ratio_vs_storage_ceiling"]),
            other,
        ));
    }
    s.push_str(
        "\nLatency (ms, p50 / p99, median over rounds):\n\n\
         | method | conns | oidcvault | matched baseline | HTTP ceiling | storage ceiling | oidcvault p99 / matched p99 |\n\
         |---|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in &rows {
        let lat = |t: &str| format!("{:.2} / {:.2}", f(r, t, "p50_ms"), f(r, t, "p99_ms"));
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {:.2} |\n",
            r["method"].as_str().unwrap_or(""),
            r["conns"],
            lat("oidcvault"),
            lat("matched_baseline"),
            lat("http_ceiling"),
            lat("storage_ceiling"),
            num(&r["p99_ratio_vs_matched_baseline"]),
        ));
    }
    s.push_str(
        "\nServer CPU per request by thread group (µs of user + system time, from \
         /proc/PID/task/*; median over rounds), and context switches per request:\n\n\
         | method | conns | server | actix workers | sled IO | group commit | log writer | other | ended threads | total (user + sys) | voluntary cs | involuntary cs |\n\
         |---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in &rows {
        for &t in &targets {
            let cpu = &r[t]["cpu_per_request"];
            let g = |name: &str, k: &str| num(&cpu[name][k]);
            let mut line = format!(
                "| {} | {} | {} |",
                r["method"].as_str().unwrap_or(""),
                r["conns"],
                t.replace('_', " ")
            );
            for name in GROUPS {
                line.push_str(&format!(" {:.1} |", g(name, "cpu_us")));
            }
            line.push_str(&format!(
                " {:.1} ({:.1} + {:.1}) | {:.2} | {:.2} |\n",
                g("total", "cpu_us"),
                g("total", "user_us"),
                g("total", "sys_us"),
                g("total", "vcsw"),
                g("total", "ivcsw"),
            ));
            s.push_str(&line);
        }
    }
    if targets.contains(&COMPARE) {
        s.push_str(
            "\noidcvault against the compared build (`--compare`), in the same rounds:\n\n\
             | method | conns | oidcvault req/s | compared req/s | ratio | oidcvault p99 ms | compared p99 ms | p99 ratio | oidcvault µs/req | compared µs/req |\n\
             |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        );
        for r in &rows {
            let cpu = |t: &str| num(&r[t]["cpu_per_request"]["total"]["cpu_us"]);
            s.push_str(&format!(
                "| {} | {} | {:.0} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {:.1} | {:.1} |\n",
                r["method"].as_str().unwrap_or(""),
                r["conns"],
                f(r, "oidcvault", "rps"),
                f(r, COMPARE, "rps"),
                num(&r["ratio_vs_compare"]),
                f(r, "oidcvault", "p99_ms"),
                f(r, COMPARE, "p99_ms"),
                num(&r["p99_ratio_vs_compare"]),
                cpu("oidcvault"),
                cpu(COMPARE),
            ));
        }
    }
    s.push('\n');
    s.push_str(&util::goal_rows("goal", &summary["goals"]));
    s
}
