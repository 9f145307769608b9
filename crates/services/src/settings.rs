//! The tenant's sign-in settings.

use domain::audit::{actions, AuditEvent, EntityRef};
use domain::auth::AuthSettings;
use domain::time::now;
use domain::Result;

use crate::access::Target;
use crate::{Actor, Services};

impl Services {
    pub async fn auth_settings(&self, actor: &Actor) -> Result<AuthSettings> {
        self.authorize(actor, "settings", "read", Target::Collection)
            .await?;
        self.core.store.get_auth_settings(actor.tenant).await
    }

    /// Replaces the tenant's sign-in settings.
    pub async fn put_auth_settings(
        &self,
        actor: &Actor,
        settings: AuthSettings,
    ) -> Result<AuthSettings> {
        settings.validate()?;
        self.authorize(actor, "settings", "update", Target::Collection)
            .await?;
        let at = now();
        let mut tx = self.core.begin().await?;
        let before = tx.auth_settings_for_update(actor.tenant).await?;
        tx.put_auth_settings(actor.tenant, &settings).await?;
        tx.record(&AuditEvent::record(
            &actor.audit(),
            actor.tenant,
            actions::TENANT_AUTH_SETTINGS_UPDATE,
            EntityRef::tenant(actor.tenant),
            (
                serde_json::to_value(&before).ok(),
                serde_json::to_value(&settings).ok(),
            ),
            at,
        ))
        .await?;
        self.core.commit(tx).await?;
        Ok(settings)
    }
}
