//! API keys: issuance (the secret is shown once; only its SHA-256 is stored), listing,
//! revocation, and authentication with a short-lived cache. The cache subscribes to the
//! events: a key revoked, or its tenant's status changed, empties it at once on this
//! replica; on others within `http.api_key_cache_seconds` (or at once, when they hear the
//! event from the outbox).

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use domain::api_keys::{ApiKey, ApiKeyAuth, GeneratedKey, KeyHash, NewApiKey};
use domain::audit::{actions, AuditEvent, EntityRef};
use domain::events::Event;
use domain::tenants::TenantStatus;
use domain::time::now;
use domain::{ApiKeyId, Code, Error, Result, TenantId};

use crate::access::Target;
use crate::events::Subscriber;
use crate::{Actor, ActorKind, RequestMeta, Services};

/// Most keys remembered; the cache is emptied when full.
const API_KEY_CACHE_MAX: usize = 10_000;

fn to_json(k: &ApiKey) -> Option<serde_json::Value> {
    serde_json::to_value(k).ok()
}

impl Services {
    /// Creates a key for `tenant` (the actor's own, or any tenant for the platform); the
    /// generated secret is the only copy. Only a platform administrator creates a
    /// platform-admin key.
    pub async fn create_api_key(
        &self,
        actor: &Actor,
        tenant: TenantId,
        new: NewApiKey,
    ) -> Result<(ApiKey, GeneratedKey)> {
        if tenant != actor.tenant || new.platform_admin {
            if !self.is_platform_admin(actor).await? {
                return Err(Error::refused(Code::PlatformAdminRequired));
            }
        } else {
            self.authorize(actor, "api_keys", "create", Target::Collection)
                .await?;
        }
        let at = now();
        let generated = GeneratedKey::generate();
        let key = ApiKey {
            id: ApiKeyId::new(),
            tenant_id: tenant,
            name: new.name.into_inner(),
            prefix: generated.prefix.clone(),
            platform_admin: new.platform_admin,
            created_at: at,
            revoked_at: None,
        };
        let mut tx = self.core.begin().await?;
        tx.tenant_for_update(tenant).await?;
        tx.insert_api_key(&key, &generated.hash).await?;
        tx.record(&AuditEvent::record(
            &actor.audit(),
            tenant,
            actions::API_KEY_CREATE,
            EntityRef::api_key(key.id),
            (None, to_json(&key)),
            at,
        ))
        .await?;
        self.core.commit(tx).await?;
        Ok((key, generated))
    }

    pub async fn list_api_keys(&self, actor: &Actor, tenant: TenantId) -> Result<Vec<ApiKey>> {
        if tenant != actor.tenant {
            if !self.is_platform_admin(actor).await? {
                return Err(Error::refused(Code::PlatformAdminRequired));
            }
        } else {
            self.authorize(actor, "api_keys", "read", Target::Collection)
                .await?;
        }
        self.core.store.list_api_keys(tenant).await
    }

    /// Revokes a key; an unknown, another tenant's or an already revoked key is
    /// `NotFound`.
    pub async fn revoke_api_key(
        &self,
        actor: &Actor,
        tenant: TenantId,
        id: ApiKeyId,
    ) -> Result<ApiKey> {
        if tenant != actor.tenant {
            if !self.is_platform_admin(actor).await? {
                return Err(Error::refused(Code::PlatformAdminRequired));
            }
        } else {
            self.authorize(actor, "api_keys", "delete", Target::Collection)
                .await?;
        }
        let at = now();
        let mut tx = self.core.begin().await?;
        let before = tx
            .api_key_for_update(tenant, id)
            .await?
            .filter(|k| k.revoked_at.is_none())
            .ok_or(Error::NotFound { entity: "api_key" })?;
        // A platform-admin key is revoked by a platform administrator only.
        if before.platform_admin && !self.is_platform_admin(actor).await? {
            return Err(Error::refused(Code::PlatformAdminRequired));
        }
        let after = ApiKey {
            revoked_at: Some(at),
            ..before.clone()
        };
        tx.put_api_key(&after).await?;
        tx.record(&AuditEvent::record(
            &actor.audit(),
            tenant,
            actions::API_KEY_REVOKE,
            EntityRef::api_key(id),
            (to_json(&before), to_json(&after)),
            at,
        ))
        .await?;
        self.core.commit(tx).await?;
        Ok(after)
    }

