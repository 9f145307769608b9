//! Stored password hash formats: parsing (with bounds on their cost, since an import is
//! untrusted input that every later login will pay for), verification and canonical form.
//!
//! Accepted:
//! - PHC argon2id / argon2i / argon2d: `$argon2id$v=19$m=…,t=…,p=…$salt$hash`
//! - bcrypt: `$2a$`, `$2b$`, `$2y$`, `$2x$` + two-digit cost + 53 characters
//! - Django: `pbkdf2_sha256$iter$salt$b64`, `pbkdf2_sha1$…`, `argon2$argon2id$…`,
//!   `bcrypt_sha256$$2b$…` (bcrypt of the hex SHA-256 of the password), `bcrypt$$2b$…`
//! - Keycloak PBKDF2 credentials, as `$keycloak-<algorithm>$i=<iterations>$<salt>$<value>`
//!   (built by [`import_keycloak`] from the exported credential's fields)

use argon2::password_hash::{PasswordHash, PasswordVerifier as _};
use argon2::{Algorithm, Argon2, Version};
use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use sha2::Digest as _;
use subtle::ConstantTimeEq as _;

use super::{check_argon2_bounds, Argon2Params, HashError};

/// Fewest PBKDF2 iterations we import: anything lower is barely a hash.
const MIN_PBKDF2_ITERATIONS: u32 = 1_000;
/// Most PBKDF2 iterations we run, so that one login cannot cost more than a few seconds.
const MAX_PBKDF2_ITERATIONS: u32 = 10_000_000;
/// Longest PBKDF2 derived key we run (each extra digest-sized block costs the iterations again).
const MAX_PBKDF2_KEY_LEN: usize = 64;
/// Shortest PBKDF2 derived key we accept from Keycloak.
const MIN_PBKDF2_KEY_LEN: usize = 16;
/// Lowest and highest bcrypt cost we accept; 2^16 rounds already take seconds.
const MIN_BCRYPT_COST: u32 = 4;
const MAX_BCRYPT_COST: u32 = 16;

const ACCEPTED: &str = "accepted formats: PHC argon2 ($argon2id$v=19$m=…,t=…,p=…$salt$hash, also \
    argon2i/argon2d), bcrypt ($2a$/$2b$/$2y$/$2x$), Django (pbkdf2_sha256$…, pbkdf2_sha1$…, \
    argon2$argon2…, bcrypt_sha256$$2…, bcrypt$$2…) and Keycloak PBKDF2 credentials \
    ($keycloak-pbkdf2-sha256$i=…$salt$value, see the Keycloak import)";

/// Base64 as Django and Keycloak write it, tolerant of missing padding.
const LENIENT_BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);
/// bcrypt's own base64 alphabet, without padding.
const BCRYPT_BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::BCRYPT,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::RequireNone),
);

/// Validates an imported hash and returns its canonical stored form, or an error message saying
/// which formats are accepted. Wrappers that add nothing are unwrapped (`argon2$argon2id$…`
/// becomes `$argon2id$…`, `bcrypt$$2b$…` becomes `$2b$…`); other formats are kept, with their
/// base64 normalised.
///
/// A hash costlier to verify than the server's own (see [`Stored::too_costly`]) is refused
/// with [`ImportError::TooCostly`], not clamped: one such account would let anyone tie up
/// the hashing pool with sign-in attempts.
pub fn import_hash(raw: &str, own: &Argon2Params) -> Result<String, ImportError> {
    let raw = raw.trim();
    let stored = Stored::parse(raw)
        .and_then(|stored| {
            if let Stored::Pbkdf2(p) = &stored {
                p.check_import_iterations()?;
            }
            Ok(stored)
        })
        .map_err(|msg| ImportError::Unsupported(format!("{msg}; {ACCEPTED}")))?;
    if stored.too_costly(own) {
        return Err(ImportError::TooCostly);
    }
    Ok(stored.canonical())
}

/// Why an imported hash is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImportError {
    /// Not in a supported format; the message says which are.
    Unsupported(String),
    /// Its cost exceeds what this server verifies.
    TooCostly,
}

/// Argon2 memory an imported hash may ask for (or the server's own, if larger): 64 MiB.
const MAX_IMPORT_ARGON2_M_KIB: u32 = 64 * 1024;
/// Argon2 passes an imported hash may ask for (or the server's own, if more).
const MAX_IMPORT_ARGON2_T: u32 = 4;
/// PBKDF2 iterations a hash may ask for: 1.2M, a little above OWASP's 600,000 for SHA-256
/// (and the 1,300,000 Django 5 uses for new hashes is not needed: Django re-hashes them).
const MAX_VERIFIED_PBKDF2_ITERATIONS: u32 = 1_200_000;
/// bcrypt cost a hash may ask for: 2^13 rounds, about 0.5 s on a server core.
const MAX_VERIFIED_BCRYPT_COST: u32 = 13;

