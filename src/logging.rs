//! Structured logs with `tracing`: one line per request (method, route pattern,
//! status, latency), never a header, a query string or a body, so no token or
//! secret can reach a log line.

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_log::NormalizeEvent;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

use crate::time::{format_micros, now_micros};
use serde::Deserialize;

/// Overrides `log.level` when set.
pub const ENV_LOG: &str = "OIDCVAULT_LOG";

/// How long a log line may wait in memory before it is written.
const FLUSH_INTERVAL: std::time::Duration = std::time::Duration::from_millis(10);
/// Beyond this many bytes waiting, the thread that logs writes them out itself
/// (back-pressure: a line is never dropped, and memory stays bounded).
const MAX_PENDING_BYTES: usize = 4 << 20;

/// The `[log]` section of the configuration.
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A `tracing` filter: `info`, `debug`, `oidcvault=debug,warn`, ...
    pub level: String,
    /// `text` or `json`.
    pub format: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: "text".into(),
        }
    }
}

impl LogConfig {
    /// Refuse a format or a level filter that cannot work (a bad `log.level`
    /// would otherwise silently become `info`).
    pub fn validate(&self) -> Result<(), String> {
        if !matches!(self.format.as_str(), "text" | "json") {
            return Err(format!(
                "log.format = {:?}: use \"text\" or \"json\"",
                self.format
            ));
        }
        EnvFilter::try_new(&self.level).map_err(|e| {
            format!(
                "log.level = {:?} is not a tracing filter ({e}); use e.g. \"info\", \"debug\" \
                 or \"oidcvault=debug,warn\"",
                self.level
            )
        })?;
        Ok(())
    }
}

/// Install the global subscriber, writing to stderr. `OIDCVAULT_LOG` wins over
/// `level_override` (used by the offline commands), which wins over `log.level`.
///
/// Keep the returned guard until the process ends: dropping it writes out every
/// pending line (see [`BatchedStderr`]).
#[must_use = "dropping the guard writes out pending lines and stops the log writer"]
pub fn init(config: &LogConfig, level_override: Option<&str>) -> LogGuard {
    let level = effective_level(config, level_override);
    let filter = EnvFilter::try_new(&level).unwrap_or_else(|_| EnvFilter::new("info"));
    let (writer, guard) = BatchedStderr::start(Box::new(std::io::stderr()));
    // The filter behind tracing-subscriber's reload layer, so SIGHUP can change
    // `log.level`. Its cost on the hot path: a read lock (uncontended) per
    // event that passes the filter; events below the level are still refused
    // by the callsite cache before any lock (see `set_level`).
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    let _ = if config.format == "json" {
        let builder = builder.json().flatten_event(true).with_filter_reloading();
        let handle = builder.reload_handle();
        let _ = RELOAD.set(Box::new(move |f| {
            handle.reload(f).map_err(|e| e.to_string())
        }));
        builder.try_init()
    } else {
        let builder = builder.event_format(TextLine).with_filter_reloading();
        let handle = builder.reload_handle();
        let _ = RELOAD.set(Box::new(move |f| {
            handle.reload(f).map_err(|e| e.to_string())
        }));
        builder.try_init()
    };
    guard
}

/// The level filter in force: `OIDCVAULT_LOG`, else `level_override`, else
/// `log.level`.
pub fn effective_level(config: &LogConfig, level_override: Option<&str>) -> String {
    std::env::var(ENV_LOG)
        .ok()
        .or_else(|| level_override.map(str::to_owned))
        .unwrap_or_else(|| config.level.clone())
}

type Reload = Box<dyn Fn(EnvFilter) -> Result<(), String> + Send + Sync>;

/// Replaces the filter of the subscriber [`init`] installed.
static RELOAD: std::sync::OnceLock<Reload> = std::sync::OnceLock::new();

