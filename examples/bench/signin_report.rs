//! The sign-in benchmark's summary (medians over rounds, ratios within a round)
//! and its Markdown tables.

use serde_json::{json, Value};

use crate::signin::KINDS;

fn median(mut xs: Vec<f64>) -> f64 {
    xs.retain(|x| x.is_finite());
    xs.sort_by(|a, b| a.total_cmp(b));
    match xs.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => xs[n / 2],
        n => (xs[n / 2 - 1] + xs[n / 2]) / 2.0,
    }
}

/// Per connection count: medians over rounds, the ratios within each round.
pub fn summarize(runs: &[Value], conns: &[usize]) -> Value {
    let mut rows = Vec::new();
    for &c in conns {
        let of = |kind: &str| -> Vec<&Value> {
            runs.iter()
                .filter(|r| r["kind"] == kind && r["conns"] == c)
                .collect()
        };
        let med = |kind: &str, f: &dyn Fn(&Value) -> Option<f64>| {
            median(of(kind).into_iter().filter_map(f).collect())
        };
        let ratio = |f: &dyn Fn(&Value, &Value) -> Option<f64>| {
            median(
                of("signin")
                    .into_iter()
                    .filter_map(|s| {
                        let b = of("idp_only")
                            .into_iter()
                            .find(|b| b["round"] == s["round"])?;
                        f(s, b)
                    })
                    .collect(),
            )
        };
        let failures: u64 = runs
            .iter()
            .filter(|r| r["conns"] == c)
            .filter_map(|r| r["failures"].as_u64())
            .sum();
        let mut samples: Vec<Value> = Vec::new();
        for r in runs.iter().filter(|r| r["conns"] == c) {
            for f in r["failure_samples"].as_array().into_iter().flatten() {
                if samples.len() < 3 && !samples.contains(f) {
                    samples.push(f.clone());
                }
            }
        }
        let mut row = json!({"conns": c, "failures": failures, "failure_samples": samples});
        for kind in KINDS {
            row[kind] = json!({
                "rate": med(kind, &|r| r["rate"].as_f64()),
                "p50_ms": med(kind, &|r| r["p50_ms"].as_f64()),
                "p99_ms": med(kind, &|r| r["p99_ms"].as_f64()),
                "oidcvault_us": med(kind, &|r| r["cpu"]["oidcvault_us_per_op"].as_f64()),
                "idp_us": med(kind, &|r| r["cpu"]["idp_us_per_op"].as_f64()),
                "browsers_us": med(kind, &|r| r["cpu"]["browsers_us_per_op"].as_f64()),
                "other_cores_max": of(kind).iter()
                    .filter_map(|r| r["cpu"]["other_cores"].as_f64()).fold(0.0, f64::max),
                "mean_step_ms": of(kind).first().map(|r| r["mean_step_ms"].clone()),
            });
        }
        row["rate_ratio"] = json!(ratio(&|s, b| Some(
            s["rate"].as_f64()? / b["rate"].as_f64()?
        )));
        row["cpu_ratio"] = json!(ratio(&|s, b| Some(
            s["cpu"]["oidcvault_us_per_op"].as_f64()? / b["cpu"]["idp_us_per_op"].as_f64()?
        )));
        rows.push(row);
    }
    json!({"rows": rows})
}

pub fn markdown(summary: &Value, report: &Value) -> String {
    let set = &report["settings"];
    let mut s = format!(
        "`bench signin --duration {} --rounds {} --conns {}` (oidcvault: shipped defaults, \
         outbound.max_concurrent_fetches = {}); {} CPUs, load average {} at the start, {} at the end. \
         Medians over rounds; ratios within a round, then their median.\n\n",
        set["duration_secs"],
        set["rounds"],
        set["conns"]
            .as_array()
            .map(|a| a.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(","))
            .unwrap_or_default(),
        set["max_concurrent_fetches"],
        report["machine"]["cpus"],
        report["machine"]["loadavg_at_start"].as_str().unwrap_or("?"),
        report["loadavg_at_end"].as_str().unwrap_or("?"),
    );
    s.push_str(
        "| conns | sign-ins/s | p50 ms | p99 ms | failures (all runs) | oidcvault CPU µs / sign-in | stub IdP CPU µs / sign-in | \
         IdP round trips/s (baseline) | p50 ms | p99 ms | stub IdP CPU µs / round trip | sign-ins / round trips | \
         oidcvault CPU / IdP CPU | other load (cores) |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    let rows = summary["rows"].as_array().cloned().unwrap_or_default();
    for r in &rows {
        let f = |k: &str, f: &str| r[k][f].as_f64().unwrap_or(f64::NAN);
        s.push_str(&format!(
            "| {} | {:.1} | {:.2} | {:.2} | {} | {:.0} | {:.0} | {:.1} | {:.2} | {:.2} | {:.0} | {:.2} | {:.1} | ≤ {:.2} |\n",
            r["conns"],
            f("signin", "rate"), f("signin", "p50_ms"), f("signin", "p99_ms"), r["failures"],
            f("signin", "oidcvault_us"), f("signin", "idp_us"),
            f("idp_only", "rate"), f("idp_only", "p50_ms"), f("idp_only", "p99_ms"),
            f("idp_only", "idp_us"),
            r["rate_ratio"].as_f64().unwrap_or(f64::NAN),
            r["cpu_ratio"].as_f64().unwrap_or(f64::NAN),
            f("signin", "other_cores_max").max(f("idp_only", "other_cores_max")),
        ));
    }
    for r in &rows {
        for f in r["failure_samples"].as_array().into_iter().flatten() {
            s.push_str(&format!(
                "\nA failure at {} connections: {}\n",
                r["conns"],
                f.as_str().unwrap_or("")
            ));
        }
    }
    s.push_str("\nMean time of each step of a sign-in (ms, first round):\n\n| conns | /sso/authorize | IdP authorize | /sso/callback (with the IdP token exchange) | /sso/token | baseline: IdP authorize | baseline: IdP token exchange |\n|---:|---:|---:|---:|---:|---:|---:|\n");
    for r in &rows {
        let st = |k: &str, n: &str| r[k]["mean_step_ms"][n].as_f64().unwrap_or(f64::NAN);
        s.push_str(&format!(
            "| {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |\n",
            r["conns"],
            st("signin", "authorize"),
            st("signin", "idp_authorize"),
            st("signin", "callback"),
            st("signin", "token"),
            st("idp_only", "idp_authorize"),
            st("idp_only", "callback"),
        ));
    }
    s.push_str(&format!(
        "\nES256 with jsonwebtoken in the driver: sign {} µs, verify {} µs. oidcvault log: {} lines, {} WARN/ERROR.\n",
        report["es256"]["sign_us"], report["es256"]["verify_us"],
        report["oidcvault_log"]["lines"], report["oidcvault_log"]["warn_or_error"],
    ));
    s
}
