//! The permission catalogue, the tenant's roles and their permissions, and who holds them
//! (optionally until an expiry time).
//!
//! Rules, each once: role names are unique in the tenant (and `super_admin` is never free);
//! a role carries only permissions that exist, never `tenants:*`, and for resources without
//! owners only at scope `all`; the super administrator role never changes and system roles
//! keep their names and their existence; a user gives only what they hold, for no longer
//! than they hold it, never to themselves, and only to users they may manage; taking a
//! role away is bounded the same way; the platform keeps an active super administrator,
//! and one that does not expire; roles a policy names change only with `policies:update`.

use chrono::{DateTime, Utc};
use domain::audit::{actions, AuditEvent, EntityRef};
use domain::authz::{
    built_in_permissions, check_deletable, check_expiry, is_built_in, is_built_in_resource,
    refuse_super_admin, NewPermission, NewRole, Permission, PermissionKey, Role, RoleAssignment,
    RolePatch, RoleType, SUPER_ADMIN_ROLE_ID,
};
use domain::store::{Named, Tx};
use domain::time::{now, truncate};
use domain::{Code, Error, FieldError, Result, RoleId, TenantId, UserId};
use serde_json::{json, Value};

use crate::access::{check_scopes, Target};
use crate::{Actor, Core, Services};

/// Refuses `tenants:*`: tenant management is reserved to super administrators.
fn refuse_platform_permissions(field: &str, keys: &[PermissionKey]) -> Result<()> {
    let errors: Vec<FieldError> = keys
        .iter()
        .filter(|k| k.resource() == "tenants")
        .map(|k| {
            FieldError::new(
                field,
                Code::PlatformPermission.as_str(),
                format!("{k}: {}", Code::PlatformPermission.message()),
            )
        })
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(Error::Validation(errors))
    }
}

fn permissions_json(keys: &[PermissionKey]) -> Value {
    json!({ "permissions": keys.iter().map(ToString::to_string).collect::<Vec<_>>() })
}

/// Refuses permissions that are neither built in nor defined by the tenant, naming each.
async fn check_permissions_exist(
    tx: &mut dyn Tx,
    tenant: TenantId,
    field: &str,
    keys: &[PermissionKey],
) -> Result<()> {
    if keys.iter().all(|k| is_built_in(k.resource(), k.action())) {
        return Ok(());
    }
    let custom = tx.custom_permissions(tenant).await?;
    let errors: Vec<FieldError> = keys
        .iter()
        .filter(|k| !is_built_in(k.resource(), k.action()) && !custom.contains(k))
        .map(|k| {
            FieldError::new(
                field,
                Code::UnknownPermission.as_str(),
                format!("'{k}' is {}", Code::UnknownPermission.message()),
            )
        })
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(Error::Validation(errors))
    }
}

fn unknown_role(e: Error) -> Error {
    match e {
        Error::NotFound { .. } => Error::rule("role_id", Code::UnknownRole),
        other => other,
    }
}

impl Core {
    /// Refuses a role name used by another role of the tenant.
    async fn role_name_free(
        &self,
        tx: &mut dyn Tx,
        tenant: TenantId,
        name: &str,
        except: Option<RoleId>,
    ) -> Result<()> {
        if tx
            .name_taken(Named::Role, tenant, name, except.map(RoleId::into_uuid))
            .await?
        {
            return Err(Error::refused_field(Code::RoleNameTaken, "name"));
        }
        Ok(())
    }
}

impl Services {
    /// The permission catalogue: built-in permissions, then the tenant's own.
    pub async fn list_permissions(&self, actor: &Actor) -> Result<Vec<Permission>> {
        self.authorize(actor, "permissions", "read", Target::Collection)
            .await?;
        let mut all = built_in_permissions();
        all.extend(
            self.core
                .store
                .list_custom_permissions(actor.tenant)
                .await?,
        );
        Ok(all)
    }

