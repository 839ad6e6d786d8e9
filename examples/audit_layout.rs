//! Issue 15, item 3: what an audited config update costs under each candidate
//! layout of the audit trail, measured on raw sled in the same run.
//!
//! Every candidate does exactly a POST's store work, as `Store::update_config`
//! does it: under a write-order lock, read the config and decode it, build
//! the new record and its audit event, seal the event into a MAC chain
//! (HMAC-SHA-256 under the real audit key, chained to the previous MAC), write
//! event and config, release the lock, and wait for a group commit (one
//! flusher thread: the chain's anchor in `meta`, sled `flush`, `fdatasync` of
//! the log, for every waiter of the batch). Stores start with `--events`
//! audit events already in their layout (so B-tree splits are those of a
//! grown trail), the shipped 16 MiB cache, 256 domains written round-robin.
//!
//! Candidates (`--layouts`):
//! - `current`: event (version 2, bincode) under its big-endian id in
//!   `audit`, then the config in `configs`, two plain inserts;
//! - `compact`: the same with a compact event (action and fields as codes,
//!   the fingerprint as 16 raw bytes, no domain name);
//! - `grouped<K>`: K consecutive events in one `audit` record (key = id / K),
//!   rewritten with each event of its group (so each change still has its
//!   event before it in the log);
//! - `same_tree`: events and configs in one tree (prefixed keys), the pair in
//!   one `apply_batch` (atomic);
//! - `same_tree_plain`: the same tree, two plain inserts;
//! - `flusher`: writers only queue (event, config) with an overlay for reads;
//!   the flusher writes the batch's events as one record, then the configs,
//!   before its flush (upper bound of "one record per group commit");
//! - `none`: the config alone (what the audit write costs at all).
//!
//! `cargo run --release --example audit_layout -- [--secs 4] [--rounds 3]
//! [--events 200000] [--writers 1,32] [--layouts current,compact,...]
//! [--domains 256]`
//! prints per round the writes/s, the ratio to `current` in the same round,
//! the store's bytes on disk added per write, and the CPU other processes
//! used (from /proc/stat, minus this process).
// An experiment, like the benchmarks: a panic is its failure report.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

use std::collections::HashMap;
use std::fs::File;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use oidcvault::crypto::{AuditKey, Keyring};
use oidcvault::store::{AuditBody, AuditRecord, ConfigRecord};

/// Domains written (`--domains`, default 256 as in the load benchmark; the
/// scale run has 100,000, written at random).
static DOMAINS: AtomicU64 = AtomicU64::new(256);

fn domains() -> u64 {
    DOMAINS.load(Ordering::Relaxed)
}
const LABEL: &[u8] = b"oidcvault/audit-entry/v2\0";