    /// The actor an API key authenticates, in its tenant. Keys are looked up by their
    /// SHA-256: the database compares digests, so neither timing nor the error reveals
    /// anything about stored keys. A suspended tenant's keys are refused.
    pub async fn authenticate_api_key(&self, key: &str, meta: RequestMeta) -> Result<Actor> {
        let hash = KeyHash::of(key);
        let auth = match self.api_keys.get(&hash) {
            Some(auth) => auth,
            None => {
                let auth = self
                    .core
                    .store
                    .authenticate_api_key(&hash)
                    .await?
                    .ok_or(Error::refused(Code::InvalidApiKey))?;
                self.api_keys.put(hash, auth.clone());
                auth
            }
        };
        if auth.tenant_status != TenantStatus::Active {
            return Err(Error::refused(Code::TenantSuspended));
        }
        Ok(Actor {
            tenant: auth.key.tenant_id,
            kind: ActorKind::ApiKey {
                id: auth.key.id,
                platform_admin: auth.key.platform_admin,
            },
            meta,
        })
    }
}

/// API keys authenticated recently, by digest, so that a busy client (e.g. an application
/// asking `/authz/check` thousands of times a second) does not cost a database query per
/// request. Only successful authentications are kept: unknown keys cannot fill it. A key
/// is trusted for `ttl`.
#[derive(Default)]
pub struct ApiKeyCache {
    ttl: Duration,
    entries: RwLock<HashMap<KeyHash, (ApiKeyAuth, Instant)>>,
}

impl ApiKeyCache {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: RwLock::default(),
        }
    }

    fn get(&self, hash: &KeyHash) -> Option<ApiKeyAuth> {
        self.get_at(hash, Instant::now())
    }

    /// The entry for `hash` if it was put less than `ttl` before `now`.
    fn get_at(&self, hash: &KeyHash, now: Instant) -> Option<ApiKeyAuth> {
        if self.ttl.is_zero() {
            return None;
        }
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        entries
            .get(hash)
            .filter(|(_, at)| now.saturating_duration_since(*at) < self.ttl)
            .map(|(auth, _)| auth.clone())
    }

    fn clear(&self) {
        self.entries
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    fn put(&self, hash: KeyHash, auth: ApiKeyAuth) {
        self.put_at(hash, auth, Instant::now());
    }

    fn put_at(&self, hash: KeyHash, auth: ApiKeyAuth, now: Instant) {
        if self.ttl.is_zero() {
            return;
        }
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= API_KEY_CACHE_MAX {
            entries.clear();
        }
        entries.insert(hash, (auth, now));
    }
}

impl Subscriber for ApiKeyCache {
    fn name(&self) -> &'static str {
        "api-key-cache"
    }

    fn deliver(&self, events: &[Event]) {
        if events.iter().any(Event::affects_api_keys) {
            self.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::audit::ActorType;

    fn auth(tenant: TenantId) -> ApiKeyAuth {
        ApiKeyAuth {
            key: ApiKey {
                id: ApiKeyId::new(),
                tenant_id: tenant,
                name: "k".into(),
                prefix: "pk_".into(),
                platform_admin: false,
                created_at: now(),
                revoked_at: None,
            },
            tenant_status: TenantStatus::Active,
        }
    }

    #[test]
    fn an_entry_is_trusted_for_exactly_its_ttl() {
        let cache = ApiKeyCache::new(Duration::from_secs(5));
        let hash = KeyHash::of("pk_live_one");
        let t0 = Instant::now();
        assert!(cache.get_at(&hash, t0).is_none(), "nothing before a put");
        cache.put_at(hash.clone(), auth(TenantId::new()), t0);
        assert!(cache.get_at(&hash, t0).is_some());
        assert!(cache
            .get_at(&hash, t0 + Duration::from_millis(4_999))
            .is_some());
        assert!(cache.get_at(&hash, t0 + Duration::from_secs(5)).is_none());
        assert!(cache.get_at(&KeyHash::of("pk_live_two"), t0).is_none());
    }

    #[test]
    fn a_zero_ttl_keeps_nothing() {
        let cache = ApiKeyCache::new(Duration::ZERO);
        let hash = KeyHash::of("pk_live_one");
        let t0 = Instant::now();
        cache.put_at(hash.clone(), auth(TenantId::new()), t0);
        assert!(cache.get_at(&hash, t0).is_none());
    }

    #[test]
    fn a_key_event_empties_it_and_other_events_do_not() {
        let cache = ApiKeyCache::new(Duration::from_secs(60));
        let tenant = TenantId::new();
        let hash = KeyHash::of("pk_live_one");
        cache.put(hash.clone(), auth(tenant));
        let event = |kind: &str| Event {
            id: uuid::Uuid::new_v4(),
            position: None,
            tenant_id: tenant,
            event_type: kind.into(),
            entity_type: "api_key".into(),
            entity_id: None,
            actor_type: ActorType::System,
            actor_id: None,
            data: serde_json::Value::Null,
            occurred_at: now(),
            request_id: None,
        };
        cache.deliver(&[event("user.created")]);
        assert!(cache.get(&hash).is_some(), "a user event leaves keys alone");
        cache.deliver(&[event("api_key.revoked")]);
        assert!(cache.get(&hash).is_none(), "a revocation empties the cache");
    }
}
