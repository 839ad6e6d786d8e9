//! Prometheus metrics (the `prometheus` crate), served at `GET /metrics` to an
//! operator token.
//!
//! Request counts and latency by route and status are recorded by the request
//! middleware; group-commit batch sizes and fsync latency by the flusher thread;
//! store size, counts and key-term figures are read when the metrics are scraped
//! (the counts from memory, kept by each write: `store::counts`).

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use crate::store::CommitMetrics;

/// The registry and the metrics of one vault.
pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub latency: HistogramVec,
    pub commit: CommitMetrics,
    pub store_bytes: IntGauge,
    /// The authentication cache: lookups by result (hit, miss), bytes held.
    pub auth_cache_lookups: IntCounterVec,
    pub auth_cache_bytes: IntGauge,
    pub domains: IntGauge,
    pub configs: IntGauge,
    pub active_term: IntGauge,
    pub term_uses: IntGaugeVec,
    pub configs_by_term: IntGaugeVec,
    pub sso: SsoMetrics,
}

/// What the sign-in broker reports.
#[derive(Clone)]
pub struct SsoMetrics {
    /// Sign-ins by `outcome` (`success`, `failure`) and `reason`.
    pub logins: IntCounterVec,
    /// Time spent waiting for identity providers per sign-in (token, keys, userinfo).
    pub idp_seconds: Histogram,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new_custom(Some("oidcvault".into()), None)?;
        let requests = IntCounterVec::new(
            Opts::new("http_requests_total", "HTTP requests served"),
            &["method", "route", "status"],
        )?;
        let latency = HistogramVec::new(
            HistogramOpts::new("http_request_duration_seconds", "HTTP request latency").buckets(
                vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                ],
            ),
            &["method", "route", "status"],
        )?;
        let batch_size = Histogram::with_opts(
            HistogramOpts::new(
                "commit_batch_size",
                "Writes made durable by one group commit",
            )
            .buckets(vec![
                1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0,
            ]),
        )?;
        let sync_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "commit_sync_seconds",
                "Duration of one group commit (flush + fsync)",
            )
            .buckets(vec![
                0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0,
            ]),
        )?;
        let store_bytes = IntGauge::new("store_size_bytes", "Size of the store on disk")?;
        let auth_cache_lookups = IntCounterVec::new(
            Opts::new(
                "auth_cache_lookups_total",
                "Token and domain lookups of authentication, by whether the cache held the record",
            ),
            &["result"],
        )?;
        let auth_cache_bytes = IntGauge::new(
            "auth_cache_bytes",
            "Bytes held by the authentication cache (storage.auth_cache_mib bounds it)",
        )?;
        let domains = IntGauge::new("domains", "Enterprise domains")?;
        let configs = IntGauge::new("configs", "Stored OIDC configurations")?;
        let active_term = IntGauge::new("key_active_term", "Active data-key term")?;
        let term_uses = IntGaugeVec::new(
            Opts::new(
                "key_term_encryptions",
                "Encryptions under the active key term (upper bound)",
            ),
            &["term"],
        )?;
        let configs_by_term = IntGaugeVec::new(
            Opts::new("key_term_configs", "Stored secrets sealed under a key term"),
            &["term"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        registry.register(Box::new(batch_size.clone()))?;
        registry.register(Box::new(sync_seconds.clone()))?;
        registry.register(Box::new(store_bytes.clone()))?;
        registry.register(Box::new(auth_cache_lookups.clone()))?;
        registry.register(Box::new(auth_cache_bytes.clone()))?;
        registry.register(Box::new(domains.clone()))?;
        registry.register(Box::new(configs.clone()))?;
        registry.register(Box::new(active_term.clone()))?;
        registry.register(Box::new(term_uses.clone()))?;
        registry.register(Box::new(configs_by_term.clone()))?;
        let logins = IntCounterVec::new(
            Opts::new(
                "sso_logins_total",
                "Sign-ins through the broker, by outcome and reason",
            ),
            &["outcome", "reason"],
        )?;
        let idp_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "sso_idp_seconds",
                "Time a sign-in waited for its identity provider (token, keys, userinfo)",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
        )?;
        registry.register(Box::new(logins.clone()))?;
        registry.register(Box::new(idp_seconds.clone()))?;
        Ok(Self {
            registry,
            requests,
            latency,
            commit: CommitMetrics {
                batch_size,
                sync_seconds,
            },
            store_bytes,
            auth_cache_lookups,
            auth_cache_bytes,
            domains,
            configs,
            active_term,
            term_uses,
            configs_by_term,
            sso: SsoMetrics {
                logins,
                idp_seconds,
            },
        })
    }

    /// Record one served request.
    pub fn observe_request(&self, method: &str, route: &str, status: u16, seconds: f64) {
        // Bounded label values: any other method a client invents is "OTHER".
        let method = match method {
            "GET" | "POST" | "PUT" | "PATCH" | "DELETE" | "HEAD" | "OPTIONS" => method,
            _ => "OTHER",
        };
        let status = status.to_string();
        let labels = [method, route, status.as_str()];
        self.requests.with_label_values(&labels).inc();
        self.latency.with_label_values(&labels).observe(seconds);
    }

    /// The authentication cache's figures as of now (counters only move up:
    /// they are raised to the cache's own totals).
    pub fn set_auth_cache(&self, figures: Option<crate::store::engine::cached::CacheFigures>) {
        let Some(f) = figures else {
            return;
        };
        for (result, total) in [("hit", f.hits), ("miss", f.misses)] {
            let c = self.auth_cache_lookups.with_label_values(&[result]);
            c.inc_by(total.saturating_sub(c.get()));
        }
        self.auth_cache_bytes
            .set(i64::try_from(f.bytes).unwrap_or(i64::MAX));
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> Result<String, prometheus::Error> {
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out)?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    }
}