fn bc() -> impl bincode::config::Config {
    bincode::config::standard()
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Layout {
    Current,
    Compact,
    Grouped(u64),
    SameTree,
    SameTreePlain,
    Flusher,
    None,
}

impl Layout {
    fn parse(s: &str) -> Layout {
        match s {
            "current" => Layout::Current,
            "compact" => Layout::Compact,
            "same_tree" => Layout::SameTree,
            "same_tree_plain" => Layout::SameTreePlain,
            "flusher" => Layout::Flusher,
            "none" => Layout::None,
            g if g.starts_with("grouped") => Layout::Grouped(g[7..].parse().expect("grouped<K>")),
            other => panic!("unknown layout {other}"),
        }
    }
    /// The name `--layouts` takes.
    fn name(self) -> String {
        match self {
            Layout::Grouped(k) => format!("grouped{k}"),
            Layout::SameTree => "same_tree".into(),
            Layout::SameTreePlain => "same_tree_plain".into(),
            other => format!("{other:?}").to_lowercase(),
        }
    }
}

/// The config record of a domain, as the load benchmark's POST leaves it.
fn config(domain_id: u64, updated_at: i64) -> ConfigRecord {
    ConfigRecord {
        id: domain_id,
        domain_id,
        client_id: "enterprise-app-123".into(),
        secret_sealed: vec![7u8; 60],
        secret_masked: "********0rd!".into(),
        discovery_url: None,
        authorization_endpoint: None,
        token_endpoint: None,
        userinfo_endpoint: None,
        created_at: 1_764_000_000_000_000,
        updated_at,
        discovered_endpoints: Vec::new(),
        secret_origin: None,
    }
}

fn encode_config(r: &ConfigRecord) -> Vec<u8> {
    let mut out = vec![2u8];
    out.extend(bincode::encode_to_vec(r, bc()).unwrap());
    out
}

fn decode_config(b: &[u8]) -> ConfigRecord {
    bincode::decode_from_slice(&b[1..], bc()).unwrap().0
}

/// The event of a POST that sets a new secret (the load benchmark's body).
fn event(domain_id: u64, at: i64) -> AuditRecord {
    AuditRecord {
        at,
        actor: Some(domain_id + 1000),
        action: "config.update".into(),
        domain_id: Some(domain_id),
        domain: Some(format!("tenant{domain_id:06}.example.com")),
        fields: vec!["client_secret".into()],
        secret_fingerprint: Some("5f0c2a9d83be41f7a6c0d2e9b8f71a3c".into()),
        detail: None,
    }
}

/// The compact candidate's event: `(at, actor, action code, domain id, field
/// bits, raw fingerprint)`.
type CompactEvent = (i64, Option<u64>, u8, Option<u64>, u16, Option<[u8; 16]>);

/// The compact candidate: codes instead of strings, raw fingerprint, no name.
fn compact(e: &AuditRecord) -> CompactEvent {
    let fp = e.secret_fingerprint.as_ref().map(|_| [0x5fu8; 16]);
    (e.at, e.actor, 7, e.domain_id, 1, fp)
}

/// `[version] ‖ bincode(prev_id, body) ‖ mac`, chained to `prev`.
fn seal(
    key: &AuditKey,
    layout: Layout,
    id: u64,
    prev: &mut (u64, [u8; 32]),
    e: &AuditRecord,
) -> Vec<u8> {
    let signed = if layout == Layout::Compact {
        bincode::encode_to_vec((prev.0, compact(e)), bc()).unwrap()
    } else {
        bincode::encode_to_vec((prev.0, AuditBody::Event(e.clone())), bc()).unwrap()
    };
    let mac = key.mac(&[LABEL, &id.to_be_bytes(), &prev.1, &signed]);
    let mut out = Vec::with_capacity(signed.len() + 33);
    out.push(if layout == Layout::Compact { 3 } else { 2 });
    out.extend_from_slice(&signed);
    out.extend_from_slice(&mac);
    *prev = (id, mac);
    out
}

struct Db {
    db: sled::Db,
    configs: sled::Tree,
    audit: sled::Tree,
    meta: sled::Tree,
    file: Mutex<File>,
}

/// What the write-order lock guards.
struct Head {
    next_id: u64,
    prev: (u64, [u8; 32]),
    /// `grouped`: the open group's bytes (so no read of it is needed).
    group: Vec<u8>,
}

/// `flusher`: what writers queued for the next group commit.
#[derive(Default)]
struct Pending {
    events: Vec<u8>,
    first_id: Option<u64>,
    configs: Vec<(u64, Vec<u8>)>,
    overlay: HashMap<u64, Vec<u8>>,
}

struct Bench {
    layout: Layout,
    db: Db,
    key: AuditKey,
    head: Mutex<Head>,
    pending: Mutex<Pending>,
    commit: Mutex<Option<mpsc::Sender<mpsc::SyncSender<()>>>>,
}

fn audit_key(layout: Layout, id: u64) -> Vec<u8> {
    match layout {
        Layout::SameTree | Layout::SameTreePlain => [&b"a"[..], &id.to_be_bytes()].concat(),
        Layout::Grouped(k) => (id / k).to_be_bytes().to_vec(),
        _ => id.to_be_bytes().to_vec(),
    }
}

fn config_key(layout: Layout, domain: u64) -> Vec<u8> {
    match layout {
        Layout::SameTree | Layout::SameTreePlain => [&b"c"[..], &domain.to_be_bytes()].concat(),
        _ => domain.to_be_bytes().to_vec(),
    }
}

impl Bench {
    fn open(dir: &Path, layout: Layout, events: u64, key: AuditKey) -> Arc<Bench> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(16 << 20)
            .open()
            .unwrap();
        let same = matches!(layout, Layout::SameTree | Layout::SameTreePlain);
        let configs = db.open_tree(if same { "data" } else { "configs" }).unwrap();
        let audit = if same {
            configs.clone()
        } else {
            db.open_tree("audit").unwrap()
        };
        let meta = db.open_tree("meta").unwrap();
        let file = Mutex::new(File::open(dir.join("db")).unwrap());
        let b = Arc::new(Bench {
            layout,
            db: Db {
                db,
                configs,
                audit,
                meta,
                file,
            },
            key,
            head: Mutex::new(Head {
                next_id: 1,
                prev: (0, [0; 32]),
                group: Vec::new(),
            }),
            pending: Mutex::new(Pending::default()),
            commit: Mutex::new(None),
        });
        for d in 0..domains() {
            let c = encode_config(&config(d, 1));
            b.db.configs.insert(config_key(layout, d), c).unwrap();
        }
        // The grown trail, in this layout, written as the writers would.
        let mut head = b.head.lock().unwrap();
        for i in 0..events {
            let e = event(i % domains(), i as i64);
            if layout == Layout::Flusher {
                // Records of 8 events, as batches of the group commit leave them.
                b.append(
                    &mut head,
                    &e,
                    Some((i % domains(), encode_config(&config(i % domains(), 1)))),
                );
                if i % 8 == 7 {
                    drop(head);
                    b.before_flush();
                    head = b.head.lock().unwrap();
                }
            } else {
                b.append(&mut head, &e, None);
            }
        }
        drop(head);
        b.before_flush();
        b.db.db.flush().unwrap();
        b
    }

    /// Apply one event (and its config unless `flusher`/`None`) in a writer's turn.
    fn append(&self, head: &mut Head, e: &AuditRecord, config: Option<(u64, Vec<u8>)>) {
        let id = head.next_id;
        head.next_id += 1;
        let l = self.layout;
        if l == Layout::None {
            if let Some((d, c)) = config {
                self.db.configs.insert(config_key(l, d), c).unwrap();
            }
            return;
        }
        let sealed = seal(&self.key, l, id, &mut head.prev, e);
        match l {
            Layout::Grouped(k) => {
                if id.is_multiple_of(k) || head.group.is_empty() {
                    head.group.clear();
                }
                head.group
                    .extend_from_slice(&(sealed.len() as u16).to_be_bytes());
                head.group.extend_from_slice(&sealed);
                self.db
                    .audit
                    .insert(audit_key(l, id), head.group.as_slice())
                    .unwrap();
            }
            Layout::SameTree => {
                let mut batch = sled::Batch::default();
                batch.insert(audit_key(l, id), sealed);
                if let Some((d, c)) = config {
                    batch.insert(config_key(l, d), c);
                    self.db.audit.apply_batch(batch).unwrap();
                    return;
                }
                self.db.audit.apply_batch(batch).unwrap();
            }
            Layout::Flusher if config.is_some() => {
                let mut p = self.pending.lock().unwrap();
                p.first_id.get_or_insert(id);
                p.events
                    .extend_from_slice(&(sealed.len() as u16).to_be_bytes());
                p.events.extend_from_slice(&sealed);
                let (d, c) = config.unwrap();
                p.overlay.insert(d, c.clone());
                p.configs.push((d, c));
                return;
            }
            _ => {
                self.db.audit.insert(audit_key(l, id), sealed).unwrap();
            }
        }
        if let Some((d, c)) = config {
            self.db.configs.insert(config_key(l, d), c).unwrap();
        }
    }

    /// One POST's store work, without the wait.
    fn update(&self, domain: u64, at: i64) {
        let mut head = self.head.lock().unwrap();
        let key = config_key(self.layout, domain);
        // `flusher`: the overlay, else sled, both under the pending lock (the
        // flusher applies a batch under it, so a read never falls between).
        let bytes = if self.layout == Layout::Flusher {
            let p = self.pending.lock().unwrap();
            match p.overlay.get(&domain) {
                Some(b) => b.clone(),
                None => self.db.configs.get(&key).unwrap().unwrap().to_vec(),
            }
        } else {
            self.db.configs.get(&key).unwrap().unwrap().to_vec()
        };
        let mut cur = decode_config(&bytes);
        cur.updated_at = at.max(cur.updated_at + 1);
        let stored = encode_config(&cur);
        let e = event(domain, at);
        self.append(&mut head, &e, Some((domain, stored)));
    }

    /// The flusher's work before its flush: the anchor, and (`flusher`) the batch.
    fn before_flush(&self) {
        if self.layout == Layout::Flusher {
            let mut guard = self.pending.lock().unwrap();
            let p = std::mem::take(&mut *guard);
            if let Some(first) = p.first_id {
                // The batch's events first: a change on disk has its event.
                self.db.audit.insert(first.to_be_bytes(), p.events).unwrap();
                for (d, c) in p.configs {
                    self.db.configs.insert(d.to_be_bytes(), c).unwrap();
                }
            }
            drop(guard);
        }
        let prev = self.head.lock().unwrap().prev;
        let mut anchor = prev.0.to_be_bytes().to_vec();
        anchor.extend_from_slice(&prev.1);
        anchor.extend_from_slice(&self.key.mac(&[b"head", &anchor]));
        self.db.meta.insert(b"audit/head", anchor).unwrap();
    }

    fn start_commit(self: &Arc<Self>) -> std::thread::JoinHandle<()> {
        let (tx, rx) = mpsc::channel::<mpsc::SyncSender<()>>();
        *self.commit.lock().unwrap() = Some(tx);
        let me = self.clone();
        std::thread::spawn(move || {
            while let Ok(first) = rx.recv() {
                let mut batch = vec![first];
                batch.extend(rx.try_iter());
                me.before_flush();
                me.db.db.flush().unwrap();
                me.db.file.lock().unwrap().sync_data().unwrap();
                for w in batch {
                    let _ = w.send(());
                }
            }
        })
    }

    fn durable(&self) {
        let (tx, rx) = mpsc::sync_channel(1);
        self.commit
            .lock()
            .unwrap()
            .as_ref()
            .unwrap()
            .send(tx)
            .unwrap();
        rx.recv().unwrap();
    }
}

