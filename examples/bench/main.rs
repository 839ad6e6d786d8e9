//! The load and scale benchmarks (see BENCHMARKS.md). `scripts/bench.sh` builds
//! everything in release mode and runs this; by hand:
//!
//! ```text
//! cargo build --release --bin oidcvault --example baseline_http --example baseline_store --example baseline_matched --example bench
//! target/release/examples/bench load  [--duration SECS] [--conns 1,32,256] [--rounds N] [--domains N] [--wrk-threads N] [--log-level info] [--compare OTHER_OIDCVAULT_BINARY]
//! target/release/examples/bench load --backend etcd [the same] [--nodes 1,2] [--targets oidcvault,etcd_ceiling]
//! target/release/examples/bench scale [--domains 10000,100000] [--mixed-secs SECS]
//! target/release/examples/bench profile [--duration SECS] [--conns N] [--server oidcvault|http_ceiling|storage_ceiling] [--method POST|GET]
//! target/release/examples/bench signin [--duration SECS] [--conns 1,8,32] [--rounds N] [--users N] [--idp-workers N] [--log-level info] [--max-concurrent-fetches N]
//! ```
//!
//! `load` runs oidcvault and its three baselines (`baseline_http`: the HTTP
//! ceiling; `baseline_store`: the single-insert storage ceiling;
//! `baseline_matched`: the same storage work as oidcvault's GET and POST, on a
//! copy of its store) side by side with the same load generator (wrk) and the
//! same requests, and reports throughput, p50 and p99 latency, the ratios
//! oidcvault / baseline, and each server's CPU per request by thread group. `load --backend etcd`
//! runs oidcvault on a three-member etcd cluster it starts on loopback, one
//! node and two, beside the etcd ceiling (`baseline_etcd`). `scale` loads N domains with
//! a token and a config each through the library (the real store), then
//! measures startup (the Argon2 derivation apart), resident memory after start
//! and after mixed load, and bytes on disk per domain. `profile` counts where
//! the instructions of a POST go (callgrind). `signin` runs sign-ins through
//! the broker (authorize, a stub IdP, callback, the application's token
//! request) beside the IdP round trips alone, and the CPU of each side.
//!
//! Servers and wrk run under `nice -n -5` (`--nice N`), so that other work on a
//! shared machine disturbs them less. Results go to `target/bench-results/` (JSON and a Markdown table); scratch
//! data to `target/bench-work/` (both ignored by git). Only 127.0.0.1 is loaded.
// Tests and benchmarks may unwrap: a panic is their failure report.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]
#![forbid(unsafe_code)]

mod browser;
mod etcd;
mod idp;
mod load;
mod load_etcd;
mod load_report;
mod matched;
mod populate;
mod profile;
mod scale;
mod signin;
mod signin_report;
mod threads;
mod util;

use std::process::ExitCode;

fn usage() -> ExitCode {
    eprintln!("(every command also takes --nice N: priority of servers and wrk, default -5)");
    eprintln!(
        "usage: bench load [--duration SECS] [--conns 1,32,256] [--rounds N] [--domains N] [--wrk-threads N] [--log-level info] [--compare OIDCVAULT_BIN]\n       \
         bench load --backend etcd [the options of load] [--nodes 1,2] [--targets oidcvault,etcd_ceiling]\n       \
         bench scale [--domains 10000,100000] [--mixed-secs SECS]\n       \
         bench profile [--duration SECS] [--conns N] [--server oidcvault|http_ceiling|storage_ceiling] [--method POST|GET] [--tool callgrind|perf]\n       \
         bench signin [--duration SECS] [--conns 1,8,32] [--rounds N] [--users N] [--idp-workers N] [--log-level info] [--max-concurrent-fetches N]"
    );
    ExitCode::from(2)
}

/// `--name value` pairs after the subcommand.
pub struct Args(Vec<(String, String)>);

impl Args {
    fn parse(raw: &[String]) -> Result<Self, String> {
        let mut out = Vec::new();
        let mut it = raw.iter();
        while let Some(flag) = it.next() {
            let name = flag
                .strip_prefix("--")
                .ok_or_else(|| format!("unexpected argument {flag:?}"))?;
            let value = it.next().ok_or_else(|| format!("--{name} needs a value"))?;
            out.push((name.to_owned(), value.clone()));
        }
        Ok(Self(out))
    }

    pub fn get<T: std::str::FromStr>(&self, name: &str, default: T) -> Result<T, String> {
        match self.0.iter().rev().find(|(n, _)| n == name) {
            Some((_, v)) => v
                .parse()
                .map_err(|_| format!("--{name}: invalid value {v:?}")),
            None => Ok(default),
        }
    }

    pub fn list(&self, name: &str, default: &[usize]) -> Result<Vec<usize>, String> {
        match self.0.iter().rev().find(|(n, _)| n == name) {
            Some((_, v)) => v
                .split(',')
                .map(|x| {
                    x.trim()
                        .replace('_', "")
                        .parse()
                        .map_err(|_| format!("--{name}: invalid value {x:?}"))
                })
                .collect(),
            None => Ok(default.to_vec()),
        }
    }

    fn check_known(&self, known: &[&str]) -> Result<(), String> {
        for (n, _) in &self.0 {
            if !known.contains(&n.as_str()) {
                return Err(format!("unknown option --{n}"));
            }
        }
        Ok(())
    }
}

fn main() -> ExitCode {
    let raw: Vec<String> = std::env::args().skip(1).collect();
    let Some((command, rest)) = raw.split_first() else {
        return usage();
    };
    let args = match Args::parse(rest) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("bench: {e}");
            return usage();
        }
    };
    match args.get("nice", util::nice()) {
        Ok(n) => util::set_nice(n),
        Err(e) => {
            eprintln!("bench: {e}");
            return usage();
        }
    }
    let result = match command.as_str() {
        "load" => match args.get("backend", "sled".to_owned()) {
            Ok(b) if b == "sled" => args
                .check_known(&[
                    "backend",
                    "duration",
                    "conns",
                    "rounds",
                    "domains",
                    "wrk-threads",
                    "log-level",
                    "compare",
                ])
                .and_then(|()| load::run(&args)),
            Ok(b) if b == "etcd" => args
                .check_known(&[
                    "backend",
                    "duration",
                    "conns",
                    "rounds",
                    "domains",
                    "wrk-threads",
                    "log-level",
                    "nodes",
                    "targets",
                ])
                .and_then(|()| load_etcd::run(&args)),
            Ok(b) => Err(format!("--backend {b:?}: sled or etcd")),
            Err(e) => Err(e),
        },
        "profile" => args
            .check_known(&["duration", "conns", "server", "method", "nice", "tool"])
            .and_then(|()| profile::run(&args)),
        "signin" => args
            .check_known(&[
                "duration",
                "conns",
                "rounds",
                "users",
                "idp-workers",
                "log-level",
                "max-concurrent-fetches",
                "nice",
            ])
            .and_then(|()| signin::run(&args)),
        // The stub IdP `signin` starts as its own process (not for use by hand).
        "signin-idp" => args
            .check_known(&["client-id", "domain", "workers", "nice"])
            .and_then(|()| signin::serve_idp(&args)),
        "scale" => args
            .check_known(&["domains", "mixed-secs", "nice"])
            .and_then(|()| scale::run(&args)),
        _ => return usage(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: {e}");
            ExitCode::FAILURE
        }
    }
}
