//! Passwords: argon2id hashing on a bounded pool of OS threads, verification of our own and
//! of imported foreign hashes (bcrypt, Django, Keycloak, PHC argon2) with a re-hash signal,
//! and the per-tenant password policy.
//!
//! Argon2 is deliberately slow and memory-hungry, so it never runs on the async runtime:
//! [`PasswordHasher`] queues the work on its own threads and refuses with
//! [`HashError::Busy`] once the queue is full, which the API turns into 503 + Retry-After
//! instead of letting a login flood time out every other request.

mod formats;
mod policy;
mod pool;

use argon2::password_hash::{PasswordHasher as _, SaltString};
use argon2::{Algorithm, Argon2, Version};
use rand::RngCore as _;

pub use formats::{import_hash, import_keycloak, ImportError};
pub use policy::check_policy;
pub use pool::PasswordHasher;

/// Largest argon2 memory cost we run, for our own hashes and for imported ones: 1 GiB.
const MAX_M_COST_KIB: u32 = 1024 * 1024;
/// Largest argon2 iteration count we run.
const MAX_T_COST: u32 = 20;
/// Largest argon2 parallelism (lanes) we run.
const MAX_P_COST: u32 = 16;
/// Length of the argon2 output we store; argon2's usual 32 bytes.
const OUTPUT_LEN: usize = 32;
/// Salt length of our own hashes: 16 random bytes, as the argon2 RFC recommends.
const SALT_LEN: usize = 16;

/// Argon2id cost parameters. The default is OWASP's recommendation
/// (19 MiB of memory, 2 passes, 1 lane).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Argon2Params {
    pub m_cost_kib: u32,
    pub t_cost: u32,
    pub p_cost: u32,
}

impl Default for Argon2Params {
    fn default() -> Self {
        Self {
            m_cost_kib: 19 * 1024,
            t_cost: 2,
            p_cost: 1,
        }
    }
}

impl Argon2Params {
    /// The parameters as the argon2 crate wants them, once they are inside the bounds we
    /// accept (the same bounds as for imported hashes, so that our own hashes always verify).
    fn to_argon2(self) -> Result<argon2::Params, HashError> {
        check_argon2_bounds(self.m_cost_kib, self.t_cost, self.p_cost)
            .map_err(|msg| HashError::Internal(format!("invalid argon2 parameters: {msg}")))?;
        argon2::Params::new(self.m_cost_kib, self.t_cost, self.p_cost, Some(OUTPUT_LEN))
            .map_err(|e| HashError::Internal(format!("invalid argon2 parameters: {e}")))
    }
}

/// Bounds on argon2 costs, so that neither a configuration mistake nor a malicious import can
/// make a single verification take minutes or gigabytes.
fn check_argon2_bounds(m_cost_kib: u32, t_cost: u32, p_cost: u32) -> Result<(), String> {
    if !(1..=MAX_P_COST).contains(&p_cost) {
        return Err(format!("parallelism must be between 1 and {MAX_P_COST}"));
    }
    if !(1..=MAX_T_COST).contains(&t_cost) {
        return Err(format!("iterations must be between 1 and {MAX_T_COST}"));
    }
    if m_cost_kib < 8 * p_cost || m_cost_kib > MAX_M_COST_KIB {
        return Err(format!(
            "memory must be between 8 KiB per lane and {MAX_M_COST_KIB} KiB"
        ));
    }
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum HashError {
    /// The pool's queue is full; try again after about this long.
    #[error("password hashing is saturated")]
    Busy { retry_after: std::time::Duration },
    /// The stored hash costs more to verify than the server spends on one attempt (see
    /// [`import_hash`]); it was never checked.
    #[error("the stored password hash is too costly to verify")]
    TooCostly,
    #[error("{0}")]
    Internal(String),
}

/// The outcome of checking a password against a stored hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verification {
    pub matched: bool,
    /// The stored hash is not argon2id with the current params: store a fresh
    /// [`PasswordHasher::hash`] of the password once it has matched.
    pub needs_rehash: bool,
}

