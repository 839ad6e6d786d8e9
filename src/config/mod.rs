//! Layered configuration: built-in defaults, then `config.toml`, then
//! `OIDCVAULT_<SECTION>__<KEY>` environment variables, then command-line flags.
//!
//! Unknown keys are refused (a typo must not silently fall back to a default);
//! relative paths are resolved against the config file's folder; settings that
//! would weaken the appliance are refused with a message that says what to change.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::crypto::KdfParams;
pub use master::{
    load_master_secret, EnvSecrets, MasterSource, ENV_CREDENTIALS_DIRECTORY, ENV_NEW_PASSPHRASE,
    ENV_PASSPHRASE, ENV_PASSPHRASE_FILE, ENV_TOKEN, MIN_PASSPHRASE_CHARS, SECRET_VARS,
};

mod master;
pub use crate::broker::SsoConfig;
pub use crate::limits::LimitsConfig;
pub use crate::logging::LogConfig;
pub use crate::outbound::OutboundConfig;
pub use crate::store::{AuditConfig, StorageConfig, MAX_RETENTION_DAYS};

pub const ENV_PREFIX: &str = "OIDCVAULT_";
pub const DEFAULT_CONFIG_FILE: &str = "config.toml";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid configuration ({origin}): {message}")]
    Invalid { origin: String, message: String },
    #[error("{0}")]
    Weak(String),
    #[error("master key: {0}")]
    MasterKey(String),
}

#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Listen address, `host:port`.
    pub bind: String,
    /// Worker threads; 0 means one per core.
    pub workers: usize,
    /// Seconds to let in-flight requests finish on shutdown.
    pub shutdown_timeout_secs: u64,
    /// PEM certificate chain; with `tls_key`, the server speaks HTTPS only.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub tls_key: Option<PathBuf>,
    /// The address users' browsers reach this server at; the sign-in broker's
    /// callback is `<public_url>/sso/callback`. Unset: no sign-in starts.
    pub public_url: Option<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            bind: "127.0.0.1:8080".into(),
            workers: 0,
            shutdown_timeout_secs: 30,
            tls_cert: None,
            tls_key: None,
            public_url: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SecurityConfig {
    /// Used when no passphrase is given in the environment. Created (0600,
    /// random) on first start if missing. Must be outside the data directory.
    pub master_key_file: PathBuf,
    /// Argon2id parameters for a new data directory (an existing one keeps the
    /// parameters stored with it).
    pub kdf_memory_kib: u32,
    pub kdf_iterations: u32,
    pub kdf_parallelism: u32,
    /// Rotate the data key automatically after this many encryptions under one
    /// term (NIST's 2^32 bound for random 96-bit nonces, with margin).
    pub rotate_after_encryptions: u64,
}

/// Largest value of `security.rotate_after_encryptions`.
pub const MAX_ENCRYPTIONS_PER_TERM: u64 = 1 << 31;

impl Default for SecurityConfig {
    fn default() -> Self {
        Self {
            master_key_file: PathBuf::from("master.key"),
            kdf_memory_kib: KdfParams::RECOMMENDED.m_cost_kib,
            kdf_iterations: KdfParams::RECOMMENDED.t_cost,
            kdf_parallelism: KdfParams::RECOMMENDED.p_cost,
            rotate_after_encryptions: MAX_ENCRYPTIONS_PER_TERM,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub storage: StorageConfig,
    pub security: SecurityConfig,
    pub audit: AuditConfig,
    pub log: LogConfig,
    /// Abuse limits (see `crate::limits`).
    pub limits: LimitsConfig,
    pub outbound: OutboundConfig,
    /// The sign-in broker (see `crate::broker`).
    pub sso: SsoConfig,
    /// Folder that relative paths are resolved against (the config file's).
    #[serde(skip)]
    pub base_dir: PathBuf,
    /// The file given with `--config`, read again on SIGHUP (`crate::reload`).
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

impl Config {
    /// Load defaults ← `path` (or `./config.toml` if present) ← environment.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let env: Vec<(String, String)> = std::env::vars().collect();
        Self::load_with_env(path, &env)
    }

    /// As [`Config::load`], with the environment given explicitly (for tests).
    pub fn load_with_env(
        path: Option<&Path>,
        env: &[(String, String)],
    ) -> Result<Self, ConfigError> {
        let (file, explicit) = match path {
            Some(p) => (p.to_path_buf(), true),
            None => (PathBuf::from(DEFAULT_CONFIG_FILE), false),
        };
        let text = match std::fs::read_to_string(&file) {
            Ok(t) => t,
            Err(e) if !explicit && e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(source) => return Err(ConfigError::Read { path: file, source }),
        };
        let origin = file.display().to_string();
        let mut table: toml::Table = toml::from_str(&text).map_err(|e| ConfigError::Invalid {
            origin: origin.clone(),
            message: e.message().to_owned(),
        })?;
        let overridden = apply_env(&mut table, env)?;
        let origin = if overridden.is_empty() {
            origin
        } else {
            format!("{origin} with {}", overridden.join(", "))
        };
        let mut config: Config =
            Config::deserialize(toml::Value::Table(table)).map_err(|e| ConfigError::Invalid {
                origin,
                message: e.message().to_owned(),
            })?;
        let base = file.parent().map(Path::to_path_buf).unwrap_or_default();
        config.base_dir = if base.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            base
        };
        config.source = path.map(Path::to_path_buf);
        config.validate()?;
        Ok(config)
    }

    fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.resolve(&self.storage.data_dir)
    }