/// Replace the level filter of the running process (a configuration reload).
/// tracing rebuilds its per-callsite cache, so lines of a newly enabled level
/// appear at once, and a raised level costs nothing for the lines it drops.
pub fn set_level(level: &str) -> Result<(), String> {
    let filter = EnvFilter::try_new(level).map_err(|e| format!("{level:?}: {e}"))?;
    match RELOAD.get() {
        Some(reload) => reload(filter),
        None => Err("no log subscriber installed".into()),
    }
}

/// Log lines gathered in memory and written by one thread, at most
/// `FLUSH_INTERVAL` after the first of them.
///
/// Why: the request line, formatted and written with a `write(2)` of its own,
/// cost a GET about 2.5 µs of its 16 µs of CPU (BENCHMARKS.md); a channel to a
/// writer thread that wakes per line (`tracing-appender`) cost more. Here a line is appended to a shared
/// buffer under a short lock; the writer thread is woken only when the buffer
/// goes from empty to non-empty, waits the interval, and writes everything
/// gathered with one system call. Idle, it sleeps. The cost: a line reaches
/// stderr up to 10 ms late, and a crash (kill -9, power cut) loses the last
/// 10 ms of lines; a clean stop, and every error that ends a command, write them
/// all (the guard). The audit trail itself is in the store, not the log.
#[derive(Clone)]
pub struct BatchedStderr {
    shared: Arc<Batch>,
}

struct Batch {
    pending: Mutex<Pending>,
    wake: Condvar,
    /// Held while writing, and while taking the pending bytes to write, so
    /// batches reach the output in the order their lines were logged.
    out: Mutex<Box<dyn Write + Send>>,
}

#[derive(Default)]
struct Pending {
    bytes: Vec<u8>,
    stop: bool,
}

/// Writes out every pending line and stops the writer thread when dropped.
pub struct LogGuard {
    shared: Arc<Batch>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl BatchedStderr {
    fn start(out: Box<dyn Write + Send>) -> (Self, LogGuard) {
        let shared = Arc::new(Batch {
            pending: Mutex::new(Pending::default()),
            wake: Condvar::new(),
            out: Mutex::new(out),
        });
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("oidcvault-log".into())
            .spawn(move || s.run())
            .ok();
        (
            Self {
                shared: shared.clone(),
            },
            LogGuard { shared, thread },
        )
    }
}

impl Batch {
    fn pending(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Write out what is pending now.
    fn flush(&self) {
        let mut out = self.out.lock().unwrap_or_else(PoisonError::into_inner);
        let bytes = std::mem::take(&mut self.pending().bytes);
        if !bytes.is_empty() {
            // Nowhere left to report a failed write to stderr.
            let _ = out.write_all(&bytes);
            let _ = out.flush();
        }
    }

    fn run(&self) {
        loop {
            let stop = {
                let mut p = self.pending();
                while p.bytes.is_empty() && !p.stop {
                    p = self.wake.wait(p).unwrap_or_else(PoisonError::into_inner);
                }
                p.stop
            };
            if !stop {
                std::thread::sleep(FLUSH_INTERVAL);
            }
            self.flush();
            if stop {
                return;
            }
        }
    }
}

impl Write for BatchedStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let over = {
            let mut p = self.shared.pending();
            let was_empty = p.bytes.is_empty();
            p.bytes.extend_from_slice(buf);
            if was_empty {
                self.shared.wake.notify_one();
            }
            // After the guard has stopped the writer thread (the process is
            // ending), each line is written at once.
            p.bytes.len() > MAX_PENDING_BYTES || p.stop
        };
        if over {
            self.shared.flush();
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for BatchedStderr {
    type Writer = BatchedStderr;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        self.shared.pending().stop = true;
        self.shared.wake.notify_one();
        match self.thread.take() {
            Some(t) => {
                let _ = t.join();
            }
            // No writer thread could be started: write out here.
            None => self.shared.flush(),
        }
    }
}

/// The text format, `<RFC 3339 time>  INFO <target>: <message> key=value ...`:
/// the line tracing-subscriber's default format writes without spans or
/// colours (fields rendered the same way: `%` values as they display, strings
/// and `?` values as they debug-print), at about a third of its cost (BENCHMARKS.md:
/// its field visitor and clock took 7,000 instructions of a 60,000-instruction
/// GET). oidcvault opens no spans, so none are lost.
struct TextLine;

impl<S, N> FormatEvent<S, N> for TextLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        // Events from the `log` crate (sled, actix-server) carry their real
        // target and level in `log.*` fields.
        let normalized = event.normalized_metadata();
        let meta = normalized.as_ref().unwrap_or_else(|| event.metadata());
        writer.write_str(&format_micros(now_micros()))?;
        writer.write_str(match *meta.level() {
            Level::ERROR => " ERROR ",
            Level::WARN => "  WARN ",
            Level::INFO => "  INFO ",
            Level::DEBUG => " DEBUG ",
            Level::TRACE => " TRACE ",
        })?;
        writer.write_str(meta.target())?;
        writer.write_str(": ")?;
        let mut fields = FieldWriter {
            out: &mut writer,
            first: true,
            result: Ok(()),
        };
        event.record(&mut fields);
        fields.result?;
        writer.write_char('\n')
    }
}

