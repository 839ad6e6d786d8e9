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