    pub fn backup_dir(&self) -> PathBuf {
        self.resolve(&self.storage.backup_dir)
    }

    /// TLS certificate and key paths, when TLS is on.
    pub fn tls(&self) -> Option<(PathBuf, PathBuf)> {
        match (&self.server.tls_cert, &self.server.tls_key) {
            (Some(c), Some(k)) => Some((self.resolve(c), self.resolve(k))),
            _ => None,
        }
    }

    /// `server.public_url` as the broker uses it (checked, no trailing slash).
    pub fn public_url(&self) -> Option<String> {
        self.server
            .public_url
            .as_deref()
            .and_then(|u| crate::broker::check_public_url(u).ok())
    }

    /// `outbound.extra_ca_file`, resolved.
    pub fn extra_ca_file(&self) -> Option<PathBuf> {
        self.outbound
            .extra_ca_file
            .as_deref()
            .map(|p| self.resolve(p))
    }

    pub fn master_key_file(&self) -> PathBuf {
        self.resolve(&self.security.master_key_file)
    }

    pub fn kdf_params(&self) -> KdfParams {
        KdfParams {
            m_cost_kib: self.security.kdf_memory_kib,
            t_cost: self.security.kdf_iterations,
            p_cost: self.security.kdf_parallelism,
        }
    }

    /// The largest Argon2id parameters accepted from a keyring on disk: per
    /// parameter, the larger of the configured one and `KdfParams::DISK_CEILING`.
    pub fn kdf_cap(&self) -> KdfParams {
        self.kdf_params().max(KdfParams::DISK_CEILING)
    }

    pub fn cache_capacity_bytes(&self) -> u64 {
        self.storage.cache_capacity_bytes()
    }

    pub fn auth_cache_bytes(&self) -> u64 {
        self.storage.auth_cache_bytes()
    }

    /// Worker threads: `server.workers`, or when 0, one per core, and for a
    /// storage cluster 16 per core: the store's calls wait for a network
    /// round trip to etcd on the worker's thread (the store's interface is
    /// blocking, like sled's), so more workers keep the cores busy while
    /// others wait (BENCHMARKS.md "etcd backend").
    pub fn worker_count(&self) -> usize {
        if self.server.workers > 0 {
            return self.server.workers;
        }
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        match self.storage.backend {
            crate::store::Backend::Sled => cores,
            crate::store::Backend::Etcd => cores.saturating_mul(16),
        }
    }

    /// Added to the request-head timeout (`limits.request_head_timeout_secs`)
    /// with a storage cluster: a worker's thread waits for etcd (up to
    /// `storage.etcd.timeout_secs` per call, a few calls per request) while
    /// another connection of the same worker has sent its next request, and
    /// that wait is the server's, not the client's; without the allowance a
    /// cluster election showed up as 408s on keep-alive connections.
    pub fn worker_stall_allowance(&self) -> std::time::Duration {
        match self.storage.backend {
            crate::store::Backend::Sled => std::time::Duration::ZERO,
            crate::store::Backend::Etcd => {
                std::time::Duration::from_secs(self.storage.etcd.timeout_secs.saturating_mul(3))
            }
        }
    }

