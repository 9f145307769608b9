//! API keys: machine credentials. A key is 256 random bits shown once at creation; only its
//! SHA-256 digest is stored, so a database leak does not leak working keys. (A fast hash is
//! right here: the key has full entropy, so there is nothing for a slow hash to protect.)

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Utc};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::ids::{ApiKeyId, TenantId};
use crate::tenants::TenantStatus;
use crate::values::Label;

/// Every key starts with this, so that secret scanners can recognise a leaked one.
pub const KEY_PREFIX: &str = "pcs_";

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ApiKey {
    pub id: ApiKeyId,
    pub tenant_id: TenantId,
    pub name: String,
    /// The first characters of the key, to recognise it in listings.
    pub prefix: String,
    /// May manage tenants (create, list, update, deactivate).
    pub platform_admin: bool,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A validated request to create a key.
#[derive(Debug, Clone)]
pub struct NewApiKey {
    pub name: Label,
    pub platform_admin: bool,
}

/// The SHA-256 digest of a key, hex-encoded: what the database stores and looks up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyHash(String);

impl KeyHash {
    pub fn of(key: &str) -> Self {
        let digest = Sha256::digest(key.as_bytes());
        let mut hex = String::with_capacity(64);
        for b in digest {
            hex.push_str(&format!("{b:02x}"));
        }
        Self(hex)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A digest read back from storage (64 lowercase hex digits).
    pub fn from_hex(hex: String) -> Self {
        Self(hex)
    }

    /// The keyed digest (HMAC-SHA-256) of a short secret, such as a recovery code: without
    /// the server's key, a copy of the database does not allow guessing it offline.
    pub fn keyed(key: &[u8], secret: &str) -> Self {
        // HMAC by its definition (RFC 2104) over SHA-256, to avoid another dependency here.
        const BLOCK: usize = 64;
        let mut k = [0u8; BLOCK];
        if key.len() > BLOCK {
            k[..32].copy_from_slice(&Sha256::digest(key));
        } else {
            k[..key.len()].copy_from_slice(key);
        }
        let mut inner = Sha256::new();
        inner.update(k.map(|b| b ^ 0x36));
        inner.update(secret.as_bytes());
        let mut outer = Sha256::new();
        outer.update(k.map(|b| b ^ 0x5c));
        outer.update(inner.finalize());
        let mut hex = String::with_capacity(64);
        for b in outer.finalize() {
            hex.push_str(&format!("{b:02x}"));
        }
        Self(hex)
    }
}

/// A freshly generated key: the secret (to show once) and what to store.
pub struct GeneratedKey {
    pub secret: SecretString,
    pub hash: KeyHash,
    pub prefix: String,
}

impl GeneratedKey {
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        let key = format!("{KEY_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes));
        let hash = KeyHash::of(&key);
        let prefix = key.chars().take(KEY_PREFIX.len() + 6).collect();
        Self {
            secret: SecretString::from(key),
            hash,
            prefix,
        }
    }

    pub fn expose(&self) -> &str {
        self.secret.expose_secret()
    }
}

/// What authenticating a presented key yields.
#[derive(Debug, Clone)]
pub struct ApiKeyAuth {
    pub key: ApiKey,
    pub tenant_status: TenantStatus,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_hash_to_what_is_stored() {
        let k = GeneratedKey::generate();
        assert!(k.expose().starts_with(KEY_PREFIX));
        assert_eq!(k.expose().len(), KEY_PREFIX.len() + 43);
        assert_eq!(KeyHash::of(k.expose()), k.hash);
        assert_ne!(GeneratedKey::generate().hash, k.hash);
        assert!(!format!("{:?}", k.secret).contains(&k.expose()[4..]));
    }

    #[test]
    fn keyed_digest_is_hmac_sha256() {
        // RFC 4231, test case 2.
        assert_eq!(
            KeyHash::keyed(b"Jefe", "what do ya want for nothing?").as_str(),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        let long_key = [0xaau8; 131];
        // RFC 4231, test case 6 (a key longer than the block).
        assert_eq!(
            KeyHash::keyed(
                &long_key,
                "Test Using Larger Than Block-Size Key - Hash Key First"
            )
            .as_str(),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }
}
