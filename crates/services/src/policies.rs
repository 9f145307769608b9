//! The tenant's ABAC policies: one Cedar `permit` or `forbid` statement each, validated
//! against the tenant's schema when saved, versioned (the history keeps every version).
//! Names are unique in the tenant.

use domain::audit::{actions, AuditEvent, EntityRef};
use domain::authz::{NewPolicy, Policy, PolicyEffect, PolicyPatch, PolicyVersion};
use domain::store::{Named, Tx};
use domain::time::now;
use domain::{Code, Error, PolicyId, Result, TenantId};

use crate::access::Target;
use crate::{Actor, Core, Services};

impl Core {
    async fn policy_name_free(
        &self,
        tx: &mut dyn Tx,
        tenant: TenantId,
        name: &str,
        except: Option<PolicyId>,
    ) -> Result<()> {
        if tx
            .name_taken(Named::Policy, tenant, name, except.map(PolicyId::into_uuid))
            .await?
        {
            return Err(Error::refused_field(Code::PolicyNameTaken, "name"));
        }
        Ok(())
    }
}

/// A policy update before Cedar has judged a new source.
pub struct PolicyChange {
    pub name: Option<domain::values::Identifier>,
    pub description: domain::Patch<domain::values::Description>,
    pub source: Option<String>,
    pub active: Option<bool>,
}

impl Services {
    pub async fn list_policies(&self, actor: &Actor) -> Result<Vec<Policy>> {
        self.authorize(actor, "policies", "read", Target::Collection)
            .await?;
        self.core.store.list_policies(actor.tenant).await
    }

    pub async fn get_policy(&self, actor: &Actor, id: PolicyId) -> Result<Policy> {
        self.authorize(actor, "policies", "read", Target::Collection)
            .await?;
        self.core.store.get_policy(actor.tenant, id).await
    }

    /// Every version of a policy, newest first.
    pub async fn list_policy_versions(
        &self,
        actor: &Actor,
        id: PolicyId,
    ) -> Result<Vec<PolicyVersion>> {
        self.authorize(actor, "policies", "read", Target::Collection)
            .await?;
        self.core.store.list_policy_versions(actor.tenant, id).await
    }

    /// The tenant's Cedar schema, for policy authors.
    pub async fn policy_schema(&self, actor: &Actor) -> Result<String> {
        self.authorize(actor, "policies", "read", Target::Collection)
            .await?;
        self.core.authz.schema_text(actor.tenant).await
    }

    /// Creates a policy; its source (in `new`, with a placeholder effect) must parse and
    /// validate against the tenant's schema, which decides the effect.
    pub async fn create_policy(&self, actor: &Actor, new: NewPolicy) -> Result<Policy> {
        self.authorize(actor, "policies", "create", Target::Collection)
            .await?;
        let effect = self
            .core
            .authz
            .validate_policy(actor.tenant, &new.source)
            .await?;
        let at = now();
        let p = NewPolicy { effect, ..new }.into_policy(actor.tenant, at);
        let mut tx = self.core.begin().await?;
        tx.lock_authz(actor.tenant).await?;
        tx.tenant_for_update(actor.tenant).await?;
        self.core
            .policy_name_free(tx.as_mut(), actor.tenant, &p.name, None)
            .await?;
        tx.insert_policy(&p, actor.audit_actor()).await?;
        tx.record(&AuditEvent::record(
            &actor.audit(),
            actor.tenant,
            actions::POLICY_CREATE,
            EntityRef::policy(p.id),
            (None, Some(p.to_audit_json())),
            at,
        ))
        .await?;
        self.core.commit(tx).await?;
        Ok(p)
    }

    /// Updates a policy; a new source is validated like a new policy's. With
    /// `expected_version`, only if the policy is still at that version.
    pub async fn update_policy(
        &self,
        actor: &Actor,
        id: PolicyId,
        change: PolicyChange,
        expected_version: Option<i64>,
    ) -> Result<Policy> {
        self.authorize(actor, "policies", "update", Target::Collection)
            .await?;
        let effect: Option<PolicyEffect> = match &change.source {
            Some(source) => Some(
                self.core
                    .authz
                    .validate_policy(actor.tenant, source)
                    .await?,
            ),
            None => None,
        };
        let patch = PolicyPatch {
            name: change.name,
            description: change.description,
            source: change.source.zip(effect),
            active: change.active,
        };
        let at = now();
        let mut tx = self.core.begin().await?;
        tx.lock_authz(actor.tenant).await?;
        let before = tx
            .policy(actor.tenant, id)
            .await?
            .ok_or(Error::NotFound { entity: "policy" })?;
        if let Some(expected) = expected_version.filter(|v| *v != before.version) {
            return Err(Error::PreconditionFailed {
                entity: "policy",
                expected,
                current: before.version,
            });
        }
        let after = patch.apply(&before, at);
        if after.name != before.name {
            self.core
                .policy_name_free(tx.as_mut(), actor.tenant, &after.name, Some(id))
                .await?;
        }
        tx.put_policy(&after, actor.audit_actor()).await?;
        tx.record(&AuditEvent::record(
            &actor.audit(),
            actor.tenant,
            actions::POLICY_UPDATE,
            EntityRef::policy(id),
            (Some(before.to_audit_json()), Some(after.to_audit_json())),
            at,
        ))
        .await?;
        self.core.commit(tx).await?;
        Ok(after)
    }

    /// Deletes a policy: it no longer takes part in decisions.
    pub async fn delete_policy(&self, actor: &Actor, id: PolicyId) -> Result<Policy> {
        self.authorize(actor, "policies", "delete", Target::Collection)
            .await?;
        let mut tx = self.core.begin().await?;
        tx.lock_authz(actor.tenant).await?;
        let p = tx
            .policy(actor.tenant, id)
            .await?
            .ok_or(Error::NotFound { entity: "policy" })?;
        tx.delete_policy(actor.tenant, id).await?;
        tx.record(&AuditEvent::record(
            &actor.audit(),
            actor.tenant,
            actions::POLICY_DELETE,
            EntityRef::policy(id),
            (Some(p.to_audit_json()), None),
            now(),
        ))
        .await?;
        self.core.commit(tx).await?;
        Ok(p)
    }
}
