//! `bench profile`: where the instructions of a POST go. The release server runs
//! under valgrind's callgrind (`perf` cannot count instructions on this VM: `perf
//! stat -e instructions` is "not supported"), with instrumentation switched on
//! only once it is ready (so the Argon2 derivation at startup is not counted),
//! while wrk POSTs the seed's example body; the inclusive cost of the parts of a
//! request is divided by the number of requests served.
//!
//! callgrind counts user-space instructions: time spent in the kernel (socket
//! writes, the log file, fdatasync) and waiting is not in it; the load benchmark's
//! latencies cover that.

use std::process::Command;

use serde_json::{json, Value};

use crate::populate;
use crate::util::{self, Server, Workload};
use crate::Args;

/// (label, function-name fragments; the largest inclusive cost among matches).
const PARTS: &[(&str, &[&str])] = &[
    (
        "HTTP/1 parsing and dispatch (actix-http)",
        &["actix_http::h1::codec::Codec as tokio_util::codec::decoder::Decoder>::decode"],
    ),
    (
        "routing (actix-router)",
        &["actix_router::router::Router<T,U>::recognize_fn"],
    ),
    (
        "authentication (token parse, SHA-256, lookup)",
        &["oidcvault::api::authenticate"],
    ),
    ("reading the body", &["oidcvault::api::read_json_body"]),
    (
        "enterprise domain lookup",
        &["oidcvault::api::enterprise_domain"],
    ),
    (
        "validation (parse_patch)",
        &["oidcvault::api::oidc_config::parse_patch"],
    ),
    (
        "sealing the secret (AES-256-GCM)",
        &[
            "oidcvault::crypto::keyring::Keyring>::seal",
            "Keyring>::seal",
        ],
    ),
    (
        "store update: sled transaction",
        &["sled::transaction::Transactional::transaction"],
    ),
    (
        "store update: sled compare-and-swap",
        &[
            "sled::tree::Tree>::compare_and_swap",
            "Tree::compare_and_swap",
        ],
    ),
    (
        "group commit: sled flush + fdatasync (flusher thread)",
        &["oidcvault::store::commit::Flusher::sync"],
    ),
    (
        "sled background threads (IO buffer writes)",
        &["sled::threadpool::perform_work"],
    ),
    (
        "response: timestamps (format_micros)",
        &["oidcvault::time::format_micros"],
    ),
    (
        "response: JSON serialisation",
        &["actix_web::response::builder::HttpResponseBuilder::json"],
    ),
    (
        "log lines (tracing-subscriber fmt)",
        &["tracing_core::event::Event::dispatch"],
    ),
    (
        "memset (all callers)",
        &["__memset_avx2_unaligned_erms", "memset"],
    ),
    ("malloc (all callers)", &["malloc.c:malloc"]),
];

/// What both tools profile: the target, the method and load, and the data loaded
/// through the library into a fresh work folder.
struct Setup {
    secs: u64,
    conns: usize,
    target: String,
    method: &'static str,
    results_dir: std::path::PathBuf,
    work: std::path::PathBuf,
    config: std::path::PathBuf,
    creds: Vec<util::Cred>,
}

fn setup(
    args: &Args,
    name: &str,
    secs: u64,
    conns: usize,
    domains: usize,
) -> Result<Setup, String> {
    let secs: u64 = args.get("duration", secs)?;
    let conns: usize = args.get("conns", conns)?;
    // The ceilings can be profiled the same way, for comparison.
    let target: String = args.get("server", "oidcvault".to_owned())?;
    let method: String = args.get("method", "POST".to_owned())?;
    let method: &'static str = match method.as_str() {
        "POST" => "POST",
        "GET" => "GET",
        other => return Err(format!("--method {other}: GET or POST")),
    };
    let (results_dir, work) = util::dirs(name)?;
    let config = populate::write_home(&work.join("oidcvault"))?;
    let creds = populate::populate(&config, domains)?.creds;
    Ok(Setup {
        secs,
        conns,
        target,
        method,
        results_dir,
        work,
        config,
        creds,
    })
}