/// Keycloak's credential (algorithm `pbkdf2` | `pbkdf2-sha256` | `pbkdf2-sha512`,
/// hashIterations, base64 salt, base64 value) → canonical string
/// `$keycloak-<algorithm>$i=<iterations>$<salt b64>$<value b64>` (standard base64 with padding,
/// as Keycloak exports). Error message on bad input.
pub fn import_keycloak(
    algorithm: &str,
    iterations: u32,
    salt_b64: &str,
    value_b64: &str,
) -> Result<String, String> {
    let prf = Prf::from_keycloak(algorithm.trim()).ok_or_else(|| {
        "unsupported Keycloak algorithm; accepted: pbkdf2, pbkdf2-sha256, pbkdf2-sha512".to_owned()
    })?;
    let salt = decode_b64(salt_b64.trim(), "salt")?;
    let key = decode_b64(value_b64.trim(), "value")?;
    let stored = Pbkdf2::new(prf, iterations, salt, key, Pbkdf2Style::Keycloak)?;
    stored.check_import_iterations()?;
    Ok(stored.canonical())
}

/// A parsed stored hash.
#[derive(Debug)]
pub(super) enum Stored {
    Argon2(Argon2Hash),
    Bcrypt(Bcrypt),
    Pbkdf2(Pbkdf2),
}

impl Stored {
    /// Recognises `raw` as one of the accepted formats, within our cost bounds. Error messages
    /// never repeat the value, which is a credential.
    pub(super) fn parse(raw: &str) -> Result<Self, String> {
        if raw.starts_with("$argon2") {
            return Argon2Hash::parse(raw).map(Stored::Argon2);
        }
        if let Some(phc) = raw.strip_prefix("argon2$") {
            // Django writes "argon2" and then the PHC string without its leading '$'.
            return Argon2Hash::parse(&format!("${phc}")).map(Stored::Argon2);
        }
        if raw.starts_with("$2") {
            return Bcrypt::parse(raw, false).map(Stored::Bcrypt);
        }
        if let Some(hash) = raw.strip_prefix("bcrypt_sha256$") {
            return Bcrypt::parse(hash, true).map(Stored::Bcrypt);
        }
        if let Some(hash) = raw.strip_prefix("bcrypt$") {
            return Bcrypt::parse(hash, false).map(Stored::Bcrypt);
        }
        if let Some(rest) = raw.strip_prefix("pbkdf2_sha256$") {
            return Pbkdf2::parse_django(Prf::Sha256, rest).map(Stored::Pbkdf2);
        }
        if let Some(rest) = raw.strip_prefix("pbkdf2_sha1$") {
            return Pbkdf2::parse_django(Prf::Sha1, rest).map(Stored::Pbkdf2);
        }
        if let Some(rest) = raw.strip_prefix("$keycloak-") {
            return Pbkdf2::parse_keycloak(rest).map(Stored::Pbkdf2);
        }
        if raw.starts_with('!') {
            return Err("this is an unusable-password marker, not a password hash".to_owned());
        }
        if raw.is_empty() {
            return Err("the hash is empty".to_owned());
        }
        Err("unrecognised password hash format".to_owned())
    }

    /// Whether `password` matches. Runs the full (slow) computation.
    pub(super) fn verify(&self, password: &str) -> Result<bool, HashError> {
        match self {
            Stored::Argon2(h) => h.verify(password),
            Stored::Bcrypt(h) => h.verify(password),
            Stored::Pbkdf2(h) => Ok(h.verify(password)),
        }
    }

    /// Whether verifying this hash costs more than the server will spend on one attempt:
    /// argon2 above 64 MiB or 4 passes (unless within the server's own `params`), PBKDF2
    /// above 1.2M iterations, bcrypt above cost 13.
    pub(super) fn too_costly(&self, own: &Argon2Params) -> bool {
        match self {
            Stored::Argon2(h) => {
                h.m_cost > MAX_IMPORT_ARGON2_M_KIB.max(own.m_cost_kib)
                    || h.t_cost > MAX_IMPORT_ARGON2_T.max(own.t_cost)
            }
            Stored::Bcrypt(h) => h.cost > MAX_VERIFIED_BCRYPT_COST,
            Stored::Pbkdf2(h) => h.iterations > MAX_VERIFIED_PBKDF2_ITERATIONS,
        }
    }

    /// Whether this is argon2id with exactly `params`, i.e. needs no re-hash.
    pub(super) fn is_current(&self, params: &Argon2Params) -> bool {
        match self {
            Stored::Argon2(h) => {
                h.algorithm == Algorithm::Argon2id
                    && h.version == Version::V0x13
                    && h.m_cost == params.m_cost_kib
                    && h.t_cost == params.t_cost
                    && h.p_cost == params.p_cost
            }
            Stored::Bcrypt(_) | Stored::Pbkdf2(_) => false,
        }
    }