    /// Defines a permission for the tenant's applications (not on Portcullis's own
    /// resources).
    pub async fn create_permission(&self, actor: &Actor, new: NewPermission) -> Result<Permission> {
        if is_built_in_resource(new.key.resource()) {
            return Err(Error::rule("permission", Code::BuiltInResource));
        }
        self.authorize(actor, "permissions", "create", Target::Collection)
            .await?;
        let at = now();
        let key = new.key;
        let p = Permission {
            resource: key.resource().to_owned(),
            action: key.action().to_owned(),
            scope: key.scope(),
            permission: key,
            description: new.description.map(|d| d.into_inner()).unwrap_or_default(),
            built_in: false,
            created_at: Some(at),
        };
        let mut tx = self.core.begin().await?;
        tx.lock_authz(actor.tenant).await?;
        tx.tenant_for_update(actor.tenant).await?;
        if !tx.insert_permission(actor.tenant, &p).await? {
            return Err(Error::refused_field(Code::PermissionExists, "permission"));
        }
        tx.record(&AuditEvent::record(
            &actor.audit(),
            actor.tenant,
            actions::PERMISSION_CREATE,
            EntityRef::none("permission"),
            (None, serde_json::to_value(&p).ok()),
            at,
        ))
        .await?;
        self.core.commit(tx).await?;
        Ok(p)
    }

    /// The tenant's roles and the super administrator role, highest priority first.
    pub async fn list_roles(&self, actor: &Actor) -> Result<Vec<Role>> {
        self.authorize(actor, "roles", "read", Target::Collection)
            .await?;
        self.core.store.list_roles(actor.tenant).await
    }

    pub async fn get_role(&self, actor: &Actor, id: RoleId) -> Result<Role> {
        self.authorize(actor, "roles", "read", Target::Collection)
            .await?;
        self.core.store.get_role(actor.tenant, id).await
    }

    /// Creates a custom role; users may only put in it permissions they hold.
    pub async fn create_role(&self, actor: &Actor, new: NewRole) -> Result<Role> {
        refuse_platform_permissions("permissions", &new.permissions)?;
        check_scopes("permissions", &new.permissions)?;
        self.authorize(actor, "roles", "create", Target::Collection)
            .await?;
        self.core
            .may_grant_permissions(actor, &new.permissions)
            .await?;
        let at = now();
        let role = new.into_role(actor.tenant, RoleType::Custom, at);
        let mut tx = self.core.begin().await?;
        tx.lock_authz(actor.tenant).await?;
        tx.tenant_for_update(actor.tenant).await?;
        self.core
            .role_name_free(tx.as_mut(), actor.tenant, &role.name, None)
            .await?;
        check_permissions_exist(tx.as_mut(), actor.tenant, "permissions", &role.permissions)
            .await?;
        tx.insert_role(&role).await?;
        tx.record(&AuditEvent::record(
            &actor.audit(),
            actor.tenant,
            actions::ROLE_CREATE,
            EntityRef::role(role.id),
            (None, Some(role.to_audit_json())),
            at,
        ))
        .await?;
        self.core.commit(tx).await?;
        Ok(role)
    }

    /// Updates a role. Re-activating it hands its permissions back to its holders: only a
    /// user who could give them may; renaming or (de)activating a role a policy names needs
    /// `policies:update`.
    pub async fn update_role(&self, actor: &Actor, id: RoleId, patch: RolePatch) -> Result<Role> {
        self.authorize(actor, "roles", "update", Target::Collection)
            .await?;
        let current = self.core.store.get_role(actor.tenant, id).await?;
        refuse_super_admin(&current)?;
        let until = self.core.may_grant_role(actor, &current).await?;
        if patch.active == Some(true) && !current.active {
            // Re-activating gives the role back to its holders, without end.
            Core::within(until, None)?;
        }
        let renamed = patch
            .name
            .as_ref()
            .is_some_and(|n| n.as_str() != current.name);
        if renamed || patch.active.is_some_and(|a| a != current.active) {
            self.core.guard_named_role(actor, &current.name).await?;
        }
        let at = now();
        let mut tx = self.core.begin().await?;
        tx.lock_authz(actor.tenant).await?;
        let before = tx
            .role(actor.tenant, id)
            .await?
            .ok_or(Error::NotFound { entity: "role" })?;
        let after = patch.apply(&before, at)?;
        if after.name != before.name {
            self.core
                .role_name_free(tx.as_mut(), actor.tenant, &after.name, Some(id))
                .await?;
        }
        tx.put_role(&after).await?;
        tx.record(&AuditEvent::record(
            &actor.audit(),
            actor.tenant,
            actions::ROLE_UPDATE,
            EntityRef::role(id),
            (Some(before.to_audit_json()), Some(after.to_audit_json())),
            at,
        ))
        .await?;
        self.core.commit(tx).await?;
        Ok(after)
    }

