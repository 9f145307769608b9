//! Tenants (platform scope): creation with the default roles, reads, updates, suspension.
//! Tenant management is the platform's: platform-admin keys, super administrators and the
//! operator. A suspension signs out every user of the tenant, and its keys stop working at
//! once on this replica (the API-key cache hears the event) and within the cache's lifetime
//! elsewhere.

use domain::audit::{actions, AuditEvent, EntityRef};
use domain::authz::default_roles;
use domain::page::Page;
use domain::tenants::{NewTenant, Tenant, TenantListQuery, TenantPatch, TenantSlug, TenantStatus};
use domain::time::now;
use domain::{Code, Error, Result, TenantId};

use crate::access::Target;
use crate::{Actor, Services};

fn to_json(t: &Tenant) -> Option<serde_json::Value> {
    serde_json::to_value(t).ok()
}

impl Services {
    pub async fn create_tenant(&self, actor: &Actor, new: NewTenant) -> Result<Tenant> {
        self.authorize(actor, "tenants", "create", Target::Collection)
            .await?;
        let at = now();
        let t = new.into_tenant(at);
        let mut tx = self.core.begin().await?;
        tx.insert_tenant(&t).await?;
        // The tenant's decisions start at version 1 with its default roles (part of its
        // creation: one event).
        tx.lock_authz(t.id).await?;
        for d in default_roles() {
            tx.insert_role(&d.into_role(t.id, at)).await?;
        }
        tx.record(&AuditEvent::record(
            &actor.audit(),
            t.id,
            actions::TENANT_CREATE,
            EntityRef::tenant(t.id),
            (None, to_json(&t)),
            at,
        ))
        .await?;
        self.core.commit(tx).await?;
        Ok(t)
    }

    pub async fn get_tenant(&self, actor: &Actor, id: TenantId) -> Result<Tenant> {
        self.authorize(actor, "tenants", "read", Target::Collection)
            .await?;
        self.core.store.get_tenant(id).await
    }

    /// A tenant by slug, for the operator (CLI).
    pub async fn tenant_by_slug(&self, actor: &Actor, slug: &TenantSlug) -> Result<Tenant> {
        self.authorize(actor, "tenants", "read", Target::Collection)
            .await?;
        self.core.store.get_tenant_by_slug(slug).await
    }

    pub async fn list_tenants(&self, actor: &Actor, q: &TenantListQuery) -> Result<Page<Tenant>> {
        self.authorize(actor, "tenants", "read", Target::Collection)
            .await?;
        self.core.store.list_tenants(q).await
    }

    /// Updates a tenant; a platform admin cannot suspend the tenant its own credential
    /// belongs to (`own_tenant`).
    pub async fn update_tenant(
        &self,
        actor: &Actor,
        id: TenantId,
        patch: TenantPatch,
    ) -> Result<Tenant> {
        self.change_tenant(actor, id, patch, actions::TENANT_UPDATE, "update")
            .await
    }

    /// Suspends a tenant: its users are signed out and its credentials stop working; its
    /// data is kept and an update to `active` brings it back.
    pub async fn deactivate_tenant(&self, actor: &Actor, id: TenantId) -> Result<Tenant> {
        let patch = TenantPatch {
            status: Some(TenantStatus::Suspended),
            ..TenantPatch::default()
        };
        self.change_tenant(actor, id, patch, actions::TENANT_DEACTIVATE, "delete")
            .await
    }

    async fn change_tenant(
        &self,
        actor: &Actor,
        id: TenantId,
        patch: TenantPatch,
        action: &'static str,
        permission: &str,
    ) -> Result<Tenant> {
        self.authorize(actor, "tenants", permission, Target::Collection)
            .await?;
        if id == actor.tenant && patch.status == Some(TenantStatus::Suspended) {
            return Err(Error::refused(Code::OwnTenant));
        }
        let at = now();
        let mut tx = self.core.begin().await?;
        let before = tx.tenant_for_update(id).await?;
        let after = patch.apply(before.clone(), at);
        tx.put_tenant(&after).await?;
        tx.record(&AuditEvent::record(
            &actor.audit(),
            id,
            action,
            EntityRef::tenant(id),
            (to_json(&before), to_json(&after)),
            at,
        ))
        .await?;
        // A suspended tenant's users are signed out with it (the tenant event records why).
        if before.status != after.status && after.status == TenantStatus::Suspended {
            tx.revoke_tenant_sessions(id, "tenant_suspended", at)
                .await?;
        }
        self.core.commit(tx).await?;
        Ok(after)
    }
}