    /// The form we store.
    pub(super) fn canonical(&self) -> String {
        match self {
            Stored::Argon2(h) => h.phc.clone(),
            Stored::Bcrypt(h) => h.canonical(),
            Stored::Pbkdf2(h) => h.canonical(),
        }
    }
}

/// A PHC argon2 string, kept whole (the argon2 crate parses it again to verify) with the
/// figures that decide a re-hash.
#[derive(Debug)]
pub(super) struct Argon2Hash {
    phc: String,
    algorithm: Algorithm,
    version: Version,
    m_cost: u32,
    t_cost: u32,
    p_cost: u32,
}

impl Argon2Hash {
    fn parse(phc: &str) -> Result<Self, String> {
        let hash =
            PasswordHash::new(phc).map_err(|e| format!("malformed PHC argon2 string ({e})"))?;
        let algorithm = Algorithm::try_from(hash.algorithm)
            .map_err(|_| "unknown argon2 variant (expected argon2id, argon2i or argon2d)")?;
        let version = match hash.version {
            None => Version::default(),
            Some(v) => Version::try_from(v).map_err(|_| "unknown argon2 version")?,
        };
        let params = argon2::Params::try_from(&hash)
            .map_err(|e| format!("invalid argon2 parameters ({e})"))?;
        if hash.salt.is_none() || hash.hash.is_none() {
            return Err("the argon2 string lacks its salt or hash".to_owned());
        }
        if !params.keyid().is_empty() {
            return Err("the argon2 hash uses a secret key (keyid) that we do not have".to_owned());
        }
        check_argon2_bounds(params.m_cost(), params.t_cost(), params.p_cost())
            .map_err(|msg| format!("argon2 cost out of bounds: {msg}"))?;
        Ok(Self {
            phc: phc.to_owned(),
            algorithm,
            version,
            m_cost: params.m_cost(),
            t_cost: params.t_cost(),
            p_cost: params.p_cost(),
        })
    }

    fn verify(&self, password: &str) -> Result<bool, HashError> {
        let hash = PasswordHash::new(&self.phc)
            .map_err(|e| HashError::Internal(format!("malformed argon2 hash: {e}")))?;
        // Algorithm, version and costs come from the hash itself; the output comparison in
        // the `password-hash` crate is constant-time.
        match Argon2::default().verify_password(password.as_bytes(), &hash) {
            Ok(()) => Ok(true),
            Err(argon2::password_hash::Error::Password) => Ok(false),
            Err(e) => Err(HashError::Internal(format!(
                "argon2 verification failed: {e}"
            ))),
        }
    }
}

/// A bcrypt hash (`$2b$12$` + 22 salt + 31 hash characters), possibly under Django's
/// `bcrypt_sha256$` prefix, meaning the password was first replaced by the lower-case hex of
/// its SHA-256 (which lifts bcrypt's 72-byte limit).
#[derive(Debug)]
pub(super) struct Bcrypt {
    hash: String,
    cost: u32,
    sha256_prehash: bool,
}

impl Bcrypt {
    fn parse(hash: &str, sha256_prehash: bool) -> Result<Self, String> {
        let bytes = hash.as_bytes();
        if bytes.len() != 60 {
            return Err("a bcrypt hash has 60 characters".to_owned());
        }
        let variant_ok = bytes.starts_with(b"$2")
            && matches!(bytes[2], b'a' | b'b' | b'y' | b'x')
            && bytes[3] == b'$'
            && bytes[6] == b'$';
        if !variant_ok {
            return Err(
                "a bcrypt hash starts with $2a$, $2b$, $2y$ or $2x$ and its cost".to_owned(),
            );
        }
        let cost: u32 = hash
            .get(4..6)
            .filter(|c| c.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|c| c.parse().ok())
            .ok_or("the bcrypt cost must be two digits")?;
        if !(MIN_BCRYPT_COST..=MAX_BCRYPT_COST).contains(&cost) {
            return Err(format!(
                "bcrypt cost must be between {MIN_BCRYPT_COST} and {MAX_BCRYPT_COST}"
            ));
        }
        // 22 characters carry the 16-byte salt, 31 the 23-byte hash; decoding checks the
        // alphabet and the unused trailing bits, as the bcrypt crate will when verifying.
        let salt = hash.get(7..29).and_then(|s| BCRYPT_BASE64.decode(s).ok());
        let digest = hash.get(29..).and_then(|s| BCRYPT_BASE64.decode(s).ok());
        match (salt, digest) {
            (Some(s), Some(d)) if s.len() == 16 && d.len() == 23 => {}
            _ => return Err("the bcrypt salt or hash is not valid bcrypt base64".to_owned()),
        }
        Ok(Self {
            hash: hash.to_owned(),
            cost,
            sha256_prehash,
        })
    }