    /// Deletes a custom role; its holders lose it.
    pub async fn delete_role(&self, actor: &Actor, id: RoleId) -> Result<Role> {
        self.authorize(actor, "roles", "delete", Target::Collection)
            .await?;
        let current = self.core.store.get_role(actor.tenant, id).await?;
        check_deletable(&current)?;
        // Deleting takes the role from every holder: only who could give it may.
        self.core.may_grant_role(actor, &current).await?;
        self.core.guard_named_role(actor, &current.name).await?;
        let at = now();
        let mut tx = self.core.begin().await?;
        tx.lock_authz(actor.tenant).await?;
        let role = tx
            .role(actor.tenant, id)
            .await?
            .ok_or(Error::NotFound { entity: "role" })?;
        check_deletable(&role)?;
        tx.delete_role(actor.tenant, id).await?;
        tx.record(&AuditEvent::record(
            &actor.audit(),
            actor.tenant,
            actions::ROLE_DELETE,
            EntityRef::role(id),
            (Some(role.to_audit_json()), None),
            at,
        ))
        .await?;
        self.core.commit(tx).await?;
        Ok(role)
    }

    /// Adds then removes permissions of a role (removing one it lacks is not an error);
    /// users may only add permissions they hold.
    pub async fn update_role_permissions(
        &self,
        actor: &Actor,
        id: RoleId,
        add: Vec<PermissionKey>,
        remove: Vec<PermissionKey>,
    ) -> Result<Role> {
        refuse_platform_permissions("add", &add)?;
        check_scopes("add", &add)?;
        self.authorize(actor, "roles", "update", Target::Collection)
            .await?;
        let until = self.core.may_grant_permissions(actor, &add).await?;
        if !add.is_empty() {
            // The role's holders keep what is added for as long as they hold the role.
            Core::within(until, None)?;
        }
        if !remove.is_empty() {
            // Removing takes permissions from every holder: only who could give the
            // role may.
            let current = self.core.store.get_role(actor.tenant, id).await?;
            self.core.may_grant_role(actor, &current).await?;
        }
        let at = now();
        let mut tx = self.core.begin().await?;
        tx.lock_authz(actor.tenant).await?;
        let before = tx
            .role(actor.tenant, id)
            .await?
            .ok_or(Error::NotFound { entity: "role" })?;
        refuse_super_admin(&before)?;
        check_permissions_exist(tx.as_mut(), actor.tenant, "add", &add).await?;
        let mut permissions: Vec<PermissionKey> = before
            .permissions
            .iter()
            .chain(add.iter())
            .filter(|k| !remove.contains(k))
            .cloned()
            .collect();
        permissions.sort();
        permissions.dedup();
        let after = Role {
            permissions,
            updated_at: at,
            ..before.clone()
        };
        tx.put_role(&after).await?;
        tx.record(&AuditEvent::record(
            &actor.audit(),
            actor.tenant,
            actions::ROLE_PERMISSIONS_UPDATE,
            EntityRef::role(id),
            (
                Some(permissions_json(&before.permissions)),
                Some(permissions_json(&after.permissions)),
            ),
            at,
        ))
        .await?;
        self.core.commit(tx).await?;
        Ok(after)
    }

    /// The roles a user holds directly (expired assignments included).
    pub async fn list_user_roles(
        &self,
        actor: &Actor,
        user: UserId,
    ) -> Result<Vec<RoleAssignment>> {
        let u = self.core.store.get_user(actor.tenant, user).await?;
        self.authorize(actor, "users", "read", Target::User(&u))
            .await?;
        self.authorize(actor, "roles", "read", Target::Collection)
            .await?;
        self.core.store.list_user_roles(actor.tenant, user).await
    }