    /// `[storage.etcd]` with its TLS files resolved against the config's folder.
    pub fn etcd_settings(&self) -> crate::store::EtcdConfig {
        let mut etcd = self.storage.etcd.clone();
        for file in [&mut etcd.ca_file, &mut etcd.cert_file, &mut etcd.key_file] {
            if let Some(p) = file.take() {
                *file = Some(self.resolve(&p));
            }
        }
        etcd
    }

    /// The outbound client's settings (`[outbound]`, its CA file resolved).
    pub fn outbound_settings(&self) -> crate::outbound::Settings {
        crate::outbound::Settings::new(&self.outbound, self.extra_ca_file())
    }

    /// Refuse settings that would weaken the appliance or cannot work.
    fn validate(&self) -> Result<(), ConfigError> {
        self.kdf_params().validate().map_err(|e| {
            ConfigError::Weak(format!(
                "{e}; set security.kdf_memory_kib >= {}, security.kdf_iterations >= {} \
                 (RFC 9106 recommends 65536 KiB, 3 iterations, 4 lanes)",
                KdfParams::MIN_M_COST_KIB,
                KdfParams::MIN_T_COST
            ))
        })?;
        self.storage.validate().map_err(ConfigError::Weak)?;
        if self.server.bind.parse::<std::net::SocketAddr>().is_err()
            && !self.server.bind.contains(':')
        {
            return Err(ConfigError::Weak(format!(
                "server.bind = {:?} is not host:port",
                self.server.bind
            )));
        }
        if !(1..=MAX_ENCRYPTIONS_PER_TERM).contains(&self.security.rotate_after_encryptions) {
            return Err(ConfigError::Weak(format!(
                "security.rotate_after_encryptions = {} is outside 1..={MAX_ENCRYPTIONS_PER_TERM} \
                 (random 96-bit nonces allow at most 2^32 encryptions per key)",
                self.security.rotate_after_encryptions
            )));
        }
        self.audit.validate().map_err(ConfigError::Weak)?;
        if self.server.tls_cert.is_some() != self.server.tls_key.is_some() {
            return Err(ConfigError::Weak(
                "set both server.tls_cert and server.tls_key, or neither".into(),
            ));
        }
        self.limits.validate().map_err(ConfigError::Weak)?;
        self.outbound.validate().map_err(ConfigError::Weak)?;
        self.log.validate().map_err(ConfigError::Weak)?;
        self.sso.validate().map_err(ConfigError::Weak)?;
        if let Some(url) = &self.server.public_url {
            crate::broker::check_public_url(url).map_err(ConfigError::Weak)?;
        }
        Ok(())
    }

    /// Which master secret applies, given the environment and its secrets.
    pub fn master_source(&self, env: &[(String, String)], secrets: &EnvSecrets) -> MasterSource {
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        if secrets.master_passphrase.is_some() {
            MasterSource::EnvPassphrase
        } else if let Some(p) = get(ENV_PASSPHRASE_FILE) {
            MasterSource::PassphraseFile(PathBuf::from(p))
        } else {
            MasterSource::key_file(
                self.master_key_file(),
                get(ENV_CREDENTIALS_DIRECTORY).as_deref(),
            )
        }
    }
}