/// Hashes `password` with argon2id and a random salt into a PHC string
/// (`$argon2id$v=19$m=…,t=…,p=…$salt$hash`). Synchronous and slow on purpose: the service
/// goes through [`PasswordHasher::hash`]; this form is for the benchmark and tests.
pub fn hash_password(params: &Argon2Params, password: &str) -> Result<String, HashError> {
    let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.to_argon2()?);
    let mut salt = [0u8; SALT_LEN];
    rand::rngs::OsRng.fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt)
        .map_err(|e| HashError::Internal(format!("cannot encode the salt: {e}")))?;
    argon2
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| HashError::Internal(format!("argon2 hashing failed: {e}")))
}

/// Checks `password` against `stored`, in any of the formats [`import_hash`] accepts, and
/// says whether it should be re-hashed with `params`. A stored value in no supported format
/// is an error (not a mismatch), so that a corrupt credential shows up in the logs.
pub fn verify_password(
    params: &Argon2Params,
    password: &str,
    stored: &str,
) -> Result<Verification, HashError> {
    let stored = formats::Stored::parse(stored)
        .map_err(|msg| HashError::Internal(format!("unusable stored password hash: {msg}")))?;
    if stored.too_costly(params) {
        return Err(HashError::TooCostly);
    }
    let matched = stored.verify(password)?;
    Ok(Verification {
        matched,
        needs_rehash: !stored.is_current(params),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Cheap parameters so that the tests stay fast.
    pub(super) const FAST: Argon2Params = Argon2Params {
        m_cost_kib: 1024,
        t_cost: 1,
        p_cost: 1,
    };

    #[test]
    fn default_params_are_owasp() {
        assert_eq!(
            Argon2Params::default(),
            Argon2Params {
                m_cost_kib: 19456,
                t_cost: 2,
                p_cost: 1
            }
        );
    }

    #[test]
    fn hash_at_default_params_round_trips_without_rehash() {
        let params = Argon2Params::default();
        let hash = hash_password(&params, "correct horse battery staple").unwrap();
        assert!(
            hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{hash}"
        );
        let ok = verify_password(&params, "correct horse battery staple", &hash).unwrap();
        assert_eq!(
            ok,
            Verification {
                matched: true,
                needs_rehash: false
            }
        );
        let bad = verify_password(&params, "correct horse battery stapler", &hash).unwrap();
        assert!(!bad.matched);
    }

    #[test]
    fn hashes_are_salted() {
        let a = hash_password(&FAST, "same password").unwrap();
        let b = hash_password(&FAST, "same password").unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn other_argon2id_params_need_rehash() {
        let old = Argon2Params {
            m_cost_kib: 2048,
            ..FAST
        };
        let hash = hash_password(&old, "pässwörd").unwrap();
        let v = verify_password(&FAST, "pässwörd", &hash).unwrap();
        assert_eq!(
            v,
            Verification {
                matched: true,
                needs_rehash: true
            }
        );
        assert!(
            !verify_password(&old, "pässwörd", &hash)
                .unwrap()
                .needs_rehash
        );
    }

    #[test]
    fn out_of_bounds_params_are_refused() {
        for params in [
            Argon2Params {
                m_cost_kib: MAX_M_COST_KIB + 1,
                ..FAST
            },
            Argon2Params { t_cost: 0, ..FAST },
            Argon2Params { t_cost: 21, ..FAST },
            Argon2Params { p_cost: 0, ..FAST },
            Argon2Params {
                m_cost_kib: 64,
                t_cost: 1,
                p_cost: 16,
            },
        ] {
            assert!(
                matches!(hash_password(&params, "x"), Err(HashError::Internal(_))),
                "{params:?}"
            );
        }
    }

    #[test]
    fn garbage_stored_value_is_an_error_not_a_mismatch() {
        for stored in ["", "hunter2", "$argon2id$v=19$m=1024", "md5$salt$abc"] {
            assert!(
                matches!(
                    verify_password(&FAST, "hunter2", stored),
                    Err(HashError::Internal(_))
                ),
                "{stored}"
            );
        }
    }
}