    fn verify(&self, password: &str) -> Result<bool, HashError> {
        let result = if self.sha256_prehash {
            let digest = sha2::Sha256::digest(password.as_bytes());
            bcrypt::verify(hex_lower(&digest), &self.hash)
        } else {
            // Like every bcrypt, only the first 72 bytes count; that is how it was created.
            bcrypt::verify(password.as_bytes(), &self.hash)
        };
        // Not the error's text: some of the bcrypt crate's errors quote the hash.
        result.map_err(|_| HashError::Internal("bcrypt verification failed".to_owned()))
    }

    fn canonical(&self) -> String {
        if self.sha256_prehash {
            format!("bcrypt_sha256${}", self.hash)
        } else {
            self.hash.clone()
        }
    }
}

fn hex_lower(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// The HMAC digest of a PBKDF2 hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Prf {
    Sha1,
    Sha256,
    Sha512,
}

impl Prf {
    fn from_keycloak(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "pbkdf2" => Some(Prf::Sha1),
            "pbkdf2-sha256" => Some(Prf::Sha256),
            "pbkdf2-sha512" => Some(Prf::Sha512),
            _ => None,
        }
    }

    fn keycloak_name(self) -> &'static str {
        match self {
            Prf::Sha1 => "pbkdf2",
            Prf::Sha256 => "pbkdf2-sha256",
            Prf::Sha512 => "pbkdf2-sha512",
        }
    }

    fn output_len(self) -> usize {
        match self {
            Prf::Sha1 => 20,
            Prf::Sha256 => 32,
            Prf::Sha512 => 64,
        }
    }

    fn derive(self, password: &[u8], salt: &[u8], iterations: u32, out: &mut [u8]) {
        match self {
            Prf::Sha1 => pbkdf2::pbkdf2_hmac::<sha1::Sha1>(password, salt, iterations, out),
            Prf::Sha256 => pbkdf2::pbkdf2_hmac::<sha2::Sha256>(password, salt, iterations, out),
            Prf::Sha512 => pbkdf2::pbkdf2_hmac::<sha2::Sha512>(password, salt, iterations, out),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pbkdf2Style {
    /// `pbkdf2_sha256$iter$salt$b64`: the salt is text, used as its UTF-8 bytes.
    Django,
    /// `$keycloak-<alg>$i=<iter>$<salt b64>$<value b64>`: the salt is binary.
    Keycloak,
}

/// A PBKDF2-HMAC hash. The derived key length is the stored key's length.
#[derive(Debug)]
pub(super) struct Pbkdf2 {
    prf: Prf,
    iterations: u32,
    salt: Vec<u8>,
    key: Vec<u8>,
    style: Pbkdf2Style,
}

impl Pbkdf2 {
    fn new(
        prf: Prf,
        iterations: u32,
        salt: Vec<u8>,
        key: Vec<u8>,
        style: Pbkdf2Style,
    ) -> Result<Self, String> {
        if iterations == 0 || iterations > MAX_PBKDF2_ITERATIONS {
            return Err(format!(
                "PBKDF2 iterations must be between {MIN_PBKDF2_ITERATIONS} and {MAX_PBKDF2_ITERATIONS}"
            ));
        }
        if salt.is_empty() {
            return Err("the PBKDF2 salt is empty".to_owned());
        }
        match style {
            // Django derives exactly one digest's worth.
            Pbkdf2Style::Django if key.len() != prf.output_len() => {
                return Err(format!(
                    "the PBKDF2 hash must decode to {} bytes",
                    prf.output_len()
                ));
            }
            Pbkdf2Style::Keycloak
                if !(MIN_PBKDF2_KEY_LEN..=MAX_PBKDF2_KEY_LEN).contains(&key.len()) =>
            {
                return Err(format!(
                    "the PBKDF2 value must decode to {MIN_PBKDF2_KEY_LEN}–{MAX_PBKDF2_KEY_LEN} bytes"
                ));
            }
            _ => {}
        }
        Ok(Self {
            prf,
            iterations,
            salt,
            key,
            style,
        })
    }

    /// Imports must not bring in hashes weaker than PBKDF2 with 1000 iterations. (Stored values
    /// with fewer still verify, so the bound is not on the verification path.)
    fn check_import_iterations(&self) -> Result<(), String> {
        if self.iterations < MIN_PBKDF2_ITERATIONS {
            return Err(format!(
                "PBKDF2 iterations must be between {MIN_PBKDF2_ITERATIONS} and {MAX_PBKDF2_ITERATIONS}"
            ));
        }
        Ok(())
    }

    /// `rest` is what follows `pbkdf2_sha256$`: `iterations$salt$base64`.
    fn parse_django(prf: Prf, rest: &str) -> Result<Self, String> {
        let mut parts = rest.split('$');
        let (Some(iterations), Some(salt), Some(key), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err("a Django PBKDF2 hash is algorithm$iterations$salt$hash".to_owned());
        };
        let iterations = parse_iterations(iterations)?;
        let key = decode_b64(key, "hash")?;
        Self::new(
            prf,
            iterations,
            salt.as_bytes().to_vec(),
            key,
            Pbkdf2Style::Django,
        )
    }

    /// `rest` is what follows `$keycloak-`: `<alg>$i=<iterations>$<salt>$<value>`.
    fn parse_keycloak(rest: &str) -> Result<Self, String> {
        let mut parts = rest.split('$');
        let (Some(algorithm), Some(iterations), Some(salt), Some(key), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(
                "a Keycloak credential is $keycloak-<algorithm>$i=<iterations>$<salt>$<value>"
                    .to_owned(),
            );
        };
        let prf = Prf::from_keycloak(algorithm).ok_or(
            "unsupported Keycloak algorithm; accepted: pbkdf2, pbkdf2-sha256, pbkdf2-sha512",
        )?;
        let iterations = iterations
            .strip_prefix("i=")
            .ok_or("the Keycloak iterations are written i=<number>")
            .and_then(|i| parse_iterations(i).map_err(|_| "invalid Keycloak iterations"))?;
        let salt = decode_b64(salt, "salt")?;
        let key = decode_b64(key, "value")?;
        Self::new(prf, iterations, salt, key, Pbkdf2Style::Keycloak)
    }

    fn verify(&self, password: &str) -> bool {
        let mut derived = vec![0u8; self.key.len()];
        self.prf.derive(
            password.as_bytes(),
            &self.salt,
            self.iterations,
            &mut derived,
        );
        derived.ct_eq(&self.key).into()
    }

    fn canonical(&self) -> String {
        match self.style {
            Pbkdf2Style::Django => format!(
                "pbkdf2_{}${}${}${}",
                match self.prf {
                    Prf::Sha1 => "sha1",
                    Prf::Sha256 => "sha256",
                    Prf::Sha512 => "sha512",
                },
                self.iterations,
                String::from_utf8_lossy(&self.salt),
                STANDARD.encode(&self.key)
            ),
            Pbkdf2Style::Keycloak => format!(
                "$keycloak-{}$i={}${}${}",
                self.prf.keycloak_name(),
                self.iterations,
                STANDARD.encode(&self.salt),
                STANDARD.encode(&self.key)
            ),
        }
    }
}

fn parse_iterations(s: &str) -> Result<u32, String> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err("the PBKDF2 iteration count is not a number".to_owned());
    }
    s.parse().map_err(|_| {
        format!(
            "PBKDF2 iterations must be between {MIN_PBKDF2_ITERATIONS} and {MAX_PBKDF2_ITERATIONS}"
        )
    })
}

