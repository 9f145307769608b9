//! Opaque secrets handed to clients (refresh tokens, cookies, emailed tokens) are 256
//! random bits made by `domain::api_keys::GeneratedKey::with_prefix`; only their digest is
//! stored. This module reads presented secrets back, and digests short secrets (recovery
//! codes) under a server key.

use domain::api_keys::KeyHash;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Prefix of refresh tokens, so that secret scanners can recognise them.
pub const REFRESH_PREFIX: &str = "pcr_";

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

/// HMAC-SHA-256 of `data` under `key`.
pub fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length; the error arm cannot happen.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        return [0; 32];
    };
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// The keyed digest of a short secret, such as a recovery code: without the server's key,
/// a copy of the database does not allow guessing it offline.
pub fn keyed_digest(key: &[u8], secret: &str) -> KeyHash {
    KeyHash::from_digest(&hmac_sha256(key, secret.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_digest_is_hmac_sha256() {
        // RFC 4231, test case 2.
        assert_eq!(
            keyed_digest(b"Jefe", "what do ya want for nothing?").as_str(),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        let long_key = [0xaau8; 131];
        // RFC 4231, test case 6 (a key longer than the block).
        assert_eq!(
            keyed_digest(
                &long_key,
                "Test Using Larger Than Block-Size Key - Hash Key First"
            )
            .as_str(),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn presented_secrets_are_bounded() {
        assert!(digest_of("").is_none());
        assert!(digest_of(&"x".repeat(MAX_SECRET_LEN + 1)).is_none());
        assert_eq!(digest_of(" abc "), Some(KeyHash::of("abc")));
    }
}
