//! Argon2id derivation of the key-encryption key (KEK) from the master secret.

use argon2::{Algorithm, Argon2, Params, Version};
use bincode::{Decode, Encode};
use zeroize::Zeroizing;

use super::{CryptoError, MasterSecret};

/// Argon2id cost parameters. Stored in the keyring file beside the data, so a data
/// directory always opens with the parameters it was created with; bounds-checked
/// whenever they are read, so a tampered file cannot ask for 4 TiB of memory or
/// for a trivially cheap derivation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Encode, Decode)]
pub struct KdfParams {
    /// Memory in KiB.
    pub m_cost_kib: u32,
    /// Iterations.
    pub t_cost: u32,
    /// Lanes.
    pub p_cost: u32,
}

impl KdfParams {
    /// RFC 9106 §4, second recommended option: 64 MiB, t=3, p=4.
    pub const RECOMMENDED: KdfParams = KdfParams {
        m_cost_kib: 64 * 1024,
        t_cost: 3,
        p_cost: 4,
    };
    /// OWASP's floor for Argon2id (19 MiB).
    pub const MIN_M_COST_KIB: u32 = 19 * 1024;
    /// 4 GiB: more than any appliance of this kind should ever be asked for.
    pub const MAX_M_COST_KIB: u32 = 4 * 1024 * 1024;
    pub const MIN_T_COST: u32 = 2;
    pub const MAX_T_COST: u32 = 64;
    pub const MAX_P_COST: u32 = 64;
    pub const SALT_LEN: usize = 32;
    /// The most a keyring read from disk may ask for whatever the configuration
    /// says (4x RFC 9106's recommendation: 256 MiB, 8 passes, 16 lanes): the
    /// cap is, per parameter, the larger of this and the configured value
    /// (`Config::kdf_cap`). A keyring asking for more is refused before any
    /// derivation runs, so a tampered file cannot make the server spend 4 GiB
    /// and 64 passes before its tag check fails.
    pub const DISK_CEILING: KdfParams = KdfParams {
        m_cost_kib: 256 * 1024,
        t_cost: 8,
        p_cost: 16,
    };

    /// Per parameter, the larger of `self` and `other`.
    pub fn max(self, other: KdfParams) -> KdfParams {
        KdfParams {
            m_cost_kib: self.m_cost_kib.max(other.m_cost_kib),
            t_cost: self.t_cost.max(other.t_cost),
            p_cost: self.p_cost.max(other.p_cost),
        }
    }

    /// Refuse parameters (read from disk) above `cap`, naming the setting that
    /// would allow them. Checked before any derivation.
    pub fn check_cap(&self, cap: &KdfParams) -> Result<(), CryptoError> {
        let over = [
            (
                "memory",
                self.m_cost_kib,
                cap.m_cost_kib,
                "security.kdf_memory_kib",
                " KiB",
            ),
            (
                "iterations",
                self.t_cost,
                cap.t_cost,
                "security.kdf_iterations",
                "",
            ),
            (
                "parallelism",
                self.p_cost,
                cap.p_cost,
                "security.kdf_parallelism",
                "",
            ),
        ]
        .into_iter()
        .filter(|(_, asked, allowed, _, _)| asked > allowed)
        .map(|(what, asked, allowed, key, unit)| {
            format!("{what} {asked}{unit} is above the {allowed}{unit} allowed ({key})")
        })
        .collect::<Vec<_>>();
        if over.is_empty() {
            return Ok(());
        }
        Err(CryptoError::KdfParams(format!(
            "the keyring asks for more Argon2id work than this configuration accepts from disk: \
             {}; refused before deriving anything (a tampered keyring?). If this data directory \
             was created with these parameters, set the named settings to at least them",
            over.join(", ")
        )))
    }

