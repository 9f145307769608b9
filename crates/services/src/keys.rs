//! Token-signing keys (platform-wide): rotation and listing, by the operator or a platform
//! administrator. A rotation is recorded in every tenant's trail, since the key signs every
//! tenant's tokens; the old key stays published until the tokens it signed expire.

use domain::audit::{actions, AuditEvent, EntityRef};
use domain::auth::SigningKeyRecord;
use domain::page::{decode_cursor, PageSize};
use domain::tenants::TenantListQuery;
use domain::time::now;
use domain::{Code, Error, Result};
use portcullis_auth::keys::{generate_signing_key, SigningAlgorithm};
use serde_json::json;

use crate::{Actor, Services};

impl Services {
    /// Generates a new signing key that replaces the current one.
    pub async fn rotate_signing_key(
        &self,
        actor: &Actor,
        algorithm: SigningAlgorithm,
    ) -> Result<SigningKeyRecord> {
        if !self.is_platform_admin(actor).await? {
            return Err(Error::refused(Code::PlatformAdminRequired));
        }
        let at = now();
        let key = generate_signing_key(algorithm, self.signin.master(), at)?;
        let mut events = Vec::new();
        let mut after = None;
        loop {
            let page = self
                .core
                .store
                .list_tenants(&TenantListQuery {
                    status: None,
                    limit: PageSize::new(Some(200))?,
                    after,
                })
                .await?;
            for t in &page.items {
                events.push(AuditEvent::record(
                    &actor.audit(),
                    t.id,
                    actions::SIGNING_KEY_ROTATE,
                    EntityRef::none("signing_key"),
                    (
                        None,
                        Some(json!({"kid": key.kid, "algorithm": key.algorithm})),
                    ),
                    at,
                ));
            }
            match page.next_cursor {
                Some(c) => after = Some(decode_cursor(&c)?),
                None => break,
            }
        }
        self.core.store.add_signing_key(&key, &events).await?;
        self.signin.reload_keys().await?;
        Ok(key)
    }

    /// Every signing key, newest first (without their private halves' use).
    pub async fn list_signing_keys(&self, actor: &Actor) -> Result<Vec<SigningKeyRecord>> {
        if !self.is_platform_admin(actor).await? {
            return Err(Error::refused(Code::PlatformAdminRequired));
        }
        self.core.store.list_signing_keys().await
    }
}