fn decode_b64(s: &str, what: &str) -> Result<Vec<u8>, String> {
    LENIENT_BASE64
        .decode(s)
        .map_err(|_| format!("the {what} is not valid base64"))
}

#[cfg(test)]
mod tests {
    use super::super::{hash_password, verify_password, Argon2Params, Verification};
    use super::*;

    const FAST: Argon2Params = Argon2Params {
        m_cost_kib: 1024,
        t_cost: 1,
        p_cost: 1,
    };

    fn check(stored: &str, password: &str) -> Verification {
        verify_password(&FAST, password, stored).unwrap()
    }

    /// `stored` verifies `password`, refuses a near miss, asks for a re-hash and is accepted
    /// by the importer.
    fn assert_foreign(stored: &str, password: &str) {
        assert_eq!(
            check(stored, password),
            Verification {
                matched: true,
                needs_rehash: true
            },
            "{stored}"
        );
        let wrong = format!("{password}x");
        assert!(!check(stored, &wrong).matched, "{stored}");
        let imported = import_hash(stored, &FAST).unwrap();
        assert!(check(&imported, password).matched, "{imported}");
    }

    #[test]
    fn argon2id_reference_vector() {
        // From the argon2 reference implementation (phc-winner-argon2).
        assert_foreign(
            "$argon2id$v=19$m=65536,t=2,p=1$c29tZXNhbHQ$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc",
            "password",
        );
    }

    #[test]
    fn argon2i_and_argon2d_verify_and_need_rehash() {
        // passlib's django_argon2 vector, in plain PHC form.
        assert_foreign(
            "$argon2i$v=19$m=256,t=1,p=1$c29tZXNhbHQ$AJFIsNZTMKTAewB4+ETN1A",
            "password",
        );
        let argon2d = Argon2::new(
            Algorithm::Argon2d,
            Version::V0x13,
            argon2::Params::new(256, 2, 1, None).unwrap(),
        );
        let salt = argon2::password_hash::SaltString::encode_b64(b"0123456789abcdef").unwrap();
        let phc =
            argon2::password_hash::PasswordHasher::hash_password(&argon2d, b"hunter22", &salt)
                .unwrap()
                .to_string();
        assert!(phc.starts_with("$argon2d$"));
        assert_foreign(&phc, "hunter22");
    }