/// Busy jiffies of the machine and of this process.
fn cpu() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let f: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let busy =
        f.iter().sum::<u64>() - f.get(3).copied().unwrap_or(0) - f.get(4).copied().unwrap_or(0);
    let me = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = me.rsplit(')').next().unwrap_or("");
    let v: Vec<u64> = after
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    // Fields 14 and 15 (utime, stime) are the 12th and 13th after the ')'.
    let own = v.get(10).copied().unwrap_or(0) + v.get(11).copied().unwrap_or(0);
    (busy, own)
}

/// Run `writers` threads for `secs`: (writes/s, disk bytes added per write,
/// other load in cores, CPU µs of this process per write: less disturbed by
/// other processes than the rate is).
fn run(b: &Arc<Bench>, writers: u64, secs: f64, clock: &AtomicU64) -> (f64, f64, f64, f64) {
    let before_disk = b.db.db.size_on_disk().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let (cpu0, t0) = (cpu(), Instant::now());
    let threads: Vec<_> = (0..writers)
        .map(|w| {
            let (b, stop, done) = (b.clone(), stop.clone(), done.clone());
            let at = clock.fetch_add(1 << 40, Ordering::Relaxed) as i64;
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    // Spread over the domains (all of them, in a scrambled order).
                    let domain = (w * 7919 + n.wrapping_mul(2_654_435_761)) % domains();
                    b.update(domain, at + n as i64);
                    b.durable();
                    n += 1;
                }
                done.fetch_add(n, Ordering::Relaxed);
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs_f64(secs));
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu1 = cpu();
    let hz = 100.0;
    let other = ((cpu1.0 - cpu0.0) as f64 - (cpu1.1 - cpu0.1) as f64) / hz / elapsed;
    b.db.db.flush().unwrap();
    let n = done.load(Ordering::Relaxed) as f64;
    let disk = b.db.db.size_on_disk().unwrap() as f64 - before_disk as f64;
    let cpu_us = (cpu1.1 - cpu0.1) as f64 / hz * 1e6 / n;
    (n / elapsed, disk / n, other.max(0.0), cpu_us)
}

