//! Shapes shared by the sections of the configuration that each layer owns
//! (`[outbound]`, `[storage.etcd]`, ...): below every layer, so each can use
//! them without importing another's.

use serde::Deserialize;

/// A list of strings, from a TOML array or one comma-separated string (an
/// `OIDCVAULT_<SECTION>__<KEY>` variable holds one string).
pub fn string_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        Many(Vec<String>),
        One(String),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::Many(v) => v,
        OneOrMany::One(s) => s
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
            .collect(),
    })
}