    /// Gives a user a role, optionally until `expires_at`, or changes the expiry of the
    /// assignment they hold; the bool is true when the assignment is new.
    pub async fn assign_role(
        &self,
        actor: &Actor,
        user: UserId,
        role: RoleId,
        expires_at: Option<DateTime<Utc>>,
    ) -> Result<(RoleAssignment, bool)> {
        let at = now();
        let expires_at = expires_at.map(truncate);
        check_expiry(expires_at, at)?;
        let target = self.live_user(actor.tenant, user).await?;
        self.authorize(actor, "roles", "assign", Target::User(&target))
            .await?;
        self.core.refuse_own(actor, user)?;
        self.core.may_manage(actor, &target).await?;
        let r = self
            .core
            .store
            .get_role(actor.tenant, role)
            .await
            .map_err(unknown_role)?;
        let until = self.core.may_grant_role(actor, &r).await?;
        Core::within(until, expires_at)?;
        self.core.guard_named_role(actor, &r.name).await?;
        let mut tx = self.core.begin().await?;
        tx.lock_authz(actor.tenant).await?;
        if role == SUPER_ADMIN_ROLE_ID {
            tx.lock_super_admins().await?;
            if expires_at.is_some() {
                // The platform keeps a super administrator that does not expire.
                let holders = tx.super_admin_holders(at).await?;
                let others = holders.iter().any(|h| {
                    h.expires_at.is_none() && !(h.tenant == actor.tenant && h.user == user)
                });
                if !others {
                    return Err(Error::rule("expires_at", Code::SuperAdminNoExpiry));
                }
            }
        }
        if !tx.user_is_live(actor.tenant, user).await? {
            return Err(Error::NotFound { entity: "user" });
        }
        let r = tx
            .role(actor.tenant, role)
            .await?
            .ok_or_else(|| Error::rule("role_id", Code::UnknownRole))?;
        let before = tx.assignment(actor.tenant, user, role).await?;
        let after = match &before {
            Some(a) => RoleAssignment {
                expires_at,
                ..a.clone()
            },
            None => RoleAssignment {
                user_id: user,
                role_id: role,
                role_name: r.name.clone(),
                assigned_by_type: actor.audit_actor().actor_type(),
                assigned_by: actor.audit_actor().id(),
                assigned_at: at,
                expires_at,
            },
        };
        tx.put_assignment(actor.tenant, &after).await?;
        tx.record(&AuditEvent::record(
            &actor.audit(),
            actor.tenant,
            actions::ROLE_ASSIGN,
            EntityRef::user(user),
            (
                before.as_ref().map(RoleAssignment::to_audit_json),
                Some(after.to_audit_json()),
            ),
            at,
        ))
        .await?;
        self.core.commit(tx).await?;
        Ok((after, before.is_none()))
    }

    /// Takes a role away from a user (`role_assignment` not found when they do not hold it
    /// directly). Only those who could give the role take it away; the last super
    /// administrator keeps theirs.
    pub async fn unassign_role(
        &self,
        actor: &Actor,
        user: UserId,
        role: RoleId,
    ) -> Result<RoleAssignment> {
        let not_held = || Error::NotFound {
            entity: "role_assignment",
        };
        let target = self.core.store.get_user(actor.tenant, user).await?;
        self.authorize(actor, "roles", "assign", Target::User(&target))
            .await?;
        self.core.refuse_own(actor, user)?;
        self.core.may_manage(actor, &target).await?;
        let r = match self.core.store.get_role(actor.tenant, role).await {
            Ok(r) => r,
            Err(Error::NotFound { .. }) => return Err(not_held()),
            Err(e) => return Err(e),
        };
        self.core.may_grant_role(actor, &r).await?;
        self.core.guard_named_role(actor, &r.name).await?;
        let at = now();
        let mut tx = self.core.begin().await?;
        tx.lock_authz(actor.tenant).await?;
        let a = tx
            .assignment(actor.tenant, user, role)
            .await?
            .ok_or_else(not_held)?;
        if role == SUPER_ADMIN_ROLE_ID {
            self.core
                .keep_a_super_admin(tx.as_mut(), actor.tenant, user, at)
                .await?;
        }
        tx.delete_assignment(actor.tenant, user, role).await?;
        tx.record(&AuditEvent::record(
            &actor.audit(),
            actor.tenant,
            actions::ROLE_UNASSIGN,
            EntityRef::user(user),
            (Some(a.to_audit_json()), None),
            at,
        ))
        .await?;
        self.core.commit(tx).await?;
        Ok(a)
    }
}
