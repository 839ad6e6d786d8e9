//! `[storage.etcd]`: where the etcd cluster is and how to talk to it. Built
//! with or without the `etcd` cargo feature, so that a configuration file
//! parses the same on every build (a build without the engine refuses to
//! open it, saying so).

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How the first read of a transaction (and every plain read) is served.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ReadConsistency {
    /// Through the leader (a quorum round trip): always the latest data.
    #[default]
    Linearizable,
    /// From the member the client talks to, without a quorum round trip:
    /// may be a little behind. Transactions stay serializable either way
    /// (their commit compares every key they read), but a plain read may
    /// miss a write another node has just made.
    Serializable,
}

/// The `[storage.etcd]` section of the configuration.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct EtcdConfig {
    /// The cluster's client URLs, `http://host:port` or `https://host:port`
    /// (all of one scheme). Required when `storage.backend = "etcd"`.
    pub endpoints: Vec<String>,
    /// Every key of this installation is under this prefix (several
    /// installations may share a cluster under different prefixes).
    pub prefix: String,
    /// Each request's deadline; past it the store answers 503.
    pub timeout_secs: u64,
    /// The CA that signed the cluster's server certificates (https endpoints).
    pub ca_file: Option<PathBuf>,
    /// A client certificate (PEM) for clusters that require one, with `key_file`.
    pub cert_file: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    pub key_file: Option<PathBuf>,
    pub read_consistency: ReadConsistency,
}

impl Default for EtcdConfig {
    fn default() -> Self {
        Self {
            endpoints: Vec::new(),
            prefix: "/oidcvault/".into(),
            timeout_secs: 5,
            ca_file: None,
            cert_file: None,
            key_file: None,
            read_consistency: ReadConsistency::Linearizable,
        }
    }
}

impl EtcdConfig {
    /// Each request's deadline.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs)
    }

    /// Do TLS files or https endpoints ask for TLS?
    pub fn uses_tls(&self) -> bool {
        self.endpoints.iter().any(|e| e.starts_with("https://"))
    }

    /// A message naming the setting at fault, for values that cannot work
    /// (checked when `storage.backend = "etcd"`).
    pub fn validate(&self) -> Result<(), String> {
        if self.endpoints.is_empty() {
            return Err(
                "storage.etcd.endpoints is empty: list the etcd cluster's client URLs, \
                 e.g. [\"http://10.0.0.1:2379\", \"http://10.0.0.2:2379\", \"http://10.0.0.3:2379\"]"
                    .into(),
            );
        }
        for e in &self.endpoints {
            check_endpoint(e)?;
        }
        let https = self.uses_tls();
        if https && self.endpoints.iter().any(|e| e.starts_with("http://")) {
            return Err(
                "storage.etcd.endpoints mixes http:// and https:// URLs: use one scheme".into(),
            );
        }
        if !(self.prefix.starts_with('/') && self.prefix.ends_with('/') && self.prefix.len() > 1) {
            return Err(format!(
                "storage.etcd.prefix = {:?}: it must start and end with '/' (e.g. \"/oidcvault/\")",
                self.prefix
            ));
        }
        if self.prefix.chars().any(char::is_control) {
            return Err("storage.etcd.prefix holds a control character".into());
        }
        if !(1..=60).contains(&self.timeout_secs) {
            return Err(format!(
                "storage.etcd.timeout_secs = {} is outside 1..=60",
                self.timeout_secs
            ));
        }
        if self.cert_file.is_some() != self.key_file.is_some() {
            return Err(
                "storage.etcd.cert_file and storage.etcd.key_file go together: set both or neither"
                    .into(),
            );
        }
        let tls_files = self.ca_file.is_some() || self.cert_file.is_some();
        if tls_files && !https {
            return Err(
                "storage.etcd.ca_file/cert_file/key_file are set but the endpoints are http://: \
                 use https:// endpoints (or remove the TLS files)"
                    .into(),
            );
        }
        if https && self.ca_file.is_none() {
            return Err(
                "storage.etcd.ca_file is required with https:// endpoints: the CA (PEM) that \
                 signed the etcd servers' certificates"
                    .into(),
            );
        }
        Ok(())
    }
}