    #[test]
    fn django_argon2() {
        // passlib's test vectors for Django's Argon2PasswordHasher.
        assert_foreign(
            "argon2$argon2i$v=19$m=256,t=1,p=1$c29tZXNhbHQ$AJFIsNZTMKTAewB4+ETN1A",
            "password",
        );
        assert_foreign(
            "argon2$argon2i$v=19$m=512,t=2,p=2$V25jN1l4UUJZWkR1$MxpA1BD2Gh7+D79gaAw6sQ",
            "l\u{e8}tmein",
        );
        // The Django wrapper is dropped on import: what remains is the PHC string.
        assert_eq!(
            import_hash(
                "argon2$argon2i$v=19$m=256,t=1,p=1$c29tZXNhbHQ$AJFIsNZTMKTAewB4+ETN1A",
                &FAST
            )
            .unwrap(),
            "$argon2i$v=19$m=256,t=1,p=1$c29tZXNhbHQ$AJFIsNZTMKTAewB4+ETN1A"
        );
        // Our own argon2id behind Django's prefix, with the current params: no re-hash.
        let ours = hash_password(&FAST, "s3cret-enough").unwrap();
        let django = format!("argon2{ours}");
        assert_eq!(
            check(&django, "s3cret-enough"),
            Verification {
                matched: true,
                needs_rehash: false
            }
        );
    }

    #[test]
    fn bcrypt_known_vectors_and_variants() {
        // crypt_blowfish / OpenBSD test vector.
        let vector = "$2a$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW";
        assert_foreign(vector, "U*U");
        for variant in ["$2b$", "$2y$", "$2x$"] {
            let other = format!("{variant}{}", &vector[4..]);
            assert_foreign(&other, "U*U");
        }
        let generated = bcrypt::hash("tr0ub4dor&3", 4).unwrap();
        assert_foreign(&generated, "tr0ub4dor&3");
    }

    #[test]
    fn django_bcrypt_plain() {
        let inner = bcrypt::hash("letmein-please", 4).unwrap();
        let django = format!("bcrypt${inner}");
        assert_foreign(&django, "letmein-please");
        assert_eq!(import_hash(&django, &FAST).unwrap(), inner);
    }

    #[test]
    fn django_bcrypt_sha256_vectors() {
        // passlib's test vectors for Django's BCryptSHA256PasswordHasher (its
        // `repeat_string("abc123", 72)` is 72 characters long).
        let abc = "abc123".repeat(12);
        let cases = [
            (
                "",
                "bcrypt_sha256$$2a$06$/3OeRpbOf8/l6nPPRdZPp.nRiyYqPobEZGdNRBWihQhiFDh1ws1tu",
            ),
            (
                "l\u{e8}tmein",
                "bcrypt_sha256$$2a$08$NDjSAIcas.EcoxCRiArvT.MkNiPYVhrsrnJsRkLueZOoV1bsQqlmC",
            ),
            (
                "t\u{e1}\u{411}\u{2113}\u{259}",
                "bcrypt_sha256$$2a$06$kCXUnRFQptGg491siDKNTu8RxjBGSjALHRuvhPYNFsa4Ea5d9M48u",
            ),
            (
                abc.as_str(),
                "bcrypt_sha256$$2a$06$Tg/oYyZTyAf.Nb3qSgN61OySmyXA8FoY4PjGizjE1QSDfuL5MXNni",
            ),
        ];
        for (password, stored) in cases {
            assert_foreign(stored, password);
        }
        // Past bcrypt's 72 bytes the pre-hash still tells passwords apart.
        let longer = format!("{abc}qwr");
        assert!(
            check(
                "bcrypt_sha256$$2a$06$Tg/oYyZTyAf.Nb3qSgN61Ocy0BEz1RK6xslSNi8PlaLX2pe7x/KQG",
                &longer
            )
            .matched
        );
        assert!(
            !check(
                "bcrypt_sha256$$2a$06$Tg/oYyZTyAf.Nb3qSgN61Ocy0BEz1RK6xslSNi8PlaLX2pe7x/KQG",
                &abc
            )
            .matched
        );
        // The prefix is kept on import: it changes what bcrypt was given.
        assert!(import_hash(cases[1].1, &FAST)
            .unwrap()
            .starts_with("bcrypt_sha256$$2a$08$"));
    }

    #[test]
    fn django_pbkdf2_published_vectors() {
        // Django's own test suite (1.4–1.5, 10000 iterations).
        assert_foreign(
            "pbkdf2_sha256$10000$seasalt$FQCNpiZpTb0zub+HBsH6TOwyRxJ19FwvjbweatNmK/Y=",
            "letmein",
        );
        assert_foreign(
            "pbkdf2_sha256$10000$seasalt$CWWFdHOWwPnki7HvkcqN9iA2T3KLW1cf2uZ5kvArtVY=",
            "l\u{e8}tmein",
        );
        assert_foreign(
            "pbkdf2_sha1$10000$seasalt$91JiNKgwADC8j2j86Ije/cc4vfQ=",
            "letmein",
        );
        assert_foreign(
            "pbkdf2_sha1$10000$seasalt$oAfF6vgs95ncksAhGXOWf4Okq7o=",
            "l\u{e8}tmein",
        );
    }

