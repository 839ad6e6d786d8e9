//! The `[outbound]` section of the configuration, and its bounds.

use std::path::PathBuf;

use serde::Deserialize;

use super::Policy;

/// Outbound HTTP (OIDC discovery, the connection test): see `crate::outbound`.
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct OutboundConfig {
    /// Off: no outbound request at all (discovery, refresh and the connection
    /// test are refused), for sites that must never call out.
    pub enabled: bool,
    /// Fetch the discovery document when a POST sets `discovery_url`, and fill
    /// the endpoints from it. Off: the URL is stored as given, nothing fetched.
    pub resolve_discovery_on_save: bool,
    /// Seconds to establish a TCP connection.
    pub connect_timeout_secs: u64,
    /// Seconds for a whole fetch: connect, TLS, request, redirects, body.
    pub timeout_secs: u64,
    /// Largest response body read; a larger one is refused.
    pub max_response_bytes: u64,
    /// Redirects followed per fetch (within the same origin only).
    pub max_redirects: u32,
    /// Outbound fetches at once, over the whole server; one more fails at once
    /// (503). Also the most DNS lookups in flight, a lookup abandoned after a
    /// timeout counting until it ends.
    pub max_concurrent_fetches: u32,
    /// Hosts (exact names or IP addresses) that may be reached over plain `http`.
    /// A list, or one comma-separated string (for the environment variable).
    #[serde(deserialize_with = "crate::settings::string_list")]
    pub allow_http_hosts: Vec<String>,
    /// Hosts (exact names), IP addresses or CIDR networks that may be reached
    /// although they resolve to loopback, private, link-local or other
    /// internal addresses.
    #[serde(deserialize_with = "crate::settings::string_list")]
    pub allow_private_hosts: Vec<String>,
    /// PEM file of extra CA certificates trusted besides the built-in web
    /// roots (a lab identity provider with its own CA).
    pub extra_ca_file: Option<PathBuf>,
}

impl Default for OutboundConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            resolve_discovery_on_save: true,
            connect_timeout_secs: 5,
            timeout_secs: 15,
            max_response_bytes: 1 << 20,
            max_redirects: 3,
            max_concurrent_fetches: 16,
            allow_http_hosts: Vec::new(),
            allow_private_hosts: Vec::new(),
            extra_ca_file: None,
        }
    }
}

impl OutboundConfig {
    /// Bounds of the `[outbound]` settings: a message naming the key at fault.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=120).contains(&self.connect_timeout_secs) {
            return Err(format!(
                "outbound.connect_timeout_secs = {} is outside 1..=120",
                self.connect_timeout_secs
            ));
        }
        if !(1..=600).contains(&self.timeout_secs) {
            return Err(format!(
                "outbound.timeout_secs = {} is outside 1..=600",
                self.timeout_secs
            ));
        }
        if !(1024..=(64 << 20)).contains(&self.max_response_bytes) {
            return Err(format!(
                "outbound.max_response_bytes = {} is outside 1024..=67108864",
                self.max_response_bytes
            ));
        }
        if !(1..=1024).contains(&self.max_concurrent_fetches) {
            return Err(format!(
                "outbound.max_concurrent_fetches = {} is outside 1..=1024",
                self.max_concurrent_fetches
            ));
        }
        if self.max_redirects > 10 {
            return Err(format!(
                "outbound.max_redirects = {} is more than 10",
                self.max_redirects
            ));
        }
        Policy::new(&self.allow_http_hosts, &self.allow_private_hosts)?;
        Ok(())
    }
}
