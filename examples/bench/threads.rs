//! CPU per request by thread group, from /proc: each thread's utime and stime
//! (`/proc/PID/task/TID/stat`) and context switches (`.../status`), sampled
//! right before and after a wrk run, grouped by thread name (`.../comm`, 15
//! characters at most). Threads that ended during the run are not listed at
//! the end: their CPU is what the process's own total (`/proc/PID/stat`, which
//! keeps the time of ended threads) has beyond the listed threads'
//! (`ended threads`). /proc counts in clock ticks (10 ms): per request this is
//! exact enough over a run of thousands of requests.

use std::collections::BTreeMap;

use serde_json::{json, Value};

/// The groups, in table order: (name, test on the thread name).
pub const GROUPS: [&str; 6] = [
    "actix workers",
    "sled IO",
    "group commit",
    "log writer",
    "other",
    "ended threads",
];

/// The group of a thread name: actix-server's workers (under an actix System,
/// as here, each is an arbiter: `actix-rt|system:0|arbiter:N`, cut to 15
/// characters; `actix-server worker N` without one); sled's IO pool and its
/// periodic log flusher; oidcvault's group-commit flusher; its log writer;
/// everything else (the main thread, the acceptor, DNS, ...). Checked by
/// running the server: `cat /proc/PID/task/*/comm`.
pub fn group(comm: &str) -> &'static str {
    if comm.starts_with("actix-rt|system") || comm.starts_with("actix-server wo") {
        "actix workers"
    } else if comm.starts_with("sled-io") || comm == "log flusher" {
        "sled IO"
    } else if comm.starts_with("oidcvault-commi") {
        "group commit"
    } else if comm.starts_with("oidcvault-log") {
        "log writer"
    } else {
        "other"
    }
}

/// One thread's counters.
#[derive(Clone, Copy, Default)]
struct Counters {
    user: u64,
    sys: u64,
    vcsw: u64,
    ivcsw: u64,
}

/// Every thread of a process (by tid: its group and counters) and the
/// process's own utime + stime.
pub struct Sample {
    threads: BTreeMap<String, (&'static str, Counters)>,
    process: (u64, u64),
}

/// (utime, stime) of a stat line.
fn stat_times(stat: &str) -> (u64, u64) {
    // Fields after the command name, which is in parentheses: rest[0] is
    // field 3 (state); utime is field 14 (index 11), stime field 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    (
        f.get(11).copied().unwrap_or(0),
        f.get(12).copied().unwrap_or(0),
    )
}

pub fn sample(pid: u32) -> Sample {
    let mut threads = BTreeMap::new();
    let dir = format!("/proc/{pid}/task");
    for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let tid = e.file_name().to_string_lossy().into_owned();
        let read = |f: &str| std::fs::read_to_string(format!("{dir}/{tid}/{f}")).ok();
        let (Some(comm), Some(stat), Some(status)) = (read("comm"), read("stat"), read("status"))
        else {
            continue; // ended meanwhile
        };
        let (user, sys) = stat_times(&stat);
        let c = Counters {
            user,
            sys,
            vcsw: crate::util::status_field(&status, "voluntary_ctxt_switches:"),
            ivcsw: crate::util::status_field(&status, "nonvoluntary_ctxt_switches:"),
        };
        threads.insert(tid, (group(comm.trim()), c));
    }
    let process =
        stat_times(&std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default());
    Sample { threads, process }
}