/// `http(s)://host:port` and nothing more.
fn check_endpoint(e: &str) -> Result<(), String> {
    let bad = |why: &str| {
        Err(format!(
            "storage.etcd.endpoints: {e:?} {why}; use http://host:port or https://host:port"
        ))
    };
    if !e.contains("://") {
        return bad("is not a URL");
    }
    let Ok(url) = url::Url::parse(e) else {
        return bad("is not a URL");
    };
    if !matches!(url.scheme(), "http" | "https") {
        return bad("has another scheme");
    }
    if url.host_str().is_none_or(str::is_empty) {
        return bad("has no host");
    }
    if url.port().is_none() {
        return bad("has no port");
    }
    if !url.username().is_empty() || url.password().is_some() {
        return bad("holds credentials");
    }
    if !matches!(url.path(), "" | "/") || url.query().is_some() || url.fragment().is_some() {
        return bad("has a path, query or fragment");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(f: impl FnOnce(&mut EtcdConfig)) -> Result<(), String> {
        let mut c = EtcdConfig {
            endpoints: vec!["http://127.0.0.1:2379".into()],
            ..EtcdConfig::default()
        };
        f(&mut c);
        c.validate()
    }

    #[test]
    fn defaults_parse_and_validate() {
        let c: EtcdConfig = toml::from_str("endpoints = [\"http://127.0.0.1:2379\"]").unwrap();
        assert_eq!(c.prefix, "/oidcvault/");
        assert_eq!(c.timeout_secs, 5);
        assert_eq!(c.read_consistency, ReadConsistency::Linearizable);
        c.validate().unwrap();
        let c: EtcdConfig = toml::from_str("read_consistency = \"serializable\"").unwrap();
        assert_eq!(c.read_consistency, ReadConsistency::Serializable);
        assert!(toml::from_str::<EtcdConfig>("bogus = 1").is_err());
    }

    #[test]
    fn refusals_name_the_key() {
        type Change = Box<dyn FnOnce(&mut EtcdConfig)>;
        let cases: Vec<(&str, Change)> = vec![
            ("endpoints is empty", Box::new(|c| c.endpoints.clear())),
            (
                "no port",
                Box::new(|c| c.endpoints = vec!["http://etcd".into()]),
            ),
            (
                "another scheme",
                Box::new(|c| c.endpoints = vec!["ftp://etcd:1".into()]),
            ),
            (
                "not a URL",
                Box::new(|c| c.endpoints = vec!["etcd:2379".into()]),
            ),
            (
                "credentials",
                Box::new(|c| c.endpoints = vec!["http://u:p@etcd:1".into()]),
            ),
            (
                "a path",
                Box::new(|c| c.endpoints = vec!["http://etcd:1/x".into()]),
            ),
            (
                "mixes",
                Box::new(|c| c.endpoints.push("https://b:2379".into())),
            ),
            ("prefix", Box::new(|c| c.prefix = "oidcvault".into())),
            ("prefix", Box::new(|c| c.prefix = "/".into())),
            ("timeout_secs", Box::new(|c| c.timeout_secs = 0)),
            ("timeout_secs", Box::new(|c| c.timeout_secs = 61)),
            (
                "go together",
                Box::new(|c| c.cert_file = Some("c.pem".into())),
            ),
            (
                "are http://",
                Box::new(|c| c.ca_file = Some("ca.pem".into())),
            ),
            (
                "ca_file is required",
                Box::new(|c| c.endpoints = vec!["https://etcd:2379".into()]),
            ),
        ];
        for (want, f) in cases {
            let err = with(f).unwrap_err();
            assert!(err.contains(want), "{want:?} not in {err:?}");
            assert!(err.contains("storage.etcd."), "{err}");
        }
        with(|c| {
            c.endpoints = vec!["https://etcd:2379".into(), "https://[::1]:2379".into()];
            c.ca_file = Some("ca.pem".into());
            c.cert_file = Some("c.pem".into());
            c.key_file = Some("k.pem".into());
        })
        .unwrap();
    }
}
