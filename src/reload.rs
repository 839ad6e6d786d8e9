//! Signals of a running server: SIGHUP reads the configuration again (same
//! layering as at start: defaults ← file ← environment) and applies what can
//! change without a restart; SIGTERM and SIGINT stop it gracefully.
//!
//! Applied at once: `log.level` (unless `OIDCVAULT_LOG` overrides it),
//! `limits.auth_failures_per_window`, `limits.auth_failure_window_secs` and
//! `limits.request_body_timeout_secs`. Every other changed setting is named in
//! a WARN line saying a restart is needed, and keeps its running value (so the
//! next reload names it again). A configuration that does not load or validate
//! is refused as a whole with one ERROR line; the running one stays.

use std::time::Instant;

use actix_web::dev::ServerHandle;
use actix_web::web;
use tokio::signal::unix::{signal, Signal, SignalKind};

use crate::config::Config;
use crate::limits::Limits;

/// Settings a running server takes on SIGHUP.
pub const RELOADABLE: &[&str] = &[
    "log.level",
    "limits.auth_failures_per_window",
    "limits.auth_failure_window_secs",
    "limits.request_body_timeout_secs",
];

/// The signal streams, registered before the server starts (so no signal
/// falls back to its default action once READY=1 is sent).
pub struct Signals {
    hup: Signal,
    term: Signal,
    int: Signal,
}

impl Signals {
    pub fn register() -> std::io::Result<Self> {
        let reg = |kind: SignalKind, name: &str| {
            signal(kind).map_err(|e| std::io::Error::other(format!("cannot handle {name}: {e}")))
        };
        Ok(Self {
            hup: reg(SignalKind::hangup(), "SIGHUP")?,
            term: reg(SignalKind::terminate(), "SIGTERM")?,
            int: reg(SignalKind::interrupt(), "SIGINT")?,
        })
    }
}

/// The running configuration and what a reload changes.
pub struct Reloader {
    current: Config,
    limits: web::Data<Limits>,
}

impl Reloader {
    pub fn new(current: Config, limits: web::Data<Limits>) -> Self {
        Self { current, limits }
    }

    /// Read the configuration again and apply it (see the module doc); every
    /// outcome is logged. Returns the settings applied.
    pub fn reload(&mut self) -> Vec<String> {
        let started = Instant::now();
        let new = match Config::load(self.current.source.as_deref()) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(
                    "configuration reload refused, the running configuration stays: {e}"
                );
                return Vec::new();
            }
        };
        let mut applied = Vec::new();
        for key in changed_keys(&self.current, &new) {
            if !RELOADABLE.contains(&key.as_str()) {
                tracing::warn!(
                    setting = %key,
                    "configuration reload: {key} changed; restart the server to apply it"
                );
            }
        }
        if new.log.level != self.current.log.level {
            if std::env::var_os(crate::logging::ENV_LOG).is_some() {
                tracing::warn!(
                    "configuration reload: log.level changed, but {} overrides it; not applied",
                    crate::logging::ENV_LOG
                );
            } else {
                match crate::logging::set_level(&new.log.level) {
                    Ok(()) => {
                        // Shows at once whether the new filter lets debug lines through.
                        tracing::debug!(level = %new.log.level, "log filter replaced");
                        applied.push("log.level".to_owned());
                    }
                    Err(e) => tracing::error!("configuration reload: log.level not applied: {e}"),
                }
            }
            self.current.log.level = new.log.level.clone();
        }
        let limits = self.limits.apply(&self.current.limits, &new.limits);
        applied.extend(limits.into_iter().map(str::to_owned));
        let l = &mut self.current.limits;
        l.auth_failures_per_window = new.limits.auth_failures_per_window;
        l.auth_failure_window_secs = new.limits.auth_failure_window_secs;
        l.request_body_timeout_secs = new.limits.request_body_timeout_secs;
        let list = if applied.is_empty() {
            "nothing".to_owned()
        } else {
            applied.join(", ")
        };
        tracing::info!(
            elapsed_us = started.elapsed().as_micros() as u64,
            "configuration reloaded; applied: {list}"
        );
        applied
    }
}

/// Every setting (`section.key`) whose value differs between `old` and `new`,
/// defaults included, in order.
pub fn changed_keys(old: &Config, new: &Config) -> Vec<String> {
    let (mut a, mut b) = (Vec::new(), Vec::new());
    flatten("", &serde_json::to_value(old).unwrap_or_default(), &mut a);
    flatten("", &serde_json::to_value(new).unwrap_or_default(), &mut b);
    let old: std::collections::BTreeMap<_, _> = a.into_iter().collect();
    let new: std::collections::BTreeMap<_, _> = b.into_iter().collect();
    let mut keys: Vec<String> = old
        .keys()
        .chain(new.keys())
        .filter(|k| old.get(*k) != new.get(*k))
        .cloned()
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

fn flatten(prefix: &str, value: &serde_json::Value, out: &mut Vec<(String, serde_json::Value)>) {
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        other => out.push((prefix.to_owned(), other.clone())),
    }
}

/// Tell the service manager the server is ready, then act on signals until one
/// asks to stop: SIGHUP reloads, SIGTERM/SIGINT start a graceful stop
/// (`STOPPING=1`; in-flight requests get `server.shutdown_timeout_secs`).
pub async fn watch(
    mut signals: Signals,
    server: ServerHandle,
    mut reloader: Reloader,
    status: String,
) {
    crate::systemd::ready(&status);
    loop {
        let name = tokio::select! {
            _ = signals.hup.recv() => {
                tracing::info!("SIGHUP received; reloading the configuration");
                crate::systemd::reloading();
                let applied = reloader.reload();
                crate::systemd::reloaded(&format!("{status}; reloaded ({} applied)", applied.len()));
                continue;
            }
            _ = signals.term.recv() => "SIGTERM",
            _ = signals.int.recv() => "SIGINT",
        };
        tracing::info!("{name} received; stopping (in-flight requests may finish)");
        crate::systemd::stopping(&format!("stopping ({name})"));
        server.stop(true).await;
        return;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changed_keys_names_each_setting() {
        let old = Config::default();
        let mut new = old.clone();
        assert!(changed_keys(&old, &new).is_empty());
        new.server.bind = "127.0.0.1:1".into();
        new.log.level = "debug".into();
        new.server.public_url = Some("https://x.example".into());
        assert_eq!(
            changed_keys(&old, &new),
            ["log.level", "server.bind", "server.public_url"]
        );
    }
}
