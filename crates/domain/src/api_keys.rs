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
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeyHash(String);

impl KeyHash {
    pub fn of(key: &str) -> Self {
        Self::from_digest(&Sha256::digest(key.as_bytes()))
    }

    /// The hex form of a digest computed elsewhere (e.g. a keyed one).
    pub fn from_digest(digest: &[u8]) -> Self {
        let mut hex = String::with_capacity(digest.len() * 2);
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
}

/// A freshly generated key: the secret (to show once) and what to store.
pub struct GeneratedKey {
    pub secret: SecretString,
    pub hash: KeyHash,
    pub prefix: String,
}

impl GeneratedKey {
    /// A new API key.
    pub fn generate() -> Self {
        Self::with_prefix(KEY_PREFIX)
    }

    /// 256 random bits, URL-safe, after `prefix` (so that scanners can recognise the kind
    /// of secret): API keys, refresh tokens, session cookies, emailed tokens.
    pub fn with_prefix(prefix: &str) -> Self {
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        let key = format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes));
        let hash = KeyHash::of(&key);
        let prefix = key.chars().take(prefix.len() + 6).collect();
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
}