    #[test]
    fn keycloak_credentials() {
        // Values computed with Python's hashlib.pbkdf2_hmac (an independent implementation).
        let salt = "a2V5Y2xvYWstc2FsdC0xNg=="; // "keycloak-salt-16"
        let sha512 = "R2XX2MaEhk9gEtK+H0s1H1bK+zjWYFPmB15d/yo8Y1bYRh+QJmd3buWdi8lV0pDRK87Ip72yRUPOOHpK11ECTQ==";
        let sha256 = "8GbjogtMDXRXRIS4I8hic4Wfp7iB8Wyd29k+n5soeT5O8CiybH/NSkwhbXLo9c8Vz0YwKrbJyq+Upc6F+e4LKg==";
        let stored = import_keycloak("pbkdf2-sha512", 27500, salt, sha512).unwrap();
        assert_eq!(
            stored,
            format!("$keycloak-pbkdf2-sha512$i=27500${salt}${sha512}")
        );
        assert_foreign(&stored, "Tr0ub4dor&3");
        let stored = import_keycloak("pbkdf2-sha256", 27500, salt, sha256).unwrap();
        assert_foreign(&stored, "Tr0ub4dor&3");
        // RFC 6070: PBKDF2-HMAC-SHA1("password", "salt", 4096, 20).
        let key = STANDARD.encode([
            0x4b, 0x00, 0x79, 0x01, 0xb7, 0x65, 0x48, 0x9a, 0xbe, 0xad, 0x49, 0xd9, 0x26, 0xf7,
            0x21, 0xd0, 0x65, 0xa4, 0x29, 0xc1,
        ]);
        let stored = import_keycloak("pbkdf2", 4096, &STANDARD.encode("salt"), &key).unwrap();
        assert_foreign(&stored, "password");
        // Keycloak's exports are padded; unpadded input is normalised.
        let unpadded = import_keycloak(
            "pbkdf2-sha256",
            27500,
            salt.trim_end_matches('='),
            sha256.trim_end_matches('='),
        )
        .unwrap();
        assert_eq!(
            unpadded,
            format!("$keycloak-pbkdf2-sha256$i=27500${salt}${sha256}")
        );
    }

    #[test]
    fn keycloak_bad_input_is_refused() {
        let salt = "a2V5Y2xvYWstc2FsdC0xNg==";
        let value = STANDARD.encode([7u8; 32]);
        assert!(import_keycloak("md5", 27500, salt, &value).is_err());
        assert!(import_keycloak("pbkdf2-sha256", 999, salt, &value).is_err());
        assert!(import_keycloak("pbkdf2-sha256", 10_000_001, salt, &value).is_err());
        assert!(import_keycloak("pbkdf2-sha256", 27500, "", &value).is_err());
        assert!(import_keycloak("pbkdf2-sha256", 27500, "not base64!", &value).is_err());
        assert!(import_keycloak("pbkdf2-sha256", 27500, salt, &STANDARD.encode([1u8; 8])).is_err());
        assert!(
            import_keycloak("pbkdf2-sha256", 27500, salt, &STANDARD.encode([1u8; 128])).is_err()
        );
    }

    #[test]
    fn import_refuses_plain_text_unknown_and_unbounded() {
        let refused = [
            "",
            "hunter2",
            "correct horse battery staple",
            "!Xk3aPq9",
            "md5$seasalt$dd23e1c95c63c8ecc1ad8be7f8a2e6aa",
            "sha1$seasalt$ab12",
            "$5$rounds=5000$saltsalt$hash",
            "$argon2id$v=19$m=2097152,t=2,p=1$c29tZXNhbHQ$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc",
            "$argon2id$v=19$m=65536,t=21,p=1$c29tZXNhbHQ$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc",
            "$argon2id$v=19$m=65536,t=2,p=17$c29tZXNhbHQ$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc",
            "$argon2id$v=19$m=65536,t=2,p=1,keyid=AAAA$c29tZXNhbHQ$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc",
            "$argon2id$v=19$m=65536,t=2,p=1$c29tZXNhbHQ",
            "$2b$03$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW",
            "$2b$17$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW",
            "$2b$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOe",
            "$2c$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW",
            "$2b$05$CCCCCCCCCCCCCCCCCCCCC!E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW",
            "bcrypt_sha256$2b$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW",
            "pbkdf2_sha256$999$seasalt$FQCNpiZpTb0zub+HBsH6TOwyRxJ19FwvjbweatNmK/Y=",
            "pbkdf2_sha256$10000001$seasalt$FQCNpiZpTb0zub+HBsH6TOwyRxJ19FwvjbweatNmK/Y=",
            "pbkdf2_sha256$ten$seasalt$FQCNpiZpTb0zub+HBsH6TOwyRxJ19FwvjbweatNmK/Y=",
            "pbkdf2_sha256$10000$$FQCNpiZpTb0zub+HBsH6TOwyRxJ19FwvjbweatNmK/Y=",
            "pbkdf2_sha256$10000$seasalt$91JiNKgwADC8j2j86Ije/cc4vfQ=",
            "pbkdf2_sha256$10000$seasalt",
            "$keycloak-pbkdf2-sha256$27500$a2V5$AAAA",
        ];
        for raw in refused {
            match import_hash(raw, &FAST) {
                Err(ImportError::Unsupported(err)) => {
                    assert!(err.contains("accepted formats"), "{raw}: {err}");
                }
                other => panic!("{raw}: {other:?}"),
            }
        }
        // The message never repeats the credential.
        let err = import_hash("hunter2", &FAST).unwrap_err();
        assert!(!format!("{err:?}").contains("hunter2"), "{err:?}");
    }