fn arg(args: &[String], name: &str, default: &str) -> String {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| default.to_owned())
}

/// Live key+value bytes of a tree.
fn live(t: &sled::Tree) -> (u64, u64) {
    t.iter().fold((0, 0), |(n, s), kv| {
        let (k, v) = kv.unwrap();
        (n + 1, s + (k.len() + v.len()) as u64)
    })
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let secs: f64 = arg(&args, "--secs", "4").parse().unwrap();
    let rounds: usize = arg(&args, "--rounds", "3").parse().unwrap();
    let events: u64 = arg(&args, "--events", "200000").parse().unwrap();
    let writers: Vec<u64> = arg(&args, "--writers", "1,32")
        .split(',')
        .map(|w| w.parse().unwrap())
        .collect();
    let layouts: Vec<Layout> = arg(
        &args,
        "--layouts",
        "current,compact,grouped4,grouped16,same_tree,same_tree_plain,flusher,none",
    )
    .split(',')
    .map(Layout::parse)
    .collect();
    DOMAINS.store(
        arg(&args, "--domains", "256").parse().unwrap(),
        Ordering::Relaxed,
    );
    let root = tempfile::tempdir().unwrap();
    let keyring = Keyring::generate();
    let mut loaded_disk = Vec::new();
    let benches: Vec<Arc<Bench>> = layouts
        .iter()
        .map(|&l| {
            let t = Instant::now();
            let b = Bench::open(&root.path().join(l.name()), l, events, keyring.audit_key());
            let (n, bytes) = live(&b.db.audit);
            eprintln!(
                "{:>16}: {events} events loaded in {:.1} s; audit items {n}, live {:.1} B/event, on disk {:.1} B/event",
                l.name(),
                t.elapsed().as_secs_f64(),
                bytes as f64 / events.max(1) as f64,
                b.db.db.size_on_disk().unwrap() as f64 / events.max(1) as f64,
            );
            loaded_disk.push(b.db.db.size_on_disk().unwrap());
            b
        })
        .collect();
    let handles: Vec<_> = benches.iter().map(|b| b.start_commit()).collect();
    let clock = AtomicU64::new(1_764_600_000_000_000);
    // results[writers][layout] = per-round (rate, bytes/write, other, CPU µs/write)
    type Row = (f64, f64, f64, f64);
    let mut results: HashMap<(u64, usize), Vec<Row>> = HashMap::new();
    for round in 0..rounds {
        for &w in &writers {
            let mut order: Vec<usize> = (0..benches.len()).collect();
            order.rotate_left(round % benches.len().max(1));
            if round % 2 == 1 {
                order.reverse();
            }
            for i in order {
                let r = run(&benches[i], w, secs, &clock);
                println!(
                    "round {round} writers {w:>2} {:>16}: {:>8.0} writes/s  {:>6.1} CPU µs/write  {:>7.0} B on disk/write  other load {:.2}",
                    layouts[i].name(),
                    r.0,
                    r.3,
                    r.1,
                    r.2
                );
                results.entry((w, i)).or_default().push(r);
            }
        }
    }
    println!("\n| layout | writers | writes/s (median) | ratio to current (median of rounds) | CPU µs/write (median) | CPU ratio to current | disk B/write (median) | other load (max) |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    let median = |mut v: Vec<f64>| {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v[v.len() / 2]
    };
    let base = layouts.iter().position(|l| *l == Layout::Current);
    for &w in &writers {
        for (i, l) in layouts.iter().enumerate() {
            let r = &results[&(w, i)];
            let ratio = base.map(|bi| {
                median(
                    r.iter()
                        .zip(&results[&(w, bi)])
                        .map(|(a, b)| a.0 / b.0)
                        .collect(),
                )
            });
            let cpu_ratio = base.map(|bi| {
                median(
                    r.iter()
                        .zip(&results[&(w, bi)])
                        .map(|(a, b)| a.3 / b.3)
                        .collect(),
                )
            });
            println!(
                "| {} | {w} | {:.0} | {} | {:.1} | {} | {:.0} | {:.2} |",
                l.name(),
                median(r.iter().map(|x| x.0).collect()),
                ratio.map_or("-".into(), |x| format!("{x:.2}")),
                median(r.iter().map(|x| x.3).collect()),
                cpu_ratio.map_or("-".into(), |x| format!("{x:.2}")),
                median(r.iter().map(|x| x.1).collect()),
                r.iter().map(|x| x.2).fold(0.0, f64::max),
            );
        }
    }
    for (i, b) in benches.iter().enumerate() {
        let writes: f64 = writers
            .iter()
            .map(|&w| results[&(w, i)].iter().map(|r| r.0 * secs).sum::<f64>())
            .sum();
        let grown = b.db.db.size_on_disk().unwrap() as f64 - loaded_disk[i] as f64;
        println!(
            "{:>16}: {writes:.0} writes in all runs, size_on_disk grew {grown:.0} B = {:.0} B/write",
            b.layout.name(),
            grown / writes.max(1.0)
        );
        let (n, bytes) = live(&b.db.audit);
        let (cn, cbytes) = live(&b.db.configs);
        println!(
            "{:>16}: audit items {n} live {bytes} B; configs/data items {cn} live {cbytes} B; size_on_disk {} B",
            b.layout.name(),
            b.db.db.size_on_disk().unwrap()
        );
        b.commit.lock().unwrap().take();
    }
    for h in handles {
        h.join().unwrap();
    }
}