/// Append the target server's program and arguments to `cmd` (a tool such as
/// valgrind may come first); the path that says it is ready, if it has one.
fn add_target(cmd: &mut Command, s: &Setup) -> Result<Option<&'static str>, String> {
    match s.target.as_str() {
        "oidcvault" => {
            // From a file, not the environment: with a secret in its environment
            // oidcvault executes itself again (`/proc/self/exe`, src/startup.rs),
            // which under valgrind is valgrind's own tool and refuses to run.
            let file = s.work.join("passphrase");
            std::fs::write(&file, util::PASSPHRASE)
                .and_then(|()| {
                    use std::os::unix::fs::PermissionsExt;
                    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))
                })
                .map_err(|e| format!("writing {}: {e}", file.display()))?;
            cmd.arg(util::binary("oidcvault")?)
                .arg("--config")
                .arg(&s.config)
                .arg("serve")
                .env("OIDCVAULT_MASTER_PASSPHRASE_FILE", &file);
            Ok(Some("/readyz"))
        }
        "storage_ceiling" => {
            cmd.arg(util::binary("baseline_store")?)
                .arg(s.work.join("baseline-store"))
                .arg("127.0.0.1:0");
            Ok(None)
        }
        "http_ceiling" => {
            cmd.arg(util::binary("baseline_http")?).arg("127.0.0.1:0");
            Ok(None)
        }
        other => Err(format!(
            "--server {other}: oidcvault, http_ceiling or storage_ceiling"
        )),
    }
}

pub fn run(args: &Args) -> Result<(), String> {
    let tool: String = args.get("tool", "callgrind".to_owned())?;
    if tool == "perf" {
        return run_perf(args);
    }
    if tool != "callgrind" {
        return Err(format!("--tool {tool}: callgrind or perf"));
    }
    let setup = setup(args, "profile", 20, 4, 64)?;
    let Setup {
        secs,
        conns,
        ref target,
        method,
        ref results_dir,
        ref work,
        ref creds,
        ..
    } = setup;
    let out = work.join("callgrind.out");
    let mut cmd = util::command("valgrind");
    cmd.arg("--tool=callgrind")
        .arg("--instr-atstart=no")
        .arg(format!("--callgrind-out-file={}", out.display()));
    let ready = add_target(&mut cmd, &setup)?;
    println!("== profile: {target} under callgrind, {method} at {conns} connections for {secs} s");
    let server = Server::spawn(
        &format!("{target} (callgrind)"),
        cmd,
        &work.join("server.log"),
        ready,
    )
    .map_err(|e| format!("{e} (is valgrind installed? apt-get install valgrind)"))?;
    let on = Command::new("callgrind_control")
        .args(["-i", "on", &server.pid().to_string()])
        .output()
        .map_err(|e| format!("callgrind_control: {e}"))?;
    if !on.status.success() {
        return Err(format!(
            "callgrind_control -i on failed: {}",
            String::from_utf8_lossy(&on.stderr)
        ));
    }
    let (script, wrk_out) = util::prepare_wrk(work, method, creds, &Workload::Fixed(method))?;
    let load = util::run_wrk(&server, &script, &wrk_out, conns, 1, secs)?;
    server.stop()?;
    let requests = load["requests"].as_f64().unwrap_or(0.0);
    if requests < 1.0 || load["errors"].as_f64().unwrap_or(1.0) > 0.0 {
        return Err(format!("the profiled load failed: {load}"));
    }
    let annotate = Command::new("callgrind_annotate")
        .arg("--inclusive=yes")
        .arg("--threshold=100")
        .arg(&out)
        .output()
        .map_err(|e| format!("callgrind_annotate: {e}"))?;
    let text = String::from_utf8_lossy(&annotate.stdout);
    let (total, costs) = parse_annotate(&text);
    let per = |ir: f64| (ir / requests).round();
    let mut rows = Vec::new();
    let mut md = format!(
        "{target}: {method} (POST: the seed's example body), {requests:.0} requests at {conns} connections under callgrind; \
         {:.0} instructions per request in all (user space; kernel time and waiting not included).\n\n\
         | part (inclusive: a part's callees are in it) | instructions per request | share |\n|---|---:|---:|\n",
        per(total)
    );
    for (label, fragments) in PARTS {
        let ir = costs
            .iter()
            .filter(|(name, _)| fragments.iter().any(|f| name.contains(f)))
            .map(|(_, ir)| *ir)
            .fold(0.0f64, f64::max);
        md.push_str(&format!(
            "| {label} | {:.0} | {:.1} % |\n",
            per(ir),
            ir / total * 100.0
        ));
        rows.push(json!({"part": label, "instructions_per_request": per(ir), "share": ir / total}));
    }
    println!("\n{md}");
    let report = json!({
        "benchmark": "profile",
        "server": target,
        "method": method,
        "machine": util::machine(),
        "requests": requests,
        "instructions_per_request": per(total),
        "parts": rows,
        "top_inclusive": costs.iter().take(60).map(|(n, ir)| json!({"function": n, "instructions_per_request": per(*ir)})).collect::<Vec<Value>>(),
    });
    let json_text = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
    let name = match (target.as_str(), method) {
        ("oidcvault", "POST") => "profile".to_owned(),
        (t, m) => format!("profile-{t}-{m}"),
    };
    util::write(&results_dir.join(format!("{name}.json")), &json_text)?;
    util::write(&results_dir.join(format!("{name}.md")), &md)?;
    util::write(&results_dir.join(format!("{name}-annotate.txt")), &text)?;
    println!(
        "written to {}/{name}.{{json,md}}; raw: {} (callgrind_annotate it for more)",
        results_dir.display(),
        out.display()
    );
    Ok(())
}