    #[test]
    fn hashes_costlier_than_ours_are_refused_not_clamped() {
        let salt_and_hash = "c29tZXNhbHQ$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc";
        let costly = [
            format!("$argon2id$v=19$m=131072,t=2,p=1${salt_and_hash}"),
            format!("$argon2id$v=19$m=65536,t=5,p=1${salt_and_hash}"),
            "$2b$14$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW".to_owned(),
            "pbkdf2_sha256$1300000$seasalt$FQCNpiZpTb0zub+HBsH6TOwyRxJ19FwvjbweatNmK/Y=".to_owned(),
            format!(
                "$keycloak-pbkdf2-sha256$i=1200001$a2V5Y2xvYWstc2FsdC0xNg==${}",
                "8GbjogtMDXRXRIS4I8hic4Wfp7iB8Wyd29k+n5soeT5O8CiybH/NSkwhbXLo9c8Vz0YwKrbJyq+Upc6F+e4LKg=="
            ),
        ];
        for raw in &costly {
            assert_eq!(
                import_hash(raw, &FAST),
                Err(ImportError::TooCostly),
                "{raw}"
            );
            // Stored before the bound: never run.
            assert!(
                matches!(
                    super::super::verify_password(&FAST, "pw", raw),
                    Err(HashError::TooCostly)
                ),
                "{raw}"
            );
        }
        // At the bounds: accepted.
        for raw in [
            format!("$argon2id$v=19$m=65536,t=4,p=1${salt_and_hash}"),
            "$2b$13$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW".to_owned(),
            "pbkdf2_sha256$1200000$seasalt$FQCNpiZpTb0zub+HBsH6TOwyRxJ19FwvjbweatNmK/Y=".to_owned(),
        ] {
            assert!(import_hash(&raw, &FAST).is_ok(), "{raw}");
        }
        // A server configured above the bounds verifies hashes of its own cost.
        let heavy = Argon2Params {
            m_cost_kib: 131_072,
            t_cost: 2,
            p_cost: 1,
        };
        assert!(import_hash(&costly[0], &heavy).is_ok());
    }

    #[test]
    fn import_trims_whitespace_and_keeps_canonical_forms() {
        let django = "pbkdf2_sha256$10000$seasalt$FQCNpiZpTb0zub+HBsH6TOwyRxJ19FwvjbweatNmK/Y=";
        assert_eq!(
            import_hash(&format!("  {django}\n"), &FAST).unwrap(),
            django
        );
        let vector = "$2a$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW";
        assert_eq!(import_hash(vector, &FAST).unwrap(), vector);
        let keycloak = import_keycloak(
            "pbkdf2-sha256",
            27500,
            "a2V5Y2xvYWstc2FsdC0xNg==",
            "8GbjogtMDXRXRIS4I8hic4Wfp7iB8Wyd29k+n5soeT5O8CiybH/NSkwhbXLo9c8Vz0YwKrbJyq+Upc6F+e4LKg==",
        )
        .unwrap();
        assert_eq!(import_hash(&keycloak, &FAST).unwrap(), keycloak);
    }

    #[test]
    fn parse_never_panics_on_odd_input() {
        for raw in [
            "$",
            "$2",
            "$2b$",
            "$2b$\u{e9}\u{e9}$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvy",
            "$argon2",
            "argon2$",
            "bcrypt$",
            "bcrypt_sha256$",
            "pbkdf2_sha256$",
            "pbkdf2_sha1$$$$$",
            "$keycloak-",
            "$keycloak-pbkdf2$i=$$",
        ] {
            assert!(Stored::parse(raw).is_err(), "{raw}");
        }
    }
}