/// Apply `OIDCVAULT_<SECTION>__<KEY>` variables onto the parsed file. Values are
/// read as TOML literals where they parse as one (numbers, booleans), else as
/// strings. Returns the names of the variables applied.
fn apply_env(
    table: &mut toml::Table,
    env: &[(String, String)],
) -> Result<Vec<String>, ConfigError> {
    let mut applied = Vec::new();
    let vars: BTreeMap<&str, &str> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    for (name, value) in vars {
        let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        let Some((section, key)) = rest.split_once("__") else {
            continue;
        };
        let (section, key) = (section.to_ascii_lowercase(), key.to_ascii_lowercase());
        let parsed = toml::from_str::<toml::Table>(&format!("v = {value}"))
            .ok()
            .and_then(|mut t| t.remove("v"))
            .filter(|v| !v.is_table() && !v.is_array())
            .unwrap_or_else(|| toml::Value::String(value.to_owned()));
        // `OIDCVAULT_STORAGE__ETCD__ENDPOINTS`: a key of a nested section.
        let mut path: Vec<&str> = key.split("__").collect();
        let Some(leaf) = path.pop() else {
            continue;
        };
        let mut current = &mut *table;
        let mut at = String::new();
        for part in std::iter::once(section.as_str()).chain(path.iter().copied()) {
            if !at.is_empty() {
                at.push('.');
            }
            at.push_str(part);
            let entry = current
                .entry(part.to_owned())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            let toml::Value::Table(inner) = entry else {
                return Err(ConfigError::Invalid {
                    origin: name.to_owned(),
                    message: format!("`{at}` is not a section"),
                });
            };
            current = inner;
        }
        current.insert(leaf.to_owned(), parsed);
        applied.push(name.to_owned());
    }
    Ok(applied)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(super) fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn shipped_config_toml_parses_to_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.toml");
        let c = Config::load_with_env(Some(&path), &[]).unwrap();
        let defaults = Config {
            base_dir: c.base_dir.clone(),
            source: c.source.clone(),
            ..Config::default()
        };
        assert_eq!(c, defaults);
    }

    #[test]
    fn packaged_config_differs_from_the_defaults_only_in_its_paths() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/config.toml");
        let c = Config::load_with_env(Some(&path), &[]).unwrap();
        assert_eq!(c.data_dir(), Path::new("/var/lib/oidcvault/data"));
        assert_eq!(c.backup_dir(), Path::new("/var/backups/oidcvault"));
        assert_eq!(c.master_key_file(), Path::new("/etc/oidcvault/master.key"));
        let mut same = c.clone();
        same.storage.data_dir = Config::default().storage.data_dir;
        same.storage.backup_dir = Config::default().storage.backup_dir;
        same.security.master_key_file = Config::default().security.master_key_file;
        assert_eq!(
            same,
            Config {
                base_dir: c.base_dir.clone(),
                source: c.source.clone(),
                ..Config::default()
            }
        );
        // Under the unit, the key is the credential named like the file.
        let unit_env = env(&[(
            ENV_CREDENTIALS_DIRECTORY,
            "/run/credentials/oidcvault.service",
        )]);
        assert_eq!(
            c.master_source(&unit_env, &EnvSecrets::default()),
            MasterSource::Credential {
                name: "master.key".into(),
                path: "/run/credentials/oidcvault.service/master.key".into()
            }
        );
        // A passphrase in the environment still comes first.
        let secrets = EnvSecrets::from_env(&env(&[(ENV_PASSPHRASE, "x")]));
        assert_eq!(
            c.master_source(&unit_env, &secrets),
            MasterSource::EnvPassphrase
        );
    }

    #[test]
    fn layers_apply_in_order_and_paths_resolve_against_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "[server]\nbind = \"0.0.0.0:1\"\n[storage]\ndata_dir = \"d\"\n",
        )
        .unwrap();
        let c = Config::load_with_env(
            Some(&path),
            &env(&[
                ("OIDCVAULT_SERVER__BIND", "127.0.0.1:9"),
                ("OIDCVAULT_STORAGE__CACHE_CAPACITY_MIB", "24"),
                ("OIDCVAULT_MASTER_PASSPHRASE", "not a config key"),
            ]),
        )
        .unwrap();
        assert_eq!(c.server.bind, "127.0.0.1:9");
        assert_eq!(c.storage.cache_capacity_mib, 24);
        assert_eq!(c.data_dir(), dir.path().join("d"));
        assert_eq!(c.master_key_file(), dir.path().join("master.key"));
    }

    #[test]
    fn unknown_keys_are_refused_with_their_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[server]\nbnd = \"x\"\n").unwrap();
        let e = Config::load_with_env(Some(&path), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("bnd"), "{e}");
        std::fs::write(&path, "").unwrap();
        let e = Config::load_with_env(Some(&path), &env(&[("OIDCVAULT_SERVR__BIND", "x:1")]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("servr") && e.contains("OIDCVAULT_SERVR__BIND"),
            "{e}"
        );
    }

    #[test]
    fn weak_kdf_settings_are_refused() {
        let e = Config::load_with_env(Some(Path::new("/nonexistent/c.toml")), &[]).unwrap_err();
        assert!(matches!(e, ConfigError::Read { .. }));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[security]\nkdf_memory_kib = 1024\n").unwrap();
        let e = Config::load_with_env(Some(&path), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("kdf_memory_kib"), "{e}");
    }

    #[test]
    fn outbound_lists_come_from_the_file_or_a_comma_separated_variable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "[outbound]\nallow_http_hosts = [\"lab-idp.corp\"]\nextra_ca_file = \"ca.pem\"\n",
        )
        .unwrap();
        let c = Config::load_with_env(Some(&path), &[]).unwrap();
        assert_eq!(c.outbound.allow_http_hosts, ["lab-idp.corp"]);
        assert!(c.outbound.resolve_discovery_on_save);
        assert_eq!(c.extra_ca_file(), Some(dir.path().join("ca.pem")));
        let c = Config::load_with_env(
            Some(&path),
            &env(&[
                (
                    "OIDCVAULT_OUTBOUND__ALLOW_PRIVATE_HOSTS",
                    "10.1.0.0/16, lab-idp.corp",
                ),
                ("OIDCVAULT_OUTBOUND__RESOLVE_DISCOVERY_ON_SAVE", "false"),
            ]),
        )
        .unwrap();
        assert_eq!(
            c.outbound.allow_private_hosts,
            ["10.1.0.0/16", "lab-idp.corp"]
        );
        assert!(!c.outbound.resolve_discovery_on_save);
        for (bad, named) in [
            ("[outbound]\ntimeout_secs = 0\n", "outbound.timeout_secs"),
            ("[outbound]\nmax_redirects = 50\n", "outbound.max_redirects"),
            (
                "[outbound]\nmax_concurrent_fetches = 0\n",
                "outbound.max_concurrent_fetches",
            ),
            (
                "[outbound]\nmax_concurrent_fetches = 1025\n",
                "outbound.max_concurrent_fetches",
            ),
            (
                "[outbound]\nallow_private_hosts = [\"10.0.0.0/40\"]\n",
                "allow_private_hosts",
            ),
            (
                "[outbound]\nallow_http_hosts = [\"http://x\"]\n",
                "allow_http_hosts",
            ),
        ] {
            std::fs::write(&path, bad).unwrap();
            let e = Config::load_with_env(Some(&path), &[])
                .unwrap_err()
                .to_string();
            assert!(e.contains(named), "{bad}: {e}");
        }
    }

    #[test]
    fn audit_retention_is_bounded_and_the_message_names_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        for ok in ["1", "365", "36500"] {
            std::fs::write(&path, format!("[audit]\nretention_days = {ok}\n")).unwrap();
            Config::load_with_env(Some(&path), &[]).unwrap();
        }
        for bad in ["0", "36501", "4294967295"] {
            std::fs::write(&path, format!("[audit]\nretention_days = {bad}\n")).unwrap();
            let e = Config::load_with_env(Some(&path), &[])
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("audit.retention_days") && e.contains("1..=36500"),
                "{bad}: {e}"
            );
        }
    }

    /// An invalid `log.level` is refused like any other bad key (it used to
    /// become `info` silently), naming the key and the value.
    #[test]
    fn an_invalid_log_level_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        for ok in [
            "info",
            "debug",
            "oidcvault=debug,warn",
            "warn,oidcvault::audit=info",
        ] {
            std::fs::write(&path, format!("[log]\nlevel = {ok:?}\n")).unwrap();
            Config::load_with_env(Some(&path), &[]).unwrap();
        }
        for bad in ["verbose=[", "oidcvault=loud"] {
            std::fs::write(&path, format!("[log]\nlevel = {bad:?}\n")).unwrap();
            let e = Config::load_with_env(Some(&path), &[])
                .unwrap_err()
                .to_string();
            assert!(e.contains("log.level") && e.contains(bad), "{bad}: {e}");
        }
        let e = Config::load_with_env(Some(&path), &env(&[("OIDCVAULT_LOG__LEVEL", "x=y=z")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("log.level"), "{e}");
    }
}
