//! Opaque secrets handed to clients: 256 random bits, URL-safe, stored only as a digest.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use domain::api_keys::KeyHash;
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};

/// Prefix of refresh tokens, so that secret scanners can recognise them.
pub const REFRESH_PREFIX: &str = "pcr_";

/// A fresh secret and its digest.
pub struct Opaque {
    pub secret: SecretString,
    pub hash: KeyHash,
}

impl Opaque {
    pub fn generate(prefix: &str) -> Self {
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        let secret = format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes));
        let hash = KeyHash::of(&secret);
        Self {
            secret: SecretString::from(secret),
            hash,
        }
    }

    pub fn expose(&self) -> &str {
        self.secret.expose_secret()
    }
}

/// Longest opaque secret accepted from a client; anything longer is not ours.
pub const MAX_SECRET_LEN: usize = 128;

/// The digest of a presented secret, or `None` if it cannot be one of ours.
pub fn digest_of(presented: &str) -> Option<KeyHash> {
    let s = presented.trim();
    if s.is_empty() || s.len() > MAX_SECRET_LEN {
        None
    } else {
        Some(KeyHash::of(s))
    }
}