    /// Check the parameters against the bounds above.
    pub fn validate(&self) -> Result<(), CryptoError> {
        let err = |m: String| Err(CryptoError::KdfParams(m));
        if !(Self::MIN_M_COST_KIB..=Self::MAX_M_COST_KIB).contains(&self.m_cost_kib) {
            return err(format!(
                "memory {} KiB is outside {}..={} KiB",
                self.m_cost_kib,
                Self::MIN_M_COST_KIB,
                Self::MAX_M_COST_KIB
            ));
        }
        if !(Self::MIN_T_COST..=Self::MAX_T_COST).contains(&self.t_cost) {
            return err(format!(
                "iterations {} are outside {}..={}",
                self.t_cost,
                Self::MIN_T_COST,
                Self::MAX_T_COST
            ));
        }
        if !(1..=Self::MAX_P_COST).contains(&self.p_cost) {
            return err(format!(
                "parallelism {} is outside 1..={}",
                self.p_cost,
                Self::MAX_P_COST
            ));
        }
        Ok(())
    }

    /// Derive the 256-bit KEK. Slow by design (hundreds of milliseconds).
    pub fn derive(
        &self,
        secret: &MasterSecret,
        salt: &[u8],
    ) -> Result<Zeroizing<[u8; 32]>, CryptoError> {
        self.validate()?;
        if salt.len() < 16 {
            return Err(CryptoError::KdfParams(format!(
                "salt of {} bytes is shorter than 16",
                salt.len()
            )));
        }
        let params = Params::new(self.m_cost_kib, self.t_cost, self.p_cost, Some(32))
            .map_err(|e| CryptoError::KdfParams(e.to_string()))?;
        let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let mut out = Zeroizing::new([0u8; 32]);
        argon
            .hash_password_into(secret.expose(), salt, out.as_mut())
            .map_err(|e| CryptoError::Kdf(e.to_string()))?;
        Ok(out)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use super::*;

    const FAST: KdfParams = KdfParams {
        m_cost_kib: KdfParams::MIN_M_COST_KIB,
        t_cost: 2,
        p_cost: 1,
    };

    #[test]
    fn recommended_is_within_bounds() {
        KdfParams::RECOMMENDED.validate().unwrap();
    }

    #[test]
    fn out_of_bounds_parameters_are_refused() {
        for bad in [
            KdfParams {
                m_cost_kib: 1024,
                ..FAST
            },
            KdfParams {
                m_cost_kib: u32::MAX,
                ..FAST
            },
            KdfParams { t_cost: 1, ..FAST },
            KdfParams {
                t_cost: 1000,
                ..FAST
            },
            KdfParams { p_cost: 0, ..FAST },
        ] {
            assert!(bad.validate().is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn parameters_above_the_cap_are_named_and_refused() {
        let cap = FAST.max(KdfParams::DISK_CEILING);
        assert_eq!(cap, KdfParams::DISK_CEILING);
        KdfParams::RECOMMENDED.check_cap(&cap).unwrap();
        cap.check_cap(&cap).unwrap();
        let huge = KdfParams {
            m_cost_kib: KdfParams::MAX_M_COST_KIB,
            t_cost: KdfParams::MAX_T_COST,
            p_cost: 1,
        };
        huge.validate().unwrap();
        let e = huge.check_cap(&cap).unwrap_err().to_string();
        assert!(
            e.contains("security.kdf_memory_kib") && e.contains("security.kdf_iterations"),
            "{e}"
        );
        assert!(!e.contains("security.kdf_parallelism"), "{e}");
        // A configuration above the ceiling raises the cap to itself.
        huge.check_cap(&huge.max(KdfParams::DISK_CEILING)).unwrap();
    }

    #[test]
    fn derivation_is_deterministic_and_salted() {
        let secret = MasterSecret::new(Zeroizing::new(b"correct horse battery".to_vec()));
        let a = FAST.derive(&secret, &[1u8; 32]).unwrap();
        let b = FAST.derive(&secret, &[1u8; 32]).unwrap();
        let c = FAST.derive(&secret, &[2u8; 32]).unwrap();
        assert_eq!(*a, *b);
        assert_ne!(*a, *c);
        assert!(
            FAST.derive(&secret, &[1u8; 8]).is_err(),
            "short salt refused"
        );
    }
}