/// `--tool perf`: where the wall-clock CPU time of the server goes, kernel
/// included (callgrind counts only user-space instructions, and on this VM most of
/// a durable POST's CPU is in the kernel: thread switches, syscalls). `perf
/// record -e cpu-clock` samples the running release server (no valgrind
/// slow-down) while wrk loads it at full speed; the report lists the hottest
/// symbols (self time) and the shares of user space and kernel.
fn run_perf(args: &Args) -> Result<(), String> {
    let setup = setup(args, "profile-perf", 10, 32, 256)?;
    let Setup {
        secs,
        conns,
        ref target,
        method,
        ref results_dir,
        ref work,
        ref creds,
        ..
    } = setup;
    let mut cmd = util::niced();
    let ready = add_target(&mut cmd, &setup)?;
    println!(
        "== profile: {target} under perf (cpu-clock), {method} at {conns} connections for {secs} s"
    );
    let server = Server::spawn(target, cmd, &work.join("server.log"), ready)?;
    let data = work.join("perf.data");
    let mut perf = Command::new("perf")
        .args(["record", "-e", "cpu-clock", "-F", "4000", "-g", "-o"])
        .arg(&data)
        .args(["-p", &server.pid().to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("perf: {e} (apt-get install linux-perf)"))?;
    let (script, wrk_out) = util::prepare_wrk(work, method, creds, &Workload::Fixed(method))?;
    let load = util::run_wrk(&server, &script, &wrk_out, conns, 1, secs)?;
    // perf writes its data on SIGINT.
    let _ = Command::new("kill")
        .args(["-INT", &perf.id().to_string()])
        .status();
    let _ = perf.wait();
    server.stop()?;
    let report = Command::new("perf")
        .args([
            "report",
            "--no-children",
            "--stdio",
            "-g",
            "none",
            "--percent-limit",
            "0.3",
            "--sort",
            "dso,sym",
            "-i",
        ])
        .arg(&data)
        .output()
        .map_err(|e| format!("perf report: {e}"))?;
    let text = String::from_utf8_lossy(&report.stdout).into_owned();
    let kernel: f64 = text
        .lines()
        .filter(|l| l.contains("[kernel.kallsyms]"))
        .filter_map(|l| l.trim().split('%').next()?.trim().parse::<f64>().ok())
        .sum();
    let summary = format!(
        "{target}: {method} at {conns} connections, {} req/s, server CPU {} cores; \
         kernel symbols above 0.3 %: {kernel:.1} % of the samples",
        load["rps"], load["cpu"]["server_cores"]
    );
    println!("{summary}\n{text}");
    let name = format!("profile-perf-{target}-{method}");
    util::write(
        &results_dir.join(format!("{name}.txt")),
        &format!("{summary}\n\n{text}"),
    )?;
    println!(
        "written to {}/{name}.txt; raw: {} (perf report -i it for call graphs)",
        results_dir.display(),
        data.display()
    );
    Ok(())
}

/// (program total, [(function, inclusive Ir)] in the annotate order: largest first).
fn parse_annotate(text: &str) -> (f64, Vec<(String, f64)>) {
    let mut total = 0.0;
    let mut costs = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        let Some((num, rest)) = line.split_once(' ') else {
            continue;
        };
        let Ok(ir) = num.replace(',', "").parse::<f64>() else {
            continue;
        };
        if rest.contains("PROGRAM TOTALS") {
            total = ir;
            continue;
        }
        // "(12.34%)  file:function [object]"
        let name = rest
            .split_once(")  ")
            .map(|(_, n)| n)
            .unwrap_or(rest)
            .trim()
            .to_owned();
        costs.push((name, ir));
    }
    (total.max(1.0), costs)
}
