//! HTTP to a running server over real TCP, one connection per request.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

/// An HTTP answer.
pub(crate) struct Resp {
    pub(crate) status: u16,
    pub(crate) body: String,
}

impl Resp {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.body))
    }
}

impl std::fmt::Display for Resp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HTTP {} {}", self.status, self.body)
    }
}

/// HTTP to one server: no connection reuse, so a killed server cannot leave a
/// stale pooled connection behind and no request is ever retried.
#[derive(Clone)]
pub(crate) struct Client {
    pub(crate) base: String,
    pub(crate) agent: ureq::Agent,
}

impl Client {
    pub(crate) fn new(base: String) -> Self {
        let agent = ureq::AgentBuilder::new()
            .max_idle_connections(0)
            .timeout_connect(Duration::from_secs(5))
            .timeout(Duration::from_secs(20))
            .build();
        Self { base, agent }
    }

    /// A request; `Err` only for transport failures (status codes are `Ok`).
    pub(crate) fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        domain: Option<&str>,
        body: Option<&Value>,
    ) -> Result<Resp, String> {
        let mut req = self.agent.request(method, &format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.set("Authorization", &format!("Bearer {t}"));
        }
        if let Some(d) = domain {
            req = req.set("X-Enterprise-Domain", d);
        }
        let result = match body {
            Some(b) => req.send_json(b),
            None => req.call(),
        };
        let response = match result {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(ureq::Error::Transport(t)) => return Err(format!("{method} {path}: {t}")),
        };
        let status = response.status();
        let body = response
            .into_string()
            .map_err(|e| format!("{method} {path}: reading the body: {e}"))?;
        Ok(Resp { status, body })
    }
}

/// An agent that trusts exactly `cert_pem`.
pub(crate) fn tls_agent(cert_pem: &str) -> ureq::Agent {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(cert_pem.as_bytes()) {
        roots.add(c.expect("PEM certificate")).expect("add root");
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    ureq::AgentBuilder::new()
        .tls_config(Arc::new(cfg))
        .max_idle_connections(0)
        .timeout_connect(Duration::from_secs(5))
        .timeout(Duration::from_secs(20))
        .build()
}