/// Per group, per request: CPU in µs (user, system, total) and context
/// switches (voluntary, involuntary); plus the thread counts.
pub fn per_request(before: &Sample, after: &Sample, requests: f64) -> Value {
    const US_PER_TICK: f64 = 1e6 / 100.0;
    let mut sums: BTreeMap<&str, (Counters, usize)> = BTreeMap::new();
    let (mut user_listed, mut sys_listed) = (0u64, 0u64);
    for (tid, (g, a)) in &after.threads {
        let b = before.threads.get(tid).map(|(_, c)| *c).unwrap_or_default();
        let d = Counters {
            user: a.user.saturating_sub(b.user),
            sys: a.sys.saturating_sub(b.sys),
            vcsw: a.vcsw.saturating_sub(b.vcsw),
            ivcsw: a.ivcsw.saturating_sub(b.ivcsw),
        };
        user_listed += d.user;
        sys_listed += d.sys;
        let s = sums.entry(g).or_default();
        s.0.user += d.user;
        s.0.sys += d.sys;
        s.0.vcsw += d.vcsw;
        s.0.ivcsw += d.ivcsw;
        s.1 += 1;
    }
    // Threads that ended during the run (and those sampled before only).
    let ended = sums.entry("ended threads").or_default();
    ended.0.user = (after.process.0.saturating_sub(before.process.0)).saturating_sub(user_listed);
    ended.0.sys = (after.process.1.saturating_sub(before.process.1)).saturating_sub(sys_listed);
    let n = requests.max(1.0);
    let round = |x: f64| (x * 100.0).round() / 100.0;
    let mut out = serde_json::Map::new();
    let (mut tu, mut ts, mut tv, mut ti) = (0, 0, 0, 0);
    for g in GROUPS {
        let (c, threads) = sums.get(g).copied().unwrap_or_default();
        tu += c.user;
        ts += c.sys;
        tv += c.vcsw;
        ti += c.ivcsw;
        out.insert(
            g.to_owned(),
            json!({
                "threads": threads,
                "user_us": round(c.user as f64 * US_PER_TICK / n),
                "sys_us": round(c.sys as f64 * US_PER_TICK / n),
                "cpu_us": round((c.user + c.sys) as f64 * US_PER_TICK / n),
                "vcsw": round(c.vcsw as f64 / n),
                "ivcsw": round(c.ivcsw as f64 / n),
            }),
        );
    }
    out.insert(
        "total".to_owned(),
        json!({
            "user_us": round(tu as f64 * US_PER_TICK / n),
            "sys_us": round(ts as f64 * US_PER_TICK / n),
            "cpu_us": round((tu + ts) as f64 * US_PER_TICK / n),
            "vcsw": round(tv as f64 / n),
            "ivcsw": round(ti as f64 / n),
        }),
    );
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_by_thread_name() {
        assert_eq!(group("actix-server wo"), "actix workers");
        assert_eq!(group("actix-rt|system"), "actix workers");
        assert_eq!(group("actix-server ac"), "other");
        assert_eq!(group("sled-io-3"), "sled IO");
        assert_eq!(group("log flusher"), "sled IO");
        assert_eq!(group("oidcvault-commi"), "group commit");
        assert_eq!(group("oidcvault-log"), "log writer");
        assert_eq!(group("oidcvault"), "other");
    }

    #[test]
    fn stat_fields_after_a_name_with_spaces() {
        let line = "12 (actix-server wo) S 1 2 3 4 5 6 7 8 9 10 111 222 0 0 20 0";
        assert_eq!(stat_times(line), (111, 222));
    }

    #[test]
    fn per_request_counts_ended_threads_from_the_process_total() {
        let c = |user, sys| Counters {
            user,
            sys,
            vcsw: 10,
            ivcsw: 1,
        };
        let before = Sample {
            threads: [("1".to_owned(), ("actix workers", c(0, 0)))].into(),
            process: (0, 0),
        };
        let after = Sample {
            threads: [("1".to_owned(), ("actix workers", c(100, 50)))].into(),
            process: (120, 60),
        };
        let v = per_request(&before, &after, 1000.0);
        assert_eq!(v["actix workers"]["cpu_us"], 1500.0);
        assert_eq!(v["ended threads"]["cpu_us"], 300.0);
        assert_eq!(v["total"]["cpu_us"], 1800.0);
    }
}