/// Writes an event's fields: the message bare, the others as ` name=value`.
struct FieldWriter<'a, 'w> {
    out: &'a mut Writer<'w>,
    first: bool,
    result: std::fmt::Result,
}

impl FieldWriter<'_, '_> {
    /// The separator and `name=`, or `false` when the field is not written.
    fn key(&mut self, field: &Field) -> bool {
        let name = field.name();
        if self.result.is_err() || name.starts_with("log.") {
            return false;
        }
        let sep = if std::mem::take(&mut self.first) {
            ""
        } else {
            " "
        };
        self.result = if name == "message" {
            self.out.write_str(sep)
        } else {
            let name = name.strip_prefix("r#").unwrap_or(name);
            write!(self.out, "{sep}{name}=")
        };
        self.result.is_ok()
    }
}

impl Visit for FieldWriter<'_, '_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if self.key(field) {
            self.result = write!(self.out, "{value:?}");
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if self.key(field) {
            self.result = if field.name() == "message" {
                self.out.write_str(value)
            } else {
                write!(self.out, "{value:?}")
            };
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if self.key(field) {
            self.result = write!(self.out, "{value}");
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        if self.key(field) {
            self.result = write!(self.out, "{value}");
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if self.key(field) {
            self.result = self.out.write_str(if value { "true" } else { "false" });
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        if self.key(field) {
            self.result = write!(self.out, "{value}");
        }
    }
}

/// Middleware: one log line per request.
pub async fn log_request(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let method = req.method().clone();
    let res = next.call(req).await;
    let latency_us = started.elapsed().as_micros() as u64;
    match &res {
        Ok(r) => {
            let route = r
                .request()
                .match_pattern()
                .unwrap_or_else(|| "<unmatched>".to_owned());
            tracing::info!(
                target: "oidcvault::request",
                method = %method,
                route = %route,
                status = r.status().as_u16(),
                latency_us,
                "request"
            );
            if let Some(metrics) = r
                .request()
                .app_data::<actix_web::web::Data<crate::metrics::Metrics>>()
            {
                metrics.observe_request(
                    method.as_str(),
                    &route,
                    r.status().as_u16(),
                    started.elapsed().as_secs_f64(),
                );
            }
        }
        Err(e) => {
            tracing::warn!(
                target: "oidcvault::request",
                method = %method,
                status = e.as_response_error().status_code().as_u16(),
                latency_us,
                "request failed"
            );
        }
    }
    res
}

/// A new id that ties a generic error answer to the log line with its cause.
pub fn correlation_id() -> String {
    use rand::RngCore;
    format!("{:016x}", rand::rngs::OsRng.next_u64())
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::fmt::MakeWriter;

    use super::*;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Buffer {
        type Writer = Buffer;
        fn make_writer(&'a self) -> Self::Writer {
            self.clone()
        }
    }

    impl Buffer {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    /// Every line from every thread reaches the output, each thread's in order,
    /// none torn, once the guard is dropped; a burst beyond the pending limit is
    /// written by the thread that logs.
    #[test]
    fn batched_lines_all_arrive_in_order() {
        let out = Buffer::default();
        let (writer, guard) = BatchedStderr::start(Box::new(out.clone()));
        // A lone line is written within the interval, without a drop.
        writer.make_writer().write_all(b"first\n").unwrap();
        let deadline = Instant::now() + std::time::Duration::from_secs(2);
        while out.text().is_empty() && Instant::now() < deadline {
            std::thread::sleep(FLUSH_INTERVAL);
        }
        assert_eq!(out.text(), "first\n");
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let w = writer.clone();
                std::thread::spawn(move || {
                    for i in 0..2000 {
                        let mut w = w.make_writer();
                        w.write_all(format!("t{t} line {i:05}\n").as_bytes())
                            .unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        // One line larger than the pending limit goes out without waiting.
        let big = vec![b'x'; MAX_PENDING_BYTES + 1];
        writer.make_writer().write_all(&big).unwrap();
        assert!(
            out.text().len() > MAX_PENDING_BYTES,
            "not written by the logger"
        );
        drop(guard);
        // A line logged after the guard is gone is written at once.
        writer.make_writer().write_all(b"late\n").unwrap();
        let text = out.text();
        for t in 0..4 {
            let mine: Vec<&str> = text
                .lines()
                .filter(|l| l.starts_with(&format!("t{t} ")))
                .collect();
            let expected: Vec<String> = (0..2000).map(|i| format!("t{t} line {i:05}")).collect();
            assert_eq!(mine, expected, "thread {t}");
        }
        assert!(
            text.ends_with("late\n"),
            "the line after the guard is missing"
        );
    }

    /// One event of each field kind the code base logs.
    fn emit() {
        let route = "/api/v1/enterprises/oidc/config/";
        tracing::info!(
            target: "oidcvault::request",
            method = %"GET",
            route = %route,
            status = 200u16,
            latency_us = 17u64,
            "request"
        );
        tracing::warn!(
            target: "oidcvault::audit",
            actor = ?Some(3u64),
            domain = ?Some("acme.com"),
            fields = ?vec!["client_id", "client_secret"],
            plain = "with space",
            negative = -4i64,
            flag = true,
            "audit {}",
            7
        );
    }

    /// The hand-written text line says exactly what tracing-subscriber's default
    /// format says (after the timestamp), so log readers see no change.
    #[test]
    fn text_line_matches_the_default_format() {
        let ours = Buffer::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(ours.clone())
            .event_format(TextLine)
            .finish();
        tracing::subscriber::with_default(subscriber, emit);

        let theirs = Buffer::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(theirs.clone())
            .with_ansi(false)
            .without_time()
            .finish();
        tracing::subscriber::with_default(subscriber, emit);

        let ours = ours.text();
        let stripped: Vec<&str> = ours
            .lines()
            .map(|l| {
                let (time, rest) = l.split_once(' ').unwrap();
                assert!(
                    time.len() == 27 && time.ends_with('Z') && time.as_bytes()[10] == b'T',
                    "{l}"
                );
                rest.trim_start()
            })
            .collect();
        let theirs: Vec<String> = theirs
            .text()
            .lines()
            .map(|l| l.trim_start().to_owned())
            .collect();
        assert_eq!(stripped, theirs, "ours:\n{ours}");
        assert!(
            stripped[0].starts_with(
                "INFO oidcvault::request: request method=GET route=/api/v1/enterprises/oidc/config/ status=200"
            ),
            "{ours}"
        );
    }
}
